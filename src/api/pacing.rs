//! Pacing of public reads (docs/api.md §1.3): each API process lets at most
//! `KINITRO_API_PUBLIC_READS_PER_SECOND` public reads (every request but those listed below) start
//! per second. A read over the budget is not refused but *waits* for its turn, up to [`MAX_WAIT`],
//! in arrival order; a read that would wait longer gets a 429. Since a client, or a flood of them,
//! waits for each answer before sending the next, waiting is what keeps a flood from taking the CPU
//! the executors' claims need: a waiting request costs a timer, not a core.
//!
//! Never paced: `/health` (liveness checks), `/v1/weights/*` (the validators' poll, served from
//! memory) and the authenticated `POST` endpoints of the executors.
//!
//! The limiter is a virtual schedule (GCRA with reservations) rather than a crate's rate limiter:
//! each admitted read is given its own start time, so the waiting reads sleep once each and start in
//! order, where a check-and-retry limiter wakes every waiter at each free slot.

use std::sync::Mutex;
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use tokio::time::Instant;

use super::error::ApiError;

/// The longest a public read waits for its turn; beyond this it is refused.
pub const MAX_WAIT: Duration = Duration::from_secs(5);
/// How long a refused read is held before its 429, so a client that ignores `Retry-After` cannot
/// spin on refusals.
const REFUSAL_DELAY: Duration = Duration::from_secs(1);

/// What the pacer decides for one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Start now.
    Now,
    /// Start after this wait (its slot is reserved).
    After(Duration),
    /// The wait would exceed [`MAX_WAIT`]: refuse.
    Refused,
}

/// The per-process schedule of public reads.
#[derive(Debug)]
pub struct Pacer {
    /// Time between two starts at the sustained rate.
    interval: Duration,
    /// How far ahead of the schedule a read may start: a burst of `per_second` reads goes at once.
    tolerance: Duration,
    /// The next free slot of the schedule (none before the first read).
    next_slot: Mutex<Option<Instant>>,
}

impl Pacer {
    /// A pacer letting `per_second` reads start per second, bursts of as many at once; none for 0
    /// (no pacing).
    pub fn new(per_second: u32) -> Option<Self> {
        (per_second > 0).then(|| {
            let interval = Duration::from_secs(1) / per_second;
            Self {
                interval,
                tolerance: interval * (per_second - 1),
                next_slot: Mutex::new(None),
            }
        })
    }

    /// Decides for a read arriving at `now`, reserving its slot unless refused.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut next_slot = self.next_slot.lock().expect("pacer lock");
        let slot = next_slot.map_or(now, |s| s.max(now));
        let wait = slot.duration_since(now).saturating_sub(self.tolerance);
        if wait > MAX_WAIT {
            return Admission::Refused;
        }
        *next_slot = Some(slot + self.interval);
        if wait.is_zero() {
            Admission::Now
        } else {
            Admission::After(wait)
        }
    }
}

/// Whether a request is a public read: everything but the liveness check, the validators' weights
/// and the executors' authenticated posts.
pub fn is_paced(method: &Method, pattern: Option<&str>) -> bool {
    let exempt = match pattern {
        Some("/health" | "/v1/weights/latest" | "/v1/weights/{block}") => true,
        Some("/v1/tasks/fetch" | "/v1/tasks/submit" | "/v1/verifications") => {
            method == Method::POST
        }
        _ => false,
    };
    !exempt
}

/// Middleware: paces public reads through the [`Pacer`] registered as app data (none: no pacing).
pub async fn pace(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let admission = match req.app_data::<web::Data<Pacer>>() {
        Some(pacer) if is_paced(req.method(), req.match_pattern().as_deref()) => {
            pacer.admit(Instant::now())
        }
        _ => Admission::Now,
    };
    match admission {
        Admission::Now => {}
        Admission::After(wait) => tokio::time::sleep(wait).await,
        Admission::Refused => {
            tokio::time::sleep(REFUSAL_DELAY).await;
            let mut refusal =
                ApiError::new(429, "Too many public reads; retry in a second").error_response();
            refusal
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return Ok(req.into_response(refusal).map_into_right_body());
        }
    }
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_goes_at_once_then_reads_wait_in_order_then_are_refused() {
        let pacer = Pacer::new(4).unwrap();
        let t0 = Instant::now();
        for _ in 0..4 {
            assert_eq!(pacer.admit(t0), Admission::Now);
        }
        // Past the burst, each read waits one interval (250 ms) more than the one before.
        for k in 1..=20u32 {
            assert_eq!(
                pacer.admit(t0),
                Admission::After(Duration::from_millis(250) * k)
            );
        }
        // 20 × 250 ms = MAX_WAIT: the next one would wait longer.
        assert_eq!(pacer.admit(t0), Admission::Refused);
        // A refusal reserves nothing: a second later the next read waits a second less than the
        // refused one would have (5.25 s).
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            pacer.admit(t1),
            Admission::After(Duration::from_millis(4250))
        );
    }

    #[test]
    fn an_idle_pacer_regains_its_burst_and_zero_means_no_pacing() {
        let pacer = Pacer::new(2).unwrap();
        let t0 = Instant::now();
        assert_eq!(pacer.admit(t0), Admission::Now);
        assert_eq!(pacer.admit(t0), Admission::Now);
        assert_eq!(
            pacer.admit(t0),
            Admission::After(Duration::from_millis(500))
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pacer.admit(later), Admission::Now);
        assert_eq!(pacer.admit(later), Admission::Now);
        assert!(Pacer::new(0).is_none());
    }

    #[test]
    fn only_health_weights_and_the_executors_posts_are_exempt() {
        for (method, pattern) in [
            (Method::GET, Some("/health")),
            (Method::GET, Some("/v1/weights/latest")),
            (Method::GET, Some("/v1/weights/{block}")),
            (Method::POST, Some("/v1/tasks/fetch")),
            (Method::POST, Some("/v1/tasks/submit")),
            (Method::POST, Some("/v1/verifications")),
        ] {
            assert!(!is_paced(&method, pattern), "{method} {pattern:?}");
        }
        for (method, pattern) in [
            (Method::GET, Some("/v1/status")),
            (Method::GET, Some("/v1/miners")),
            (Method::GET, Some("/v1/tasks/stats")),
            (Method::GET, Some("/v1/tasks/fetch")),
            (Method::GET, Some("/v1/verifications")),
            (Method::GET, Some("/metrics")),
            (Method::GET, Some("/leaderboard")),
            (Method::GET, None),
            (Method::POST, None),
        ] {
            assert!(is_paced(&method, pattern), "{method} {pattern:?}");
        }
    }
}
