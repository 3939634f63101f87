//! Borrowed input tensors and owned outputs, `[batch, heads, tokens, dim]` row-major.
//!
//! The runtime takes plain slices with an explicit shape rather than `ndarray` views: the same
//! contiguous layout is what the GPU backends upload, a slice costs nothing to make from any
//! array library, and shapes are checked once at the boundary.

use crate::element::Element;
use crate::error::SataError;

/// Which argument a tensor is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Query,
    Key,
    Value,
    Output,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Query => "query",
            Role::Key => "key",
            Role::Value => "value",
            Role::Output => "output",
        })
    }
}

/// The shape `[batch, heads, tokens, dim]` of a contiguous row-major tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub batch: usize,
    pub heads: usize,
    pub tokens: usize,
    pub dim: usize,
}

impl Shape {
    pub fn new(batch: usize, heads: usize, tokens: usize, dim: usize) -> Self {
        Self {
            batch,
            heads,
            tokens,
            dim,
        }
    }

    /// Number of elements, or `None` on overflow.
    pub fn checked_len(&self) -> Option<usize> {
        self.batch
            .checked_mul(self.heads)?
            .checked_mul(self.tokens)?
            .checked_mul(self.dim)
    }

    /// Number of (batch, head) pairs.
    pub fn lanes(&self) -> usize {
        self.batch * self.heads
    }

    pub fn as_array(&self) -> [usize; 4] {
        [self.batch, self.heads, self.tokens, self.dim]
    }
}

impl From<[usize; 4]> for Shape {
    fn from(s: [usize; 4]) -> Self {
        Self::new(s[0], s[1], s[2], s[3])
    }
}

/// A borrowed, shape-checked tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a, T> {
    data: &'a [T],
    shape: Shape,
    role: Role,
}

impl<'a, T: Element> TensorRef<'a, T> {
    /// Wraps `data` as a `[batch, heads, tokens, dim]` tensor; fails if the length does not
    /// match the shape.
    pub fn new(role: Role, data: &'a [T], shape: impl Into<Shape>) -> Result<Self, SataError> {
        let shape = shape.into();
        let expected = shape.checked_len().unwrap_or(usize::MAX);
        if data.len() != expected {
            return Err(SataError::LengthMismatch {
                role,
                len: data.len(),
                shape: shape.as_array(),
                expected,
            });
        }
        Ok(Self { data, shape, role })
    }

    /// Shorthand for a query tensor.
    pub fn query(data: &'a [T], shape: impl Into<Shape>) -> Result<Self, SataError> {
        Self::new(Role::Query, data, shape)
    }

    /// Shorthand for a key tensor.
    pub fn key(data: &'a [T], shape: impl Into<Shape>) -> Result<Self, SataError> {
        Self::new(Role::Key, data, shape)
    }

    /// Shorthand for a value tensor.
    pub fn value(data: &'a [T], shape: impl Into<Shape>) -> Result<Self, SataError> {
        Self::new(Role::Value, data, shape)
    }

    pub fn data(&self) -> &'a [T] {
        self.data
    }

    pub fn shape(&self) -> Shape {
        self.shape
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The `tokens x dim` block of one (batch, head) lane, `lane = batch * heads + head`.
    pub(crate) fn lane(&self, lane: usize) -> &'a [T] {
        let n = self.shape.tokens * self.shape.dim;
        &self.data[lane * n..(lane + 1) * n]
    }

    /// The same tensor viewed as f32 (`None` unless `T` is f32).
    #[cfg_attr(not(feature = "wgpu"), allow(dead_code))]
    pub(crate) fn as_f32(&self) -> Option<TensorRef<'a, f32>> {
        T::as_f32(self.data).map(|data| TensorRef {
            data,
            shape: self.shape,
            role: self.role,
        })
    }

    /// Fails on the first NaN or infinity.
    pub(crate) fn check_finite(&self) -> Result<(), SataError> {
        match self.data.iter().position(|x| !x.is_finite()) {
            None => Ok(()),
            Some(index) => Err(SataError::NonFinite {
                role: self.role,
                index,
                value: self.data[index].widen(),
            }),
        }
    }
}

/// An owned output tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor<T> {
    pub data: Vec<T>,
    pub shape: Shape,
}
