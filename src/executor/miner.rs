//! The miner client (miner-protocol.md 1–2, 6): `POST /reset` and `POST /act` over one pooled,
//! keep-alive connector per pool, no redirects, no compression, capped bodies, strict replies.
//!
//! Each call first takes a connection from awc's pool, opening one if needed (resolution, the
//! address check, TCP and TLS, bounded by the 5 s connector timeout and never charged to the
//! miner, executor.md 2.1), and only then starts its round trip: from sending the request to the
//! body's complete arrival, within the call's budget. awc's `Client` opens connections inside the
//! request it sends, out of the caller's sight, so the pool's connector is used directly, with
//! request heads built once per episode.

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_http::{Method, Payload, RequestHead, RequestHeadType, ResponseHead, Uri, Version};
use actix_service::Service;
use awc::error::SendRequestError;
use awc::http::header::{self, HeaderValue};
use futures_util::future::LocalBoxFuture;
use futures_util::StreamExt;
use serde_json::Value;

use crate::sim::action::Action;

/// The `/reset` response cap.
pub const RESET_LIMIT: usize = 64 * 1024;
/// Timeout for opening a connection (resolution, TCP and TLS), not charged to the miner's budgets.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A request on a ready connection, sent when awaited: the response head and the body stream.
type Exchange = LocalBoxFuture<'static, Result<(ResponseHead, Payload), SendRequestError>>;
/// Opening (or reusing) a connection for a request head and body.
type Open =
    dyn Fn(RequestHeadType, bytes::Bytes) -> LocalBoxFuture<'static, Result<Exchange, String>>;

/// A pool's client for miner endpoints: awc's pooled connector with the address guard, kept in a
/// closure because awc does not export the connector's type. Not `Send`: each pool builds its own
/// on its arbiter.
#[derive(Clone)]
pub struct MinerClient {
    open: Rc<Open>,
}

impl MinerClient {
    /// A client trusting the standard web PKI roots. With the address guard on, its connector
    /// resolves hosts itself and refuses non-public answers, so it connects only to addresses it
    /// has checked (a DNS answer that changes after the episode's first check cannot reach inward).
    pub fn new(allow_private: bool) -> Self {
        Self::with_connector(awc::Connector::new(), allow_private)
    }

    /// A client trusting the given TLS configuration instead (tests; miners behind a private CA).
    pub fn with_tls(tls: Arc<rustls::ClientConfig>, allow_private: bool) -> Self {
        Self::with_connector(awc::Connector::new().rustls_0_23(tls), allow_private)
    }

    fn with_connector<S>(connector: awc::Connector<S>, allow_private: bool) -> Self {
        let resolver = if allow_private {
            actix_tls::connect::Resolver::default()
        } else {
            actix_tls::connect::Resolver::custom(GuardedResolver)
        };
        // No connection cap: the pool's slots already bound the connections (one per episode), and
        // awc's default of 100 would queue episodes of a pool with more slots. The TLS handshake
        // has its own awc timeout; CONNECT_TIMEOUT bounds the whole opening below.
        let connections = Rc::new(
            connector
                .connector(actix_tls::connect::Connector::new(resolver).service())
                .timeout(CONNECT_TIMEOUT)
                .handshake_timeout(CONNECT_TIMEOUT)
                .limit(0)
                .finish(),
        );
        let open = move |head: RequestHeadType, body: bytes::Bytes| {
            let connecting = connections.call(awc::Connect {
                uri: head.as_ref().uri.clone(),
                addr: None,
            });
            Box::pin(async move {
                let connection = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                    .await
                    .map_err(|_| {
                        "Failed to connect to host: Timeout while establishing connection"
                            .to_string()
                    })?
                    .map_err(|e| format!("Failed to connect to host: {e}"))?;
                Ok(connection.send_request(head, body))
            }) as LocalBoxFuture<'static, Result<Exchange, String>>
        };
        Self {
            open: Rc::new(open),
        }
    }
}

/// Resolves a miner host and refuses it when any answer is non-public (executor.md 8).
pub struct GuardedResolver;

impl actix_tls::connect::Resolve for GuardedResolver {
    fn lookup<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> LocalBoxFuture<'a, Result<Vec<std::net::SocketAddr>, Box<dyn std::error::Error>>> {
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

/// One episode's calls to its miner, with the request heads built once.
pub struct MinerCalls {
    client: MinerClient,
    reset: Rc<RequestHead>,
    act: Rc<RequestHead>,
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
        Ok(Self {
            client: client.clone(),
            reset: head("/reset")?,
            act: head("/act")?,
        })
    }

