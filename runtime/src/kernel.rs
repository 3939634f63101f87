//! Specialized (code-generated) CPU kernels: the trait they implement, the drivers their
//! generated code calls, and the registry that dispatch looks them up in.
//!
//! A generated kernel contributes what depends on its configuration: the sizes as constants
//! and the unrolled feature maps with their weights folded in as literals. The drivers here
//! contribute the token loop and the state sweep ([`crate::simd`]), monomorphised for those
//! constants. Generated code reaches this module as `sata::kernel` (from user crates) or
//! `crate::kernel` (the runtime's own registry).

use std::sync::{OnceLock, RwLock};

use sata_codegen::KernelConfig;

use crate::cpu_generic::{answer, split_lane, update_compensated};
use crate::simd;
pub use crate::simd::Isa;

/// What a specialized kernel computes, stated by its generated code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KernelDescriptor {
    /// The plan's name, e.g. `d16_v16_p4`.
    pub name: &'static str,
    pub d_k: usize,
    pub d_v: usize,
    pub terms: usize,
    pub scale: f64,
    pub features: usize,
    /// How the feature program was emitted (`full` or `per-order`).
    pub unroll: &'static str,
    pub generator_version: &'static str,
}

impl KernelDescriptor {
    /// Whether this kernel computes `config` (scale compared bit for bit: weights are baked in).
    pub fn matches(&self, config: &KernelConfig) -> bool {
        self.d_k == config.d_k()
            && self.d_v == config.d_v()
            && self.terms == config.terms()
            && self.scale.to_bits() == config.scale().to_bits()
    }

    /// The configuration, validated.
    pub fn config(&self) -> Result<KernelConfig, sata_codegen::ConfigError> {
        KernelConfig::new(self.d_k, self.d_v, self.terms)?.with_scale(self.scale)
    }
}

/// Called once per answered query with its index in the lane, denominator and whether the
/// output is usable (positive, finite denominator and finite output).
pub type Answered<'a> = &'a mut dyn FnMut(usize, f64, bool);

/// A specialized f32 kernel for one configuration. Implemented by generated code (the
/// runtime's registry, `build.rs` output, `#[sata::kernel]`); used through
/// [`crate::Attention::with_kernel`] or the registry.
///
/// All methods work on one (batch, head) lane: `state` is its `m (d_v + 1)` words (`S` then `Z`, see [`crate::State`]), `q`, `k`,
/// `v` its `tokens x dim` blocks, `out` its `tokens x d_v` block, and `scratch` at least
/// [`scratch_words`]`(m)` words. Lengths are checked by the caller ([`crate::Attention`]).
pub trait SpecializedKernel: Send + Sync {
    fn descriptor(&self) -> &'static KernelDescriptor;
    /// Causal: absorb each token, then answer its query.
    #[allow(clippy::too_many_arguments)]
    fn causal(
        &self,
        isa: Isa,
        scratch: &mut [f32],
        state: &mut [f32],
        qkv: (&[f32], &[f32], &[f32]),
        out: &mut [f32],
        answered: Answered<'_>,
    );
    /// Absorb keys and values, answering nothing.
    fn absorb(&self, isa: Isa, scratch: &mut [f32], state: &mut [f32], k: &[f32], v: &[f32]);
    /// Answer queries from the state.
    fn read(
        &self,
        isa: Isa,
        scratch: &mut [f32],
        state: &[f32],
        q: &[f32],
        out: &mut [f32],
        answered: Answered<'_>,
    );
}

/// Words of one vector of the feature maps. Runs of children are written in whole vectors,
/// so a token's coordinates carry [`PAD`] zero words after its `d_k`, and each feature buffer
/// [`PAD`] words of slack after its `m` features: a run's last vector spills onto the words
/// of the runs after it, which are written later (runs are emitted in destination order).
pub const LANES: usize = sata_codegen::render::RUST_LANES;
/// Slack words after a token's coordinates and after a feature buffer (`LANES - 1`).
pub const PAD: usize = LANES - 1;

/// Words of scratch a specialized kernel with `features` features needs: the key's and the
/// query's feature buffers, each with [`PAD`] words of slack.
pub const fn scratch_words(features: usize) -> usize {
    2 * (features + PAD)
}

/// Scale of each run's first child, indexed by the multiplicity of its repeated coordinate
/// (`FeatureRun::mult`, below `MAX_TERMS`).
pub type FirstScales = [f32; sata_codegen::MAX_TERMS];

/// Keys need `Phi(x)`: every first child is scaled by 1.
pub static KEY_FIRST: FirstScales = [1.0; sata_codegen::MAX_TERMS];

/// Queries need `w ∘ Phi(x)` with `w = C_p / (p! c^p)`. Along the prefix tree the weight
/// follows `w_child = w_parent / (c mult)`: the map divides the coordinates by `c` once, and
/// each run's first child (the only one that repeats a coordinate) by its multiplicity.
pub static QUERY_FIRST: FirstScales = reciprocals();

