//! Short-lived answers of the public read endpoints (docs/api.md §1.3): anyone may call
//! `/v1/status`, `/v1/miners`, `/v1/environments` and `/v1/tasks/stats` as fast as they like, so
//! each process computes an answer at most once per [`MAX_AGE`] per key, one computation at a
//! time, on the small public pool. A flood of these requests then costs the database almost
//! nothing and can never take the connections executors claim and submit with.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// How long a public read may take as a whole. The server cancels a statement after 5 s
/// (`db::connect::PUBLIC_STATEMENT_TIMEOUT`), but a database that does not answer at all (paused,
/// cut off) cannot, so the API gives up a little later by itself and answers 503.
pub const READ_TIMEOUT: Duration = Duration::from_secs(6);

/// `read`, or a 503 when it takes longer than [`READ_TIMEOUT`].
pub async fn bounded<T>(
    read: impl Future<Output = Result<T, super::error::ApiError>>,
) -> Result<T, super::error::ApiError> {
    tokio::time::timeout(READ_TIMEOUT, read)
        .await
        .unwrap_or_else(|_| Err(super::error::ApiError::database_unavailable()))
}

/// How long an answer is reused.
pub const MAX_AGE: Duration = Duration::from_secs(2);
/// Keys kept per endpoint; a client varying a query parameter cannot grow the map beyond this.
const MAX_KEYS: usize = 64;

/// An answer together with its JSON, serialised once when computed: serving a cached answer then
/// costs a reference-count increment, not a serialisation per request.
#[derive(Debug)]
pub struct Serialized<T> {
    /// The value (for pages that read it).
    pub value: Arc<T>,
    /// Its JSON body.
    pub json: bytes::Bytes,
}

impl<T> Clone for Serialized<T> {
    fn clone(&self) -> Self {
        Self {
            value: self.value.clone(),
            json: self.json.clone(),
        }
    }
}

impl<T: serde::Serialize> Serialized<T> {
    /// Serialises `value` once.
    pub fn new(value: T) -> Self {
        let json = serde_json::to_vec(&value)
            .expect("API bodies serialise")
            .into();
        Self {
            value: Arc::new(value),
            json,
        }
    }

    /// A 200 response with the stored JSON.
    pub fn response(&self) -> actix_web::HttpResponse {
        actix_web::HttpResponse::Ok()
            .content_type("application/json")
            .body(self.json.clone())
    }
}

/// An answer and when it was computed.
type Stored<V, E> = (Instant, Result<V, E>);

/// Recent answers of one endpoint, by key (e.g. a query parameter). A failure is kept as long as a
/// success: while the database hangs, the requests that queued behind one computation all get its
/// failure at once instead of each waiting for a statement timeout of its own.
pub struct Cached<K, V, E> {
    entries: Mutex<HashMap<K, Stored<V, E>>>,
    /// Held while an answer is computed, so concurrent misses wait for it instead of querying too.
    computing: tokio::sync::Mutex<()>,
    max_age: Duration,
}

impl<K: Eq + Hash, V: Clone, E: Clone> Cached<K, V, E> {
    /// An empty cache whose answers live `max_age`.
    pub fn new(max_age: Duration) -> Self {
        Self {
            entries: Mutex::default(),
            computing: tokio::sync::Mutex::new(()),
            max_age,
        }
    }

    fn fresh(&self, key: &K) -> Option<Result<V, E>> {
        let entries = self.entries.lock().unwrap();
        let (at, value) = entries.get(key)?;
        (at.elapsed() < self.max_age).then(|| value.clone())
    }

    /// The answer for `key`: a fresh stored one, else `compute`'s, which is stored.
    pub async fn get_or<F>(&self, key: K, compute: F) -> Result<V, E>
    where
        F: Future<Output = Result<V, E>>,
    {
        if let Some(answer) = self.fresh(&key) {
            return answer;
        }
        let _turn = self.computing.lock().await;
        if let Some(answer) = self.fresh(&key) {
            return answer; // computed while this request waited
        }
        let answer = compute.await;
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= MAX_KEYS && !entries.contains_key(&key) {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), answer.clone()));
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_compute_once_and_answers_expire() {
        let cache = Arc::new(Cached::<u8, usize, ()>::new(MAX_AGE));
        let calls = Arc::new(AtomicUsize::new(0));
        let compute = |calls: Arc<AtomicUsize>| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok(calls.fetch_add(1, Ordering::SeqCst) + 1)
        };
        let waiting: Vec<_> = (0..10)
            .map(|_| {
                let (cache, calls) = (cache.clone(), calls.clone());
                tokio::spawn(async move { cache.get_or(1, compute(calls)).await })
            })
            .collect();
        for w in waiting {
            assert_eq!(w.await.unwrap(), Ok(1));
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1, "ten misses, one query");
        assert_eq!(cache.get_or(2, compute(calls.clone())).await, Ok(2));
        assert_eq!(cache.get_or(1, compute(calls.clone())).await, Ok(1));
        tokio::time::advance(MAX_AGE).await;
        assert_eq!(cache.get_or(1, compute(calls.clone())).await, Ok(3));
        assert_eq!(cache.get_or(1, async { Err(()) }).await, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failure_answers_its_waiters_and_then_expires() {
        let cache = Cached::<(), u8, &str>::new(MAX_AGE);
        assert_eq!(cache.get_or((), async { Err("down") }).await, Err("down"));
        assert_eq!(cache.get_or((), async { Ok(7) }).await, Err("down"));
        tokio::time::advance(MAX_AGE).await;
        assert_eq!(cache.get_or((), async { Ok(7) }).await, Ok(7));
    }
}
