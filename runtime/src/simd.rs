//! The state sweeps of specialized kernels, in explicit SIMD with run-time CPU detection.
//!
//! This module is the only place in the workspace with `unsafe` code and intrinsics. A sweep
//! walks the `m` rows of one lane's state (`ROW = d_v + 1` words each, `[S | Z]`) and, per row
//! `j`, updates it with `phi_k[j] * [v, 1]` and/or accumulates `phi_q[j] * row` into `acc`.
//! `ROW` is a compile-time constant of the generated kernel, so every loop over a row has a
//! constant trip count and its vectors stay in registers.
//!
//! Reads accumulate in f64 (portable and AVX2), the state itself stays f32. With f32
//! accumulators the numerator and the denominator round differently and the cancellation among
//! feature products amplifies that: measured 2e-5 to 6e-5 relative error at d_k = 16, P = 6
//! and d_k = 32, P = 4, against under 3e-7 in f64. The AVX-512 sweep (which cannot be executed
//! on the development machines) still uses f32 blocks of [`BLOCK`] rows flushed into f64.
//!
//! Every public function is safe: the [`Isa`] it is given is re-checked against what the CPU
//! supports ([`Isa::resolve`]) before any `#[target_feature]` function is called.

/// Instruction sets the sweeps are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust loops (auto-vectorised for the build's baseline target). Runs everywhere.
    Portable,
    /// x86-64 AVX2 + FMA, 8 lanes.
    Avx2,
    /// x86-64 AVX-512F, 16 lanes, masked row tails.
    Avx512,
}

/// Rows per block of the AVX-512 sweep's two-level read summation.
pub const BLOCK: usize = 64;

/// Rows longer than this many words use the portable sweep: the vector sweeps keep one
/// accumulator register per 8 or 16 words of a row, for two rows at a time.
pub const MAX_VECTOR_ROW: usize = 129;

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Portable, Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2+fma",
            Isa::Avx512 => "avx512f",
        }
    }

    /// Whether this CPU can run `self` (detection is cached by the standard library).
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The widest supported instruction set.
    pub fn detect() -> Isa {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find(|isa| isa.is_supported())
            .unwrap_or(Isa::Portable)
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
    /// `row += phi_k[j] * v_ext`, then `acc += phi_q[j] * row` (causal: the token sees itself).
    UpdateRead,
    /// `row += phi_k[j] * v_ext`.
    Update,
    /// `acc += phi_q[j] * row`.
    Read,
}

fn check_lengths<const ROW: usize>(state: usize, features: usize) {
    // Callers are the kernel drivers, which size everything from the same constants; a
    // mismatch is a bug in this crate, and the check keeps the pointer arithmetic below in
    // bounds regardless.
    assert_eq!(state, features * ROW, "state must hold m rows of ROW words");
}

/// Causal sweep: update each row with `(phi_k, v_ext)`, then read it with `phi_q` into `acc`.
pub fn update_read<const ROW: usize>(
    isa: Isa,
    state: &mut [f32],
    phi_k: &[f32],
    phi_q: &[f32],
    v_ext: &[f32; ROW],
    acc: &mut [f64; ROW],
) {
    check_lengths::<ROW>(state.len(), phi_k.len());
    assert_eq!(phi_q.len(), phi_k.len());
    sweep::<ROW>(
        isa,
        Op::UpdateRead,
        State::Exclusive(state),
        phi_k,
        phi_q,
        v_ext,
        acc,
    );
}

/// Update-only sweep (absorbing keys for non-causal attention).
pub fn update<const ROW: usize>(isa: Isa, state: &mut [f32], phi_k: &[f32], v_ext: &[f32; ROW]) {
    check_lengths::<ROW>(state.len(), phi_k.len());
    let mut unused = [0.0; ROW];
    sweep::<ROW>(
        isa,
        Op::Update,
        State::Exclusive(state),
        phi_k,
        phi_k,
        v_ext,
        &mut unused,
    );
}

/// Read-only sweep (answering a query from a fixed state).
pub fn read<const ROW: usize>(isa: Isa, state: &[f32], phi_q: &[f32], acc: &mut [f64; ROW]) {
    check_lengths::<ROW>(state.len(), phi_q.len());
    // A read never looks at `v_ext`.
    let unused_v = [0.0; ROW];
    sweep::<ROW>(
        isa,
        Op::Read,
        State::Shared(state),
        phi_q,
        phi_q,
        &unused_v,
        acc,
    );
}

