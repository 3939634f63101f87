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
/// `2 m` words. Lengths are checked by the caller ([`crate::Attention`]).
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

/// One run of a straight-line feature program: `f[dest..dest + LEN] = f[parent] *
/// x[first..first + LEN]`, the `LEN` children of feature `parent`. Generated code calls it
/// with constant arguments, so it compiles to whole vector multiplies and stores with no
/// bounds checks; one scalar statement per feature was bound by one store per cycle (0.3 us
/// per feature map at d16 P4, about a fifth of the decode step).
#[inline(always)]
pub fn run<const LEN: usize, const DK: usize, const M: usize>(
    x: &[f32; DK],
    f: &mut [f32; M],
    parent: usize,
    first: usize,
    dest: usize,
) {
    let base = f[parent];
    let src: &[f32; LEN] = x[first..first + LEN].try_into().expect("run inside x");
    let dst: &mut [f32; LEN] = (&mut f[dest..dest + LEN]).try_into().expect("run inside f");
    for (d, s) in dst.iter_mut().zip(src) {
        *d = base * s;
    }
}

fn split_scratch<const M: usize>(scratch: &mut [f32]) -> (&mut [f32; M], &mut [f32; M]) {
    let (a, b) = scratch[..2 * M].split_at_mut(M);
    (
        a.try_into().expect("M words"),
        b.try_into().expect("M words"),
    )
}

fn token<const N: usize>(x: &[f32], t: usize) -> &[f32; N] {
    x[t * N..(t + 1) * N].try_into().expect("N words")
}

fn value<const ROW: usize>(v: &[f32], t: usize) -> &[f32] {
    &v[t * (ROW - 1)..(t + 1) * (ROW - 1)]
}

/// Driver of [`SpecializedKernel::causal`] for generated code.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn causal<const DK: usize, const ROW: usize, const M: usize>(
    isa: Isa,
    scratch: &mut [f32],
    state: &mut [f32],
    (q, k, v): (&[f32], &[f32], &[f32]),
    out: &mut [f32],
    answered: Answered<'_>,
    features: impl Fn(&[f32; DK], &mut [f32; M]),
    weighted: impl Fn(&[f32; DK], &mut [f32; M]),
) {
    let (phi_k, phi_q) = split_scratch::<M>(scratch);
    let (state, mut comp) = split_lane(state, M * ROW);
    for t in 0..q.len() / DK {
        features(token::<DK>(k, t), phi_k);
        weighted(token::<DK>(q, t), phi_q);
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
pub fn absorb<const DK: usize, const ROW: usize, const M: usize>(
    isa: Isa,
    scratch: &mut [f32],
    state: &mut [f32],
    k: &[f32],
    v: &[f32],
    features: impl Fn(&[f32; DK], &mut [f32; M]),
) {
    let (phi_k, _) = split_scratch::<M>(scratch);
    let (state, mut comp) = split_lane(state, M * ROW);
    for t in 0..k.len() / DK {
        features(token::<DK>(k, t), phi_k);
        match comp.as_deref_mut() {
            Some(comp) => update_compensated(state, comp, phi_k, value::<ROW>(v, t)),
            None => simd::update::<ROW>(isa, state, phi_k, value::<ROW>(v, t)),
        }
    }
}

/// Driver of [`SpecializedKernel::read`] for generated code.
#[inline]
pub fn read<const DK: usize, const ROW: usize, const M: usize>(
    isa: Isa,
    scratch: &mut [f32],
    state: &[f32],
    q: &[f32],
    out: &mut [f32],
    answered: Answered<'_>,
    weighted: impl Fn(&[f32; DK], &mut [f32; M]),
) {
    let (phi_q, _) = split_scratch::<M>(scratch);
    // A compensated lane's sums come first; reading them alone is accurate to an ulp.
    let state = &state[..M * ROW];
    for t in 0..q.len() / DK {
        weighted(token::<DK>(q, t), phi_q);
        let mut acc = [0.0f64; ROW];
        simd::read::<ROW>(isa, state, phi_q, &mut acc);
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
