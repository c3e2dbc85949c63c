//! Monte-Carlo dropout (Gal & Ghahramani 2016): predictive uncertainty from stochastic passes.

use burn::module::{Module, ParamGroup};
use burn::tensor::Tensor;
use burn::tensor::activation::softmax;

use crate::BatchNormLayers;
use crate::error::LayerConfigError;
use crate::visit::param_ids;

/// Puts `model` in MC-dropout mode: every batch norm the model names through
/// [`BatchNormLayers`] (flint's [`BatchNorm`](crate::BatchNorm) and burn's `BatchNorm`) is frozen
/// with burn's `freeze_group`, so it normalises with its running statistics and stops updating
/// them, while every dropout-family layer keeps its training flag and stays stochastic.
///
/// The model must be in training configuration: on an autodiff device (e.g. `device.autodiff()`)
/// and not `valid()` (which turns every layer's flag off). Its parameters in the frozen group stop
/// requiring gradients; the rest are untouched. For sampling only, add `.no_grad()`: dropout stays
/// on, and the autodiff backend stops recording each pass's graph, which otherwise accumulates
/// until a backward pass (hundreds of passes over a test set can exhaust memory).
pub fn mc_dropout_mode<M: Module + BatchNormLayers>(mut model: M) -> M {
    let mut ids = Vec::new();
    model.for_each_batch_norm(&mut |bn| ids.extend(param_ids(bn)));
    model.for_each_burn_batch_norm(&mut |bn| ids.extend(param_ids(bn)));
    model.freeze_group(ParamGroup::from_ids(ids))
}

/// The summary of `samples` stochastic passes.
#[derive(Debug, Clone)]
pub struct McDropoutPrediction {
    /// Mean class probabilities over the passes, `[batch, classes]`.
    pub mean: Tensor<2>,
    /// Entropy of the mean probabilities (nats), `[batch]`: total predictive uncertainty.
    pub entropy: Tensor<1>,
    /// Per-class variance of the probabilities over the passes (population variance),
    /// `[batch, classes]`.
    pub variance: Tensor<2>,
}

/// Runs `forward` (returning logits) `samples` times on `input` and summarises the softmax
/// probabilities. Use a model prepared with [`mc_dropout_mode`], or the passes are all equal.
///
/// # Shapes
///
/// - input: any, passed to `forward` unchanged
/// - `forward`'s output: `[batch, classes]` logits
///
/// # Errors
///
/// If `samples` is 0.
pub fn mc_dropout_predict<const D: usize, F>(
    input: Tensor<D>,
    samples: usize,
    forward: F,
) -> Result<McDropoutPrediction, LayerConfigError>
where
    F: Fn(Tensor<D>) -> Tensor<2>,
{
    if samples == 0 {
        return Err(LayerConfigError::Zero {
            layer: "mc_dropout_predict",
            field: "samples",
        });
    }
    let mut sum: Option<Tensor<2>> = None;
    let mut sum_sq: Option<Tensor<2>> = None;
    for _ in 0..samples {
        let probs = softmax(forward(input.clone()).detach(), 1);
        let sq = probs.clone().powi_scalar(2);
        sum = Some(sum.map_or(probs.clone(), |s| s + probs));
        sum_sq = Some(sum_sq.map_or(sq.clone(), |s| s + sq));
    }
    let n = samples as f64;
    let (Some(sum), Some(sum_sq)) = (sum, sum_sq) else {
        unreachable!("samples > 0");
    };
    let mean = sum.div_scalar(n);
    // E[p²] - E[p]², clamped: rounding can make it slightly negative.
    let variance = (sum_sq.div_scalar(n) - mean.clone().powi_scalar(2)).clamp_min(0.0);
    // 0 · ln 0 = 0: the clamp only changes the logarithm of exact zeros.
    let entropy = (mean.clone() * mean.clone().clamp_min(1e-30).log())
        .sum_dim(1)
        .neg()
        .squeeze_dim(1);
    Ok(McDropoutPrediction {
        mean,
        entropy,
        variance,
    })
}
