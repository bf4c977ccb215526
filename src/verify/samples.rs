//! The spot-check observations of a verification (docs/verification.md §2.5–2.6): upstream's
//! synthetic samples from `default_rng(test_seed)`, or realistic-looking ones from a fresh seed.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use super::numpy::NumpyRng;

/// Lower corner of the realistic hand positions: the Sawyer mocap bounds (`sim::task::MOCAP_BOUNDS`),
/// where the hand of every MetaWorld task stays.
pub const REALISTIC_POS_LOW: [f64; 3] = [-0.5, 0.40, 0.05];
/// Upper corner of the realistic hand positions (see [`REALISTIC_POS_LOW`]).
pub const REALISTIC_POS_HIGH: [f64; 3] = [0.5, 1.0, 0.5];
/// Largest linear hand speed of a realistic sample, m/s.
pub const REALISTIC_MAX_LIN_SPEED: f64 = 0.2;
/// Largest angular hand speed of a realistic sample, rad/s.
pub const REALISTIC_MAX_ANG_SPEED: f64 = 0.5;
/// Largest rotation of a realistic hand orientation away from [`NOMINAL_HAND_QUAT`], radians.
pub const REALISTIC_MAX_TILT: f64 = 0.3;
/// The hand orientation MetaWorld's mocap holds (gripper pointing down), x, y, z, w.
pub const NOMINAL_HAND_QUAT: [f64; 4] = [
    0.0,
    std::f64::consts::FRAC_1_SQRT_2,
    0.0,
    std::f64::consts::FRAC_1_SQRT_2,
];

/// Upstream's verification seed of a (uid, revision) pair: the first 8 hex digits of
/// SHA-256(`"<uid>:<revision>"`) as an integer, mod 2³¹.
pub fn test_seed(uid: u16, revision: &str) -> u64 {
    let digest = Sha256::digest(format!("{uid}:{revision}").as_bytes());
    let first = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    u64::from(first) % (1 << 31)
}

/// A fresh random seed for realistic samples, below 2⁶³ (fits a signed 64-bit column).
pub fn fresh_seed() -> u64 {
    rand::random::<u64>() >> 1
}

/// Where the sample observations come from (`KINITRO_EXECUTOR_VERIFICATION_SAMPLES_FROM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SampleSource {
    /// Upstream's synthetic samples from `default_rng(test_seed)` (public seed, comparable with upstream).
    #[default]
    Upstream,
    /// Plausible samples from a fresh random seed, not recognisable by their inputs.
    Realistic,
}

impl SampleSource {
    /// The configuration spelling: `upstream` or `realistic`.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleSource::Upstream => "upstream",
            SampleSource::Realistic => "realistic",
        }
    }
}

impl fmt::Display for SampleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SampleSource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "upstream" => Ok(SampleSource::Upstream),
            "realistic" => Ok(SampleSource::Realistic),
            other => Err(format!(
                "unknown verification sample source '{other}' (expected 'upstream' or 'realistic')"
            )),
        }
    }
}

/// One spot-check observation's proprioception (no images).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// End-effector position, metres.
    pub ee_pos: [f64; 3],
    /// End-effector orientation, x, y, z, w.
    pub ee_quat: [f64; 4],
    /// End-effector linear velocity, m/s.
    pub ee_vel_lin: [f64; 3],
    /// End-effector angular velocity, rad/s.
    pub ee_vel_ang: [f64; 3],
    /// Finger opening in [0, 1].
    pub gripper: f64,
}

/// The observation object of docs/miner-protocol.md §3, members in the documented order.
#[derive(serde::Serialize)]
struct ObservationRef<'a> {
    rgb: Empty,
    depth: Empty,
    proprio: ProprioRef<'a>,
    cam_intrinsics: Empty,
    cam_extrinsics: Empty,
    extra: Empty,
}

#[derive(serde::Serialize)]
struct ProprioRef<'a> {
    ee_pos: &'a [f64; 3],
    ee_quat: &'a [f64; 4],
    ee_vel_lin: &'a [f64; 3],
    ee_vel_ang: &'a [f64; 3],
    gripper: [f64; 1],
}

#[derive(serde::Serialize)]
struct Empty {}