/// The state a sweep walks: exclusive when it updates, shared when it only reads.
enum State<'a> {
    Exclusive(&'a mut [f32]),
    Shared(&'a [f32]),
}

impl State<'_> {
    /// Pointer for the vector sweeps. A `Shared` state is only ever passed with `Op::Read`,
    /// which never writes through the pointer.
    fn as_ptr(&mut self) -> *mut f32 {
        match self {
            State::Exclusive(s) => s.as_mut_ptr(),
            State::Shared(s) => s.as_ptr() as *mut f32,
        }
    }
}

fn sweep<const ROW: usize>(
    isa: Isa,
    op: Op,
    mut state: State<'_>,
    phi_k: &[f32],
    phi_q: &[f32],
    v_ext: &[f32; ROW],
    acc: &mut [f64; ROW],
) {
    debug_assert!(op == Op::Read || matches!(state, State::Exclusive(_)));
    match isa.resolve(ROW) {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: `resolve` returned Avx512 only because the CPU reports avx512f and
            // ROW <= MAX_VECTOR_ROW; `state` holds `phi_k.len()` rows of ROW words (checked by
            // the public callers), which bounds every access; it is written only when it is an
            // exclusive borrow (a shared one comes with `Op::Read`, see `State::as_ptr`).
            unsafe { x86::sweep_avx512::<ROW>(op, state.as_ptr(), phi_k, phi_q, v_ext, acc) }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: as above, with avx2 and fma detected.
            unsafe { x86::sweep_avx2::<ROW>(op, state.as_ptr(), phi_k, phi_q, v_ext, acc) }
        }
        _ => sweep_portable::<ROW>(op, state, phi_k, phi_q, v_ext, acc),
    }
}

fn sweep_portable<const ROW: usize>(
    op: Op,
    state: State<'_>,
    phi_k: &[f32],
    phi_q: &[f32],
    v_ext: &[f32; ROW],
    acc: &mut [f64; ROW],
) {
    let read = |acc: &mut [f64; ROW], row: &[f32], b: f32| {
        let b = f64::from(b);
        for c in 0..ROW {
            acc[c] += b * f64::from(row[c]);
        }
    };
    match state {
        State::Exclusive(state) => {
            for ((row, &a), &b) in state.chunks_exact_mut(ROW).zip(phi_k).zip(phi_q) {
                if op != Op::Read {
                    for (x, v) in row.iter_mut().zip(v_ext) {
                        *x += a * v;
                    }
                }
                if op != Op::Update {
                    read(acc, row, b);
                }
            }
        }
        State::Shared(state) => {
            for (row, &b) in state.chunks_exact(ROW).zip(phi_q) {
                read(acc, row, b);
            }
        }
    }
}

/// Machine-limit probes for benchmarks: what one core can do at best, measured in the same run
/// as the kernels they are compared with.
pub mod floor {
    use super::Isa;

