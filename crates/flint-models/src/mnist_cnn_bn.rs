//! The MNIST CNN with batch norm that burn's examples train in PyTorch
//! (`../shared/models/mnist-cnn-bn.{pt,safetensors,onnx}`), as a flint module whose parameter
//! names match the PyTorch state dict, so its weights load by name.

use burn::config::Config;
use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use flint_layers::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, conv2d};

use crate::error::{ModelConfigError, check_rate};

/// Configuration of [`MnistCnnBn`]: `conv 8 -> conv 16 -> conv 24 (3x3, no padding, ReLU) ->
/// BatchNorm2d -> flatten -> Linear 32 -> ReLU -> Dropout -> Linear -> BatchNorm1d`.
///
/// The network returns logits; the ONNX export ends with a `LogSoftmax`, which does not change
/// the predicted class.
#[derive(Config, Debug)]
pub struct MnistCnnBnConfig {
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Dropout rate after the hidden layer (the original was trained with 0.3).
    #[config(default = 0.3)]
    pub dropout: f64,
}

impl MnistCnnBnConfig {
    /// Checks the configuration and builds the model with PyTorch's default initialisation.
    pub fn try_init(&self, device: &Device) -> Result<MnistCnnBn, ModelConfigError> {
        if self.num_classes == 0 {
            return Err(ModelConfigError::Zero {
                model: "MnistCnnBn",
                field: "num_classes",
            });
        }
        check_rate("MnistCnnBn", "dropout", self.dropout)?;
        Ok(MnistCnnBn {
            conv1: Conv2dConfig::new([1, 8], [3, 3]).init(device),
            conv2: Conv2dConfig::new([8, 16], [3, 3]).init(device),
            conv3: Conv2dConfig::new([16, 24], [3, 3]).init(device),
            norm1: BatchNormConfig::new(24).init(device),
            fc1: LinearConfig::new(24 * 22 * 22, 32).init(device),
            dropout1: DropoutConfig::new(self.dropout).init(),
            fc2: LinearConfig::new(32, self.num_classes).init(device),
            norm2: BatchNormConfig::new(self.num_classes).init(device),
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    /// With the validation message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> MnistCnnBn {
        crate::error::or_panic(self.try_init(device))
    }
}

/// burn's PyTorch-trained MNIST CNN (the field names are the state dict's).
#[derive(Module, Debug)]
pub struct MnistCnnBn {
    /// 1 -> 8 channels, 3x3.
    pub conv1: Conv2d,
    /// 8 -> 16 channels, 3x3.
    pub conv2: Conv2d,
    /// 16 -> 24 channels, 3x3.
    pub conv3: Conv2d,
    /// Batch norm over the 24 channels.
    pub norm1: BatchNorm,
    /// 11,616 -> 32.
    pub fc1: Linear,
    /// Dropout after `fc1`.
    pub dropout1: Dropout,
    /// 32 -> classes.
    pub fc2: Linear,
    /// Batch norm over the logits.
    pub norm2: BatchNorm,
}

impl MnistCnnBn {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, 1, 28, 28]`, normalised with MNIST's mean 0.1307 and std 0.3081
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self.features(images);
        self.norm2
            .forward(self.fc2.forward(self.dropout1.forward(x)))
    }

    /// The 32 hidden features before the classifier (after ReLU).
    ///
    /// # Shapes
    /// - images: `[batch, 1, 28, 28]`
    /// - output: `[batch, 32]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let x = relu(conv2d(&self.conv1, images));
        let x = relu(conv2d(&self.conv2, x));
        let x = relu(conv2d(&self.conv3, x));
        let x = self.norm1.forward(x).flatten(1, 3);
        relu(self.fc1.forward(x))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_and_parameter_count() {
        let device = Device::flex();
        let model = MnistCnnBnConfig::new().init(&device);
        let out = model.forward(Tensor::zeros([2, 1, 28, 28], &device));
        assert_eq!(out.dims(), [2, 10]);
        // The state dict's learnable tensors: conv 80 + 1,168 + 3,480, norm1 2 x 24,
        // fc1 11,616 x 32 + 32, fc2 32 x 10 + 10, norm2 2 x 10.
        let learnable = 80 + 1168 + 3480 + 2 * 24 + 11616 * 32 + 32 + 32 * 10 + 10 + 2 * 10;
        // burn also counts the batch norms' running mean and variance and their batch counters.
        let running = 2 * 24 + 2 * 10 + 2;
        assert_eq!(model.num_params(), learnable + running);
    }

    #[test]
    fn invalid_config_is_refused() {
        let device = Device::flex();
        let err = MnistCnnBnConfig::new()
            .with_num_classes(0)
            .try_init(&device)
            .unwrap_err();
        assert!(err.to_string().contains("num_classes"), "{err}");
        assert!(
            MnistCnnBnConfig::new()
                .with_dropout(1.5)
                .try_init(&device)
                .is_err()
        );
    }
}
