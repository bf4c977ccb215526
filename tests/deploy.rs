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

/// The API key an operator puts into deploy/.env.
const COMPOSE_KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// A copy of deploy/ with the example `.env` (its API key set) and `database.env` in place, as an
/// operator sets it up.
fn deploy_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("deploy");
    std::fs::create_dir(&d).unwrap();
    for (from, to) in [
        ("docker-compose.backend.yml", "docker-compose.backend.yml"),
        ("docker-compose.single.yml", "docker-compose.single.yml"),
        ("prometheus.yml", "prometheus.yml"),
        (".env.example", ".env"),
        ("database.env.example", "database.env"),
    ] {
        std::fs::copy(repo().join("deploy").join(from), d.join(to)).unwrap();
    }
    let env = std::fs::read_to_string(d.join(".env")).unwrap();
    assert!(
        env.contains("\nKINITRO_API_KEY=\n"),
        "the example's key is empty"
    );
    std::fs::write(
        d.join(".env"),
        env.replace(
            "\nKINITRO_API_KEY=\n",
            &format!("\nKINITRO_API_KEY={COMPOSE_KEY}\n"),
        ),
    )
    .unwrap();
    dir
}

fn compose_config(dir: &Path, file: &str, extra: &[&str]) -> String {
    let out = Command::new("docker-compose")
        .arg("-f")
        .arg(dir.join("deploy").join(file))
        .args(extra)
        .arg("config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{file}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn compose_files_validate() {
    if !tool("docker-compose") {
        return;
    }
    let dir = deploy_copy();
    for file in ["docker-compose.backend.yml", "docker-compose.single.yml"] {
        let text = compose_config(dir.path(), file, &[]);
        assert!(
            text.contains(&format!("KINITRO_API_API_KEY: {COMPOSE_KEY}")),
            "{file} must pass the API key:\n{text}"
        );
        // Unedited, the example has no key, and compose refuses to start (issue 23 item 7).
        let out = Command::new("docker-compose")
            .arg("-f")
            .arg(repo().join("deploy").join(file))
            .arg("--env-file")
            .arg(repo().join("deploy/.env.example"))
            .arg("config")
            .output()
            .unwrap();
        assert!(
            !out.status.success()
                && String::from_utf8_lossy(&out.stderr).contains("set KINITRO_API_KEY"),
            "{file} with the example's empty key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = compose_config(
        dir.path(),
        "docker-compose.backend.yml",
        &["--profile", "monitoring"],
    );
    let services: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("  ")?.strip_suffix(':'))
        .filter(|l| !l.starts_with(' '))
        .map(String::from)
        .collect();
    let want: BTreeSet<String> = ["api", "executor", "postgres", "prometheus", "scheduler"]
        .map(String::from)
        .into();
    assert!(want.is_subset(&services), "{services:?}");
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

/// Issue 23 items 3 and 6: nothing is published beyond loopback (nginx is the public door), and the
/// database password is never on a command line: it reaches postgres, api and scheduler through
/// their environment file, and no other service.
#[test]
fn compose_publishes_on_loopback_and_keeps_the_database_password_off_command_lines() {
    for file in [
        "deploy/docker-compose.backend.yml",
        "deploy/docker-compose.single.yml",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let mut in_ports = false;
        let mut published = 0;
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let trimmed = line.trim();
            if trimmed == "ports:" {
                in_ports = true;
                continue;
            }
            if in_ports && trimmed.starts_with("- ") {
                let port = trimmed[2..].trim_matches('"');
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{file} publishes {port} beyond loopback"
                );
                published += 1;
            } else {
                in_ports = false;
            }
            assert!(
                !trimmed.contains("--database-url") && !trimmed.contains("POSTGRES_PASSWORD}"),
                "{file}: a database URL or password on a command line: {trimmed}"
            );
        }
        assert!(published > 0, "{file} publishes the API");
    }
    let example = std::fs::read_to_string(repo().join("deploy/database.env.example")).unwrap();
    let value = |name: &str| {
        example
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in deploy/database.env.example"))
            .to_string()
    };
    let password = value("POSTGRES_PASSWORD");
    assert!(
        value("KINITRO_DATABASE_URL").contains(&format!(":{password}@postgres/")),
        "the example URL carries the example password"
    );
    if !tool("docker-compose") {
        return;
    }
    let dir = deploy_copy();
    // A password that nothing else in the files contains.
    let marker = "pw-only-in-database-env-7f3a";
    let copy = dir.path().join("deploy/database.env");
    std::fs::write(&copy, example.replace(&password, marker)).unwrap();
    let password = marker;
    let text = compose_config(
        dir.path(),
        "docker-compose.backend.yml",
        &["--profile", "monitoring"],
    );
    // Rendered: the password appears only as an environment variable, of the three services.
    let mut service = "";
    let mut holders = BTreeSet::new();
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':')) {
            if !name.starts_with(' ') {
                service = name;
            }
        }
        if line.contains(password) {
            let t = line.trim();
            assert!(
                t.starts_with("POSTGRES_PASSWORD: ") || t.starts_with("KINITRO_DATABASE_URL: "),
                "the database password outside the environment: {t}"
            );
            holders.insert(service.to_string());
        }
        if line.trim_start().starts_with("- ") && (line.contains(":8000") || line.contains(":9090"))
        {
            assert!(
                line.contains("127.0.0.1:"),
                "published beyond loopback: {line}"
            );
        }
    }
    assert_eq!(
        holders,
        ["api", "postgres", "scheduler"].map(String::from).into(),
        "who gets the database password"
    );
    assert!(text.contains("KINITRO_DATABASE_URL: postgresql://kinitro:"));
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

