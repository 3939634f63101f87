//! `sata attend`: read Q, K, V from `.npy`, attend, write Y (and optionally the state).

use crate::{BackendRequest, DenominatorPolicy, Element, TensorRef};

use super::args::{AttendArgs, BadDenominator};
use super::inputs::{Arrays, load_state, read_same_dtype, same_leading, split};
use super::npy;

pub fn run(args: &AttendArgs) -> Result<(), String> {
    let request: BackendRequest = args
        .backend
        .parse()
        .map_err(|e| format!("--backend: {e}"))?;
    let inputs = [("q", &*args.q), ("k", &*args.k), ("v", &*args.v)];
    match read_same_dtype(&inputs)? {
        Arrays::F32(a) => attend::<f32>(
            args,
            request,
            (&a[0].0, &a[0].1),
            (&a[1].0, &a[1].1),
            (&a[2].0, &a[2].1),
        ),
        Arrays::F64(a) => attend::<f64>(
            args,
            request,
            (&a[0].0, &a[0].1),
            (&a[1].0, &a[1].1),
            (&a[2].0, &a[2].1),
        ),
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
    same_leading(&layout, &[("k", &k_layout), ("v", &v_layout)])?;

    let config = super::inputs::config(d_k, d_v, args.terms, args.scale)?;
    let policy = match args.on_bad_denominator {
        BadDenominator::Zero => DenominatorPolicy::Zero,
        BadDenominator::Error => DenominatorPolicy::Error,
    };
    let attention = super::inputs::open_attention::<T>(config, request, args.threads)?
        .with_denominator_policy(policy);

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
