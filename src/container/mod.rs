//! Everything that talks to a Docker engine (docs/containers.md): connecting to an engine with the
//! API version negotiated ([`connect`]), building and pushing the project's images ([`image`]),
//! and the evaluation containers' settings ([`eval`]).
//!
//! The client is `bollard`, not the `docker-api` crate named in the original stack: docker-api
//! 0.14 cannot express the container hardening the design requires (read-only root, dropped
//! capabilities, `no-new-privileges`, a tmpfs, a pids limit, GPU device requests) — its create
//! options keep their fields private and it has no raw request — while bollard models the whole
//! Engine API and negotiates the version (docs/containers.md §5).

pub mod eval;
pub mod image;
pub mod service_image;
pub mod tls;
pub mod verifier_image;

use bollard::Docker;

/// The engine address of the `localhost` host entry: `DOCKER_HOST`, else the local socket.
pub fn local_engine_uri() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
}

/// Where the client certificates of remote engines are, when TLS is on: as the Docker CLI does,
/// `DOCKER_TLS_VERIFY` (set, not `0` or empty) switches it on and `DOCKER_CERT_PATH` (default
/// `~/.docker`) holds `ca.pem`, `cert.pem` and `key.pem`; the engine's certificate is verified
/// against `ca.pem` and its host name.
pub fn engine_tls_dir() -> Option<std::path::PathBuf> {
    let on = std::env::var("DOCKER_TLS_VERIFY").is_ok_and(|v| !v.is_empty() && v != "0");
    on.then(|| match std::env::var_os("DOCKER_CERT_PATH") {
        Some(dir) => dir.into(),
        None => {
            std::path::PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker")
        }
    })
}

/// A connected engine, with the API version both sides speak.
#[derive(Clone)]
pub struct Engine {
    /// The client, speaking the negotiated version.
    pub docker: Docker,
    /// The address it was reached at (`unix://…` or `tcp://…`).
    pub uri: String,
}

/// Connects to the engine of a host entry (`localhost`, `unix:///path`, `tcp://host:port`) and
/// negotiates the API version with `GET /version` (engines here range from API 1.41 to 1.44+).
/// `timeout_secs` bounds each request (an image build is one long request).
pub async fn connect(host: &str, timeout_secs: u64) -> Result<Engine, String> {
    let uri = if host == "localhost" {
        local_engine_uri()
    } else {
        host.to_string()
    };
    let unreachable =
        |e: &dyn std::fmt::Display| format!("Docker engine not reachable at {uri}: {e}");
    let docker = if let Some(path) = uri.strip_prefix("unix://") {
        Docker::connect_with_unix(path, timeout_secs, bollard::API_DEFAULT_VERSION)
    } else if let (true, Some(certs)) = (uri.starts_with("tcp://"), engine_tls_dir()) {
        Docker::connect_with_ssl(
            &uri,
            &certs.join("key.pem"),
            &certs.join("cert.pem"),
            &certs.join("ca.pem"),
            timeout_secs,
            bollard::API_DEFAULT_VERSION,
        )
    } else if uri.starts_with("tcp://") || uri.starts_with("http://") {
        Docker::connect_with_http(&uri, timeout_secs, bollard::API_DEFAULT_VERSION)
    } else {
        return Err(format!(
            "unsupported Docker host '{uri}': expected localhost, unix:///path or tcp://host:port"
        ));
    }
    .map_err(|e| unreachable(&e))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| unreachable(&e))?;
    docker.ping().await.map_err(|e| unreachable(&e))?;
    Ok(Engine { docker, uri })
}