impl Sample {
    fn observation_ref(&self) -> ObservationRef<'_> {
        ObservationRef {
            rgb: Empty {},
            depth: Empty {},
            proprio: ProprioRef {
                ee_pos: &self.ee_pos,
                ee_quat: &self.ee_quat,
                ee_vel_lin: &self.ee_vel_lin,
                ee_vel_ang: &self.ee_vel_ang,
                gripper: [self.gripper],
            },
            cam_intrinsics: Empty {},
            cam_extrinsics: Empty {},
            extra: Empty {},
        }
    }

    /// The miner-protocol observation (rgb, depth, proprio, cam_intrinsics, cam_extrinsics, extra);
    /// a `Value` keeps its keys sorted, so use [`Sample::observation_json`] where order matters.
    pub fn observation(&self) -> serde_json::Value {
        serde_json::to_value(self.observation_ref()).expect("finite floats serialize")
    }

    /// The observation as JSON text with the six members (and proprio's keys) in protocol order.
    pub fn observation_json(&self) -> String {
        serde_json::to_string(&self.observation_ref()).expect("finite floats serialize")
    }
}

/// Samples from `source` with `seed` (the test seed for upstream, a fresh seed for realistic).
pub fn draw(source: SampleSource, seed: u64, count: usize) -> Vec<Sample> {
    match source {
        SampleSource::Upstream => upstream(seed, count),
        SampleSource::Realistic => realistic(seed, count),
    }
}

/// Upstream's synthetic samples from `default_rng(seed)`, drawn in its order per sample: ee_pos
/// 3 × U(−1, 1), ee_quat fixed [0, 0, 0, 1], ee_vel_lin and ee_vel_ang 3 × U(−0.5, 0.5), gripper U(0, 1).
pub fn upstream(seed: u64, count: usize) -> Vec<Sample> {
    let mut rng = NumpyRng::new(seed);
    (0..count)
        .map(|_| {
            let ee_pos = [(); 3].map(|_| rng.uniform(-1.0, 1.0));
            let ee_vel_lin = [(); 3].map(|_| rng.uniform(-0.5, 0.5));
            let ee_vel_ang = [(); 3].map(|_| rng.uniform(-0.5, 0.5));
            let gripper = rng.uniform(0.0, 1.0);
            Sample {
                ee_pos,
                ee_quat: [0.0, 0.0, 0.0, 1.0],
                ee_vel_lin,
                ee_vel_ang,
                gripper,
            }
        })
        .collect()
}

/// Plausible samples from `default_rng(seed)`: hand position uniform in
/// [`REALISTIC_POS_LOW`]..[`REALISTIC_POS_HIGH`]; orientation [`NOMINAL_HAND_QUAT`] turned by up to
/// [`REALISTIC_MAX_TILT`] about a uniform axis (unit norm); linear and angular velocities of uniform
/// direction and speeds up to [`REALISTIC_MAX_LIN_SPEED`] / [`REALISTIC_MAX_ANG_SPEED`]; gripper U(0, 1).
/// The same seed gives the same samples.
pub fn realistic(seed: u64, count: usize) -> Vec<Sample> {
    let mut rng = NumpyRng::new(seed);
    (0..count)
        .map(|_| {
            let ee_pos =
                [0, 1, 2].map(|i| rng.uniform(REALISTIC_POS_LOW[i], REALISTIC_POS_HIGH[i]));
            let axis = unit_vector(&mut rng);
            let angle = rng.uniform(0.0, REALISTIC_MAX_TILT);
            let ee_quat = normalize(quat_mul(NOMINAL_HAND_QUAT, axis_angle(axis, angle)));
            let lin_dir = unit_vector(&mut rng);
            let lin_speed = rng.uniform(0.0, REALISTIC_MAX_LIN_SPEED);
            let ang_dir = unit_vector(&mut rng);
            let ang_speed = rng.uniform(0.0, REALISTIC_MAX_ANG_SPEED);
            let gripper = rng.uniform(0.0, 1.0);
            Sample {
                ee_pos,
                ee_quat,
                ee_vel_lin: lin_dir.map(|c| c * lin_speed),
                ee_vel_ang: ang_dir.map(|c| c * ang_speed),
                gripper,
            }
        })
        .collect()
}

