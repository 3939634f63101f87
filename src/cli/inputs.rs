//! What `attend` and `backward` read alike: arrays of one dtype, their `[..., tokens, dim]`
//! layout, and a `--state-in` checked against the call.

use std::path::Path;

use crate::checkpoint::read_header;
use crate::{Attention, BackendRequest, Element, KernelConfig, State};

use super::npy::{self, Array};

/// Arrays read for one command, all of the same dtype, each as `(shape, data)`.
pub enum Arrays {
    F16(Vec<(Vec<usize>, Vec<crate::f16>)>),
    F32(Vec<(Vec<usize>, Vec<f32>)>),
    F64(Vec<(Vec<usize>, Vec<f64>)>),
}

/// Reads the `.npy` files of `inputs` (`(flag, path)`), which must share one dtype.
pub fn read_same_dtype(inputs: &[(&str, &Path)]) -> Result<Arrays, String> {
    let arrays = inputs
        .iter()
        .map(|(_, path)| npy::read(path))
        .collect::<Result<Vec<Array>, String>>()?;
    let dtypes: Vec<&str> = arrays.iter().map(Array::dtype_name).collect();
    if dtypes.iter().any(|d| *d != dtypes[0]) {
        let flags: Vec<String> = inputs.iter().map(|(flag, _)| format!("--{flag}")).collect();
        return Err(format!(
            "{} must share one dtype; got {}",
            flags.join(", "),
            dtypes.join(", ")
        ));
    }
    // One dtype: every array is the variant of the first.
    let mut out = match arrays.first() {
        Some(Array::F16 { .. }) => Arrays::F16(Vec::new()),
        Some(Array::F64 { .. }) => Arrays::F64(Vec::new()),
        _ => Arrays::F32(Vec::new()),
    };
    for array in arrays {
        match (&mut out, array) {
            (Arrays::F16(v), Array::F16 { shape, data }) => v.push((shape, data)),
            (Arrays::F32(v), Array::F32 { shape, data }) => v.push((shape, data)),
            (Arrays::F64(v), Array::F64 { shape, data }) => v.push((shape, data)),
            _ => return Err("internal: arrays of one dtype changed variant".to_string()),
        }
    }
    Ok(out)
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
            "--state-in {shown} holds a {} state but these inputs compute in {}",
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
