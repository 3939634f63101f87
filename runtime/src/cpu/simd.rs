//! The state sweeps of specialized kernels, in explicit SIMD with run-time CPU detection, and
//! the dispatch of their generated feature maps to AVX2 or portable code.
//!
//! This module holds the workspace's SIMD intrinsics; the other `unsafe` is the AVX2
//! compilations of the backward's chunk maps (`super::chunk_features`), the one call into
//! `matrixmultiply` (`super::gemm`) and the CUDA backend's FFI
//! (`cuda/ffi.rs` and the launch functions). A sweep walks the `m` features
//! of one lane's state (`S`, `m x d_v`, then `Z`, `m` words; see [`crate::State`]) and, per
//! feature `j`, updates `S[j] += phi_k[j] v` and `Z[j] += phi_k[j]` and/or accumulates
//! `phi_q[j] [S[j], Z[j]]` into `acc`. `ROW = d_v + 1` is a compile-time constant of the
//! generated kernel, so every loop over a row has a constant trip count and its vectors stay
//! in registers.
//!
//! Reads sum blocks of [`BLOCK`] features in f32 and each block's sum in f64; the state itself
//! stays f32. One f32 sum over all `m` features lets numerator and denominator round apart,
//! and the cancellation among feature products amplifies that past 1e-5 relative error at the
//! largest registry configurations (`docs/backends/cpu.md`).
//!
//! Every public function is safe: the [`Isa`] it is given is re-checked against what the CPU
//! supports ([`Isa::resolve`]) before any `#[target_feature]` function is called.

use super::features::{FeatureProgram, FirstScales};

/// Instruction sets the sweeps are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust loops (auto-vectorised for the build's baseline target). Runs everywhere.
    Portable,
    /// x86-64 AVX2 + FMA, 8 lanes.
    Avx2,
}

/// Features per block of the two-level read summation (a multiple of 8, so the `Z` block is
/// read in whole vectors).
pub const BLOCK: usize = 16;

/// Rows longer than this many words use the portable sweep: the vector sweep keeps two
/// accumulator registers per 8 words of a row.
pub const MAX_VECTOR_ROW: usize = 129;

impl Isa {
    pub const ALL: [Isa; 2] = [Isa::Portable, Isa::Avx2];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2+fma",
        }
    }

    /// Whether this CPU can run `self` (detection is cached by the standard library).
    /// Whether code dispatched on `self` runs its AVX2+FMA version: asked for and supported
    /// by this CPU (never off x86-64).
    pub(crate) fn runs_avx2(self) -> bool {
        self == Isa::Avx2 && self.is_supported()
    }

    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest supported instruction set.
    pub fn detect() -> Isa {
        if Isa::Avx2.is_supported() {
            Isa::Avx2
        } else {
            Isa::Portable
        }
    }

    /// `self` if this CPU supports it and the row fits the vector code, else `Portable`.
    fn resolve(self, row: usize) -> Isa {
        if row <= MAX_VECTOR_ROW && self.is_supported() {
            self
        } else {
            Isa::Portable
        }
    }
}

impl std::fmt::Display for Isa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Which halves of the sweep to run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    /// Update each feature, then read it (causal: the token sees itself).
    UpdateRead,
    /// `S[j] += phi_k[j] v`, `Z[j] += phi_k[j]`.
    Update,
    /// `acc += phi_q[j] [S[j], Z[j]]`.
    Read,
}

fn check_lengths<const ROW: usize>(state: usize, features: usize) {
    // Callers are the kernel drivers, which size everything from the same constants; a
    // mismatch is a bug in this crate, and the check keeps the pointer arithmetic below in
    // bounds regardless.
    assert_eq!(state, features * ROW, "state must hold m (d_v + 1) words");
}

/// Causal sweep: update each feature with `(phi_k, v)`, then read it with `phi_q` into `acc`
/// (`acc[..d_v]` numerator, `acc[d_v]` denominator).
pub fn update_read<const ROW: usize>(
    isa: Isa,
    state: &mut [f32],
    phi_k: &[f32],
    phi_q: &[f32],
    v: &[f32],
    acc: &mut [f64; ROW],
) {
    check_lengths::<ROW>(state.len(), phi_k.len());
    assert_eq!(phi_q.len(), phi_k.len());
    sweep::<ROW>(
        isa,
        Op::UpdateRead,
        Lane::Exclusive(state),
        phi_k,
        phi_q,
        v,
        acc,
    );
}