const fn reciprocals() -> FirstScales {
    let mut r = [1.0; sata_codegen::MAX_TERMS];
    let mut i = 2;
    while i < r.len() {
        r[i] = 1.0 / i as f32;
        i += 1;
    }
    r
}

/// The generated part of a specialized kernel: its feature program, for coordinates padded
/// to `XP = d_k + PAD` words and a buffer of `MP = m + PAD` words.
///
/// Implemented by generated code only. The drivers compile `map` once inside an AVX2 function
/// and once portably ([`crate::simd::feature_map`]), so it is `#[inline(always)]` there and
/// the straight-line runs become whole vector multiplies.
pub trait FeatureProgram<const XP: usize, const MP: usize> {
    /// `1 / c`, applied to query coordinates before the map.
    const INV_SCALE: f32;
    /// `f[..m] = Phi(x)`, each run's first child scaled by `first[mult]`: with [`KEY_FIRST`]
    /// and `x` as given, the key features; with [`QUERY_FIRST`] and `x / c`, the weighted
    /// query features. Words of `f` past `m` are left undefined.
    fn map(x: &[f32; XP], f: &mut [f32; MP], first: &FirstScales);
}

/// One run of a straight-line feature program, the children of feature `parent`:
/// `f[dest..dest + VLEN] = f[parent] * x[first..first + VLEN]`, the first scaled by
/// `first_scale[mult]`. `VLEN` is the run's length rounded up to whole vectors ([`LANES`]):
/// the words past the run's end spill onto the runs written after it.
///
/// Generated code calls it with constant arguments, so it compiles to vector multiplies and
/// stores with no bounds checks; one scalar statement per feature was bound by one store per
/// cycle (0.3 us per feature map at d16 P4, about a fifth of the decode step).
///
/// It does not share a body with [`run_from_table`]: over one `[f32; VLEN]` array it is a
/// single fixed-length loop. Shared vector-by-vector bodies made the runtime's debug build
/// (its registry has over 11,000 straight-line features) take 2.5 to 10 minutes, against
/// 30-50 s.
#[inline(always)]
pub fn run<const VLEN: usize, const XP: usize, const MP: usize>(
    x: &[f32; XP],
    f: &mut [f32; MP],
    first_scale: &FirstScales,
    (parent, first, dest): (usize, usize, usize),
    mult: usize,
) {
    let base = f[parent];
    let src: &[f32; VLEN] = x[first..first + VLEN].try_into().expect("run inside x");
    let dst: &mut [f32; VLEN] = (&mut f[dest..dest + VLEN])
        .try_into()
        .expect("run inside f");
    for (i, (d, s)) in dst.iter_mut().zip(src).enumerate() {
        let b = if i == 0 {
            base * first_scale[mult]
        } else {
            base
        };
        *d = b * s;
    }
}

/// One run of a feature program's run table (`(parent, first, dest, len, mult)`), for the
/// per-order loops of large configurations: the same writes as [`run`], in whole vectors of
/// a length known only at run time.
#[inline(always)]
pub fn run_from_table<const XP: usize, const MP: usize>(
    x: &[f32; XP],
    f: &mut [f32; MP],
    first_scale: &FirstScales,
    &(parent, first, dest, len, mult): &(u32, u32, u32, u32, u8),
) {
    let (parent, first, dest) = (parent as usize, first as usize, dest as usize);
    let vlen = (len as usize).next_multiple_of(LANES);
    // Parents precede children, so one split gives both.
    let (done, todo) = f.split_at_mut(dest);
    let base = done[parent];
    let dst = todo[..vlen].chunks_exact_mut(LANES);
    let src = x[first..first + vlen].chunks_exact(LANES);
    let mut scale = [base; LANES];
    scale[0] = base * first_scale[mult as usize];
    for (d, s) in dst.zip(src) {
        for ((d, s), b) in d.iter_mut().zip(s).zip(scale) {
            *d = b * s;
        }
        scale = [base; LANES];
    }
}

fn split_scratch<const MP: usize>(scratch: &mut [f32]) -> (&mut [f32; MP], &mut [f32; MP]) {
    let (a, b) = scratch[..2 * MP].split_at_mut(MP);
    (
        a.try_into().expect("MP words"),
        b.try_into().expect("MP words"),
    )
}

fn token<const N: usize>(x: &[f32], t: usize) -> &[f32; N] {
    x[t * N..(t + 1) * N].try_into().expect("N words")
}

fn value<const ROW: usize>(v: &[f32], t: usize) -> &[f32] {
    &v[t * (ROW - 1)..(t + 1) * (ROW - 1)]
}

/// `Phi(k)` of token `t` into `f` (its first `m` words).
#[inline(always)]
fn key_features<const DK: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    k: &[f32],
    t: usize,
    f: &mut [f32; MP],
) where
    F: FeatureProgram<XP, MP>,
{
    simd::feature_map::<DK, XP, MP, F>(isa, token::<DK>(k, t), 1.0, &KEY_FIRST, f);
}

