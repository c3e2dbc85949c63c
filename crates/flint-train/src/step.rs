//! One optimisation step, shared by the trainer and by every loop built on flint-train (the
//! experiments): cross-entropy, the explicit weight penalties, gradient clipping, the optimiser
//! step, then the max-norm projection.

use burn::config::Config;
use burn::nn::loss::CrossEntropyLoss;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use flint_layers::{MaxNorm, WeightPenalty};
use flint_models::Classifier;

use crate::config::OptimizerConfig;
use crate::error::TrainError;
use crate::optim::clip_grad_norm;

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

/// How each step updates the model.
#[derive(Debug, Clone)]
pub struct StepRule<'a> {
    /// Optimiser settings (for the gradient clipping norm).
    pub optimizer: &'a OptimizerConfig,
    /// Penalties and constraint (`None`: none).
    pub regularization: Option<&'a RegularizationConfig>,
}

/// What a step produced.
pub struct StepOutput {
    /// The updated model.
    pub model: Classifier,
    /// The batch's mean cross-entropy (without the penalty), before the update.
    pub loss: f32,
    /// The batch's logits, before the update.
    pub logits: Tensor<2>,
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

/// One step on a batch at learning rate `lr`. A cross-entropy that diverged
/// ([`loss_diverged`]: not finite, or exploded) returns `Err(value)` before any update; the
/// caller names the epoch and batch. (Only the data loss is read back, one device sync per
/// step: a non-finite weight makes it non-finite too, so the penalty needs no check of its
/// own.)
pub fn training_step(
    model: Classifier,
    optimizer: &mut ModuleOptimizer,
    loss_fn: &CrossEntropyLoss,
    images: Tensor<4>,
    targets: Tensor<1, Int>,
    lr: f64,
    rule: &StepRule<'_>,
) -> Result<StepOutput, f32> {
    let logits = model.forward(images);
    let data_loss = loss_fn.forward(logits.clone(), targets);
    let loss_value: f32 = data_loss.clone().into_scalar();
    if loss_diverged(loss_value, logits.dims()[1]) {
        return Err(loss_value);
    }
    let loss = match rule.regularization.and_then(RegularizationConfig::penalty) {
        Some(p) => data_loss + p.penalty(&model, &logits.device()),
        None => data_loss,
    };
    let mut grads = GradientsParams::from_grads(loss.backward(), &model);
    if let Some(max_norm) = rule.optimizer.clip_grad_norm {
        clip_grad_norm(&model, &mut grads, max_norm);
    }
    let mut model = optimizer.step(lr, model, grads);
    if let Some(constraint) = rule
        .regularization
        .and_then(RegularizationConfig::constraint)
    {
        model = constraint.apply(model);
    }
    Ok(StepOutput {
        model,
        loss: loss_value,
        logits,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::loss::CrossEntropyLossConfig;
    use flint_models::{MlpConfig, ModelConfig};

    use crate::optim::build_optimizer;

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

    /// A small MLP without dropout and one random batch. Clones of the model share its
    /// (lazily initialised) parameters, so steps from clones start from the same weights
    /// whatever else draws from burn's process-wide generator meanwhile.
    fn setup() -> (Classifier, Tensor<4>) {
        let device = Device::flex().autodiff();
        let config = ModelConfig::Mlp(
            MlpConfig::new()
                .with_hidden(vec![8])
                .with_dropout(vec![0.0]),
        );
        let model = config.init(&device);
        let images = Tensor::<4>::random(
            [4, 1, 28, 28],
            burn::tensor::Distribution::Uniform(0.0, 1.0),
            &device,
        );
        (model, images)
    }

    /// One plain-SGD step of `model` on `images` with `reg`.
    fn step_from(model: Classifier, images: Tensor<4>, reg: &RegularizationConfig) -> Classifier {
        let device = images.device();
        let optim = OptimizerConfig::new()
            .with_kind(crate::OptimizerKind::Sgd)
            .with_momentum(0.0);
        let mut optimizer = build_optimizer(&optim);
        let ce = CrossEntropyLossConfig::new().init(&device);
        let targets = Tensor::<1, Int>::from_ints([0, 1, 2, 3], &device);
        let rule = StepRule {
            optimizer: &optim,
            regularization: Some(reg),
        };
        let out = training_step(model, &mut optimizer, &ce, images, targets, 0.1, &rule)
            .unwrap_or_else(|v| panic!("loss {v}"));
        assert!(out.loss.is_finite());
        out.model
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
