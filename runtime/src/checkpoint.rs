//! Saving and loading a [`State`] in a versioned, checksummed binary format.
//!
//! Format version 2, all integers and floats little-endian (version 1, still read, has no
//! key-norm field):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SATASTAT` |
//! | 8 | 4 | format version (`u32`, = 2) |
//! | 12 | 4 | `d_k` (`u32`) |
//! | 16 | 4 | `d_v` (`u32`) |
//! | 20 | 4 | terms `P` (`u32`) |
//! | 24 | 8 | scale `c` (`f64`) |
//! | 32 | 1 | element type: 1 = f32, 2 = f64 |
//! | 33 | 1 | layout: 2 = per (batch, head) in `[batch][heads]` order, `S` (`[feature][d_v]`) then `Z` (`[feature]`); 3 = the same blocks per (batch, head), each lane followed by their Kahan compensation in the same shape (`Accumulation::Compensated`, twice the words); 1 = per (batch, head) `[feature][d_v + 1]`, rows `[S \| Z]` (read and converted, no longer written). Features in lexicographic order, order 0 first, unweighted |
//! | 34 | 2 | reserved, 0 |
//! | 36 | 4 | batch (`u32`) |
//! | 40 | 4 | heads (`u32`) |
//! | 44 | 8 | tokens absorbed (`u64`) |
//! | 52 | 8 | number of data words (`u64`) |
//! | 60 | words x 4 or 8 | the state |
//! | end - 12 | 8 | largest key norm absorbed (`f64`; NaN: unknown), for `CallStats::logit_bound` (format 2) |
//! | end - 4 | 4 | CRC-32 (IEEE) of every byte before it |
//!
//! Loading checks, in this order: magic, version (a newer version is refused by name), exact
//! length, checksum, configuration, element type, layout, word count, finiteness. Nothing is
//! accepted on a partial match. Saving writes a temporary file in the target's directory,
//! syncs it and renames it over the target, so a crash never leaves a torn checkpoint.

use std::io::Write;
use std::path::Path;

use sata_codegen::KernelConfig;

use crate::element::{DType, Element};
pub use crate::error::CheckpointError;
use crate::error::SataError;
use crate::state::{Accumulation, State};

/// First eight bytes of every checkpoint.
pub const MAGIC: &[u8; 8] = b"SATASTAT";
/// The format version this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 2;
/// Layout 1: per (batch, head), `m` rows of `[S | Z]` (`d_v + 1` words each). Read only.
pub const LAYOUT_FEATURE_ROWS: u8 = 1;
/// Layout 2, the one [`State`] uses and this build writes: per (batch, head), `S` (`m x d_v`)
/// then `Z` (`m`).
pub const LAYOUT_PLANAR: u8 = 2;
/// Layout code of a [`Accumulation::Compensated`] state: per lane the layout-2 blocks,
/// then their Kahan compensation in the same layout (twice the words).
pub const LAYOUT_COMPENSATED: u8 = 3;

const HEADER_LEN: usize = 60;
const CHECKSUM_LEN: usize = 4;

/// The header of a checkpoint: everything but the data.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckpointHeader {
    pub config: KernelConfig,
    pub dtype: DType,
    pub batch: usize,
    pub heads: usize,
    pub tokens: u64,
    /// [`LAYOUT_PLANAR`], [`LAYOUT_COMPENSATED`] or [`LAYOUT_FEATURE_ROWS`].
    pub layout: u8,
    /// The largest key norm absorbed (format 2; `None` in format 1, or if not recorded).
    pub max_key_norm: Option<f64>,
}

/// Bytes between the data and the checksum: format 2 records the largest key norm.
fn trailer_len(version: u32) -> usize {
    if version >= 2 { 8 } else { 0 }
}

/// Little-endian field reader over a buffer whose length was already checked.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.0[at..at + 4].try_into().expect("4 bytes"))
    }
    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }
    fn f64(&self, at: usize) -> f64 {
        f64::from_le_bytes(self.0[at..at + 8].try_into().expect("8 bytes"))
    }
}

fn dtype_code(dtype: DType) -> u8 {
    match dtype {
        DType::F32 => 1,
        DType::F64 => 2,
    }
}

/// Reads and fully verifies the header and checksum of `bytes` (the data is checked for length
/// and checksum, not decoded).
pub fn read_header(bytes: &[u8]) -> Result<CheckpointHeader, CheckpointError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(CheckpointError::BadMagic);
    }
    if bytes.len() < HEADER_LEN + CHECKSUM_LEN {
        return Err(CheckpointError::Length {
            expected: (HEADER_LEN + CHECKSUM_LEN) as u128,
            found: bytes.len(),
        });
    }
    let f = Fields(bytes);
    let version = f.u32(8);
    match version {
        0 => return Err(CheckpointError::ZeroVersion),
        v if v > FORMAT_VERSION => {
            return Err(CheckpointError::FutureVersion {
                found: v,
                supported: FORMAT_VERSION,
            });
        }
        _ => {}
    }
    let trailer = trailer_len(version);
    let dtype = match bytes[32] {
        1 => DType::F32,
        2 => DType::F64,
        code => return Err(CheckpointError::UnknownDType(code)),
    };
    let words = f.u64(52);
    let expected = HEADER_LEN as u128
        + words as u128 * dtype.size() as u128
        + trailer as u128
        + CHECKSUM_LEN as u128;
    if expected != bytes.len() as u128 {
        return Err(CheckpointError::Length {
            expected,
            found: bytes.len(),
        });
    }
    let body = bytes.len() - CHECKSUM_LEN;
    let stored = Fields(&bytes[body..]).u32(0);
    let computed = crc32fast::hash(&bytes[..body]);
    if stored != computed {
        return Err(CheckpointError::Checksum { stored, computed });
    }
    let config = KernelConfig::new(f.u32(12) as usize, f.u32(16) as usize, f.u32(20) as usize)?
        .with_scale(f.f64(24))?;
    let layout = bytes[33];
    let words_per_sum = match layout {
        LAYOUT_PLANAR | LAYOUT_FEATURE_ROWS => 1,
        LAYOUT_COMPENSATED => 2,
        _ => return Err(CheckpointError::UnknownLayout(layout)),
    };
    let (batch, heads) = (f.u32(36), f.u32(40));
    let per_head = config.state_words_per_head() * words_per_sum;
    let expected_words = batch as u128 * heads as u128 * per_head as u128;
    if expected_words != words as u128 || expected_words == 0 {
        return Err(CheckpointError::WordCount {
            found: words,
            batch,
            heads,
            per_head,
            expected: expected_words,
        });
    }
    let max_key_norm = match trailer {
        0 => None,
        _ => Some(Fields(&bytes[body - trailer..]).f64(0)).filter(|n| n.is_finite() && *n >= 0.0),
    };
    Ok(CheckpointHeader {
        config,
        dtype,
        batch: batch as usize,
        heads: heads as usize,
        tokens: f.u64(44),
        layout,
        max_key_norm,
    })
}

