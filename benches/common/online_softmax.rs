//! The softmax baseline of the crossover bench: one decode step of softmax attention over a
//! contiguous f32 KV cache, written the way a tuned decode is (flash-decoding's online
//! softmax): keys in blocks, each block's scores computed 8 keys at a time, a running maximum
//! and sum so the scores are read once, the values accumulated in registers, and heads run
//! in parallel on a rayon pool. AVX2+FMA where the CPU has it (head dimension 8, 16 or 32),
//! portable code otherwise. `tests/softmax_baseline.rs` checks both against float64.
//!
//! Self-contained (no use of the rest of `benches/common`) so the test can include it.

/// Keys per block: the block's scores (512 bytes) stay in L1 between the passes.
const BLOCK: usize = 128;

/// A KV cache of `len` tokens for each of `heads` heads, `[heads, len, d]` row-major.
pub struct KvCache {
    heads: usize,
    len: usize,
    d: usize,
    keys: Vec<f32>,
    values: Vec<f32>,
}

impl KvCache {
    /// The cache holding `keys` and `values`, each `[heads, len, d]`.
    pub fn new(heads: usize, len: usize, d: usize, keys: Vec<f32>, values: Vec<f32>) -> Self {
        assert!(heads > 0 && len > 0 && d > 0, "empty cache");
        assert_eq!(keys.len(), heads * len * d, "keys");
        assert_eq!(values.len(), heads * len * d, "values");
        Self {
            heads,
            len,
            d,
            keys,
            values,
        }
    }

    /// Which code [`KvCache::decode`] runs on this CPU.
    pub fn path(&self) -> &'static str {
        path(self.d)
    }

    /// Softmax attention of one query per head (`q`, `[heads, d]`) over the cache, scale
    /// `1 / sqrt(d)`, into `out` (`[heads, d]`); heads in parallel on `pool` when given.
    pub fn decode(&self, q: &[f32], out: &mut [f32], pool: Option<&rayon::ThreadPool>) {
        use rayon::prelude::*;
        let (d, span) = (self.d, self.len * self.d);
        assert_eq!(q.len(), self.heads * d, "queries");
        assert_eq!(out.len(), self.heads * d, "output");
        let head = |h: usize, q: &[f32], out: &mut [f32]| {
            let range = h * span..(h + 1) * span;
            decode_head(q, &self.keys[range.clone()], &self.values[range], d, out);
        };
        match pool {
            Some(pool) => pool.install(|| {
                out.par_chunks_mut(d)
                    .zip(q.par_chunks(d))
                    .enumerate()
                    .for_each(|(h, (out, q))| head(h, q, out))
            }),
            None => {
                for (h, (out, q)) in out.chunks_mut(d).zip(q.chunks(d)).enumerate() {
                    head(h, q, out);
                }
            }
        }
    }
}

/// Which code runs for head dimension `d` on this CPU.
pub fn path(d: usize) -> &'static str {
    if avx2_lanes(d).is_some() {
        "avx2+fma"
    } else {
        "portable"
    }
}

/// Vectors of 8 per head row when the AVX2 kernel serves `d` on this CPU.
fn avx2_lanes(d: usize) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && matches!(d, 8 | 16 | 32)
    {
        return Some(d / 8);
    }
    let _ = d;
    None
}

/// One head: `q` (`d`), `keys` and `values` (`[len, d]`), into `out` (`d`).
pub fn decode_head(q: &[f32], keys: &[f32], values: &[f32], d: usize, out: &mut [f32]) {
    let scale = 1.0 / (d as f32).sqrt();
    match avx2_lanes(d) {
        // SAFETY: `avx2_lanes` returned Some only after detecting AVX2 and FMA, with
        // `d = 8 * LANES`; the slices are `[len, d]` and `d` long as `decode` asserts.
        #[cfg(target_arch = "x86_64")]
        Some(1) => unsafe { avx2::decode::<1>(q, keys, values, scale, out) },
        #[cfg(target_arch = "x86_64")]
        Some(2) => unsafe { avx2::decode::<2>(q, keys, values, scale, out) },
        #[cfg(target_arch = "x86_64")]
        Some(4) => unsafe { avx2::decode::<4>(q, keys, values, scale, out) },
        _ => portable(q, keys, values, d, scale, out),
    }
}

