//! The dashboard in a real browser (headless Chromium): every page renders from a seeded database,
//! shows the expected miner rows and values (asserted from the DOM Chromium built), escapes a hostile
//! repo name, and the overview's progress bar moves as results arrive. Screenshots of each page are
//! saved and their paths printed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{fresh_database, http, ApiProcess};
use diesel_async::SimpleAsyncConnection;
use serde_json::{json, Value};

const KEY: &str = "dashboard-test-key-0123456789abcdef0123";
/// A repo name that would run script if it reached the page unescaped.
const HOSTILE: &str =
    r#"<script>document.title='owned'</script><img src=x onerror="document.title='owned'">"#;

/// Cycle 1 completed over reach and push with three miners (uid 2 with a hostile repo name), its
/// weights and the frontier; cycle 2 running with 6 tasks.
fn seed() -> String {
    let hostile = HOSTILE.replace('\'', "''");
    format!(
        r#"
INSERT INTO evaluation_cycles (block_number, status, completed_at, n_miners, n_environments, duration_seconds,
    env_ids, episodes_per_env, pareto_frontier, registry_source)
VALUES (12300, 'completed', now(), 3, 2, 3911.2, '["metaworld/reach-v3","metaworld/push-v3"]', 50, '[0, 1]', 'chain');
INSERT INTO miners (cycle_id, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status)
VALUES (1, 0, 'hk0', 'user/policy', 'abc123de', 'https://m0.example', false, 1000, 'active'),
       (1, 1, 'hk1', 'user/other', 'ffff0000', 'https://m1.example', false, 1100, 'active'),
       (1, 2, 'hk2', '{hostile}', 'deadbeef', 'https://m2.example', false, 1200, 'active');
INSERT INTO miner_scores (cycle_id, uid, hotkey, env_id, success_rate, mean_reward, episodes_completed, episodes_failed, episodes_excluded)
VALUES (1, 0, 'hk0', 'metaworld/reach-v3', 0.9, 30.0, 50, 0, 0),
       (1, 0, 'hk0', 'metaworld/push-v3', 0.5, 20.0, 50, 0, 0),
       (1, 1, 'hk1', 'metaworld/reach-v3', 0.3, 5.0, 50, 0, 0),
       (1, 1, 'hk1', 'metaworld/push-v3', 0.8, 9.0, 50, 0, 0),
       (1, 2, 'hk2', 'metaworld/reach-v3', 0.2, 1.0, 50, 0, 0),
       (1, 2, 'hk2', 'metaworld/push-v3', 0.1, 1.0, 50, 0, 0);
INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json)
VALUES (1, 12300, '{{"0": 0.7, "1": 0.25, "2": 0.05}}', '{{"uids": [0, 1, 2], "values": [65535, 23405, 4681]}}');
INSERT INTO evaluation_cycles (block_number, n_miners, n_environments, env_ids, episodes_per_env, registry_source)
VALUES (12345, 3, 2, '["metaworld/reach-v3","metaworld/push-v3"]', 50, 'chain');
INSERT INTO miners (cycle_id, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status)
SELECT 2, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status FROM miners WHERE cycle_id = 1;
INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed)
SELECT '00000000-0000-4000-8000-00000000000' || i, 2, i % 3, 'hk' || (i % 3), 'https://m.example',
       'metaworld/reach-v3', i, i FROM generate_series(1, 6) AS i;
INSERT INTO scheduler_state (id, current_block, chain_ok, registry_source, env_ids, eval_interval_seconds,
    heartbeat_interval_seconds, next_cycle_at, heartbeat_at)
VALUES (1, 12350, true, 'chain', '["metaworld/reach-v3","metaworld/push-v3"]', 3600, 30, NULL, now());
"#
    )
}

