//! The miner client (docs/miner-protocol.md §1–2, §6): `POST /reset` and `POST /act` over one
//! keep-alive connection per episode, no redirects, no compression, capped bodies, strict replies.
//!
//! An episode's first call takes an idle connection to its miner from the pool's keep-alive set, or
//! opens one through the pool's awc connector (resolution, the address check, TCP and TLS, bounded by
//! the 5 s connector timeout). Opening is not part of a call's round trip, but it is the miner's time
//! for the episode budget ([`MinerCalls::reaching`], docs/executor.md §5.3): a miner that closes
//! every connection and stalls each new one must not pass its slowness off as ours. The episode
//! keeps the connection for its later calls while the miner keeps it alive, and leaves it in the
//! idle set when it ends. Each call's round trip runs from sending the request to the body's
//! complete arrival, within the call's budget; the arrival is the kernel's receive time of the
//! body's last bytes ([`super::arrival`]), so the time a reply waits for the arbiter is not the
//! miner's.
//!
//! The exchange itself is written here on actix-http's HTTP/1.1 codec rather than through awc's
//! request sender: awc builds a new codec for every request, and each new codec starts a
//! date-keeping task with its own timer, which cost the arbiter about a fifth of its time per step
//! (benches/executor.sh). Here the codec's configuration, and so that task, is made once per pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{self, MessageType};
use actix_http::{Method, RequestHead, RequestHeadType, ServiceConfig, Uri, Version};
use actix_service::Service;
use awc::http::header::{self, HeaderValue};
use futures_util::future::LocalBoxFuture;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};

use super::arrival::{Arrival, StampingConnector};
use super::guard::GuardedResolver;
use crate::sim::action::Action;

/// The `/reset` response cap.
pub const RESET_LIMIT: usize = 64 * 1024;
/// Timeout for opening a connection (resolution, TCP and TLS), outside the round-trip budgets but
/// counted as the miner's time for the episode budget (docs/executor.md §5.1).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A kept connection idle this long is closed rather than reused: the miner's server may be closing
/// it at that very moment (keep-alive timeouts are seconds), which would fail the next call.
pub const REUSE_WITHIN: Duration = Duration::from_secs(1);

/// A miner connection's transport: plain TCP or TLS.
trait Io: AsyncRead + AsyncWrite + Unpin {}

impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// An open HTTP/1.1 connection to a miner with its codec (and any bytes already read).
type Connection = Framed<Box<dyn Io>, h1::ClientCodec>;

/// Opening a connection to a URI's host.
type Open = dyn Fn(&Uri) -> LocalBoxFuture<'static, Result<Box<dyn Io>, CallError>>;

/// Idle keep-alive connections by `scheme://authority`, each with the moment its last reply ended.
type IdleConnections = HashMap<String, Vec<(Connection, Instant)>>;

/// A pool's client for miner endpoints: awc's connector with the address guard, kept in a closure
/// because awc does not export the connector's type, the HTTP/1.1 codec's configuration and the idle
/// keep-alive connections. Not `Send`, and built inside the pool's arbiter (the configuration runs a
/// task there): each pool builds its own.
#[derive(Clone)]
pub struct MinerClient {
    open: Rc<Open>,
    codec: ServiceConfig,
    idle: Rc<RefCell<IdleConnections>>,
}

impl MinerClient {
    /// A client trusting the standard web PKI roots. With the address guard on, its connector
    /// resolves hosts itself and refuses non-public answers, so it connects only to addresses it
    /// has checked (a DNS answer that changes after the episode's first check cannot reach inward).
    pub fn new(allow_private: bool) -> Self {
        let connector = awc::Connector::new().max_http_version(actix_http::Version::HTTP_11);
        Self::with_connector(connector, allow_private)
    }