/// Whether `.dockerignore` keeps `path` out of the build context: the last rule that matches the path
/// or one of its parent directories wins (`!` re-includes), as Docker's pattern matcher does.
fn dockerignored(rules: &str, path: &str) -> bool {
    let parts: Vec<&str> = path.split('/').collect();
    let mut excluded = false;
    for rule in rules
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (negated, pattern) = match rule.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, rule),
        };
        let pattern: Vec<&str> = pattern.trim_start_matches('/').split('/').collect();
        if (1..=parts.len()).any(|n| glob_path(&pattern, &parts[..n])) {
            excluded = !negated;
        }
    }
    excluded
}

/// Path segments against pattern segments; `**` spans any number of segments.
fn glob_path(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|i| glob_path(rest, &path[i..])),
        Some((first, rest)) => {
            !path.is_empty()
                && glob_segment(first.as_bytes(), path[0].as_bytes())
                && glob_path(rest, &path[1..])
        }
    }
}

/// One segment: `*` any run of characters, `?` one character.
fn glob_segment(p: &[u8], s: &[u8]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((b'*', rest)) => (0..=s.len()).any(|i| glob_segment(rest, &s[i..])),
        Some((b'?', rest)) => !s.is_empty() && glob_segment(rest, &s[1..]),
        Some((c, rest)) => s.first() == Some(c) && glob_segment(rest, &s[1..]),
    }
}