/// Layout 1 to layout 2: each lane's `[S | Z]` rows become an `S` block and a `Z` block.
fn rows_to_planar<T: Element>(data: &[T], config: &KernelConfig) -> Vec<T> {
    let (m, row) = (config.features(), config.row_len());
    let mut out = Vec::with_capacity(data.len());
    for lane in data.chunks_exact(m * row) {
        lane.chunks_exact(row)
            .for_each(|r| out.extend_from_slice(&r[..row - 1]));
        out.extend(lane.chunks_exact(row).map(|r| r[row - 1]));
    }
    out
}

impl<T: Element> State<T> {
    /// The state as a checkpoint (format version [`FORMAT_VERSION`]).
    pub fn to_bytes(&self) -> Result<Vec<u8>, SataError> {
        if self.is_poisoned() {
            return Err(CheckpointError::Poisoned.into());
        }
        let c = self.config();
        // d_k, d_v and P are validated far below u32::MAX; batch and heads are not bounded
        // by the configuration, so they are checked.
        let (Ok(batch), Ok(heads)) = (u32::try_from(self.batch()), u32::try_from(self.heads()))
        else {
            return Err(CheckpointError::TooManyLanes {
                batch: self.batch(),
                heads: self.heads(),
            }
            .into());
        };
        let words = self.as_slice();
        let mut out =
            Vec::with_capacity(HEADER_LEN + words.len() * T::DTYPE.size() + 8 + CHECKSUM_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        for dim in [c.d_k(), c.d_v(), c.terms()] {
            out.extend_from_slice(&(dim as u32).to_le_bytes());
        }
        out.extend_from_slice(&c.scale().to_le_bytes());
        let layout = match self.accumulation() {
            Accumulation::Plain => LAYOUT_PLANAR,
            Accumulation::Compensated => LAYOUT_COMPENSATED,
        };
        out.extend_from_slice(&[dtype_code(T::DTYPE), layout, 0, 0]);
        out.extend_from_slice(&batch.to_le_bytes());
        out.extend_from_slice(&heads.to_le_bytes());
        out.extend_from_slice(&self.tokens().to_le_bytes());
        out.extend_from_slice(&(words.len() as u64).to_le_bytes());
        debug_assert_eq!(out.len(), HEADER_LEN);
        for &x in words.iter() {
            x.write_le(&mut out);
        }
        // NaN: not known (the state came from a format-1 checkpoint).
        out.extend_from_slice(&self.max_key_norm().unwrap_or(f64::NAN).to_le_bytes());
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Reads a checkpoint written by [`State::to_bytes`]; every check listed in the
    /// [module documentation](crate::checkpoint) must pass.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SataError> {
        let header = read_header(bytes)?;
        if header.dtype != T::DTYPE {
            return Err(CheckpointError::DType {
                found: header.dtype,
                expected: T::DTYPE,
            }
            .into());
        }
        let size = T::DTYPE.size();
        let trailer = trailer_len(Fields(bytes).u32(8));
        let mut data: Vec<T> = bytes[HEADER_LEN..bytes.len() - CHECKSUM_LEN - trailer]
            .chunks_exact(size)
            .map(T::read_le)
            .collect();
        if let Some(i) = data.iter().position(|x| !x.is_finite()) {
            return Err(CheckpointError::NonFinite(i).into());
        }
        if header.layout == LAYOUT_FEATURE_ROWS {
            data = rows_to_planar(&data, &header.config);
        }
        let accumulation = match header.layout {
            LAYOUT_COMPENSATED => Accumulation::Compensated,
            _ => Accumulation::Plain,
        };
        let mut state = State::from_parts(
            header.config,
            header.batch,
            header.heads,
            header.tokens,
            accumulation,
            data,
        )?;
        state.header_mut().max_key_norm = header.max_key_norm;
        Ok(state)
    }

    /// Writes the checkpoint to `path` atomically: a temporary file in the same directory is
    /// written, synced and renamed over `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), SataError> {
        let path = path.as_ref();
        let bytes = self.to_bytes()?;
        let io = |source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
        tmp.write_all(&bytes).map_err(io)?;
        tmp.as_file().sync_all().map_err(io)?;
        tmp.persist(path).map_err(|e| io(e.error))?;
        Ok(())
    }

    /// Reads a checkpoint file written by [`State::save`].
    pub fn load(path: impl AsRef<Path>) -> Result<Self, SataError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(&bytes)
    }
}