    /// A client trusting the given TLS configuration instead (tests; miners behind a private CA).
    pub fn with_tls(tls: Arc<rustls::ClientConfig>, allow_private: bool) -> Self {
        // HTTP/1.1 only: the exchange below speaks nothing else.
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let connector = awc::Connector::new().rustls_0_23(Arc::new(tls));
        Self::with_connector(connector, allow_private)
    }

    fn with_connector<S>(connector: awc::Connector<S>, allow_private: bool) -> Self {
        let resolver = if allow_private {
            actix_tls::connect::Resolver::default()
        } else {
            actix_tls::connect::Resolver::custom(GuardedResolver {
                allow_loopback: false,
            })
        };
        // No connection cap: the pool's slots already bound the connections (one per episode), and
        // awc's default of 100 would queue episodes of a pool with more slots. The TLS handshake
        // has its own awc timeout; CONNECT_TIMEOUT bounds the whole opening below.
        let connections = Rc::new(
            connector
                .connector(StampingConnector(
                    actix_tls::connect::Connector::new(resolver).service(),
                ))
                .timeout(CONNECT_TIMEOUT)
                .handshake_timeout(CONNECT_TIMEOUT)
                .limit(0)
                .finish(),
        );
        let open = move |uri: &Uri| {
            let connecting = connections.call(awc::Connect {
                uri: uri.clone(),
                addr: None,
            });
            Box::pin(async move {
                let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                    .await
                    .map_err(|_| {
                        CallError::Connection(
                            "Failed to connect to host: Timeout while establishing connection"
                                .to_string(),
                        )
                    })?
                    .map_err(opening_failed)?;
                Ok(Box::new(connection) as Box<dyn Io>)
            }) as LocalBoxFuture<'static, Result<Box<dyn Io>, CallError>>
        };
        Self {
            open: Rc::new(open),
            codec: ServiceConfig::default(),
            idle: Rc::default(),
        }
    }

    /// An idle connection to `key`'s miner that is still fresh, else a new one to `uri`.
    async fn connect(&self, key: &str, uri: &Uri) -> Result<Connection, CallError> {
        let reused = self.idle.borrow_mut().get_mut(key).and_then(|idle| {
            // Newest last: the stale ones before a fresh one are dropped on the way.
            std::iter::from_fn(|| idle.pop()).find_map(|(c, since)| fresh(since).then_some(c))
        });
        if let Some(connection) = reused {
            return Ok(connection);
        }
        let io = (self.open)(uri).await?;
        Ok(Framed::new(io, h1::ClientCodec::new(self.codec.clone())))
    }

    /// Leaves a connection to `key`'s miner, idle since `since`, for a later episode; connections
    /// that have gone stale are closed.
    fn keep(&self, key: String, connection: Connection, since: Instant) {
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|(_, since)| fresh(*since));
            !list.is_empty()
        });
        idle.entry(key).or_default().push((connection, since));
    }
}

/// Why a connection could not be opened: the miner's failure, except when this host ran out of
/// sockets, file descriptors, memory or local ports (docs/miner-protocol.md §6.2), which says
/// nothing about the miner.
fn opening_failed(e: awc::error::ConnectError) -> CallError {
    let detail = format!("Failed to connect to host: {e}");
    match &e {
        awc::error::ConnectError::Io(io) if local_exhaustion(io) => CallError::Local(detail),
        _ => CallError::Connection(detail),
    }
}

/// Whether an I/O error means this host's own resources are exhausted.
fn local_exhaustion(e: &std::io::Error) -> bool {
    use nix::libc;
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM | libc::EADDRNOTAVAIL)
    )
}

/// Whether a connection idle since `since` may still be used.
fn fresh(since: Instant) -> bool {
    since.elapsed() < REUSE_WITHIN
}

/// One episode's calls to its miner: the request heads, built once, and the connection kept
/// between calls (back to the client's idle set when the episode ends).
pub struct MinerCalls {
    client: MinerClient,
    /// The miner's `scheme://authority`, which names its idle connections.
    key: String,
    reset: Rc<RequestHead>,
    act: Rc<RequestHead>,
    /// The connection the last call left open, and when that call ended.
    kept: Option<(Connection, Instant)>,
    /// Time spent opening connections to the miner so far (docs/executor.md §5.3).
    reaching: Duration,
}

