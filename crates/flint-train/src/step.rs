//! What a training step adds to the optimiser's update: the explicit weight penalties and the
//! max-norm projection ([`RegularizationConfig`]), and when a loss counts as diverged. The step
//! itself is [`crate::engine::Engine`]'s.

use burn::config::Config;
use flint_layers::{MaxNorm, WeightPenalty};

use crate::error::TrainError;

/// Explicit weight regularisation, as compared in Srivastava et al. 2014, Table 9.
///
/// The penalties follow Keras' convention: `l1 · Σ|w| + l2 · Σw²` over the weights (not the
/// biases, not batch-norm parameters) is added to the loss. For SGD, `l2 = λ` is the same as
/// PyTorch's `weight_decay = 2λ`. Max-norm (Srivastava et al. 2014, section 5.1) projects the
/// weight vector into each unit (a linear layer's input weights of one output, a convolution's
/// kernel of one output channel) back onto the ball of radius `max_norm` after every step.
#[derive(Config, Debug, PartialEq)]
pub struct RegularizationConfig {
    /// L1 penalty factor.
    #[config(default = 0.0)]
    pub l1: f64,
    /// L2 penalty factor.
    #[config(default = 0.0)]
    pub l2: f64,
    /// Max-norm constraint `c` on each unit's incoming weight vector; `None` leaves them free.
    #[config(default = "None")]
    pub max_norm: Option<f64>,
}

impl RegularizationConfig {
    /// Checks the values, naming the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        for (name, v) in [("L1 penalty", self.l1), ("L2 penalty", self.l2)] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(TrainError::Config(format!(
                    "{name} must be finite and >= 0, got {v}"
                )));
            }
        }
        if let Some(c) = self.max_norm
            && !(c > 0.0 && c.is_finite())
        {
            return Err(TrainError::Config(format!(
                "max-norm must be finite and positive, got {c}"
            )));
        }
        Ok(())
    }

    /// The loss penalty, when there is one.
    pub fn penalty(&self) -> Option<WeightPenalty> {
        (self.l1 > 0.0 || self.l2 > 0.0).then(|| WeightPenalty::new(self.l1, self.l2))
    }

    /// The max-norm projection, when there is one.
    pub fn constraint(&self) -> Option<MaxNorm> {
        self.max_norm.map(|max_norm| MaxNorm { max_norm })
    }

    /// A short description for tables: `none`, `L2 1e-4`, `L1 1e-5 + max-norm 3`, ...
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.l1 > 0.0 {
            parts.push(format!("L1 {:e}", self.l1));
        }
        if self.l2 > 0.0 {
            parts.push(format!("L2 {:e}", self.l2));
        }
        if let Some(c) = self.max_norm {
            parts.push(format!("max-norm {c}"));
        }
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(" + ")
        }
    }
}

/// How far above a uniform guess's cross-entropy (`ln(classes)`) a batch loss may go before a
/// run counts as diverged. Training starts near `ln(classes)` and goes down; a loss a thousand
/// times higher only comes from a run whose weights are blowing up (say Adam at lr 1e6), and
/// going on would end "successfully" with garbage.
pub const DIVERGENCE_FACTOR: f32 = 1000.0;

/// Whether a batch's mean cross-entropy over `classes` classes means the run has diverged: not
/// finite, or above [`DIVERGENCE_FACTOR`] times `ln(classes)`.
pub fn loss_diverged(loss: f32, classes: usize) -> bool {
    !loss.is_finite() || loss > DIVERGENCE_FACTOR * uniform_loss(classes)
}

