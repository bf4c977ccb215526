//! The evaluation containers' settings (docs/containers.md §3): names, labels, limits, hardening
//! and the environment passed in — plain data, so the executor's fleet code only decides *when* to
//! create a container, and this module *what* it looks like.

use std::collections::HashMap;

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HostConfig, PortBinding, RestartPolicy,
    RestartPolicyNameEnum,
};
use sha2::Digest;

use crate::config::executor::{EvalNetwork, ExecutorConfig};

/// Label naming the executor that owns a container.
pub const EXECUTOR_LABEL: &str = "io.kinitro.executor";
/// Label naming the container's family.
pub const FAMILY_LABEL: &str = "io.kinitro.family";
/// Label naming the index of the container's host entry.
pub const HOST_LABEL: &str = "io.kinitro.host";
/// The user-defined bridge network of the `bridge` mode.
pub const NETWORK: &str = "kinitro-eval";
/// The port the server listens on inside a bridged container.
pub const CONTAINER_PORT: u16 = 8000;
/// Processes a container may run.
const PIDS_LIMIT: i64 = 4096;

/// `kinitro-eval-<executor id>-h<k>-<family>-<i>`, with characters Docker refuses in names turned
/// into `-` and, when anything was changed, a short hash of the original id appended so that two
/// ids that sanitise alike stay apart.
pub fn container_name(executor_id: &str, host: usize, family: &str, index: usize) -> String {
    let safe: String = executor_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let id = if safe == executor_id {
        safe
    } else {
        let hash = hex::encode(sha2::Sha256::digest(executor_id.as_bytes()));
        format!("{safe}-{}", &hash[..8])
    };
    format!("kinitro-eval-{id}-h{host}-{family}-{index}")
}

/// Bytes of a memory limit: `8g`, `512m`, `1024k`, `8Gi`, `512Mi`, `1Ti`, or plain bytes
/// (binary multiples either way, as Docker reads them).
pub fn parse_mem_limit(raw: &str) -> Result<i64, String> {
    let text = raw.trim().to_ascii_lowercase();
    let text = text.strip_suffix('i').unwrap_or(&text);
    let text = text.strip_suffix('b').unwrap_or(text);
    let (digits, shift) = match text.chars().last() {
        Some('k') => (&text[..text.len() - 1], 10),
        Some('m') => (&text[..text.len() - 1], 20),
        Some('g') => (&text[..text.len() - 1], 30),
        Some('t') => (&text[..text.len() - 1], 40),
        _ => (text, 0),
    };
    digits
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|v| *v > 0.0)
        .map(|v| (v * (1u64 << shift) as f64) as i64)
        .filter(|b| *b >= 6 * 1024 * 1024)
        .ok_or_else(|| {
            format!("invalid memory limit '{raw}' (expected e.g. 8g, 512Mi; at least 6 MiB)")
        })
}

/// One container to create.
#[derive(Debug, Clone)]
pub struct EvalContainer {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// Owning executor's id.
    pub executor_id: String,
    /// Index of the host entry.
    pub host: usize,
    /// Environment family.
    pub family: String,
    /// The server's token.
    pub token: String,
    /// The port the server listens on (host networking) or [`CONTAINER_PORT`].
    pub port: u16,
    /// Publish the port on the engine's host at an ephemeral port (remote engines).
    pub publish: bool,
    /// Evaluation pools inside.
    pub pools: usize,
    /// TLS material for a container on a remote engine (`None`: plain HTTP on a local engine).
    pub tls: Option<super::tls::ContainerTls>,
}

