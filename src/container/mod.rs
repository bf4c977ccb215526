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
pub mod tls;

use bollard::Docker;

/// The engine address of the `localhost` host entry: `DOCKER_HOST`, else the local socket.
pub fn local_engine_uri() -> String {
    std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into())
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
