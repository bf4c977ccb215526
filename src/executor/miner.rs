//! The miner client (miner-protocol.md 1–2, 6): `POST /reset` and `POST /act` over one awc client
//! per pool (keep-alive), no redirects, no compression, capped bodies, strict replies. Each call
//! returns the round trip measured from sending to the body's complete arrival.
//!
//! Opening a new connection is not charged to the miner (executor.md 2.1): the pool's TCP connector
//! ([`TimedConnector`]) reports the time it spends resolving and connecting to the call that is
//! waiting for the connection, and that time is left out of the round trip and of its budget;
//! connecting is bounded by the connector timeout instead. A TLS handshake runs after the TCP
//! connector inside awc, out of its reach, so its time is still counted.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use actix_service::Service;

use awc::http::header;
use serde_json::Value;

use crate::sim::action::Action;

/// The `/reset` response cap.
pub const RESET_LIMIT: usize = 64 * 1024;
/// Connect (and TLS) timeout, not charged to the miner's budgets.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An awc client for miner endpoints. With the address guard on, its connector resolves hosts
/// itself and refuses non-public answers, so it connects only to addresses it has checked (a DNS
/// answer that changes after the episode's first check cannot reach inward).
pub fn client(allow_private: bool) -> awc::Client {
    let resolver = if allow_private {
        actix_tls::connect::Resolver::default()
    } else {
        actix_tls::connect::Resolver::custom(GuardedResolver)
    };
    let tcp = TimedConnector {
        inner: actix_tls::connect::Connector::new(resolver).service(),
    };
    // No connection cap: the pool's slots already bound the connections (one per episode), and
    // awc's default of 100 would queue episodes of a pool with more slots.
    let connector = awc::Connector::new()
        .timeout(CONNECT_TIMEOUT)
        .limit(0)
        .connector(tcp);
    awc::Client::builder()
        .disable_redirects()
        .disable_timeout()
        .no_default_headers()
        .connector(connector)
        .finish()
}

tokio::task_local! {
    /// The connection time of the call being made on this task.
    static CONNECTING: Rc<ConnectClock>;
}

/// Time a call spent waiting for new connections, as the connector reports it.
#[derive(Debug, Default)]
struct ConnectClock {
    /// Start of the connection attempt in progress.
    since: Cell<Option<Instant>>,
    /// Finished connection attempts.
    spent: Cell<Duration>,
}

impl ConnectClock {
    /// Connection time up to `now`, including an attempt still in progress.
    fn until(&self, now: Instant) -> Duration {
        self.spent.get() + self.since.get().map_or(Duration::ZERO, |s| now - s)
    }
}

/// The pool's TCP connector (resolve, check, connect), reporting its time to the waiting call.
/// awc opens a connection inside the future of the request that needs it, so the call's
/// task-local clock is in scope when the connector is called.
#[derive(Clone)]
pub struct TimedConnector<S> {
    inner: S,
}

impl<S, R> Service<R> for TimedConnector<S>
where
    S: Service<R>,
    S::Future: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures_util::future::LocalBoxFuture<'static, Result<S::Response, S::Error>>;

    actix_service::forward_ready!(inner);

    fn call(&self, req: R) -> Self::Future {
        let clock = CONNECTING.try_with(Rc::clone).ok();
        if let Some(c) = &clock {
            c.since.set(Some(Instant::now()));
        }
        let connecting = self.inner.call(req);
        Box::pin(async move {
            let connected = connecting.await;
            if let Some(c) = clock {
                if let Some(since) = c.since.take() {
                    c.spent.set(c.spent.get() + since.elapsed());
                }
            }
            connected
        })
    }
}

/// Resolves a miner host and refuses it when any answer is non-public (executor.md 8).
pub struct GuardedResolver;