/// `w ∘ Phi(q)` of token `t` into `f` (its first `m` words).
#[inline(always)]
fn query_features<const DK: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    q: &[f32],
    t: usize,
    f: &mut [f32; MP],
) where
    F: FeatureProgram<XP, MP>,
{
    simd::feature_map::<DK, XP, MP, F>(isa, token::<DK>(q, t), F::INV_SCALE, &QUERY_FIRST, f);
}

/// Driver of [`SpecializedKernel::causal`] for generated code.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn causal<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    scratch: &mut [f32],
    state: &mut [f32],
    (q, k, v): (&[f32], &[f32], &[f32]),
    out: &mut [f32],
    answered: Answered<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let (phi_k, phi_q) = split_scratch::<MP>(scratch);
    let (state, mut comp) = split_lane(state, m * ROW);
    for t in 0..q.len() / DK {
        key_features::<DK, XP, MP, F>(isa, k, t, phi_k);
        query_features::<DK, XP, MP, F>(isa, q, t, phi_q);
        let (phi_k, phi_q) = (&phi_k[..m], &phi_q[..m]);
        let mut acc = [0.0f64; ROW];
        match comp.as_deref_mut() {
            // A compensated state: the Kahan update, then the vector read of the sums.
            Some(comp) => {
                update_compensated(state, comp, phi_k, value::<ROW>(v, t));
                simd::read::<ROW>(isa, state, phi_q, &mut acc);
            }
            None => {
                simd::update_read::<ROW>(isa, state, phi_k, phi_q, value::<ROW>(v, t), &mut acc)
            }
        }
        let a = answer(&acc, &mut out[t * (ROW - 1)..(t + 1) * (ROW - 1)]);
        answered(t, a.denominator, a.ok);
    }
}

/// Driver of [`SpecializedKernel::absorb`] for generated code.
#[inline]
pub fn absorb<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    scratch: &mut [f32],
    state: &mut [f32],
    k: &[f32],
    v: &[f32],
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let (phi_k, _) = split_scratch::<MP>(scratch);
    let (state, mut comp) = split_lane(state, m * ROW);
    for t in 0..k.len() / DK {
        key_features::<DK, XP, MP, F>(isa, k, t, phi_k);
        let phi_k = &phi_k[..m];
        match comp.as_deref_mut() {
            Some(comp) => update_compensated(state, comp, phi_k, value::<ROW>(v, t)),
            None => simd::update::<ROW>(isa, state, phi_k, value::<ROW>(v, t)),
        }
    }
}

/// Driver of [`SpecializedKernel::read`] for generated code.
#[inline]
pub fn read<const DK: usize, const ROW: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    scratch: &mut [f32],
    state: &[f32],
    q: &[f32],
    out: &mut [f32],
    answered: Answered<'_>,
) where
    F: FeatureProgram<XP, MP>,
{
    let m = MP - PAD;
    let (phi_q, _) = split_scratch::<MP>(scratch);
    // A compensated lane's sums come first; reading them alone is accurate to an ulp.
    let state = &state[..m * ROW];
    for t in 0..q.len() / DK {
        query_features::<DK, XP, MP, F>(isa, q, t, phi_q);
        let mut acc = [0.0f64; ROW];
        simd::read::<ROW>(isa, state, &phi_q[..m], &mut acc);
        let a = answer(&acc, &mut out[t * (ROW - 1)..(t + 1) * (ROW - 1)]);
        answered(t, a.denominator, a.ok);
    }
}

mod precompiled {
    // The registry kernels, generated by this crate's build script from
    // `sata_codegen::registry::PRECOMPILED` through `sata_codegen::Builder`.
    include!(concat!(env!("OUT_DIR"), "/registry.rs"));
}

/// The kernels compiled into this build of the runtime (see `sata_codegen::registry`).
pub fn precompiled() -> &'static [&'static dyn SpecializedKernel] {
    precompiled::KERNELS
}

fn registered() -> &'static RwLock<Vec<&'static dyn SpecializedKernel>> {
    static REGISTERED: OnceLock<RwLock<Vec<&'static dyn SpecializedKernel>>> = OnceLock::new();
    REGISTERED.get_or_init(|| RwLock::new(Vec::new()))
}

/// Adds a kernel (e.g. one made by `#[sata::kernel]` or a `build.rs`) to the registry, so that
/// [`crate::Attention::new`] picks it for its configuration. Later registrations win.
pub fn register(kernel: &'static dyn SpecializedKernel) {
    // A poisoned lock only means another thread panicked mid-push; the list is still valid.
    let mut list = registered().write().unwrap_or_else(|e| e.into_inner());
    list.push(kernel);
}

/// The kernel for `config`: a registered one first (latest first), then a precompiled one.
pub fn lookup(config: &KernelConfig) -> Option<&'static dyn SpecializedKernel> {
    let list = registered().read().unwrap_or_else(|e| e.into_inner());
    list.iter()
        .rev()
        .chain(precompiled())
        .copied()
        .find(|k| k.descriptor().matches(config))
}
