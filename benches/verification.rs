//! Issue 27's verification targets, each beside its baseline in the same run:
//!
//! 1. `one verification`: a whole verification of a small deterministic policy (5 samples) — size
//!    check and download from a local Hub into an empty cache, the sandbox container's start and
//!    run, the endpoint's `/reset` and five `/act` calls, the comparison. Goal ≤ 10 s.
//! 2. `throughput`: one cycle of `kinitro run` with 32 distinct miners (32 (uid, revision) pairs)
//!    at verification rate 1.0 (every pair verified once, in the background) against the same cycle
//!    at rate 0, alternating A B A B so the VM's drift hits both. Goal: episodes/s at rate 1.0
//!    ≥ 90 % of rate 0's.
//!
//! Run: `./deploy/setup.sh && cargo bench --bench verification` (needs the Docker engine; builds the
//! sandbox image `kinitro-bench/verifier:v1` first). `BENCH_EPISODES` (default 1) episodes of
//! `BENCH_STEPS` (default 100) steps per miner, with images (`BENCH_IMAGES=off` for none);
//! `BENCH_ROUNDS` (default 2) A/B rounds.

#[path = "../tests/common/fake_hub.rs"]
mod fake_hub;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fake_hub::{FakeHub, FakeRepo};
use kinitro::config::verification::VerificationConfig;
use kinitro::config::Env;
use kinitro::container::image::{self, BuildRequest, Kind};
use kinitro::verify::{Target, Verifier};

const IMAGE: &str = "kinitro-bench/verifier:v1";
const MINERS: u16 = 32;
const BIN: &str = env!("CARGO_BIN_EXE_kinitro");

/// A deterministic policy: a fixed function of the hand's position (NumPy, like real policies).
const POLICY: &str = r#"import numpy as np


class RobotPolicy:
    def __init__(self):
        self.gain = np.array([-2.0, -2.0, -2.0])

    def act(self, observation):
        proprio = observation.proprio if hasattr(observation, "proprio") else observation["proprio"]
        pos = np.asarray(proprio["ee_pos"], dtype=np.float64)
        twist = np.clip(self.gain * pos, -1.0, 1.0).tolist() + [0.0, 0.0, 0.0]
        return {"continuous": {"ee_twist": twist, "gripper": [0.0]}}
"#;

