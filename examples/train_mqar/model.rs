//! The 2-layer model of the comparison: embeddings, pre-norm residual blocks of attention and
//! a 4x GELU MLP, a final norm and a head; the attention is softmax (built from candle ops) or
//! SATA (`sata::candle::SataAttention`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::{D, DType, Device, Module, Shape, Tensor};
use candle_nn::kv_cache::KvCache;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{
    AdamW, Embedding, Init, Linear, Optimizer, ParamsAdamW, VarBuilder, VarMap, embedding, linear,
    linear_no_bias,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use sata::candle::{Diagnostics, QkNorm, RecurrentState, SataAttention, SataAttentionConfig};

use crate::mqar::{Batch, IGNORE};

/// The sequence mixer of every block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mixer {
    Softmax,
    Sata { terms: usize, qk_norm: QkNorm },
}

impl std::fmt::Display for Mixer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mixer::Softmax => f.write_str("softmax"),
            Mixer::Sata {
                terms,
                qk_norm: QkNorm::Raw,
            } => write!(f, "sata-p{terms}"),
            Mixer::Sata {
                terms,
                qk_norm: QkNorm::L2 {
                    max_temperature, ..
                },
            } => write!(f, "sata-l2-p{terms}-t{max_temperature}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ModelConfig {
    pub vocab: usize,
    pub d_model: usize,
    pub heads: usize,
    pub head_dim: usize,
    pub layers: usize,
    pub mixer: Mixer,
    /// Width of a short causal depthwise convolution before each attention (0: none), as in
    /// the Based and H3 hybrids: it lets each position see its predecessors' tokens.
    pub conv: usize,
    /// Learned absolute position embeddings for this many positions, added to the token
    /// embeddings (Zoology's default, `max_position_embeddings`); 0: none.
    pub positions: usize,
}

impl ModelConfig {
    /// The model: d_model 64, 4 heads of 16, 2 layers.
    pub fn small(vocab: usize, mixer: Mixer) -> Self {
        Self {
            vocab,
            d_model: 64,
            heads: 4,
            head_dim: 16,
            layers: 2,
            mixer,
            conv: 0,
            positions: 0,
        }
    }
}

/// A short causal depthwise convolution over `[batch, tokens, d]`, added to its input:
/// `y_t = x_t + sum_j w_j * x_{t-j}` for `j < width`.
#[derive(Debug, Clone)]
struct ShortConv {
    /// `[width, d]`.
    weight: Tensor,
}

impl ShortConv {
    fn new(width: usize, d: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let init = Init::Randn {
            mean: 0.0,
            stdev: (1.0 / width as f64).sqrt(),
        };
        Ok(Self {
            weight: vb.get_with_hints((width, d), "weight", init)?,
        })
    }

    fn width(&self) -> usize {
        self.weight.dim(0).unwrap_or(0)
    }

    /// The convolution of the last `out` positions of `x` (earlier positions are context).
    fn forward_last(&self, x: &Tensor, out: usize) -> candle_core::Result<Tensor> {
        let n = x.dim(1)?;
        let mut y = x.narrow(1, n - out, out)?;
        for j in 0..self.width().min(n) {
            let w = self.weight.get(j)?;
            // Positions t - j of the output positions, zeros before the sequence.
            let shifted = x.narrow(1, 0, n - j)?.pad_with_zeros(1, j, 0)?;
            y = (y + shifted.narrow(1, n - out, out)?.broadcast_mul(&w)?)?;
        }
        Ok(y)
    }
}

/// Layer normalisation from differentiable candle ops (`candle_nn::LayerNorm` runs a fused op
/// without a backward on contiguous inputs).
#[derive(Debug, Clone)]
struct Norm {
    weight: Tensor,
    bias: Tensor,
}

impl Norm {
    fn new(size: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(Self {
            weight: vb.get_with_hints(size, "weight", Init::Const(1.0))?,
            bias: vb.get_with_hints(size, "bias", Init::Const(0.0))?,
        })
    }
}

impl Module for Norm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm_slow(x, &self.weight, &self.bias, 1e-5)
    }
}

