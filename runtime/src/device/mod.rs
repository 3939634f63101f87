//! Backends whose kernels run in memory of their own (wgpu, CUDA): the small [`Device`] trait
//! each implements (memory, compilation, launch), and everything else written once over it:
//! [`DeviceAttention`] on [`DeviceState`]s that stay on the device, and the same kernels
//! behind the backend contract for host states.

mod attention;
mod backward;
mod contract;
mod host;
mod kernels;
mod state;

pub use attention::DeviceAttention;
pub(crate) use contract::Sealed;
pub use contract::{BackwardLaunch, Device, Launch, StateAccess};
pub use state::DeviceState;