/// A direction uniform on the unit sphere (Archimedes: z uniform, azimuth uniform).
fn unit_vector(rng: &mut NumpyRng) -> [f64; 3] {
    let z = rng.uniform(-1.0, 1.0);
    let phi = rng.uniform(0.0, std::f64::consts::TAU);
    let r = (1.0 - z * z).max(0.0).sqrt();
    [r * phi.cos(), r * phi.sin(), z]
}

/// The rotation by `angle` about unit `axis`, x, y, z, w.
fn axis_angle(axis: [f64; 3], angle: f64) -> [f64; 4] {
    let (s, c) = (angle / 2.0).sin_cos();
    [axis[0] * s, axis[1] * s, axis[2] * s, c]
}

/// Hamilton product `a ⊗ b` of x, y, z, w quaternions.
fn quat_mul(a: [f64; 4], b: [f64; 4]) -> [f64; 4] {
    let [ax, ay, az, aw] = a;
    let [bx, by, bz, bw] = b;
    [
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
        aw * bw - ax * bx - ay * by - az * bz,
    ]
}

fn normalize(q: [f64; 4]) -> [f64; 4] {
    let n = q.iter().map(|c| c * c).sum::<f64>().sqrt();
    q.map(|c| c / n)
}

#[cfg(test)]
mod tests {
    use super::super::numpy::test_vectors::{f64_of, f64s, fixture};
    use super::*;

    fn arr<const N: usize>(v: &serde_json::Value) -> [f64; N] {
        f64s(v).try_into().unwrap()
    }

