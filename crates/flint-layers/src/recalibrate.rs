//! Recomputing batch-norm running statistics over data: `torch.optim.swa_utils.update_bn`.

use crate::BatchNorm;

/// Gives [`recalibrate_bn`] and [`mc_dropout_mode`](crate::mc_dropout_mode) a model's batch
/// norms.
///
/// burn's module traversal can reset tensors but not change a layer's momentum, and names layer
/// types only by strings (`"Struct:BatchNorm"`, which any user type of that name matches), so the
/// model names its batch norms once:
///
/// ```ignore
/// impl BatchNormLayers for Net {
///     fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
///         f(&mut self.bn1);
///         self.block.for_each_batch_norm(f);
///     }
/// }
/// ```
pub trait BatchNormLayers {
    /// Calls `f` on every [`BatchNorm`] of the model, in a fixed order.
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm));

    /// Calls `f` on every burn `BatchNorm` of the model, in a fixed order: these are frozen by
    /// [`mc_dropout_mode`](crate::mc_dropout_mode) but not recalibrated (burn's layer has no
    /// cumulative mode). None by default.
    #[allow(unused_variables)]
    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm)) {}
}

impl BatchNormLayers for BatchNorm {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(self)
    }
}

impl BatchNormLayers for burn::nn::BatchNorm {
    fn for_each_batch_norm(&mut self, _f: &mut dyn FnMut(&mut BatchNorm)) {}

    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm)) {
        f(self)
    }
}

impl<T: BatchNormLayers> BatchNormLayers for Option<T> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        if let Some(item) = self {
            item.for_each_batch_norm(f);
        }
    }

    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm)) {
        if let Some(item) = self {
            item.for_each_burn_batch_norm(f);
        }
    }
}

impl<T: BatchNormLayers> BatchNormLayers for Vec<T> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        for item in self {
            item.for_each_batch_norm(f);
        }
    }

    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut burn::nn::BatchNorm)) {
        for item in self {
            item.for_each_burn_batch_norm(f);
        }
    }
}

/// Recomputes every batch norm's running statistics over `batches` (after fine-tuning, weight
/// averaging or pruning), as `torch.optim.swa_utils.update_bn` does:
///
/// 1. each [`BatchNorm`] that tracks running statistics is reset (mean 0, variance 1, no batches
///    seen) and switched to a cumulative average (`momentum = None`);
/// 2. `forward(&model, batch)` is called once per batch; the result is dropped;
/// 3. each layer's momentum is restored.
///
/// The running statistics end as the plain average of the per-batch means and (unbiased, by
/// default) variances. The model must be in training configuration: on an autodiff device with
/// its batch norms' training flags on, or the layers use and keep their running statistics (and,
/// as in PyTorch's `update_bn`, dropout layers are active during the passes).
pub fn recalibrate_bn<M, X, O, I, F>(mut model: M, batches: I, mut forward: F) -> M
where
    M: BatchNormLayers,
    I: IntoIterator<Item = X>,
    F: FnMut(&M, X) -> O,
{
    let mut momenta = Vec::new();
    model.for_each_batch_norm(&mut |bn| {
        momenta.push(bn.momentum.take());
        bn.reset_running_stats();
    });
    for batch in batches {
        drop(forward(&model, batch));
    }
    let mut momenta = momenta.into_iter();
    model.for_each_batch_norm(&mut |bn| {
        bn.momentum = momenta.next().flatten();
    });
    model
}