/// Update-only sweep (absorbing keys for non-causal attention).
pub fn update<const ROW: usize>(isa: Isa, state: &mut [f32], phi_k: &[f32], v: &[f32]) {
    check_lengths::<ROW>(state.len(), phi_k.len());
    let mut unused = [0.0; ROW];
    sweep::<ROW>(
        isa,
        Op::Update,
        Lane::Exclusive(state),
        phi_k,
        phi_k,
        v,
        &mut unused,
    );
}

/// Read-only sweep (answering a query from a fixed state).
pub fn read<const ROW: usize>(isa: Isa, state: &[f32], phi_q: &[f32], acc: &mut [f64; ROW]) {
    check_lengths::<ROW>(state.len(), phi_q.len());
    // A read never looks at the value.
    let unused_v = [0.0; ROW];
    sweep::<ROW>(
        isa,
        Op::Read,
        Lane::Shared(state),
        phi_q,
        phi_q,
        &unused_v[..ROW - 1],
        acc,
    );
}

/// The lane a sweep walks: exclusive when it updates, shared when it only reads.
enum Lane<'a> {
    Exclusive(&'a mut [f32]),
    Shared(&'a [f32]),
}

impl Lane<'_> {
    /// Pointer for the vector sweep. A `Shared` lane is only ever passed with `Op::Read`,
    /// which never writes through the pointer.
    fn as_ptr(&mut self) -> *mut f32 {
        match self {
            Lane::Exclusive(s) => s.as_mut_ptr(),
            Lane::Shared(s) => s.as_ptr() as *mut f32,
        }
    }
}

fn sweep<const ROW: usize>(
    isa: Isa,
    op: Op,
    mut lane: Lane<'_>,
    phi_k: &[f32],
    phi_q: &[f32],
    v: &[f32],
    acc: &mut [f64; ROW],
) {
    debug_assert!(op == Op::Read || matches!(lane, Lane::Exclusive(_)));
    assert_eq!(v.len(), ROW - 1, "one value of d_v words");
    match isa.resolve(ROW) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: `resolve` returned Avx2 only because the CPU reports avx2 and fma and
            // ROW <= MAX_VECTOR_ROW; the lane holds `phi_k.len()` features of ROW words
            // (checked by the public callers) and `v` ROW - 1 words (checked above), which
            // bounds every access; the lane is written only when it is an exclusive borrow (a
            // shared one comes with `Op::Read`, see `Lane::as_ptr`).
            unsafe {
                let p = lane.as_ptr();
                match op {
                    Op::UpdateRead => x86::sweep_avx2::<ROW, true, true>(p, phi_k, phi_q, v, acc),
                    Op::Update => x86::sweep_avx2::<ROW, true, false>(p, phi_k, phi_q, v, acc),
                    Op::Read => x86::sweep_avx2::<ROW, false, true>(p, phi_k, phi_q, v, acc),
                }
            }
        }
        _ => sweep_portable::<ROW>(op, lane, phi_k, phi_q, v, acc),
    }
}

/// The reference sweep: plain loops, products summed in f64.
fn sweep_portable<const ROW: usize>(
    op: Op,
    lane: Lane<'_>,
    phi_k: &[f32],
    phi_q: &[f32],
    v: &[f32],
    acc: &mut [f64; ROW],
) {
    let dv = ROW - 1;
    let m = phi_k.len();
    let read = |acc: &mut [f64; ROW], s: &[f32], z: f32, b: f32| {
        let b = f64::from(b);
        for c in 0..dv {
            acc[c] += b * f64::from(s[c]);
        }
        acc[dv] += b * f64::from(z);
    };
    match lane {
        Lane::Exclusive(lane) => {
            let (rows, z) = lane.split_at_mut(m * dv);
            let features = rows
                .chunks_exact_mut(dv)
                .zip(z)
                .zip(phi_k.iter().zip(phi_q));
            for ((s, z), (&a, &b)) in features {
                if op != Op::Read {
                    for (x, v) in s.iter_mut().zip(v) {
                        *x += a * v;
                    }
                    *z += a;
                }
                if op != Op::Update {
                    read(acc, s, *z, b);
                }
            }
        }
        Lane::Shared(lane) => {
            let (rows, z) = lane.split_at(m * dv);
            for ((s, &z), &b) in rows.chunks_exact(dv).zip(z).zip(phi_q) {
                read(acc, s, z, b);
            }
        }
    }
}

