//! A multi-head attention layer with SATA as its mixer: projections, optional normalisation of
//! queries and keys with a learned temperature, the op for training and a carried state for
//! generation.

use candle_core::{D, DType, Module, Tensor};
use candle_nn::{Init, Linear, VarBuilder, linear_no_bias};
use sata_runtime::{KernelConfig, State, TensorRef};

use super::error::to_candle;
use super::op::TaylorAttention;

/// How queries and keys enter the Taylor polynomial.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum QkNorm {
    /// As projected, with scale `c = sqrt(d_k)`, as in softmax attention. Training can drive
    /// `|q·k| / c` far beyond where a low-order Taylor series is accurate (check with
    /// [`SataAttention::diagnostics`]).
    Raw,
    /// Queries and keys normalised to unit length and the query multiplied by a learned
    /// temperature per head, so `|q·k| / c` never exceeds the temperature, which is clamped at
    /// `max_temperature`: choose it from the error bound (`sata info --qk-bound`) for the
    /// number of terms. (The kernel keeps the default scale `c = sqrt(d_k)` and the query
    /// carries `temperature * sqrt(d_k)`, so the registry's kernels serve these layers too.)
    L2 {
        initial_temperature: f64,
        max_temperature: f64,
    },
}

/// The shape of a [`SataAttention`] layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SataAttentionConfig {
    /// Width of the layer's input and output.
    pub d_model: usize,
    pub heads: usize,
    /// Query and key size per head.
    pub d_k: usize,
    /// Value size per head.
    pub d_v: usize,
    /// Taylor terms `P` (orders `0..P`).
    pub terms: usize,
    pub qk_norm: QkNorm,
}

impl SataAttentionConfig {
    /// The recommended layer for `d_model` split into `heads` heads (`d_k = d_v = d_model /
    /// heads`): raw queries and keys at the default scale and `P = 3` (orders 0..2). Odd `P`
    /// keeps every weight and denominator positive however large `|q·k| / c` grows in
    /// training; on Zoology's MQAR this recipe reached 99% in 1.33-1.92x softmax's steps over
    /// three seeds at 4 pairs and two at 8 (0.89x at a higher learning rate). Unit queries and
    /// keys with the temperature at the Taylor bound (`QkNorm::L2`, weights within 25% of
    /// `exp`) reached 99% in 2.00x and 2.56x at `P = 6` (two seeds), 3.2x at `P = 5`, 3.9x at
    /// `P = 4` and not within the 5x budget at `P = 3` (80%; `P = 6` carries 133x the state
    /// of `P = 3`); with the temperature clamped at 4 they trained in 1.33-2.00x, and at
    /// length 128 (8 pairs) in 1.64x against this recipe's 2.00x on one seed and behind it on
    /// another, but their weights then span at most 26x, which may be too flat for recall
    /// over contexts longer than that (not tested; `benches/results/mqar-sweep-2026-12-06.md`,
    /// `mqar-sweep-2026-12-07.md`).
    pub fn recommended(d_model: usize, heads: usize) -> candle_core::Result<Self> {
        if heads == 0 || d_model == 0 || !d_model.is_multiple_of(heads) {
            return Err(candle_core::Error::Msg(format!(
                "sata attention layer: d_model ({d_model}) must be a positive multiple of heads \
                 ({heads})"
            )));
        }
        let head = d_model / heads;
        let config = Self {
            d_model,
            heads,
            d_k: head,
            d_v: head,
            terms: 3,
            qk_norm: QkNorm::Raw,
        };
        config.kernel_config()?;
        Ok(config)
    }

    /// The kernel configuration of one head: the default scale `sqrt(d_k)` in both modes.
    pub fn kernel_config(&self) -> candle_core::Result<KernelConfig> {
        KernelConfig::new(self.d_k, self.d_v, self.terms).map_err(|e| to_candle(e.into()))
    }

    fn validate(&self) -> candle_core::Result<()> {
        if self.d_model == 0 || self.heads == 0 {
            return Err(candle_core::Error::Msg(format!(
                "sata attention layer: d_model ({}) and heads ({}) must be positive",
                self.d_model, self.heads
            )));
        }
        if let QkNorm::L2 {
            initial_temperature,
            max_temperature,
        } = self.qk_norm
            && !(initial_temperature > 0.0
                && max_temperature.is_finite()
                && initial_temperature <= max_temperature)
        {
            return Err(candle_core::Error::Msg(format!(
                "sata attention layer: temperatures must satisfy 0 < initial ({initial_temperature}) \
                 <= max ({max_temperature}) < inf"
            )));
        }
        Ok(())
    }
}

