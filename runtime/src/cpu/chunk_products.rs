//! The two state-side products of a forward chunk (`super::chunked_forward`), on features laid
//! out feature-major as `super::chunk_features` makes them (row `f` holds feature `f` of every
//! token of the chunk, [`CHUNK`] words, zero past the chunk's tokens):
//!
//! - [`read`]: `acc[j][t] += sum_f fq[f][t] [S | Z][f][j]`, the chunk's queries reading the
//!   state. Tokens run along the vectors and each state word is broadcast, so there are no
//!   horizontal sums; the sums of each block of [`READ_BLOCK`] features are formed in f32 and
//!   added into f64 (the two-level summation `super::simd` explains).
//! - [`advance`]: `S[f] += sum_t fk[f][t] v_t` and `Z[f] += sum_t fk[f][t]`, the chunk's keys
//!   advancing the state. Value columns run along the vectors and each feature of each token
//!   is broadcast; every state word gets its chunk's sum in one addition, `S + delta`, so a
//!   delta formed elsewhere and added later gives the same bits (what
//!   `super::chunked_forward`'s split of one lane across threads relies on).
//!
//! Both are register tiles of twelve 8-lane accumulators in AVX2+FMA (`sgemm` through
//! `matrixmultiply`, which packs its operands per call, measured 0.3-0.9x the token loop
//! here: `benches/results/prefill-2026-12-02.md`), with portable loops of the same sums
//! elsewhere. This module and `super::simd` hold the CPU backend's SIMD intrinsics.

use super::chunk_features::CHUNK;
use super::chunk_features::Lanes;
use super::simd::Isa;

/// Features per block of the read's two-level summation: at most this many (plus one call's
/// worth) are summed in f32 before [`flush`] adds them into f64.
pub const READ_BLOCK: usize = 128;

/// f64 sums of one output column for every token of a chunk.
pub type Sums = [f64; CHUNK];

/// Tokens per read tile (two vectors).
const READ_TOKENS: usize = 16;

/// Output columns per read tile (twelve accumulators in all).
const READ_COLUMNS: usize = 6;

/// Words of value scratch [`advance`] needs for values of `d_v` words.
pub const fn value_scratch_words(d_v: usize) -> usize {
    CHUNK * padded_width(d_v)
}

/// The values' row in [`advance`]'s packed copy: `d_v` rounded up to whole vectors, with a
/// column of ones at `d_v` when `d_v` is not a multiple of 8 (the padding then carries `Z`).
const fn padded_width(d_v: usize) -> usize {
    if d_v.is_multiple_of(8) {
        d_v
    } else {
        (d_v / 8 + 1) * 8
    }
}

/// `part[j][t] += sum_f fq[f][t] col_j(f)` in f32 for the first `n` tokens, where `col_j(f)`
/// is `s[f * d_v + j]` for `j < d_v` and `z[f]` for `j = d_v`; `fq` holds `m` rows, `s`
/// `m x d_v` words, `z` `m`, `part` `d_v + 1` rows. Tokens past `n` may get sums of their
/// (zero) rows. [`flush`] moves the sums into f64 every [`READ_BLOCK`] features or so.
pub fn read(isa: Isa, fq: &[Lanes], (s, z): (&[f32], &[f32]), n: usize, part: &mut [Lanes]) {
    let m = fq.len();
    let row = part.len();
    assert!(
        row >= 1 && z.len() == m && s.len() == m * (row - 1) && n <= CHUNK,
        "read operands of mismatched sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected (`Isa::runs_avx2`); the sizes were checked above, which is
        // what `x86::read` indexes by.
        unsafe { x86::read(fq, (s, z), n, part) };
        return;
    }
    let _ = isa;
    let dv = row - 1;
    for (f, q) in fq.iter().enumerate() {
        let (q, sf) = (&q[..n], &s[f * dv..(f + 1) * dv]);
        for (p, &x) in part.iter_mut().zip(sf.iter().chain([&z[f]])) {
            for (p, &q) in p.iter_mut().zip(q) {
                *p += q * x;
            }
        }
    }
}

