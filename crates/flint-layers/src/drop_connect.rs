//! DropConnect (Wan et al. 2013, "Regularization of Neural Networks using DropConnect").

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::is_training;
use crate::random;

/// Configuration of a [`DropConnect`] linear layer.
#[derive(Config, Debug)]
pub struct DropConnectConfig {
    /// The wrapped linear layer's configuration.
    pub linear: LinearConfig,
    /// Probability of dropping each weight, in `[0, 1)`.
    pub prob: f64,
}

impl DropConnectConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self, device: &Device) -> Result<DropConnect, LayerConfigError> {
        let prob = check_prob("DropConnect", self.prob)?;
        if self.linear.d_input == 0 {
            return Err(LayerConfigError::Zero {
                layer: "DropConnect",
                field: "d_input",
            });
        }
        if self.linear.d_output == 0 {
            return Err(LayerConfigError::Zero {
                layer: "DropConnect",
                field: "d_output",
            });
        }
        Ok(DropConnect {
            linear: self.linear.init(device),
            prob,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self, device: &Device) -> DropConnect {
        or_panic(self.try_init(device))
    }
}

/// A linear layer whose **weights** (not activations) are dropped during training.
///
/// Training: `y = x (W ⊙ M) / (1 - p) + b`, `M ~ Bernoulli(1 - p)` elementwise over the
/// `[d_input, d_output]` weight matrix; the bias is not masked, as in the paper. One mask is
/// drawn per forward call and shared by the batch (the paper draws one per example, which costs a
/// weight-sized matmul per example; sharing is what common implementations do).
///
/// Inference: the plain linear layer with `W`. With the inverted `1/(1-p)` scaling this is the
/// mean of the training-time layer; the paper's Gaussian moment-matching inference is not
/// implemented.
///
/// The inner [`Linear`] keeps burn's parameter names (`linear.weight`, `linear.bias`).
#[derive(Module, Debug)]
pub struct DropConnect {
    /// The wrapped linear layer.
    pub linear: Linear,
    /// Probability of dropping each weight.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl DropConnect {
    /// Applies the masked linear transformation.
    ///
    /// # Shapes
    ///
    /// - input: `[..., d_input]`
    /// - output: `[..., d_output]`
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return self.linear.forward(input);
        }
        let weight = self.linear.weight.val();
        let keep = 1.0 - self.prob;
        let mask = random::bernoulli(weight.dims(), keep, (1.0 / keep) as f32, &weight.device());
        burn::tensor::module::linear(
            input,
            weight * mask,
            self.linear.bias.as_ref().map(|bias| bias.val()),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let device = Device::flex();
        let err = DropConnectConfig::new(LinearConfig::new(4, 3), 1.0)
            .try_init(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "DropConnect: drop probability must be finite and in [0, 1), got 1"
        );
    }

    #[test]
    fn rejects_zero_sized_layer() {
        let device = Device::flex();
        let err = DropConnectConfig::new(LinearConfig::new(0, 3), 0.5)
            .try_init(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "DropConnect: d_input must be at least 1, got 0"
        );
        let err = DropConnectConfig::new(LinearConfig::new(3, 0), 0.5)
            .try_init(&device)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "DropConnect: d_output must be at least 1, got 0"
        );
    }

    #[test]
    #[should_panic(expected = "DropConnect: drop probability must be finite and in [0, 1), got -1")]
    fn init_panics_with_the_same_message() {
        DropConnectConfig::new(LinearConfig::new(2, 2), -1.0).init(&Device::flex());
    }
}