/// `f[..m]` = the feature map of `x * scale` by the generated program `F` (see
/// [`super::features::FeatureProgram`]), compiled for `isa`.
///
/// `F::map` is `#[inline(always)]`: it is compiled into exactly two functions per kernel, the
/// AVX2 one and the portable one, both kept out of line. Inlined into every driver, for both
/// instruction sets, the straight-line runs of the registry's largest kernels pushed the
/// runtime's debug build past 6 minutes.
pub fn feature_map<const DK: usize, const XP: usize, const MP: usize, F>(
    isa: Isa,
    x: &[f32; DK],
    scale: f32,
    first: &FirstScales,
    f: &mut [f32; MP],
) where
    F: FeatureProgram<XP, MP>,
{
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected just above.
        unsafe { x86::feature_map_avx2::<DK, XP, MP, F>(x, scale, first, f) };
        return;
    }
    let _ = isa;
    feature_map_portable::<DK, XP, MP, F>(x, scale, first, f);
}

/// `x * scale` followed by the [`super::features::PAD`] zero words the runs' last vectors read.
#[inline(always)]
fn padded<const DK: usize, const XP: usize>(x: &[f32; DK], scale: f32) -> [f32; XP] {
    let mut xp = [0.0; XP];
    for (p, x) in xp.iter_mut().zip(x) {
        *p = x * scale;
    }
    xp
}

#[inline(never)]
fn feature_map_portable<const DK: usize, const XP: usize, const MP: usize, F>(
    x: &[f32; DK],
    scale: f32,
    first: &FirstScales,
    f: &mut [f32; MP],
) where
    F: FeatureProgram<XP, MP>,
{
    F::map(&padded::<DK, XP>(x, scale), f, first);
}

/// Machine-limit probes for the benchmarks: what one core can do at best, measured in the same
/// run as the kernels they are compared with. Not an API: hidden from the docs, kept here
/// because this module is where the intrinsics live.
#[doc(hidden)]
pub mod floor {
    use super::Isa;

    /// Runs `iters` rounds of 12 independent fused multiply-add chains of one vector each
    /// (FMA-throughput bound); returns a value that depends on every chain, and the FLOPs done.
    pub fn fma_peak(isa: Isa, iters: usize) -> (f32, u64) {
        #[cfg(target_arch = "x86_64")]
        if isa.runs_avx2() {
            // SAFETY: avx2 and fma were detected just above.
            let r = unsafe { super::x86::fma_peak_avx2(iters) };
            return (r, iters as u64 * 12 * 8 * 2);
        }
        let mut acc = [1.0f32; 12];
        for _ in 0..iters {
            for a in acc.iter_mut() {
                *a = *a * 0.999_999 + 1e-7;
            }
        }
        (acc.iter().sum(), iters as u64 * 12 * 2)
    }

