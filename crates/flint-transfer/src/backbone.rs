//! Backbones: pretrained networks without their classifier, as one module type.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use flint_data::Normalize;
use flint_models::{Classifier, MnistCnnBn};

/// A pretrained network cut before its classifier.
// The generated ONNX modules are large structs (one field per layer); a backbone exists once
// per model, so boxing them would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// ImageNet MobileNetV2 from ONNX (1280 features).
    #[cfg(flint_model_mobilenetv2)]
    MobileNetV2(flint_pretrained::mobilenetv2::Model),
    /// ImageNet EfficientNet-Lite0 from ONNX (1280 features).
    #[cfg(flint_model_efficientnet_lite0)]
    EfficientNetLite0Onnx(flint_pretrained::efficientnet_lite0::Model),
    /// EfficientNet-Lite0 as a flint definition (weights from PyTorch; batch norm trainable).
    EfficientNetLite0(flint_models::EfficientNetLite0),
    /// burn's PyTorch-trained MNIST CNN (32 features).
    MnistCnnBn(MnistCnnBn),
    /// A network trained with `flint train` (the features its classifier layer reads).
    Flint(Classifier),
}

impl Backbone {
    /// Features for the head.
    ///
    /// # Shapes
    /// - images: `[batch, channels, size, size]` as [`InputSpec`] describes
    /// - output: `[batch, features]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            #[cfg(flint_model_mobilenetv2)]
            Self::MobileNetV2(m) => m.forward(images),
            #[cfg(flint_model_efficientnet_lite0)]
            Self::EfficientNetLite0Onnx(m) => m.forward(images),
            Self::EfficientNetLite0(m) => m.features(images),
            Self::MnistCnnBn(m) => m.features(images),
            Self::Flint(m) => m.features(images),
        }
    }
}

/// What images a backbone expects.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    /// 1 (grey) or 3 (RGB).
    pub channels: usize,
    /// Square input side.
    pub size: u32,
    /// Shorter side before the centre crop at evaluation (`Resize(256)` for 224).
    pub resize: u32,
    /// Per-channel normalisation of `[0, 1]` pixels.
    pub normalize: Normalize,
}

impl InputSpec {
    /// 224x224 RGB with ImageNet statistics (torchvision's models, MobileNetV2).
    pub fn imagenet() -> Self {
        Self {
            channels: 3,
            size: 224,
            resize: 256,
            normalize: Normalize::imagenet(),
        }
    }
}

/// Builds a linear layer from PyTorch-layout `[out, in]` weights and a bias.
pub fn linear_from_pytorch(
    weight: &[f32],
    bias: &[f32],
    [out, inp]: [usize; 2],
    device: &Device,
) -> Linear {
    assert_eq!(weight.len(), out * inp, "weight size");
    assert_eq!(bias.len(), out, "bias size");
    let mut linear = burn::nn::LinearConfig::new(inp, out).init(device);
    // burn stores `[in, out]`.
    let w: Tensor<2> =
        Tensor::from_data(TensorData::new(weight.to_vec(), [out, inp]), device).transpose();
    linear.weight = linear.weight.map(|_| w);
    linear.bias = linear
        .bias
        .map(|b| b.map(|_| Tensor::from_data(TensorData::new(bias.to_vec(), [out]), device)));
    linear
}