/// `acc[j][t] += part[j][t]` in f64 for the first `n` tokens, and `part` back to zeros.
pub fn flush(isa: Isa, part: &mut [Lanes], n: usize, acc: &mut [Sums]) {
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected (`Isa::runs_avx2`); `flush_avx2` is the loop below
        // compiled for them (the same IEEE widenings and additions, so the same bits).
        unsafe { compiled::flush_avx2(part, n, acc) };
        return;
    }
    let _ = isa;
    compiled::flush_portable(part, n, acc);
}

mod compiled {
    use super::*;

    compiled_twice! {
        fn flush_portable, flush_avx2(part: &mut [Lanes], n: usize, acc: &mut [Sums]) => flush_loop;
    }
}

/// [`flush`]'s loop (f32 to f64 in whole vectors under AVX2).
#[inline(always)]
fn flush_loop(part: &mut [Lanes], n: usize, acc: &mut [Sums]) {
    for (a, p) in acc.iter_mut().zip(part.iter_mut()) {
        for (a, &p) in a.iter_mut().zip(&p[..n]) {
            *a += f64::from(p);
        }
        p.fill(0.0);
    }
}

/// A chunk's values for [`advance`]: `n` rows of `width` words, `d_v` rounded up to whole
/// vectors, zero beyond `d_v` but for a one at `d_v` where the row has room for it (the
/// padding then carries `Z`).
pub struct PackedValues<'a> {
    words: &'a [f32],
    width: usize,
    d_v: usize,
    n: usize,
}

impl<'a> PackedValues<'a> {
    /// Packs the chunk's `n` values (`v`, `n x d_v`) into `scratch` (at least
    /// [`value_scratch_words`]`(d_v)` words).
    pub fn new(v: &[f32], d_v: usize, n: usize, scratch: &'a mut [f32]) -> Self {
        assert!(
            d_v >= 1 && n <= CHUNK && v.len() == n * d_v,
            "values of mismatched sizes"
        );
        let width = padded_width(d_v);
        let words = &mut scratch[..CHUNK * width];
        for (t, row) in words.chunks_exact_mut(width).take(n).enumerate() {
            row[..d_v].copy_from_slice(&v[t * d_v..(t + 1) * d_v]);
            row[d_v..].fill(0.0);
            if width > d_v {
                row[d_v] = 1.0;
            }
        }
        Self {
            words,
            width,
            d_v,
            n,
        }
    }
}

/// `s[f * d_v..][..d_v] += sum_{t < n} fk[f][t] v_t` and `z[f] += sum_{t < n} fk[f][t]` for
/// every feature `f` of `fk` (`m` rows, zero past `n`), where `s` holds `m x d_v` words and `z`
/// `m`: each word gets the chunk's sum in one addition.
pub fn advance(isa: Isa, fk: &[Lanes], v: &PackedValues<'_>, (s, z): (&mut [f32], &mut [f32])) {
    let m = fk.len();
    assert!(
        z.len() == m && s.len() == m * v.d_v,
        "advance operands of mismatched sizes"
    );
    #[cfg(target_arch = "x86_64")]
    if isa.runs_avx2() {
        // SAFETY: avx2 and fma were detected (`Isa::runs_avx2`); the sizes were checked above and by
        // `PackedValues::new`, which is what `x86::advance` indexes by.
        unsafe { x86::advance(fk, (v.words, v.width), v.n, (s, z)) };
        return;
    }
    let _ = isa;
    advance_portable(fk, v, (s, z));
}

