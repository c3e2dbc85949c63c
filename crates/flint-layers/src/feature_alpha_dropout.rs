//! Feature (channel-wise) alpha dropout: PyTorch's `nn.FeatureAlphaDropout`.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;

use crate::alpha_dropout::alpha_dropout_with_mask;
use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::{broadcast_mask, is_training};

/// Configuration of a [`FeatureAlphaDropout`] layer.
#[derive(Config, Debug)]
pub struct FeatureAlphaDropoutConfig {
    /// Probability of dropping a channel, in `[0, 1)`.
    pub prob: f64,
}

impl FeatureAlphaDropoutConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<FeatureAlphaDropout, LayerConfigError> {
        Ok(FeatureAlphaDropout {
            prob: check_prob("FeatureAlphaDropout", self.prob)?,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> FeatureAlphaDropout {
        or_panic(self.try_init())
    }
}

/// [`AlphaDropout`](crate::AlphaDropout)'s math with one mask value per `(sample, channel)`,
/// like [`SpatialDropout`](crate::SpatialDropout): whole channels go to SELU's saturation value.
/// The identity in inference.
#[derive(Module, Debug)]
pub struct FeatureAlphaDropout {
    /// Probability of dropping a channel.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl FeatureAlphaDropout {
    /// Applies channel-wise alpha dropout.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, ...]` (rank 3 or more)
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        assert!(
            D >= 3,
            "FeatureAlphaDropout expects [batch, channels, spatial...] (rank >= 3), got rank {D}"
        );
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let keep = broadcast_mask(input.dims(), 2, 1.0 - self.prob, &input.device());
        alpha_dropout_with_mask(input, keep, self.prob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let err = FeatureAlphaDropoutConfig::new(-0.1).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "FeatureAlphaDropout: drop probability must be finite and in [0, 1), got -0.1"
        );
        assert!(FeatureAlphaDropoutConfig::new(1.0).try_init().is_err());
    }

    #[test]
    #[should_panic(expected = "FeatureAlphaDropout: drop probability must be finite")]
    fn init_panics_with_the_same_message() {
        FeatureAlphaDropoutConfig::new(f64::NAN).init();
    }
}
