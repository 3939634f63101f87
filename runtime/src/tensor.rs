//! Borrowed input tensors and owned outputs, `[batch, heads, tokens, dim]` row-major.
//!
//! The runtime takes plain slices with an explicit shape rather than `ndarray` views: the same
//! contiguous layout is what the GPU backends upload, a slice costs nothing to make from any
//! array library, and shapes are checked once at the boundary.

use crate::element::Element;
use crate::error::SataError;
use crate::shape::{Role, Shape};

/// A borrowed, shape-checked tensor.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a, T> {
    data: &'a [T],
    shape: Shape,
    role: Role,
}

impl<'a, T: Copy> TensorRef<'a, T> {
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

    /// Shorthand for the gradient of outputs (`dy`, given to a backward).
    pub fn output_gradient(data: &'a [T], shape: impl Into<Shape>) -> Result<Self, SataError> {
        Self::new(Role::OutputGradient, data, shape)
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

    /// This tensor's role and shape over `data`, a converted copy of its words (same length).
    pub(crate) fn over<'b, U: Copy>(&self, data: &'b [U]) -> TensorRef<'b, U> {
        debug_assert_eq!(
            data.len(),
            self.data.len(),
            "a copy has the tensor's length"
        );
        TensorRef {
            data,
            shape: self.shape,
            role: self.role,
        }
    }
}

impl<'a, T: Element> TensorRef<'a, T> {
    /// The `tokens x dim` block of one (batch, head) lane, `lane = batch * heads + head`.
    pub(crate) fn lane(&self, lane: usize) -> &'a [T] {
        let n = self.shape.tokens * self.shape.dim;
        &self.data[lane * n..(lane + 1) * n]
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

/// The borrowed `(q, k, v)` of a causal call, as every backend receives them.
pub(crate) type Qkv<'a, T> = (TensorRef<'a, T>, TensorRef<'a, T>, TensorRef<'a, T>);