fn advance_portable(fk: &[Lanes], v: &PackedValues<'_>, (s, z): (&mut [f32], &mut [f32])) {
    let (dv, n) = (v.d_v, v.n);
    let mut delta = vec![0.0f32; dv];
    for (f, (row, zf)) in s.chunks_exact_mut(dv).zip(z.iter_mut()).enumerate() {
        delta.fill(0.0);
        let mut count = 0.0f32;
        for (t, &a) in fk[f][..n].iter().enumerate() {
            let vt = &v.words[t * v.width..t * v.width + dv];
            for (d, &x) in delta.iter_mut().zip(vt) {
                *d += a * x;
            }
            count += a;
        }
        for (x, d) in row.iter_mut().zip(&delta) {
            *x += d;
        }
        *zf += count;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The AVX2 tiles. Each tile keeps its accumulators in registers across the whole
    //! reduction (a block of features for the read, the chunk's tokens for the advance) and
    //! touches the output once.

    use std::arch::x86_64::*;

    use super::{CHUNK, Lanes, READ_COLUMNS, READ_TOKENS};

    /// [`super::read`] after its checks.
    ///
    /// # Safety
    /// The CPU must support avx2 and fma; `s` must hold `fq.len() * (part.len() - 1)` words,
    /// `z` `fq.len()`, and `n <= CHUNK`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn read(
        fq: &[Lanes],
        (s, z): (&[f32], &[f32]),
        n: usize,
        part: &mut [Lanes],
    ) {
        let (m, row) = (fq.len(), part.len());
        let dv = row - 1;
        // The tiles of one group of tokens (READ_TOKENS words of each feature row, and the
        // state rows) stay in L1 across the column tiles.
        for t0 in (0..n).step_by(READ_TOKENS) {
            let mut j0 = 0;
            while j0 < row {
                let cols = READ_COLUMNS.min(row - j0);
                let with_z = j0 + cols == row;
                // SAFETY: every row of `fq` has CHUNK >= t0 + READ_TOKENS words; state words
                // `f * dv + j0 + j` for `f < m` and `j < cols - with_z` lie below `m * dv`
                // since `j0 + j < dv`, and `Z` words `f < m`; `part` rows `j0..j0 + cols`
                // exist and hold the tile's tokens.
                unsafe {
                    let tile = ReadTile {
                        fq: fq.as_ptr().cast::<f32>().add(t0),
                        s: s.as_ptr().add(j0),
                        z: z.as_ptr(),
                        dv,
                        features: m,
                    };
                    let out = &mut part[j0..j0 + cols];
                    match (cols, with_z) {
                        (1, false) => tile.run::<1, false>(out, t0),
                        (2, false) => tile.run::<2, false>(out, t0),
                        (3, false) => tile.run::<3, false>(out, t0),
                        (4, false) => tile.run::<4, false>(out, t0),
                        (5, false) => tile.run::<5, false>(out, t0),
                        (6, false) => tile.run::<6, false>(out, t0),
                        (1, true) => tile.run::<1, true>(out, t0),
                        (2, true) => tile.run::<2, true>(out, t0),
                        (3, true) => tile.run::<3, true>(out, t0),
                        (4, true) => tile.run::<4, true>(out, t0),
                        (5, true) => tile.run::<5, true>(out, t0),
                        _ => tile.run::<6, true>(out, t0),
                    }
                }
                j0 += cols;
            }
        }
    }

    /// One read tile's operands: `fq` at its first token, `s` at its first column.
    struct ReadTile {
        fq: *const f32,
        s: *const f32,
        z: *const f32,
        dv: usize,
        features: usize,
    }

    impl ReadTile {
        /// `out[j][t0..t0 + 16] += sum_f fq[f][t] col_j(f)` over the tile's features, the last
        /// column from `z` when `WITH_Z`.
        ///
        /// # Safety
        /// avx2 and fma; the pointers valid for the tile's features as [`read`] sets them up;
        /// `out` has `J` rows.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn run<const J: usize, const WITH_Z: bool>(&self, out: &mut [Lanes], t0: usize) {
            let mut c = [[_mm256_setzero_ps(); 2]; J];
            // SAFETY: as the function's contract states; `f < features`, `j < J`, and the
            // tile's words of `out` lie inside its rows (`t0 + 16 <= CHUNK`).
            unsafe {
                for (o, c) in out.iter().zip(c.iter_mut()) {
                    let p = o.as_ptr().add(t0);
                    *c = [_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))];
                }
                for f in 0..self.features {
                    let q = self.fq.add(f * CHUNK);
                    let (a0, a1) = (_mm256_loadu_ps(q), _mm256_loadu_ps(q.add(8)));
                    let sf = self.s.add(f * self.dv);
                    for (j, c) in c.iter_mut().enumerate() {
                        let x = if WITH_Z && j + 1 == J {
                            _mm256_broadcast_ss(&*self.z.add(f))
                        } else {
                            _mm256_broadcast_ss(&*sf.add(j))
                        };
                        c[0] = _mm256_fmadd_ps(a0, x, c[0]);
                        c[1] = _mm256_fmadd_ps(a1, x, c[1]);
                    }
                }
                for (o, c) in out.iter_mut().zip(&c) {
                    let p = o.as_mut_ptr().add(t0);
                    _mm256_storeu_ps(p, c[0]);
                    _mm256_storeu_ps(p.add(8), c[1]);
                }
            }
        }
    }

    /// [`super::advance`] after its checks and the values' packing.
    ///
    /// # Safety
    /// The CPU must support avx2 and fma; `s` must hold `fk.len() * d_v` words and `z`
    /// `fk.len()`, where `d_v = s.len() / fk.len()`; `packed` `n` rows of `width` words
    /// (`width` a multiple of 8, at least `d_v`), `n <= CHUNK`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn advance(
        fk: &[Lanes],
        (packed, width): (&[f32], usize),
        n: usize,
        (s, z): (&mut [f32], &mut [f32]),
    ) {
        let m = fk.len();
        let dv = s.len() / m;
        // Panels of up to 4 vectors of columns; the features of a panel in tiles of
        // 12 / vectors (12 accumulators), the last tile what is left.
        let mut j0 = 0;
        while j0 < width {
            let vectors = ((width - j0) / 8).min(4);
            let tile = 12 / vectors;
            let mut f = 0;
            while f < m {
                let rows = tile.min(m - f);
                let t = AdvanceTile {
                    fk: fk[f..].as_ptr().cast::<f32>(),
                    values: packed[j0..].as_ptr(),
                    width,
                    tokens: n,
                };
                let out = Destination {
                    s: &mut s[f * dv..],
                    z: &mut z[f..],
                    dv,
                    j0,
                };
                // SAFETY: features `f..f + rows` exist, the panel's columns
                // `j0..j0 + 8 * vectors` lie inside `width`, and `n` rows of `packed` exist.
                unsafe {
                    macro_rules! tiles {
                        ($($r:literal, $v:literal);*) => {
                            match (rows, vectors) {
                                $(($r, $v) => t.run::<$r, $v>(out),)*
                                _ => unreachable!("tiles cover every (rows, vectors)"),
                            }
                        };
                    }
                    tiles!(12, 1; 11, 1; 10, 1; 9, 1; 8, 1; 7, 1; 6, 1; 5, 1; 4, 1; 3, 1; 2, 1;
                        1, 1; 6, 2; 5, 2; 4, 2; 3, 2; 2, 2; 1, 2; 4, 3; 3, 3; 2, 3; 1, 3; 3, 4;
                        2, 4; 1, 4)
                }
                f += rows;
            }
            j0 += 8 * vectors;
        }
        if width == dv {
            // No padding column carried Z: the rows' sums, one feature at a time.
            for (row, zf) in fk.iter().zip(z.iter_mut()) {
                // SAFETY: a row has CHUNK = 8 x 8 words.
                unsafe {
                    let p = row.as_ptr();
                    let mut v = [_mm256_setzero_ps(); 4];
                    for (i, v) in v.iter_mut().enumerate() {
                        let a = _mm256_loadu_ps(p.add(16 * i));
                        let b = _mm256_loadu_ps(p.add(16 * i + 8));
                        *v = _mm256_add_ps(a, b);
                    }
                    let sum = _mm256_add_ps(_mm256_add_ps(v[0], v[1]), _mm256_add_ps(v[2], v[3]));
                    *zf += horizontal_sum(sum);
                }
            }
        }
    }

    /// The sum of a vector's eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// One advance tile's operands: `fk` at its first feature, the packed values at the
    /// panel's first column.
    struct AdvanceTile {
        fk: *const f32,
        values: *const f32,
        width: usize,
        tokens: usize,
    }

    /// Where a tile's sums go: the state from the tile's first feature.
    struct Destination<'a> {
        s: &'a mut [f32],
        z: &'a mut [f32],
        dv: usize,
        j0: usize,
    }

    impl AdvanceTile {
        /// The sums over the chunk's tokens of `fk[f][t] values[t][j0..j0 + 8 V]` for the
        /// tile's `F` features, added to the state once: whole vectors of `S` columns
        /// directly, the rest word by word (column `d_v` of the padding into `Z`).
        ///
        /// # Safety
        /// avx2 and fma; `fk` valid for `F` rows of CHUNK words, `values` for `tokens` rows of
        /// `width` words from the panel's start, `8 V` columns of them.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn run<const F: usize, const V: usize>(&self, out: Destination<'_>) {
            let mut c = [[_mm256_setzero_ps(); V]; F];
            // SAFETY: as the function's contract states; `t < tokens <= CHUNK`.
            unsafe {
                for t in 0..self.tokens {
                    let row = self.values.add(t * self.width);
                    let mut x = [_mm256_setzero_ps(); V];
                    for (i, x) in x.iter_mut().enumerate() {
                        *x = _mm256_loadu_ps(row.add(8 * i));
                    }
                    for (f, c) in c.iter_mut().enumerate() {
                        let a = _mm256_broadcast_ss(&*self.fk.add(f * CHUNK + t));
                        for (c, &x) in c.iter_mut().zip(&x) {
                            *c = _mm256_fmadd_ps(a, x, *c);
                        }
                    }
                }
            }
            let Destination { s, z, dv, j0 } = out;
            for (f, c) in c.iter().enumerate() {
                let srow = &mut s[f * dv..(f + 1) * dv];
                for (i, &v) in c.iter().enumerate() {
                    let col = j0 + 8 * i;
                    if col + 8 <= dv {
                        let dst = &mut srow[col..col + 8];
                        // SAFETY: `dst` holds eight words.
                        unsafe {
                            let p = dst.as_mut_ptr();
                            _mm256_storeu_ps(p, _mm256_add_ps(_mm256_loadu_ps(p), v));
                        }
                        continue;
                    }
                    let mut words = [0.0f32; 8];
                    // SAFETY: a store of eight words into a local array.
                    unsafe { _mm256_storeu_ps(words.as_mut_ptr(), v) };
                    for (w, &x) in words.iter().enumerate() {
                        match col + w {
                            c if c < dv => srow[c] += x,
                            c if c == dv => z[f] += x,
                            _ => {}
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(i: usize, salt: usize) -> f32 {
        (((i * 7919 + salt * 104_729) % 1013) as f32 / 506.0 - 1.0) * 0.9
    }

    /// Feature rows with tokens past `n` zero, as the feature maps leave them.
    fn rows(m: usize, n: usize, salt: usize) -> Vec<Lanes> {
        (0..m)
            .map(|f| {
                std::array::from_fn(|t| {
                    if t < n {
                        value(f * CHUNK + t, salt)
                    } else {
                        0.0
                    }
                })
            })
            .collect()
    }

    /// Both products on every supported ISA against f64 loops written from their
    /// definitions, for value widths that are whole vectors, have a padding column for `Z`,
    /// or span several panels, and for feature counts around the tiles and read blocks.
    #[test]
    fn products_match_f64() {
        for dv in [1, 4, 7, 8, 16, 17, 24, 32, 40, 64] {
            for (m, n) in [
                (1, 1),
                (13, 5),
                (35, 64),
                (3 * READ_BLOCK + 37, 50),
                (169, 17),
            ] {
                let row = dv + 1;
                let (fq, fk) = (rows(m, n, 1), rows(m, n, 2));
                let s0: Vec<f32> = (0..m * dv).map(|i| value(i, 3)).collect();
                let z0: Vec<f32> = (0..m).map(|i| value(i, 4)).collect();
                let v: Vec<f32> = (0..n * dv).map(|i| value(i, 5)).collect();
                let col =
                    |f: usize, j: usize| f64::from(if j < dv { s0[f * dv + j] } else { z0[f] });
                for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
                    let mut acc = vec![[0.5f64; CHUNK]; row];
                    let mut part = vec![[0.0f32; CHUNK]; row];
                    for f0 in (0..m).step_by(READ_BLOCK) {
                        let f1 = (f0 + READ_BLOCK).min(m);
                        let (s, z) = (&s0[f0 * dv..f1 * dv], &z0[f0..f1]);
                        read(isa, &fq[f0..f1], (s, z), n, &mut part);
                        flush(isa, &mut part, n, &mut acc);
                    }
                    assert!(part.iter().flatten().all(|&p| p == 0.0));
                    for (j, sums) in acc.iter().enumerate() {
                        for (t, &got) in sums[..n].iter().enumerate() {
                            let want: f64 =
                                0.5 + (0..m).map(|f| f64::from(fq[f][t]) * col(f, j)).sum::<f64>();
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{isa} read dv {dv} m {m} n {n} ({j}, {t}): {got} vs {want}"
                            );
                        }
                    }
                    let (mut s, mut z) = (s0.clone(), z0.clone());
                    let mut scratch = vec![f32::NAN; value_scratch_words(dv)];
                    let packed = PackedValues::new(&v, dv, n, &mut scratch);
                    advance(isa, &fk, &packed, (&mut s, &mut z));
                    for f in 0..m {
                        for j in 0..row {
                            let vj = |t: usize| {
                                if j < dv {
                                    f64::from(v[t * dv + j])
                                } else {
                                    1.0
                                }
                            };
                            let want = col(f, j)
                                + (0..n).map(|t| f64::from(fk[f][t]) * vj(t)).sum::<f64>();
                            let got = f64::from(if j < dv { s[f * dv + j] } else { z[f] });
                            assert!(
                                (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                                "{isa} advance dv {dv} m {m} n {n} ({f}, {j}): {got} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The advance adds one delta per state word: the same tile sums formed from a zero
    /// state and added afterwards give the same bits.
    #[test]
    fn advance_is_state_plus_delta() {
        let (m, n, dv) = (200, 64, 16);
        let fk = rows(m, n, 6);
        let v: Vec<f32> = (0..n * dv).map(|i| value(i, 7)).collect();
        let s0: Vec<f32> = (0..m * dv).map(|i| value(i, 8) * 100.0).collect();
        let z0: Vec<f32> = (0..m).map(|i| value(i, 9) * 100.0).collect();
        let mut scratch = vec![0.0; value_scratch_words(dv)];
        let packed = PackedValues::new(&v, dv, n, &mut scratch);
        for isa in Isa::ALL.into_iter().filter(|i| i.is_supported()) {
            let (mut s, mut z) = (s0.clone(), z0.clone());
            advance(isa, &fk, &packed, (&mut s, &mut z));
            let (mut ds, mut dz) = (vec![-0.0f32; m * dv], vec![-0.0f32; m]);
            advance(isa, &fk, &packed, (&mut ds, &mut dz));
            for (i, (&a, &d)) in s.iter().zip(&ds).enumerate() {
                assert_eq!(a.to_bits(), (s0[i] + d).to_bits(), "{isa} S word {i}");
            }
            for (i, (&a, &d)) in z.iter().zip(&dz).enumerate() {
                assert_eq!(a.to_bits(), (z0[i] + d).to_bits(), "{isa} Z word {i}");
            }
        }
    }
}
