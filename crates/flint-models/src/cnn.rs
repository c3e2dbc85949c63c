//! Small convolutional networks, including the reference `cnn` of `reference.md`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use flint_layers::{
    BatchNorm, BatchNormConfig, Dropout, DropoutConfig, MaxPool2d, MaxPool2dConfig, SpatialDropout,
    SpatialDropoutConfig, conv2d, linear,
};

use crate::error::{ModelConfigError, check_rate, or_panic};
use crate::summary::{LayerRow, ModelSummary};

/// Configuration of a [`Cnn`]: `[Conv2d -> (BatchNorm2d) -> ReLU -> MaxPool 2x2 ->
/// (SpatialDropout)] x blocks -> flatten -> (Linear -> ReLU -> Dropout) -> Linear`.
///
/// The defaults are the reference `cnn` of `reference.md`: conv 32 and 64 (3x3, padding 1) with
/// batch norm, a 128-unit hidden layer with dropout 0.5, 10 classes (421,834 parameters).
#[derive(Config, Debug)]
pub struct CnnConfig {
    /// Input channels (1 for grey, 3 for RGB).
    #[config(default = 1)]
    pub in_channels: usize,
    /// Input height and width.
    #[config(default = 28)]
    pub image_size: usize,
    /// Output channels of each conv block.
    #[config(default = "vec![32, 64]")]
    pub channels: Vec<usize>,
    /// Square kernel size (odd; padding `kernel_size / 2` keeps the size before pooling).
    #[config(default = 3)]
    pub kernel_size: usize,
    /// Batch normalisation after each convolution.
    #[config(default = true)]
    pub batch_norm: bool,
    /// Spatial dropout (whole feature maps, Tompson et al. 2015) after each block; 0 is off.
    #[config(default = 0.0)]
    pub spatial_dropout: f64,
    /// Width of the hidden fully connected layer; 0 goes straight to the classifier.
    #[config(default = 128)]
    pub hidden: usize,
    /// Dropout rate before the classifier.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
}

impl CnnConfig {
    /// The reference `cnn` of `reference.md`.
    pub fn reference() -> Self {
        Self::new()
    }

    /// Height (= width) of the feature maps after the last block.
    pub fn final_size(&self) -> usize {
        self.channels
            .iter()
            .fold(self.image_size, |size, _| size / 2)
    }

    /// Number of features fed to the fully connected part.
    pub fn flat_features(&self) -> usize {
        let last = self.channels.last().copied().unwrap_or(self.in_channels);
        last * self.final_size() * self.final_size()
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        const M: &str = "Cnn";
        for (field, value) in [
            ("in_channels", self.in_channels),
            ("image_size", self.image_size),
            ("kernel_size", self.kernel_size),
            ("num_classes", self.num_classes),
        ] {
            if value == 0 {
                return Err(ModelConfigError::Zero { model: M, field });
            }
        }
        if self.channels.contains(&0) {
            return Err(ModelConfigError::Zero {
                model: M,
                field: "channels",
            });
        }
        if self.kernel_size.is_multiple_of(2) {
            return Err(ModelConfigError::EvenKernel {
                model: M,
                kernel: self.kernel_size,
            });
        }
        if self.final_size() == 0 {
            return Err(ModelConfigError::TooSmall {
                model: M,
                size: self.image_size,
                blocks: self.channels.len(),
            });
        }
        check_rate(M, "spatial_dropout", self.spatial_dropout)?;
        check_rate(M, "dropout", self.dropout)?;
        self.size().map(|_| ())
    }

    /// Parameters and activations, counted without building the model.
    pub fn size(&self) -> Result<crate::ModelSize, ModelConfigError> {
        let bn = u128::from(self.batch_norm);
        let k2 = (self.kernel_size as u128).saturating_mul(self.kernel_size as u128);
        let (mut channels, mut side) = (self.in_channels as u128, self.image_size as u128);
        let mut parameters = 0u128;
        let mut activations = channels.saturating_mul(side * side);
        for &out in &self.channels {
            let out = out as u128;
            let weights = channels.saturating_mul(k2).saturating_mul(out);
            parameters = parameters.saturating_add(weights.saturating_add(out * (1 + 2 * bn)));
            // convolution (+ normalised) at full size, pooled (and dropped) at a quarter
            let maps = out.saturating_mul(side * side);
            activations = activations
                .saturating_add(maps.saturating_mul(1 + bn))
                .saturating_add(maps / 2);
            (channels, side) = (out, side / 2);
        }
        let mut width = channels.saturating_mul(side * side);
        if self.hidden > 0 {
            let hidden = self.hidden as u128;
            parameters = parameters.saturating_add(crate::dense(width, hidden));
            activations = activations.saturating_add(hidden * 3);
            width = hidden;
        }
        let classes = self.num_classes as u128;
        crate::ModelSize::counted(
            "Cnn",
            parameters.saturating_add(crate::dense(width, classes)),
            activations.saturating_add(classes),
        )
    }