impl Drop for MinerCalls {
    fn drop(&mut self) {
        if let Some((connection, since)) = self.kept.take() {
            self.client
                .keep(std::mem::take(&mut self.key), connection, since);
        }
    }
}

impl MinerCalls {
    /// The calls of episode `episode` (its `X-Kinitro-Episode`) to the miner at `endpoint`; the
    /// error is the episode's error string (a malformed endpoint fails the reset).
    pub fn new(client: &MinerClient, endpoint: &str, episode: &str) -> Result<Self, String> {
        let head = |path: &str| {
            request_head(endpoint, path, episode)
                .map(Rc::new)
                .map_err(|d| format!("Miner reset failed: connection error: {d}"))
        };
        let reset = head("/reset")?;
        let uri = &reset.uri;
        let key = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or_default(),
            uri.authority().map(|a| a.as_str()).unwrap_or_default()
        );
        Ok(Self {
            client: client.clone(),
            key,
            reset,
            act: head("/act")?,
            kept: None,
            reaching: Duration::ZERO,
        })
    }

    /// The time this episode's calls have spent opening connections to the miner (resolution, TCP,
    /// TLS, and the wait for the miner's server to accept): outside every round trip, yet the
    /// miner's time for the episode budget (docs/executor.md §5.3, docs/miner-protocol.md §6.3).
    pub fn reaching(&self) -> Duration {
        self.reaching
    }

    /// `POST /reset`; the error is the episode's whole error string.
    pub async fn reset(&mut self, body: bytes::Bytes, timeout: f64) -> Result<Duration, String> {
        let budget = Duration::from_secs_f64(timeout);
        let head = self.reset.clone();
        match self.call(&head, body, budget, RESET_LIMIT).await {
            Ok((_, rt)) => Ok(rt),
            Err(CallError::Timeout) => Err(format!(
                "Miner reset failed: timeout after {}",
                seconds(timeout)
            )),
            Err(e) => Err(phrase("Miner reset failed".into(), e)),
        }
    }

    /// `POST /act` at step `t`; returns the validated action and the round trip, or the error
    /// string.
    pub async fn act(
        &mut self,
        body: bytes::Bytes,
        timeout: f64,
        limit: usize,
        t: u32,
    ) -> Result<(Action, Duration), String> {
        let (action, rt) = self.act_value(body, timeout, limit, t).await?;
        Action::from_json(&action)
            .map(|a| (a, rt))
            .map_err(|d| format!("Miner action failed at step {t}: invalid action: {d}"))
    }

    /// `POST /act` at step `t`; returns the reply's non-null `action` member as sent and the round
    /// trip (verification compares it as upstream did, docs/verification.md §2), or the error
    /// string.
    pub async fn act_value(
        &mut self,
        body: bytes::Bytes,
        timeout: f64,
        limit: usize,
        t: u32,
    ) -> Result<(Value, Duration), String> {
        let budget = Duration::from_secs_f64(timeout);
        let head = self.act.clone();
        let (value, rt) = match self.call(&head, body, budget, limit).await {
            Ok(v) => v,
            Err(CallError::Timeout) => return Err(format!("Miner action timeout at step {t}")),
            Err(e) => return Err(phrase(format!("Miner action failed at step {t}"), e)),
        };
        let Value::Object(mut reply) = value else {
            return Err(format!(
                "Miner action failed at step {t}: response is not a JSON object"
            ));
        };
        match reply.remove("action") {
            None | Some(Value::Null) => Err(format!("Miner returned no action at step {t}")),
            Some(a) => Ok((a, rt)),
        }
    }

    /// Sends one POST and reads the whole reply within `budget`, on the kept connection or another
    /// (taken or opened first, outside the round trip and its budget; the opening is added to
    /// [`Self::reaching`]); returns (body, round trip). The connection is kept for the next call
    /// only after a complete reply the miner keeps alive.
    async fn call(
        &mut self,
        head: &Rc<RequestHead>,
        body: bytes::Bytes,
        budget: Duration,
        limit: usize,
    ) -> Result<(Value, Duration), CallError> {
        let connection = match self.kept.take() {
            Some((c, since)) if fresh(since) => c,
            _ => {
                let opening = Instant::now();
                let connection = self.client.connect(&self.key, &head.uri).await;
                self.reaching += opening.elapsed();
                connection?
            }
        };
        let (started, sent) = (Instant::now(), SystemTime::now());
        let (bytes, reusable, arrival) =
            tokio::time::timeout(budget, exchange(connection, head, body, limit))
                .await
                .map_err(|_| CallError::Timeout)??;
        let ended = Instant::now();
        // The kernel's arrival time when the reads were stamped, else the moment they completed.
        let round_trip = arrival.since(sent).unwrap_or(ended - started);
        if round_trip > budget {
            // Read within the timer's slack, but it arrived too late.
            return Err(CallError::Timeout);
        }
        self.kept = reusable.map(|c| (c, ended));
        let value = serde_json::from_slice::<Value>(&bytes).map_err(|_| CallError::NotJson)?;
        Ok((value, round_trip))
    }
}

