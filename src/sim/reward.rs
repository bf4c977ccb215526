//! Rewards and success of the eight tasks (docs/environments.md §8), as pure functions of one
//! step's readings. Rewards are informational (they feed `total_reward`); only success is scored.

use super::task::Task;

/// What a reward needs from one step: the clipped state and a few simulator readings.
#[derive(Debug, Clone, Default)]
pub struct Frame {
    /// The clipped 39-number state of this step.
    pub state: Vec<f64>,
    /// Mean of the two end-effector sites.
    pub tcp: [f64; 3],
    /// Body `leftpad` world position.
    pub leftpad: [f64; 3],
    /// Body `rightpad` world position.
    pub rightpad: [f64; 3],
    /// The native grip command of this step.
    pub grip: f64,
    /// Door hinge angle (door-open only).
    pub door_angle: f64,
    /// Site `pegHead` world position (peg-insert only).
    pub peg_head: [f64; 3],
    /// Collision box corners (peg-insert only): bottom-right 1, top-left 1, bottom-right 2, top-left 2.
    pub box_corners: [[f64; 3]; 4],
}

/// Per-episode constants fixed at reset.
#[derive(Debug, Clone, Default)]
pub struct EpisodeConstants {
    /// The task's target position (the state's goal slots before clipping).
    pub target: [f64; 3],
    /// Object position after placement.
    pub obj_init: [f64; 3],
    /// `tcp` at the end of the hand reset.
    pub init_tcp: [f64; 3],
    /// The nominal hand start.
    pub hand_init: [f64; 3],
    /// Peg head before the peg moved (peg-insert).
    pub head_init: [f64; 3],
    /// Initial button press distance (button-press).
    pub press_init: f64,
}

/// Shape of the tolerance outside its bounds.
#[derive(Debug, Clone, Copy)]
pub enum Sigmoid {
    /// `1 / (9 d² + 1)`.
    LongTail,
    /// `10^(−d²)`.
    Gaussian,
}

/// A reward that could not be computed (a negative margin: an internal error).
#[derive(Debug, Clone, PartialEq)]
pub struct RewardError(pub String);

/// MetaWorld's `tolerance`: 1 inside `[lo, hi]`, decaying to 0.1 at one margin outside.
pub fn tol(x: f64, lo: f64, hi: f64, margin: f64, kind: Sigmoid) -> Result<f64, RewardError> {
    if margin < 0.0 {
        return Err(RewardError(format!("negative reward margin {margin}")));
    }
    if lo <= x && x <= hi {
        return Ok(1.0);
    }
    if margin == 0.0 {
        return Ok(0.0);
    }
    let d = if x < lo { lo - x } else { x - hi } / margin;
    Ok(match kind {
        Sigmoid::LongTail => 1.0 / (9.0 * d * d + 1.0),
        Sigmoid::Gaussian => 10f64.powf(-d * d),
    })
}

/// Hamacher product: `a·b / (a + b − a·b)`, 0 when the denominator is 0.
pub fn hamacher(a: f64, b: f64) -> f64 {
    let den = a + b - a * b;
    if den == 0.0 {
        0.0
    } else {
        a * b / den
    }
}

/// Product of the normalised coordinates when `p` lies in the box of `zero`..`one`, else 1.
pub fn prism(p: [f64; 3], zero: [f64; 3], one: [f64; 3]) -> f64 {
    let inside = (0..3).all(|i| p[i] >= zero[i].min(one[i]) && p[i] <= zero[i].max(one[i]));
    if !inside {
        return 1.0;
    }
    (0..3)
        .map(|i| (p[i] - zero[i]) / (one[i] - zero[i]))
        .product()
}

fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn dist(a: [f64; 3], b: [f64; 3]) -> f64 {
    norm(sub(a, b))
}

