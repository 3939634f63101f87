//! The floating-point types the runtime computes in.

use std::fmt::{Debug, Display};

/// Element type tag, as stored in checkpoints and reported in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F64,
}

impl DType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F64 => 8,
        }
    }

    /// NumPy-style name (`float32`, `float64`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
        }
    }
}

impl Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for f64 {}
}

/// `f32` (primary) or `f64`. Inputs, outputs and the state share the element type.
pub trait Element:
    num_traits::Float + Debug + Display + Default + Send + Sync + 'static + sealed::Sealed
{
    /// The tag of this type.
    const DTYPE: DType;
    /// Converts a weight computed in f64 by the generator (rounding for f32).
    fn from_f64(x: f64) -> Self;
    /// Widens to f64 (exact).
    fn widen(self) -> f64;
    /// Appends the little-endian bytes of `self`.
    fn write_le(self, out: &mut Vec<u8>);
    /// Reads from exactly `Self::DTYPE.size()` little-endian bytes.
    fn read_le(bytes: &[u8]) -> Self;
}

macro_rules! impl_element {
    ($t:ty, $tag:expr) => {
        impl Element for $t {
            const DTYPE: DType = $tag;
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            fn widen(self) -> f64 {
                self as f64
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(bytes: &[u8]) -> Self {
                let mut raw = [0u8; std::mem::size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    };
}

impl_element!(f32, DType::F32);
impl_element!(f64, DType::F64);

/// `to[i] = from[i]` rounded to `T`, for the f64 computations of an element type's results.
pub(crate) fn narrow<T: Element>(from: &[f64], to: &mut [T]) {
    to.iter_mut()
        .zip(from)
        .for_each(|(t, &f)| *t = T::from_f64(f));
}
