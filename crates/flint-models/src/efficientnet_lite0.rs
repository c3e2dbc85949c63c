//! EfficientNet-Lite0 (Tan & Le 2019; the "Lite" variant for mobile accelerators: no
//! squeeze-excitation, ReLU6 instead of swish, stem and head not scaled), as a flint module whose
//! parameter names are those of the lukemelas-style PyTorch state dict
//! (`../shared/models/efficientnet-lite0.pth`: `_conv_stem.weight`, `_bn0.*`,
//! `_blocks.N._expand_conv.weight`, …, `_fc.weight`), so its weights load by name.
//!
//! Convolutions with a kernel larger than 1 use TensorFlow's "same" padding
//! ([`PaddingConfig2d::Same`]): for a stride of 2 on an even size the extra row and column go at
//! the bottom and right (`3x3`: top/left 0, bottom/right 1; `5x5`: 1 and 2). This is what the
//! ONNX export does at 224x224 (its Conv `pads` are `[0,0,1,1]` and `[1,1,2,2]` on the strided
//! convolutions, symmetric `k/2` elsewhere) and what the reference's static same padding
//! computes for its 224x224 images; burn computes it for the actual input size.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Tensor};
use flint_layers::{
    BatchNorm, BatchNormConfig, DropPath, DropPathConfig, Dropout, DropoutConfig, conv2d, relu6,
};

use crate::error::{ModelConfigError, check_rate};

const MODEL: &str = "EfficientNetLite0";

/// Channels of the stem convolution.
pub const STEM_CHANNELS: usize = 32;
/// Width of the pooled features fed to the classifier.
pub const HEAD_CHANNELS: usize = 1280;

/// One stage of MBConv blocks: expansion ratio, kernel size, stride of its first block, output
/// channels, number of blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StageSpec {
    /// Expansion ratio of the inverted bottleneck (1: no expansion convolution).
    pub expand: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Stride of the stage's first block (the others have stride 1).
    pub stride: usize,
    /// Output channels.
    pub out: usize,
    /// Number of blocks.
    pub repeats: usize,
}

/// EfficientNet-Lite0's seven stages (EfficientNet-B0's, width and depth multipliers 1).
pub const STAGES: [StageSpec; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];

const fn stage(
    expand: usize,
    kernel: usize,
    stride: usize,
    out: usize,
    repeats: usize,
) -> StageSpec {
    StageSpec {
        expand,
        kernel,
        stride,
        out,
        repeats,
    }
}

/// Batch norm as the reference builds it: eps 1e-3, PyTorch momentum 0.01 (TensorFlow's 0.99).
fn batch_norm(channels: usize, device: &Device) -> BatchNorm {
    BatchNormConfig::new(channels)
        .with_eps(1e-3)
        .with_momentum(Some(0.01))
        .init(device)
}

/// A bias-free convolution with TensorFlow "same" padding (none for 1x1).
fn conv(
    channels: [usize; 2],
    kernel: usize,
    stride: usize,
    groups: usize,
    device: &Device,
) -> Conv2d {
    let padding = if kernel == 1 {
        PaddingConfig2d::Valid
    } else {
        PaddingConfig2d::Same
    };
    Conv2dConfig::new(channels, [kernel, kernel])
        .with_stride([stride, stride])
        .with_groups(groups)
        .with_padding(padding)
        .with_bias(false)
        .init(device)
}

/// Configuration of [`EfficientNetLite0`].
#[derive(Config, Debug)]
pub struct EfficientNetLite0Config {
    /// Output classes (1000 for ImageNet).
    #[config(default = 1000)]
    pub num_classes: usize,
    /// Dropout rate before the classifier.
    #[config(default = 0.2)]
    pub dropout: f64,
    /// Stochastic-depth rate: block `i` of `n` drops its residual branch with probability
    /// `drop_connect_rate * i / n` in training (the reference's rule).
    #[config(default = 0.2)]
    pub drop_connect_rate: f64,
}

