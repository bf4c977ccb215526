//! The eight MetaWorld tasks as plain data (docs/environments.md §8): placement ranges and
//! rejection, hand start, goal box, success threshold.

/// One of the eight registered MetaWorld tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Task {
    /// `reach-v3`.
    Reach,
    /// `push-v3`.
    Push,
    /// `pick-place-v3`.
    PickPlace,
    /// `door-open-v3`.
    DoorOpen,
    /// `drawer-open-v3`.
    DrawerOpen,
    /// `drawer-close-v3`.
    DrawerClose,
    /// `button-press-topdown-v3` (`metaworld/button-press-v3`).
    ButtonPress,
    /// `peg-insert-side-v3` (`metaworld/peg-insert-v3`).
    PegInsert,
}

/// A box given by its low and high corners.
pub type Bounds = ([f64; 3], [f64; 3]);

/// MetaWorld's f32 constants widened to f64.
const F32_0_6: f64 = 0.6f32 as f64;
const F32_0_4: f64 = 0.4f32 as f64;
const F32_0_2: f64 = 0.2f32 as f64;

/// The mocap box the hand target is clipped to.
pub const MOCAP_BOUNDS: Bounds = ([-0.5, 0.40, 0.05], [0.5, 1.0, 0.5]);
/// The bounds of the hand slots of a step state.
pub const HAND_BOUNDS: Bounds = ([-0.525, 0.348, -0.0525], [0.525, 1.025, 0.7]);

impl Task {
    /// All tasks in registry order.
    pub const ALL: [Task; 8] = [
        Task::Reach,
        Task::Push,
        Task::PickPlace,
        Task::DoorOpen,
        Task::DrawerOpen,
        Task::DrawerClose,
        Task::ButtonPress,
        Task::PegInsert,
    ];

    /// The task of a kinitro env id.
    pub fn from_env_id(env_id: &str) -> Option<Task> {
        kinitro_actors::envs::REGISTRY
            .iter()
            .position(|(id, _, _)| *id == env_id)
            .map(|i| Task::ALL[i])
    }

    /// The kinitro env id.
    pub fn env_id(self) -> &'static str {
        kinitro_actors::envs::REGISTRY[self as usize].0
    }

    /// The scene file under the assets directory.
    pub fn scene_file(self) -> &'static str {
        kinitro_actors::envs::REGISTRY[self as usize].2
    }

    /// Low and high corners of the placement vector (8.9); equal bounds still consume a draw.
    pub fn placement_ranges(self) -> (&'static [f64], &'static [f64]) {
        use Task::*;
        match self {
            Reach | PickPlace => (
                &[-0.1, 0.6, 0.02, -0.1, 0.8, 0.05],
                &[0.1, 0.7, 0.02, 0.1, 0.9, 0.3],
            ),
            Push => (
                &[-0.1, 0.6, 0.02, -0.1, 0.8, 0.01],
                &[0.1, 0.7, 0.02, 0.1, 0.9, 0.02],
            ),
            DoorOpen => (&[0.0, 0.85, 0.15], &[0.1, 0.95, 0.15]),
            DrawerOpen | DrawerClose => (&[-0.1, 0.9, 0.0], &[0.1, 0.9, 0.0]),
            ButtonPress => (&[-0.1, 0.8, 0.115], &[0.1, 0.9, 0.115]),
            PegInsert => (
                &[0.0, 0.5, 0.02, -0.35, 0.4, -0.001],
                &[0.2, 0.7, 0.02, -0.25, 0.7, 0.001],
            ),
        }
    }

    /// Whether a drawn placement vector must be redrawn (xy distance of its two points too small).
    pub fn rejects(self, v: &[f64]) -> bool {
        let min_xy = match self {
            Task::Reach | Task::Push | Task::PickPlace => 0.15,
            Task::PegInsert => 0.1,
            _ => return false,
        };
        ((v[0] - v[3]).powi(2) + (v[1] - v[4]).powi(2)).sqrt() < min_xy
    }

    /// The nominal hand start (f32 values widened where MetaWorld stores f32).
    pub fn hand_init(self) -> [f64; 3] {
        match self {
            Task::DrawerOpen | Task::DrawerClose => [0.0, F32_0_6, F32_0_2],
            Task::ButtonPress => [0.0, F32_0_4, F32_0_2],
            _ => [0.0, 0.6, 0.2],
        }
    }

    /// The box the goal slots of a step state are clipped to.
    pub fn goal_bounds(self) -> Bounds {
        match self {
            Task::Reach | Task::PickPlace => ([-0.1, 0.8, 0.05], [0.1, 0.9, 0.3]),
            Task::Push => ([-0.1, 0.8, 0.01], [0.1, 0.9, 0.02]),
            Task::DoorOpen => ([-0.3, 0.4, 0.1499], [-0.2, 0.5, 0.1501]),
            Task::PegInsert => ([-0.32, 0.4, 0.129], [-0.22, 0.7, 0.131]),
            _ => ([-0.5, 0.40, 0.05], [0.5, 1.0, 0.5]),
        }
    }

    /// Whether the hand reset's result is the same for every episode (nothing is placed before it),
    /// so it can be computed once and restored (docs/environments.md §10 item 6).
    pub fn hand_reset_cacheable(self) -> bool {
        matches!(self, Task::Reach | Task::Push | Task::PickPlace)
    }
}

/// Clips `v` into `bounds` per axis.
pub fn clip3(v: [f64; 3], bounds: &Bounds) -> [f64; 3] {
    std::array::from_fn(|i| v[i].clamp(bounds.0[i], bounds.1[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_order_and_lookup() {
        for t in Task::ALL {
            assert_eq!(Task::from_env_id(t.env_id()), Some(t));
        }
        assert_eq!(
            Task::from_env_id("metaworld/button-press-v3"),
            Some(Task::ButtonPress)
        );
        assert_eq!(Task::from_env_id("metaworld/nope-v3"), None);
        assert_eq!(
            Task::DrawerClose.scene_file(),
            "sawyer_xyz/sawyer_drawer.xml"
        );
    }

    #[test]
    fn f32_hand_starts() {
        assert_eq!(Task::DrawerOpen.hand_init()[1], 0.6000000238418579);
        assert_eq!(
            Task::ButtonPress.hand_init(),
            [0.0, 0.4000000059604645, 0.20000000298023224]
        );
        assert_eq!(Task::Reach.hand_init(), [0.0, 0.6, 0.2]);
    }
}