    /// `x = x * a + b` over `buf` (one read and one write per word): the streaming floor of a
    /// buffer of that size.
    pub fn stream(isa: Isa, buf: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if isa.runs_avx2() {
            // SAFETY: avx2 and fma were detected just above; the function stays inside `buf`.
            unsafe { super::x86::stream_avx2(buf) };
            return;
        }
        for x in buf.iter_mut() {
            *x = *x * 0.999_9 + 1e-7;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX2 sweep and the floor probes.

    use std::arch::x86_64::*;

    use super::super::features::{FeatureProgram, FirstScales};

    /// # Safety
    /// The CPU must support avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn fma_peak_avx2(iters: usize) -> f32 {
        let mut acc = [_mm256_set1_ps(1.0); 12];
        let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
        // SAFETY: an unaligned store of eight floats into a local array.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
        out.iter().sum()
    }

    /// # Safety
    /// The CPU must support avx2 and fma.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn stream_avx2(buf: &mut [f32]) {
        let (a, b) = (_mm256_set1_ps(0.999_9), _mm256_set1_ps(1e-7));
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            // SAFETY: `chunk` has exactly eight floats.
            unsafe {
                let x = _mm256_loadu_ps(chunk.as_ptr());
                _mm256_storeu_ps(chunk.as_mut_ptr(), _mm256_fmadd_ps(x, a, b));
            }
        }
        for x in chunks.into_remainder() {
            *x = x.mul_add(0.999_9, 1e-7);
        }
    }

    /// The generated feature program compiled with AVX2 and FMA (the `pulp` pattern: plain
    /// Rust inlined into a `#[target_feature]` function becomes vector code).
    ///
    /// # Safety
    /// The CPU must support avx2 and fma.
    #[inline(never)]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn feature_map_avx2<const DK: usize, const XP: usize, const MP: usize, F>(
        x: &[f32; DK],
        scale: f32,
        first: &FirstScales,
        f: &mut [f32; MP],
    ) where
        F: FeatureProgram<XP, MP>,
    {
        F::map(&super::padded::<DK, XP>(x, scale), f, first);
    }

    /// # Safety
    /// The CPU must support avx2 and fma; `lane` must point to `phi_k.len() * ROW` words
    /// (`S` then `Z`), writable if `UPDATE`; `phi_q.len() == phi_k.len()`;
    /// `v.len() == ROW - 1`; `ROW <= 129`.
    ///
    /// Per feature, `S[j]` is `full` whole vectors plus, when `d_v` is not a multiple of 8, one
    /// more vector overlapping the previous (words `d_v - 8..d_v`, for `d_v >= 8`) or scalar
    /// words (for `d_v < 8`). `Z` is handled 8 features at a time after every 8 rows of `S`.
    /// The read sums blocks of [`super::BLOCK`] features in f32, in two interleaved sets (a
    /// feature waits on the one two back, not the one before), then adds each block's sums
    /// into f64. `UPDATE` and `READ` are constants so that each combination compiles to its
    /// own branch-free loop (as run-time flags they left two branches per row).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sweep_avx2<const ROW: usize, const UPDATE: bool, const READ: bool>(
        lane: *mut f32,
        phi_k: &[f32],
        phi_q: &[f32],
        v: &[f32],
        acc: &mut [f64; ROW],
    ) {
        const MAXV: usize = 16; // 128 / 8
        let dv = ROW - 1;
        let m = phi_k.len();
        let full = dv / 8;
        // The overlapping last vector is stored before the full ones, which then overwrite
        // the shared words with their own results; its read keeps only lanes past `full * 8`.
        let overlap = full > 0 && !dv.is_multiple_of(8);
        let scalar_tail = if full == 0 { 0..dv } else { 0..0 };
        // SAFETY (whole body): row `j` of `S` is words `j * dv..(j + 1) * dv` of the lane and
        // `Z` words `m * dv..m * ROW`. Vector accesses cover `c * 8..c * 8 + 8` for
        // `c < full` and `dv - 8..dv` when `dv >= 8`, scalar ones words below `dv < 8`, all
        // inside the row; `Z` is accessed in vectors of 8 features only while `j + 8 <= m`,
        // and in scalars otherwise; `v` below `dv`; `acc` (`ROW` words) in vectors of 4 at
        // `c * 8` and `c * 8 + 4` for `c < full`, below `full * 8 <= dv`.
        unsafe {
            let s = lane;
            let z = lane.add(m * dv);
            let zero = _mm256_setzero_ps();
            let mut vv = [zero; MAXV];
            for (c, x) in vv.iter_mut().enumerate().take(full) {
                *x = _mm256_loadu_ps(v.as_ptr().add(c * 8));
            }
            let last_v = if overlap {
                _mm256_loadu_ps(v.as_ptr().add(dv - 8))
            } else {
                zero
            };
            // Block sums in f32: even features, odd features, the overlapping vectors, the
            // scalar words, and Z.
            let (mut even, mut odd) = ([zero; MAXV], [zero; MAXV]);
            let (mut last_even, mut last_odd) = (zero, zero);
            let (mut tail_even, mut tail_odd) = ([0.0f32; 8], [0.0f32; 8]);
            let mut z_sum = zero;
            let mut z_scalar = 0.0f32;
            let mut z_wide = [_mm256_setzero_pd(); 2];
            let mut z_wide_scalar = 0.0f64;
            // A macro, not a closure: closures do not inherit `#[target_feature]`, and the
            // intrinsics inside one become out-of-line calls (measured 2x slower than SSE2).
            macro_rules! row_step {
                ($j:expr, $sums:ident, $last:ident, $tails:ident) => {{
                    let row: *mut f32 = s.add($j * dv);
                    let (a, b): (f32, f32) = (*phi_k.get_unchecked($j), *phi_q.get_unchecked($j));
                    let (av, bv) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
                    let mut xs = [zero; MAXV];
                    for c in 0..full {
                        xs[c] = _mm256_loadu_ps(row.add(c * 8));
                    }
                    if overlap {
                        let p = row.add(dv - 8);
                        let mut x = _mm256_loadu_ps(p);
                        if UPDATE {
                            x = _mm256_fmadd_ps(av, last_v, x);
                            _mm256_storeu_ps(p, x);
                        }
                        if READ {
                            $last = _mm256_fmadd_ps(bv, x, $last);
                        }
                    }
                    for c in 0..full {
                        let mut x = xs[c];
                        if UPDATE {
                            x = _mm256_fmadd_ps(av, vv[c], x);
                            _mm256_storeu_ps(row.add(c * 8), x);
                        }
                        if READ {
                            $sums[c] = _mm256_fmadd_ps(bv, x, $sums[c]);
                        }
                    }
                    for c in scalar_tail.clone() {
                        let p = row.add(c);
                        let mut x = *p;
                        if UPDATE {
                            x = a.mul_add(v[c], x);
                            *p = x;
                        }
                        if READ {
                            $tails[c] = b.mul_add(x, $tails[c]);
                        }
                    }
                }};
            }
            let mut j = 0;
            while j < m {
                let end = (j + super::BLOCK).min(m);
                let start = j;
                while j + 1 < end {
                    row_step!(j, even, last_even, tail_even);
                    row_step!(j + 1, odd, last_odd, tail_odd);
                    j += 2;
                }
                if j < end {
                    row_step!(j, even, last_even, tail_even);
                    j += 1;
                }
                // Z for the block's features: whole vectors, then single words at the end.
                let mut f = start;
                while f + 8 <= end {
                    let p = z.add(f);
                    let mut x = _mm256_loadu_ps(p);
                    if UPDATE {
                        x = _mm256_add_ps(x, _mm256_loadu_ps(phi_k.as_ptr().add(f)));
                        _mm256_storeu_ps(p, x);
                    }
                    if READ {
                        let b = _mm256_loadu_ps(phi_q.as_ptr().add(f));
                        z_sum = _mm256_fmadd_ps(b, x, z_sum);
                    }
                    f += 8;
                }
                for f in f..end {
                    let p = z.add(f);
                    if UPDATE {
                        *p += *phi_k.get_unchecked(f);
                    }
                    if READ {
                        z_scalar = phi_q.get_unchecked(f).mul_add(*p, z_scalar);
                    }
                }
                if READ {
                    // Flush the block into the f64 accumulator, widened four words at a time
                    // rather than word by word (`docs/backends/cpu.md`); the next block starts
                    // at zero.
                    let mut sums = [0.0f32; 8];
                    for c in 0..full {
                        let sum = _mm256_add_ps(even[c], odd[c]);
                        let p = acc.as_mut_ptr().add(c * 8);
                        let lo = _mm256_cvtps_pd(_mm256_castps256_ps128(sum));
                        let hi = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(sum));
                        _mm256_storeu_pd(p, _mm256_add_pd(_mm256_loadu_pd(p), lo));
                        _mm256_storeu_pd(p.add(4), _mm256_add_pd(_mm256_loadu_pd(p.add(4)), hi));
                        even[c] = zero;
                        odd[c] = zero;
                    }
                    if overlap {
                        _mm256_storeu_ps(sums.as_mut_ptr(), _mm256_add_ps(last_even, last_odd));
                        for c in full * 8..dv {
                            acc[c] += f64::from(sums[c + 8 - dv]);
                        }
                        last_even = zero;
                        last_odd = zero;
                    }
                    for c in scalar_tail.clone() {
                        acc[c] += f64::from(tail_even[c]) + f64::from(tail_odd[c]);
                        tail_even[c] = 0.0;
                        tail_odd[c] = 0.0;
                    }
                    // Z's eight lanes stay apart in f64 until the last block.
                    z_wide[0] =
                        _mm256_add_pd(z_wide[0], _mm256_cvtps_pd(_mm256_castps256_ps128(z_sum)));
                    z_wide[1] = _mm256_add_pd(
                        z_wide[1],
                        _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(z_sum)),
                    );
                    z_wide_scalar += f64::from(z_scalar);
                    z_sum = zero;
                    z_scalar = 0.0;
                }
            }
            if READ {
                let mut lanes = [0.0f64; 4];
                _mm256_storeu_pd(lanes.as_mut_ptr(), _mm256_add_pd(z_wide[0], z_wide[1]));
                acc[dv] += (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + z_wide_scalar;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported ISA against an f64 computation written from the layout's definition,
    /// for rows that are whole vectors, have tails, or exceed the vector limit, over several
    /// read blocks and an `m` that is not a multiple of 8.
    fn agree<const ROW: usize>() {
        let dv = ROW - 1;
        let m = 3 * BLOCK + 37;
        let state0: Vec<f32> = (0..m * ROW)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let phi_k: Vec<f32> = (0..m).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
        let phi_q: Vec<f32> = (0..m)
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let v: Vec<f32> = (0..dv).map(|c| (c as f32 * 0.37).sin()).collect();
        // Word `i` of the lane: (feature, column), column `dv` being Z.
        let word = |i: usize| {
            if i < m * dv {
                (i / dv, i % dv)
            } else {
                (i - m * dv, dv)
            }
        };
        let updated: Vec<f64> = (0..m * ROW)
            .map(|i| {
                let (j, c) = word(i);
                let vc = if c < dv { f64::from(v[c]) } else { 1.0 };
                f64::from(state0[i]) + f64::from(phi_k[j]) * vc
            })
            .collect();
        let read_of = |state: &[f64], init: f64| {
            let mut acc = [init; ROW];
            for (i, x) in state.iter().enumerate() {
                let (j, c) = word(i);
                acc[c] += f64::from(phi_q[j]) * x;
            }
            acc
        };
        let original: Vec<f64> = state0.iter().map(|&x| f64::from(x)).collect();
        let close = |what: &str, isa: Isa, got: &[f64], want: &[f64]| {
            for (c, (x, y)) in got.iter().zip(want).enumerate() {
                let err = (x - y).abs();
                assert!(
                    err <= 1e-5 * (1.0 + y.abs()),
                    "{isa} ROW={ROW} {what} word {c}: {x} vs {y}"
                );
            }
        };
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let widen = |x: &[f32]| x.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
            let mut s = state0.clone();
            let mut acc = [0.5f64; ROW];
            update_read::<ROW>(isa, &mut s, &phi_k, &phi_q, &v, &mut acc);
            close("update_read state", isa, &widen(&s), &updated);
            close("update_read acc", isa, &acc, &read_of(&updated, 0.5));
            let mut s = state0.clone();
            update::<ROW>(isa, &mut s, &phi_k, &v);
            close("update state", isa, &widen(&s), &updated);
            let mut acc = [0.25f64; ROW];
            read::<ROW>(isa, &state0, &phi_q, &mut acc);
            close("read acc", isa, &acc, &read_of(&original, 0.25));
        }
    }

    #[test]
    fn sweeps_match_f64() {
        agree::<2>();
        agree::<5>();
        agree::<8>();
        agree::<9>();
        agree::<10>();
        agree::<13>();
        agree::<16>();
        agree::<17>();
        agree::<33>();
        agree::<65>();
        agree::<129>();
        agree::<130>();
    }

    #[test]
    fn detection_is_consistent() {
        assert!(Isa::detect().is_supported());
        assert_eq!(Isa::Portable.resolve(10_000), Isa::Portable);
    }
}