/// The head of a `POST` to `endpoint` + `path`, with every header the protocol sends.
fn request_head(endpoint: &str, path: &str, episode: &str) -> Result<RequestHead, String> {
    let url = format!("{}{path}", endpoint.trim_end_matches('/'));
    let uri: Uri = url.parse().map_err(|e| format!("invalid URL {url}: {e}"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "invalid URL {url}: the scheme must be http or https"
        ));
    }
    let host = match (uri.host(), uri.port_u16()) {
        (None, _) => return Err(format!("invalid URL {url}: no host")),
        (Some(h), None | Some(80) | Some(443)) => h.to_string(),
        (Some(h), Some(port)) => format!("{h}:{port}"),
    };
    let value = |v: &str| HeaderValue::from_str(v).map_err(|e| format!("{v:?}: {e}"));
    let mut head = RequestHead::default();
    head.method = Method::POST;
    head.version = Version::HTTP_11;
    head.uri = uri;
    let h = &mut head.headers;
    h.insert(header::HOST, value(&host)?);
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static(concat!("kinitro-executor/", env!("CARGO_PKG_VERSION"))),
    );
    h.insert(
        header::HeaderName::from_static("x-kinitro-episode"),
        value(episode)?,
    );
    Ok(head)
}

/// What went wrong with one call, before it is phrased for `/reset` or `/act`.
#[derive(Debug)]
enum CallError {
    Timeout,
    Connection(String),
    /// A connection could not be opened for lack of local resources: not the miner's failure.
    Local(String),
    Redirect(u16),
    Status(u16, String),
    TooLarge(usize),
    Compressed,
    NotJson,
}