    /// Checks the configuration and builds the model with PyTorch's default initialisation.
    pub fn try_init(&self, device: &Device) -> Result<Cnn, ModelConfigError> {
        self.validate()?;
        let mut in_channels = self.in_channels;
        let k = self.kernel_size;
        let blocks = self
            .channels
            .iter()
            .map(|&out| {
                let block = ConvBlock {
                    conv: Conv2dConfig::new([in_channels, out], [k, k])
                        .with_padding(PaddingConfig2d::Explicit(k / 2, k / 2, k / 2, k / 2))
                        .init(device),
                    norm: self
                        .batch_norm
                        .then(|| BatchNormConfig::new(out).init(device)),
                    pool: MaxPool2dConfig::new([2, 2]).init(),
                    dropout: (self.spatial_dropout > 0.0)
                        .then(|| SpatialDropoutConfig::new(self.spatial_dropout).init()),
                };
                in_channels = out;
                block
            })
            .collect();
        let flat = self.flat_features();
        let (hidden, classifier_in) = if self.hidden > 0 {
            (
                Some(LinearConfig::new(flat, self.hidden).init(device)),
                self.hidden,
            )
        } else {
            (None, flat)
        };
        Ok(Cnn {
            blocks,
            hidden,
            dropout: DropoutConfig::new(self.dropout).init(),
            output: LinearConfig::new(classifier_in, self.num_classes).init(device),
            in_channels: self.in_channels,
            image_size: self.image_size,
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    /// With [`validate`](Self::validate)'s message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> Cnn {
        or_panic(self.try_init(device))
    }
}

/// A convolution block of a [`Cnn`].
#[derive(Module, Debug)]
pub struct ConvBlock {
    /// The convolution.
    pub conv: Conv2d,
    /// Optional batch normalisation.
    pub norm: Option<BatchNorm>,
    /// 2x2 max pooling, stride 2.
    pub pool: MaxPool2d,
    /// Optional spatial dropout.
    pub dropout: Option<SpatialDropout>,
}

impl ConvBlock {
    /// # Shapes
    /// - input: `[batch, in_channels, h, w]`
    /// - output: `[batch, out_channels, h / 2, w / 2]`
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut x = conv2d(&self.conv, x);
        if let Some(norm) = &self.norm {
            x = norm.forward(x);
        }
        // Max pooling and ReLU commute (both keep order, and ReLU's gradient is zero wherever a
        // window's maximum is not positive), so pooling first gives the same values and
        // gradients with ReLU on a quarter of the values; on flex, in the pooling's own pass
        // (burn-flex's ReLU and its backward step run on one thread).
        let x = self.pool.forward_relu(x);
        match &self.dropout {
            Some(dropout) => dropout.forward(x),
            None => x,
        }
    }
}

/// A small convolutional classifier; see [`CnnConfig`].
#[derive(Module, Debug)]
pub struct Cnn {
    /// The convolution blocks.
    pub blocks: Vec<ConvBlock>,
    /// Optional hidden fully connected layer.
    pub hidden: Option<Linear>,
    /// Dropout before the classifier.
    pub dropout: Dropout,
    /// The classifier layer.
    pub output: Linear,
    #[module(skip)]
    in_channels: usize,
    #[module(skip)]
    image_size: usize,
}

impl Cnn {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, in_channels, image_size, image_size]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        linear(&self.output, self.features(images))
    }

    /// The features fed to the classifier layer (after the hidden layer and dropout).
    ///
    /// # Shapes
    /// - images: `[batch, in_channels, image_size, image_size]`
    /// - output: `[batch, hidden]` (or the flattened conv features when there is no hidden layer)
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_traced(images, &mut |_| {})
    }

    fn forward_traced(&self, images: Tensor<4>, trace: &mut dyn FnMut(&[usize])) -> Tensor<2> {
        let dims = images.dims();
        assert!(
            dims[1] == self.in_channels && dims[2] == self.image_size && dims[3] == self.image_size,
            "Cnn expects images of shape [batch, {}, {}, {}], got {dims:?}",
            self.in_channels,
            self.image_size,
            self.image_size
        );
        let mut x = images;
        for block in &self.blocks {
            x = block.forward(x);
            trace(&x.dims());
        }
        let x: Tensor<2> = x.flatten(1, 3);
        trace(&x.dims());
        let x = match &self.hidden {
            Some(hidden) => {
                let h = relu(linear(hidden, x));
                trace(&h.dims());
                h
            }
            None => x,
        };
        self.dropout.forward(x)
    }

    /// Layers, output shapes and parameter counts for an input of `input_shape`.
    pub fn summary(&self, input_shape: [usize; 4], device: &Device) -> ModelSummary {
        let mut shapes = Vec::new();
        let features = self.forward_traced(Tensor::zeros(input_shape, device), &mut |s| {
            shapes.push(s.to_vec())
        });
        let logits = linear(&self.output, features);
        let mut rows = Vec::new();
        for (i, block) in self.blocks.iter().enumerate() {
            let [c_out, c_in, kh, _] = block.conv.weight.dims();
            let mut kind = format!("Conv2d({c_in}, {c_out}, {kh}x{kh})");
            if block.norm.is_some() {
                kind.push_str(" + BatchNorm2d");
            }
            kind.push_str(" + ReLU + MaxPool 2x2");
            if let Some(d) = &block.dropout {
                kind.push_str(&format!(" + SpatialDropout({})", d.prob));
            }
            rows.push(LayerRow::new(
                &format!("blocks.{i}"),
                &kind,
                &shapes[i],
                block,
            ));
        }
        let nb = self.blocks.len();
        rows.push(LayerRow::without_params("flatten", "Flatten", &shapes[nb]));
        if let Some(hidden) = &self.hidden {
            let [i, o] = hidden.weight.dims();
            rows.push(LayerRow::new(
                "hidden",
                &format!("Linear({i}, {o}) + ReLU"),
                &shapes[nb + 1],
                hidden,
            ));
        }
        let [i, o] = self.output.weight.dims();
        let mut kind = format!("Linear({i}, {o})");
        if self.dropout.prob > 0.0 {
            kind = format!("Dropout({}) + {kind}", self.dropout.prob);
        }
        rows.push(LayerRow::new("output", &kind, &logits.dims(), &self.output));
        ModelSummary::new("Cnn", input_shape, rows, self)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::activation::relu;
    use burn::tensor::{Device, Distribution, Tensor};
    use flint_layers::MaxPool2dConfig;

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data().try_to_vec::<f32>().unwrap()
    }

    /// `ConvBlock` pools and applies its ReLU in one call: check that neither that nor the
    /// order changes values or gradients, with windows that are all negative, mixed, and hold
    /// ties at zero.
    #[test]
    fn pooling_before_relu_gives_the_same_values_and_gradients() {
        let device = Device::flex().autodiff();
        device.seed(4);
        let x = Tensor::<4>::random([3, 4, 8, 8], Distribution::Normal(-0.3, 1.0), &device);
        let weights = Tensor::<4>::random([3, 4, 4, 4], Distribution::Default, &device);
        // Some windows of exact zeros and negatives.
        let x = x.slice_assign(
            [0..1, 0..1, 0..2, 0..4],
            Tensor::zeros([1, 1, 2, 4], &device),
        );
        let x = x.require_grad();
        let pool = MaxPool2dConfig::new([2, 2]).init();
        let run = |order: usize| {
            let output = match order {
                0 => pool.forward(relu(x.clone())),
                1 => relu(pool.forward(x.clone())),
                _ => pool.forward_relu(x.clone()),
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            (values(output), values(x.grad(&grads).unwrap()))
        };
        assert_eq!(run(1), run(0));
        assert_eq!(run(2), run(0));
    }
}
