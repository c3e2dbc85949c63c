//! DropPath / stochastic depth (Huang et al. 2016, "Deep Networks with Stochastic Depth").

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::{broadcast_mask, is_training};

/// Configuration of a [`DropPath`] layer.
#[derive(Config, Debug)]
pub struct DropPathConfig {
    /// Probability of dropping the residual branch for a sample, in `[0, 1)`.
    pub prob: f64,
}

impl DropPathConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<DropPath, LayerConfigError> {
        Ok(DropPath {
            prob: check_prob("DropPath", self.prob)?,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> DropPath {
        or_panic(self.try_init())
    }
}

/// Drops a residual branch for whole samples: `x + drop_path(f(x))` keeps or removes `f` per
/// sample, scaling kept branches by `1 / (1 - p)` (timm's `DropPath`,
/// `torchvision.ops.StochasticDepth(mode="row")`). The identity in inference.
///
/// Apply it to the branch output, never to the sum with the shortcut.
#[derive(Module, Debug)]
pub struct DropPath {
    /// Probability of dropping the branch for a sample.
    pub prob: f64,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl DropPath {
    /// Applies per-sample branch dropping.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, ...]`
    /// - output: same as input
    pub fn forward<const D: usize>(&self, input: Tensor<D>) -> Tensor<D> {
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let keep = 1.0 - self.prob;
        let mask = broadcast_mask(input.dims(), 1, keep, &input.device()).mul_scalar(1.0 / keep);
        input * mask
    }
}

/// The linear decay rule of stochastic depth: block `l` of `depth` (0-based) gets drop rate
/// `max_rate * l / (depth - 1)`, from 0 for the first block to `max_rate` for the last
/// (Huang et al. 2016 eq. 4, counted from 0 as timm's `torch.linspace(0, drop_path_rate, depth)`).
///
/// # Errors
///
/// If `max_rate` is not a valid drop probability.
pub fn drop_path_rates(max_rate: f64, depth: usize) -> Result<Vec<f64>, LayerConfigError> {
    check_prob("DropPath", max_rate)?;
    Ok(match depth {
        0 => Vec::new(),
        1 => vec![0.0],
        _ => (0..depth)
            .map(|l| max_rate * l as f64 / (depth - 1) as f64)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let err = DropPathConfig::new(1.0).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "DropPath: drop probability must be finite and in [0, 1), got 1"
        );
        assert!(drop_path_rates(1.2, 4).is_err());
    }

    #[test]
    #[should_panic(expected = "DropPath: drop probability must be finite")]
    fn init_panics_with_the_same_message() {
        DropPathConfig::new(f64::NAN).init();
    }

    #[test]
    fn linear_rule_matches_linspace() {
        let rates = drop_path_rates(0.3, 4).unwrap();
        for (rate, expected) in rates.iter().zip([0.0, 0.1, 0.2, 0.3]) {
            assert!((rate - expected).abs() < 1e-15, "{rates:?}");
        }
        assert_eq!(drop_path_rates(0.3, 1).unwrap(), vec![0.0]);
        assert!(drop_path_rates(0.3, 0).unwrap().is_empty());
    }
}