    /// Runs `iters` rounds of 12 independent fused multiply-add chains of one vector each
    /// (FMA-throughput bound); returns a value that depends on every chain, and the FLOPs done.
    pub fn fma_peak(isa: Isa, iters: usize) -> (f32, u64) {
        #[cfg(target_arch = "x86_64")]
        if isa == Isa::Avx2 && isa.is_supported() {
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
        if isa == Isa::Avx2 && isa.is_supported() {
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
    //! The vector sweeps. Each processes two rows per iteration with two sets of accumulators,
    //! so consecutive rows' reads do not wait on each other's fused multiply-add latency.

    use std::arch::x86_64::*;

    use super::Op;

    /// Mask of the first `n` lanes of 16.
    fn mask16(n: usize) -> __mmask16 {
        ((1u32 << n) - 1) as __mmask16
    }

    /// # Safety
    /// The CPU must support avx512f; `state` must point to `phi_k.len()` rows of `ROW` words,
    /// writable unless `op` is `Op::Read`; `phi_q.len() == phi_k.len()`; `ROW <= 129`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn sweep_avx512<const ROW: usize>(
        op: Op,
        state: *mut f32,
        phi_k: &[f32],
        phi_q: &[f32],
        v_ext: &[f32; ROW],
        acc: &mut [f64; ROW],
    ) {
        const MAXV: usize = 9; // ceil(129 / 16)
        let full = ROW / 16;
        let tail = ROW % 16;
        let nv = full + (tail > 0) as usize;
        let tail_mask = mask16(tail);
        // SAFETY (whole body): loads and stores touch `state[j * ROW + c]` for j < m and
        // c < ROW only (full vectors below `full * 16`, masked lanes below `ROW`), `v_ext` and
        // `acc` likewise below ROW; the caller guarantees those are valid.
        unsafe {
            let zero = _mm512_setzero_ps();
            let mut vv = [zero; MAXV];
            for (c, v) in vv.iter_mut().enumerate().take(nv) {
                *v = if c < full {
                    _mm512_loadu_ps(v_ext.as_ptr().add(c * 16))
                } else {
                    _mm512_maskz_loadu_ps(tail_mask, v_ext.as_ptr().add(c * 16))
                };
            }
            let mut acc0 = [zero; MAXV];
            let mut acc1 = [zero; MAXV];
            // A macro, not a closure: closures do not inherit `#[target_feature]`, and the
            // intrinsics inside one become out-of-line calls (measured 2x slower than SSE2).
            macro_rules! row_step {
                ($row:expr, $a:expr, $b:expr, $accs:ident) => {{
                    let row: *mut f32 = $row;
                    let (a, b) = (_mm512_set1_ps($a), _mm512_set1_ps($b));
                    for c in 0..nv {
                        let p = row.add(c * 16);
                        let mask = if c < full { 0xffff } else { tail_mask };
                        let mut x = _mm512_maskz_loadu_ps(mask, p);
                        if op != Op::Read {
                            x = _mm512_fmadd_ps(a, vv[c], x);
                            _mm512_mask_storeu_ps(p, mask, x);
                        }
                        if op != Op::Update {
                            $accs[c] = _mm512_fmadd_ps(b, x, $accs[c]);
                        }
                    }
                }};
            }
            let m = phi_k.len();
            let mut block = [0.0f32; ROW];
            let mut j = 0;
            while j < m {
                let end = (j + super::BLOCK).min(m);
                while j + 1 < end {
                    row_step!(state.add(j * ROW), phi_k[j], phi_q[j], acc0);
                    row_step!(state.add((j + 1) * ROW), phi_k[j + 1], phi_q[j + 1], acc1);
                    j += 2;
                }
                if j < end {
                    row_step!(state.add(j * ROW), phi_k[j], phi_q[j], acc0);
                    j += 1;
                }
                if op != Op::Update {
                    for c in 0..nv {
                        let mask = if c < full { 0xffff } else { tail_mask };
                        let sum = _mm512_add_ps(acc0[c], acc1[c]);
                        _mm512_mask_storeu_ps(block.as_mut_ptr().add(c * 16), mask, sum);
                        acc0[c] = zero;
                        acc1[c] = zero;
                    }
                    // Move the block's f32 sums into the f64 accumulator.
                    for (a, b) in acc.iter_mut().zip(block.iter()) {
                        *a += f64::from(*b);
                    }
                }
            }
        }
    }

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

    /// # Safety
    /// The CPU must support avx2 and fma; otherwise as [`sweep_avx512`].
    ///
    /// The read accumulates in f64 (each 8-lane chunk widened to two 4-lane halves): with f32
    /// fused accumulators the numerator and denominator round differently, and the
    /// cancellation among feature products amplified that to 2e-5 relative error at
    /// d_k = 16, P = 6 (against 1e-6 for the unfused portable sweep). Row tails (`ROW % 8`
    /// words) are scalar: `vmaskmovps` stores are microcoded and slow on AMD cores.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sweep_avx2<const ROW: usize>(
        op: Op,
        state: *mut f32,
        phi_k: &[f32],
        phi_q: &[f32],
        v_ext: &[f32; ROW],
        acc: &mut [f64; ROW],
    ) {
        const MAXV: usize = 16; // 129 / 8
        let full = ROW / 8;
        let tail = full * 8..ROW;
        // SAFETY (whole body): vector accesses cover words below `full * 8 <= ROW` of a row,
        // scalar ones words `full * 8..ROW`; every row is one the caller guarantees.
        unsafe {
            let mut vv = [_mm256_setzero_ps(); MAXV];
            for (c, v) in vv.iter_mut().enumerate().take(full) {
                *v = _mm256_loadu_ps(v_ext.as_ptr().add(c * 8));
            }
            let zero = _mm256_setzero_pd();
            // Low and high halves of each chunk's f64 accumulator.
            let mut lo = [zero; MAXV];
            let mut hi = [zero; MAXV];
            let mut tails = [0.0f64; 8];
            // A macro, not a closure: see `sweep_avx512`.
            macro_rules! row_step {
                ($row:expr, $a:expr, $b:expr) => {{
                    let row: *mut f32 = $row;
                    let (a, b): (f32, f32) = ($a, $b);
                    let av = _mm256_set1_ps(a);
                    let bv = _mm256_set1_pd(f64::from(b));
                    for c in 0..full {
                        let p = row.add(c * 8);
                        let mut x = _mm256_loadu_ps(p);
                        if op != Op::Read {
                            x = _mm256_fmadd_ps(av, vv[c], x);
                            _mm256_storeu_ps(p, x);
                        }
                        if op != Op::Update {
                            let xl = _mm256_cvtps_pd(_mm256_castps256_ps128(x));
                            let xh = _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(x));
                            lo[c] = _mm256_fmadd_pd(bv, xl, lo[c]);
                            hi[c] = _mm256_fmadd_pd(bv, xh, hi[c]);
                        }
                    }
                    for (t, c) in tail.clone().enumerate() {
                        let p = row.add(c);
                        let mut x = *p;
                        if op != Op::Read {
                            x = a.mul_add(v_ext[c], x);
                            *p = x;
                        }
                        if op != Op::Update {
                            tails[t] = f64::from(b).mul_add(f64::from(x), tails[t]);
                        }
                    }
                }};
            }
            for j in 0..phi_k.len() {
                row_step!(state.add(j * ROW), phi_k[j], phi_q[j]);
            }
            if op != Op::Update {
                let mut sums = [0.0f64; 8];
                for c in 0..full {
                    _mm256_storeu_pd(sums.as_mut_ptr(), lo[c]);
                    _mm256_storeu_pd(sums.as_mut_ptr().add(4), hi[c]);
                    for (a, s) in acc[c * 8..c * 8 + 8].iter_mut().zip(sums) {
                        *a += s;
                    }
                }
                for (t, c) in tail.enumerate() {
                    acc[c] += tails[t];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every supported ISA agrees with the portable sweep, for rows that are whole vectors,
    /// have tails, or exceed the vector limit.
    fn agree<const ROW: usize>() {
        // Several blocks of the two-level read, plus an odd row.
        let m = 3 * BLOCK + 37;
        let state0: Vec<f32> = (0..m * ROW)
            .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let phi_k: Vec<f32> = (0..m).map(|i| ((i * 31) % 17) as f32 / 8.0 - 1.0).collect();
        let phi_q: Vec<f32> = (0..m)
            .map(|i| ((i * 13) % 23) as f32 / 11.0 - 1.0)
            .collect();
        let v: [f32; ROW] = std::array::from_fn(|c| (c as f32 * 0.37).sin());
        let run = |isa: Isa| {
            let mut s = state0.clone();
            let mut acc = [0.5f64; ROW];
            update_read::<ROW>(isa, &mut s, &phi_k, &phi_q, &v, &mut acc);
            let mut s2 = state0.clone();
            update::<ROW>(isa, &mut s2, &phi_k, &v);
            let mut acc2 = [0.25f64; ROW];
            read::<ROW>(isa, &s2, &phi_q, &mut acc2);
            let widen = |x: Vec<f32>| x.into_iter().map(f64::from).collect::<Vec<f64>>();
            (widen(s), acc, widen(s2), acc2)
        };
        let reference = run(Isa::Portable);
        // The read half against an exact f64 computation on the updated state.
        let mut exact = [0.5f64; ROW];
        for (row, &b) in reference.0.chunks_exact(ROW).zip(&phi_q) {
            for c in 0..ROW {
                exact[c] += f64::from(b) * row[c];
            }
        }
        for c in 0..ROW {
            let err = (reference.1[c] - exact[c]).abs();
            assert!(
                err <= 1e-5 * (1.0 + exact[c].abs()),
                "portable read ROW={ROW} c={c}: {err:e}"
            );
        }
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let got = run(isa);
            let close = |a: &[f64], b: &[f64]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| (x - y).abs() <= 1e-5 * (1.0 + y.abs()))
            };
            assert!(
                close(&got.0, &reference.0),
                "{isa} ROW={ROW} update_read state"
            );
            assert!(
                close(&got.1, &reference.1),
                "{isa} ROW={ROW} update_read acc"
            );
            assert!(close(&got.2, &reference.2), "{isa} ROW={ROW} update state");
            assert!(close(&got.3, &reference.3), "{isa} ROW={ROW} read acc");
        }
    }

    #[test]
    fn vector_sweeps_match_portable() {
        agree::<1>();
        agree::<2>();
        agree::<5>();
        agree::<8>();
        agree::<9>();
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
