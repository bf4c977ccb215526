//! `kinitro env list|build|test` (docs/environments.md §11).

use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Subcommand;
use serde_json::{json, Value};

use super::progress::Progress;
use super::{CommandResult, Failure};
use crate::config::miner::PolicyKind;
use crate::container::image::{self, BuildRequest, Family};
use crate::executor::worker::encode_observation;
use crate::miner::policy::Policy;
use crate::sim::action::Action;
use crate::sim::batch::BatchCameras;
use crate::sim::env::{Env, SimError};
use crate::sim::rollout::{run_episode, EpisodeReport};
use crate::sim::task::Task;
use crate::sim::{assets, render};

/// `kinitro env` commands (docs/environments.md §11).
#[derive(Debug, Subcommand)]
pub enum EnvCommand {
    /// List the registered environments
    List {
        /// JSON output
        #[arg(long)]
        json: bool,
    },
    /// Check a family's scenes, then build its container image (no registry needed)
    Build {
        /// Family: metaworld, verifier (the verification sandbox), or all
        family: String,
        /// Image tag [default kinitro/<family>:v1]
        #[arg(long)]
        tag: Option<String>,
        /// Build without the engine's layer cache
        #[arg(long)]
        no_cache: bool,
        /// Push the image after building it
        #[arg(long)]
        push: bool,
        /// Registry to push to (the image is tagged <registry>/<tag> first)
        #[arg(long)]
        registry: Option<String>,
        /// Only the scene checks; no Docker engine needed
        #[arg(long)]
        check_only: bool,
        /// MetaWorld scene files
        #[arg(long)]
        assets_dir: Option<PathBuf>,
        /// Skip the rendering check
        #[arg(long)]
        no_render: bool,
        /// The kinitro binary to put in the image [default: this one]
        #[arg(long)]
        binary: Option<PathBuf>,
        /// verifier: more PyPI packages for miners' policies, e.g. "torch==2.5.1+cpu einops"
        /// (fetched at build time)
        #[arg(long, value_name = "P …")]
        python_packages: Option<String>,
    },
    /// Serve the environment protocol (affinetes function_based) — what an environment container runs
    Serve(crate::config::env_serve::EnvServeFlags),
    /// Probe this container's environment server (exit 0 on HTTP 200 within 3 s)
    Healthcheck,
    /// Run episodes of one environment with a reference policy
    Test {
        /// Environment id, e.g. metaworld/pick-place-v3
        env_id: String,
        /// Episodes
        #[arg(long)]
        episodes: Option<u32>,
        /// First seed
        #[arg(long)]
        seed: Option<u64>,
        /// Steps per episode
        #[arg(long)]
        max_steps: Option<u32>,
        /// Policy
        #[arg(long, value_enum)]
        policy: Option<crate::config::miner::PolicyKind>,
        /// No camera images
        #[arg(long)]
        no_images: bool,
        /// Write episode records here
        #[arg(long)]
        record_dir: Option<PathBuf>,
        /// Save camera images with the records
        #[arg(long)]
        save_images: bool,
        /// JSON output
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `kinitro env` command.
pub fn env(
    cmd: EnvCommand,
    level: Option<crate::config::LogLevel>,
    format: Option<crate::config::LogFormat>,
) -> CommandResult {
    match cmd {
        EnvCommand::List { json } => list(json),
        EnvCommand::Build {
            family,
            tag,
            no_cache,
            push,
            registry,
            check_only,
            assets_dir,
            no_render,
            binary,
            python_packages,
        } => {
            let kinds = match family.as_str() {
                "metaworld" => vec![image::Kind::Env(Family::Metaworld)],
                "verifier" => vec![image::Kind::Verifier],
                "all" => vec![image::Kind::Env(Family::Metaworld), image::Kind::Verifier],
                "genesis" | "procthor" => {
                    return Err(Failure::usage(format!(
                        "family '{family}' has no image in this build"
                    )))
                }
                other => {
                    return Err(Failure::usage(format!(
                        "unknown family '{other}' (expected metaworld, verifier or all)"
                    )))
                }
            };
            let packages: Vec<String> = python_packages
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_string)
                .collect();
            if !packages.is_empty() && !kinds.contains(&image::Kind::Verifier) {
                return Err(Failure::usage(
                    "--python-packages applies to the verifier image only",
                ));
            }
            let scenes = kinds.iter().any(|k| matches!(k, image::Kind::Env(_)));
            let dir = match assets_dir {
                Some(d) => std::path::absolute(&d).unwrap_or(d),
                None if scenes => crate::config::metaworld_assets_dir()?,
                None => PathBuf::new(),
            };
            if scenes {
                build(&dir, !no_render)?;
            }
            if check_only {
                return Ok(());
            }
            let binary = match binary {
                Some(b) => b,
                None => std::env::current_exe()
                    .map_err(|e| Failure::runtime(format!("cannot find this binary: {e}")))?,
            };
            for kind in kinds {
                let default_tag = match kind {
                    image::Kind::Env(family) => family.default_tag(),
                    _ => crate::config::verification::DEFAULT_IMAGE.to_string(),
                };
                let request = BuildRequest {
                    kind,
                    // One --tag cannot name two images: with `all` it applies to the family's.
                    tag: match (&tag, kind) {
                        (Some(t), image::Kind::Env(_)) => t.clone(),
                        (Some(t), _) if family == "verifier" => t.clone(),
                        _ => default_tag,
                    },
                    no_cache,
                    binary: binary.clone(),
                    assets: dir.clone(),
                    python_packages: packages.clone(),
                };
                build_image(&request, push, registry.as_deref())?;
            }
            Ok(())
        }
        EnvCommand::Serve(flags) => {
            super::init_logging(
                level,
                format,
                Some(&crate::config::Env::from_process(&["KINITRO_ENV_"])),
            )?;
            let config = crate::config::env_serve::EnvServeConfig::resolve(
                &flags,
                &crate::config::Env::from_process(&["KINITRO_ENV_"]),
                &crate::config::Env::from_process(&["KINITRO_EXECUTOR_"]),
            )?;
            actix_web::rt::System::new()
                .block_on(crate::env_server::serve(config))
                .map_err(Failure::runtime)
        }
        EnvCommand::Healthcheck => env_healthcheck(),
        EnvCommand::Test {
            env_id,
            episodes,
            seed,
            max_steps,
            policy,
            no_images,
            record_dir,
            save_images,
            json,
        } => {
            let options = TestOptions {
                episodes: episodes.unwrap_or(5),
                seed: seed.unwrap_or(0),
                max_steps: max_steps.unwrap_or(crate::sim::env::MAX_STEPS),
                policy: policy.unwrap_or(PolicyKind::Random),
                images: !no_images,
                record_dir,
                save_images,
                json,
            };
            test(&env_id, &options)
        }
    }
}

fn list(json: bool) -> CommandResult {
    let assets = crate::config::metaworld_assets_dir()?;
    let rows: Vec<Value> = kinitro_actors::envs::REGISTRY
        .iter()
        .map(|(id, task, scene)| {
            json!({
                "env_id": id, "family": kinitro_actors::envs::family(id), "task": task,
                "scene_file": scene, "assets_present": assets.join(scene).is_file(),
            })
        })
        .collect();
    if json {
        println!("{}", Value::Array(rows));
    } else {
        println!(
            "{:<28} {:<10} {:<24} {:<44} assets",
            "env id", "family", "task", "scene file"
        );
        for r in &rows {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            let present = if r["assets_present"] == true {
                "present"
            } else {
                "missing"
            };
            println!(
                "{:<28} {:<10} {:<24} {:<44} {present}",
                s("env_id"),
                s("family"),
                s("task"),
                s("scene_file")
            );
        }
        println!("assets directory: {}", assets.display());
    }
    Ok(())
}

/// `kinitro env healthcheck`: `GET /health` of this container's server, with its own port and,
/// when it serves TLS, its own certificate pinned; exit 0 on HTTP 200 within 3 s.
fn env_healthcheck() -> CommandResult {
    let port = crate::config::env_serve::affinetes_port()?;
    let tls = crate::config::env_serve::tls_material(&crate::config::Env::from_process(&[
        "KINITRO_ENV_",
    ]))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://127.0.0.1:{port}/health");
    actix_web::rt::System::new().block_on(async move {
        let client = crate::container::tls::client(
            tls.as_ref().map(|t| t.cert_pem.as_str()),
            std::time::Duration::from_secs(3),
        )
        .map_err(Failure::runtime)?;
        match client.get(&url).send().await {
            Ok(r) if r.status().as_u16() == 200 => Ok(()),
            Ok(r) => Err(Failure::runtime(format!("{url}: HTTP {}", r.status()))),
            Err(e) => Err(Failure::runtime(format!("{url}: {e}"))),
        }
    })
}

/// Builds (and pushes) one image on the local engine (`DOCKER_HOST`), printing its size and the
/// time the build took.
pub(super) fn build_image(
    request: &BuildRequest,
    push: bool,
    registry: Option<&str>,
) -> CommandResult {
    let runtime = super::tokio_runtime()?;
    runtime.block_on(async {
        let engine = crate::container::connect("localhost", 3600)
            .await
            .map_err(Failure::runtime)?;
        let started = Instant::now();
        eprintln!("building {} on {}", request.tag, engine.uri);
        let progress = Progress::spinner("building", true);
        let built = image::build(&engine, request, |line| progress.message(line))
            .await
            .map_err(Failure::runtime)?;
        progress.finish();
        println!(
            "built {} ({}): {:.1} MB in {:.1} s",
            request.tag,
            built.id,
            built.size as f64 / 1e6,
            started.elapsed().as_secs_f64()
        );
        if push || registry.is_some() {
            let pushed = image::push(&engine, &request.tag, registry)
                .await
                .map_err(Failure::runtime)?;
            println!("pushed {pushed}");
        }
        Ok(())
    })
}

/// `env build metaworld`: compile every scene, apply the edits, reset, step and render each env.
fn build(dir: &Path, render_check: bool) -> CommandResult {
    let scenes = assets::compile_all(dir).map_err(Failure::runtime)?;
    println!("assets: {}", dir.display());
    for s in &scenes {
        println!(
            "{:<44} nq {:>3} nv {:>3} bodies {:>3} mocap {} compiled in {:.1} ms",
            s.file,
            s.nq,
            s.nv,
            s.nbody,
            s.nmocap,
            s.compile.as_secs_f64() * 1e3
        );
    }
    let mut failures = 0;
    for task in Task::ALL {
        match check_env(dir, task, render_check) {
            Ok(line) => println!("{:<28} ok   {line}", task.env_id()),
            Err(e) => {
                failures += 1;
                println!("{:<28} FAIL {e}", task.env_id());
            }
        }
    }
    if failures > 0 {
        return Err(Failure::runtime(format!(
            "{failures} environment(s) failed the build check"
        )));
    }
    println!("all {} environments ready", Task::ALL.len());
    Ok(())
}

fn check_env(dir: &Path, task: Task, render_check: bool) -> Result<String, String> {
    let model = assets::load(dir, task.scene_file())?;
    let mut env = Env::new(task, &model).map_err(|e| e.0)?;
    let t = Instant::now();
    env.reset(0).map_err(|e| format!("reset: {e}"))?;
    let reset_ms = t.elapsed().as_secs_f64() * 1e3;
    let t = Instant::now();
    env.step([0.0; 4]).map_err(|e| format!("step: {e}"))?;
    let step_ms = t.elapsed().as_secs_f64() * 1e3;
    let mut line = format!("reset {reset_ms:.2} ms, step {step_ms:.3} ms");
    if render_check {
        let mut cams = BatchCameras::new(&model)?;
        let t = Instant::now();
        let images = cams
            .render_one(env.sim())
            .map_err(|e| format!("render: {e}"))?;
        if images
            .iter()
            .any(|i| i.len() != render::SIZE * render::SIZE * 3)
        {
            return Err("render: wrong image size".into());
        }
        line += &format!(
            ", render corner+corner2 {:.1} ms",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(line)
}

/// Options of `env test`.
struct TestOptions {
    episodes: u32,
    seed: u64,
    max_steps: u32,
    policy: PolicyKind,
    images: bool,
    record_dir: Option<PathBuf>,
    save_images: bool,
    json: bool,
}

fn write_json(path: &Path, v: &Value) -> Result<(), Failure> {
    std::fs::write(path, serde_json::to_vec_pretty(v).unwrap_or_default())
        .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))
}

/// `env test`: episodes in-process with a reference policy, episode `i` with sim seed `seed + i`.
fn test(env_id: &str, o: &TestOptions) -> CommandResult {
    let task = Task::from_env_id(env_id)
        .ok_or_else(|| Failure::usage(format!("Unknown environment: {env_id}")))?;
    if o.save_images && o.record_dir.is_none() {
        return Err(Failure::usage("--save-images needs --record-dir"));
    }
    let dir = crate::config::metaworld_assets_dir()?;
    assets::check(&dir).map_err(Failure::runtime)?;
    let model = assets::load(&dir, task.scene_file()).map_err(Failure::runtime)?;
    let mut env = Env::new(task, &model).map_err(|e| Failure::runtime(e.0))?;
    let mut cams = if o.images {
        Some(BatchCameras::new(&model).map_err(Failure::runtime)?)
    } else {
        None
    };
    if let Some(root) = &o.record_dir {
        std::fs::create_dir_all(root)
            .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", root.display())))?;
        write_json(
            &root.join("metadata.json"),
            &json!({
                "env_id": env_id, "policy": format!("{:?}", o.policy).to_lowercase(), "episodes": o.episodes,
                "seed": o.seed, "max_steps": o.max_steps, "images": o.images, "mujoco": "3.17.0",
            }),
        )?;
    }
    let mut policy = Policy::new(o.policy, o.seed);
    let mut reports: Vec<(EpisodeReport, Option<f64>)> = Vec::new();
    // Observation encoding over all episodes: (ms, observations).
    let mut encoding = (0.0, 0u32);
    if !o.json {
        println!(
            "{:>6} {:>8} {:>6} {:>9} {:>6} {:>12} {:>10}",
            "seed", "success", "first", "return", "steps", "steps/s", "render ms"
        );
    }
    let progress = Progress::bar(u64::from(o.episodes) * u64::from(o.max_steps), "steps");
    for i in 0..o.episodes {
        let sim_seed = o.seed + u64::from(i);
        let episode_dir = match &o.record_dir {
            Some(root) => {
                let d = root.join(format!("episode_{i:04}"));
                std::fs::create_dir_all(&d)
                    .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", d.display())))?;
                Some(d)
            }
            None => None,
        };
        let (mut render_ms, mut renders, mut step) = (0.0, 0u32, 0u32);
        let mut image_error = None;
        let report = run_episode(&mut env, sim_seed, o.max_steps, |env, state| {
            // The images a miner would get with this observation.
            let images = match cams.as_mut() {
                Some(cams) => {
                    let t = Instant::now();
                    let images = cams
                        .render_one(env.sim())
                        .map_err(|e| SimError(format!("render: {e}")))?;
                    render_ms += t.elapsed().as_secs_f64() * 1e3;
                    renders += 1;
                    Some(images)
                }
                None => None,
            };
            // The observation as the executor sends it (privileged state off, its default).
            let t = Instant::now();
            let body =
                encode_observation(&env.proprio(), images.as_ref(), None).map_err(SimError)?;
            std::hint::black_box(body);
            encoding.0 += t.elapsed().as_secs_f64() * 1e3;
            encoding.1 += 1;
            if let (true, Some(d), Some(images)) = (o.save_images, &episode_dir, &images) {
                for (name, image) in render::CAMERAS.iter().zip(images) {
                    if let Err(e) = save_png(&d.join(format!("{name}_{step:03}.png")), image) {
                        image_error.get_or_insert(e);
                    }
                }
            }
            step += 1;
            progress.inc();
            let action = policy
                .act(Some(task), Some(state))
                .map_err(|e| SimError(format!("policy: {e:?}")))?;
            Ok(Action::from_json(&action).map_err(SimError)?.native())
        })
        .map_err(|e| Failure::runtime(format!("Simulator error: {e}")))?;
        if let Some(e) = image_error {
            return Err(Failure::runtime(e));
        }
        let render_ms = (renders > 0).then(|| render_ms / f64::from(renders));
        if let Some(d) = &episode_dir {
            let draw = env.draw();
            write_json(
                &d.join("task.json"),
                &json!({
                    "env_id": env_id, "sim_seed": sim_seed, "placement": draw.placement,
                    "friction_scale": draw.friction_scale, "damping_scale": draw.damping_scale,
                }),
            )?;
            write_json(&d.join("result.json"), &episode_json(&report, render_ms))?;
        }
        if !o.json {
            let first = report
                .first_success_step
                .map_or("none".to_string(), |s| s.to_string());
            let render = render_ms.map_or("-".to_string(), |m| format!("{m:.2}"));
            progress.println(&format!(
                "{:>6} {:>8} {:>6} {:>9.2} {:>6} {:>12.0} {:>10}",
                sim_seed,
                report.success,
                first,
                report.total_reward,
                report.steps,
                steps_per_second(&report),
                render
            ));
        }
        reports.push((report, render_ms));
    }
    progress.finish();
    summary(
        env_id,
        o,
        &reports,
        encoding.0 / f64::from(encoding.1.max(1)),
    )
}

fn steps_per_second(r: &EpisodeReport) -> f64 {
    f64::from(r.steps) / r.sim_time.as_secs_f64().max(1e-9)
}

fn episode_json(r: &EpisodeReport, render_ms: Option<f64>) -> Value {
    json!({
        "sim_seed": r.sim_seed, "success": r.success, "first_success_step": r.first_success_step,
        "total_reward": r.total_reward, "steps": r.steps, "steps_per_second": steps_per_second(r),
        "render_ms_mean": render_ms,
    })
}

fn save_png(path: &Path, rgb: &[u8]) -> Result<(), String> {
    let file =
        std::fs::File::create(path).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    let mut encoder = png::Encoder::new(
        std::io::BufWriter::new(file),
        render::SIZE as u32,
        render::SIZE as u32,
    );
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder
        .write_header()
        .and_then(|mut w| w.write_image_data(rgb))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Prints the summary (and with `--json` one JSON object as the last line, docs/environments.md
/// §11). Its `encode_ms_mean` is the time to encode one observation as the executor sends it
/// (privileged state off), which is part of the executor bench's baseline.
fn summary(
    env_id: &str,
    o: &TestOptions,
    reports: &[(EpisodeReport, Option<f64>)],
    encode_ms_mean: f64,
) -> CommandResult {
    let n = reports.len().max(1) as f64;
    let successes = reports.iter().filter(|(r, _)| r.success).count();
    let firsts: Vec<f64> = reports
        .iter()
        .filter_map(|(r, _)| r.first_success_step)
        .map(f64::from)
        .collect();
    let steps: u32 = reports.iter().map(|(r, _)| r.steps).sum();
    let time: f64 = reports.iter().map(|(r, _)| r.sim_time.as_secs_f64()).sum();
    let renders: Vec<f64> = reports.iter().filter_map(|(_, m)| *m).collect();
    let summary = json!({
        "env_id": env_id,
        "policy": format!("{:?}", o.policy).to_lowercase(),
        "episodes": reports.len(),
        "seed": o.seed,
        "success_rate": successes as f64 / n,
        "mean_return": reports.iter().map(|(r, _)| r.total_reward).sum::<f64>() / n,
        "mean_first_success_step": (!firsts.is_empty()).then(|| firsts.iter().sum::<f64>() / firsts.len() as f64),
        "steps": steps,
        "steps_per_second": f64::from(steps) / time.max(1e-9),
        "render_ms_mean": (!renders.is_empty()).then(|| renders.iter().sum::<f64>() / renders.len() as f64),
        "encode_ms_mean": encode_ms_mean,
    });
    if o.json {
        println!("{summary}");
    } else {
        println!(
            "{env_id}: policy {}, success {successes}/{} ({:.0}%), mean return {:.2}, {:.0} env steps/s{}, {:.1} µs to encode an observation",
            summary["policy"].as_str().unwrap_or_default(),
            reports.len(),
            100.0 * summary["success_rate"].as_f64().unwrap_or(0.0),
            summary["mean_return"].as_f64().unwrap_or(0.0),
            summary["steps_per_second"].as_f64().unwrap_or(0.0),
            summary["render_ms_mean"].as_f64().map_or(String::new(), |m| format!(", {m:.2} ms per render (2 cameras)")),
            1e3 * encode_ms_mean,
        );
    }
    Ok(())
}
