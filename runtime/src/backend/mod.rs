//! Backends: their names, the selection of the one that runs, the one contract every backend
//! implements for host states ([`HostBackend`]), and opening the chosen one.

mod contract;
mod kind;
mod lane_backward;
mod open;
mod select;

pub(crate) use contract::HostBackend;
pub use kind::{BackendKind, BackendRequest, BackendUnavailable, Selection, UnknownBackend};
pub(crate) use lane_backward::{BatchBackward, LaneBackward, LaneGradients, LaneInputs};
pub(crate) use open::{of_f32, open};
pub(crate) use select::resolve;
pub use select::select;
