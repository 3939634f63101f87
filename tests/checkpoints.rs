//! Checkpoints: bit-exact round trips, resuming mid-sequence, and refusal of every corrupt,
//! truncated, foreign or future file.

mod common;

use common::{problem, rng};
use sata::checkpoint::{CheckpointError, FORMAT_VERSION, MAGIC, read_header};
use sata::{Attention, DType, KernelConfig, SataError, State, TensorRef};

/// A state that has absorbed a random sequence, and the attention that made it.
fn trained_state() -> (Attention<f32>, State<f32>) {
    let mut rng = rng("checkpoints");
    let p = problem(&mut rng, (2, 3), (12, 12), (5, 3, 4), 1.0, true);
    let attention = Attention::<f32>::new(p.config()).unwrap();
    let mut state = attention.new_state(2, 3).unwrap();
    let (q, k, v) = p.f32_inputs();
    attention
        .prefill(
            &mut state,
            TensorRef::query(&q, p.q_shape()).unwrap(),
            TensorRef::key(&k, p.k_shape()).unwrap(),
            TensorRef::value(&v, p.v_shape()).unwrap(),
        )
        .unwrap();
    (attention, state)
}

fn checkpoint_error(bytes: &[u8]) -> CheckpointError {
    match State::<f32>::from_bytes(bytes) {
        Err(SataError::Checkpoint(e)) => e,
        Err(other) => panic!("expected a checkpoint error, got {other}"),
        Ok(_) => panic!("a damaged checkpoint was accepted"),
    }
}

#[test]
fn round_trip_is_bit_exact_in_memory_and_on_disk() {
    let (_, state) = trained_state();
    let bytes = state.to_bytes().unwrap();
    let back = State::<f32>::from_bytes(&bytes).unwrap();
    assert_eq!(back, state);
    let bits = |s: &State<f32>| s.as_slice().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&back), bits(&state));
    assert_eq!(back.tokens(), 12);

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sata");
    state.save(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(State::<f32>::load(&path).unwrap(), state);
    let header = read_header(&bytes).unwrap();
    assert_eq!((header.batch, header.heads, header.tokens), (2, 3, 12));
    assert_eq!(header.dtype, DType::F32);
    assert_eq!(header.config, *state.config());
}

#[test]
fn resuming_from_a_loaded_checkpoint_equals_never_stopping() {
    let (attention, state) = trained_state();
    let resumed = State::<f32>::from_bytes(&state.to_bytes().unwrap()).unwrap();
    let q: Vec<f32> = (0..6 * 5).map(|i| (i as f32 * 0.37).sin() * 0.5).collect();
    let v: Vec<f32> = (0..6 * 3).map(|i| (i as f32 * 0.11).cos()).collect();
    let step = |mut s: State<f32>| {
        attention
            .decode(
                &mut s,
                TensorRef::query(&q, [2, 3, 1, 5]).unwrap(),
                TensorRef::key(&q, [2, 3, 1, 5]).unwrap(),
                TensorRef::value(&v, [2, 3, 1, 3]).unwrap(),
            )
            .unwrap()
            .output
            .data
    };
    assert_eq!(step(state), step(resumed));
}

#[test]
fn every_truncation_is_refused() {
    let (_, state) = trained_state();
    let bytes = state.to_bytes().unwrap();
    for len in 0..bytes.len() {
        let err = checkpoint_error(&bytes[..len]);
        assert!(
            matches!(
                err,
                CheckpointError::BadMagic | CheckpointError::Length { .. }
            ),
            "prefix of {len} bytes: {err}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(matches!(
        checkpoint_error(&longer),
        CheckpointError::Length { .. }
    ));
}

#[test]
fn every_single_byte_corruption_is_refused() {
    let (_, state) = trained_state();
    let bytes = state.to_bytes().unwrap();
    for at in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[at] ^= 0x5a;
        // Whatever field is hit, some check must fire: magic, version, length, checksum...
        let _ = checkpoint_error(&bad);
    }
}

