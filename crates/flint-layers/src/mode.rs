//! The training/inference rule shared by every stochastic layer.

use burn::module::{Flag, Param};
use burn::tensor::{Device, Tensor};

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

/// A Bernoulli(`keep`) mask with one value per index of the first `leading` axes of `dims`
/// (1 elsewhere), to broadcast over the input: `leading` 1 drops whole samples (DropPath), 2
/// whole channels (SpatialDropout, FeatureAlphaDropout). Drawing only the small mask, not one
/// number per element, is what makes these layers cheap.
pub(crate) fn broadcast_mask<const D: usize>(
    dims: [usize; D],
    leading: usize,
    keep: f64,
    device: &Device,
) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[..leading].copy_from_slice(&dims[..leading]);
    crate::random::bernoulli(shape, keep, 1.0, device)
}
