use burn::config::Config;
use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;

use crate::LayerConfigError;

/// Configuration of a [`MaxPool2d`]: 2-D max pooling without padding (PyTorch's
/// `nn.MaxPool2d(kernel_size, stride)`, burn's `MaxPool2dConfig` with valid padding).
#[derive(Config, Debug)]
pub struct MaxPool2dConfig {
    /// Window size `[height, width]`, each at least 1.
    pub kernel_size: [usize; 2],
    /// Step between windows `[height, width]`, each at least 1; PyTorch's default is the kernel
    /// size (burn's `MaxPool2dConfig` defaults to 1).
    #[config(default = "None")]
    pub strides: Option<[usize; 2]>,
}

impl MaxPool2dConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<MaxPool2d, LayerConfigError> {
        let strides = self.strides.unwrap_or(self.kernel_size);
        for (field, value) in [("kernel_size", self.kernel_size), ("strides", strides)] {
            if value.contains(&0) {
                return Err(LayerConfigError::Zero {
                    layer: "MaxPool2d",
                    field,
                });
            }
        }
        Ok(MaxPool2d {
            kernel_size: self.kernel_size,
            strides,
        })
    }

    /// Builds the layer; panics with the validation message on a bad configuration.
    pub fn init(&self) -> MaxPool2d {
        self.try_init().unwrap_or_else(|error| panic!("{error}"))
    }
}

/// 2-D max pooling without padding: each output is the largest input in its window.
///
/// Where the windows do not overlap (stride equal to the kernel, the usual 2x2 / stride 2) and
/// the input is f32 on burn-flex, flint computes it in one pass and keeps the position of each
/// maximum as one byte; backward writes each output gradient to that position. burn-flex's own
/// path goes through a 3-D kernel with 8-byte indices and costs about ten times as much. Other
/// backends and overlapping windows use burn's `max_pool2d`. Both give the same values and
/// gradients: a NaN in a window wins, as in PyTorch.
#[derive(Module, Debug)]
pub struct MaxPool2d {
    /// Window size `[height, width]`.
    pub kernel_size: [usize; 2],
    /// Step between windows `[height, width]`.
    pub strides: [usize; 2],
}

impl MaxPool2d {
    /// Applies the pooling.
    ///
    /// # Shapes
    /// - input: `[batch, channels, height, width]`
    /// - output: `[batch, channels, (height - kh) / sh + 1, (width - kw) / sw + 1]`
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        self.check(&input);
        if self.strides == self.kernel_size
            && let Some(output) = flint_kernels::max_pool2d(&input, self.kernel_size)
        {
            return output;
        }
        self.burn(input)
    }

    /// Applies the pooling, then a ReLU: `relu(self.forward(input))`, the same values and
    /// gradients, in one pass where flint's kernel applies (non-overlapping windows of f32 on
    /// burn-flex). Pooling and ReLU commute, so a convolution block's `ReLU -> MaxPool` can call
    /// this and apply the ReLU to the pooled quarter of the values only.
    ///
    /// # Shapes
    /// As [`forward`](Self::forward).
    pub fn forward_relu(&self, input: Tensor<4>) -> Tensor<4> {
        self.check(&input);
        if self.strides == self.kernel_size
            && let Some(output) = flint_kernels::max_pool2d_relu(&input, self.kernel_size)
        {
            return output;
        }
        relu(self.burn(input))
    }

    fn check(&self, input: &Tensor<4>) {
        let [_, _, height, width] = input.dims();
        let [kh, kw] = self.kernel_size;
        assert!(
            height >= kh && width >= kw,
            "MaxPool2d: the input's spatial size {height}x{width} is smaller than the window {kh}x{kw}"
        );
    }

    /// burn's pooling, for what flint's kernels decline.
    fn burn(&self, input: Tensor<4>) -> Tensor<4> {
        max_pool2d(
            input,
            MaxPoolOptions::new(self.kernel_size).with_stride(self.strides),
        )
    }
}
