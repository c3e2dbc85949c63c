//! Optimisers from [`OptimizerConfig`], and global gradient-norm clipping.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer, SgdConfig};
use burn::tensor::Tensor;

use crate::adam::FusedAdam;
use crate::config::{OptimizerConfig, OptimizerKind};

/// Builds the optimiser, with PyTorch's semantics for each option (SGD dampening 0, Adam's
/// `eps` 1e-8 by default).
pub fn build_optimizer(config: &OptimizerConfig) -> ModuleOptimizer {
    let decay =
        (config.weight_decay > 0.0).then(|| WeightDecayConfig::new(config.weight_decay as f32));
    match config.kind {
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((config.momentum > 0.0).then(|| {
                MomentumConfig::new()
                    .with_momentum(config.momentum)
                    .with_dampening(0.0)
                    .with_nesterov(config.nesterov)
            }))
            .with_weight_decay(decay)
            .init(),
        // burn's Adam arithmetic in one parallel pass per parameter (see `FusedAdam`).
        OptimizerKind::Adam => ModuleOptimizer::from(FusedAdam::new(
            config.beta1 as f32,
            config.beta2 as f32,
            config.eps as f32,
            decay.map(|d| d.penalty),
        )),
        OptimizerKind::AdamW => AdamWConfig::new()
            .with_beta_1(config.beta1 as f32)
            .with_beta_2(config.beta2 as f32)
            .with_epsilon(config.eps as f32)
            .with_weight_decay(config.weight_decay as f32)
            .init(),
    }
}

/// Scales all gradients so their global L2 norm is at most `max_norm`, like
/// `torch.nn.utils.clip_grad_norm_` (burn's own clipping works tensor by tensor). Returns the
/// norm before clipping.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    struct SumSquares<'a> {
        grads: &'a GradientsParams,
        total: f64,
    }
    impl ModuleVisitor for SumSquares<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(param.id) {
                let s: f32 = g.powi_scalar(2).sum().into_scalar();
                self.total += s as f64;
            }
        }
    }
    struct Scale<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for Scale<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(param.id) {
                self.grads.register(param.id, g.mul_scalar(self.factor));
            }
        }
    }
    let mut sum = SumSquares { grads, total: 0.0 };
    module.visit(&mut sum);
    let norm = sum.total.sqrt();
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        module.visit(&mut Scale { grads, factor });
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[test]
    fn clipping_scales_the_global_norm() {
        let device = Device::flex().autodiff();
        let layer: Linear = LinearConfig::new(4, 3).init(&device);
        let x = Tensor::<2>::ones([2, 4], &device).mul_scalar(10.0);
        let loss = layer.forward(x).sum();
        let mut grads = GradientsParams::from_grads(loss.backward(), &layer);
        let before = clip_grad_norm(&layer, &mut grads, 1.0);
        assert!(before > 1.0);
        let after = clip_grad_norm(&layer, &mut grads, 1.0);
        assert!((after - 1.0).abs() < 1e-3, "{after}");
        // A norm under the cap is left alone (the second call may still rescale by a factor
        // within f32 rounding of 1, because the cap divides by norm + 1e-6).
        let again = clip_grad_norm(&layer, &mut grads, 10.0);
        let unchanged = clip_grad_norm(&layer, &mut grads, 10.0);
        assert!((again - after).abs() < 1e-5, "{again} vs {after}");
        assert_eq!(again, unchanged);
    }
}