impl actix_tls::connect::Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> futures_util::future::LocalBoxFuture<
        'a,
        Result<Vec<std::net::SocketAddr>, Box<dyn std::error::Error>>,
    > {
        Box::pin(async move {
            let addrs: Vec<std::net::SocketAddr> =
                tokio::net::lookup_host((host, port)).await?.collect();
            if let Some(bad) = addrs.iter().find(|a| !super::guard::public(a.ip())) {
                return Err(
                    format!("{host} resolves to a non-public address ({})", bad.ip()).into(),
                );
            }
            Ok(addrs)
        })
    }
}

/// What went wrong with one call, before it is phrased for `/reset` or `/act`.
#[derive(Debug)]
enum CallError {
    Timeout,
    Connection(String),
    Redirect(u16),
    Status(u16, String),
    TooLarge(usize),
    Compressed,
    NotJson,
}

fn endpoint_url(endpoint: &str, path: &str) -> String {
    format!("{}{path}", endpoint.trim_end_matches('/'))
}

/// Sends one POST and reads the whole body within `budget`; returns (body, round trip). Time spent
/// opening a connection extends the deadline and is left out of the round trip.
async fn call(
    client: &awc::Client,
    url: &str,
    episode: &str,
    body: bytes::Bytes,
    budget: Duration,
    limit: usize,
) -> Result<(Value, Duration), CallError> {
    let started = Instant::now();
    let exchange = async {
        let mut resp = client
            .post(url)
            .insert_header((header::CONTENT_TYPE, "application/json"))
            .insert_header((header::ACCEPT, "application/json"))
            .insert_header((header::ACCEPT_ENCODING, "identity"))
            .insert_header((
                header::USER_AGENT,
                concat!("kinitro-executor/", env!("CARGO_PKG_VERSION")),
            ))
            .insert_header(("X-Kinitro-Episode", episode))
            .send_body(body)
            .await
            .map_err(|e| CallError::Connection(e.to_string()))?;
        let status = resp.status();
        let encoding = resp
            .headers()
            .get(header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        if encoding.is_some_and(|e| e != "identity") {
            return Err(CallError::Compressed);
        }
        let bytes = resp.body().limit(limit).await.map_err(|e| match e {
            awc::error::PayloadError::Overflow => CallError::TooLarge(limit),
            other => CallError::Connection(other.to_string()),
        })?;
        if status.is_redirection() {
            return Err(CallError::Redirect(status.as_u16()));
        }
        if !status.is_success() {
            let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
            return Err(CallError::Status(status.as_u16(), text));
        }
        Ok(bytes)
    };
    let clock = Rc::new(ConnectClock::default());
    let exchange = CONNECTING.scope(clock.clone(), exchange);
    tokio::pin!(exchange);
    let bytes = loop {
        let deadline = started + budget + clock.until(Instant::now());
        tokio::select! {
            bytes = &mut exchange => break bytes?,
            () = tokio::time::sleep_until(deadline.into()) => {
                let now = Instant::now();
                if now >= started + budget + clock.until(now) {
                    return Err(CallError::Timeout);
                }
            }
        }
    };
    let round_trip = started.elapsed().saturating_sub(clock.spent.get());
    let value = serde_json::from_slice::<Value>(&bytes).map_err(|_| CallError::NotJson)?;
    Ok((value, round_trip))
}

fn describe(e: CallError) -> String {
    match e {
        CallError::Timeout => unreachable!("timeouts are phrased by the caller"),
        CallError::Connection(d) => format!("connection error: {d}"),
        CallError::Redirect(code) => format!("redirect not allowed (HTTP {code})"),
        CallError::Status(code, body) if body.is_empty() => format!("HTTP {code}"),
        CallError::Status(code, body) => format!("HTTP {code}: {body}"),
        CallError::TooLarge(limit) => format!("response too large (limit {limit} bytes)"),
        CallError::Compressed => "compressed responses are not accepted".into(),
        CallError::NotJson => "response is not valid JSON".into(),
    }
}

/// Formats a configured number of seconds as the error strings show it (`5.0s`, `0.5s`).
pub fn seconds(s: f64) -> String {
    if s.fract() == 0.0 {
        format!("{s:.1}s")
    } else {
        format!("{s}s")
    }
}

/// `POST /reset`; the error is the episode's whole error string.
pub async fn reset(
    client: &awc::Client,
    endpoint: &str,
    episode: &str,
    body: bytes::Bytes,
    timeout: f64,
) -> Result<Duration, String> {
    let url = endpoint_url(endpoint, "/reset");
    match call(
        client,
        &url,
        episode,
        body,
        Duration::from_secs_f64(timeout),
        RESET_LIMIT,
    )
    .await
    {
        Ok((_, rt)) => Ok(rt),
        Err(CallError::Timeout) => Err(format!(
            "Miner reset failed: timeout after {}",
            seconds(timeout)
        )),
        Err(e) => Err(format!("Miner reset failed: {}", describe(e))),
    }
}

/// `POST /act` at step `t`; returns the validated action and the round trip, or the error string.
pub async fn act(
    client: &awc::Client,
    endpoint: &str,
    episode: &str,
    body: bytes::Bytes,
    timeout: f64,
    limit: usize,
    t: u32,
) -> Result<(Action, Duration), String> {
    let url = endpoint_url(endpoint, "/act");
    let (value, rt) = match call(
        client,
        &url,
        episode,
        body,
        Duration::from_secs_f64(timeout),
        limit,
    )
    .await
    {
        Ok(v) => v,
        Err(CallError::Timeout) => return Err(format!("Miner action timeout at step {t}")),
        Err(e) => return Err(format!("Miner action failed at step {t}: {}", describe(e))),
    };
    let Value::Object(mut reply) = value else {
        return Err(format!(
            "Miner action failed at step {t}: response is not a JSON object"
        ));
    };
    match reply.remove("action") {
        None | Some(Value::Null) => Err(format!("Miner returned no action at step {t}")),
        Some(a) => Action::from_json(&a)
            .map(|a| (a, rt))
            .map_err(|d| format!("Miner action failed at step {t}: invalid action: {d}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_tls::connect::Resolve;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one HTTP request on `s` with a valid action.
    async fn answer(mut s: tokio::net::TcpStream) {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = r#"{"action":{}}"#;
        let reply = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = s.write_all(reply.as_bytes()).await;
    }

    #[actix_web::test]
    async fn connecting_is_not_charged_to_the_action_budget() {
        // A listener whose accept queue is full: the kernel drops the client's SYN and retries it
        // about 1 s later, after the server has started accepting at 0.5 s.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fillers = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100)) {
            fillers.push(s);
            assert!(fillers.len() < 64, "the accept queue never filled");
        }
        actix_rt::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            while let Ok((s, _)) = listener.accept().await {
                actix_rt::spawn(answer(s));
            }
        });
        let started = Instant::now();
        let (_, round_trip) = act(
            &client(true),
            &format!("http://{addr}"),
            "ep",
            bytes::Bytes::from_static(b"{}"),
            0.5,
            1 << 20,
            0,
        )
        .await
        .expect("the slow connection is not the miner's fault");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "the connection was not slow: {:?}",
            started.elapsed()
        );
        assert!(round_trip < Duration::from_millis(300), "{round_trip:?}");
        drop(fillers);
    }

    #[actix_web::test]
    async fn the_connector_resolves_only_to_public_addresses() {
        let err = GuardedResolver.lookup("localhost", 80).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("localhost resolves to a non-public address"),
            "{err}"
        );
        // Through the guarded client: the refusal is a connection error, nothing is sent.
        let e = reset(
            &client(false),
            "http://localhost:9",
            "ep",
            bytes::Bytes::from_static(b"{}"),
            5.0,
        )
        .await
        .unwrap_err();
        assert!(
            e.starts_with("Miner reset failed: connection error") && e.contains("non-public"),
            "{e}"
        );
    }
}
