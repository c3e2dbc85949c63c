//! ResNet-18, -34 and -50 (He et al. 2016, "Deep Residual Learning for Image Recognition",
//! <https://arxiv.org/abs/1512.03385>) as torchvision builds them (`torchvision.models.resnet`,
//! the "v1.5" bottleneck that strides on its 3x3 convolution), with parameter paths equal to
//! torchvision's state-dict keys: `conv1.weight`, `bn1.running_mean`, `layer1.0.conv1.weight`,
//! `layer2.0.downsample.0.weight`, `layer2.0.downsample.1.running_var`, `fc.weight`, …, so
//! torchvision's checkpoints (`resnet18-f37072fd.pth`, PyTorch's transfer-learning tutorial
//! network) load by name with `flint_transfer::load_weights` and no renaming table.
//!
//! Two conventions differ from PyTorch and are translated by the loader, as for every flint
//! model: batch norm's `weight`/`bias` are burn's `gamma`/`beta`, and [`Linear`] keeps its
//! weight as `[in, out]` where PyTorch stores `[out, in]`. The downsampling shortcut is a
//! `(Conv2d, BatchNorm)` pair, which burn visits as `downsample.0` and `downsample.1`, the
//! indices of torchvision's `nn.Sequential`.
//!
//! Convolutions start from torchvision's initialisation (Kaiming-normal, fan-out, ReLU gain),
//! batch norm at weight 1 and bias 0, the classifier from PyTorch's `Linear` default.
//!
//! ```
//! use burn::tensor::{Device, Tensor};
//! use flint_models::{ResNetArch, ResNetConfig};
//!
//! let arch: ResNetArch = "resnet18".parse()?;
//! let device = Device::flex();
//! let model = ResNetConfig::new(arch).with_num_classes(2).init(&device);
//! let images = Tensor::<4>::zeros([1, 3, 64, 64], &device);
//! assert_eq!(model.features(images.clone()).dims(), [1, model.feature_dim()]);
//! assert_eq!(model.forward(images).dims(), [1, 2]);
//! assert!("resnet101".parse::<ResNetArch>().is_err());
//! # Ok::<(), flint_models::ModelConfigError>(())
//! ```

use std::fmt;
use std::str::FromStr;

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Initializer, Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use flint_layers::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, conv2d, linear};
use serde::{Deserialize, Serialize};

use crate::error::{ModelConfigError, check_rate};

const MODEL: &str = "ResNet";

/// Channels of the stem convolution and of the first stage.
pub const STEM_CHANNELS: usize = 64;

/// Width of each stage's 3x3 convolutions (a bottleneck's output is four times as wide).
pub const STAGE_WIDTHS: [usize; 4] = [64, 128, 256, 512];

/// The architectures torchvision publishes weights for that flint builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResNetArch {
    /// Basic blocks, `[2, 2, 2, 2]` per stage, 512 features, 11,689,512 parameters.
    ResNet18,
    /// Basic blocks, `[3, 4, 6, 3]` per stage, 512 features, 21,797,672 parameters.
    ResNet34,
    /// Bottleneck blocks, `[3, 4, 6, 3]` per stage, 2048 features, 25,557,032 parameters.
    ResNet50,
}

impl ResNetArch {
    /// Every architecture, smallest first.
    pub const ALL: [ResNetArch; 3] = [Self::ResNet18, Self::ResNet34, Self::ResNet50];

