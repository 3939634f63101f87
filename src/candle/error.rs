//! The runtime's errors as candle errors, keeping the project's message.

use sata_runtime::SataError;

/// A [`SataError`] as a candle error: `candle_core::Error::Wrapped`, whose message is the
/// runtime's own (shape, NaN, configuration, checkpoint).
pub(crate) fn to_candle(e: SataError) -> candle_core::Error {
    candle_core::Error::wrap(e)
}