    #[test]
    fn test_seed_matches_upstream() {
        let doc = fixture();
        let cases = doc["test_seeds"].as_array().unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let uid = u16::try_from(case["uid"].as_u64().unwrap()).unwrap();
            let revision = case["revision"].as_str().unwrap();
            assert_eq!(test_seed(uid, revision), case["seed"].as_u64().unwrap());
        }
        assert!(test_seed(u16::MAX, &"f".repeat(40)) < 1 << 31);
    }

    #[test]
    fn upstream_samples_equal_numpy_exactly() {
        let doc = fixture();
        for case in doc["samples"].as_array().unwrap() {
            let uid = u16::try_from(case["uid"].as_u64().unwrap()).unwrap();
            let revision = case["revision"].as_str().unwrap();
            let seed = test_seed(uid, revision);
            assert_eq!(seed, case["seed"].as_u64().unwrap());
            let count = usize::try_from(case["count"].as_u64().unwrap()).unwrap();
            let expected: Vec<Sample> = case["proprio"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| Sample {
                    ee_pos: arr(&p["ee_pos"]),
                    ee_quat: arr(&p["ee_quat"]),
                    ee_vel_lin: arr(&p["ee_vel_lin"]),
                    ee_vel_ang: arr(&p["ee_vel_ang"]),
                    gripper: f64_of(&p["gripper"][0]),
                })
                .collect();
            assert_eq!(expected.len(), count);
            assert_eq!(upstream(seed, count), expected, "{uid}:{revision}");
            assert_eq!(draw(SampleSource::Upstream, seed, count), expected);
        }
    }

    #[test]
    fn upstream_prefix_is_stable() {
        // Drawing fewer samples gives a prefix of drawing more.
        let five = upstream(99, 5);
        assert_eq!(upstream(99, 3), five[..3]);
        assert!(upstream(99, 0).is_empty());
    }

    #[test]
    fn observation_has_the_six_members_in_order() {
        let sample = upstream(1, 1).remove(0);
        let value = sample.observation();
        let obj = value.as_object().unwrap();
        assert_eq!(obj.len(), 6);
        for empty in ["rgb", "depth", "cam_intrinsics", "cam_extrinsics", "extra"] {
            assert_eq!(obj[empty], serde_json::json!({}), "{empty}");
        }
        let proprio = obj["proprio"].as_object().unwrap();
        assert_eq!(proprio.len(), 5);
        assert_eq!(proprio["ee_quat"], serde_json::json!([0.0, 0.0, 0.0, 1.0]));
        assert_eq!(proprio["gripper"].as_array().unwrap().len(), 1);
        assert_eq!(proprio["ee_pos"].as_array().unwrap().len(), 3);

        let text = sample.observation_json();
        let positions: Vec<usize> = [
            "\"rgb\"",
            "\"depth\"",
            "\"proprio\"",
            "\"ee_pos\"",
            "\"ee_quat\"",
            "\"ee_vel_lin\"",
            "\"ee_vel_ang\"",
            "\"gripper\"",
            "\"cam_intrinsics\"",
            "\"cam_extrinsics\"",
            "\"extra\"",
        ]
        .iter()
        .map(|k| text.find(k).unwrap_or_else(|| panic!("{k} missing")))
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
        let f = |v: &[f64]| serde_json::to_string(v).unwrap();
        let expected = format!(
            "{{\"rgb\":{{}},\"depth\":{{}},\"proprio\":{{\"ee_pos\":{},\"ee_quat\":{},\
             \"ee_vel_lin\":{},\"ee_vel_ang\":{},\"gripper\":{}}},\"cam_intrinsics\":{{}},\
             \"cam_extrinsics\":{{}},\"extra\":{{}}}}",
            f(&sample.ee_pos),
            f(&sample.ee_quat),
            f(&sample.ee_vel_lin),
            f(&sample.ee_vel_ang),
            f(&[sample.gripper]),
        );
        assert_eq!(text, expected);
    }

    #[test]
    fn realistic_samples_are_plausible() {
        for seed in [0, 1, 7, 1 << 40, fresh_seed()] {
            let samples = realistic(seed, 200);
            assert_eq!(samples.len(), 200);
            for s in &samples {
                let norm = s.ee_quat.iter().map(|c| c * c).sum::<f64>().sqrt();
                assert!((norm - 1.0).abs() <= 1e-12, "quat norm {norm}");
                // Within the tilt of the nominal orientation: |<q, q0>| = cos(angle / 2).
                let dot: f64 = s
                    .ee_quat
                    .iter()
                    .zip(NOMINAL_HAND_QUAT)
                    .map(|(a, b)| a * b)
                    .sum();
                assert!(dot.abs() >= (REALISTIC_MAX_TILT / 2.0).cos() - 1e-12);
                for i in 0..3 {
                    assert!(
                        (REALISTIC_POS_LOW[i]..=REALISTIC_POS_HIGH[i]).contains(&s.ee_pos[i]),
                        "{:?}",
                        s.ee_pos
                    );
                }
                let speed = |v: [f64; 3]| v.iter().map(|c| c * c).sum::<f64>().sqrt();
                assert!(speed(s.ee_vel_lin) <= REALISTIC_MAX_LIN_SPEED + 1e-12);
                assert!(speed(s.ee_vel_ang) <= REALISTIC_MAX_ANG_SPEED + 1e-12);
                assert!((0.0..=1.0).contains(&s.gripper));
                assert!(s.observation_json().len() < 1024);
            }
        }
    }

    #[test]
    fn realistic_is_deterministic_per_seed() {
        assert_eq!(realistic(42, 10), realistic(42, 10));
        assert_eq!(draw(SampleSource::Realistic, 42, 10), realistic(42, 10));
        assert_ne!(realistic(42, 10), realistic(43, 10));
        assert_ne!(realistic(42, 1), upstream(42, 1));
    }

    #[test]
    fn fresh_seeds_fit_a_signed_column() {
        for _ in 0..1000 {
            assert!(fresh_seed() < 1 << 63);
        }
    }

    #[test]
    fn sample_source_parses_and_displays() {
        for source in [SampleSource::Upstream, SampleSource::Realistic] {
            assert_eq!(source.to_string().parse::<SampleSource>(), Ok(source));
            let json = serde_json::to_string(&source).unwrap();
            assert_eq!(json, format!("\"{source}\""));
            assert_eq!(serde_json::from_str::<SampleSource>(&json).unwrap(), source);
        }
        assert_eq!(SampleSource::default(), SampleSource::Upstream);
        let err = "Realistic".parse::<SampleSource>().unwrap_err();
        assert!(
            err.contains("'Realistic'") && err.contains("upstream"),
            "{err}"
        );
        assert!("".parse::<SampleSource>().is_err());
    }
}
