//! Multiplicative Gaussian noise (Srivastava et al. 2014, section 10): Keras' `GaussianDropout`.

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::is_training;
use crate::random;

/// Configuration of a [`GaussianDropout`] layer.
#[derive(Config, Debug)]
pub struct GaussianDropoutConfig {
    /// The drop rate `p` of the Bernoulli dropout being imitated, in `[0, 1)`.
    pub prob: f64,
}

impl GaussianDropoutConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<GaussianDropout, LayerConfigError> {
        Ok(GaussianDropout {
            prob: check_prob("GaussianDropout", self.prob)?,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> GaussianDropout {
        or_panic(self.try_init())
    }
}

/// Multiplies each activation by noise drawn from `N(1, p / (1 - p))` during training: the
/// same mean and variance as inverted Bernoulli dropout's `{0, 1/(1-p)}` mask, without zeros.
/// The identity in inference (burn's `GaussianNoise` is additive; this one is multiplicative).
#[derive(Module, Debug)]
pub struct GaussianDropout {
    /// The equivalent Bernoulli drop rate.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl GaussianDropout {
    /// The standard deviation of the multiplicative noise, `sqrt(p / (1 - p))`.
    pub fn std(&self) -> f64 {
        (self.prob / (1.0 - self.prob)).sqrt()
    }

    /// Applies multiplicative Gaussian noise.
    ///
    /// # Shapes
    ///
    /// - input: `[...]`
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let noise = random::normal(input.dims(), 1.0, self.std(), &input.device());
        input * noise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let err = GaussianDropoutConfig::new(1.0).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "GaussianDropout: drop probability must be finite and in [0, 1), got 1"
        );
        assert!(GaussianDropoutConfig::new(-1e-9).try_init().is_err());
    }

    #[test]
    #[should_panic(expected = "GaussianDropout: drop probability must be finite")]
    fn init_panics_with_the_same_message() {
        GaussianDropoutConfig::new(f64::NEG_INFINITY).init();
    }

    #[test]
    fn noise_std_matches_bernoulli_dropout() {
        let layer = GaussianDropoutConfig::new(0.5).init();
        assert!((layer.std() - 1.0).abs() < 1e-12);
    }
}
