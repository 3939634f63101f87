//! What `attend` and `backward` read alike: arrays of one dtype, their `[..., tokens, dim]`
//! layout, and a `--state-in` checked against the call.

use std::path::Path;

use crate::checkpoint::read_header;
use crate::{Attention, BackendRequest, Element, KernelConfig, State};

use super::npy::{self, Array};

/// Arrays read for one command, all of the same dtype, each as `(shape, data)`.
pub enum Arrays {
    F32(Vec<(Vec<usize>, Vec<f32>)>),
    F64(Vec<(Vec<usize>, Vec<f64>)>),
}

/// Reads the `.npy` files of `inputs` (`(flag, path)`), which must share one dtype.
pub fn read_same_dtype(inputs: &[(&str, &Path)]) -> Result<Arrays, String> {
    let arrays = inputs
        .iter()
        .map(|(_, path)| npy::read(path))
        .collect::<Result<Vec<Array>, String>>()?;
    if arrays.iter().all(|a| matches!(a, Array::F32 { .. })) {
        return Ok(Arrays::F32(
            arrays
                .into_iter()
                .filter_map(|a| match a {
                    Array::F32 { shape, data } => Some((shape, data)),
                    Array::F64 { .. } => None,
                })
                .collect(),
        ));
    }
    if arrays.iter().all(|a| matches!(a, Array::F64 { .. })) {
        return Ok(Arrays::F64(
            arrays
                .into_iter()
                .filter_map(|a| match a {
                    Array::F64 { shape, data } => Some((shape, data)),
                    Array::F32 { .. } => None,
                })
                .collect(),
        ));
    }
    let flags: Vec<String> = inputs.iter().map(|(flag, _)| format!("--{flag}")).collect();
    let dtypes: Vec<&str> = arrays.iter().map(Array::dtype_name).collect();
    Err(format!(
        "{} must share one dtype; got {}",
        flags.join(", "),
        dtypes.join(", ")
    ))
}

/// The leading dimensions of an `[..., tokens, dim]` array folded into `(batch, heads)`: the
/// last leading dimension is the heads, everything before it the batch.
pub struct Layout {
    pub leading: Vec<usize>,
    pub batch: usize,
    pub heads: usize,
}

pub fn split(name: &str, shape: &[usize]) -> Result<(Layout, usize, usize), String> {
    let [leading @ .., tokens, dim] = shape else {
        return Err(format!(
            "--{name} has shape {shape:?}; expected at least 2 dimensions [..., tokens, dim]"
        ));
    };
    let (heads, batch) = match leading.split_last() {
        None => (1, 1),
        Some((&h, rest)) => (h, rest.iter().product()),
    };
    Ok((
        Layout {
            leading: leading.to_vec(),
            batch,
            heads,
        },
        *tokens,
        *dim,
    ))
}

/// Fails unless every array of `others` has the leading dimensions of `first` (`--q`).
pub fn same_leading(first: &Layout, others: &[(&str, &Layout)]) -> Result<(), String> {
    for (name, other) in others {
        if other.leading != first.leading {
            return Err(format!(
                "--{name} has leading dimensions {:?} but --q has {:?}; they must be identical",
                other.leading, first.leading
            ));
        }
    }
    Ok(())
}

/// The configuration of the flags `--terms` and `--scale` for heads of `d_k`, `d_v`.
pub fn config(
    d_k: usize,
    d_v: usize,
    terms: usize,
    scale: Option<f64>,
) -> Result<KernelConfig, String> {
    let config = KernelConfig::new(d_k, d_v, terms).map_err(|e| e.to_string())?;
    match scale {
        Some(scale) => config.with_scale(scale).map_err(|e| e.to_string()),
        None => Ok(config),
    }
}

/// Loads `--state-in`, explaining a mismatch with this call in terms of the CLI's flags.
pub fn load_state<T: Element>(path: &Path, config: &KernelConfig) -> Result<State<T>, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("--state-in {shown}: {e}"))?;
    let header = read_header(&bytes).map_err(|e| format!("--state-in {shown}: {e}"))?;
    if header.config != *config {
        return Err(format!(
            "--state-in {shown} was saved for {} (scale {}), but this call is {} (scale {})",
            header.config,
            header.config.scale(),
            config,
            config.scale()
        ));
    }
    if header.dtype != T::DTYPE {
        return Err(format!(
            "--state-in {shown} holds a {} state but the inputs are {}",
            header.dtype,
            T::DTYPE
        ));
    }
    State::from_bytes(&bytes).map_err(|e| format!("--state-in {shown}: {e}"))
}

/// The attention `request` names for `config`, saying on stderr when an explicitly requested
/// backend fell back to another.
pub fn open_attention<T: Element>(
    config: KernelConfig,
    request: BackendRequest,
    threads: Option<usize>,
) -> Result<Attention<T>, String> {
    let mut attention = Attention::<T>::with_backend(config, request).map_err(|e| e.to_string())?;
    if let Some(n) = threads {
        attention = attention
            .with_threads(n)
            .map_err(|e| format!("--threads: {e}"))?;
    }
    if let (BackendRequest::Kind(_), Some(why)) = (request, &attention.selection().fallback) {
        eprintln!("sata: note: {why}");
    }
    Ok(attention)
}
