//! The scripted experts of docs/miner-protocol.md §8.1: stateless waypoint controllers over the
//! 39-number privileged state.

use super::task::Task;

/// An expert's command: position delta (not clipped) and native grip effort in [−1, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExpertCommand {
    /// `p · (target − hand)`.
    pub delta: [f64; 3],
    /// Native grip effort.
    pub grip: f64,
}

impl ExpertCommand {
    /// The kinitro action's channels: `ee_twist` (six numbers) and `gripper` in [0, 1].
    pub fn twist_and_gripper(&self) -> ([f64; 6], f64) {
        let d = self.delta;
        (
            [d[0], d[1], d[2], 0.0, 0.0, 0.0],
            ((self.grip + 1.0) / 2.0).clamp(0.0, 1.0),
        )
    }
}

fn xy(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// The expert's command for `task` in state `s` (39 numbers).
pub fn command(task: Task, s: &[f64]) -> ExpertCommand {
    let hand = [s[0], s[1], s[2]];
    let opening = s[3];
    let obj = [s[4], s[5], s[6]];
    let goal = [s[36], s[37], s[38]];
    let (target, p, grip) = match task {
        Task::Reach => (goal, 5.0, 0.0),
        Task::Push => {
            let puck = add(obj, [-0.005, 0.0, 0.0]);
            let target = if xy(hand, puck) > 0.02 {
                add(puck, [0.0, 0.0, 0.2])
            } else if (hand[2] - puck[2]).abs() > 0.04 {
                add(puck, [0.0, 0.0, 0.03])
            } else {
                goal
            };
            let grip = if xy(hand, obj) <= 0.02 && (hand[2] - obj[2]).abs() <= 0.10 {
                0.6
            } else {
                0.0
            };
            (target, 10.0, grip)
        }
        Task::PickPlace => {
            let puck = add(obj, [-0.005, 0.0, 0.0]);
            let target = if xy(hand, puck) > 0.02 {
                add(puck, [0.0, 0.0, 0.1])
            } else if (hand[2] - puck[2]).abs() > 0.05 && puck[2] < 0.04 {
                add(puck, [0.0, 0.0, 0.03])
            } else if opening > 0.73 {
                hand
            } else {
                goal
            };
            let d3 = (0..3)
                .map(|i| (hand[i] - obj[i]).powi(2))
                .sum::<f64>()
                .sqrt();
            (target, 10.0, if d3 < 0.07 { 1.0 } else { 0.0 })
        }
        Task::DoorOpen => {
            let door = add(obj, [-0.05, 0.0, 0.0]);
            let target = if xy(hand, door) > 0.12 {
                add(door, [0.06, 0.02, 0.2])
            } else if (hand[2] - door[2]).abs() > 0.04 {
                add(door, [0.06, 0.02, 0.0])
            } else {
                door
            };
            (target, 25.0, 1.0)
        }
        Task::DrawerOpen => {
            let d = add(obj, [0.0, 0.0, -0.02]);
            let (target, p) = if xy(hand, d) > 0.06 {
                (add(d, [0.0, 0.0, 0.3]), 4.0)
            } else if (hand[2] - d[2]).abs() > 0.04 {
                (d, 4.0)
            } else {
                (add(d, [0.0, -0.06, 0.0]), 50.0)
            };
            (target, p, -1.0)
        }
        Task::DrawerClose => {
            let d = add(obj, [0.0, 0.0, -0.02]);
            let target = if hand[1] > d[1] {
                if hand[2] < d[2] + 0.23 {
                    [hand[0], hand[1], d[2] + 0.5]
                } else {
                    add(d, [0.0, -0.075, 0.23])
                }
            } else if (hand[2] - d[2]).abs() > 0.04 {
                add(d, [0.0, -0.075, 0.0])
            } else {
                d
            };
            (target, 25.0, 1.0)
        }
        Task::ButtonPress => {
            let target = if xy(hand, obj) > 0.04 {
                add(obj, [0.0, 0.0, 0.1])
            } else {
                obj
            };
            (target, 25.0, 1.0)
        }
        Task::PegInsert => {
            let hole = [-0.35, goal[1], 0.16];
            let far = xy(hand, obj) > 0.04;
            let target = if far {
                add(obj, [0.0, 0.0, 0.3])
            } else if (hand[2] - obj[2]).abs() > 0.025 {
                obj
            } else if ((obj[1] - hole[1]).powi(2) + (obj[2] - hole[2]).powi(2)).sqrt() > 0.03 {
                add(hole, [0.4, 0.0, 0.0])
            } else {
                hole
            };
            let grip = if far || (hand[2] - obj[2]).abs() > 0.15 {
                -1.0
            } else {
                0.6
            };
            (target, 25.0, grip)
        }
    };
    ExpertCommand {
        delta: std::array::from_fn(|i| p * (target[i] - hand[i])),
        grip,
    }
}