#[test]
fn a_future_version_is_refused_by_name() {
    let (_, state) = trained_state();
    let mut bytes = state.to_bytes().unwrap();
    bytes[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let err = checkpoint_error(&bytes);
    assert!(
        matches!(err, CheckpointError::FutureVersion { found, supported } if found == FORMAT_VERSION + 1 && supported == FORMAT_VERSION)
    );
    assert!(err.to_string().contains("newer"));
    assert!(matches!(
        checkpoint_error(b"not a checkpoint at all"),
        CheckpointError::BadMagic
    ));
    assert_eq!(&bytes[..8], MAGIC);
}

#[test]
fn a_checkpoint_with_a_valid_checksum_but_bad_fields_is_refused() {
    let (_, state) = trained_state();
    let bytes = state.to_bytes().unwrap();
    let reseal = common::reseal;
    // d_k = 0.
    let mut b = bytes.clone();
    b[12..16].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        checkpoint_error(&reseal(b)),
        CheckpointError::Config(_)
    ));
    // A different d_v with the same word count is impossible, so the count check fires.
    let mut b = bytes.clone();
    b[16..20].copy_from_slice(&4u32.to_le_bytes());
    assert!(matches!(
        checkpoint_error(&reseal(b)),
        CheckpointError::WordCount { .. }
    ));
    // Unknown layout.
    let mut b = bytes.clone();
    b[33] = 9;
    assert!(matches!(
        checkpoint_error(&reseal(b)),
        CheckpointError::UnknownLayout(9)
    ));
    // A NaN in the data.
    let mut b = bytes.clone();
    b[60..64].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        checkpoint_error(&reseal(b)),
        CheckpointError::NonFinite(0)
    ));
    // Negative scale.
    let mut b = bytes;
    b[24..32].copy_from_slice(&(-1.0f64).to_le_bytes());
    assert!(matches!(
        checkpoint_error(&reseal(b)),
        CheckpointError::Config(_)
    ));
}

#[test]
fn dtype_and_config_mismatches_are_refused() {
    let (_, state) = trained_state();
    let bytes = state.to_bytes().unwrap();
    match State::<f64>::from_bytes(&bytes) {
        Err(SataError::Checkpoint(CheckpointError::DType { found, expected })) => {
            assert_eq!((found, expected), (DType::F32, DType::F64));
        }
        other => panic!("expected a dtype error, got {other:?}"),
    }
    // A valid checkpoint of another config loads, but an attention of this config refuses it.
    let other = Attention::<f32>::new(KernelConfig::new(5, 3, 3).unwrap()).unwrap();
    let mut loaded = State::<f32>::from_bytes(&bytes).unwrap();
    let x = vec![0.1f32; 6 * 5];
    let err = other
        .absorb(
            &mut loaded,
            TensorRef::key(&x, [2, 3, 1, 5]).unwrap(),
            TensorRef::value(&x[..18], [2, 3, 1, 3]).unwrap(),
        )
        .unwrap_err();
    assert!(matches!(err, SataError::StateConfigMismatch { .. }));
}

#[test]
fn a_failed_save_leaves_the_previous_checkpoint_intact() {
    let (attention, state) = trained_state();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sata");
    state.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();
    // A poisoned state refuses to save; the file on disk is untouched.
    let mut poisoned = state.clone();
    let huge = vec![1e30f32; 6 * 5];
    let _ = attention.absorb(
        &mut poisoned,
        TensorRef::key(&huge, [2, 3, 1, 5]).unwrap(),
        TensorRef::value(&huge[..18], [2, 3, 1, 3]).unwrap(),
    );
    assert!(poisoned.is_poisoned());
    assert!(poisoned.save(&path).is_err());
    assert_eq!(std::fs::read(&path).unwrap(), before);
    // A successful save replaces the file and leaves no temporary behind.
    let mut newer = state.clone();
    newer.reset();
    newer.save(&path).unwrap();
    assert_eq!(State::<f32>::load(&path).unwrap().tokens(), 0);
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(files.len(), 1, "temporary files left behind: {files:?}");
    // Saving into a missing directory is an error naming the path.
    let err = state.save(dir.path().join("missing/s.sata")).unwrap_err();
    assert!(err.to_string().contains("missing"));
}

