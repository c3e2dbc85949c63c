//! Alpha dropout (Klambauer et al. 2017, "Self-Normalizing Neural Networks").

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::is_training;
use crate::random;

/// SELU's saturation value `-lambda * alpha`, the value dropped units are set to.
pub const SELU_ALPHA_PRIME: f64 = -1.050_700_987_355_480_5 * 1.673_263_242_354_377_3;

/// Configuration of an [`AlphaDropout`] layer.
#[derive(Config, Debug)]
pub struct AlphaDropoutConfig {
    /// Probability of dropping a unit, in `[0, 1)`.
    pub prob: f64,
}

impl AlphaDropoutConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<AlphaDropout, LayerConfigError> {
        Ok(AlphaDropout {
            prob: check_prob("AlphaDropout", self.prob)?,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> AlphaDropout {
        or_panic(self.try_init())
    }
}

/// Dropout for self-normalising (SELU) networks: dropped units are set to SELU's negative
/// saturation `α' = -λα` instead of 0, then an affine map `a·x + b` restores the input's mean
/// and variance, so activations stay normalised (PyTorch's `nn.AlphaDropout`).
///
/// With keep probability `q = 1 - p`: `a = (q (1 + p α'²))^(-1/2)`, `b = -a α' p`. For input of
/// zero mean and unit variance the output has zero mean and unit variance. The identity in
/// inference.
#[derive(Module, Debug)]
pub struct AlphaDropout {
    /// Probability of dropping a unit.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl AlphaDropout {
    /// Applies alpha dropout element-wise.
    ///
    /// # Shapes
    ///
    /// - input: `[...]`
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let keep = random::bernoulli(input.dims(), 1.0 - self.prob, 1.0, &input.device());
        alpha_dropout_with_mask(input, keep, self.prob)
    }
}

/// `a (x·m + α'(1 - m)) + b` for a keep mask `m` that broadcasts against `x`.
pub(crate) fn alpha_dropout_with_mask<const D: usize>(
    input: Tensor<D>,
    keep: Tensor<D>,
    prob: f64,
) -> Tensor<D> {
    let q = 1.0 - prob;
    let alpha = SELU_ALPHA_PRIME;
    let a = 1.0 / (q * (1.0 + prob * alpha * alpha)).sqrt();
    let b = -a * alpha * prob;
    // Rearranged as a·m·(x - α') + (aα' + b): two element-wise passes over the input.
    input
        .sub_scalar(alpha)
        .mul(keep.mul_scalar(a))
        .add_scalar(a * alpha + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let err = AlphaDropoutConfig::new(1.0).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "AlphaDropout: drop probability must be finite and in [0, 1), got 1"
        );
        assert!(AlphaDropoutConfig::new(-0.5).try_init().is_err());
        assert!(AlphaDropoutConfig::new(f64::INFINITY).try_init().is_err());
    }

    #[test]
    #[should_panic(expected = "AlphaDropout: drop probability must be finite and in [0, 1), got 2")]
    fn init_panics_with_the_same_message() {
        AlphaDropoutConfig::new(2.0).init();
    }

    #[test]
    fn alpha_prime_matches_pytorch() {
        // torch.nn.functional.alpha_dropout uses -1.7580993408473766.
        assert!((SELU_ALPHA_PRIME + 1.758_099_340_847_376_6).abs() < 1e-15);
    }
}