    /// The name torchvision and flint's command line use: `resnet18`, `resnet34`, `resnet50`.
    pub fn name(self) -> &'static str {
        match self {
            Self::ResNet18 => "resnet18",
            Self::ResNet34 => "resnet34",
            Self::ResNet50 => "resnet50",
        }
    }

    /// Blocks in each of the four stages.
    pub fn blocks(self) -> [usize; 4] {
        match self {
            Self::ResNet18 => [2, 2, 2, 2],
            Self::ResNet34 | Self::ResNet50 => [3, 4, 6, 3],
        }
    }

    /// Whether the blocks are bottlenecks (1x1, 3x3, 1x1) rather than basic (3x3, 3x3).
    pub fn bottleneck(self) -> bool {
        self == Self::ResNet50
    }

    /// How many times wider a block's output is than its 3x3 convolution (torchvision's
    /// `expansion`): 1 for basic blocks, 4 for bottlenecks.
    pub fn expansion(self) -> usize {
        if self.bottleneck() { 4 } else { 1 }
    }

    /// Width of the pooled features fed to the classifier: 512 or 2048.
    pub fn feature_dim(self) -> usize {
        STAGE_WIDTHS[3] * self.expansion()
    }
}

impl fmt::Display for ResNetArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ResNetArch {
    type Err = ModelConfigError;

    /// Parses `resnet18`, `resnet34` or `resnet50` (ASCII case ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| ModelConfigError::UnknownArch {
                name: s.to_string(),
                known: Self::ALL.map(Self::name).join(", "),
            })
    }
}

/// Configuration of a [`ResNet`].
#[derive(Config, Debug)]
pub struct ResNetConfig {
    /// Depth and block type.
    pub arch: ResNetArch,
    /// Output classes (1000 for ImageNet, as torchvision's weights).
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Dropout rate on the pooled features before the classifier (torchvision has none: 0).
    #[config(default = 0.0)]
    pub dropout: f64,
}

impl ResNetConfig {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        if self.num_classes == 0 {
            return Err(ModelConfigError::Zero {
                model: MODEL,
                field: "num_classes",
            });
        }
        check_rate(MODEL, "dropout", self.dropout)
    }

    /// Checks the configuration and builds the model with torchvision's initialisation.
    pub fn try_init(&self, device: &Device) -> Result<ResNet, ModelConfigError> {
        self.validate()?;
        let arch = self.arch;
        let mut in_channels = STEM_CHANNELS;
        let mut stage = |index: usize| {
            let width = STAGE_WIDTHS[index];
            let stride = if index == 0 { 1 } else { 2 };
            (0..arch.blocks()[index])
                .map(|b| {
                    let block = ResNetBlock::new(
                        arch,
                        in_channels,
                        width,
                        if b == 0 { stride } else { 1 },
                        device,
                    );
                    in_channels = width * arch.expansion();
                    block
                })
                .collect::<Vec<_>>()
        };
        let (layer1, layer2, layer3, layer4) = (stage(0), stage(1), stage(2), stage(3));
        Ok(ResNet {
            conv1: conv([3, STEM_CHANNELS], 7, 2, device),
            bn1: batch_norm(STEM_CHANNELS, device),
            maxpool: MaxPool2dConfig::new([3, 3])
                .with_strides([2, 2])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(),
            layer1,
            layer2,
            layer3,
            layer4,
            dropout: DropoutConfig::new(self.dropout).init(),
            fc: LinearConfig::new(arch.feature_dim(), self.num_classes).init(device),
            arch,
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    /// With the validation message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> ResNet {
        crate::error::or_panic(self.try_init(device))
    }
}

/// Batch norm as torchvision builds it: eps 1e-5, PyTorch momentum 0.1, unbiased running
/// variance.
fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels).init(device)
}

/// A bias-free `k x k` convolution with padding `k / 2`, initialised as torchvision does
/// (`kaiming_normal_(mode="fan_out", nonlinearity="relu")`).
fn conv(channels: [usize; 2], kernel: usize, stride: usize, device: &Device) -> Conv2d {
    let pad = kernel / 2;
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
        .with_bias(false)
        .with_initializer(Initializer::KaimingNormal {
            gain: std::f64::consts::SQRT_2,
            fan_out_only: true,
        })
        .init(device)
}

