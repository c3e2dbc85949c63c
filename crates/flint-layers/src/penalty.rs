//! L1/L2 weight penalties to add to a loss (Keras' `kernel_regularizer=l1_l2(..)`).

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor};

use crate::visit::{ParamPath, ParamVisitor, visit_params};

/// `l1 · Σ|w| + l2 · Σw²` over a model's weights, a term to add to the loss.
///
/// Only parameters named `weight` count (the kernels of `Linear`, `ConvNd`, `Embedding`, ...):
/// biases, norm layers' `gamma`/`beta` and running statistics are left out, as Keras' kernel
/// regularisers and the usual "no decay on bias and norm" practice do. Note that PyTorch's
/// `weight_decay = λ` corresponds to `l2 = λ / 2` here for plain SGD.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct WeightPenalty {
    /// Coefficient of the L1 term.
    pub l1: f64,
    /// Coefficient of the L2 (squared) term.
    pub l2: f64,
}

impl WeightPenalty {
    /// A penalty with these coefficients.
    pub fn new(l1: f64, l2: f64) -> Self {
        Self { l1, l2 }
    }

    /// The penalty of `model`'s weights, shape `[1]`, on `device`; differentiable on an autodiff
    /// device, so its gradient `l1 · sign(w) + 2 l2 · w` reaches the weights.
    pub fn penalty<M: Module>(&self, model: &M, device: &Device) -> Tensor<1> {
        let mut visitor = PenaltyVisitor {
            penalty: *self,
            total: Tensor::zeros([1], device),
        };
        visit_params(model, &mut visitor);
        visitor.total
    }
}

struct PenaltyVisitor {
    penalty: WeightPenalty,
    total: Tensor<1>,
}

impl ParamVisitor for PenaltyVisitor {
    fn visit_float<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
        if path.name() != "weight" {
            return;
        }
        let weight = param.val().to_device(&self.total.device());
        let mut term = self.total.clone();
        if self.penalty.l1 != 0.0 {
            term = term + weight.clone().abs().sum().mul_scalar(self.penalty.l1);
        }
        if self.penalty.l2 != 0.0 {
            term = term + weight.powi_scalar(2).sum().mul_scalar(self.penalty.l2);
        }
        self.total = term;
    }
}
