//! The training/inference rule shared by every stochastic layer.

use burn::module::{Flag, Param};
use burn::tensor::Device;

/// Whether a layer with this `training` flag acts as in training on `device`.
///
/// The same rule as burn's `Dropout` and `BatchNorm` (burn keeps it inline, not as a public
/// helper): the device must be an autodiff device (a backward is possible at all) **and** the
/// layer's flag must be on (it takes part in training: `freeze()`, `freeze_group(..)` and
/// `valid()` clear it). Keeping one rule makes `freeze()`/`valid()` act the same on burn's
/// layers and on flint's.
pub fn is_training(training: &Param<Flag>, device: &Device) -> bool {
    training.is_enabled() && device.is_autodiff()
}
