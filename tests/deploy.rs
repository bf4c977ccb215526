//! Deployment files (issue: production deployment). No Docker engine runs here, so the compose files
//! are validated with `docker-compose config`, nginx with `nginx -t` in a throwaway prefix with a
//! self-signed certificate, and systemd units with `systemd-analyze verify` where that works.
//! Also: the documented variables are exactly the ones the configuration code reads, and a backup
//! made with pg_dump restores into an identical database.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{fresh_database, http, kinitro, stdout, unused_database_url, ApiProcess};
use diesel_async::SimpleAsyncConnection;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A tool that CI installs (deploy/setup.sh); outside CI its absence skips the check, said aloud,
/// and in CI it fails the test ([`common::skip`]).
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        common::skip(&format!("{name} is not installed (run deploy/setup.sh)"));
    }
    found
}

#[test]
fn compose_files_validate() {
    if !tool("docker-compose") {
        return;
    }
    for file in [
        "deploy/docker-compose.backend.yml",
        "deploy/docker-compose.single.yml",
    ] {
        let out = Command::new("docker-compose")
            .args(["-f", file, "--env-file", "deploy/.env.example", "config"])
            .current_dir(repo())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            text.contains("KINITRO_API_API_KEY: change-me-too"),
            "{file} must pass the API key:\n{text}"
        );
    }
    let out = Command::new("docker-compose")
        .args([
            "-f",
            "deploy/docker-compose.backend.yml",
            "--env-file",
            "deploy/.env.example",
            "--profile",
            "monitoring",
            "config",
            "--services",
        ])
        .current_dir(repo())
        .output()
        .unwrap();
    let services: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect();
    let want: BTreeSet<String> = ["api", "executor", "postgres", "prometheus", "scheduler"]
        .map(String::from)
        .into();
    assert_eq!(services, want);
    // Every variable the compose file substitutes is in the example .env.
    let compose =
        std::fs::read_to_string(repo().join("deploy/docker-compose.backend.yml")).unwrap();
    let example = std::fs::read_to_string(repo().join("deploy/.env.example")).unwrap();
    for var in regex_vars(&compose) {
        assert!(
            example.lines().any(|l| l.starts_with(&format!("{var}="))),
            "{var} missing from deploy/.env.example"
        );
    }
}