impl EfficientNetLite0Config {
    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        if self.num_classes == 0 {
            return Err(ModelConfigError::Zero {
                model: MODEL,
                field: "num_classes",
            });
        }
        check_rate(MODEL, "dropout", self.dropout)?;
        check_rate(MODEL, "drop_connect_rate", self.drop_connect_rate)
    }

    /// Checks the configuration and builds the model with PyTorch's default initialisation.
    pub fn try_init(&self, device: &Device) -> Result<EfficientNetLite0, ModelConfigError> {
        self.validate()?;
        let num_blocks: usize = STAGES.iter().map(|s| s.repeats).sum();
        let mut blocks = Vec::with_capacity(num_blocks);
        let mut in_channels = STEM_CHANNELS;
        for spec in STAGES {
            for r in 0..spec.repeats {
                let stride = if r == 0 { spec.stride } else { 1 };
                let rate = self.drop_connect_rate * blocks.len() as f64 / num_blocks as f64;
                blocks.push(MbConvBlock::new(
                    in_channels,
                    spec.out,
                    spec.expand,
                    spec.kernel,
                    stride,
                    rate,
                    device,
                ));
                in_channels = spec.out;
            }
        }
        Ok(EfficientNetLite0 {
            _conv_stem: conv([3, STEM_CHANNELS], 3, 2, 1, device),
            _bn0: batch_norm(STEM_CHANNELS, device),
            _blocks: blocks,
            _conv_head: conv([in_channels, HEAD_CHANNELS], 1, 1, 1, device),
            _bn1: batch_norm(HEAD_CHANNELS, device),
            dropout: DropoutConfig::new(self.dropout).init(),
            _fc: LinearConfig::new(HEAD_CHANNELS, self.num_classes).init(device),
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    /// With the validation message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> EfficientNetLite0 {
        crate::error::or_panic(self.try_init(device))
    }
}

/// A mobile inverted bottleneck (MBConv) without squeeze-excitation: optional 1x1 expansion,
/// depthwise convolution, 1x1 linear projection, each followed by batch norm (ReLU6 after the
/// first two), and a residual connection with stochastic depth when the shape is kept.
#[derive(Module, Debug)]
pub struct MbConvBlock {
    /// 1x1 expansion to `expand * in` channels; `None` when the ratio is 1.
    pub _expand_conv: Option<Conv2d>,
    /// Batch norm after the expansion.
    pub _bn0: Option<BatchNorm>,
    /// Depthwise `k x k` convolution (groups = channels), carrying the block's stride.
    pub _depthwise_conv: Conv2d,
    /// Batch norm after the depthwise convolution.
    pub _bn1: BatchNorm,
    /// 1x1 projection to the output channels (no activation).
    pub _project_conv: Conv2d,
    /// Batch norm after the projection.
    pub _bn2: BatchNorm,
    /// Stochastic depth on the residual branch (training only).
    pub drop_path: DropPath,
    /// Whether the input is added back (stride 1 and as many channels in as out).
    pub residual: bool,
}

impl MbConvBlock {
    fn new(
        in_channels: usize,
        out_channels: usize,
        expand: usize,
        kernel: usize,
        stride: usize,
        drop_rate: f64,
        device: &Device,
    ) -> Self {
        let hidden = in_channels * expand;
        let expands = expand != 1;
        Self {
            _expand_conv: expands.then(|| conv([in_channels, hidden], 1, 1, 1, device)),
            _bn0: expands.then(|| batch_norm(hidden, device)),
            _depthwise_conv: conv([hidden, hidden], kernel, stride, hidden, device),
            _bn1: batch_norm(hidden, device),
            _project_conv: conv([hidden, out_channels], 1, 1, 1, device),
            _bn2: batch_norm(out_channels, device),
            drop_path: DropPathConfig::new(drop_rate).init(),
            residual: stride == 1 && in_channels == out_channels,
        }
    }

    /// Applies the block.
    ///
    /// # Shapes
    /// - input: `[batch, in_channels, height, width]`
    /// - output: `[batch, out_channels, ceil(height / stride), ceil(width / stride)]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        let mut x = input.clone();
        if let (Some(conv), Some(bn)) = (&self._expand_conv, &self._bn0) {
            x = relu6(bn.forward(conv2d(conv, x)));
        }
        let x = relu6(self._bn1.forward(conv2d(&self._depthwise_conv, x)));
        let x = self._bn2.forward(conv2d(&self._project_conv, x));
        if self.residual {
            self.drop_path.forward(x) + input
        } else {
            x
        }
    }
}

/// EfficientNet-Lite0 (the field names are the PyTorch state dict's).
#[derive(Module, Debug)]
pub struct EfficientNetLite0 {
    /// 3 -> 32 channels, 3x3, stride 2.
    pub _conv_stem: Conv2d,
    /// Batch norm after the stem.
    pub _bn0: BatchNorm,
    /// The 16 MBConv blocks of the seven stages.
    pub _blocks: Vec<MbConvBlock>,
    /// 320 -> 1280 channels, 1x1.
    pub _conv_head: Conv2d,
    /// Batch norm after the head.
    pub _bn1: BatchNorm,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// 1280 -> classes.
    pub _fc: Linear,
}