/// One residual block: torchvision's `BasicBlock` (3x3 `conv1`, 3x3 `conv2`; no `conv3`) or its
/// `Bottleneck` (1x1 `conv1`, 3x3 `conv2` carrying the stride, 1x1 `conv3` widening four
/// times), each convolution followed by batch norm, ReLU after every norm but the last, then
/// the shortcut added and a final ReLU.
#[derive(Module, Debug)]
pub struct ResNetBlock {
    /// Basic: 3x3 with the block's stride. Bottleneck: 1x1 to the block's width.
    pub conv1: Conv2d,
    /// Batch norm after `conv1`.
    pub bn1: BatchNorm,
    /// 3x3; the bottleneck's carries the block's stride (torchvision's "v1.5").
    pub conv2: Conv2d,
    /// Batch norm after `conv2`.
    pub bn2: BatchNorm,
    /// Bottleneck only: 1x1 to four times the width.
    pub conv3: Option<Conv2d>,
    /// Bottleneck only: batch norm after `conv3`.
    pub bn3: Option<BatchNorm>,
    /// The shortcut's 1x1 strided convolution and batch norm (`downsample.0`, `downsample.1`),
    /// when the block changes the size or the channels; otherwise the input is added as it is.
    pub downsample: Option<(Conv2d, BatchNorm)>,
}

impl ResNetBlock {
    fn new(
        arch: ResNetArch,
        in_channels: usize,
        width: usize,
        stride: usize,
        device: &Device,
    ) -> Self {
        let out_channels = width * arch.expansion();
        let downsample = (stride != 1 || in_channels != out_channels).then(|| {
            (
                conv([in_channels, out_channels], 1, stride, device),
                batch_norm(out_channels, device),
            )
        });
        if arch.bottleneck() {
            Self {
                conv1: conv([in_channels, width], 1, 1, device),
                bn1: batch_norm(width, device),
                conv2: conv([width, width], 3, stride, device),
                bn2: batch_norm(width, device),
                conv3: Some(conv([width, out_channels], 1, 1, device)),
                bn3: Some(batch_norm(out_channels, device)),
                downsample,
            }
        } else {
            Self {
                conv1: conv([in_channels, width], 3, stride, device),
                bn1: batch_norm(width, device),
                conv2: conv([width, width], 3, 1, device),
                bn2: batch_norm(width, device),
                conv3: None,
                bn3: None,
                downsample,
            }
        }
    }

    /// Whether this is a bottleneck block (it has `conv3`).
    pub fn is_bottleneck(&self) -> bool {
        self.conv3.is_some()
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, ceil(height / stride), ceil(width / stride)]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let x = relu(self.bn1.forward(conv2d(&self.conv1, input.clone())));
        let mut x = self.bn2.forward(conv2d(&self.conv2, x));
        if let (Some(conv3), Some(bn3)) = (&self.conv3, &self.bn3) {
            x = bn3.forward(conv2d(conv3, relu(x)));
        }
        let shortcut = match &self.downsample {
            Some((conv, bn)) => bn.forward(conv2d(conv, input)),
            None => input,
        };
        relu(x + shortcut)
    }
}

/// A ResNet (the field names are torchvision's state-dict keys).
#[derive(Module, Debug)]
pub struct ResNet {
    /// 3 -> 64 channels, 7x7, stride 2, padding 3.
    pub conv1: Conv2d,
    /// Batch norm after the stem.
    pub bn1: BatchNorm,
    /// 3x3 max pooling, stride 2, padding 1.
    pub maxpool: MaxPool2d,
    /// Stage 1: 64 wide, stride 1.
    pub layer1: Vec<ResNetBlock>,
    /// Stage 2: 128 wide, stride 2.
    pub layer2: Vec<ResNetBlock>,
    /// Stage 3: 256 wide, stride 2.
    pub layer3: Vec<ResNetBlock>,
    /// Stage 4: 512 wide, stride 2.
    pub layer4: Vec<ResNetBlock>,
    /// Dropout on the pooled features (rate 0 unless configured).
    pub dropout: Dropout,
    /// Pooled features -> classes.
    pub fc: Linear,
    /// The architecture.
    #[module(skip)]
    pub arch: ResNetArch,
}

