//! Backbones: pretrained networks without their classifier, as one module type.

use burn::module::Module;
use burn::nn::Linear;
use burn::tensor::{Device, Tensor, TensorData};
use flint_data::Normalize;
use flint_models::{Classifier, MnistCnnBn};

use crate::error::TransferError;
use crate::onnx::OnnxBackbone;

/// A pretrained network cut before its classifier.
// A backbone exists once per model, so boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum Backbone {
    /// An ONNX network read at run time and cut before its classifier (the catalogue's
    /// `mobilenetv2` and `efficientnet-lite0`, or any `.onnx` file).
    Onnx(OnnxBackbone),
    /// torchvision's ResNet-18/34/50 as a flint definition (`--arch`, weights from a
    /// torchvision state dict; 512 or 2048 features).
    ResNet(flint_models::ResNet),
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
            Self::Onnx(m) => m.features(images),
            Self::ResNet(m) => m.features(images),
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

    /// `size` x `size` images of `channels` channels, resized as torchvision's ImageNet
    /// evaluation does (shorter side to `size * 256 / 224`, then the centre crop).
    ///
    /// # Errors
    /// A size or channel count of 0, or a normalisation for another number of channels.
    pub fn new(channels: usize, size: u32, normalize: Normalize) -> Result<Self, TransferError> {
        if channels == 0 || size == 0 {
            return Err(TransferError::Invalid(format!(
                "input size must be at least 1 pixel and 1 channel, got {channels}x{size}x{size}"
            )));
        }
        if normalize.mean().len() != channels {
            return Err(TransferError::Invalid(format!(
                "the normalisation has {} channels but the network takes {channels}",
                normalize.mean().len()
            )));
        }
        Ok(Self {
            channels,
            size,
            resize: resize_for(size),
            normalize,
        })
    }
}

/// torchvision's evaluation resize for a crop of `size`: `Resize(256)` before `CenterCrop(224)`.
pub fn resize_for(size: u32) -> u32 {
    ((u64::from(size) * 256 + 112) / 224).max(1) as u32
}

/// How `[0, 1]` pixels are normalised: `--normalize imagenet|inception|none|<means>/<stds>`.
#[derive(Debug, Clone, PartialEq)]
pub enum NormalizeSpec {
    /// ImageNet's mean `0.485,0.456,0.406` and std `0.229,0.224,0.225` (torchvision).
    ImageNet,
    /// Mean 0.5 and std 0.5 per channel: pixels in `[-1, 1]` (Inception, TF-Slim, timm).
    Inception,
    /// Mean 0 and std 1: pixels as they are, in `[0, 1]`.
    None,
    /// One mean and one standard deviation per channel.
    Custom {
        /// The means.
        mean: Vec<f32>,
        /// The standard deviations.
        std: Vec<f32>,
    },
}

impl std::str::FromStr for NormalizeSpec {
    type Err = TransferError;

    /// `imagenet`, `inception`, `none`, or `MEANS/STDS`: comma-separated means, a slash, as many
    /// comma-separated standard deviations (`0.5,0.5,0.5/0.25,0.25,0.25`; one of each for
    /// grey images).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: String| {
            TransferError::Invalid(format!(
                "bad normalisation `{s}`: {why}; expected imagenet, inception, none or \
                 MEANS/STDS with one value per channel, e.g. 0.485,0.456,0.406/0.229,0.224,0.225"
            ))
        };
        match s.trim() {
            "imagenet" => return Ok(Self::ImageNet),
            "inception" => return Ok(Self::Inception),
            "none" => return Ok(Self::None),
            _ => {}
        }
        let Some((mean, std)) = s.split_once('/') else {
            return Err(bad(
                "no `/` between the means and the standard deviations".into()
            ));
        };
        let numbers = |part: &str, what: &str| -> Result<Vec<f32>, TransferError> {
            part.split(',')
                .map(|v| {
                    v.trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|x| x.is_finite())
                        .ok_or_else(|| bad(format!("{what} `{}` is not a number", v.trim())))
                })
                .collect()
        };
        let (mean, std) = (numbers(mean, "mean")?, numbers(std, "standard deviation")?);
        if mean.len() != std.len() {
            return Err(bad(format!(
                "{} means but {} standard deviations",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| **s <= 0.0) {
            return Err(bad(format!("standard deviation {s} is not positive")));
        }
        Ok(Self::Custom { mean, std })
    }
}

impl NormalizeSpec {
    /// The per-channel normalisation for `channels` channels.
    ///
    /// # Errors
    /// A preset's three channels or a custom list of another length for a network that takes
    /// `channels` channels.
    pub fn for_channels(&self, channels: usize) -> Result<Normalize, TransferError> {
        let (mean, std) = match self {
            Self::ImageNet => {
                let n = Normalize::imagenet();
                (n.mean().to_vec(), n.std().to_vec())
            }
            Self::Inception => (vec![0.5; 3], vec![0.5; 3]),
            Self::None => (vec![0.0; channels], vec![1.0; channels]),
            Self::Custom { mean, std } => (mean.clone(), std.clone()),
        };
        if mean.len() != channels {
            return Err(TransferError::Invalid(format!(
                "--normalize gives {} channel(s) but the network takes {channels}-channel images \
                 (give {channels} means/{channels} standard deviations, or none)",
                mean.len()
            )));
        }
        Ok(Normalize::new(mean, std)?)
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
