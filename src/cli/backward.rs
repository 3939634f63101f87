//! `sata backward`: the gradients of `L = sum(Y * DY)` for the forward `sata attend` computes
//! on the same Q, K, V (and state), written as `.npy` in the inputs' dtype.

use crate::{BackendRequest, Element, Mode, TensorRef};

use super::args::BackwardArgs;
use super::inputs::{Arrays, load_state, read_same_dtype, same_leading, split};
use super::npy;

pub fn run(args: &BackwardArgs) -> Result<(), String> {
    let request: BackendRequest = args
        .backend
        .parse()
        .map_err(|e| format!("--backend: {e}"))?;
    let inputs = [
        ("q", &*args.q),
        ("k", &*args.k),
        ("v", &*args.v),
        ("dy", &*args.dy),
    ];
    match read_same_dtype(&inputs)? {
        Arrays::F16(_) => Err(
            "backward computes in float32 or float64; float16 inputs are not supported (convert \
             them with a.astype(np.float32))"
                .to_string(),
        ),
        Arrays::F32(a) => backward::<f32>(args, request, &a),
        Arrays::F64(a) => backward::<f64>(args, request, &a),
    }
}

fn backward<T: Element + npyz::Serialize + npyz::AutoSerialize>(
    args: &BackwardArgs,
    request: BackendRequest,
    arrays: &[(Vec<usize>, Vec<T>)],
) -> Result<(), String> {
    let [(qs, q), (ks, k), (vs, v), (dys, dy)] = arrays else {
        return Err("backward reads four arrays".to_string());
    };
    let (layout, n_q, d_k) = split("q", qs)?;
    let (k_layout, n_k, k_dim) = split("k", ks)?;
    let (v_layout, v_tokens, d_v) = split("v", vs)?;
    let (dy_layout, dy_tokens, dy_dim) = split("dy", dys)?;
    same_leading(
        &layout,
        &[("k", &k_layout), ("v", &v_layout), ("dy", &dy_layout)],
    )?;
    let config = super::inputs::config(d_k, d_v, args.terms, args.scale)?;
    let attention = super::inputs::open_attention::<T>(config, request, args.threads)?;
    let (b, h) = (layout.batch, layout.heads);
    let err = |e: crate::SataError| e.to_string();
    let q = TensorRef::query(q, [b, h, n_q, d_k]).map_err(err)?;
    let k = TensorRef::key(k, [b, h, n_k, k_dim]).map_err(err)?;
    let v = TensorRef::value(v, [b, h, v_tokens, d_v]).map_err(err)?;
    let dy = TensorRef::output_gradient(dy, [b, h, dy_tokens, dy_dim]).map_err(err)?;
    let mut state = match &args.state_in {
        Some(path) => load_state::<T>(path, &config)?,
        None => attention.new_state(b, h).map_err(err)?,
    };
    let mode = if args.non_causal {
        Mode::NonCausal
    } else {
        Mode::Causal
    };
    let (_, saved) = attention
        .forward_for_training(&mut state, mode, q, k, v)
        .map_err(err)?;
    let g = attention.backward(&saved, dy, None).map_err(err)?;
    if g.zeroed_queries > 0 {
        eprintln!(
            "sata: warning: {} of {} queries had a non-positive denominator; they get no gradient",
            g.zeroed_queries,
            saved.denominators().len()
        );
    }
    if args.stats {
        eprintln!(
            "sata: forward on {}, backward on {}, {} queries with no gradient",
            attention.describe_path(),
            g.path,
            g.zeroed_queries
        );
    }
    let shape = |tokens: usize, dim: usize| {
        let mut s = layout.leading.clone();
        s.extend([tokens, dim]);
        s
    };
    npy::write(&args.dq, &shape(n_q, d_k), &g.dq.data)?;
    npy::write(&args.dk, &shape(n_k, d_k), &g.dk.data)?;
    npy::write(&args.dv, &shape(n_k, d_v), &g.dv.data)?;
    Ok(())
}
