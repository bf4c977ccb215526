//! The episode's random draws (docs/environments.md §7): MT19937 keyed by the sim seed,
//! NumPy-legacy uniform doubles, the placement vector with its rejection rule, then the two physics
//! scales.

use rand_mt::Mt;

use super::task::Task;

/// MT19937 producing NumPy `RandomState` uniform doubles.
pub struct SimRng(Mt);

impl SimRng {
    /// Keyed with `[low word, high word]` of the sim seed (always a key of length 2).
    pub fn from_sim_seed(sim_seed: u64) -> Self {
        Self(Mt::new_with_key([sim_seed as u32, (sim_seed >> 32) as u32]))
    }

    /// Seeded with `init_genrand(seed)` (NumPy's `RandomState(seed)`), as MetaWorld's benchmark.
    pub fn from_genrand(seed: u32) -> Self {
        Self(Mt::new(seed))
    }

    /// A uniform double in [0, 1) with 53 random bits, drawn as NumPy does.
    pub fn next_f64(&mut self) -> f64 {
        let a = (self.0.next_u32() >> 5) as f64;
        let b = (self.0.next_u32() >> 6) as f64;
        (a * 67108864.0 + b) / 9007199254740992.0
    }

    /// `lo + (hi − lo) · u`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.next_f64()
    }

    /// One placement vector of `task`, redrawn whole until it passes the task's rejection rule.
    pub fn placement(&mut self, task: Task) -> Vec<f64> {
        let (lo, hi) = task.placement_ranges();
        loop {
            let v: Vec<f64> = lo
                .iter()
                .zip(hi)
                .map(|(l, h)| self.uniform(*l, *h))
                .collect();
            if !task.rejects(&v) {
                return v;
            }
        }
    }
}

/// Everything random about one episode.
#[derive(Debug, Clone, PartialEq)]
pub struct EpisodeDraw {
    /// Object / goal / fixture placement (3 or 6 numbers).
    pub placement: Vec<f64>,
    /// Multiplies every geom friction coefficient.
    pub friction_scale: f64,
    /// Multiplies every dof damping.
    pub damping_scale: f64,
}

impl EpisodeDraw {
    /// The draws of one episode, in the order of docs/environments.md §7.2.
    pub fn new(task: Task, sim_seed: u64) -> Self {
        let mut rng = SimRng::from_sim_seed(sim_seed);
        let placement = rng.placement(task);
        let friction_scale = rng.uniform(0.8, 1.2);
        let damping_scale = rng.uniform(0.9, 1.1);
        Self {
            placement,
            friction_scale,
            damping_scale,
        }
    }

    /// Nominal physics with a given placement (replaying recorded episodes).
    pub fn nominal(placement: Vec<f64>) -> Self {
        Self {
            placement,
            friction_scale: 1.0,
            damping_scale: 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_check_values() {
        let mut r = SimRng::from_sim_seed(1221837438520379077);
        assert_eq!(
            [r.next_f64(), r.next_f64(), r.next_f64()],
            [0.9284755556302344, 0.9494630146543875, 0.4932891729862525]
        );
        let mut r = SimRng::from_sim_seed(0);
        assert_eq!(
            [r.next_f64(), r.next_f64(), r.next_f64()],
            [0.1507172537105722, 0.19554272386502092, 0.16532538485071524]
        );
    }

    #[test]
    fn placements_respect_ranges_and_rejection() {
        for task in Task::ALL {
            let (lo, hi) = task.placement_ranges();
            for seed in 0..200 {
                let d = EpisodeDraw::new(task, seed);
                assert_eq!(d.placement.len(), lo.len());
                for (i, v) in d.placement.iter().enumerate() {
                    assert!(lo[i] <= *v && *v <= hi[i], "{task:?} {i} {v}");
                }
                assert!(!task.rejects(&d.placement));
                assert!((0.8..1.2).contains(&d.friction_scale));
                assert!((0.9..1.1).contains(&d.damping_scale));
            }
            assert_ne!(EpisodeDraw::new(task, 1), EpisodeDraw::new(task, 2));
            assert_eq!(EpisodeDraw::new(task, 3), EpisodeDraw::new(task, 3));
        }
    }
}
