//! Channel-wise dropout: PyTorch's `Dropout1d`/`Dropout2d`, Keras' `SpatialDropout1D/2D`.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::{broadcast_mask, is_training};

/// Configuration of a [`SpatialDropout`] layer.
#[derive(Config, Debug)]
pub struct SpatialDropoutConfig {
    /// Probability of zeroing a whole channel, in `[0, 1)`.
    pub prob: f64,
}

impl SpatialDropoutConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<SpatialDropout, LayerConfigError> {
        Ok(SpatialDropout {
            prob: check_prob("SpatialDropout", self.prob)?,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer.
    ///
    /// # Panics
    ///
    /// With the message of [`try_init`](Self::try_init)'s error if the config is invalid.
    pub fn init(&self) -> SpatialDropout {
        or_panic(self.try_init())
    }
}

/// Zeroes whole channels (feature maps) at random during training, scaling the kept ones by
/// `1 / (1 - prob)`; the identity in inference.
///
/// Adjacent activations of a feature map are strongly correlated, so element-wise dropout
/// barely regularises convolutions; dropping the whole map does (Tompson et al. 2015,
/// "Efficient Object Localization Using Convolutional Networks").
///
/// One mask value per `(sample, channel)`: for `[N, C, L]` inputs this is `Dropout1d`, for
/// `[N, C, H, W]` `Dropout2d`, for `[N, C, D, H, W]` `Dropout3d`.
#[derive(Module, Debug)]
pub struct SpatialDropout {
    /// Probability of zeroing a channel.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl SpatialDropout {
    /// Applies channel dropout.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, ...]` (rank 3 or more)
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        assert!(
            D >= 3,
            "SpatialDropout expects [batch, channels, spatial...] (rank >= 3), got rank {D}"
        );
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let keep = 1.0 - self.prob;
        // The mask is tiny ([N, C, 1, ..]): scale it, then one broadcast multiply on the input.
        let mask = broadcast_mask(input.dims(), 2, keep, &input.device()).mul_scalar(1.0 / keep);
        input * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_one() {
        let err = SpatialDropoutConfig::new(1.0).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "SpatialDropout: drop probability must be finite and in [0, 1), got 1"
        );
    }

    #[test]
    fn rejects_negative_and_nan() {
        assert!(SpatialDropoutConfig::new(-0.1).try_init().is_err());
        assert!(SpatialDropoutConfig::new(f64::NAN).try_init().is_err());
    }

    #[test]
    #[should_panic(
        expected = "SpatialDropout: drop probability must be finite and in [0, 1), got 1.5"
    )]
    fn init_panics_with_the_same_message() {
        SpatialDropoutConfig::new(1.5).init();
    }
}
