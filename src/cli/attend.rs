//! `sata attend`: read Q, K, V from `.npy`, attend, write Y (and optionally the state).

use crate::{
    Attended, Attention, BackendRequest, DenominatorPolicy, Element, SataError, State, TensorRef,
};

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
        Arrays::F16(a) => attend::<crate::f16>(
            args,
            request,
            (&a[0].0, &a[0].1),
            (&a[1].0, &a[1].1),
            (&a[2].0, &a[2].1),
        ),
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

/// A dtype `attend` reads and writes, and the element type it computes in: float32 and
/// float64 natively, float16 on an f32 attention and state (`Attention::*_half`).
trait Dtype: Copy + npyz::Serialize + npyz::AutoSerialize {
    type Compute: Element;
    fn prefill(
        a: &Attention<Self::Compute>,
        state: &mut State<Self::Compute>,
        qkv: (
            TensorRef<'_, Self>,
            TensorRef<'_, Self>,
            TensorRef<'_, Self>,
        ),
    ) -> Result<Attended<Self>, SataError>;
    fn absorb(
        a: &Attention<Self::Compute>,
        state: &mut State<Self::Compute>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
    ) -> Result<(), SataError>;
    fn query(
        a: &Attention<Self::Compute>,
        state: &State<Self::Compute>,
        q: TensorRef<'_, Self>,
    ) -> Result<Attended<Self>, SataError>;
}

macro_rules! native_dtype {
    ($t:ty) => {
        impl Dtype for $t {
            type Compute = $t;
            fn prefill(
                a: &Attention<$t>,
                state: &mut State<$t>,
                (q, k, v): (TensorRef<'_, $t>, TensorRef<'_, $t>, TensorRef<'_, $t>),
            ) -> Result<Attended<$t>, SataError> {
                a.prefill(state, q, k, v)
            }
            fn absorb(
                a: &Attention<$t>,
                state: &mut State<$t>,
                k: TensorRef<'_, $t>,
                v: TensorRef<'_, $t>,
            ) -> Result<(), SataError> {
                a.absorb(state, k, v)
            }
            fn query(
                a: &Attention<$t>,
                state: &State<$t>,
                q: TensorRef<'_, $t>,
            ) -> Result<Attended<$t>, SataError> {
                a.query(state, q)
            }
        }
    };
}

native_dtype!(f32);
native_dtype!(f64);

impl Dtype for crate::f16 {
    type Compute = f32;
    fn prefill(
        a: &Attention<f32>,
        state: &mut State<f32>,
        (q, k, v): (
            TensorRef<'_, Self>,
            TensorRef<'_, Self>,
            TensorRef<'_, Self>,
        ),
    ) -> Result<Attended<Self>, SataError> {
        a.prefill_half(state, q, k, v)
    }
    fn absorb(
        a: &Attention<f32>,
        state: &mut State<f32>,
        k: TensorRef<'_, Self>,
        v: TensorRef<'_, Self>,
    ) -> Result<(), SataError> {
        a.absorb_half(state, k, v)
    }
    fn query(
        a: &Attention<f32>,
        state: &State<f32>,
        q: TensorRef<'_, Self>,
    ) -> Result<Attended<Self>, SataError> {
        a.query_half(state, q)
    }
}

fn attend<T: Dtype>(
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
    let attention = super::inputs::open_attention::<T::Compute>(config, request, args.threads)?
        .with_denominator_policy(policy);

    let (b, h) = (layout.batch, layout.heads);
    let err = |e: crate::SataError| e.to_string();
    let q = TensorRef::query(q, [b, h, n_q, d_k]).map_err(err)?;
    let k = TensorRef::key(k, [b, h, n_k, k_dim]).map_err(err)?;
    let v = TensorRef::value(v, [b, h, v_tokens, d_v]).map_err(err)?;

    let mut state = match &args.state_in {
        Some(path) => load_state::<T::Compute>(path, &config)?,
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
        T::absorb(&attention, &mut state, k, v).map_err(err)?;
        T::query(&attention, &state, q).map_err(err)?
    } else {
        T::prefill(&attention, &mut state, (q, k, v)).map_err(err)?
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
