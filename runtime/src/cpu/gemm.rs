//! Matrix products through `matrixmultiply`, in f32 (`sgemm`) or f64 (`dgemm`), over strided
//! views so that transposes cost no copies. The bounds of every product are checked once,
//! here, so callers stay safe code.

use matrixmultiply::{dgemm, sgemm};

/// An element type `matrixmultiply` multiplies.
pub trait GemmFloat: Copy {
    /// `C = A B + beta C` on raw strided operands.
    ///
    /// # Safety
    /// As for `matrixmultiply::sgemm`: every element addressed through the strides lies in
    /// its allocation, and `c` aliases neither operand.
    unsafe fn gemm_raw(
        sizes: (usize, usize, usize),
        a: (*const Self, isize, isize),
        b: (*const Self, isize, isize),
        beta: Self,
        c: (*mut Self, isize, isize),
    );
}

impl GemmFloat for f32 {
    unsafe fn gemm_raw(
        (n, k, p): (usize, usize, usize),
        a: (*const f32, isize, isize),
        b: (*const f32, isize, isize),
        beta: f32,
        c: (*mut f32, isize, isize),
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            sgemm(
                n, k, p, 1.0, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2,
            )
        }
    }
}

impl GemmFloat for f64 {
    unsafe fn gemm_raw(
        (n, k, p): (usize, usize, usize),
        a: (*const f64, isize, isize),
        b: (*const f64, isize, isize),
        beta: f64,
        c: (*mut f64, isize, isize),
    ) {
        // SAFETY: forwarded from this function's contract.
        unsafe {
            dgemm(
                n, k, p, 1.0, a.0, a.1, a.2, b.0, b.1, b.2, beta, c.0, c.1, c.2,
            )
        }
    }
}

/// A matrix view into `data`: element `(i, j)` at `i * rows + j * cols`.
#[derive(Clone, Copy)]
pub struct View<'a, F = f32> {
    pub data: &'a [F],
    pub rows: usize,
    pub cols: usize,
}

impl<'a, F> View<'a, F> {
    /// Row-major with `stride` words per row.
    pub fn rows(data: &'a [F], stride: usize) -> Self {
        Self {
            data,
            rows: stride,
            cols: 1,
        }
    }

    /// The transpose of a row-major matrix with `stride` words per row.
    pub fn transposed(data: &'a [F], stride: usize) -> Self {
        Self {
            data,
            rows: 1,
            cols: stride,
        }
    }

    /// Whether every element of an `n x k` view lies inside `data`.
    fn covers(&self, n: usize, k: usize) -> bool {
        n == 0 || k == 0 || (n - 1) * self.rows + (k - 1) * self.cols < self.data.len()
    }
}

/// `C = A B + beta C` for `A` `n x k`, `B` `k x p`, and `C` `n x p` row-major with `stride`
/// words per row.
pub fn gemm<F: GemmFloat>(
    (n, k, p): (usize, usize, usize),
    a: View<'_, F>,
    b: View<'_, F>,
    beta: F,
    c: &mut [F],
    stride: usize,
) {
    if n == 0 || p == 0 {
        return;
    }
    assert!(
        a.covers(n, k) && b.covers(k, p),
        "a product's operand out of range"
    );
    assert!(
        (n - 1) * stride + p <= c.len(),
        "a product's result out of range"
    );
    let strided = |v: View<'_, F>| (v.data.as_ptr(), v.rows as isize, v.cols as isize);
    // SAFETY: the asserts above keep every element the product reads from `a` and `b` and
    // writes to `c` inside those slices; `c` is an exclusive borrow, so it aliases neither
    // operand. (With k = 0 the product only scales C by beta.)
    unsafe {
        F::gemm_raw(
            (n, k, p),
            strided(a),
            strided(b),
            beta,
            (c.as_mut_ptr(), stride as isize, 1),
        );
    }
}
