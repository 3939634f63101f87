//! States: the header every state carries ([`StateHeader`]) and the host [`State`]. Device
//! states (`crate::device::DeviceState`) carry the same header over device memory.

mod header;
mod host;

pub use header::{Accumulation, StateHeader};
pub use host::State;
