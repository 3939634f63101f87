//! `sata attend`: read Q, K, V from `.npy`, attend, write Y (and optionally the state).

use std::path::Path;

use crate::checkpoint::read_header;
use crate::{
    Attention, BackendRequest, DenominatorPolicy, Element, KernelConfig, State, TensorRef,
};

use super::args::{AttendArgs, BadDenominator};
use super::npy::{self, Array};

/// The leading dimensions of an `[..., tokens, dim]` array folded into `(batch, heads)`: the
/// last leading dimension is the heads, everything before it the batch.
struct Layout {
    leading: Vec<usize>,
    batch: usize,
    heads: usize,
}

fn split(name: &str, shape: &[usize]) -> Result<(Layout, usize, usize), String> {
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

pub fn run(args: &AttendArgs) -> Result<(), String> {
    let request: BackendRequest = args
        .backend
        .parse()
        .map_err(|e| format!("--backend: {e}"))?;
    let (q, k, v) = (
        npy::read(&args.q)?,
        npy::read(&args.k)?,
        npy::read(&args.v)?,
    );
    match (q, k, v) {
        (
            Array::F32 {
                shape: qs,
                data: qd,
            },
            Array::F32 {
                shape: ks,
                data: kd,
            },
            Array::F32 {
                shape: vs,
                data: vd,
            },
        ) => attend::<f32>(args, request, (&qs, &qd), (&ks, &kd), (&vs, &vd)),
        (
            Array::F64 {
                shape: qs,
                data: qd,
            },
            Array::F64 {
                shape: ks,
                data: kd,
            },
            Array::F64 {
                shape: vs,
                data: vd,
            },
        ) => attend::<f64>(args, request, (&qs, &qd), (&ks, &kd), (&vs, &vd)),
        (q, k, v) => Err(format!(
            "--q, --k and --v must share one dtype; got {}, {} and {}",
            q.dtype_name(),
            k.dtype_name(),
            v.dtype_name()
        )),
    }
}

type Input<'a, T> = (&'a [usize], &'a [T]);

fn attend<T: Element + npyz::Serialize + npyz::AutoSerialize>(
    args: &AttendArgs,
    request: BackendRequest,
    (q_shape, q): Input<'_, T>,
    (k_shape, k): Input<'_, T>,
    (v_shape, v): Input<'_, T>,
) -> Result<(), String> {
    let (layout, n_q, d_k) = split("q", q_shape)?;
    let (k_layout, n_k, k_dim) = split("k", k_shape)?;
    let (v_layout, v_tokens, d_v) = split("v", v_shape)?;
    for (name, other) in [("k", &k_layout), ("v", &v_layout)] {
        if other.leading != layout.leading {
            return Err(format!(
                "--{name} has leading dimensions {:?} but --q has {:?}; they must be identical",
                other.leading, layout.leading
            ));
        }
    }

    let mut config = KernelConfig::new(d_k, d_v, args.terms).map_err(|e| e.to_string())?;
    if let Some(scale) = args.scale {
        config = config.with_scale(scale).map_err(|e| e.to_string())?;
    }
    let policy = match args.on_bad_denominator {
        BadDenominator::Zero => DenominatorPolicy::Zero,
        BadDenominator::Error => DenominatorPolicy::Error,
    };
    let attention = Attention::<T>::with_backend(config, request)
        .map_err(|e| e.to_string())?
        .with_denominator_policy(policy);
    let selection = attention.selection();
    if let (BackendRequest::Kind(_), Some(why)) = (request, &selection.fallback) {
        eprintln!("sata: note: {why}");
    }

    let (b, h) = (layout.batch, layout.heads);
    let err = |e: crate::SataError| e.to_string();
    let q = TensorRef::query(q, [b, h, n_q, d_k]).map_err(err)?;
    let k = TensorRef::key(k, [b, h, n_k, k_dim]).map_err(err)?;
    let v = TensorRef::value(v, [b, h, v_tokens, d_v]).map_err(err)?;

    let mut state = match &args.state_in {
        Some(path) => load_state::<T>(path, &config)?,
        None => {
            let accumulation = if args.compensated {
                crate::Accumulation::Compensated
            } else {
                crate::Accumulation::Plain
            };
            attention.new_state_with(b, h, accumulation).map_err(err)?
        }
    };
    let attended = if args.non_causal {
        attention.absorb(&mut state, k, v).map_err(err)?;
        attention.query(&state, q).map_err(err)?
    } else {
        attention.prefill(&mut state, q, k, v).map_err(err)?
    };

    let stats = &attended.stats;
    if stats.bad_denominators > 0 {
        eprintln!(
            "sata: warning: {} of {} queries had a non-positive denominator (first at {}); \
             their outputs are zeros",
            stats.bad_denominators,
            stats.queries,
            stats
                .first_bad
                .map(|(at, _)| at.to_string())
                .unwrap_or_default()
        );
    }
    if stats.tiny_denominators > 0 {
        eprintln!(
            "sata: warning: {} of {} queries had a tiny denominator (mean weight per key under \
             {:e}); the Taylor approximation is poor there (check `sata info --qk-bound`)",
            stats.tiny_denominators,
            stats.queries,
            crate::TINY_WEIGHT_PER_KEY
        );
    }
    if args.stats {
        eprintln!(
            "sata: backend {}, {} queries, {} bad denominators, {} tiny denominators, smallest \
             denominator {:e}, state holds {} tokens",
            attention.describe_path(),
            stats.queries,
            stats.bad_denominators,
            stats.tiny_denominators,
            stats.min_denominator,
            state.tokens()
        );
        match stats.logit_bound {
            Some(bound) => {
                let weights = crate::codegen::TaylorBound::new(config.terms(), bound)
                    .map(|b| {
                        format!(
                            "every weight within a relative {:.3e} of exp(q·k/c)",
                            b.weight_relative
                        )
                    })
                    .unwrap_or_else(|e| e.to_string());
                eprintln!("sata: largest |q·k|/c <= {bound:.4} (|q| |k| / c); {weights}");
            }
            None => eprintln!(
                "sata: largest |q·k|/c unknown: the state came from a format-1 checkpoint, which \
                 did not record key norms"
            ),
        }
    }

    let mut out_shape = layout.leading.clone();
    out_shape.extend([n_q, d_v]);
    npy::write(&args.out, &out_shape, &attended.output.data)?;
    if let Some(path) = &args.state_out {
        state
            .save(path)
            .map_err(|e| format!("--state-out {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Loads `--state-in`, explaining a mismatch with this call in terms of the CLI's flags.
fn load_state<T: Element>(path: &Path, config: &KernelConfig) -> Result<State<T>, String> {
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