    /// `POST /reset`; the error is the episode's whole error string.
    pub async fn reset(&self, body: bytes::Bytes, timeout: f64) -> Result<Duration, String> {
        let budget = Duration::from_secs_f64(timeout);
        match call(&self.client, &self.reset, body, budget, RESET_LIMIT).await {
            Ok((_, rt)) => Ok(rt),
            Err(CallError::Timeout) => Err(format!(
                "Miner reset failed: timeout after {}",
                seconds(timeout)
            )),
            Err(e) => Err(format!("Miner reset failed: {}", describe(e))),
        }
    }

    /// `POST /act` at step `t`; returns the validated action and the round trip, or the error
    /// string.
    pub async fn act(
        &self,
        body: bytes::Bytes,
        timeout: f64,
        limit: usize,
        t: u32,
    ) -> Result<(Action, Duration), String> {
        let budget = Duration::from_secs_f64(timeout);
        let (value, rt) = match call(&self.client, &self.act, body, budget, limit).await {
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
    Redirect(u16),
    Status(u16, String),
    TooLarge(usize),
    Compressed,
    NotJson,
}

/// Sends one POST on a ready connection and reads the whole body within `budget`; returns (body,
/// round trip). Opening the connection comes first and is neither timed nor budgeted here.
async fn call(
    client: &MinerClient,
    head: &Rc<RequestHead>,
    body: bytes::Bytes,
    budget: Duration,
    limit: usize,
) -> Result<(Value, Duration), CallError> {
    let exchange = (client.open)(RequestHeadType::Rc(head.clone(), None), body)
        .await
        .map_err(CallError::Connection)?;
    let started = Instant::now();
    let bytes = tokio::time::timeout(budget, receive(exchange, limit))
        .await
        .map_err(|_| CallError::Timeout)??;
    let round_trip = started.elapsed();
    let value = serde_json::from_slice::<Value>(&bytes).map_err(|_| CallError::NotJson)?;
    Ok((value, round_trip))
}

/// Sends the request and reads the reply: an identity-encoded 2xx body of at most `limit` bytes.
async fn receive(exchange: Exchange, limit: usize) -> Result<bytes::Bytes, CallError> {
    let (head, mut payload) = exchange
        .await
        .map_err(|e| CallError::Connection(e.to_string()))?;
    let encoding = head
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase);
    if encoding.is_some_and(|e| e != "identity") {
        return Err(CallError::Compressed);
    }
    let declared = head
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(CallError::TooLarge(limit));
    }
    let mut bytes = bytes::BytesMut::with_capacity(declared.unwrap_or(0));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| CallError::Connection(e.to_string()))?;
        if bytes.len() + chunk.len() > limit {
            return Err(CallError::TooLarge(limit));
        }
        bytes.extend_from_slice(&chunk);
    }
    let status = head.status;
    if status.is_redirection() {
        return Err(CallError::Redirect(status.as_u16()));
    }
    if !status.is_success() {
        let text: String = String::from_utf8_lossy(&bytes).chars().take(200).collect();
        return Err(CallError::Status(status.as_u16(), text));
    }
    Ok(bytes.freeze())
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

#[cfg(test)]
mod tests {
    use super::*;
    use actix_tls::connect::Resolve;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
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

    /// One `/act` with a 0.5 s budget, the miner's whole error string on failure.
    async fn act_once(client: &MinerClient, endpoint: &str) -> Result<Duration, String> {
        let calls = MinerCalls::new(client, endpoint, "ep")?;
        let (_, round_trip) = calls
            .act(bytes::Bytes::from_static(b"{}"), 0.5, 1 << 20, 0)
            .await?;
        Ok(round_trip)
    }

    /// An `/act` whose connection takes at least `setup` to open (the `slow` part: "connection",
    /// "handshake"): the call succeeds, and its round trip leaves the opening out.
    async fn act_after_slow_opening(
        client: &MinerClient,
        endpoint: &str,
        setup: Duration,
        slow: &str,
    ) {
        let started = Instant::now();
        let round_trip = act_once(client, endpoint)
            .await
            .unwrap_or_else(|e| panic!("the slow {slow} is not the miner's fault: {e}"));
        assert!(
            started.elapsed() >= setup,
            "the {slow} was not slow: {:?}",
            started.elapsed()
        );
        assert!(round_trip < Duration::from_millis(300), "{round_trip:?}");
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
        let err = GuardedResolver.lookup("localhost", 80).await.unwrap_err();
        assert!(
            err.to_string()
                .starts_with("localhost resolves to a non-public address"),
            "{err}"
        );
        // Through the guarded client: the refusal is a connection error, nothing is sent.
        let calls = MinerCalls::new(&MinerClient::new(false), "http://localhost:9", "ep").unwrap();
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
