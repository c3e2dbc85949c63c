//! Element-wise (inverted) dropout, Srivastava et al. 2014: PyTorch's `nn.Dropout`, Keras'
//! `Dropout`. The same layer as burn's `Dropout` (same config, fields and record, so models
//! and checkpoints carry over), with its mask drawn by [`crate::random`]: on the CPU backends
//! that makes the reference MLP's training step about a quarter faster.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::is_training;
use crate::random;

/// Configuration of a [`Dropout`] layer.
#[derive(Config, Debug)]
pub struct DropoutConfig {
    /// The probability of zeroing each element, in `[0, 1)`.
    pub prob: f64,
}

impl DropoutConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<Dropout, LayerConfigError> {
        Ok(Dropout {
            prob: check_prob("Dropout", self.prob)?,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> Dropout {
        or_panic(self.try_init())
    }
}

/// Zeroes each element with probability `p` during training and scales the kept ones by
/// `1 / (1 - p)`, so the expected activation is unchanged and inference is the identity.
#[derive(Module, Debug)]
pub struct Dropout {
    /// The drop probability.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl Dropout {
    /// Applies dropout.
    ///
    /// # Shapes
    ///
    /// - input: `[...]`
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let keep = 1.0 - self.prob;
        // The scale is in the mask: one multiply on the input, forward and backward.
        let mask = random::bernoulli(input.dims(), keep, (1.0 / keep) as f32, &input.device());
        input * mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let err = DropoutConfig::new(1.0).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "Dropout: drop probability must be finite and in [0, 1), got 1"
        );
        assert!(DropoutConfig::new(-0.1).try_init().is_err());
        assert!(DropoutConfig::new(f64::NAN).try_init().is_err());
    }

    #[test]
    #[should_panic(expected = "Dropout: drop probability must be finite and in [0, 1), got 1.5")]
    fn init_panics_with_the_same_message() {
        DropoutConfig::new(1.5).init();
    }
}