/// `${NAME…}` substitutions of a compose file.
fn regex_vars(text: &str) -> BTreeSet<String> {
    text.split("${")
        .skip(1)
        .map(|rest| {
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

#[test]
fn dockerfile_runs_kinitro_as_cmd_with_a_healthcheck() {
    let d = std::fs::read_to_string(repo().join("deploy/Dockerfile")).unwrap();
    assert!(d.contains("CMD [\"kinitro\""), "kinitro must be the CMD");
    assert!(
        !d.lines().any(|l| l.trim_start().starts_with("ENTRYPOINT")),
        "no ENTRYPOINT"
    );
    assert!(d.contains("HEALTHCHECK") && d.contains("\"kinitro\", \"healthcheck\""));
    assert!(
        d.lines().any(|l| l.starts_with("USER kinitro")),
        "non-root user"
    );
    for lib in [
        "libegl1",
        "libegl-mesa0",
        "libgl1-mesa-dri",
        "libmujoco.so.3.17.0",
        "KINITRO_METAWORLD_ASSETS_DIR",
    ] {
        assert!(d.contains(lib), "{lib}");
    }
}

#[test]
fn nginx_configuration_passes_nginx_t() {
    if !tool("nginx") || !tool("openssl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=kinitro.test",
        ])
        .arg("-keyout")
        .arg(p.join("key.pem"))
        .arg("-out")
        .arg(p.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let site = std::fs::read_to_string(repo().join("deploy/nginx/kinitro.conf"))
        .unwrap()
        .replace(
            "/etc/letsencrypt/live/kinitro.example.com/fullchain.pem",
            p.join("cert.pem").to_str().unwrap(),
        )
        .replace(
            "/etc/letsencrypt/live/kinitro.example.com/privkey.pem",
            p.join("key.pem").to_str().unwrap(),
        );
    assert!(
        site.contains("limit_req zone=kinitro_public"),
        "rate limiting on the public endpoints"
    );
    std::fs::write(p.join("kinitro.conf"), site).unwrap();
    std::fs::write(
        p.join("nginx.conf"),
        format!(
            "pid {0}/nginx.pid; error_log stderr; events {{}}\nhttp {{ access_log off; client_body_temp_path {0}/tmp; include {0}/kinitro.conf; }}\n",
            p.display()
        ),
    )
    .unwrap();
    let out = Command::new("nginx")
        .arg("-t")
        .arg("-p")
        .arg(p)
        .arg("-c")
        .arg(p.join("nginx.conf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nginx -t: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn systemd_units_verify() {
    let units: Vec<_> = ["api", "scheduler", "executor", "run"]
        .iter()
        .map(|s| repo().join(format!("deploy/systemd/kinitro-{s}.service")))
        .collect();
    for u in &units {
        let text = std::fs::read_to_string(u).unwrap();
        for key in [
            "Restart=always",
            "User=kinitro",
            "EnvironmentFile=/etc/kinitro/",
            "ExecStart=/usr/local/bin/kinitro ",
        ] {
            assert!(text.contains(key), "{}: {key}", u.display());
        }
    }
    let works = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !works {
        common::skip("systemd-analyze is not available on this machine");
        return;
    }
    // Point ExecStart at a real binary so verify checks the unit, not this machine's install.
    let dir = tempfile::tempdir().unwrap();
    let mut copies = Vec::new();
    for u in &units {
        let text = std::fs::read_to_string(u)
            .unwrap()
            .replace("/usr/local/bin/kinitro", env!("CARGO_BIN_EXE_kinitro"));
        let copy = dir.path().join(u.file_name().unwrap());
        std::fs::write(&copy, text).unwrap();
        copies.push(copy);
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&copies)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let unit_errors: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("kinitro-")
                && (l.contains("Unknown")
                    || l.contains("Invalid")
                    || l.contains("Failed to parse")
                    || l.contains("bad-setting"))
        })
        .collect();
    assert!(unit_errors.is_empty(), "systemd-analyze verify:\n{text}");
    if !out.status.success() {
        eprintln!("systemd-analyze verify reported only environment problems (no running systemd here):\n{text}");
    }
}

/// Backticked `KINITRO_*` names in the first column of the README's tables.
fn readme_variables() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `KINITRO_"))
        .map(|rest| format!("KINITRO_{}", rest.split('`').next().unwrap()))
        .collect()
}

#[test]
fn documented_variables_are_exactly_the_configured_ones() {
    let known = kinitro::config::known_variables();
    let documented = readme_variables();
    let undocumented: Vec<_> = known.difference(&documented).collect();
    let unknown: Vec<_> = documented.difference(&known).collect();
    assert!(
        undocumented.is_empty(),
        "read by the code but not in the README tables: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "in the README tables but not read by the code: {unknown:?}"
    );
    // Each service's example file lists that service's variables, and nothing else.
    for (file, prefix) in [
        ("api", "KINITRO_API_"),
        ("scheduler", "KINITRO_SCHEDULER_"),
        ("executor", "KINITRO_EXECUTOR_"),
        ("run", "KINITRO_RUN_"),
        ("miner", "KINITRO_MINER_"),
    ] {
        let text = std::fs::read_to_string(repo().join(format!("config/{file}.env"))).unwrap();
        let listed: BTreeSet<String> = text
            .lines()
            .filter_map(|l| {
                l.trim_start_matches("# ")
                    .split('=')
                    .next()
                    .filter(|v| v.starts_with("KINITRO_"))
                    .map(String::from)
            })
            .collect();
        let want: BTreeSet<String> = known
            .iter()
            .filter(|v| v.starts_with(prefix))
            .cloned()
            .collect();
        let extra: BTreeSet<String> = listed
            .difference(&want)
            .filter(|v| *v != "KINITRO_BACKEND_EVAL_MEM_LIMIT")
            .cloned()
            .collect();
        assert!(
            want.is_subset(&listed),
            "config/{file}.env lacks {:?}",
            want.difference(&listed).collect::<Vec<_>>()
        );
        assert!(extra.is_empty(), "config/{file}.env has unknown {extra:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_and_restore_keep_cycles_and_weights() {
    if !tool("pg_dump") {
        return;
    }
    let source = fresh_database().await;
    kinitro::db::connect(&source)
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO evaluation_cycles (block_number, status, completed_at, n_miners, n_environments, duration_seconds, \
               env_ids, episodes_per_env, pareto_frontier, registry_source) \
             VALUES (500, 'completed', now(), 1, 1, 42.0, '[\"metaworld/reach-v3\"]', 2, '[7]', 'file'), \
                    (600, 'failed', now(), 1, 1, NULL, '[\"metaworld/reach-v3\"]', 2, NULL, 'file'); \
             INSERT INTO miner_scores (cycle_id, uid, hotkey, env_id, success_rate, mean_reward, episodes_completed, episodes_failed) \
             VALUES (1, 7, 'hk7', 'metaworld/reach-v3', 1.0, 9.5, 2, 0); \
             INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json) \
             VALUES (1, 500, '{\"7\": 1.0}', '{\"uids\": [7], \"values\": [65535]}'); \
             INSERT INTO scheduler_secret (id, seed_secret) VALUES (1, '\\x00112233');",
        )
        .await
        .unwrap();
    let dump = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("pg_dump")
        .arg(source.as_str())
        .arg("-f")
        .arg(dump.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let target = unused_database_url();
    assert!(
        kinitro(&["db", "create", "--database-url", target.as_str()], &[])
            .status
            .success()
    );
    let out = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", target.as_str(), "-f"])
        .arg(dump.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let status = |u: &kinitro::config::DatabaseUrl| {
        let o = kinitro(&["db", "status", "--database-url", u.as_str()], &[]);
        assert!(o.status.success());
        stdout(&o).lines().skip(1).collect::<Vec<_>>().join("\n")
    };
    assert_eq!(status(&source), status(&target));
    assert!(status(&target).contains("latest weights: block 500 miners 1"));
    let (a, b) = (
        ApiProcess::start(&source, &[("KINITRO_API_AUTH_DISABLED", "1")]),
        ApiProcess::start(&target, &[("KINITRO_API_AUTH_DISABLED", "1")]),
    );
    for path in ["/v1/weights/latest", "/v1/scores/latest", "/v1/scores/2"] {
        assert_eq!(
            http(a.port, "GET", path, &[], None).body,
            http(b.port, "GET", path, &[], None).body,
            "{path}"
        );
    }
    // The restored schema is complete: migrations have nothing left to apply.
    let o = kinitro(&["db", "init", "--database-url", target.as_str()], &[]);
    assert!(
        stdout(&o).starts_with("applied 0 migration(s)"),
        "{}",
        stdout(&o)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_the_api() {
    if !tool("prometheus") {
        return;
    }
    let url = fresh_database().await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_AUTH_DISABLED", "1")]);
    let dir = tempfile::tempdir().unwrap();
    let web = common::free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: kinitro\n    static_configs:\n      - targets: [\"127.0.0.1:{}\"]\n",
            api.port
        ),
    )
    .unwrap();
    let mut prom = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{web}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut last = String::new();
    let ok = loop {
        if let Ok((200, body)) = common::http_get(web, "/api/v1/query?query=kinitro_build_info") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            if v["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                break true;
            }
            last = body;
        }
        if std::time::Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let targets = common::http_get(web, "/api/v1/targets")
        .map(|r| r.1)
        .unwrap_or_default();
    let _ = prom.kill();
    let _ = prom.wait();
    assert!(
        ok,
        "no kinitro samples ingested: {last}\ntargets: {targets}"
    );
    assert!(targets.contains("\"health\":\"up\""), "{targets}");
}
