//! Which argument a tensor is, and the `[batch, heads, tokens, dim]` shape of one.

/// Which argument a tensor is, for error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Query,
    Key,
    Value,
    Output,
    /// The gradient of the outputs, `dy`, given to a backward.
    OutputGradient,
    /// The gradient of a final state, given to a backward.
    StateGradient,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Query => "query",
            Role::Key => "key",
            Role::Value => "value",
            Role::Output => "output",
            Role::OutputGradient => "output gradient",
            Role::StateGradient => "state gradient",
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