/// A file in the older row layout (code 1, `[S | Z]` rows per feature) loads into the same
/// state as its planar (code 2) twin: the loader converts, word by word.
#[test]
fn row_layout_files_are_converted_on_load() {
    let (_, state) = trained_state();
    let planar = state.to_bytes().unwrap();
    assert_eq!(planar[33], sata::checkpoint::LAYOUT_PLANAR);
    let c = *state.config();
    let (m, dv) = (c.features(), c.d_v());
    // Rewrite the data section as rows, written out from the layout's definition.
    let mut rows = planar[..60].to_vec();
    rows[33] = sata::checkpoint::LAYOUT_FEATURE_ROWS;
    for lane in state.as_slice().chunks_exact(m * (dv + 1)) {
        let (s, z) = lane.split_at(m * dv);
        for j in 0..m {
            for x in s[j * dv..(j + 1) * dv].iter().chain([&z[j]]) {
                rows.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    // The same key-norm field (format 2), then a checksum.
    rows.extend_from_slice(&planar[planar.len() - 12..planar.len() - 4]);
    rows.extend_from_slice(&[0; 4]);
    let rows = common::reseal(rows);
    assert_eq!(rows.len(), planar.len());
    assert_ne!(
        rows, planar,
        "the two layouts must differ for this test to mean anything"
    );
    assert_eq!(State::<f32>::from_bytes(&rows).unwrap(), state);
}

#[test]
fn format_one_checkpoints_still_load_with_unknown_key_norms() {
    // A format-2 file rewritten as format 1: no key-norm field, version 1, checksum resealed.
    let config = KernelConfig::new(3, 2, 3).unwrap();
    let mut state = State::<f32>::new(config, 1, 2).unwrap();
    let a = sata::Attention::<f32>::new(config).unwrap();
    let k: Vec<f32> = (0..2 * 5 * 3).map(|i| (i as f32 * 0.37).sin()).collect();
    let v: Vec<f32> = (0..2 * 5 * 2).map(|i| (i as f32 * 0.11).cos()).collect();
    a.absorb(
        &mut state,
        TensorRef::key(&k, [1, 2, 5, 3]).unwrap(),
        TensorRef::value(&v, [1, 2, 5, 2]).unwrap(),
    )
    .unwrap();
    assert!(state.max_key_norm().unwrap() > 0.0);
    let v2 = state.to_bytes().unwrap();
    let mut v1 = v2[..v2.len() - 12].to_vec();
    v1[8..12].copy_from_slice(&1u32.to_le_bytes());
    v1.extend_from_slice(&[0; 4]);
    let v1 = common::reseal(v1);
    let old = State::<f32>::from_bytes(&v1).unwrap();
    assert_eq!(old.as_slice(), state.as_slice());
    assert_eq!(old.tokens(), 5);
    assert_eq!(old.max_key_norm(), None);
    // Queries on it answer as before, without a logit bound.
    let q: Vec<f32> = k[..6].to_vec();
    let y = a
        .query(&old, TensorRef::query(&q, [1, 2, 1, 3]).unwrap())
        .unwrap();
    assert_eq!(y.stats.logit_bound, None);
    // A key absorbed now does not make the bound known: older keys may be larger.
    let mut old = old;
    a.absorb(
        &mut old,
        TensorRef::key(&k[..6], [1, 2, 1, 3]).unwrap(),
        TensorRef::value(&v[..4], [1, 2, 1, 2]).unwrap(),
    )
    .unwrap();
    assert_eq!(old.max_key_norm(), None);
}