/// Causal softmax attention from candle ops, with a key-value cache for generation.
#[derive(Debug, Clone)]
pub struct SoftmaxAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    head_dim: usize,
}

impl SoftmaxAttention {
    fn new(c: &ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let inner = c.heads * c.head_dim;
        Ok(Self {
            q: linear_no_bias(c.d_model, inner, vb.pp("q_proj"))?,
            k: linear_no_bias(c.d_model, inner, vb.pp("k_proj"))?,
            v: linear_no_bias(c.d_model, inner, vb.pp("v_proj"))?,
            o: linear_no_bias(inner, c.d_model, vb.pp("o_proj"))?,
            heads: c.heads,
            head_dim: c.head_dim,
        })
    }

    fn heads_of(&self, x: &Tensor, proj: &Linear) -> candle_core::Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        proj.forward(x)?
            .reshape((b, n, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Attention of `x`'s queries over keys `k` and values `v` (`[b, h, n_k, d]`), query `t`
    /// seeing keys `..= t + n_k - n_q`.
    fn attend(&self, x: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        let (b, n, _) = x.dims3()?;
        let q = self.heads_of(x, &self.q)?;
        let n_k = k.dim(2)?;
        let scores = (q.matmul(&k.t()?)? / (self.head_dim as f64).sqrt())?;
        let scores = if n > 1 {
            let mask: Vec<f32> = (0..n)
                .flat_map(|t| {
                    (0..n_k).map(move |s| {
                        if s + n <= t + n_k {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (n, n_k), x.device())?;
            scores.broadcast_add(&mask)?
        } else {
            scores
        };
        let weights = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let y = weights.matmul(v)?;
        self.o.forward(&y.transpose(1, 2)?.contiguous()?.reshape((
            b,
            n,
            self.heads * self.head_dim,
        ))?)
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.attend(x, &self.heads_of(x, &self.k)?, &self.heads_of(x, &self.v)?)
    }

    fn forward_with_cache(&self, x: &Tensor, cache: &mut KvCache) -> candle_core::Result<Tensor> {
        let (k, v) = cache.append(&self.heads_of(x, &self.k)?, &self.heads_of(x, &self.v)?)?;
        self.attend(x, &k, &v)
    }
}

#[derive(Debug, Clone)]
enum Attention {
    Softmax(SoftmaxAttention),
    Sata(SataAttention),
}

#[derive(Debug, Clone)]
struct Block {
    attn_norm: Norm,
    conv: Option<ShortConv>,
    attn: Attention,
    mlp_norm: Norm,
    up: Linear,
    down: Linear,
}

impl Block {
    /// The normalised input, through the short convolution if there is one.
    fn attention_input(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        match &self.conv {
            Some(conv) => conv.forward_last(&h, h.dim(1)?),
            None => Ok(h),
        }
    }

    fn mlp(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.up.forward(&self.mlp_norm.forward(x)?)?.gelu()?;
        x + self.down.forward(&h)?
    }
}

/// What attention carries between generation calls: a SATA state per layer, or a cache per
/// layer.
pub enum Memory {
    Sata(RecurrentState),
    Softmax(Vec<KvCache>),
}

/// Everything generation carries: the attention memory and, with a short convolution, each
/// block's last inputs to it.
pub struct GenerationState {
    pub memory: Memory,
    conv_tails: Vec<Option<Tensor>>,
    /// Tokens seen so far: the position of the next one.
    tokens: usize,
}

#[derive(Debug, Clone)]
pub struct Model {
    config: ModelConfig,
    embed: Embedding,
    positions: Option<Embedding>,
    blocks: Vec<Block>,
    norm: Norm,
    head: Linear,
}

impl Model {
    pub fn new(config: ModelConfig, vb: VarBuilder) -> candle_core::Result<Self> {
        let d = config.d_model;
        let blocks = (0..config.layers)
            .map(|i| {
                let vb = vb.pp(format!("block{i}"));
                let attn = match config.mixer {
                    Mixer::Softmax => {
                        Attention::Softmax(SoftmaxAttention::new(&config, vb.pp("attn"))?)
                    }
                    Mixer::Sata { terms, qk_norm } => {
                        let layer = SataAttentionConfig {
                            d_model: d,
                            heads: config.heads,
                            d_k: config.head_dim,
                            d_v: config.head_dim,
                            terms,
                            qk_norm,
                        };
                        Attention::Sata(SataAttention::new(layer, vb.pp("attn"))?)
                    }
                };
                let conv = match config.conv {
                    0 => None,
                    width => Some(ShortConv::new(width, d, vb.pp("conv"))?),
                };
                Ok(Block {
                    attn_norm: Norm::new(d, vb.pp("attn_norm"))?,
                    conv,
                    attn,
                    mlp_norm: Norm::new(d, vb.pp("mlp_norm"))?,
                    up: linear(d, 4 * d, vb.pp("up"))?,
                    down: linear(4 * d, d, vb.pp("down"))?,
                })
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            config,
            embed: embedding(config.vocab, d, vb.pp("embed"))?,
            positions: match config.positions {
                0 => None,
                n => Some(embedding(n, d, vb.pp("positions"))?),
            },
            blocks,
            norm: Norm::new(d, vb.pp("norm"))?,
            head: linear(d, config.vocab, vb.pp("head"))?,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Token embeddings of `ids` (`[batch, tokens]`), plus the position embeddings of
    /// positions `start..` where the model has them.
    fn embed(&self, ids: &Tensor, start: usize) -> candle_core::Result<Tensor> {
        let x = self.embed.forward(ids)?;
        let Some(table) = &self.positions else {
            return Ok(x);
        };
        let n = ids.dim(1)?;
        if start + n > self.config.positions {
            candle_core::bail!(
                "position {} is beyond the model's {} learned positions",
                start + n - 1,
                self.config.positions
            );
        }
        let at = Tensor::arange(start as u32, (start + n) as u32, ids.device())?;
        x.broadcast_add(&table.forward(&at)?)
    }

    /// Training forward: token ids `[batch, tokens]` to logits `[batch, tokens, vocab]`.
    pub fn forward(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        self.forward_seeing(ids, |_, _| Ok(()))
    }

    /// The training forward, showing each SATA layer its input on the way.
    fn forward_seeing(
        &self,
        ids: &Tensor,
        mut see: impl FnMut(&SataAttention, &Tensor) -> candle_core::Result<()>,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.embed(ids, 0)?;
        for block in &self.blocks {
            let h = block.attention_input(&x)?;
            let a = match &block.attn {
                Attention::Softmax(attn) => attn.forward(&h)?,
                Attention::Sata(attn) => {
                    see(attn, &h)?;
                    attn.forward(&h)?
                }
            };
            x = block.mlp(&(x + a)?)?;
        }
        self.head.forward(&self.norm.forward(&x)?)
    }

    /// An empty generation state for `batch` sequences of up to `max_len` tokens (the cache's
    /// size for softmax; SATA's state does not depend on it).
    pub fn new_state(&self, batch: usize, max_len: usize) -> candle_core::Result<GenerationState> {
        let mut sata = Vec::new();
        let mut caches = Vec::new();
        for block in &self.blocks {
            match &block.attn {
                Attention::Sata(attn) => sata.push(attn.new_state(batch)?),
                Attention::Softmax(_) => caches.push(KvCache::new(2, max_len)),
            }
        }
        let memory = match self.config.mixer {
            Mixer::Softmax => Memory::Softmax(caches),
            Mixer::Sata { .. } => Memory::Sata(RecurrentState::new(sata)),
        };
        Ok(GenerationState {
            memory,
            conv_tails: vec![None; self.blocks.len()],
            tokens: 0,
        })
    }

    /// Generation: logits for `ids` after everything `state` holds, advancing it.
    pub fn forward_with_state(
        &self,
        ids: &Tensor,
        state: &mut GenerationState,
    ) -> candle_core::Result<Tensor> {
        let mut x = self.embed(ids, state.tokens)?;
        state.tokens += ids.dim(1)?;
        for (i, block) in self.blocks.iter().enumerate() {
            let mut h = block.attn_norm.forward(&x)?;
            if let Some(conv) = &block.conv {
                // The convolution sees the block's previous inputs, kept from earlier calls.
                let n = h.dim(1)?;
                let full = match &state.conv_tails[i] {
                    Some(tail) => Tensor::cat(&[tail, &h], 1)?,
                    None => h.clone(),
                };
                let keep = (conv.width() - 1).min(full.dim(1)?);
                state.conv_tails[i] = Some(full.narrow(1, full.dim(1)? - keep, keep)?);
                h = conv.forward_last(&full, n)?;
            }
            let a = match (&block.attn, &mut state.memory) {
                (Attention::Sata(attn), Memory::Sata(s)) => {
                    attn.forward_with_state(&h, &mut s.layers[i])?
                }
                (Attention::Softmax(attn), Memory::Softmax(c)) => {
                    attn.forward_with_cache(&h, &mut c[i])?
                }
                _ => candle_core::bail!("generation state of another mixer"),
            };
            x = block.mlp(&(x + a)?)?;
        }
        self.head.forward(&self.norm.forward(&x)?)
    }

    /// Per SATA layer, where its logits lie on `ids` (empty for softmax).
    pub fn diagnostics(&self, ids: &Tensor) -> candle_core::Result<Vec<Diagnostics>> {
        let mut out = Vec::new();
        self.forward_seeing(ids, |attn, h| {
            out.push(attn.diagnostics(h)?);
            Ok(())
        })?;
        Ok(out)
    }

    /// The learned temperatures per SATA layer (L2-normalised recipes only).
    pub fn temperatures(&self) -> candle_core::Result<Vec<Vec<f32>>> {
        let mut out = Vec::new();
        for block in &self.blocks {
            if let Attention::Sata(attn) = &block.attn
                && let Some(t) = attn.temperature()?
            {
                out.push(t.to_vec1()?);
            }
        }
        Ok(out)
    }
}

/// `(ids, answer positions, answers)` of a batch as tensors.
pub fn batch_tensors(
    batch: &Batch,
    seq_len: usize,
    device: &Device,
) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
    let ids = Tensor::from_vec(batch.inputs.clone(), (batch.size, seq_len), device)?;
    let (positions, answers): (Vec<u32>, Vec<u32>) = batch
        .labels
        .iter()
        .enumerate()
        .filter(|(_, y)| **y != IGNORE)
        .map(|(i, &y)| (i as u32, y as u32))
        .unzip();
    let n = positions.len();
    Ok((
        ids,
        Tensor::from_vec(positions, n, device)?,
        Tensor::from_vec(answers, n, device)?,
    ))
}

/// Cross-entropy at the answer positions only, and the fraction of answers predicted.
pub fn score(
    logits: &Tensor,
    positions: &Tensor,
    answers: &Tensor,
) -> candle_core::Result<(Tensor, f64)> {
    let vocab = logits.dim(D::Minus1)?;
    let picked = logits.reshape(((), vocab))?.index_select(positions, 0)?;
    let loss = candle_nn::loss::cross_entropy(&picked, answers)?;
    let predicted = picked.argmax(D::Minus1)?;
    let right = predicted
        .eq(answers)?
        .to_dtype(DType::F64)?
        .mean_all()?
        .to_scalar()?;
    Ok((loss, right))
}

/// A `VarMap` that remembers the initialiser each variable was created with, so
/// [`seed_weights`] can redraw it at the scale that initialiser states. (The spread measured
/// from candle's own draw, which cannot be seeded on the CPU, varies from process to process by
/// about `1 / sqrt(2 n)` for `n` weights, 9% for a bias of 64, and training amplifies it.)
#[derive(Clone)]
pub struct SeedableVars {
    varmap: VarMap,
    inits: Arc<Mutex<HashMap<String, Init>>>,
}

impl Default for SeedableVars {
    fn default() -> Self {
        Self {
            varmap: VarMap::new(),
            inits: Arc::default(),
        }
    }
}

impl SeedableVars {
    pub fn varmap(&self) -> &VarMap {
        &self.varmap
    }
}

impl SimpleBackend for SeedableVars {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        init: Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.inits
            .lock()
            .expect("the initialiser table is not poisoned")
            .insert(name.to_string(), init);
        self.varmap.get(shape, name, init, dtype, device)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        SimpleBackend::get_unchecked(&self.varmap, name, dtype, device)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        SimpleBackend::contains_tensor(&self.varmap, name)
    }
}

/// The mean and standard deviation an initialiser draws a variable of `shape` with; `None`
/// for a constant.
fn init_moments(init: &Init, shape: &Shape) -> Option<(f64, f64)> {
    match *init {
        Init::Const(_) => None,
        Init::Randn { mean, stdev } => Some((mean, stdev)),
        Init::Uniform { lo, up } => Some(((lo + up) / 2.0, (up - lo) / 12f64.sqrt())),
        Init::Kaiming {
            fan, non_linearity, ..
        } => Some((
            0.0,
            non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt(),
        )),
    }
}

/// Redraws every randomly initialised weight from a seeded Gaussian with the mean and standard
/// deviation of its initialiser (candle's CPU generator cannot be seeded), so a run is
/// reproducible from `seed`. Constant-initialised variables (norms, temperatures) are left as
/// they are.
pub fn seed_weights(vars: &SeedableVars, seed: u64) -> candle_core::Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let inits = vars
        .inits
        .lock()
        .expect("the initialiser table is not poisoned");
    let data = vars
        .varmap
        .data()
        .lock()
        .expect("the var map is not poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let Some(init) = inits.get(name) else {
            candle_core::bail!("variable {name} was not created through SeedableVars")
        };
        let Some((mean, sigma)) = init_moments(init, var.shape()) else {
            continue;
        };
        let fresh: Vec<f64> = (0..var.elem_count())
            .map(|_| mean + sigma * gaussian(&mut rng))
            .collect();
        let t = Tensor::from_vec(fresh, var.shape(), var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

fn gaussian(rng: &mut StdRng) -> f64 {
    use rand::RngExt;
    let u: f64 = rng.random_range(f64::EPSILON..1.0);
    let t: f64 = rng.random_range(0.0..std::f64::consts::TAU);
    (-2.0 * u.ln()).sqrt() * t.cos()
}

/// A model of `config` with seeded weights and its AdamW optimiser (weight decay 0.1).
pub fn build(
    config: ModelConfig,
    seed: u64,
    lr: f64,
) -> candle_core::Result<(VarMap, Model, AdamW)> {
    let vars = SeedableVars::default();
    let vb = VarBuilder::from_backend(Box::new(vars.clone()), DType::F32, Device::Cpu);
    let model = Model::new(config, vb)?;
    seed_weights(&vars, seed)?;
    let varmap = vars.varmap().clone();
    let params = ParamsAdamW {
        lr,
        weight_decay: 0.1,
        ..ParamsAdamW::default()
    };
    let optimizer = AdamW::new(varmap.all_vars(), params)?;
    Ok((varmap, model, optimizer))
}

/// One optimiser step on `batch`; returns the training loss.
pub fn train_step(model: &Model, optimizer: &mut AdamW, batch: &Batch) -> candle_core::Result<f64> {
    let seq_len = batch.inputs.len() / batch.size;
    let (ids, positions, answers) = batch_tensors(batch, seq_len, &Device::Cpu)?;
    let (loss, _) = score(&model.forward(&ids)?, &positions, &answers)?;
    optimizer.backward_step(&loss)?;
    loss.to_scalar::<f32>().map(f64::from)
}

/// `(loss, accuracy)` on a held-out batch.
pub fn evaluate(model: &Model, batch: &Batch) -> candle_core::Result<(f64, f64)> {
    let seq_len = batch.inputs.len() / batch.size;
    let (ids, positions, answers) = batch_tensors(batch, seq_len, &Device::Cpu)?;
    let (loss, accuracy) = score(&model.forward(&ids)?, &positions, &answers)?;
    Ok((f64::from(loss.to_scalar::<f32>()?), accuracy))
}
