//! NumPy's `numpy.random.default_rng(seed)` reproduced bit for bit: `SeedSequence` → `PCG64`, and the
//! double conversion behind `Generator.random()` and `Generator.uniform()`.
//!
//! Verification (docs/verification.md §2.5) draws upstream's synthetic spot-check observations from
//! `default_rng(test_seed)`, so the executor must produce the very same doubles as NumPy. It is
//! written by hand because no crate reproduces the whole chain: `rand_pcg`'s `Lcg128Xsl64` has the
//! same LCG and XSL-RR output but neither NumPy's seeding, which hashes the seed through
//! `SeedSequence` (a pool of four 32-bit words mixed with NumPy's own hash constants) into the
//! 128-bit state and increment, nor its order (NumPy steps the state before each output).
//! The tests compare against vectors written by NumPy itself
//! (`tests/fixtures/verification/make_numpy_vectors.py`).

/// `SeedSequence` hash constants (numpy/random/bit_generator.pyx).
const INIT_A: u32 = 0x43b0_d7e5;
const MULT_A: u32 = 0x931e_8875;
const INIT_B: u32 = 0x8b51_f9dd;
const MULT_B: u32 = 0x58f3_8ded;
const MIX_MULT_L: u32 = 0xca01_f9dd;
const MIX_MULT_R: u32 = 0x4973_f715;
const XSHIFT: u32 = 16;
/// `SeedSequence.pool_size` default.
const POOL_SIZE: usize = 4;

/// The 128-bit LCG multiplier of PCG64 (`PCG_DEFAULT_MULTIPLIER_128`).
const PCG_MULTIPLIER: u128 = 0x2360_ED05_1FC6_5DA4_4385_DF64_9FCC_F645;

/// `numpy.random.default_rng(seed)` for a non-negative integer seed: PCG64 seeded through
/// `SeedSequence(seed)`.
#[derive(Debug, Clone)]
pub struct NumpyRng {
    state: u128,
    inc: u128,
}

impl NumpyRng {
    /// The generator `numpy.random.default_rng(seed)` returns.
    pub fn new(seed: u64) -> Self {
        let words = seed_sequence_state(seed);
        let initstate = (u128::from(words[0]) << 64) | u128::from(words[1]);
        let initseq = (u128::from(words[2]) << 64) | u128::from(words[3]);
        // pcg_setseq_128_srandom_r.
        let mut rng = NumpyRng {
            state: 0,
            inc: (initseq << 1) | 1,
        };
        rng.step();
        rng.state = rng.state.wrapping_add(initstate);
        rng.step();
        rng
    }

    fn step(&mut self) {
        self.state = self
            .state
            .wrapping_mul(PCG_MULTIPLIER)
            .wrapping_add(self.inc);
    }

    /// The next raw output, as `bit_generator.random_raw()`: step, then XSL-RR of the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.step();
        let high = (self.state >> 64) as u64;
        let low = self.state as u64;
        (high ^ low).rotate_right((self.state >> 122) as u32)
    }

    /// The next double in [0, 1), as `Generator.random()`: the top 53 bits times 2⁻⁵³.
    pub fn random(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// The next draw of `Generator.uniform(low, high)`: `low + (high − low) · random()`.
    pub fn uniform(&mut self, low: f64, high: f64) -> f64 {
        let range = high - low;
        low + range * self.random()
    }
}

/// `SeedSequence(seed).generate_state(4, np.uint64)` on a little-endian machine.
fn seed_sequence_state(seed: u64) -> [u64; 4] {
    // The entropy as 32-bit words, least significant first; 0 is one word.
    let entropy: Vec<u32> = if seed >> 32 == 0 {
        vec![seed as u32]
    } else {
        vec![seed as u32, (seed >> 32) as u32]
    };
    let pool = mix_entropy(&entropy);

    let mut hash_const = INIT_B;
    let mut words = [0u32; 8];
    for (i, word) in words.iter_mut().enumerate() {
        let mut value = pool[i % POOL_SIZE];
        value ^= hash_const;
        hash_const = hash_const.wrapping_mul(MULT_B);
        value = value.wrapping_mul(hash_const);
        value ^= value >> XSHIFT;
        *word = value;
    }
    let mut out = [0u64; 4];
    for (i, pair) in words.chunks_exact(2).enumerate() {
        out[i] = u64::from(pair[0]) | (u64::from(pair[1]) << 32);
    }
    out
}