/// Sends the request on `connection` and reads the reply: an identity-encoded 2xx body of at most
/// `limit` bytes. Returns the body, the connection if the miner keeps it alive for another request,
/// and when the reply's last bytes arrived.
async fn exchange(
    mut connection: Connection,
    head: &Rc<RequestHead>,
    body: bytes::Bytes,
    limit: usize,
) -> Result<(bytes::Bytes, Option<Connection>, Arrival), CallError> {
    let lost = |e: std::io::Error| CallError::Connection(e.to_string());
    let mut framed = Pin::new(&mut connection);
    let size = BodySize::Sized(body.len() as u64);
    let request = RequestHeadType::Rc(head.clone(), None);
    framed
        .as_mut()
        .write(h1::Message::Item((request, size)))
        .map_err(lost)?;
    if !body.is_empty() {
        framed
            .as_mut()
            .write(h1::Message::Chunk(Some(body)))
            .map_err(lost)?;
        framed
            .as_mut()
            .write(h1::Message::Chunk(None))
            .map_err(lost)?;
    }
    poll_fn(|cx| framed.as_mut().flush(cx))
        .await
        .map_err(lost)?;
    let mut arrival = Arrival::default();
    let response = poll_fn(|cx| arrival.track(|| framed.as_mut().next_item(cx)))
        .await
        .ok_or_else(|| CallError::Connection("the miner closed the connection".into()))?
        .map_err(|e| CallError::Connection(format!("invalid response: {e}")))?;
    let encoding = response
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if encoding.is_some_and(|e| e != "identity") {
        return Err(CallError::Compressed);
    }
    let declared = response
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(CallError::TooLarge(limit));
    }
    let (bytes, reusable) = read_body(connection, declared, limit, &mut arrival).await?;
    let status = response.status;
    if status.is_redirection() {
        return Err(CallError::Redirect(status.as_u16()));
    }
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        return Err(CallError::Status(status.as_u16(), text));
    }
    Ok((bytes, reusable, arrival))
}

/// Reads the body of the response whose head `connection` has just decoded, up to `limit` bytes
/// (`declared` by its `Content-Length`, if any). Returns it, and the connection if the miner keeps
/// it alive for another request: a complete length-delimited or chunked body, without
/// `Connection: close` (a 101 leaves the codec streaming, and a body that ends with the connection
/// leaves none). Its reads are tracked in `arrival`.
async fn read_body(
    connection: Connection,
    declared: Option<usize>,
    limit: usize,
    arrival: &mut Arrival,
) -> Result<(bytes::Bytes, Option<Connection>), CallError> {
    let kind = connection.codec_ref().message_type();
    if kind == MessageType::None {
        let reusable = connection.codec_ref().keep_alive();
        return Ok((bytes::Bytes::new(), reusable.then_some(connection)));
    }
    let mut bytes = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    let mut payload = connection.into_map_codec(h1::ClientCodec::into_payload_codec);
    let complete = loop {
        match poll_fn(|cx| arrival.track(|| Pin::new(&mut payload).next_item(cx))).await {
            Some(Ok(Some(chunk))) => {
                if bytes.len() + chunk.len() > limit {
                    return Err(CallError::TooLarge(limit));
                }
                bytes.extend_from_slice(&chunk);
            }
            Some(Ok(None)) => break true,
            Some(Err(e)) => return Err(CallError::Connection(e.to_string())),
            // The body ended with the connection.
            None => break false,
        }
    };
    let reusable = complete && kind == MessageType::Payload && payload.codec_ref().keep_alive();
    let connection = payload.into_map_codec(h1::ClientPayloadCodec::into_message_codec);
    Ok((bytes.freeze(), reusable.then_some(connection)))
}

/// The episode's error string of a failed call, `what` naming it as the miner's error strings do
/// (`Miner reset failed`, `Miner action failed at step <t>`); a local failure is the executor's.
fn phrase(what: String, e: CallError) -> String {
    match e {
        CallError::Local(d) => {
            format!("Executor error: cannot open a connection to the miner: {d}")
        }
        e => format!("{what}: {}", describe(e)),
    }
}