/// The container's environment: the server's settings and the token, nothing else of the
/// executor's (never its API key or database URL).
pub fn container_env(config: &ExecutorConfig, c: &EvalContainer) -> Vec<String> {
    let mut env = vec![
        format!(
            "KINITRO_EXECUTOR_ACTION_TIMEOUT={}",
            config.action_timeout.0
        ),
        format!("KINITRO_EXECUTOR_RESET_TIMEOUT={}", config.reset_timeout.0),
        format!(
            "KINITRO_EXECUTOR_MAX_RESPONSE_BYTES={}",
            config.max_response_bytes
        ),
        format!("KINITRO_EXECUTOR_USE_IMAGES={}", config.use_images),
        format!(
            "KINITRO_EXECUTOR_PRIVILEGED_STATE={}",
            config.privileged_state
        ),
        format!(
            "KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS={}",
            config.allow_private_endpoints
        ),
        format!("KINITRO_ENV_SERVE_POOLS={}", c.pools),
        format!(
            "KINITRO_ENV_SERVE_EPISODES_PER_POOL={}",
            config.eval_episodes_per_pool
        ),
        format!("AFFINETES_PORT={}", c.port),
        format!("KINITRO_ENV_TOKEN={}", c.token),
        format!(
            "LP_NUM_THREADS={}",
            std::env::var("LP_NUM_THREADS").unwrap_or_else(|_| "1".into())
        ),
    ];
    if let Some(tls) = &c.tls {
        env.push(format!("KINITRO_ENV_TLS_CERT={}", tls.cert_pem));
        env.push(format!("KINITRO_ENV_TLS_KEY={}", tls.key_pem));
    }
    if let Ok(format) = std::env::var("KINITRO_LOG_FORMAT") {
        env.push(format!("KINITRO_LOG_FORMAT={format}"));
    }
    env
}

/// The create request of `c`: limits, hardening, labels and networking of docs/containers.md §3.
pub fn create_body(
    config: &ExecutorConfig,
    c: &EvalContainer,
) -> Result<ContainerCreateBody, String> {
    let labels = HashMap::from([
        (EXECUTOR_LABEL.to_string(), c.executor_id.clone()),
        (FAMILY_LABEL.to_string(), c.family.clone()),
        (HOST_LABEL.to_string(), c.host.to_string()),
    ]);
    let port_key = format!("{}/tcp", c.port);
    let mut host_config = HostConfig {
        memory: Some(parse_mem_limit(&config.eval_mem_limit)?),
        nano_cpus: config.eval_cpus.map(|c| (c * 1e9) as i64),
        pids_limit: Some(PIDS_LIMIT),
        readonly_rootfs: Some(true),
        tmpfs: Some(HashMap::from([(
            "/tmp".to_string(),
            "rw,nosuid,nodev,size=512m".to_string(),
        )])),
        cap_drop: Some(vec!["ALL".into()]),
        security_opt: Some(vec!["no-new-privileges".into()]),
        restart_policy: Some(RestartPolicy {
            name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
            maximum_retry_count: None,
        }),
        network_mode: Some(match config.eval_network {
            EvalNetwork::Host => "host".into(),
            EvalNetwork::Bridge => NETWORK.into(),
        }),
        ..Default::default()
    };
    if c.publish {
        host_config.port_bindings = Some(HashMap::from([(
            port_key.clone(),
            Some(vec![PortBinding {
                host_ip: None,
                host_port: Some(String::new()),
            }]),
        )]));
    }
    if config.eval_gpu {
        host_config.device_requests = Some(vec![DeviceRequest {
            count: Some(-1),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]);
    }
    Ok(ContainerCreateBody {
        image: Some(c.image.clone()),
        env: Some(container_env(config, c)),
        labels: Some(labels),
        user: Some(format!(
            "{}:{}",
            super::image::USER_ID,
            super::image::USER_ID
        )),
        exposed_ports: Some(vec![port_key]),
        host_config: Some(host_config),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_docker_safe_and_distinct() {
        assert_eq!(
            container_name("ex-1", 0, "metaworld", 2),
            "kinitro-eval-ex-1-h0-metaworld-2"
        );
        let a = container_name("ex/1", 1, "metaworld", 0);
        let b = container_name("ex:1", 1, "metaworld", 0);
        assert!(a.starts_with("kinitro-eval-ex-1-") && a != b, "{a} {b}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
    }

    #[test]
    fn memory_limits_parse_as_docker_reads_them() {
        assert_eq!(parse_mem_limit("8g").unwrap(), 8 << 30);
        assert_eq!(parse_mem_limit("512Mi").unwrap(), 512 << 20);
        assert_eq!(parse_mem_limit("1Ti").unwrap(), 1 << 40);
        assert_eq!(parse_mem_limit("1048576k").unwrap(), 1 << 30);
        for bad in ["", "g", "-1g", "12x", "1k"] {
            assert!(parse_mem_limit(bad).is_err(), "{bad}");
        }
    }
}
