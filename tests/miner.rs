//! `kinitro miner serve` (docs/miner-protocol.md §8): the reference policy server over real HTTP.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Instant;

use common::{free_port, http, wait_http_ok};
use serde_json::{json, Value};

struct Miner {
    port: u16,
    child: Child,
}

impl Miner {
    fn start(args: &[&str]) -> Self {
        let port = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_kinitro"))
            .args(["miner", "serve", "--port", &port.to_string()])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_http_ok(port, "/health", 30), "miner did not start");
        Self { port, child }
    }

    fn act(&self, obs: Value) -> common::Resp {
        http(
            self.port,
            "POST",
            "/act",
            &[],
            Some(&json!({ "obs": obs }).to_string()),
        )
    }
}

impl Drop for Miner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn obs() -> Value {
    json!({"rgb": {}, "depth": {}, "proprio": {"ee_pos": [0.0, 0.6, 0.2], "gripper": [1.0]},
           "cam_intrinsics": {}, "cam_extrinsics": {}, "extra": {}})
}

#[test]
fn reset_act_and_health() {
    let m = Miner::start(&["--policy", "zero"]);
    let h = http(m.port, "GET", "/health", &[], None).json();
    assert_eq!(
        (h["status"].as_str(), h["model_loaded"].as_bool()),
        (Some("healthy"), Some(true))
    );
    let task = json!({"task_config": {"env_id": "metaworld/reach-v3", "env_name": "metaworld", "task_name": "reach-v3", "seed": 1, "task_id": 1}});
    let r = http(m.port, "POST", "/reset", &[], Some(&task.to_string())).json();
    assert_eq!(r["status"], "ok");
    let id = r["episode_id"].as_str().unwrap();
    assert!(
        id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()),
        "{id}"
    );
    let a = m.act(obs());
    assert_eq!(a.status, 200);
    assert_eq!(
        a.json()["action"],
        json!({"continuous": {"ee_twist": [0.0, 0.0, 0.0, 0.0, 0.0, 0.0], "gripper": [0.0]}, "discrete": {}, "extra": {}})
    );
    // Only `{"obs": {...}}` is an observation; the parts the policy skips must still be JSON.
    for bad in [
        "not json",
        r#"{"obs": []}"#,
        r#"{"obs": 1}"#,
        r#"{"observation": {}}"#,
        r#"{"obs": {"proprio": [1, }}"#,
    ] {
        let r = http(m.port, "POST", "/act", &[], Some(bad));
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
    }
}

#[test]
fn random_is_seeded_and_in_range() {
    let (a, b) = (
        Miner::start(&["--policy", "random", "--seed", "5"]),
        Miner::start(&["--policy", "random", "--seed", "5"]),
    );
    for _ in 0..20 {
        let (x, y) = (a.act(obs()).json(), b.act(obs()).json());
        assert_eq!(x, y, "one server-wide ChaCha8 stream per seed");
        let t = x["action"]["continuous"]["ee_twist"]
            .as_array()
            .unwrap()
            .clone();
        assert!(
            t[..3].iter().all(|v| v.as_f64().unwrap().abs() <= 1.0)
                && t[3..].iter().all(|v| v == 0.0)
        );
        assert!((0.0..=1.0).contains(&x["action"]["continuous"]["gripper"][0].as_f64().unwrap()));
    }
}

#[test]
fn expert_needs_the_privileged_state_and_delays_are_applied() {
    let m = Miner::start(&["--policy", "expert", "--delay-ms", "150"]);
    let start = Instant::now();
    let r = m.act(obs());
    assert!(
        start.elapsed().as_millis() >= 150,
        "--delay-ms sleeps before each /act reply"
    );
    assert_eq!(
        (r.status, r.json()),
        (
            422,
            json!({"detail": "expert policy needs obs.extra.state; enable KINITRO_EXECUTOR_PRIVILEGED_STATE"})
        )
    );
    // The expert steers towards the goal of the episode named by X-Kinitro-Episode.
    let reset = |episode: &str, env_id: &str| {
        let body = json!({"task_config": {"env_id": env_id, "env_name": "metaworld", "seed": 1, "task_id": 1}});
        let r = http(
            m.port,
            "POST",
            "/reset",
            &[("X-Kinitro-Episode", episode)],
            Some(&body.to_string()),
        );
        assert_eq!(r.status, 200, "{}", r.body);
    };
    reset("a", "metaworld/reach-v3");
    reset("b", "metaworld/door-open-v3");
    let mut state = vec![0.0; 39];
    state[36..].copy_from_slice(&[0.1, 0.8, 0.2]);
    let mut with_state = obs();
    with_state["extra"] = json!({ "state": state });
    let act = |episode: &str| {
        let body = json!({ "obs": with_state }).to_string();
        let r = http(
            m.port,
            "POST",
            "/act",
            &[("X-Kinitro-Episode", episode)],
            Some(&body),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["action"].clone()
    };
    // reach: 5 · (goal − hand); door-open: a different controller with the grip closed.
    assert_eq!(
        act("a")["continuous"]["ee_twist"],
        json!([0.5, 4.0, 1.0, 0.0, 0.0, 0.0])
    );
    assert_eq!(act("b")["continuous"]["gripper"], json!([1.0]));
}