fn describe(e: CallError) -> String {
    match e {
        CallError::Timeout => unreachable!("timeouts are phrased by the caller"),
        CallError::Local(_) => unreachable!("local failures are phrased by `phrase`"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_tls::connect::Resolve;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    /// Answers one HTTP request on `s` with a valid action.
    async fn answer(mut s: impl AsyncRead + AsyncWrite + Unpin) {
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
        let _ = s.shutdown().await;
    }

    /// The length of the first whole request in `buf` (its head and the body its Content-Length
    /// announces), once all of it has arrived.
    fn whole_request(buf: &[u8]) -> Option<usize> {
        let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
        let length = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse::<usize>().unwrap());
        let need = end + 4 + length;
        (buf.len() >= need).then_some(need)
    }

    /// A miner on loopback answering each request on a connection with a valid action, and closing
    /// the connection after its first answer when `close`; returns its endpoint and a count of the
    /// connections it has accepted.
    async fn counting_miner(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        actix_rt::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                actix_rt::spawn(async move {
                    let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
                    loop {
                        let need = loop {
                            if let Some(need) = whole_request(&buf) {
                                break need;
                            }
                            match s.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        buf.drain(..need);
                        let body = r#"{"action":{}}"#;
                        let connection = if close { "close" } else { "keep-alive" };
                        let reply = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
                            body.len()
                        );
                        if s.write_all(reply.as_bytes()).await.is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        (endpoint, accepted)
    }

    #[actix_web::test]
    async fn connections_are_kept_while_the_miner_keeps_them_alive() {
        let obs = || bytes::Bytes::from_static(br#"{"obs":{}}"#);
        // Two episodes, one after the other, on one client: one connection for both; a miner
        // closing after each answer gets a new connection for each call.
        for (close, connections) in [(false, 1), (true, 8)] {
            let (endpoint, accepted) = counting_miner(close).await;
            let client = MinerClient::new(true);
            for episode in ["ep-1", "ep-2"] {
                let mut calls = MinerCalls::new(&client, &endpoint, episode).unwrap();
                calls.reset(obs(), 5.0).await.unwrap();
                for t in 0..3 {
                    calls.act(obs(), 0.5, 1 << 20, t).await.unwrap();
                }
            }
            let n = accepted.load(Ordering::SeqCst);
            assert_eq!(n, connections, "close after each answer: {close}");
        }
        // A connection left idle for REUSE_WITHIN is replaced, within an episode or between two.
        let (endpoint, accepted) = counting_miner(false).await;
        let client = MinerClient::new(true);
        let mut calls = MinerCalls::new(&client, &endpoint, "ep-1").unwrap();
        calls.act(obs(), 0.5, 1 << 20, 0).await.unwrap();
        tokio::time::sleep(REUSE_WITHIN).await;
        calls.act(obs(), 0.5, 1 << 20, 1).await.unwrap();
        drop(calls);
        tokio::time::sleep(REUSE_WITHIN).await;
        let mut calls = MinerCalls::new(&client, &endpoint, "ep-2").unwrap();
        calls.act(obs(), 0.5, 1 << 20, 0).await.unwrap();
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        let idle: usize = client.idle.borrow().values().map(Vec::len).sum();
        assert_eq!(idle, 0, "the stale connection was closed");
    }

    /// A miner on its own thread (so that it answers while the test's arbiter is blocked), answering
    /// every request on one kept-alive connection with a valid action after `delay`, the reply
    /// padded with a member of `pad` bytes.
    fn miner_on_a_thread(delay: Duration, pad: usize) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let (mut buf, mut chunk) = (Vec::new(), [0u8; 4096]);
            loop {
                let need = loop {
                    if let Some(need) = whole_request(&buf) {
                        break need;
                    }
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                buf.drain(..need);
                std::thread::sleep(delay);
                let body = format!(r#"{{"action":{{}},"pad":"{}"}}"#, "x".repeat(pad));
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                if s.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        });
        endpoint
    }

    #[actix_web::test]
    async fn a_reply_read_late_is_stamped_when_it_arrived() {
        // As the pools do before they start (the stamps would otherwise come late, see arrival).
        assert!(crate::executor::arrival::keep_stamps_on());
        let obs = || bytes::Bytes::from_static(br#"{"obs":{}}"#);
        let endpoint = miner_on_a_thread(Duration::ZERO, 0);
        let client = MinerClient::new(true);
        let mut calls = MinerCalls::new(&client, &endpoint, "ep").unwrap();
        // The first call opens the connection; the next ones send at once on it.
        calls.act(obs(), 0.5, 1 << 20, 0).await.unwrap();
        // The arbiter is busy for 300 ms right after each request goes out (the miner answers
        // meanwhile): the round trip is the miner's, and a 0.2 s budget is met although the reply
        // is read after it.
        for (t, budget) in [(1, 0.5), (2, 0.2)] {
            let started = Instant::now();
            let (result, ()) = tokio::join!(calls.act(obs(), budget, 1 << 20, t), async {
                std::thread::sleep(Duration::from_millis(300))
            });
            assert!(started.elapsed() >= Duration::from_millis(300));
            let (_, round_trip) = result.unwrap_or_else(|e| panic!("budget {budget}: {e}"));
            assert!(
                round_trip < Duration::from_millis(100),
                "budget {budget}: {round_trip:?}"
            );
        }
    }

    #[actix_web::test]
    async fn a_reply_larger_than_one_read_is_read_whole() {
        let obs = || bytes::Bytes::from_static(br#"{"obs":{}}"#);
        // 512 KiB replies, many times the codec's read buffer: while the arbiter is blocked the
        // miner fills the socket, so the last reads find a full socket and no new data coming. A
        // read that fills its buffer must not be taken for one that drained the socket.
        let endpoint = miner_on_a_thread(Duration::ZERO, 512 * 1024);
        let client = MinerClient::new(true);
        let mut calls = MinerCalls::new(&client, &endpoint, "ep").unwrap();
        calls.act(obs(), 2.0, 1 << 20, 0).await.unwrap();
        for t in 1..4 {
            let (result, ()) = tokio::join!(calls.act(obs(), 2.0, 1 << 20, t), async {
                std::thread::sleep(Duration::from_millis(100))
            });
            result.unwrap_or_else(|e| panic!("step {t}: {e}"));
        }
    }

    #[actix_web::test]
    async fn a_reply_that_arrived_late_is_a_timeout_even_if_read_before_the_timer() {
        let obs = || bytes::Bytes::from_static(br#"{"obs":{}}"#);
        let endpoint = miner_on_a_thread(Duration::from_millis(250), 0);
        let client = MinerClient::new(true);
        let mut calls = MinerCalls::new(&client, &endpoint, "ep").unwrap();
        calls.act(obs(), 0.5, 1 << 20, 0).await.unwrap();
        // The reply arrives at 250 ms, after the 0.2 s budget, while the arbiter is blocked until
        // 400 ms: when it runs again the reply is read before the timer is looked at.
        let (result, ()) = tokio::join!(calls.act(obs(), 0.2, 1 << 20, 1), async {
            std::thread::sleep(Duration::from_millis(400))
        });
        assert_eq!(result.unwrap_err(), "Miner action timeout at step 1");
    }

    /// One `/act` with a 0.5 s budget: its round trip and the time spent opening its connection,
    /// or the miner's whole error string.
    async fn act_once(
        client: &MinerClient,
        endpoint: &str,
    ) -> Result<(Duration, Duration), String> {
        let mut calls = MinerCalls::new(client, endpoint, "ep")?;
        let (_, round_trip) = calls
            .act(bytes::Bytes::from_static(b"{}"), 0.5, 1 << 20, 0)
            .await?;
        Ok((round_trip, calls.reaching()))
    }

    /// An `/act` whose connection takes at least `setup` to open (the `slow` part: "connection",
    /// "handshake"): the call succeeds, its round trip leaves the opening out, and the opening is
    /// counted as the time spent reaching the miner (docs/executor.md §5.3).
    async fn act_after_slow_opening(
        client: &MinerClient,
        endpoint: &str,
        setup: Duration,
        slow: &str,
    ) {
        let started = Instant::now();
        let (round_trip, reaching) = act_once(client, endpoint)
            .await
            .unwrap_or_else(|e| panic!("the slow {slow} fails no call: {e}"));
        assert!(
            started.elapsed() >= setup,
            "the {slow} was not slow: {:?}",
            started.elapsed()
        );
        assert!(round_trip < Duration::from_millis(300), "{round_trip:?}");
        assert!(
            reaching >= setup,
            "the slow {slow} is the miner's: {reaching:?}"
        );
    }

    #[test]
    fn only_exhausted_local_resources_are_not_the_miners_failure() {
        use nix::libc;
        let io = |errno| awc::error::ConnectError::Io(std::io::Error::from_raw_os_error(errno));
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            let e = phrase("Miner reset failed".into(), opening_failed(io(errno)));
            assert!(
                e.starts_with("Executor error: cannot open a connection to the miner: "),
                "{e}"
            );
        }
        for e in [
            io(libc::ECONNREFUSED),
            io(libc::ECONNRESET),
            awc::error::ConnectError::Timeout,
            awc::error::ConnectError::NoRecords,
        ] {
            let e = phrase("Miner action failed at step 3".into(), opening_failed(e));
            assert!(
                e.starts_with("Miner action failed at step 3: connection error: Failed to connect"),
                "{e}"
            );
        }
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
        let endpoint = format!("http://{addr}");
        let setup = Duration::from_millis(900);
        act_after_slow_opening(&MinerClient::new(true), &endpoint, setup, "connection").await;
        drop(fillers);
    }

    #[actix_web::test]
    async fn the_tls_handshake_is_not_charged_to_the_action_budget() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tls");
        let cert = CertificateDer::from_pem_file(format!("{dir}/localhost.crt")).unwrap();
        let key = PrivateKeyDer::from_pem_file(format!("{dir}/localhost.key")).unwrap();
        let server = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        actix_rt::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                actix_rt::spawn(async move {
                    // The client's hello waits a whole second for the server's answer.
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    if let Ok(tls) = acceptor.accept(s).await {
                        answer(tls).await;
                    }
                });
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut tls = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = MinerClient::with_tls(Arc::new(tls), true);
        let endpoint = format!("https://localhost:{port}");
        act_after_slow_opening(&client, &endpoint, Duration::from_secs(1), "handshake").await;
        // The standard roots do not trust this certificate: a TLS failure, phrased as such.
        let e = act_once(
            &MinerClient::new(true),
            &format!("https://localhost:{port}"),
        )
        .await
        .unwrap_err();
        assert!(
            e.starts_with("Miner action failed at step 0: connection error: Failed to connect"),
            "{e}"
        );
    }

    #[actix_web::test]
    async fn the_connector_resolves_only_to_public_addresses() {
        let err = GuardedResolver {
            allow_loopback: false,
        }
        .lookup("localhost", 80)
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("localhost resolves to a non-public address"),
            "{err}"
        );
        // Through the guarded client: the refusal is a connection error, nothing is sent.
        let mut calls =
            MinerCalls::new(&MinerClient::new(false), "http://localhost:9", "ep").unwrap();
        let e = calls
            .reset(bytes::Bytes::from_static(b"{}"), 5.0)
            .await
            .unwrap_err();
        assert!(
            e.starts_with("Miner reset failed: connection error") && e.contains("non-public"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_endpoint_fails_the_reset() {
        let e = request_head("http://exa mple.com", "/reset", "ep").unwrap_err();
        assert!(
            e.starts_with("invalid URL http://exa mple.com/reset"),
            "{e}"
        );
        let e = request_head("ftp://m.example.com", "/act", "ep").unwrap_err();
        assert!(e.ends_with("the scheme must be http or https"), "{e}");
        let head = request_head("https://m.example.com/", "/act", "ep-1").unwrap();
        assert_eq!(head.uri, "https://m.example.com/act");
        assert_eq!(head.headers.get(header::HOST).unwrap(), "m.example.com");
        assert_eq!(head.headers.get("x-kinitro-episode").unwrap(), "ep-1");
    }
}