/// The Chromium binary, or `None` (the test then skips, or fails under CI).
fn chromium() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Runs headless Chromium on `url` with `args` and returns its stdout. Each run has a fresh profile,
/// so nothing comes from the browser's cache (the pages say `max-age=5`).
fn browse(browser: &Path, url: &str, args: &[&str]) -> String {
    let profile = tempfile::tempdir().unwrap();
    let profile = profile.path();
    let out = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_page_renders_in_a_browser_with_the_apis_numbers() {
    let Some(browser) = chromium() else {
        return common::skip("chromium is not installed (deploy/setup.sh installs it)");
    };
    let url = fresh_database().await;
    kinitro::db::connect(&url)
        .await
        .unwrap()
        .batch_execute(&seed())
        .await
        .unwrap();
    let api = ApiProcess::start(&url, &[("KINITRO_API_API_KEY", KEY)]);
    let base = format!("http://127.0.0.1:{}", api.port);
    let shots = tempfile::Builder::new()
        .prefix("kinitro-dashboard-")
        .tempdir()
        .unwrap()
        .keep();
    let dom = |path: &str| browse(&browser, &format!("{base}{path}"), &["--dump-dom"]);

    // Plain HTTP: status, headers, weight, no external resource.
    for path in [
        "/",
        "/dashboard",
        "/leaderboard",
        "/miners/0",
        "/miners/2",
        "/pareto",
        "/weights",
    ] {
        let r = http(api.port, "GET", path, &[], None);
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let headers = r.headers.to_ascii_lowercase();
        assert!(
            headers.contains("cache-control: public, max-age=5"),
            "{path}: {headers}"
        );
        assert!(headers.contains("content-type: text/html"), "{path}");
        assert!(
            r.body.len() < 300 * 1024,
            "{path} weighs {} bytes",
            r.body.len()
        );
        for external in ["http://", "https://", "//cdn", "@import", "<link"] {
            assert!(!r.body.contains(external), "{path} refers to {external}");
        }
    }
    assert_eq!(http(api.port, "GET", "/miners/x", &[], None).status, 404);

    // The leaderboard: the API's numbers, in the DOM Chromium built.
    let board = dom("/leaderboard");
    let scores = http(api.port, "GET", "/v1/scores/latest", &[], None).json();
    for uid in ["0", "1", "2"] {
        assert!(
            board.contains(&format!("id=\"miner-{uid}\"")),
            "row of uid {uid}"
        );
        for (env, rate) in scores["scores"][uid].as_object().unwrap() {
            let shown = format!("{:.1}%", rate.as_f64().unwrap() * 100.0);
            assert!(board.contains(&shown), "uid {uid} {env}: {shown} not shown");
        }
    }
    let weights = http(api.port, "GET", "/v1/weights/latest", &[], None).json();
    assert!(board.contains(&format!("{:.4}", weights["weights"]["0"].as_f64().unwrap())));
    // Rows sorted by weight: uid 0 before uid 1 before uid 2.
    let at = |uid: &str| board.find(&format!("id=\"miner-{uid}\"")).unwrap();
    assert!(at("0") < at("1") && at("1") < at("2"));
    let by_uid = dom("/leaderboard?sort=block");
    assert!(by_uid.contains("id=\"miner-2\""));

    // The hostile repo name is text, not markup: no injected element ran or exists.
    for page in [board.as_str(), &dom("/miners/2")] {
        assert!(
            page.contains("&lt;script&gt;document.title"),
            "escaped text shown"
        );
        assert!(!page.contains("<img src=\"x\""), "no injected image");
        assert!(!page.contains("<title>owned"), "no script ran");
    }

    // The miner page explains the ε-Pareto relation: uid 0 dominates uid 2 on both envs.
    let m2 = dom("/miners/2");
    assert!(
        m2.contains("uid 0</a> dominates you on reach-v3, push-v3"),
        "{m2}"
    );
    assert!(m2.contains("id=\"rates\""), "the rate chart");
    let m0 = dom("/miners/0");
    assert!(m0.contains("Nobody: you are on the ε-Pareto frontier."));

    // The Pareto view: both envs, the pair's frontier and the stored one.
    let p = dom("/pareto?a=0&b=1");
    assert!(p.contains("<span id=\"pair-frontier\">0, 1</span>"), "{p}");
    assert!(p.contains("<span id=\"full-frontier\">0, 1</span>"));
    assert_eq!(p.matches("class=\"marked\"").count(), 2);

    // Weights: history chart and the latest u16 vector as stored.
    let w = dom("/weights");
    assert!(w.contains("id=\"weights-history\""));
    for v in ["65535", "23405", "4681"] {
        assert!(w.contains(&format!("<td>{v}</td>")), "u16 {v}");
    }

    // The overview's progress bar moves as executors report results.
    let progress = |page: &str| -> (u32, u32) {
        let tag = &page[page.find("id=\"cycle-progress\"").expect("a progress bar")..];
        let attr = |name: &str| -> u32 {
            let v = &tag[tag.find(&format!("{name}=\"")).unwrap() + name.len() + 2..];
            v[..v.find('"').unwrap()].parse().unwrap()
        };
        (attr("value"), attr("max"))
    };
    assert_eq!(progress(&dom("/")), (0, 6));
    let auth = ("Authorization", format!("Bearer {KEY}"));
    let auth = [(auth.0, auth.1.as_str())];
    let fetched = http(
        api.port,
        "POST",
        "/v1/tasks/fetch",
        &auth,
        Some(&json!({"executor_id": "e", "batch_size": 4}).to_string()),
    )
    .json();
    let results: Vec<Value> = fetched["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| json!({"task_uuid": t["task_uuid"], "success": true, "score": 1.0}))
        .collect();
    let r = http(
        api.port,
        "POST",
        "/v1/tasks/submit",
        &auth,
        Some(&json!({"executor_id": "e", "results": results}).to_string()),
    );
    assert_eq!(r.json()["accepted"], 4);
    std::thread::sleep(kinitro::api::cache::MAX_AGE);
    let overview = dom("/");
    assert_eq!(progress(&overview), (4, 6));
    assert!(overview.contains("id=\"service-status\">running"));

    // Screenshots for a developer to look at.
    for (name, path) in [
        ("overview", "/"),
        ("leaderboard", "/leaderboard"),
        ("miner-2", "/miners/2"),
        ("pareto", "/pareto"),
        ("weights", "/weights"),
    ] {
        let file = shots.join(format!("{name}.png"));
        browse(
            &browser,
            &format!("{base}{path}"),
            &[&format!("--screenshot={}", file.display())],
        );
        assert!(
            std::fs::metadata(&file)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{name} screenshot"
        );
        println!("dashboard screenshot: {}", file.display());
    }
}