fn dist_xz(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

fn scaled_norm(v: [f64; 3], s: [f64; 3]) -> f64 {
    norm([v[0] * s[0], v[1] * s[1], v[2] * s[2]])
}

fn closed(g: f64) -> f64 {
    g.clamp(0.0, 1.0)
}

fn slot3(state: &[f64], at: usize) -> [f64; 3] {
    [state[at], state[at + 1], state[at + 2]]
}

/// MetaWorld's generic gripper caging term (high density), with current pad positions.
fn caging(
    f: &Frame,
    c: &EpisodeConstants,
    obj: [f64; 3],
    radius: f64,
    pad_threshold: f64,
    xz_threshold: f64,
) -> Result<f64, RewardError> {
    use Sigmoid::LongTail;
    let pad = |p: [f64; 3]| {
        tol(
            (p[1] - obj[1]).abs(),
            radius,
            pad_threshold,
            ((p[1] - c.obj_init[1]).abs() - pad_threshold).abs(),
            LongTail,
        )
    };
    let cage_y = hamacher(pad(f.leftpad)?, pad(f.rightpad)?);
    let cage_xz = tol(
        dist_xz(f.tcp, obj),
        0.0,
        xz_threshold,
        dist_xz(c.obj_init, c.init_tcp) - xz_threshold,
        LongTail,
    )?;
    Ok(grasp_from_cage(hamacher(cage_y, cage_xz), f.grip))
}

fn grasp_from_cage(cage: f64, g: f64) -> f64 {
    let grip = if cage > 0.97 { closed(g) } else { 0.0 };
    (hamacher(cage, grip) + cage) / 2.0
}

/// The reward (in [0, 10]) and the success flag of one step.
pub fn evaluate(task: Task, f: &Frame, c: &EpisodeConstants) -> Result<(f64, bool), RewardError> {
    use Sigmoid::{Gaussian, LongTail};
    let s = &f.state;
    let hand = slot3(s, 0);
    let opening = s[3];
    let obj = slot3(s, 4);
    let target = c.target;
    Ok(match task {
        Task::Reach => {
            let d = dist(f.tcp, target);
            let r = 10.0 * tol(d, 0.0, 0.05, dist(c.hand_init, target), LongTail)?;
            (r, d <= 0.05)
        }
        Task::Push => {
            let to_goal = dist(obj, target);
            let to_obj = dist(obj, f.tcp);
            let in_place = tol(to_goal, 0.0, 0.05, dist(c.obj_init, target), LongTail)?;
            let grasp = caging(f, c, obj, 0.015, 0.05, 0.005)?;
            let mut r = 2.0 * grasp;
            if to_obj < 0.02 && opening > 0.0 {
                r = 2.0 * r + 1.0 + 5.0 * in_place;
            }
            if to_goal < 0.05 {
                r = 10.0;
            }
            (r, to_goal <= 0.05)
        }
        Task::PickPlace => {
            let to_goal = dist(obj, target);
            let to_obj = dist(obj, f.tcp);
            let in_place = tol(to_goal, 0.0, 0.05, dist(c.obj_init, target), LongTail)?;
            let right = tol(
                obj[1] - f.rightpad[1],
                0.015,
                0.05,
                ((obj[1] - f.rightpad[1]).abs() - 0.05).abs(),
                LongTail,
            )?;
            let left = tol(
                f.leftpad[1] - obj[1],
                0.015,
                0.05,
                ((obj[1] - f.leftpad[1]).abs() - 0.05).abs(),
                LongTail,
            )?;
            let cage_xz = tol(
                dist_xz(f.tcp, obj),
                0.0,
                0.005,
                dist_xz(c.obj_init, c.init_tcp) - 0.005,
                LongTail,
            )?;
            let grasp = grasp_from_cage(hamacher(hamacher(left, right), cage_xz), f.grip);
            let mut r = hamacher(grasp, in_place);
            if to_obj < 0.02 && opening > 0.0 && obj[2] - 0.01 > c.obj_init[2] {
                r += 1.0 + 5.0 * in_place;
            }
            if to_goal < 0.05 {
                r = 10.0;
            }
            (r, to_goal <= 0.07)
        }
        Task::DoorOpen => {
            let grab = (f.grip.clamp(-1.0, 1.0) + 1.0) / 2.0;
            let door = sub(obj, [0.05, 0.0, 0.0]);
            let rho = ((hand[0] - door[0]).powi(2) + (hand[1] - door[1]).powi(2)).sqrt();
            let floor = if rho <= 0.12 {
                0.0
            } else {
                0.04 * (rho - 0.12).ln() + 0.4
            };
            let above = if hand[2] >= floor {
                1.0
            } else {
                tol(floor - hand[2], 0.0, 0.01, floor / 2.0, LongTail)?
            };
            let near = tol(
                dist(hand, sub(door, [-0.05, -0.03, 0.01])),
                0.0,
                0.06,
                0.5,
                LongTail,
            )?;
            let ready = hamacher(above, near);
            let theta = f.door_angle;
            let opened = 0.2 * f64::from(u8::from(theta < -std::f64::consts::PI / 90.0))
                + 0.8
                    * tol(
                        2.0 * std::f64::consts::PI / 3.0 + theta,
                        0.0,
                        0.5,
                        std::f64::consts::PI / 3.0,
                        LongTail,
                    )?;
            let done = (obj[0] - target[0]).abs() <= 0.08;
            let r = if done {
                10.0
            } else {
                2.0 * hamacher(ready, grab) + 8.0 * opened
            };
            (r, done)
        }
        Task::DrawerOpen => {
            let err = dist(obj, target);
            let opening_r = tol(err, 0.0, 0.02, 0.2, LongTail)?;
            let handle_init = [target[0], target[1] + 0.2, target[2]];
            let scale = [3.0, 3.0, 1.0];
            let caging = tol(
                scaled_norm(sub(obj, hand), scale),
                0.0,
                0.01,
                scaled_norm(sub(handle_init, c.init_tcp), scale),
                LongTail,
            )?;
            (5.0 * (caging + opening_r), err <= 0.03)
        }
        Task::DrawerClose => {
            let to_goal = dist(obj, target);
            let in_place = tol(
                to_goal,
                0.0,
                0.05,
                (dist(c.obj_init, target) - 0.05).abs(),
                LongTail,
            )?;
            let reach = tol(
                dist(obj, f.tcp),
                0.0,
                0.005,
                (dist(c.obj_init, c.init_tcp) - 0.005).abs(),
                Gaussian,
            )?;
            let reach = hamacher(reach, closed(f.grip));
            let mut r = hamacher(reach, in_place);
            if to_goal <= 0.065 {
                r = 1.0;
            }
            (10.0 * r, to_goal <= 0.065)
        }
        Task::ButtonPress => {
            let to_obj = dist(obj, f.tcp);
            let press = (target[2] - obj[2]).abs();
            let near = tol(to_obj, 0.0, 0.01, dist(obj, c.init_tcp), LongTail)?;
            let pressed = tol(press, 0.0, 0.005, c.press_init, LongTail)?;
            let mut r = 5.0 * hamacher(1.0 - opening, near);
            if to_obj <= 0.03 {
                r += 5.0 * pressed;
            }
            (r, press <= 0.024)
        }
        Task::PegInsert => {
            let scale = [1.0, 2.0, 2.0];
            let to_goal = scaled_norm(sub(f.peg_head, target), scale);
            let in_place = tol(
                to_goal,
                0.0,
                0.07,
                scaled_norm(sub(c.head_init, target), scale),
                LongTail,
            )?;
            let [br1, tl1, br2, tl2] = f.box_corners;
            let b1 = prism(f.peg_head, br1, tl1);
            let b2 = prism(f.peg_head, br2, tl2);
            let in_place = hamacher(in_place, hamacher(b2, b1));
            let to_obj = dist(obj, f.tcp);
            let lifted = to_obj < 0.08 && opening > 0.0 && obj[2] - 0.01 > c.obj_init[2];
            let grasp = if lifted {
                1.0
            } else {
                caging(f, c, obj, 0.0075, 0.03, 0.005)?
            };
            let mut r = hamacher(grasp, in_place);
            if lifted {
                r += 1.0 + 5.0 * in_place;
            }
            if to_goal <= 0.07 {
                r = 10.0;
            }
            (r, to_goal <= 0.07)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerance_shapes() {
        assert_eq!(tol(0.5, 0.0, 1.0, 0.3, Sigmoid::LongTail), Ok(1.0));
        assert!((tol(2.0, 0.0, 1.0, 1.0, Sigmoid::LongTail).unwrap() - 0.1).abs() < 1e-12);
        assert!((tol(-1.0, 0.0, 1.0, 1.0, Sigmoid::Gaussian).unwrap() - 0.1).abs() < 1e-12);
        assert_eq!(tol(2.0, 0.0, 1.0, 0.0, Sigmoid::LongTail), Ok(0.0));
        assert!(tol(2.0, 0.0, 1.0, -0.1, Sigmoid::LongTail).is_err());
    }

    #[test]
    fn hamacher_and_prism() {
        assert_eq!(hamacher(0.0, 0.0), 0.0);
        assert_eq!(hamacher(1.0, 1.0), 1.0);
        assert!((hamacher(0.5, 0.5) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(prism([2.0, 0.0, 0.0], [0.0; 3], [1.0; 3]), 1.0);
        assert!((prism([0.5, 0.5, 0.5], [0.0; 3], [1.0; 3]) - 0.125).abs() < 1e-12);
        // corners given in either order
        assert!((prism([0.5, 0.5, 0.5], [1.0; 3], [0.0; 3]) - 0.125).abs() < 1e-12);
    }

    #[test]
    fn reach_success_threshold() {
        let mut f = Frame {
            state: vec![0.0; 39],
            ..Default::default()
        };
        let c = EpisodeConstants {
            target: [0.0, 0.8, 0.2],
            hand_init: [0.0, 0.6, 0.2],
            ..Default::default()
        };
        f.tcp = [0.0, 0.751, 0.2];
        assert_eq!(evaluate(Task::Reach, &f, &c).unwrap(), (10.0, true));
        f.tcp = [0.0, 0.749, 0.2];
        let (r, ok) = evaluate(Task::Reach, &f, &c).unwrap();
        assert!(!ok && r < 10.0 && r > 9.0, "{r}");
    }
}