/// Issue 23 item 12: the compose substitution file holds the database password and the API key; it
/// must never be committed, nor copied into an image layer by the Dockerfile's `COPY . .`.
#[test]
fn secrets_stay_out_of_git_and_of_the_docker_build_context() {
    for path in ["deploy/.env", "deploy/database.env", ".env"] {
        let out = Command::new("git")
            .args(["check-ignore", "-q", "--no-index", path])
            .current_dir(repo())
            .status()
            .unwrap();
        assert!(out.success(), "{path} is not git-ignored");
    }
    let rules = std::fs::read_to_string(repo().join(".dockerignore"))
        .expect("a .dockerignore beside the build context's root");
    for path in [
        ".env",
        "deploy/.env",
        "deploy/database.env",
        "config/.env",
        "target/release/kinitro",
        "third_party/mujoco/lib/libmujoco.so.3.17.0",
        ".git/config",
        ".deps/x",
        "deploy/tls/privkey.pem",
    ] {
        assert!(
            dockerignored(&rules, path),
            "{path} would be sent to docker build"
        );
    }
    // What the build needs stays in the context.
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "build.rs",
        ".cargo/config.toml",
        "src/main.rs",
        "migrations/x/up.sql",
        "deploy/setup.sh",
        "deploy/Dockerfile",
        "deploy/.env.example",
    ] {
        assert!(
            !dockerignored(&rules, path),
            "{path} is needed by docker build"
        );
    }
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
    // Issue 23 item 14. The headers sit in the TLS server block, and no location has its own
    // add_header (which would drop the inherited ones).
    let tls = &site[site.find("listen 443").expect("a TLS server")..];
    for line in [
        "server_tokens off;",
        "add_header Strict-Transport-Security \"max-age=31536000; includeSubDomains\" always;",
        "add_header X-Content-Type-Options \"nosniff\" always;",
    ] {
        assert!(tls.contains(line), "nginx TLS server lacks {line}");
    }
    assert_eq!(
        site.matches("add_header").count(),
        2,
        "add_header only at server level"
    );
    assert_eq!(
        site.matches("server_tokens off;").count(),
        2,
        "both servers"
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
        // Issue 23 item 14: the sandbox, line by line.
        let lines: BTreeSet<&str> = text.lines().map(str::trim).collect();
        for key in [
            "NoNewPrivileges=true",
            "ProtectSystem=strict",
            "ProtectHome=true",
            "PrivateTmp=true",
            "PrivateDevices=true",
            "PrivateMounts=true",
            "ProtectKernelTunables=true",
            "ProtectKernelModules=true",
            "ProtectKernelLogs=true",
            "ProtectControlGroups=true",
            "ProtectClock=true",
            "ProtectHostname=true",
            "ProtectProc=invisible",
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "RestrictNamespaces=true",
            "RestrictRealtime=true",
            "RestrictSUIDSGID=true",
            "LockPersonality=true",
            "RemoveIPC=true",
            "SystemCallArchitectures=native",
            "SystemCallFilter=@system-service",
            "SystemCallFilter=~@privileged",
            "CapabilityBoundingSet=",
            "AmbientCapabilities=",
            "UMask=0077",
        ] {
            assert!(lines.contains(key), "{}: {key}", u.display());
        }
        // Mesa's software renderer JITs: only the services that render may map W+X memory.
        let renders = ["executor", "run"]
            .iter()
            .any(|s| u.ends_with(format!("kinitro-{s}.service")));
        assert_eq!(
            lines.contains("MemoryDenyWriteExecute=true"),
            !renders,
            "{}: MemoryDenyWriteExecute",
            u.display()
        );
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
    // `systemd-analyze security` rates each unit "OK" or better, at most 2.0 (issue 23 item 14).
    for copy in &copies {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(copy)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let Some(overall) = text.lines().find(|l| l.contains("Overall exposure level")) else {
            eprintln!(
                "SKIPPED: systemd-analyze security --offline is not available: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        };
        eprintln!("{overall}");
        let mut words = overall.rsplit(": ").next().unwrap().split_whitespace();
        let exposure: f64 = words.next().unwrap().parse().unwrap();
        let rating = words.next().unwrap();
        assert!(
            exposure <= 2.0 && ["SAFE", "OK"].contains(&rating),
            "{}: {overall}",
            copy.display()
        );
    }
}

/// Backticked `KINITRO_*` (and the Hub's `HF_*`) names in the first column of the README's tables.
fn readme_variables() -> BTreeSet<String> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    readme
        .lines()
        .filter_map(|l| {
            ["KINITRO_", "HF_"].into_iter().find_map(|prefix| {
                l.strip_prefix(&format!("| `{prefix}"))
                    .map(|rest| format!("{prefix}{}", rest.split('`').next().unwrap()))
            })
        })
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
