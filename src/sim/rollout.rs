//! In-process episodes (no HTTP): what `kinitro env test`, the fidelity tests and the benches run.

use std::time::{Duration, Instant};

use super::env::{Env, SimError, STATE_LEN};

/// The result of one in-process episode.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct EpisodeReport {
    /// The sim seed.
    pub sim_seed: u64,
    /// Success at any step.
    pub success: bool,
    /// First successful step, counting from 1.
    pub first_success_step: Option<u32>,
    /// Sum of rewards.
    pub total_reward: f64,
    /// Steps run.
    pub steps: u32,
    /// Time spent in reset and steps (policy excluded).
    #[serde(skip)]
    pub sim_time: Duration,
}

/// Runs one episode: reset with `sim_seed`, then up to `max_steps` steps with the native action
/// `policy` computes from the environment (for rendering) and the privileged state.
pub fn run_episode(
    env: &mut Env,
    sim_seed: u64,
    max_steps: u32,
    mut policy: impl FnMut(&mut Env, &[f64; STATE_LEN]) -> Result<[f32; 4], SimError>,
) -> Result<EpisodeReport, SimError> {
    let start = Instant::now();
    let mut state = env.reset(sim_seed)?;
    let mut sim_time = start.elapsed();
    let mut report = EpisodeReport {
        sim_seed,
        success: false,
        first_success_step: None,
        total_reward: 0.0,
        steps: 0,
        sim_time,
    };
    for step in 1..=max_steps.min(super::env::MAX_STEPS) {
        let action = policy(env, &state)?;
        let t = Instant::now();
        let (next, outcome) = env.step(action)?;
        sim_time += t.elapsed();
        state = next;
        report.steps = step;
        report.total_reward += outcome.reward;
        if outcome.success && !report.success {
            report.success = true;
            report.first_success_step = Some(step);
        }
    }
    report.sim_time = sim_time;
    Ok(report)
}
