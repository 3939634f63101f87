//! Bad input tried systematically, with a fixed budget so it runs in CI: random and mutated
//! checkpoints through the loader, and random configurations through `KernelConfig`. Every case
//! must end in a value that satisfies the type's invariants or in a typed error; a panic, an
//! out-of-bounds access or a huge allocation fails the test. (The `.npy` reader is fuzzed the
//! same way by the unit tests in `src/cli/npy.rs`.)

mod common;

use common::reseal;
use proptest::prelude::*;
use sata::checkpoint::{MAGIC, read_header};
use sata::{Attention, KernelConfig, State, TensorRef};

/// A small trained state's checkpoint (d_k = 3, d_v = 2, P = 3, 2 heads).
fn valid_checkpoint() -> Vec<u8> {
    let config = KernelConfig::new(3, 2, 3).unwrap();
    let attention = Attention::<f32>::new(config).unwrap();
    let mut state = attention.new_state(1, 2).unwrap();
    let x: Vec<f32> = (0..2 * 5 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    let v: Vec<f32> = (0..2 * 5 * 2).map(|i| (i as f32 * 0.91).cos()).collect();
    attention
        .absorb(
            &mut state,
            TensorRef::key(&x, [1, 2, 5, 3]).unwrap(),
            TensorRef::value(&v, [1, 2, 5, 2]).unwrap(),
        )
        .unwrap();
    state.to_bytes().unwrap()
}

/// Loading either fails with a typed error or gives a state whose parts agree.
fn load_and_check(bytes: &[u8]) {
    // The header reader alone must not panic either.
    let _ = read_header(bytes);
    let loaded = [
        State::<f32>::from_bytes(bytes)
            .map(|s| (s.batch(), s.heads(), *s.config(), s.as_slice().len())),
        State::<f64>::from_bytes(bytes)
            .map(|s| (s.batch(), s.heads(), *s.config(), s.as_slice().len())),
    ];
    for (batch, heads, config, words) in loaded.into_iter().flatten() {
        assert_eq!(words, batch * heads * config.state_words_per_head());
    }
}

/// Overwrites of up to 8 bytes anywhere, with or without a recomputed checksum.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let base = valid_checkpoint();
    let len = base.len();
    (
        prop::collection::vec((0..len, any::<u8>()), 1..8),
        any::<bool>(),
        prop::option::of(0..len + 16),
    )
        .prop_map(move |(edits, seal, cut)| {
            let mut b = base.clone();
            for (at, byte) in edits {
                b[at] = byte;
            }
            if let Some(cut) = cut {
                b.resize(cut, 0);
            }
            if seal { reseal(b) } else { b }
        })
}

/// Header fields drawn at random (sizes, counts, dtype, layout), data whose length matches the
/// declared word count (or not), and a valid checksum: the loader must check each field
/// before trusting it, not only the checksum.
fn forged() -> impl Strategy<Value = Vec<u8>> {
    (
        (0u32..3, 0u32..6, 0u32..6, 0u32..5),
        (
            prop_oneof![Just(1.5f64), Just(-1.0), Just(f64::NAN), any::<f64>()],
            0u8..4,
            0u8..4,
        ),
        (0u32..3, 0u32..3, any::<u64>(), 0u64..200),
        (
            any::<bool>(),
            0usize..64,
            prop_oneof![Just(0.25f32), Just(f32::INFINITY)],
        ),
    )
        .prop_map(
            |(
                (version, dk, dv, p),
                (scale, dtype, layout),
                (batch, heads, tokens, words),
                (fit, extra, fill),
            )| {
                let mut b = MAGIC.to_vec();
                b.extend(version.to_le_bytes());
                for x in [dk, dv, p] {
                    b.extend(x.to_le_bytes());
                }
                b.extend(scale.to_le_bytes());
                b.extend([dtype, layout, 0, 0]);
                b.extend(batch.to_le_bytes());
                b.extend(heads.to_le_bytes());
                b.extend(tokens.to_le_bytes());
                b.extend(words.to_le_bytes());
                let size = if dtype == 2 { 8 } else { 4 };
                let bytes = if fit { words as usize * size } else { extra };
                let word: Vec<u8> = if size == 8 {
                    f64::from(fill).to_le_bytes().to_vec()
                } else {
                    fill.to_le_bytes().to_vec()
                };
                b.extend(word.iter().cycle().take(bytes));
                b.extend([0; 4]);
                reseal(b)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..256), magic in any::<bool>()) {
        let mut b = if magic { MAGIC.to_vec() } else { vec![] };
        b.extend(bytes);
        load_and_check(&b);
    }

    #[test]
    fn mutated_checkpoints_load_or_are_refused(bytes in mutated()) {
        load_and_check(&bytes);
    }

    #[test]
    fn forged_headers_with_valid_checksums_load_or_are_refused(bytes in forged()) {
        load_and_check(&bytes);
    }

    #[test]
    fn any_configuration_is_valid_or_a_typed_error(
        d_k in prop_oneof![0usize..40, any::<usize>()],
        d_v in prop_oneof![0usize..40, any::<usize>()],
        terms in prop_oneof![0usize..30, any::<usize>()],
        scale in prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(0.0), Just(-1.0)],
    ) {
        if let Ok(config) = KernelConfig::new(d_k, d_v, terms) {
            // A valid configuration's sizes are consistent and within the documented limits.
            prop_assert!(config.features() <= sata::codegen::MAX_FEATURES);
            prop_assert!(config.state_words_per_head() <= sata::codegen::MAX_STATE_WORDS);
            prop_assert_eq!(config.state_words_per_head(), config.features() * (d_v + 1));
            match config.with_scale(scale) {
                Ok(scaled) => prop_assert!(scale.is_finite() && scale > 0.0 && scaled.scale() == scale),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}
