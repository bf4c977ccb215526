//! Verification (docs/verification.md) on the real Docker engine, a real PostgreSQL and the real API,
//! with a local fake Hub serving real policy folders over HTTP and endpoints that serve the same
//! (or another) policy code: `kinitro verify` for every outcome and every fail-closed path, the
//! sandbox against hostile policies, storage and display through the API, and the scheduler's
//! `exclude` policy end to end.
//!
//! The sandbox image `kinitro-test/verifier:v1` is built once per test binary with
//! `kinitro env build verifier` (the engine's layer cache makes a rebuild quick).

mod common;
#[path = "verification/hub_client.rs"]
mod hub_client;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::fake_hub::{FakeHub, FakeRepo, Knobs, Redirect};
use common::task_pool::Proc;
use common::{free_port, fresh_database, http, kinitro, stderr, stdout, ApiProcess};
use serde_json::Value;

const IMAGE: &str = "kinitro-test/verifier:v1";
const KEY: &str = "verification-test-key-0123456789abcdef";
const REV: &str = "0123456789abcdef0123456789abcdef01234567";

/// Builds the sandbox image once per test binary.
fn image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let o = kinitro(&["env", "build", "verifier", "--tag", IMAGE], &[]);
        assert!(
            o.status.success(),
            "verifier image build failed: {}{}",
            stdout(&o),
            stderr(&o)
        );
    });
    IMAGE
}

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/verification")
}

/// A policy folder of the fixtures.
fn policy(name: &str) -> PathBuf {
    fixtures().join("policies").join(name)
}