/// `SeedSequence.mix_entropy` into a pool of [`POOL_SIZE`] words.
fn mix_entropy(entropy: &[u32]) -> [u32; POOL_SIZE] {
    let mut hash_const = INIT_A;
    let mut hashmix = |value: u32| -> u32 {
        let mut value = value ^ hash_const;
        hash_const = hash_const.wrapping_mul(MULT_A);
        value = value.wrapping_mul(hash_const);
        value ^ (value >> XSHIFT)
    };
    let mix = |x: u32, y: u32| -> u32 {
        let result = MIX_MULT_L
            .wrapping_mul(x)
            .wrapping_sub(MIX_MULT_R.wrapping_mul(y));
        result ^ (result >> XSHIFT)
    };

    let mut pool = [0u32; POOL_SIZE];
    for (i, slot) in pool.iter_mut().enumerate() {
        *slot = hashmix(entropy.get(i).copied().unwrap_or(0));
    }
    for i_src in 0..POOL_SIZE {
        for i_dst in 0..POOL_SIZE {
            if i_src != i_dst {
                let h = hashmix(pool[i_src]);
                pool[i_dst] = mix(pool[i_dst], h);
            }
        }
    }
    // Words beyond the pool (never for a 64-bit seed, which has at most two).
    for &word in entropy.iter().skip(POOL_SIZE) {
        for slot in pool.iter_mut() {
            let h = hashmix(word);
            *slot = mix(*slot, h);
        }
    }
    pool
}

/// The NumPy reference vectors (tests/fixtures/verification/numpy_vectors.json), shared by the
/// tests of the verification modules.
#[cfg(test)]
pub(crate) mod test_vectors {
    /// The parsed fixture.
    pub(crate) fn fixture() -> serde_json::Value {
        serde_json::from_str(include_str!(
            "../../tests/fixtures/verification/numpy_vectors.json"
        ))
        .unwrap()
    }

    /// A fixture float: a string holding Python's repr, parsed exactly (serde_json's default number
    /// parser may be one ulp off, hence strings).
    pub(crate) fn f64_of(v: &serde_json::Value) -> f64 {
        v.as_str()
            .unwrap_or_else(|| panic!("fixture float is not a string: {v}"))
            .parse()
            .unwrap()
    }

    /// A fixture array of floats.
    pub(crate) fn f64s(v: &serde_json::Value) -> Vec<f64> {
        v.as_array().unwrap().iter().map(f64_of).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::test_vectors::{f64s, fixture};
    use super::*;

    #[test]
    fn raw_outputs_match_numpy() {
        let doc = fixture();
        let cases = doc["rng"].as_array().unwrap();
        assert!(cases.len() >= 10);
        for case in cases {
            let seed = case["seed"].as_u64().unwrap();
            let expected: Vec<u64> = case["raw"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let mut rng = NumpyRng::new(seed);
            let got: Vec<u64> = (0..expected.len()).map(|_| rng.next_u64()).collect();
            assert_eq!(got, expected, "seed {seed}");
        }
    }

    #[test]
    fn random_and_uniform_match_numpy_exactly() {
        let doc = fixture();
        for case in doc["rng"].as_array().unwrap() {
            let seed = case["seed"].as_u64().unwrap();
            let expected = f64s(&case["random"]);
            let mut rng = NumpyRng::new(seed);
            let got: Vec<f64> = (0..expected.len()).map(|_| rng.random()).collect();
            assert_eq!(got, expected, "random, seed {seed}");

            let expected = f64s(&case["uniform"]);
            let mut rng = NumpyRng::new(seed);
            let got: Vec<f64> = (0..expected.len())
                .map(|_| rng.uniform(-1.0, 1.0))
                .collect();
            assert_eq!(got, expected, "uniform, seed {seed}");
        }
    }

    #[test]
    fn seed_zero_first_double_is_numpys() {
        // The well-known first value of np.random.default_rng(0).random().
        assert_eq!(NumpyRng::new(0).random(), 0.6369616873214543);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut rng = NumpyRng::new(12345);
        for _ in 0..10_000 {
            let x = rng.random();
            assert!((0.0..1.0).contains(&x));
            let u = rng.uniform(-0.5, 0.5);
            assert!((-0.5..0.5).contains(&u));
        }
    }
}