/// The same online softmax in plain Rust, block by block.
pub fn portable(q: &[f32], keys: &[f32], values: &[f32], d: usize, scale: f32, out: &mut [f32]) {
    let mut scores = [0.0f32; BLOCK];
    let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
    out.iter_mut().for_each(|o| *o = 0.0);
    for (kb, vb) in keys.chunks(BLOCK * d).zip(values.chunks(BLOCK * d)) {
        let scores = &mut scores[..kb.len() / d];
        let mut block_max = f32::NEG_INFINITY;
        for (s, k) in scores.iter_mut().zip(kb.chunks_exact(d)) {
            *s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale;
            block_max = block_max.max(*s);
        }
        if block_max > max {
            let factor = (max - block_max).exp();
            sum *= factor;
            out.iter_mut().for_each(|o| *o *= factor);
            max = block_max;
        }
        for (s, v) in scores.iter_mut().zip(vb.chunks_exact(d)) {
            *s = (*s - max).exp();
            sum += *s;
            for (o, x) in out.iter_mut().zip(v) {
                *o += *s * x;
            }
        }
    }
    out.iter_mut().for_each(|o| *o /= sum);
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::BLOCK;
    use std::arch::x86_64::*;

    /// Online softmax over `keys`/`values` (`[len, 8 LANES]`) for query `q`.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; `q` and `out` hold `8 LANES` floats, `keys` and
    /// `values` the same whole number of rows of `8 LANES`.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn decode<const LANES: usize>(
        q: &[f32],
        keys: &[f32],
        values: &[f32],
        scale: f32,
        out: &mut [f32],
    ) {
        let d = 8 * LANES;
        let len = keys.len() / d;
        let (kp, vp) = (keys.as_ptr(), values.as_ptr());
        let mut qs = [0.0f32; 32];
        for (s, x) in qs.iter_mut().zip(q) {
            *s = x * scale;
        }
        let mut acc = [_mm256_setzero_ps(); LANES];
        let mut qv = [_mm256_setzero_ps(); LANES];
        for (c, v) in qv.iter_mut().enumerate() {
            // SAFETY: `qs` holds 32 floats and `c < LANES <= 4`.
            *v = unsafe { _mm256_loadu_ps(qs.as_ptr().add(8 * c)) };
        }
        let mut scores = [0.0f32; BLOCK];
        let sp = scores.as_mut_ptr();
        let (mut max, mut sum) = (f32::NEG_INFINITY, 0.0f32);
        let mut start = 0;
        while start < len {
            let n = BLOCK.min(len - start);
            // SAFETY (the block below): every key and value row read is `start + j < len`,
            // inside the slices, and every score written is `j < n <= BLOCK`.
            unsafe {
                let kb = kp.add(start * d);
                let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
                let mut j = 0;
                while j + 8 <= n {
                    let s = dot8::<LANES>(&qv, kb.add(j * d));
                    _mm256_storeu_ps(sp.add(j), s);
                    vmax = _mm256_max_ps(vmax, s);
                    j += 8;
                }
                let mut block_max = hmax(vmax);
                while j < n {
                    let k = std::slice::from_raw_parts(kb.add(j * d), d);
                    let s: f32 = qs[..d].iter().zip(k).map(|(a, b)| a * b).sum();
                    *sp.add(j) = s;
                    block_max = block_max.max(s);
                    j += 1;
                }
                if block_max > max {
                    let factor = (max - block_max).exp();
                    sum *= factor;
                    for a in &mut acc {
                        *a = _mm256_mul_ps(*a, _mm256_set1_ps(factor));
                    }
                    max = block_max;
                }
                let shift = _mm256_set1_ps(max);
                let mut vsum = _mm256_setzero_ps();
                j = 0;
                while j + 8 <= n {
                    let p = exp(_mm256_sub_ps(_mm256_loadu_ps(sp.add(j)), shift));
                    _mm256_storeu_ps(sp.add(j), p);
                    vsum = _mm256_add_ps(vsum, p);
                    j += 8;
                }
                let mut block_sum = hsum(vsum);
                while j < n {
                    let p = (*sp.add(j) - max).exp();
                    *sp.add(j) = p;
                    block_sum += p;
                    j += 1;
                }
                sum += block_sum;
                let vb = vp.add(start * d);
                for j in 0..n {
                    let p = _mm256_set1_ps(*sp.add(j));
                    let row = vb.add(j * d);
                    for (c, a) in acc.iter_mut().enumerate() {
                        *a = _mm256_fmadd_ps(p, _mm256_loadu_ps(row.add(8 * c)), *a);
                    }
                }
            }
            start += n;
        }
        let inv = _mm256_set1_ps(1.0 / sum);
        for (c, a) in acc.iter().enumerate() {
            // SAFETY: `out` holds `8 LANES` floats.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), _mm256_mul_ps(*a, inv)) };
        }
    }

    /// The scores of the 8 keys (rows of `8 LANES`) from `keys`, against the scaled query.
    ///
    /// # Safety
    /// AVX2 and FMA; `keys` points at 8 whole rows.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn dot8<const LANES: usize>(q: &[__m256; LANES], keys: *const f32) -> __m256 {
        let d = 8 * LANES;
        // SAFETY: 8 rows of `d` floats lie behind `keys`.
        let row = |j: usize| unsafe {
            let mut s = _mm256_mul_ps(q[0], _mm256_loadu_ps(keys.add(j * d)));
            for (c, qc) in q.iter().enumerate().skip(1) {
                s = _mm256_fmadd_ps(*qc, _mm256_loadu_ps(keys.add(j * d + 8 * c)), s);
            }
            s
        };
        // Transpose-and-add: after two rounds of hadd each 128-bit half holds 4 partial
        // scores; adding the halves gives the 8 scores in key order.
        let t0 = _mm256_hadd_ps(row(0), row(1));
        let t1 = _mm256_hadd_ps(row(2), row(3));
        let t2 = _mm256_hadd_ps(row(4), row(5));
        let t3 = _mm256_hadd_ps(row(6), row(7));
        let u0 = _mm256_hadd_ps(t0, t1);
        let u1 = _mm256_hadd_ps(t2, t3);
        _mm256_add_ps(
            _mm256_permute2f128_ps(u0, u1, 0x20),
            _mm256_permute2f128_ps(u0, u1, 0x31),
        )
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn hmax(v: __m256) -> f32 {
        let s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_max_ss(s, _mm_shuffle_ps(s, s, 1)))
    }

    /// `exp(x)` to about 2 ulp (Cephes' `expf`: `x = n ln 2 + r`, a degree-7 polynomial in
    /// `r`, `2^n` through the exponent bits); inputs below -87.3 give `2^-126`, which next to
    /// the block's largest weight 1 is zero.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    fn exp(x: __m256) -> __m256 {
        let x = _mm256_min_ps(
            _mm256_max_ps(x, _mm256_set1_ps(-87.336_55)),
            _mm256_set1_ps(88.376_26),
        );
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
        let mut p = _mm256_set1_ps(1.987_569_1e-4);
        for c in [
            1.398_199_9e-3,
            8.333_452e-3,
            4.166_579_6e-2,
            0.166_666_65,
            0.5,
        ] {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let p = _mm256_fmadd_ps(
            p,
            _mm256_mul_ps(r, r),
            _mm256_add_ps(r, _mm256_set1_ps(1.0)),
        );
        let bits = _mm256_slli_epi32::<23>(_mm256_add_epi32(
            _mm256_cvtps_epi32(n),
            _mm256_set1_epi32(127),
        ));
        _mm256_mul_ps(p, _mm256_castsi256_ps(bits))
    }
}