impl EfficientNetLite0 {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]` (224x224 for the pretrained weights), each channel
    ///   of `[0, 1]` pixels normalised as `(255 x - 127) / 128`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self._fc
            .forward(self.dropout.forward(self.features(images)))
    }

    /// The pooled features before dropout and the classifier (after the head's ReLU6).
    ///
    /// # Shapes
    /// - images: `[batch, 3, height, width]`
    /// - output: `[batch, 1280]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = relu6(self._bn0.forward(conv2d(&self._conv_stem, images)));
        for block in &self._blocks {
            x = block.forward(x);
        }
        let x = relu6(self._bn1.forward(conv2d(&self._conv_head, x)));
        let [batch, channels, _, _] = x.dims();
        x.flatten::<3>(2, 3).mean_dim(2).reshape([batch, channels])
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
    fn efficientnet_shapes_and_parameter_count() {
        let d = device();
        let model = EfficientNetLite0Config::new().init(&d);
        assert_eq!(model._blocks.len(), 16);
        let x = Tensor::<4>::zeros([2, 3, 224, 224], &d);
        assert_eq!(model.features(x.clone()).dims(), [2, 1280]);
        assert_eq!(model.forward(x).dims(), [2, 1000]);
        // Odd sizes work too (same padding rounds up at each stride).
        let x = Tensor::<4>::zeros([1, 3, 97, 131], &d);
        assert_eq!(model.forward(x).dims(), [1, 1000]);

        // The .pth's float tensors: 4,652,008 weights and 42,016 running statistics
        // (4,694,024 in all); flint also counts the 49 `num_batches_tracked` as buffers.
        let counts = ParamCounts::of(&model);
        assert_eq!(counts.trainable, 4_652_008);
        assert_eq!(counts.buffers, 42_016 + 49);
        assert_eq!(counts.trainable + counts.buffers - 49, 4_694_024);

        let small = EfficientNetLite0Config::new().with_num_classes(10).init(&d);
        assert_eq!(
            ParamCounts::of(&small).trainable,
            4_652_008 - 1000 * 1281 + 10 * 1281
        );
    }

    #[test]
    fn efficientnet_paths_are_the_state_dict_keys() {
        let model = EfficientNetLite0Config::new().init(&device());
        let paths = float_param_paths(&model);
        // 296 keys in the .pth; flint's BN keeps its counter as a float tensor too.
        assert_eq!(paths.len(), 296);
        for key in [
            "_conv_stem.weight",
            "_bn0.gamma",
            "_bn0.num_batches_tracked",
            "_blocks.0._depthwise_conv.weight",
            "_blocks.0._bn2.running_var",
            "_blocks.1._expand_conv.weight",
            "_blocks.1._bn0.running_mean",
            "_blocks.15._project_conv.weight",
            "_conv_head.weight",
            "_bn1.beta",
            "_fc.weight",
            "_fc.bias",
        ] {
            assert!(paths.iter().any(|p| p == key), "{key} not in {paths:?}");
        }
        assert!(
            !paths
                .iter()
                .any(|p| p.starts_with("_blocks.0._expand_conv"))
        );
        assert!(!paths.iter().any(|p| p.starts_with("_blocks.0._bn0")));
    }

    #[test]
    fn efficientnet_blocks_follow_the_reference() {
        let model = EfficientNetLite0Config::new().init(&device());
        let residual: Vec<usize> = (0..16).filter(|&i| model._blocks[i].residual).collect();
        assert_eq!(residual, [2, 4, 6, 7, 9, 10, 12, 13, 14]);
        for (i, block) in model._blocks.iter().enumerate() {
            let expected = 0.2 * i as f64 / 16.0;
            assert!((block.drop_path.prob - expected).abs() < 1e-12, "block {i}");
        }
        assert_eq!(model._blocks[3]._depthwise_conv.kernel_size, [5, 5]);
        assert_eq!(model._blocks[3]._depthwise_conv.stride, [2, 2]);
        assert_eq!(model._blocks[3]._depthwise_conv.groups, 144);
        assert_eq!(model._bn0.eps, 1e-3);
        assert_eq!(model._bn0.momentum, Some(0.01));
    }

    #[test]
    fn efficientnet_invalid_config_is_refused() {
        let d = device();
        let msg = |c: EfficientNetLite0Config| c.try_init(&d).unwrap_err().to_string();
        assert_eq!(
            msg(EfficientNetLite0Config::new().with_num_classes(0)),
            "EfficientNetLite0: `num_classes` must be at least 1"
        );
        assert_eq!(
            msg(EfficientNetLite0Config::new().with_dropout(1.0)),
            "EfficientNetLite0: dropout rate 1 at `dropout` must be in [0, 1)"
        );
        assert_eq!(
            msg(EfficientNetLite0Config::new().with_drop_connect_rate(-0.5)),
            "EfficientNetLite0: dropout rate -0.5 at `drop_connect_rate` must be in [0, 1)"
        );
        let panic = std::panic::catch_unwind(|| {
            EfficientNetLite0Config::new()
                .with_dropout(f64::NAN)
                .init(&Device::flex())
        });
        assert!(panic.is_err());
    }

    #[test]
    fn efficientnet_stochastic_depth_only_in_training() {
        let d = device().autodiff();
        let model = EfficientNetLite0Config::new()
            .with_drop_connect_rate(0.9)
            .init(&d);
        let x = Tensor::<4>::random([2, 3, 64, 64], burn::tensor::Distribution::Default, &d);
        let eval = model.valid();
        let x = x.inner();
        eval.forward(x.clone())
            .into_data()
            .assert_eq(&eval.forward(x).into_data(), true);
    }
}