impl ResNet {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]` (224x224 for torchvision's weights), normalised
    ///   with ImageNet's mean `[0.485, 0.456, 0.406]` and std `[0.229, 0.224, 0.225]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        linear(&self.fc, self.dropout.forward(self.features(images)))
    }

    /// The globally average-pooled features of the last stage, before dropout and `fc`.
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]`
    /// - output: `[batch, feature_dim]` (512 for ResNet-18/34, 2048 for ResNet-50)
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let x = relu(self.bn1.forward(conv2d(&self.conv1, images)));
        let mut x = self.maxpool.forward(x);
        for block in self.blocks() {
            x = block.forward(x);
        }
        let [batch, channels, _, _] = x.dims();
        x.flatten::<3>(2, 3).mean_dim(2).reshape([batch, channels])
    }

    /// Width of [`features`](Self::features): 512 or 2048.
    pub fn feature_dim(&self) -> usize {
        self.arch.feature_dim()
    }

    /// Output classes.
    pub fn num_classes(&self) -> usize {
        self.fc.weight.dims()[1]
    }

    /// Every residual block, stage by stage.
    pub fn blocks(&self) -> impl Iterator<Item = &ResNetBlock> {
        self.layer1
            .iter()
            .chain(&self.layer2)
            .chain(&self.layer3)
            .chain(&self.layer4)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ParamCounts;
    use flint_layers::visit::float_param_paths;

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn arch_names_parse_and_display() {
        for arch in ResNetArch::ALL {
            assert_eq!(arch.to_string().parse::<ResNetArch>(), Ok(arch));
        }
        assert_eq!("ResNet50".parse::<ResNetArch>(), Ok(ResNetArch::ResNet50));
        assert_eq!(
            "resnet101".parse::<ResNetArch>().unwrap_err().to_string(),
            "unknown ResNet architecture `resnet101`; known: resnet18, resnet34, resnet50"
        );
    }

    #[test]
    fn config_round_trips_through_json_with_torchvision_names() {
        let config = ResNetConfig::new(ResNetArch::ResNet34).with_num_classes(2);
        let json = config.to_string();
        assert!(json.contains("\"arch\": \"resnet34\""), "{json}");
        let back = ResNetConfig::load_binary(json.as_bytes()).unwrap();
        assert_eq!(
            (back.arch, back.num_classes, back.dropout),
            (ResNetArch::ResNet34, 2, 0.0)
        );
    }

    /// torchvision's `sum(p.numel() for p in model.parameters())`.
    #[test]
    fn parameter_counts_are_torchvisions() {
        let d = device();
        // Parameters, batch norms, and `len(state_dict())` (flint keeps `num_batches_tracked`
        // as a float tensor too, so every key is a float path).
        for (arch, expected, norms, keys) in [
            (ResNetArch::ResNet18, 11_689_512, 20, 122),
            (ResNetArch::ResNet34, 21_797_672, 36, 218),
            (ResNetArch::ResNet50, 25_557_032, 53, 320),
        ] {
            let model = ResNetConfig::new(arch).init(&d);
            let counts = ParamCounts::of(&model);
            assert_eq!(counts.trainable, expected, "{arch}");
            let paths = float_param_paths(&model);
            let bn = paths.iter().filter(|p| p.ends_with(".running_var")).count();
            assert_eq!(bn, norms, "{arch}");
            assert_eq!(paths.len(), keys, "{arch}");
            assert_eq!(model.feature_dim(), arch.feature_dim());
        }
    }

    #[test]
    fn shapes_for_each_arch() {
        let d = device();
        for arch in ResNetArch::ALL {
            let model = ResNetConfig::new(arch).with_num_classes(7).init(&d);
            let x = Tensor::<4>::zeros([2, 3, 64, 64], &d);
            assert_eq!(model.features(x.clone()).dims(), [2, arch.feature_dim()]);
            assert_eq!(model.forward(x).dims(), [2, 7]);
            assert_eq!(model.num_classes(), 7);
        }
        // Odd and small sizes: every stride rounds up, down to 1x1 at the last stage.
        let model = ResNetConfig::new(ResNetArch::ResNet18).init(&d);
        let x = Tensor::<4>::zeros([1, 3, 33, 17], &d);
        assert_eq!(model.forward(x).dims(), [1, 1000]);
    }

    #[test]
    fn paths_are_torchvision_keys() {
        let model = ResNetConfig::new(ResNetArch::ResNet50).init(&device());
        let paths = float_param_paths(&model);
        for key in [
            "conv1.weight",
            "bn1.gamma",
            "bn1.running_mean",
            "layer1.0.conv3.weight",
            "layer1.0.downsample.0.weight",
            "layer1.0.downsample.1.running_var",
            "layer2.0.conv2.weight",
            "layer4.2.bn3.beta",
            "fc.weight",
            "fc.bias",
        ] {
            assert!(paths.iter().any(|p| p == key), "{key} not in {paths:?}");
        }
        assert!(!paths.iter().any(|p| p.starts_with("layer1.1.downsample")));
        // The bottleneck strides on its 3x3 convolution (v1.5), not on the 1x1.
        let block = &model.layer2[0];
        assert_eq!(block.conv1.stride, [1, 1]);
        assert_eq!(block.conv2.stride, [2, 2]);
        assert!(block.is_bottleneck());
        let basic = ResNetConfig::new(ResNetArch::ResNet18).init(&device());
        assert_eq!(basic.layer2[0].conv1.stride, [2, 2]);
        assert!(basic.layer1[0].downsample.is_none());
        assert!(basic.layer2[0].downsample.is_some());
    }

    #[test]
    fn invalid_configs_are_refused() {
        let d = device();
        let msg = |c: ResNetConfig| c.try_init(&d).unwrap_err().to_string();
        assert_eq!(
            msg(ResNetConfig::new(ResNetArch::ResNet18).with_num_classes(0)),
            "ResNet: `num_classes` must be at least 1"
        );
        assert_eq!(
            msg(ResNetConfig::new(ResNetArch::ResNet18).with_dropout(1.0)),
            "ResNet: dropout rate 1 at `dropout` must be in [0, 1)"
        );
    }

    #[test]
    fn dropout_before_the_classifier_acts_only_in_training() {
        let d = device().autodiff();
        let model = ResNetConfig::new(ResNetArch::ResNet18)
            .with_dropout(0.5)
            .init(&d);
        let x = Tensor::<4>::random([2, 3, 32, 32], burn::tensor::Distribution::Default, &d);
        let a = model.forward(x.clone());
        let b = model.forward(x.clone());
        assert!(!a.equal(b).all().into_scalar::<bool>());
        let eval = model.valid();
        let x = x.inner();
        eval.forward(x.clone())
            .into_data()
            .assert_eq(&eval.forward(x).into_data(), true);
    }

    /// torchvision's initialisation: conv weights normal with std sqrt(2 / fan_out).
    #[test]
    fn convolutions_start_kaiming_normal_fan_out() {
        let model = ResNetConfig::new(ResNetArch::ResNet18).init(&device());
        let w = model.layer3[0].conv2.weight.val();
        let n = w.dims().iter().product::<usize>() as f32;
        let values = w.flatten::<1>(0, 3);
        let mean: f32 = values.clone().mean().into_scalar();
        let var: f32 = (values - mean).powi_scalar(2).sum().into_scalar::<f32>() / n;
        let expected = 2.0 / (256.0 * 9.0);
        assert!(
            (var / expected - 1.0).abs() < 0.05,
            "variance {var}, expected {expected}"
        );
        assert!(mean.abs() < 0.01, "{mean}");
    }
}
