//! The HTTP API against a throwaway PostgreSQL: every endpoint, auth, the error paths, concurrent
//! claiming, the claim plan, and a database outage with recovery.

mod common;

use std::collections::HashSet;

use common::{fresh_database, http, ApiProcess};
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use kinitro::config::DatabaseUrl;
use kinitro_actors::states::TaskStatus;
use serde_json::{json, Value};

/// At least 32 characters: the API refuses shorter keys.
const KEY: &str = "s3cret-key-of-the-api-tests-0123456789abcdef";
const AUTH: (&str, &str) = (
    "Authorization",
    "Bearer s3cret-key-of-the-api-tests-0123456789abcdef",
);
/// A second key (rotation).
const OLD_KEY: &str = "old-key-of-the-api-tests-0123456789abcdef";

/// Cycle 1 completed (block 12300, weights, scores), cycle 2 running (block 12345) with 6 tasks,
/// registry snapshots for both, and a fresh scheduler heartbeat.
const SEED: &str = r#"
INSERT INTO evaluation_cycles (block_number, status, completed_at, n_miners, n_environments, duration_seconds,
    env_ids, episodes_per_env, pareto_frontier, registry_source)
VALUES (12300, 'completed', now(), 2, 2, 3911.2, '["metaworld/reach-v3","metaworld/push-v3"]', 50, '[0]', 'chain');
INSERT INTO miners (cycle_id, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status)
VALUES (1, 0, 'hk0', 'user/policy', 'abc123de', 'https://m0.example', false, 1000, 'active'),
       (1, 1, 'hk1', 'user/other', 'ffff0000', 'https://secret.example', true, 1100, 'active');
INSERT INTO miner_scores (cycle_id, uid, hotkey, env_id, success_rate, mean_reward, episodes_completed, episodes_failed, episodes_excluded)
VALUES (1, 0, 'hk0', 'metaworld/push-v3', 0.5, 20.0, 50, 0, 0),
       (1, 0, 'hk0', 'metaworld/reach-v3', 0.9, 30.0, 49, 1, 0),
       (1, 1, 'hk1', 'metaworld/reach-v3', 0.3, 5.0, 50, 0, 2),
       (1, 1, 'hk1', 'metaworld/push-v3', 0.1, 1.0, 50, 0, 0);
INSERT INTO computed_weights (cycle_id, block_number, weights_json, weights_u16_json)
VALUES (1, 12300, '{"0": 0.9820137900379085, "1": 0.017986209962091555}', '{"uids": [0, 1], "values": [64356, 1178]}');
INSERT INTO evaluation_cycles (block_number, n_miners, n_environments, env_ids, episodes_per_env, registry_source)
VALUES (12345, 2, 2, '["metaworld/reach-v3","metaworld/push-v3"]', 50, 'chain');
INSERT INTO miners (cycle_id, uid, hotkey, repo, revision, endpoint, encrypted, commit_block, status, status_reason)
VALUES (2, 0, 'hk0', 'user/policy', 'abc123de', 'https://m0.example', false, 1000, 'active', NULL),
       (2, 1, 'hk1', 'user/other', 'ffff0000', 'https://secret.example', true, 1100, 'active', NULL),
       (2, 2, 'hk2', NULL, NULL, NULL, false, 1200, 'invalid_commitment', 'bad commitment');
INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed, max_attempts)
SELECT '00000000-0000-4000-8000-00000000000' || i, 2, i % 2, 'hk' || (i % 2), 'https://m.example',
       CASE WHEN i < 4 THEN 'metaworld/reach-v3' ELSE 'metaworld/push-v3' END, i, -1 - i, 2
FROM generate_series(1, 6) AS i;
INSERT INTO scheduler_state (id, current_block, chain_ok, registry_source, env_ids, eval_interval_seconds,
    heartbeat_interval_seconds, next_cycle_at, heartbeat_at)
VALUES (1, 12350, true, 'chain', '["metaworld/reach-v3","metaworld/push-v3"]', 3600, 30, NULL, now());
"#;

async fn seeded() -> DatabaseUrl {
    let url = fresh_database().await;
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    conn.batch_execute(SEED).await.unwrap();
    url
}

fn api(url: &DatabaseUrl) -> ApiProcess {
    ApiProcess::start(
        url,
        &[("KINITRO_API_API_KEY", &format!("{OLD_KEY}, {KEY}"))],
    )
}