/// What the layer's attention looks like on some input: whether `q·k / c` stays where the
/// Taylor polynomial is a good stand-in for `exp`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Diagnostics {
    /// The largest `|q·k| / c` over the causal pairs.
    pub max_abs_logit: f64,
    /// The fraction of causal pairs whose weight `T_P(q·k / c)` is not positive (possible only
    /// for even `P`).
    pub nonpositive_weights: f64,
    /// Queries whose denominator is not positive (their outputs are zeros).
    pub nonpositive_denominators: usize,
    /// Queries looked at (batch x heads x tokens).
    pub queries: usize,
}

/// Multi-head SATA attention over `[batch, tokens, d_model]`: no-bias projections to queries,
/// keys and values (`q_proj`, `k_proj`, `v_proj`), the attention per head, and an output
/// projection (`o_proj`); with [`QkNorm::L2`], a `log_temperature` variable per head.
///
/// [`Module::forward`] is the causal training forward (differentiable, any length);
/// [`forward_with_state`](Self::forward_with_state) generates: it prefills a prompt or decodes
/// one token on a carried f32 state, at a cost per token independent of the context.
#[derive(Debug, Clone)]
pub struct SataAttention {
    config: SataAttentionConfig,
    op: TaylorAttention,
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    o_proj: Linear,
    log_temperature: Option<Tensor>,
}

impl SataAttention {
    pub fn new(config: SataAttentionConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        config.validate()?;
        let op = TaylorAttention::new(config.kernel_config()?).map_err(to_candle)?;
        let (d, h) = (config.d_model, config.heads);
        let log_temperature = match config.qk_norm {
            QkNorm::Raw => None,
            QkNorm::L2 {
                initial_temperature,
                ..
            } => Some(vb.get_with_hints(
                h,
                "log_temperature",
                Init::Const(initial_temperature.ln()),
            )?),
        };
        Ok(Self {
            config,
            op,
            q_proj: linear_no_bias(d, h * config.d_k, vb.pp("q_proj"))?,
            k_proj: linear_no_bias(d, h * config.d_k, vb.pp("k_proj"))?,
            v_proj: linear_no_bias(d, h * config.d_v, vb.pp("v_proj"))?,
            o_proj: linear_no_bias(h * config.d_v, d, vb.pp("o_proj"))?,
            log_temperature,
        })
    }

    pub fn config(&self) -> &SataAttentionConfig {
        &self.config
    }

    /// The op the layer trains with (its path: `op().describe_path(dtype)`).
    pub fn op(&self) -> &TaylorAttention {
        &self.op
    }

    /// The temperature of each head (`[heads]`), after the clamp; `None` for [`QkNorm::Raw`].
    pub fn temperature(&self) -> candle_core::Result<Option<Tensor>> {
        let (
            Some(log_t),
            QkNorm::L2 {
                max_temperature, ..
            },
        ) = (&self.log_temperature, self.config.qk_norm)
        else {
            return Ok(None);
        };
        // The lower clamp only keeps exp() away from 0; the upper one is the bound the
        // Taylor polynomial needs.
        Ok(Some(log_t.clamp(-20.0, max_temperature.ln())?.exp()?))
    }

    /// An empty generation state for `batch` sequences.
    pub fn new_state(&self, batch: usize) -> candle_core::Result<State<f32>> {
        self.op
            .attention_f32()
            .new_state(batch, self.config.heads)
            .map_err(to_candle)
    }

