//! Folding batch norm into the preceding convolution or linear layer, for inference.

use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use crate::BatchNorm;
use crate::error::LayerConfigError;

/// The inference-time affine map of a batch norm, per channel: `y = scale * x + shift`.
///
/// Implemented for flint's [`BatchNorm`] and burn's `BatchNorm`, so either can be folded.
pub trait InferenceAffine {
    /// `(scale, shift)` with `scale = gamma / sqrt(running_var + eps)` and
    /// `shift = beta - running_mean * scale`, shapes `[C]`.
    ///
    /// # Errors
    ///
    /// If the layer has no running statistics (it normalises with batch statistics even in
    /// inference, which no fixed affine map reproduces).
    fn inference_affine(&self) -> Result<(Tensor<1>, Tensor<1>), LayerConfigError>;
}

impl InferenceAffine for BatchNorm {
    fn inference_affine(&self) -> Result<(Tensor<1>, Tensor<1>), LayerConfigError> {
        let (Some(mean), Some(var)) = (&self.running_mean, &self.running_var) else {
            return Err(LayerConfigError::Unsupported {
                layer: "fuse_conv_bn",
                reason: "the BatchNorm does not track running statistics, so it has no fixed \
                         inference affine map to fold"
                    .into(),
            });
        };
        let var = var.value_sync();
        let device = var.device();
        let gamma = match &self.gamma {
            Some(gamma) => gamma.val().to_device(&device),
            None => Tensor::ones([self.num_features], &device),
        };
        let beta = match &self.beta {
            Some(beta) => beta.val().to_device(&device),
            None => Tensor::zeros([self.num_features], &device),
        };
        Ok(affine(gamma, beta, mean.value_sync(), var, self.eps))
    }
}

impl InferenceAffine for burn::nn::BatchNorm {
    fn inference_affine(&self) -> Result<(Tensor<1>, Tensor<1>), LayerConfigError> {
        Ok(affine(
            self.gamma.val(),
            self.beta.val(),
            self.running_mean.value_sync(),
            self.running_var.value_sync(),
            self.epsilon,
        ))
    }
}

fn affine(
    gamma: Tensor<1>,
    beta: Tensor<1>,
    mean: Tensor<1>,
    var: Tensor<1>,
    eps: f64,
) -> (Tensor<1>, Tensor<1>) {
    let scale = gamma.detach() / var.add_scalar(eps).sqrt();
    let shift = beta.detach() - mean * scale.clone();
    (scale, shift)
}

fn channel_mismatch(layer: &'static str, out: usize, bn: usize) -> LayerConfigError {
    LayerConfigError::Unsupported {
        layer,
        reason: format!("the layer has {out} output channels but the BatchNorm has {bn}"),
    }
}

/// Folds `bn(conv(x))` into one convolution for inference:
/// `W' = W · scale[out]`, `b' = (b - running_mean) · scale + beta`.
///
/// Equal to the conv followed by the batch norm **in inference mode** (running statistics); the
/// result is detached, for deployment, not for further training. Use it on `valid()` layers.
///
/// # Errors
///
/// If the batch norm has no running statistics or its channel count differs from the conv's
/// output channels.
pub fn fuse_conv_bn<N: InferenceAffine>(conv: &Conv2d, bn: &N) -> Result<Conv2d, LayerConfigError> {
    let (scale, shift) = bn.inference_affine()?;
    let weight = conv.weight.val().detach();
    let [out, _, _, _] = weight.dims();
    let [channels] = scale.dims();
    if channels != out {
        return Err(channel_mismatch("fuse_conv_bn", out, channels));
    }
    let device = weight.device();
    let (scale, shift) = (scale.to_device(&device), shift.to_device(&device));
    let bias = match &conv.bias {
        Some(bias) => bias.val().detach() * scale.clone() + shift,
        None => shift,
    };
    let mut fused = conv.clone();
    fused.weight = Param::from_tensor(weight * scale.reshape([out, 1, 1, 1]));
    fused.bias = Some(Param::from_tensor(bias));
    Ok(fused)
}

/// Folds `bn(linear(x))` into one linear layer for inference (burn stores the weight as
/// `[d_input, d_output]`, so each column is scaled). See [`fuse_conv_bn`].
///
/// # Errors
///
/// If the batch norm has no running statistics or its channel count differs from `d_output`.
pub fn fuse_linear_bn<N: InferenceAffine>(
    linear: &Linear,
    bn: &N,
) -> Result<Linear, LayerConfigError> {
    let (scale, shift) = bn.inference_affine()?;
    let weight = linear.weight.val().detach();
    let [_, out] = weight.dims();
    let [channels] = scale.dims();
    if channels != out {
        return Err(channel_mismatch("fuse_linear_bn", out, channels));
    }
    let device = weight.device();
    let (scale, shift) = (scale.to_device(&device), shift.to_device(&device));
    let bias = match &linear.bias {
        Some(bias) => bias.val().detach() * scale.clone() + shift,
        None => shift,
    };
    Ok(Linear {
        weight: Param::from_tensor(weight * scale.reshape([1, out])),
        bias: Some(Param::from_tensor(bias)),
    })
}