fn revision(i: u16) -> String {
    format!("{:040x}", 0xbe7c_0000u64 + u64::from(i))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET on loopback; the body as JSON (Null when it is not).
fn get_json(port: u16, path: &str) -> serde_json::Value {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return serde_json::Value::Null;
    };
    let _ = write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

/// A reference miner answering zeros: the endpoint of every bench miner.
fn zero_miner() -> (Killed, String) {
    let port = free_port();
    let child = Command::new(BIN)
        .args([
            "miner",
            "serve",
            "--policy",
            "zero",
            "--port",
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while get_json(port, "/health").is_null() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "miner did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

fn build_image() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let engine = kinitro::container::connect("localhost", 3600)
            .await
            .expect("a Docker engine");
        let request = BuildRequest {
            kind: Kind::Verifier,
            tag: IMAGE.into(),
            no_cache: false,
            binary: PathBuf::new(),
            assets: PathBuf::new(),
            python_packages: Vec::new(),
        };
        image::build(&engine, &request, |_| {})
            .await
            .expect("verifier image");
    });
}

/// Part 1: `runs` whole verifications, each into an empty cache; their wall times.
fn one_verification(policy_dir: &Path, endpoint: &str, runs: usize) -> Vec<f64> {
    let hub = FakeHub::start(vec![FakeRepo::new(
        "bench/policy",
        &revision(0),
        policy_dir,
    )]);
    let pairs: Vec<(String, String)> = vec![
        ("KINITRO_EXECUTOR_VERIFICATION_IMAGE".into(), IMAGE.into()),
        (
            "KINITRO_EXECUTOR_VERIFICATION_ALLOW_PRIVATE_HUB".into(),
            "true".into(),
        ),
        ("HF_ENDPOINT".into(), hub.url()),
    ];
    let mut times = Vec::new();
    actix_rt::System::new().block_on(async {
        for _ in 0..runs {
            let cache = tempfile::tempdir().unwrap();
            let mut config = VerificationConfig::resolve(
                &Env::from_pairs(&["KINITRO_EXECUTOR_"], pairs.clone()),
                &Env::from_pairs(&["HF_"], pairs.clone()),
            )
            .unwrap();
            config.cache_dir = cache.path().to_path_buf();
            let verifier = Verifier::connect(config, true).await.unwrap();
            let target = Target {
                uid: 1,
                hotkey: "bench".into(),
                repo: "bench/policy".into(),
                revision: revision(0),
                endpoint: endpoint.into(),
            };
            let start = Instant::now();
            let report = verifier.verify(&target, "bench").await;
            times.push(start.elapsed().as_secs_f64());
            assert!(
                report.error.is_none() || report.match_score.is_some(),
                "the bench verification failed: {report:?}"
            );
        }
    });
    times
}

/// Part 2: one cycle of `kinitro run` at `rate`; (episodes/s, verifications stored by its end).
fn cycle(
    rate: f64,
    work: &Path,
    miners_file: &Path,
    hub: &str,
    episodes: u32,
    steps: u32,
    images: bool,
) -> (f64, usize) {
    let port = free_port();
    let data = tempfile::tempdir_in(work).unwrap();
    // The managed PostgreSQL runs as the postgres user when root.
    let _ = Command::new("chmod")
        .args(["755"])
        .arg(data.path())
        .status();
    let cache = data.path().join("cache");
    let child = Command::new(BIN)
        .args(["run", "--no-auth", "--port", &port.to_string()])
        .arg("--data-dir")
        .arg(data.path())
        .arg("--miners-file")
        .arg(miners_file)
        .envs([
            ("KINITRO_LOG_FORMAT", "text".to_string()),
            ("KINITRO_SCHEDULER_ENV_IDS", "metaworld/reach-v3".into()),
            ("KINITRO_SCHEDULER_EPISODES_PER_ENV", episodes.to_string()),
            ("KINITRO_EXECUTOR_MAX_TIMESTEPS", steps.to_string()),
            ("KINITRO_EXECUTOR_USE_IMAGES", images.to_string()),
            ("KINITRO_EXECUTOR_ALLOW_PRIVATE_ENDPOINTS", "true".into()),
            ("KINITRO_EXECUTOR_VERIFICATION_ENABLED", "true".into()),
            ("KINITRO_EXECUTOR_VERIFICATION_RATE", rate.to_string()),
            (
                "KINITRO_EXECUTOR_VERIFICATION_ALLOW_PRIVATE_HUB",
                "true".into(),
            ),
            ("KINITRO_EXECUTOR_VERIFICATION_IMAGE", IMAGE.into()),
            (
                "KINITRO_EXECUTOR_VERIFICATION_CACHE_DIR",
                cache.to_string_lossy().into_owned(),
            ),
            ("HF_ENDPOINT", hub.to_string()),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _run = Killed(child);
    let start = Instant::now();
    let duration = loop {
        let status = get_json(port, "/v1/status");
        if let Some(d) = status["last_completed_cycle"]["duration_seconds"].as_f64() {
            break d;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "no completed cycle: {status}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let stored = get_json(port, "/v1/verifications?limit=500")["verifications"]
        .as_array()
        .map_or(0, Vec::len);
    (f64::from(u32::from(MINERS) * episodes) / duration, stored)
}

fn summary(xs: &[f64]) -> String {
    let mut s = xs.to_vec();
    s.sort_by(f64::total_cmp);
    format!(
        "min {:.2} median {:.2} max {:.2} (n = {})",
        s[0],
        s[s.len() / 2],
        s[s.len() - 1],
        s.len()
    )
}

fn main() {
    // `cargo bench` passes `--bench`; other arguments (a filter) are ignored.
    let work = tempfile::tempdir().unwrap();
    let policy_dir = work.path().join("policy");
    std::fs::create_dir_all(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("policy.py"), POLICY).unwrap();
    eprintln!("building {IMAGE} …");
    build_image();
    let (_miner, endpoint) = zero_miner();

    let times = one_verification(&policy_dir, &endpoint, 5);
    println!(
        "one verification (5 samples, empty cache, container start included): {} s; goal ≤ 10 s",
        summary(&times)
    );

    let episodes: u32 = env_or("BENCH_EPISODES", "1").parse().unwrap();
    let steps: u32 = env_or("BENCH_STEPS", "100").parse().unwrap();
    let images = env_or("BENCH_IMAGES", "on") != "off";
    let rounds: usize = env_or("BENCH_ROUNDS", "2").parse().unwrap();
    let hub = FakeHub::start(
        (1..=MINERS)
            .map(|i| FakeRepo::new("bench/policy", &revision(i), &policy_dir))
            .collect(),
    );
    let miners_file = work.path().join("miners.toml");
    let mut text = String::new();
    for uid in 1..=MINERS {
        text += &format!(
            "[[miners]]\nuid = {uid}\nhotkey = \"bench-{uid}\"\nendpoint = \"{endpoint}\"\ncommit_block = 1\nrepo = \"bench/policy\"\nrevision = \"{}\"\n\n",
            revision(uid)
        );
    }
    std::fs::write(&miners_file, text).unwrap();
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for rate in [0.0, 1.0] {
            let (eps, stored) = cycle(
                rate,
                work.path(),
                &miners_file,
                &hub.url(),
                episodes,
                steps,
                images,
            );
            println!(
                "round {round} rate {rate}: {eps:.3} episodes/s ({} miners × {episodes} episodes × {steps} steps, images {}), {stored} verifications stored by the cycle's end",
                MINERS,
                if images { "on" } else { "off" }
            );
            if rate == 0.0 {
                off.push(eps)
            } else {
                on.push(eps)
            }
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    println!(
        "throughput at rate 1.0 / rate 0: mean {:.1} % (per round: {}); goal ≥ 90 %",
        100.0 * mean(&on) / mean(&off),
        ratios
            .iter()
            .map(|r| format!("{:.1} %", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", ")
    );
}