fn post(p: &ApiProcess, path: &str, body: &Value) -> common::Resp {
    http(p.port, "POST", path, &[AUTH], Some(&body.to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn read_endpoints_answer_as_the_spec_shows() {
    let url = seeded().await;
    let p = api(&url);

    let h = http(p.port, "GET", "/health", &[], None);
    assert_eq!(h.status, 200);
    assert_eq!(
        h.json(),
        json!({"status": "healthy", "database": "connected", "version": env!("CARGO_PKG_VERSION")})
    );
    assert!(h
        .headers
        .to_ascii_lowercase()
        .contains("content-type: application/json"));

    let s = http(p.port, "GET", "/v1/status", &[], None).json();
    assert_eq!(s["status"], "running");
    assert_eq!(s["current_block"], 12350);
    assert_eq!(s["last_eval_block"], 12300);
    assert_eq!(s["next_eval_in_seconds"], Value::Null);
    assert_eq!(s["miners_registered"], 3);
    assert_eq!(
        s["environments_enabled"],
        json!(["metaworld/reach-v3", "metaworld/push-v3"])
    );
    assert_eq!(s["current_cycle"]["id"], 2);
    assert_eq!(s["current_cycle"]["status"], "running");
    assert_eq!(s["current_cycle"]["completed_at"], Value::Null);
    assert_eq!(s["last_completed_cycle"]["id"], 1);
    assert_eq!(
        (
            s["total_cycles"].as_i64(),
            s["total_miners_evaluated"].as_i64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(s["is_evaluating"], true);
    assert_eq!(s["environments"].as_array().unwrap().len(), 8);
    assert!(s["current_cycle"]["started_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));

    let w = http(p.port, "GET", "/v1/weights/latest", &[], None).json();
    assert_eq!(w["block"], 12300);
    assert_eq!(w["block_number"], 12300);
    assert_eq!(w["cycle_id"], 1);
    assert_eq!(
        w["weights"],
        json!({"0": 0.9820137900379085, "1": 0.017986209962091555})
    );
    assert_eq!(
        w["weights_u16"],
        json!({"uids": [0, 1], "values": [64356, 1178]})
    );
    assert_eq!(
        w["metadata"],
        json!({"n_miners_evaluated": 2, "n_environments": 2, "evaluation_duration_seconds": 3911.2})
    );
    let created = w["created_at"].as_str().unwrap();
    assert_eq!(
        created.len(),
        "2026-02-13T04:00:00.123456Z".len(),
        "{created}"
    );
    assert_eq!(
        http(p.port, "GET", "/v1/weights/12300", &[], None).json(),
        w
    );
    let r = http(p.port, "GET", "/v1/weights/-1", &[], None);
    assert_eq!(
        (r.status, r.json()),
        (
            422,
            json!({"detail": "block: '-1' is not a non-negative integer"})
        )
    );
    let r = http(p.port, "GET", "/v1/weights/99999999999999999999", &[], None);
    assert_eq!(r.status, 422);

    let sc = http(p.port, "GET", "/v1/scores/latest", &[], None).json();
    assert_eq!(sc["cycle_id"], 1);
    assert_eq!(sc["block"], 12300);
    assert_eq!(
        sc["scores"],
        json!({"0": {"metaworld/reach-v3": 0.9, "metaworld/push-v3": 0.5}, "1": {"metaworld/reach-v3": 0.3, "metaworld/push-v3": 0.1}})
    );
    assert_eq!(sc["miner_summary"], sc["scores"]);
    assert_eq!(sc["pareto_frontier"], json!([0]));
    let order: Vec<(i64, &str)> = sc["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["uid"].as_i64().unwrap(), d["env_id"].as_str().unwrap()))
        .collect();
    assert_eq!(
        order,
        vec![
            (0, "metaworld/reach-v3"),
            (0, "metaworld/push-v3"),
            (1, "metaworld/reach-v3"),
            (1, "metaworld/push-v3")
        ]
    );
    assert_eq!(sc["details"][2]["episodes_excluded"], 2);
    let running = http(p.port, "GET", "/v1/scores/2", &[], None).json();
    assert_eq!(
        (
            running["scores"].clone(),
            running["details"].clone(),
            running["pareto_frontier"].clone()
        ),
        (json!({}), json!([]), json!([]))
    );
    let r = http(p.port, "GET", "/v1/scores/7", &[], None);
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"detail": "Cycle 7 not found"}))
    );
    let r = http(p.port, "GET", "/v1/scores/x1", &[], None);
    assert_eq!(
        (r.status, r.json()),
        (
            422,
            json!({"detail": "cycle_id: 'x1' is not a non-negative integer"})
        )
    );

    let m = http(p.port, "GET", "/v1/miners", &[], None).json();
    assert_eq!(
        (m["cycle_id"].as_i64(), m["block"].as_i64()),
        (Some(2), Some(12345))
    );
    let miners = m["miners"].as_array().unwrap();
    assert_eq!(miners.len(), 3);
    assert_eq!(miners[0]["endpoint"], "https://m0.example");
    assert_eq!(miners[0]["avg_success_rate"], 0.7);
    assert_eq!(miners[0]["last_evaluated_block"], 12300);
    assert_eq!(
        miners[0]["environments_evaluated"],
        json!(["metaworld/push-v3", "metaworld/reach-v3"])
    );
    assert_eq!(
        miners[1]["endpoint"],
        Value::Null,
        "a decrypted endpoint is never revealed"
    );
    assert_eq!(miners[1]["encrypted"], true);
    assert_eq!(miners[2]["status"], "invalid_commitment");
    assert_eq!(miners[2]["status_reason"], "bad commitment");
    assert_eq!(miners[2]["last_evaluated"], Value::Null);
    assert!(!http(p.port, "GET", "/v1/miners", &[], None)
        .body
        .contains("secret.example"));

    let envs = http(p.port, "GET", "/v1/environments", &[], None).json();
    let envs = envs.as_array().unwrap();
    assert_eq!(envs.len(), 8);
    assert_eq!(
        envs[0],
        json!({"env_id": "metaworld/reach-v3", "family": "metaworld", "env_name": "metaworld", "task_name": "reach-v3", "enabled": true, "n_evaluations": 2, "avg_success_rate": 0.6})
    );
    assert_eq!(envs[6]["task_name"], "button-press-v3");
    assert_eq!(
        (
            envs[6]["enabled"].clone(),
            envs[6]["avg_success_rate"].clone()
        ),
        (json!(false), Value::Null)
    );

    let st = http(p.port, "GET", "/v1/tasks/stats", &[], None).json();
    assert_eq!(
        st,
        json!({"total_tasks": 6, "pending_tasks": 6, "assigned_tasks": 0, "completed_tasks": 0, "failed_tasks": 0, "cancelled_tasks": 0, "active_executor_count": 0, "current_cycle_id": 2}),
        "without a key: the number of active executors, not their ids"
    );
    let st = http(p.port, "GET", "/v1/tasks/stats?cycle_id=99", &[], None).json();
    assert_eq!(st["total_tasks"], 0);
    assert_eq!(
        http(p.port, "GET", "/v1/tasks/stats?cycle_id=-3", &[], None).status,
        422
    );

    // Routing: no trailing slashes, JSON 404 and 405.
    let r = http(p.port, "GET", "/v1/weights/latest/", &[], None);
    assert_eq!((r.status, r.json()), (404, json!({"detail": "Not Found"})));
    let r = http(p.port, "DELETE", "/v1/weights/latest", &[], None);
    assert_eq!(
        (r.status, r.json()),
        (405, json!({"detail": "Method Not Allowed"}))
    );
    let r = http(p.port, "GET", "/v1/tasks/fetch", &[], None);
    assert_eq!(r.status, 405);

    let metrics = http(p.port, "GET", "/metrics", &[], None);
    assert_eq!(metrics.status, 200);
    assert!(metrics
        .headers
        .contains("application/openmetrics-text; version=1.0.0; charset=utf-8"));
    for name in [
        "kinitro_eval_cycles_total{status=\"completed\"} 1",
        "kinitro_eval_cycles_total{status=\"failed\"} 0",
        "kinitro_eval_duration_seconds_count 1",
        "kinitro_miners_active 2",
        "kinitro_miner_scores{uid=\"0\",env=\"metaworld/reach-v3\"} 0.9",
        "kinitro_tasks{status=\"pending\"} 6",
        "kinitro_task_events_total{event=\"reaped\"} 0",
        "kinitro_episodes_total{outcome=\"miner_error\"} 0",
        "kinitro_miner_action_latency_seconds_count{env=\"metaworld/reach-v3\"} 0",
        "kinitro_miner_reset_latency_seconds_count 0",
        "kinitro_sim_step_seconds_count{env=\"metaworld/push-v3\"} 0",
        "kinitro_render_seconds_count 0",
        "kinitro_obs_encode_seconds_count 0",
        "kinitro_episodes_in_flight 0",
        "kinitro_http_request_duration_seconds",
        "kinitro_database_up 1",
        "kinitro_build_info{version=",
        "# EOF",
    ] {
        assert!(
            metrics.body.contains(name),
            "missing {name} in\n{}",
            metrics.body
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn authentication_comes_first() {
    let url = seeded().await;
    let p = api(&url);
    let body = json!({"executor_id": "e1"}).to_string();
    let r = http(p.port, "POST", "/v1/tasks/fetch", &[], Some(&body));
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"detail": "Missing authorization header"}))
    );
    assert!(
        r.headers.contains("www-authenticate: Bearer")
            || r.headers.contains("WWW-Authenticate: Bearer"),
        "{}",
        r.headers
    );
    let r = http(
        p.port,
        "POST",
        "/v1/tasks/fetch",
        &[("Authorization", "Basic s3cret")],
        Some(&body),
    );
    assert_eq!(r.json(), json!({"detail": "Missing authorization header"}));
    let r = http(
        p.port,
        "POST",
        "/v1/tasks/submit",
        &[("Authorization", "Bearer nope")],
        Some("{not json"),
    );
    assert_eq!(
        (r.status, r.json()),
        (401, json!({"detail": "Invalid API key"})),
        "a client without a key learns nothing of its body"
    );
    for key in [OLD_KEY, KEY] {
        let r = http(
            p.port,
            "POST",
            "/v1/tasks/fetch",
            &[("Authorization", &format!("bearer {key}"))],
            Some(&body),
        );
        assert_eq!(r.status, 200, "rotation: {key} must work");
    }
    drop(p);
    let open = ApiProcess::start(&url, &[("KINITRO_API_AUTH_DISABLED", "true")]);
    let r = http(open.port, "POST", "/v1/tasks/fetch", &[], Some(&body));
    assert_eq!(r.status, 200);
}

/// A per-executor key (issue 23 item 5).
const GPU_KEY: &str = "gpu-farm-key-of-the-api-tests-0123456789";

#[tokio::test(flavor = "multi_thread")]
async fn a_per_executor_key_acts_only_under_its_prefix() {
    let url = seeded().await;
    let p = ApiProcess::start(
        &url,
        &[
            ("KINITRO_API_API_KEY", KEY),
            ("KINITRO_API_EXECUTOR_KEYS", &format!("gpu-:{GPU_KEY}")),
        ],
    );
    let gpu = ("Authorization", format!("Bearer {GPU_KEY}"));
    let gpu = [(gpu.0, gpu.1.as_str())];
    let fetch = |who: &str, auth: &[(&str, &str)]| {
        let body = json!({"executor_id": who, "batch_size": 1}).to_string();
        http(p.port, "POST", "/v1/tasks/fetch", auth, Some(&body))
    };
    let r = fetch("gpu-1", &gpu);
    assert_eq!(r.status, 200, "{}", r.body);
    let task = r.json()["tasks"][0]["task_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let r = fetch("local-1", &gpu);
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.json()["detail"],
        "executor_id: this key may only act as executors named gpu-…"
    );
    let result = |who: &str| {
        json!({"executor_id": who, "results": [{"task_uuid": task, "success": false, "failure_kind": "miner"}]})
            .to_string()
    };
    // The key cannot submit under another id, not even for a task that id holds.
    let r = http(
        p.port,
        "POST",
        "/v1/tasks/submit",
        &gpu,
        Some(&result("other")),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = http(
        p.port,
        "POST",
        "/v1/tasks/submit",
        &gpu,
        Some(&result("gpu-1")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["accepted"], 1);
    // The shared key still acts as anyone.
    assert_eq!(fetch("local-1", &[AUTH]).status, 200);
    // Executor ids go only to a caller with a valid key; the count goes to everyone.
    let open = http(p.port, "GET", "/v1/tasks/stats", &[], None).json();
    assert_eq!(open["active_executor_count"], 1);
    assert!(open.get("active_executors").is_none(), "{open}");
    let wrong = http(
        p.port,
        "GET",
        "/v1/tasks/stats",
        &[("Authorization", "Bearer not-a-key")],
        None,
    )
    .json();
    assert!(wrong.get("active_executors").is_none(), "{wrong}");
    for auth in [&gpu[..], &[AUTH][..]] {
        let st = http(p.port, "GET", "/v1/tasks/stats", auth, None).json();
        assert_eq!(st["active_executors"], json!(["local-1"]));
        assert_eq!(st["active_executor_count"], 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn request_validation_errors() {
    let url = seeded().await;
    let p = api(&url);
    let long_id = format!(r#"{{"executor_id": "{}"}}"#, "x".repeat(65));
    let cases: Vec<(&str, &str, u16, &str)> = vec![
        (
            "/v1/tasks/fetch",
            "{\"executor_id\": ",
            400,
            "Invalid JSON body: ",
        ),
        ("/v1/tasks/fetch", "[1]", 422, "body: expected an object"),
        (
            "/v1/tasks/fetch",
            r#"{"batch_size": 5}"#,
            422,
            "executor_id: missing field",
        ),
        (
            "/v1/tasks/fetch",
            r#"{"executor_id": "e", "batch_size": 0}"#,
            422,
            "batch_size: must be between 1 and 100",
        ),
        (
            "/v1/tasks/fetch",
            r#"{"executor_id": "e", "batch_size": "ten"}"#,
            422,
            "batch_size: expected an integer",
        ),
        (
            "/v1/tasks/fetch",
            &long_id,
            422,
            "executor_id: must be 1 to 64 characters",
        ),
        (
            "/v1/tasks/fetch",
            r#"{"executor_id": "e", "shard": {"index": 2, "count": 2}}"#,
            422,
            "shard.index: must be smaller than shard.count",
        ),
        (
            "/v1/tasks/fetch",
            r#"{"executor_id": "e", "shard": {"index": 0, "count": 0}}"#,
            422,
            "shard.count: must be between 1 and 65535",
        ),
        (
            "/v1/tasks/fetch",
            r#"{"executor_id": "e", "env_ids": [""]}"#,
            422,
            "env_ids[0]: must be 1 to 64 characters",
        ),
        (
            "/v1/tasks/submit",
            r#"{"executor_id": "e", "results": []}"#,
            422,
            "results: must contain 1 to 1000 results",
        ),
        (
            "/v1/tasks/submit",
            r#"{"executor_id": "e", "results": [{"task_uuid": "u", "success": true, "failure_kind": "miner"}]}"#,
            422,
            "results[0].failure_kind: must be null when success is true",
        ),
        (
            "/v1/tasks/submit",
            r#"{"executor_id": "e", "results": [{"task_uuid": "u", "success": false, "failure_kind": "cosmic"}]}"#,
            422,
            "results[0].failure_kind: must be one of: miner, infrastructure",
        ),
        (
            "/v1/tasks/submit",
            r#"{"executor_id": "e", "results": [{"task_uuid": "u", "success": false}, {"task_uuid": "v", "success": false, "timesteps": -1}]}"#,
            422,
            "results[1].timesteps: must be between 0 and 1000000",
        ),
        (
            "/v1/tasks/submit",
            r#"{"executor_id": "e", "results": [{"task_uuid": "u"}]}"#,
            422,
            "results[0].success: missing field",
        ),
        (
            "/v1/tasks/submit",
            r#"{"executor_id": "e", "results": [{"task_uuid": "u", "success": false, "action_time_max": -0.5}]}"#,
            422,
            "results[0].action_time_max: must be at least 0",
        ),
    ];
    for (path, body, status, detail) in cases {
        let r = http(p.port, "POST", path, &[AUTH], Some(body));
        assert_eq!(r.status, status, "{body}: {}", r.body);
        let got = r.json()["detail"].as_str().unwrap().to_string();
        assert!(
            got.starts_with(detail),
            "{body}: got {got:?}, want {detail:?}"
        );
    }
    let r = http(
        p.port,
        "POST",
        "/v1/tasks/fetch",
        &[AUTH, ("Content-Type", "text/plain")],
        Some("{}"),
    );
    assert_eq!(
        (r.status, r.json()),
        (
            415,
            json!({"detail": "Content-Type must be application/json"})
        )
    );
    let r = http(
        p.port,
        "POST",
        "/v1/tasks/fetch",
        &[AUTH, ("Content-Type", "application/json; charset=utf-8")],
        Some(r#"{"executor_id": "e", "extra": 1}"#),
    );
    assert_eq!(r.status, 200, "parameters and unknown fields are fine");
    let huge = format!(
        r#"{{"executor_id": "e", "pad": "{}"}}"#,
        "x".repeat(2_200_000)
    );
    let r = http(p.port, "POST", "/v1/tasks/fetch", &[AUTH], Some(&huge));
    assert_eq!(
        (r.status, r.json()),
        (
            413,
            json!({"detail": "Request body too large (limit 2097152 bytes)"})
        )
    );
}

fn claim(p: &ApiProcess, executor: &str, extra: Value) -> Vec<Value> {
    let mut body = json!({"executor_id": executor});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let r = post(p, "/v1/tasks/fetch", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()["tasks"].as_array().unwrap().clone()
}

fn submit(p: &ApiProcess, executor: &str, results: Value) -> Value {
    let r = post(
        p,
        "/v1/tasks/submit",
        &json!({"executor_id": executor, "results": results}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn claiming_and_submitting_follow_the_state_machine() {
    let url = seeded().await;
    let p = api(&url);
    // Filters: env and shard.
    let push = claim(
        &p,
        "ex-a",
        json!({"batch_size": 10, "env_ids": ["metaworld/push-v3"], "shard": {"index": 0, "count": 2}}),
    );
    let uuids: Vec<&str> = push
        .iter()
        .map(|t| t["task_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        uuids,
        vec![
            "00000000-0000-4000-8000-000000000004",
            "00000000-0000-4000-8000-000000000006"
        ]
    );
    let t = &push[0];
    assert_eq!(
        (
            t["status"].as_str(),
            t["attempts"].as_i64(),
            t["cycle_id"].as_i64()
        ),
        (Some("assigned"), Some(1), Some(2))
    );
    assert_eq!(
        t["sim_seed"].as_u64(),
        Some(u64::MAX - 4),
        "sim_seed is the u64 with the stored bits"
    );
    assert_eq!(t["seed"], 4);
    // FIFO for the rest; nothing is handed out twice.
    let rest = claim(&p, "ex-b", json!({"batch_size": 100, "env_ids": []}));
    let rest_ids: Vec<&str> = rest
        .iter()
        .map(|t| t["task_uuid"].as_str().unwrap())
        .collect();
    assert_eq!(
        rest_ids,
        ["1", "2", "3", "5"].map(|i| format!("00000000-0000-4000-8000-00000000000{i}"))
    );
    let r = post(&p, "/v1/tasks/fetch", &json!({"executor_id": "ex-c"}));
    assert_eq!(r.json()["tasks"], json!([]));
    assert!(
        r.json()["total_pending"].is_i64(),
        "approximate, cached for at most 1 s"
    );

    let id = |i: u32| format!("00000000-0000-4000-8000-00000000000{i}");
    // Terminal result, then the identical retry is a duplicate.
    let ok = json!([{"task_uuid": id(4), "success": true, "score": 1.0, "total_reward": 4394.7, "timesteps": 500, "action_time_mean": 0.08, "action_time_max": 0.21}]);
    assert_eq!(
        submit(&p, "ex-a", ok.clone()),
        json!({"accepted": 1, "rejected": 0, "duplicates": 0, "requeued": 0, "errors": []})
    );
    assert_eq!(submit(&p, "ex-a", ok)["duplicates"], 1);
    // Another executor's task is refused; an unknown one too; a second occurrence in one request is a duplicate.
    let r = submit(
        &p,
        "ex-a",
        json!([{"task_uuid": id(1), "success": false}, {"task_uuid": "nope", "success": false},
                                       {"task_uuid": id(6), "success": false, "error": "Miner timeout"},
                                       {"task_uuid": id(6), "success": false, "error": "Miner timeout"}]),
    );
    assert_eq!(r["accepted"], 1);
    assert_eq!(r["rejected"], 2);
    assert_eq!(r["duplicates"], 1);
    assert_eq!(
        r["errors"],
        json!([
            format!("Task {}: not found or not assigned to executor", id(1)),
            "Task nope: not found or not assigned to executor"
        ])
    );
    // Infrastructure failure: re-queued (attempt 1 of 2), then the re-claim's failure gives up.
    let r = submit(
        &p,
        "ex-b",
        json!([{"task_uuid": id(1), "success": false, "error": "simulator exploded"}]),
    );
    assert_eq!(
        (r["accepted"].as_i64(), r["requeued"].as_i64()),
        (Some(1), Some(1))
    );
    let again = claim(&p, "ex-b", json!({}));
    assert_eq!((again.len(), again[0]["attempts"].as_i64()), (1, Some(2)));
    let r = submit(
        &p,
        "ex-b",
        json!([{"task_uuid": id(1), "success": false, "failure_kind": "infrastructure", "error": "again"}]),
    );
    assert_eq!(
        (r["accepted"].as_i64(), r["requeued"].as_i64()),
        (Some(1), Some(0))
    );

    let mut conn = kinitro::db::connect(&url).await.unwrap();
    #[derive(QueryableByName)]
    struct Row {
        #[diesel(sql_type = Text)]
        task_uuid: String,
        #[diesel(sql_type = Text)]
        status: String,
        #[diesel(sql_type = Text)]
        result: String,
    }
    let rows: Vec<Row> = diesel::sql_query(
        "SELECT task_uuid, status, coalesce(result::text, '') AS result FROM task_pool ORDER BY id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let by = |u: String| rows.iter().find(|r| r.task_uuid == u).unwrap();
    assert_eq!(by(id(4)).status, "completed");
    let r4: Value = serde_json::from_str(&by(id(4)).result).unwrap();
    assert_eq!(
        (
            r4["executor_id"].as_str(),
            r4["attempt"].as_i64(),
            r4["failure_kind"].clone()
        ),
        (Some("ex-a"), Some(1), Value::Null)
    );
    assert_eq!(by(id(6)).status, "failed");
    assert!(by(id(6)).result.contains(r#""failure_kind": "miner""#));
    assert_eq!(by(id(1)).status, "failed");
    let r1: Value = serde_json::from_str(&by(id(1)).result).unwrap();
    assert_eq!(
        (r1["error"].as_str(), r1["last_error"].as_str()),
        (Some("max attempts exceeded"), Some("again"))
    );

    // Cancelled with its cycle: late submissions are refused as such.
    conn.batch_execute("UPDATE task_pool SET status = 'cancelled' WHERE status = 'assigned'")
        .await
        .unwrap();
    let r = submit(&p, "ex-b", json!([{"task_uuid": id(2), "success": true}]));
    assert_eq!(
        r["errors"],
        json!([format!("Task {}: cycle cancelled", id(2))])
    );

    // Stale reaping re-queues assigned tasks of running cycles; a late result is still accepted.
    conn.batch_execute(
        "UPDATE task_pool SET status = 'assigned', assigned_to = 'ex-z', assigned_at = now() - interval '1 hour', \
         attempts = 1, last_submitted_by = NULL, last_submitted_attempt = NULL WHERE task_uuid = '00000000-0000-4000-8000-000000000003'",
    )
    .await
    .unwrap();
    let (requeued, given_up) = kinitro::db::tasks::reap_stale(&mut conn, 300.0)
        .await
        .unwrap();
    assert_eq!((requeued, given_up), (1, 0));
    let r = submit(&p, "ex-z", json!([{"task_uuid": id(3), "success": true}]));
    assert_eq!(r["accepted"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_executors_share_ten_thousand_tasks_without_overlap() {
    let url = fresh_database().await;
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    conn.batch_execute(
        "INSERT INTO evaluation_cycles (block_number, env_ids, episodes_per_env, registry_source) VALUES (1, '[]', 1, 'file'); \
         INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed) \
         SELECT md5(i::text)::uuid::text, 1, i % 64, 'hk', 'http://m', 'metaworld/reach-v3', i, i FROM generate_series(1, 10000) i;",
    )
    .await
    .unwrap();
    let p = api(&url);
    let port = p.port;
    let handles: Vec<_> = (0..8)
        .map(|e| {
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                loop {
                    let body =
                        json!({"executor_id": format!("exec-{e}"), "batch_size": 10}).to_string();
                    let r = http(port, "POST", "/v1/tasks/fetch", &[AUTH], Some(&body));
                    assert_eq!(r.status, 200, "{}", r.body);
                    let tasks = r.json()["tasks"].as_array().unwrap().clone();
                    if tasks.is_empty() {
                        return mine;
                    }
                    mine.extend(
                        tasks
                            .iter()
                            .map(|t| t["task_uuid"].as_str().unwrap().to_string()),
                    );
                }
            })
        })
        .collect();
    let all: Vec<Vec<String>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let total: usize = all.iter().map(Vec::len).sum();
    let distinct: HashSet<&String> = all.iter().flatten().collect();
    assert_eq!(total, 10_000, "every task handed out");
    assert_eq!(distinct.len(), 10_000, "no task handed out twice");
    assert!(
        all.iter().filter(|v| !v.is_empty()).count() >= 2,
        "claims were concurrent"
    );

    // Both claim statements (one fetch, or several merged) scan the pending-rows index, so their
    // cost does not grow with handed-out rows.
    conn.batch_execute(
        "INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed) \
         SELECT md5('late' || i)::uuid::text, 1, i % 64, 'hk', 'http://m', 'metaworld/reach-v3', i, i FROM generate_series(1, 1000) i; \
         ANALYZE task_pool; ANALYZE evaluation_cycles;",
    )
    .await
    .unwrap();
    let single = plan_of(
        &mut conn,
        "EXPLAIN WITH picked AS (SELECT t.id FROM task_pool t JOIN evaluation_cycles c ON c.id = t.cycle_id \
         WHERE t.status = 'pending' AND c.status = 'running' ORDER BY t.id LIMIT 10 FOR UPDATE OF t SKIP LOCKED) \
         UPDATE task_pool SET status = 'assigned' FROM picked WHERE task_pool.id = picked.id",
    )
    .await;
    assert!(single.contains("idx_task_pool_pending"), "{single}");
    let merged = plan_of(
        &mut conn,
        "EXPLAIN WITH bounds AS (SELECT r.executor, r.ord, sum(r.size) OVER (ORDER BY r.ord) - r.size AS lo, \
           sum(r.size) OVER (ORDER BY r.ord) AS hi FROM unnest(ARRAY['a','b'], ARRAY[10,10]) WITH ORDINALITY AS r(executor, size, ord)), \
         picked AS (SELECT t.id FROM task_pool t JOIN evaluation_cycles c ON c.id = t.cycle_id \
           WHERE t.status = 'pending' AND c.status = 'running' ORDER BY t.id LIMIT 20 FOR UPDATE OF t SKIP LOCKED), \
         numbered AS (SELECT id, row_number() OVER (ORDER BY id) - 1 AS rn FROM picked) \
         UPDATE task_pool SET status = 'assigned', assigned_to = b.executor FROM numbered n \
           JOIN bounds b ON n.rn >= b.lo AND n.rn < b.hi WHERE task_pool.id = n.id",
    )
    .await;
    assert!(merged.contains("idx_task_pool_pending"), "{merged}");
}

/// The plan `EXPLAIN …` prints, one line per row.
async fn plan_of(conn: &mut diesel_async::AsyncPgConnection, explain: &str) -> String {
    #[derive(QueryableByName)]
    struct Plan {
        #[diesel(sql_type = Text, column_name = "QUERY PLAN")]
        line: String,
    }
    let plan: Vec<Plan> = diesel::sql_query(explain).load(conn).await.unwrap();
    plan.into_iter().map(|p| p.line + "\n").collect()
}

/// Merged claims (several fetches in one statement) deal the picked rows out in request order,
/// honour the filter and fill earlier requests first when tasks run short.
#[tokio::test(flavor = "multi_thread")]
async fn merged_claims_deal_tasks_in_request_order() {
    use kinitro::db::tasks::{claim_many, ClaimFilter, ClaimRequest};
    let url = fresh_database().await;
    let mut conn = kinitro::db::connect(&url).await.unwrap();
    conn.batch_execute(
        "INSERT INTO evaluation_cycles (block_number, env_ids, episodes_per_env, registry_source) VALUES (1, '[]', 1, 'file'); \
         INSERT INTO task_pool (task_uuid, cycle_id, miner_uid, miner_hotkey, miner_endpoint, env_id, seed, sim_seed) \
         SELECT md5(i::text)::uuid::text, 1, i % 4, 'hk', 'http://m', \
           CASE WHEN i % 2 = 0 THEN 'metaworld/reach-v3' ELSE 'metaworld/push-v3' END, i, i \
         FROM generate_series(1, 40) i;",
    )
    .await
    .unwrap();
    let req = |e: &str, n: i64| ClaimRequest {
        executor: e.into(),
        batch_size: n,
    };
    let parts = claim_many(
        &mut conn,
        &[req("a", 3), req("b", 5), req("c", 2)],
        &ClaimFilter::default(),
    )
    .await
    .unwrap();
    let ids: Vec<Vec<i64>> = parts
        .iter()
        .map(|p| p.iter().map(|t| t.id).collect())
        .collect();
    assert_eq!(ids, [vec![1, 2, 3], vec![4, 5, 6, 7, 8], vec![9, 10]]);
    assert!(parts
        .iter()
        .flatten()
        .all(|t| t.status == TaskStatus::Assigned && t.attempts == 1));
    #[derive(QueryableByName)]
    struct Owner {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = Text)]
        assigned_to: String,
    }
    let owners: Vec<Owner> = diesel::sql_query(
        "SELECT id, assigned_to FROM task_pool WHERE assigned_to IS NOT NULL ORDER BY id",
    )
    .load(&mut conn)
    .await
    .unwrap();
    let expected = ["a", "a", "a", "b", "b", "b", "b", "b", "c", "c"];
    assert_eq!(owners.len(), 10);
    for (o, e) in owners.iter().zip(expected) {
        assert_eq!(o.assigned_to, e, "task {}", o.id);
    }
    // A filter: reach tasks (even i) of shard 0 of 4 (uid = i % 4 = 0), i.e. i = 12, 16, 20, …
    let filter = ClaimFilter {
        env_ids: Some(vec!["metaworld/reach-v3".into()]),
        shard: Some((0, 4)),
    };
    let parts = claim_many(&mut conn, &[req("d", 2), req("e", 100)], &filter)
        .await
        .unwrap();
    let ids: Vec<Vec<i64>> = parts
        .iter()
        .map(|p| p.iter().map(|t| t.id).collect())
        .collect();
    assert_eq!(ids, [vec![12, 16], vec![20, 24, 28, 32, 36, 40]]);
    // Nothing left for the filter: every request gets an empty list.
    let parts = claim_many(&mut conn, &[req("f", 5)], &filter)
        .await
        .unwrap();
    assert!(parts.len() == 1 && parts[0].is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_outage_gives_503s_and_the_api_recovers() {
    use kinitro::db::managed::{ClusterOptions, ManagedPostgres};
    let dir = tempfile::Builder::new()
        .prefix("kinitro-outage-")
        .tempdir_in("/tmp")
        .unwrap();
    let opts = ClusterOptions {
        data_dir: dir.path().to_path_buf(),
        tcp_port: Some(common::free_port()),
    };
    let o2 = opts.clone();
    let mut pg = tokio::task::spawn_blocking(move || ManagedPostgres::start(&o2))
        .await
        .unwrap()
        .unwrap();
    let url = pg.tcp_url("kinitro").unwrap();
    kinitro::db::prepare(&url).await.unwrap();
    kinitro::db::connect(&url)
        .await
        .unwrap()
        .batch_execute(SEED)
        .await
        .unwrap();
    let p = api(&url);
    assert_eq!(
        http(p.port, "GET", "/v1/weights/12300", &[], None).status,
        200
    );

    tokio::task::spawn_blocking(move || pg.stop())
        .await
        .unwrap();
    let r = http(p.port, "GET", "/health", &[], None);
    assert_eq!(
        (r.status, r.json()["database"].as_str()),
        (503, Some("disconnected"))
    );
    let r = http(p.port, "GET", "/v1/weights/12300", &[], None);
    assert_eq!(
        (r.status, r.json()),
        (503, json!({"detail": "Database unavailable"}))
    );
    let r = post(&p, "/v1/tasks/fetch", &json!({"executor_id": "e"}));
    assert_eq!(r.status, 503);
    // The answer cached while the database was up has expired by now.
    std::thread::sleep(kinitro::api::cache::MAX_AGE);
    let s = http(p.port, "GET", "/v1/status", &[], None);
    assert_eq!(
        (s.status, s.json()["status"].as_str()),
        (200, Some("degraded"))
    );
    assert!(http(p.port, "GET", "/metrics", &[], None)
        .body
        .contains("kinitro_database_up 0"));

    let _pg = tokio::task::spawn_blocking(move || ManagedPostgres::start(&opts))
        .await
        .unwrap()
        .unwrap();
    let back = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        http(p.port, "GET", "/health", &[], None).status == 200
    });
    assert!(back, "the API must come back by itself");
    assert_eq!(
        http(p.port, "GET", "/v1/weights/12300", &[], None).status,
        200
    );
}

/// Issue 23 item 4: public reads that hang (here on a lock) use their own small pool and are cut off
/// by the statement timeout, so executors keep claiming and submitting meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn hanging_public_reads_do_not_starve_the_task_endpoints() {
    let url = seeded().await;
    let p = api(&url);
    let mut locker = kinitro::db::connect(&url).await.unwrap();
    locker
        .batch_execute("BEGIN; LOCK TABLE miners, miner_scores IN ACCESS EXCLUSIVE MODE;")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // Twenty readers of endpoints whose queries need the locked tables (more than the main pool's
    // ten connections), and then an executor.
    let readers: Vec<_> = (0..20)
        .map(|i| {
            let path = ["/v1/miners", "/v1/environments", "/v1/scores/latest"][i % 3];
            let port = p.port;
            std::thread::spawn(move || http(port, "GET", path, &[], None).status)
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));
    let r = post(
        &p,
        "/v1/tasks/fetch",
        &json!({"executor_id": "e", "batch_size": 2}),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let claimed: Vec<String> = r.json()["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["task_uuid"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(claimed.len(), 2);
    let results: Vec<Value> = claimed
        .iter()
        .map(|u| json!({"task_uuid": u, "success": true, "score": 1.0}))
        .collect();
    let r = post(
        &p,
        "/v1/tasks/submit",
        &json!({"executor_id": "e", "results": results}),
    );
    assert_eq!((r.status, r.json()["accepted"].clone()), (200, json!(2)));
    // The hanging reads end by themselves: the server cancels them after the statement timeout.
    let statuses: Vec<u16> = readers.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(statuses.iter().all(|s| *s == 503), "{statuses:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(60),
        "the readers were not cut off"
    );
    locker.batch_execute("ROLLBACK").await.unwrap();
    // The failure is reused for the cache's lifetime, then the next request reads again.
    std::thread::sleep(kinitro::api::cache::MAX_AGE);
    assert_eq!(http(p.port, "GET", "/v1/miners", &[], None).status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn public_reads_are_paced_and_the_executor_and_validator_routes_are_not() {
    use std::time::{Duration, Instant};
    let url = seeded().await;
    // Two reads per second: a burst of 2 at once, then one every 0.5 s for up to MAX_WAIT (5 s),
    // so of 24 reads sent together 12 are served and the rest refused (the last ones are refused even
    // if the readers start seconds apart on a loaded machine).
    let p = ApiProcess::start(
        &url,
        &[
            ("KINITRO_API_API_KEY", KEY),
            ("KINITRO_API_PUBLIC_READS_PER_SECOND", "2"),
        ],
    );
    let started = Instant::now();
    let readers: Vec<_> = (0..24)
        .map(|_| {
            let port = p.port;
            std::thread::spawn(move || {
                let r = http(port, "GET", "/v1/status", &[], None);
                (r, started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // The paced queue is full; liveness, weights and the executors' posts go straight through.
    assert_eq!(http(p.port, "GET", "/health", &[], None).status, 200);
    assert_eq!(
        http(p.port, "GET", "/v1/weights/latest", &[], None).status,
        200
    );
    let claimed = claim(&p, "e", json!({"batch_size": 1}));
    assert_eq!(claimed.len(), 1);
    let unpaced_done = started.elapsed();
    let answers: Vec<(common::Resp, Duration)> =
        readers.into_iter().map(|t| t.join().unwrap()).collect();
    let served: Vec<Duration> = answers
        .iter()
        .filter(|(r, _)| r.status == 200)
        .map(|(_, at)| *at)
        .collect();
    let refused: Vec<&common::Resp> = answers
        .iter()
        .map(|(r, _)| r)
        .filter(|r| r.status == 429)
        .collect();
    assert_eq!(served.len() + refused.len(), 24, "only 200s and 429s");
    assert!(
        !refused.is_empty(),
        "a read beyond the 5 s queue is refused"
    );
    assert!(served.len() >= 12, "{} served", served.len());
    // Admitted reads started half a second apart: the last one no earlier than 12 reads allow.
    let last = served.iter().max().unwrap();
    assert!(
        *last >= Duration::from_millis(4500),
        "last read at {last:?}"
    );
    assert!(
        unpaced_done < *last,
        "the unpaced requests waited behind the paced ones"
    );
    let r = refused[0];
    assert!(
        r.headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        r.headers
    );
    assert_eq!(
        r.json()["detail"],
        "Too many public reads; retry in a second"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_lists_exactly_the_served_routes() {
    let url = seeded().await;
    let p = api(&url);
    let doc = http(p.port, "GET", "/openapi.json", &[], None);
    assert_eq!(doc.status, 200);
    let doc = doc.json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let mut documented: Vec<String> = doc["paths"].as_object().unwrap().keys().cloned().collect();
    let mut served: Vec<String> = kinitro::api::ROUTE_PATTERNS
        .iter()
        .map(|s| s.to_string())
        .collect();
    documented.sort();
    served.sort();
    assert_eq!(documented, served);
    for path in ["/v1/tasks/fetch", "/v1/tasks/submit"] {
        assert_eq!(
            doc["paths"][path]["post"]["security"],
            json!([{"bearer": []}]),
            "{path}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // Every documented route is really served (a concrete value for each path parameter).
    for path in &served {
        let concrete = path.replace("{block}", "12300").replace("{cycle_id}", "1");
        let method = if path.starts_with("/v1/tasks/") && !path.ends_with("stats") {
            "POST"
        } else {
            "GET"
        };
        let body = (method == "POST").then_some(
            r#"{"executor_id": "probe", "results": [{"task_uuid": "x", "success": false}]}"#,
        );
        let r = http(p.port, method, &concrete, &[AUTH], body);
        assert_eq!(r.status, 200, "{method} {concrete}: {}", r.body);
    }
}

/// Checks `body` against `schema` of the OpenAPI document `doc`: same object keys as the schema's
/// properties, element by element, and the JSON type of every value.
fn conforms(doc: &Value, schema: &Value, body: &Value, at: &str) {
    if let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        return conforms(doc, &doc["components"]["schemas"][name], body, at);
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(variants) = schema[key].as_array() {
            let non_null: Vec<&Value> = variants.iter().filter(|v| v["type"] != "null").collect();
            if body.is_null() {
                assert!(non_null.len() < variants.len(), "{at}: null not allowed");
                return;
            }
            assert_eq!(non_null.len(), 1, "{at}: {schema}");
            return conforms(doc, non_null[0], body, at);
        }
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if body.is_null() {
        assert!(
            types.contains(&"null"),
            "{at}: null where {schema} is documented"
        );
        return;
    }
    let kind = match body {
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => unreachable!(),
    };
    assert!(
        types.contains(&kind) || (kind == "integer" && types.contains(&"number")),
        "{at}: a {kind} where {schema} is documented"
    );
    match body {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                conforms(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        Value::Object(map) => {
            if let Some(props) = schema["properties"].as_object() {
                let mut documented: Vec<&String> = props.keys().collect();
                let mut sent: Vec<&String> = map.keys().collect();
                documented.sort();
                sent.sort();
                assert_eq!(sent, documented, "{at}: keys");
                for (k, v) in map {
                    conforms(doc, &props[k], v, &format!("{at}.{k}"));
                }
            } else if schema["additionalProperties"].is_object() {
                for (k, v) in map {
                    conforms(
                        doc,
                        &schema["additionalProperties"],
                        v,
                        &format!("{at}.{k}"),
                    );
                }
            }
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_match_their_published_schemas() {
    let url = seeded().await;
    let p = api(&url);
    let doc = http(p.port, "GET", "/openapi.json", &[], None).json();
    let fetch = r#"{"executor_id": "probe", "batch_size": 2}"#;
    let submit = r#"{"executor_id": "probe", "results": [{"task_uuid": "x", "success": false}]}"#;
    let cases: [(&str, &str, &str, Option<&str>, u16); 12] = [
        ("GET", "/health", "/health", None, 200),
        ("GET", "/v1/status", "/v1/status", None, 200),
        ("GET", "/v1/weights/latest", "/v1/weights/latest", None, 200),
        ("GET", "/v1/weights/{block}", "/v1/weights/12300", None, 200),
        ("GET", "/v1/weights/{block}", "/v1/weights/1", None, 404),
        ("GET", "/v1/scores/latest", "/v1/scores/latest", None, 200),
        ("GET", "/v1/scores/{cycle_id}", "/v1/scores/2", None, 200),
        ("GET", "/v1/miners", "/v1/miners", None, 200),
        ("GET", "/v1/environments", "/v1/environments", None, 200),
        (
            "POST",
            "/v1/tasks/fetch",
            "/v1/tasks/fetch",
            Some(fetch),
            200,
        ),
        (
            "POST",
            "/v1/tasks/submit",
            "/v1/tasks/submit",
            Some(submit),
            200,
        ),
        ("GET", "/v1/tasks/stats", "/v1/tasks/stats", None, 200),
    ];
    for (method, pattern, concrete, body, status) in cases {
        let r = http(p.port, method, concrete, &[AUTH], body);
        assert_eq!(r.status, status, "{method} {concrete}: {}", r.body);
        let schema = &doc["paths"][pattern][method.to_lowercase()]["responses"][status.to_string()]
            ["content"]["application/json"]["schema"];
        assert!(schema.is_object(), "{method} {pattern} {status}: no schema");
        conforms(&doc, schema, &r.json(), &format!("{method} {concrete}"));
    }
}

/// The keys of one JSON object, in order, duplicates kept (serde_json's `Value` keeps only the last).
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(Visit)
    }
}

/// A JSON log line never repeats a key: the "database ready" line used to carry its own `target`
/// beside the formatter's (issue 23).
#[tokio::test(flavor = "multi_thread")]
async fn json_log_lines_have_no_duplicate_keys() {
    let url = fresh_database().await;
    let port = common::free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kinitro"))
        .args([
            "api",
            "--database-url",
            url.as_str(),
            "--port",
            &port.to_string(),
        ])
        .args([
            "--workers",
            "1",
            "--log-format",
            "json",
            "--log-level",
            "debug",
        ])
        .env("KINITRO_API_API_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let up = common::wait_http_ok(port, "/v1/status", 30);
    let _ = child.kill();
    let _ = child.wait();
    assert!(up, "kinitro api did not start");
    let text = std::fs::read_to_string(log.path()).unwrap();
    let mut ready = false;
    for line in text.lines().filter(|l| l.starts_with('{')) {
        let Keys(keys) = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let unique: std::collections::BTreeSet<&String> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "a repeated key: {line}");
        ready |=
            line.contains("\"message\":\"database ready\"") && keys.contains(&"database".into());
    }
    assert!(
        ready,
        "no database ready line with a database field:\n{text}"
    );
}

/// Issue 23 item 2: label values never come from the client: any method outside the standard ones is
/// `other`, and the route is the matched pattern or `unmatched`, never the raw path.
#[tokio::test(flavor = "multi_thread")]
async fn metric_labels_are_bounded_whatever_the_client_sends() {
    let url = fresh_database().await;
    let p = api(&url);
    for (method, path) in [
        ("FOOBAR", "/v1/status"),
        ("XMETHOD42", "/nowhere/7f3a9c"),
        ("PATCH", "/v1/weights/424242"),
        ("GET", "/v1/scores/987654"),
        ("GET", "/v1/no-such-route-5e1d"),
    ] {
        let r = http(p.port, method, path, &[], None);
        assert!(r.status >= 200, "{method} {path}");
    }
    let body = http(p.port, "GET", "/metrics", &[], None).body;
    let lines: Vec<&str> = body
        .lines()
        .filter(|l| l.starts_with("kinitro_http_request_duration_seconds"))
        .collect();
    let all = lines.join("\n");
    for raw in ["FOOBAR", "XMETHOD42", "7f3a9c", "424242", "987654", "5e1d"] {
        assert!(!all.contains(raw), "{raw} became a label:\n{all}");
    }
    for want in [
        r#"method="other",route="/v1/status""#,
        r#"method="other",route="unmatched""#,
        r#"method="PATCH",route="/v1/weights/{block}""#,
        r#"method="GET",route="/v1/scores/{cycle_id}""#,
        r#"method="GET",route="unmatched""#,
    ] {
        assert!(all.contains(want), "no series with {want}:\n{all}");
    }
    for line in &lines {
        if let Some(m) = line.split("method=\"").nth(1) {
            let m = m.split('"').next().unwrap();
            assert!(
                ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "other"].contains(&m),
                "{line}"
            );
        }
    }
}
