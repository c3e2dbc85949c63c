//! Element-wise activations selectable from a config.

use burn::config::Config;
use burn::tensor::Tensor;
use burn::tensor::activation;

/// An activation function, chosen by name in configs (`"Relu"`, `"Sigmoid"`, ...).
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `max(0, x)`.
    Relu,
    /// `1 / (1 + e^-x)` (Ioffe & Szegedy's Figure 1 network).
    Sigmoid,
    /// `tanh(x)`.
    Tanh,
    /// Gaussian error linear unit (exact).
    Gelu,
    /// Scaled exponential linear unit (Klambauer et al. 2017; pair it with alpha dropout).
    Selu,
}

impl Activation {
    /// Applies the activation.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Activation::Relu => activation::relu(x),
            Activation::Sigmoid => activation::sigmoid(x),
            Activation::Tanh => activation::tanh(x),
            Activation::Gelu => activation::gelu(x),
            Activation::Selu => activation::selu(x),
        }
    }

    /// The name used in summaries.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::Relu => "ReLU",
            Activation::Sigmoid => "Sigmoid",
            Activation::Tanh => "Tanh",
            Activation::Gelu => "GELU",
            Activation::Selu => "SELU",
        }
    }
}