/// An endpoint serving the policy folder `dir` (unseeded, like a real miner), and its URL.
fn serve(dir: &std::path::Path) -> (Proc, String) {
    let port = free_port();
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("third_party/python-miner/bin/python");
    let mut child = Command::new(python)
        .arg(fixtures().join("serve_policy.py"))
        .arg(dir)
        .arg(port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the test miner's Python (deploy/setup.sh)");
    let mut line = String::new();
    let out = child.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
    assert!(
        line.starts_with("ready"),
        "serve_policy.py did not start: {line:?}"
    );
    (Proc(child), format!("http://127.0.0.1:{port}"))
}

/// `kinitro verify --json` of `repo` at [`REV`] against `endpoint` through `hub`; (exit code, report).
fn verify(hub: &str, repo: &str, endpoint: &str, env: &[(&str, &str)]) -> (i32, Value) {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().to_string_lossy().to_string();
    let mut vars: Vec<(&str, &str)> = vec![
        ("HF_ENDPOINT", hub),
        ("KINITRO_EXECUTOR_VERIFICATION_ALLOW_PRIVATE_HUB", "true"),
        ("KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS", "true"),
        ("KINITRO_EXECUTOR_VERIFICATION_IMAGE", image()),
        ("KINITRO_EXECUTOR_VERIFICATION_CACHE_DIR", &cache_dir),
        // Generous: a loaded CI machine must not turn a slow start into a miner's fault.
        ("KINITRO_EXECUTOR_VERIFICATION_TIMEOUT", "90"),
    ];
    vars.extend_from_slice(env);
    let o = kinitro(
        &[
            "verify",
            "--repo",
            repo,
            "--revision",
            REV,
            "--endpoint",
            endpoint,
            "--uid",
            "7",
            "--json",
        ],
        &vars,
    );
    let report: Value = serde_json::from_str(&stdout(&o))
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {}{}", stdout(&o), stderr(&o)));
    (o.status.code().unwrap_or(-1), report)
}

fn outcome(report: &Value) -> &str {
    report["outcome"].as_str().unwrap_or_default()
}

fn error(report: &Value) -> String {
    report["error"].as_str().unwrap_or_default().to_string()
}

#[test]
fn the_committed_policy_passes_and_another_does_not_in_both_sample_modes() {
    let hub = FakeHub::start(vec![FakeRepo::new(
        "miner/det",
        REV,
        policy("deterministic"),
    )]);
    let (_same, same) = serve(&policy("deterministic"));
    let (_other, other) = serve(&policy("other"));
    for mode in ["upstream", "realistic"] {
        let env = [("KINITRO_EXECUTOR_VERIFICATION_SAMPLES_FROM", mode)];
        let (code, r) = verify(&hub.url(), "miner/det", &same, &env);
        assert_eq!((code, outcome(&r)), (0, "passed"), "{mode}: {r}");
        assert_eq!(r["match_score"].as_f64(), Some(1.0), "{r}");
        assert_eq!(r["samples"]["source"], mode);
        assert_eq!(r["samples"]["scores"].as_array().unwrap().len(), 5);
        let (code, r) = verify(&hub.url(), "miner/det", &other, &env);
        assert_eq!((code, outcome(&r)), (4, "mismatch"), "{mode}: {r}");
        assert!(r["match_score"].as_f64().unwrap() < 0.5, "{r}");
    }
    // Upstream samples have the public seed of (uid, revision); realistic ones a fresh one.
    let env = [("KINITRO_EXECUTOR_VERIFICATION_SAMPLES_FROM", "upstream")];
    let (_, a) = verify(&hub.url(), "miner/det", &same, &env);
    let expected = kinitro::verify::samples::test_seed(7, REV);
    assert_eq!(a["samples"]["seed"].as_u64(), Some(expected));
}

#[test]
fn a_missing_sandbox_image_is_a_failure_of_the_command() {
    let o = kinitro(
        &[
            "verify",
            "--repo",
            "miner/x",
            "--revision",
            REV,
            "--endpoint",
            "http://127.0.0.1:9",
        ],
        &[(
            "KINITRO_EXECUTOR_VERIFICATION_IMAGE",
            "kinitro-test/absent:v0",
        )],
    );
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("kinitro env build verifier --tag kinitro-test/absent:v0"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_stochastic_policy_cannot_pass() {
    let hub = FakeHub::start(vec![FakeRepo::new("miner/sto", REV, policy("stochastic"))]);
    let (_p, endpoint) = serve(&policy("stochastic"));
    let (code, r) = verify(&hub.url(), "miner/sto", &endpoint, &[]);
    assert_eq!((code, outcome(&r)), (4, "mismatch"), "{r}");
}

#[test]
fn hostile_policies_are_stopped_and_recorded_as_invalid() {
    let names = [
        "loop",
        "memory",
        "fork",
        "write_root",
        "network",
        "no_class",
    ];
    let hub = FakeHub::start(
        names
            .iter()
            .map(|n| FakeRepo::new(&format!("miner/{n}"), REV, policy(n)))
            .collect(),
    );
    // The endpoint never gets asked when the committed code cannot run.
    let (_p, endpoint) = serve(&policy("deterministic"));
    let env = [("KINITRO_EXECUTOR_VERIFICATION_TIMEOUT", "15")];
    for name in names {
        let started = Instant::now();
        let (code, r) = verify(&hub.url(), &format!("miner/{name}"), &endpoint, &env);
        assert_eq!((code, outcome(&r)), (5, "invalid"), "{name}: {r}");
        assert!(!error(&r).is_empty(), "{name}: no reason in {r}");
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "{name} took {:?}",
            started.elapsed()
        );
        if name == "loop" {
            assert!(error(&r).contains("time limit"), "{r}");
        }
    }
    // A module the image lacks is our side's gap, not the miner's fault.
    let hub = FakeHub::start(vec![FakeRepo::new(
        "miner/torch",
        REV,
        policy("missing_module"),
    )]);
    let (code, r) = verify(&hub.url(), "miner/torch", &endpoint, &[]);
    assert_eq!((code, outcome(&r)), (3, "unverifiable"), "{r}");
    assert!(error(&r).contains("torch"), "{r}");
}

#[test]
fn the_hub_is_checked_fail_closed() {
    let dir = policy("deterministic");
    let (_p, endpoint) = serve(&dir);
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("README.md"), "no policy here\n").unwrap();
    let with =
        |knobs: Knobs| FakeHub::start(vec![FakeRepo::new("miner/det", REV, &dir).with(knobs)]);
    let cases: Vec<(&str, FakeHub, &str)> = vec![
        (
            "too large by listing",
            with(Knobs {
                inflate_listing: true,
                ..Knobs::default()
            }),
            "invalid",
        ),
        (
            "a body larger than its listing",
            with(Knobs {
                lie_sizes: true,
                ..Knobs::default()
            }),
            "invalid",
        ),
        (
            "down",
            with(Knobs {
                down: true,
                ..Knobs::default()
            }),
            "unverifiable",
        ),
        (
            "path traversal",
            with(Knobs {
                extra_listing: Some("../evil.py".into()),
                ..Knobs::default()
            }),
            "unverifiable",
        ),
        (
            "redirect to file://",
            with(Knobs {
                redirect: Some(Redirect::FileScheme),
                ..Knobs::default()
            }),
            "unverifiable",
        ),
        (
            "redirect loop",
            with(Knobs {
                redirect: Some(Redirect::Loop),
                ..Knobs::default()
            }),
            "unverifiable",
        ),
        (
            "no policy.py",
            FakeHub::start(vec![FakeRepo::new("miner/det", REV, empty.path())]),
            "invalid",
        ),
    ];
    for (what, hub, want) in &cases {
        let (_, r) = verify(&hub.url(), "miner/det", &endpoint, &[]);
        assert_eq!(outcome(&r), *want, "{what}: {r}");
    }
    let (code, r) = verify(&FakeHub::unreachable_url(), "miner/det", &endpoint, &[]);
    assert_eq!((code, outcome(&r)), (3, "unverifiable"), "{r}");
    assert!(error(&r).contains("Cannot verify repository size"), "{r}");
    // A redirect to another loopback port (the Hub's download hosts) is followed.
    let files = FakeHub::start(vec![FakeRepo::new("miner/det", REV, &dir)]);
    let hub = with(Knobs {
        redirect: Some(Redirect::ToOtherServer(files.url())),
        ..Knobs::default()
    });
    let (code, r) = verify(&hub.url(), "miner/det", &endpoint, &[]);
    assert_eq!((code, outcome(&r)), (0, "passed"), "{r}");
    assert!(
        !files.requests().is_empty(),
        "the redirect was not followed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_are_stored_listed_and_counted_through_the_api() {
    let hub = FakeHub::start(vec![FakeRepo::new(
        "miner/det",
        REV,
        policy("deterministic"),
    )]);
    let (_p, endpoint) = serve(&policy("deterministic"));
    let url = fresh_database().await;
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let base = format!("http://127.0.0.1:{}", api.port);
    let (code, r) = verify(
        &hub.url(),
        "miner/det",
        &endpoint,
        &[
            ("KINITRO_EXECUTOR_API_URL", &base),
            ("KINITRO_EXECUTOR_API_KEY", KEY),
            ("KINITRO_EXECUTOR_EXECUTOR_ID", "verifier-1"),
        ],
    );
    assert_eq!(code, 0, "{r}");
    // --json printed the report without --store: nothing was stored yet.
    let list = http(api.port, "GET", "/v1/verifications", &[], None).json();
    assert_eq!(list["verifications"].as_array().unwrap().len(), 0);
    let o = kinitro(
        &[
            "verify",
            "--repo",
            "miner/det",
            "--revision",
            REV,
            "--endpoint",
            &endpoint,
            "--uid",
            "7",
            "--store",
        ],
        &[
            ("HF_ENDPOINT", &hub.url()),
            ("KINITRO_EXECUTOR_VERIFICATION_ALLOW_PRIVATE_HUB", "true"),
            ("KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS", "true"),
            ("KINITRO_EXECUTOR_VERIFICATION_IMAGE", image()),
            ("KINITRO_EXECUTOR_API_URL", &base),
            ("KINITRO_EXECUTOR_API_KEY", KEY),
            ("KINITRO_EXECUTOR_EXECUTOR_ID", "verifier-1"),
        ],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("outcome: passed"), "{}", stdout(&o));
    let list = http(api.port, "GET", "/v1/verifications?uid=7", &[], None).json();
    let rows = list["verifications"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{list}");
    assert_eq!(rows[0]["outcome"], "passed");
    assert_eq!(rows[0]["executor_id"], "verifier-1");
    assert_eq!(
        rows[0]["endpoint"],
        Value::Null,
        "the endpoint is for keyed callers only"
    );
    let auth = format!("Bearer {KEY}");
    let keyed = http(
        api.port,
        "GET",
        "/v1/verifications?uid=7",
        &[("Authorization", &auth)],
        None,
    )
    .json();
    assert_eq!(keyed["verifications"][0]["endpoint"], endpoint.as_str());
    let none = http(api.port, "GET", "/v1/verifications?uid=8", &[], None).json();
    assert_eq!(none["verifications"].as_array().unwrap().len(), 0);
    let bad = http(api.port, "GET", "/v1/verifications?limit=0", &[], None);
    assert_eq!(bad.status, 422);
    let metrics = http(api.port, "GET", "/metrics", &[], None).body;
    assert!(
        metrics.contains("kinitro_verifications_total{outcome=\"passed\"} 1"),
        "{metrics}"
    );
    // Reports are executor writes: a key is needed, and the body is checked.
    let body = rows[0].to_string();
    let r = http(api.port, "POST", "/v1/verifications", &[], Some(&body));
    assert_eq!(r.status, 401);
    let r = http(
        api.port,
        "POST",
        "/v1/verifications",
        &[("Authorization", &auth)],
        Some(r#"{"executor_id": "x", "uid": 70000}"#),
    );
    assert_eq!(r.status, 422, "{}", r.body);
}

/// One row of the `miners` snapshots, with the verify flag of the miner's first task in that cycle.
#[derive(Debug, Clone, diesel::QueryableByName)]
struct Standing {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    cycle_id: i32,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    uid: i32,
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    status_reason: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    revision: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    verify: bool,
}

async fn standings(url: &kinitro::config::DatabaseUrl) -> Vec<Standing> {
    use diesel_async::RunQueryDsl;
    let mut conn = kinitro::db::connect(url).await.unwrap();
    diesel::sql_query(
        "SELECT m.cycle_id, m.uid, m.status, m.status_reason, m.revision, \
           coalesce((SELECT bool_or(t.verify) FROM task_pool t \
                     WHERE t.cycle_id = m.cycle_id AND t.miner_uid = m.uid), false) AS verify \
         FROM miners m ORDER BY m.cycle_id, m.uid",
    )
    .load(&mut conn)
    .await
    .unwrap()
}

async fn verifications_of(url: &kinitro::config::DatabaseUrl, uid: i32) -> Vec<(String, String)> {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        revision: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        outcome: String,
    }
    let mut conn = kinitro::db::connect(url).await.unwrap();
    let rows: Vec<Row> =
        diesel::sql_query("SELECT revision, outcome FROM verifications WHERE uid = $1 ORDER BY id")
            .bind::<diesel::sql_types::Integer, _>(uid)
            .load(&mut conn)
            .await
            .unwrap();
    rows.into_iter().map(|r| (r.revision, r.outcome)).collect()
}

fn miners_file(path: &std::path::Path, miners: &[(u16, &str, &str, &str)]) {
    let mut text = String::new();
    for (uid, repo, revision, endpoint) in miners {
        text += &format!(
            "[[miners]]\nuid = {uid}\nhotkey = \"hotkey-{uid}\"\nendpoint = \"{endpoint}\"\n\
             commit_block = {}\nrepo = \"{repo}\"\nrevision = \"{revision}\"\n\n",
            100 + uid
        );
    }
    std::fs::write(path, text).unwrap();
}

/// Polls `check` on the standings until it holds (or panics with them after `secs`).
async fn wait_for(
    url: &kinitro::config::DatabaseUrl,
    secs: u64,
    what: &str,
    check: impl Fn(&[Standing]) -> bool,
) -> Vec<Standing> {
    let start = Instant::now();
    loop {
        let s = standings(url).await;
        if check(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} did not happen: {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exclude_policy_holds_out_a_cheater_then_verifies_it_again() {
    const REV2: &str = "fedcba9876543210fedcba9876543210fedcba98";
    let hub = FakeHub::start(vec![
        FakeRepo::new("miner/honest", REV, policy("deterministic")),
        FakeRepo::new("miner/cheat", REV, policy("deterministic")),
        FakeRepo::new("miner/cheat", REV2, policy("deterministic")),
        FakeRepo::new("miner/loop", REV, policy("loop")),
    ]);
    let (_honest, honest) = serve(&policy("deterministic"));
    let (_cheat, cheat) = serve(&policy("other"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("miners.toml");
    // uid 3's repository is not on the Hub: unverifiable, which never excludes. uid 4 commits a
    // policy that never answers: its sandbox runs into the time limit while the executor goes on
    // evaluating, and it is invalid.
    miners_file(
        &file,
        &[
            (1, "miner/honest", REV, &honest),
            (2, "miner/cheat", REV, &cheat),
            (3, "miner/absent", REV, &honest),
            (4, "miner/loop", REV, &honest),
        ],
    );
    let url = fresh_database().await;
    let port = free_port();
    let cache = dir.path().join("cache");
    let hub_url = hub.url();
    let run = Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "run",
            "--no-auth",
            "--database-url",
            url.as_str(),
            "--port",
            &port.to_string(),
        ])
        .args(["--miners-file", file.to_str().unwrap()])
        .envs([
            ("KINITRO_LOG_FORMAT", "text"),
            ("KINITRO_SCHEDULER_ENV_IDS", "metaworld/reach-v3"),
            ("KINITRO_SCHEDULER_EPISODES_PER_ENV", "1"),
            ("KINITRO_SCHEDULER_EVAL_INTERVAL_SECONDS", "1"),
            ("KINITRO_SCHEDULER_VERIFICATION_POLICY", "exclude"),
            ("KINITRO_SCHEDULER_VERIFICATION_EXCLUDE_CYCLES", "2"),
            ("KINITRO_EXECUTOR_MAX_TIMESTEPS", "5"),
            ("KINITRO_EXECUTOR_USE_IMAGES", "false"),
            ("KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS", "true"),
            ("KINITRO_EXECUTOR_VERIFICATION_ENABLED", "true"),
            ("KINITRO_EXECUTOR_VERIFICATION_RATE", "1.0"),
            ("KINITRO_EXECUTOR_VERIFICATION_ALLOW_PRIVATE_HUB", "true"),
            ("KINITRO_EXECUTOR_VERIFICATION_IMAGE", image()),
            (
                "KINITRO_EXECUTOR_VERIFICATION_CACHE_DIR",
                cache.to_str().unwrap(),
            ),
            ("KINITRO_EXECUTOR_VERIFICATION_TIMEOUT", "20"),
            ("HF_ENDPOINT", hub_url.as_str()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _run = Proc(run);
    // The first verification of the cheat's revision is a mismatch, and it is excluded with it.
    let s = wait_for(&url, 240, "the exclusion of uid 2", |s| {
        s.iter().any(|m| m.uid == 2 && m.status == "excluded")
    })
    .await;
    let excluded = s
        .iter()
        .find(|m| m.uid == 2 && m.status == "excluded")
        .unwrap();
    assert!(
        excluded
            .status_reason
            .as_deref()
            .is_some_and(|r| r.starts_with("verification mismatch (match ")),
        "{excluded:?}"
    );
    let first_exclusion = excluded.cycle_id;
    // After its cycles out it is evaluated again with a task marked for verification, and verified
    // again (whatever the executor's memory of the pair).
    let s = wait_for(&url, 240, "the re-admission of uid 2", |s| {
        s.iter()
            .any(|m| m.uid == 2 && m.cycle_id > first_exclusion && m.status == "active" && m.verify)
    })
    .await;
    let readmitted = s
        .iter()
        .find(|m| m.uid == 2 && m.cycle_id > first_exclusion && m.status == "active")
        .unwrap()
        .cycle_id;
    assert!(
        s.iter()
            .filter(|m| m.uid == 2 && m.cycle_id > first_exclusion && m.cycle_id < readmitted)
            .all(|m| m.status == "excluded"),
        "uid 2 must stay out until re-admitted: {s:#?}"
    );
    let start = Instant::now();
    while verifications_of(&url, 2)
        .await
        .iter()
        .filter(|(r, o)| r == REV && o == "mismatch")
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no second verification of uid 2"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // A new revision lifts the exclusion at once.
    miners_file(
        &file,
        &[
            (1, "miner/honest", REV, &honest),
            (2, "miner/cheat", REV2, &cheat),
            (3, "miner/absent", REV, &honest),
            (4, "miner/loop", REV, &honest),
        ],
    );
    let s = wait_for(&url, 120, "uid 2 active at its new revision", |s| {
        s.iter()
            .any(|m| m.uid == 2 && m.revision.as_deref() == Some(REV2) && m.status == "active")
    })
    .await;
    // The looping policy was stopped by the time limit and held out for it, while cycles went on.
    let looping = wait_for(&url, 120, "the exclusion of uid 4", |s| {
        s.iter().any(|m| m.uid == 4 && m.status == "excluded")
    })
    .await;
    let reason = looping
        .iter()
        .find(|m| m.uid == 4 && m.status == "excluded")
        .and_then(|m| m.status_reason.clone())
        .unwrap_or_default();
    assert!(
        reason.starts_with("verification invalid (") && reason.contains("time limit"),
        "{reason}"
    );
    // The honest miner passed and the unverifiable one was never held out.
    assert!(
        s.iter()
            .filter(|m| m.uid == 1 || m.uid == 3)
            .all(|m| m.status == "active"),
        "{s:#?}"
    );
    assert!(verifications_of(&url, 1)
        .await
        .iter()
        .any(|(_, o)| o == "passed"));
    let absent = verifications_of(&url, 3).await;
    assert!(
        !absent.is_empty() && absent.iter().all(|(_, o)| o == "unverifiable"),
        "{absent:?}"
    );
    // The API shows the outcome with the miners.
    let miners = http(port, "GET", "/v1/miners", &[], None).json();
    let uid1 = miners["miners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["uid"] == 1)
        .unwrap();
    assert_eq!(uid1["verification"]["outcome"], "passed", "{miners}");
    assert_eq!(uid1["verification"]["match_score"], 1.0);
    // And so does the dashboard's miner page.
    let page = http(port, "GET", "/miners/1", &[], None).body;
    assert!(
        page.contains("passed (match 1.000) at revision 0123456789ab"),
        "{page}"
    );
}

/// A verifier's start-up sweep removes only old sandboxes: a young one that is merely created (or
/// exited) may be another live verifier's, about to start (or be inspected), and removing it
/// would kill that run.
#[tokio::test]
async fn the_leftover_sweep_spares_a_young_sandbox_of_another_verifier() {
    use bollard::query_parameters::{
        CreateContainerOptionsBuilder, InspectContainerOptions, RemoveContainerOptionsBuilder,
    };
    use kinitro::verify::sandbox::{remove_leftovers, SANDBOX_LABEL};
    let engine = kinitro::container::connect("localhost", 30).await.unwrap();
    let name = format!("kinitro-test-sweep-{}", std::process::id());
    let body = bollard::models::ContainerCreateBody {
        image: Some(image().to_string()),
        labels: Some(std::collections::HashMap::from([(
            SANDBOX_LABEL.to_string(),
            "sandbox".to_string(),
        )])),
        ..Default::default()
    };
    let created = engine
        .docker
        .create_container(
            Some(CreateContainerOptionsBuilder::default().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    remove_leftovers(&engine, Duration::from_secs(600)).await;
    let spared = engine
        .docker
        .inspect_container(&created.id, None::<InspectContainerOptions>)
        .await
        .is_ok();
    // (Sweeping old ones is not exercised here: a zero bound would also remove the sandboxes of
    // the tests running beside this one.)
    let _ = engine
        .docker
        .remove_container(
            &created.id,
            Some(RemoveContainerOptionsBuilder::default().force(true).build()),
        )
        .await;
    assert!(spared, "a young created sandbox was swept");
}
