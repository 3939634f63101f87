//! The generation state of a model: one SATA state per layer, saved as project checkpoints.

use std::path::{Path, PathBuf};

use sata_runtime::State;

use super::error::to_candle;

/// The memory of a model with SATA layers, shaped like candle's recurrent models: one f32
/// [`State`] per layer, in layer order, passed as `&mut` through `forward_with_state`. Its
/// size is fixed by the configuration, whatever the number of tokens it has seen.
#[derive(Debug, Clone)]
pub struct RecurrentState {
    pub layers: Vec<State<f32>>,
}

impl RecurrentState {
    pub fn new(layers: Vec<State<f32>>) -> Self {
        Self { layers }
    }

    /// Tokens seen (every layer has seen the same ones); 0 for a model with no layers.
    pub fn tokens(&self) -> u64 {
        self.layers.first().map_or(0, State::tokens)
    }

    fn layer_path(dir: &Path, layer: usize) -> PathBuf {
        dir.join(format!("layer-{layer}.sata"))
    }

    /// Writes `dir/layer-<i>.sata` for each layer (the project's checkpoint format, each file
    /// written atomically), creating `dir` if needed.
    pub fn save(&self, dir: impl AsRef<Path>) -> candle_core::Result<()> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| {
            candle_core::Error::Msg(format!("cannot create {}: {e}", dir.display()))
        })?;
        for (i, state) in self.layers.iter().enumerate() {
            state.save(Self::layer_path(dir, i)).map_err(to_candle)?;
        }
        Ok(())
    }

    /// Reads the states of `layers` layers written by [`save`](Self::save); fails if a file is
    /// missing or corrupt, or if the layers have seen different numbers of tokens.
    pub fn load(dir: impl AsRef<Path>, layers: usize) -> candle_core::Result<Self> {
        let dir = dir.as_ref();
        let layers = (0..layers)
            .map(|i| State::load(Self::layer_path(dir, i)).map_err(to_candle))
            .collect::<candle_core::Result<Vec<_>>>()?;
        if let Some(first) = layers.first()
            && let Some((i, other)) = layers
                .iter()
                .enumerate()
                .find(|(_, s)| s.tokens() != first.tokens())
        {
            return Err(candle_core::Error::Msg(format!(
                "{}: layer {i} has seen {} tokens, layer 0 {}; not one model's state",
                dir.display(),
                other.tokens(),
                first.tokens()
            )));
        }
        Ok(Self { layers })
    }
}