/// The cross-entropy of a uniform guess over `classes` classes, `ln(classes)` (at least `ln 2`).
pub fn uniform_loss(classes: usize) -> f32 {
    (classes.max(2) as f32).ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::prelude::*;
    use flint_data::ImageSet;
    use flint_models::{Classifier, MlpConfig, ModelConfig};

    use crate::config::OptimizerConfig;
    use crate::engine::{Engine, LoopConfig};
    use crate::trainer::ImageBatches;

    fn linear_weight_norms(model: &Classifier) -> Vec<f32> {
        let Classifier::Mlp(mlp) = model else {
            unreachable!()
        };
        let w = mlp.hidden[0].linear.weight.val();
        w.powi_scalar(2)
            .sum_dim(0)
            .sqrt()
            .into_data()
            .iter::<f32>()
            .collect()
    }

    /// A small MLP without dropout and one batch of four images. Clones of the model share
    /// its (lazily initialised) parameters, so steps from clones start from the same weights.
    fn setup() -> (Classifier, ImageSet) {
        let device = Device::flex().autodiff();
        let config = ModelConfig::Mlp(
            MlpConfig::new()
                .with_hidden(vec![8])
                .with_dropout(vec![0.0]),
        );
        let model = config.init(&device);
        let pixels = (0..4 * 784).map(|i| (i * 37 % 251) as u8).collect();
        let names = (0..10).map(|c| c.to_string()).collect();
        let images = ImageSet::new("t", [1, 28, 28], pixels, vec![0, 1, 2, 3], names).unwrap();
        (model, images)
    }

    /// One plain-SGD step of `model` on `images` with `reg`, through the engine.
    fn step_from(model: Classifier, images: ImageSet, reg: &RegularizationConfig) -> Classifier {
        let optim = OptimizerConfig::new()
            .with_kind(crate::OptimizerKind::Sgd)
            .with_momentum(0.0)
            .with_lr(0.1);
        let config = LoopConfig::new()
            .with_epochs(1)
            .with_batch_size(4)
            .with_optimizer(optim)
            .with_regularization(Some(reg.clone()));
        let data = ImageBatches::new(images);
        let trained = Engine::new(config, &data).fit(model, false).unwrap();
        assert_eq!(trained.steps, 1);
        trained.model
    }

    #[test]
    fn max_norm_caps_every_unit_after_the_step() {
        let reg = RegularizationConfig::new().with_max_norm(Some(0.05));
        let (before, images) = setup();
        let after = step_from(before.clone(), images, &reg);
        assert!(linear_weight_norms(&before).iter().any(|&n| n > 0.05));
        for n in linear_weight_norms(&after) {
            assert!(n <= 0.05 * (1.0 + 1e-4), "{n}");
        }
    }

    fn first_weights(model: &Classifier) -> Vec<f32> {
        let Classifier::Mlp(mlp) = model else {
            unreachable!()
        };
        mlp.hidden[0]
            .linear
            .weight
            .val()
            .into_data()
            .iter::<f32>()
            .collect()
    }

    #[test]
    fn l2_and_l1_penalties_add_their_gradient_to_the_step() {
        // Same weights, same batch: with plain SGD the penalised step differs from the plain one
        // by exactly -lr * (2 l2 w + l1 sign(w)).
        let (before, images) = setup();
        let step = |reg: RegularizationConfig| step_from(before.clone(), images.clone(), &reg);
        let plain = step(RegularizationConfig::new());
        let l2 = step(RegularizationConfig::new().with_l2(2.5));
        let l1 = step(RegularizationConfig::new().with_l1(0.01));
        let (w, p, a, b) = (
            first_weights(&before),
            first_weights(&plain),
            first_weights(&l2),
            first_weights(&l1),
        );
        for i in 0..w.len() {
            assert!((a[i] - p[i] + 0.5 * w[i]).abs() < 1e-5, "l2 at {i}");
            assert!(
                (b[i] - p[i] + 0.001 * w[i].signum()).abs() < 1e-5,
                "l1 at {i}"
            );
        }
    }

    #[test]
    fn validation_and_description() {
        assert!(
            RegularizationConfig::new()
                .with_l1(-1.0)
                .validate()
                .is_err()
        );
        assert!(
            RegularizationConfig::new()
                .with_max_norm(Some(0.0))
                .validate()
                .unwrap_err()
                .to_string()
                .contains("max-norm must be finite and positive, got 0")
        );
        assert_eq!(RegularizationConfig::new().describe(), "none");
        assert_eq!(
            RegularizationConfig::new()
                .with_l2(1e-4)
                .with_max_norm(Some(3.0))
                .describe(),
            "L2 1e-4 + max-norm 3"
        );
    }
}