    /// `[batch, tokens, d_model]` to per-head `[batch, heads, tokens, dim]`.
    fn heads_of(&self, x: &Tensor, proj: &Linear, dim: usize) -> candle_core::Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        proj.forward(x)?
            .reshape((b, n, self.config.heads, dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn check_input(&self, x: &Tensor) -> candle_core::Result<()> {
        match x.dims() {
            [_, _, d] if *d == self.config.d_model => Ok(()),
            dims => Err(candle_core::Error::Msg(format!(
                "sata attention layer: input must be [batch, tokens, {}], got {dims:?}",
                self.config.d_model
            ))),
        }
    }

    /// Queries, keys and values per head, normalised as the configuration says.
    fn qkv(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        self.check_input(x)?;
        let c = &self.config;
        let q = self.heads_of(x, &self.q_proj, c.d_k)?;
        let k = self.heads_of(x, &self.k_proj, c.d_k)?;
        let v = self.heads_of(x, &self.v_proj, c.d_v)?;
        let Some(t) = self.temperature()? else {
            return Ok((q, k, v));
        };
        let unit = |x: &Tensor| -> candle_core::Result<Tensor> {
            let norm = x
                .sqr()?
                .sum_keepdim(D::Minus1)?
                .affine(1.0, 1e-12)?
                .sqrt()?;
            x.broadcast_div(&norm)
        };
        // x = (t sqrt(d_k) q^)·k^ / c with c = sqrt(d_k): the temperature times the cosine.
        let t = t
            .affine(self.op.config().scale(), 0.0)?
            .to_dtype(q.dtype())?
            .reshape((1, c.heads, 1, 1))?;
        Ok((unit(&q)?.broadcast_mul(&t)?, unit(&k)?, v))
    }

    /// `[batch, heads, tokens, d_v]` back to `[batch, tokens, d_model]`.
    fn merge(&self, y: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, n, dv) = y.dims4()?;
        self.o_proj
            .forward(&y.transpose(1, 2)?.contiguous()?.reshape((b, n, h * dv))?)
    }

    /// Generation: causal attention of `x` (`[batch, tokens, d_model]`) after everything
    /// `state` holds, advancing it; a prompt goes through the chunked prefill, one token
    /// through decode. Computed in f32 on the CPU, outside autograd.
    pub fn forward_with_state(
        &self,
        x: &Tensor,
        state: &mut State<f32>,
    ) -> candle_core::Result<Tensor> {
        let (q, k, v) = self.qkv(&x.detach())?;
        let flat = |t: &Tensor| t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>();
        let (q_data, k_data, v_data) = (flat(&q)?, flat(&k)?, flat(&v)?);
        let dims = |t: &Tensor| t.dims4().map(|(b, h, n, d)| [b, h, n, d]);
        let (q_shape, k_shape, v_shape) = (dims(&q)?, dims(&k)?, dims(&v)?);
        let attention = self.op.attention_f32();
        let y = (|| {
            let q = TensorRef::query(&q_data, q_shape)?;
            let k = TensorRef::key(&k_data, k_shape)?;
            let v = TensorRef::value(&v_data, v_shape)?;
            if q.shape().tokens == 1 {
                attention.decode(state, q, k, v)
            } else {
                attention.prefill(state, q, k, v)
            }
        })();
        let y = y.map_err(to_candle)?;
        let shape = y.output.shape.as_array().to_vec();
        let y = Tensor::from_vec(y.output.data, shape, x.device())?;
        self.merge(&y.to_dtype(x.dtype())?)
    }

    /// Where the layer's logits `q·k / c` lie on `x`, computed exactly in f64.
    pub fn diagnostics(&self, x: &Tensor) -> candle_core::Result<Diagnostics> {
        let (q, k, _) = self.qkv(&x.detach())?;
        let (b, h, n, _) = q.dims4()?;
        let scale = self.op.config().scale();
        let logits = q
            .to_dtype(DType::F64)?
            .matmul(&k.to_dtype(DType::F64)?.t()?)?
            .affine(1.0 / scale, 0.0)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let terms = self.config.terms;
        let weight = |x: f64| {
            let (mut term, mut sum) = (1.0, 1.0);
            for p in 1..terms {
                term *= x / p as f64;
                sum += term;
            }
            sum
        };
        let (mut max_abs, mut nonpositive, mut pairs, mut bad) = (0.0f64, 0usize, 0usize, 0);
        for lane in logits.chunks_exact(n * n) {
            for (t, row) in lane.chunks_exact(n).enumerate() {
                let mut den = 0.0;
                for &x in &row[..=t] {
                    let w = weight(x);
                    max_abs = max_abs.max(x.abs());
                    nonpositive += usize::from(w <= 0.0);
                    den += w;
                }
                pairs += t + 1;
                bad += usize::from(den <= 0.0);
            }
        }
        Ok(Diagnostics {
            max_abs_logit: max_abs,
            nonpositive_weights: nonpositive as f64 / pairs.max(1) as f64,
            nonpositive_denominators: bad,
            queries: b * h * n,
        })
    }
}

impl Module for SataAttention {
    /// The causal training forward over `[batch, tokens, d_model]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (q, k, v) = self.qkv(x)?;
        self.merge(&self.op.forward(&q, &k, &v)?)
    }
}
