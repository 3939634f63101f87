//! The generated part of a specialized kernel and what it is written against: the feature
//! program trait its generated code implements, the vector width and padding its runs assume,
//! and the two run helpers its straight-line and per-order forms call.

/// Words of one vector of the feature maps. Runs of children are written in whole vectors,
/// so a token's coordinates carry [`PAD`] zero words after its `d_k`, and each feature buffer
/// [`PAD`] words of slack after its `m` features: a run's last vector spills onto the words
/// of the runs after it, which are written later (runs are emitted in destination order).
pub const LANES: usize = sata_codegen::rust::RUST_LANES;
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
/// and once portably ([`super::simd::feature_map`]), so it is `#[inline(always)]` there and
/// the straight-line runs become whole vector multiplies.
pub trait FeatureProgram<const XP: usize, const MP: usize> {
    /// `1 / c`, applied to query coordinates before the map.
    const INV_SCALE: f32;
    /// `P`, the Taylor terms (the backward's chunk-internal polynomials).
    const TERMS: usize;
    /// `f[..m] = Phi(x)`, each run's first child scaled by `first[mult]`: with [`KEY_FIRST`]
    /// and `x` as given, the key features; with [`QUERY_FIRST`] and `x / c`, the weighted
    /// query features. Words of `f` past `m` are left undefined.
    fn map(x: &[f32; XP], f: &mut [f32; MP], first: &FirstScales);

    /// The runs of `map` as `(parent, first, dest, len, mult)`, in the order its adjoint
    /// walks them (`sata_codegen::KernelPlan::adjoint_runs`; run by `super::chunk_features`).
    const ADJOINT_RUNS: &'static [(u32, u32, u32, u32, u8)];

    /// The same runs in the order `map` writes them, by destination (the chunked forward
    /// maps a chunk's tokens in segments of these: `super::chunk_features::segments`).
    const RUNS: &'static [(u32, u32, u32, u32, u8)];
}

/// One run of a straight-line feature program, the children of feature `parent`:
/// `f[dest..dest + VLEN] = f[parent] * x[first..first + VLEN]`, the first scaled by
/// `first_scale[mult]`. `VLEN` is the run's length rounded up to whole vectors ([`LANES`]):
/// the words past the run's end spill onto the runs written after it.
///
/// Generated code calls it with constant arguments, so it compiles to vector multiplies and
/// stores with no bounds checks (one scalar statement per feature was bound by one store per
/// cycle). It does not share a body with [`run_from_table`]: over one `[f32; VLEN]` array it
/// is a single fixed-length loop, which keeps the runtime's debug build, whose registry holds
/// over 11,000 straight-line features, to under a minute (`docs/backends/cpu.md`).
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

/// The suffix form of a feature program (`sata_codegen::FeaturePiece`), for configurations
/// whose straight-line form would outgrow the instruction caches: each piece
/// `(src, dest, len, coord, mult)` sets `f[dest..dest + len] = x[coord] first[mult] f[src..]`.
///
/// Pieces are written in whole vectors, like runs: a piece's last vector spills onto the words
/// after it (later pieces overwrite them) and reads up to [`PAD`] words past its sources (their
/// products land only in those spilled words). Pieces come in destination order, and every
/// source lies in the order below its destination, so each source is final when it is read.
#[inline(always)]
pub fn map_pieces<const XP: usize, const MP: usize>(
    x: &[f32; XP],
    f: &mut [f32; MP],
    first_scale: &FirstScales,
    pieces: &[(u32, u32, u32, u32, u8)],
) {
    for &(src, dest, len, coord, mult) in pieces {
        let (src, dest, len) = (src as usize, dest as usize, len as usize);
        let vlen = len.next_multiple_of(LANES);
        let scale = x[coord as usize] * first_scale[mult as usize];
        // A table that breaks these is a generator bug; checked once per piece, not per word.
        assert!(
            src + len <= dest && dest + vlen <= MP,
            "feature piece inside the buffer"
        );
        let f = f.as_mut_ptr();
        for k in (0..vlen).step_by(LANES) {
            // SAFETY: `src + k + LANES <= dest + vlen <= MP` and `dest + k + LANES <=
            // dest + vlen <= MP` (asserted above), so both vectors lie inside `f`, and the
            // unaligned accesses need no alignment. Each vector is read in full before one is
            // written; where the two overlap (lanes at or past `len`, since
            // `src + len <= dest`) only spilled words change.
            unsafe {
                let v = f.add(src + k).cast::<[f32; LANES]>().read_unaligned();
                f.add(dest + k)
                    .cast::<[f32; LANES]>()
                    .write_unaligned(v.map(|w| scale * w));
            }
        }
    }
}
