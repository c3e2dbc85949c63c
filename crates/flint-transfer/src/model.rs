//! A pretrained backbone with a new classification head.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use flint_layers::{Dropout, DropoutConfig};

use crate::backbone::Backbone;
use crate::error::TransferError;

/// The new head: `Dropout -> Linear(features, classes)`.
#[derive(Module, Debug)]
pub struct Head {
    /// Dropout on the features (rate 0 is the identity).
    pub dropout: Dropout,
    /// The classifier.
    pub linear: Linear,
}

impl Head {
    /// A freshly initialised head (PyTorch's default initialisation).
    pub fn new(
        features: usize,
        classes: usize,
        dropout: f64,
        device: &Device,
    ) -> Result<Self, TransferError> {
        if features == 0 || classes < 2 {
            return Err(TransferError::Invalid(format!(
                "a head needs features > 0 and at least 2 classes, got {features} -> {classes}"
            )));
        }
        if !(0.0..1.0).contains(&dropout) {
            return Err(TransferError::Invalid(format!(
                "head dropout must be in [0, 1), got {dropout}"
            )));
        }
        Ok(Self {
            dropout: DropoutConfig::new(dropout).init(),
            linear: LinearConfig::new(features, classes).init(device),
        })
    }

    /// Class logits from features.
    ///
    /// # Shapes
    /// - features: `[batch, features]`
    /// - output: `[batch, classes]`
    pub fn forward(&self, features: Tensor<2>) -> Tensor<2> {
        self.linear.forward(self.dropout.forward(features))
    }
}

/// A backbone and a head: the network a fine-tuning run trains and `flint predict` runs.
///
/// Parameter paths start with `backbone.` or `head.`, which is what freezing patterns and
/// learning-rate groups match.
#[derive(Module, Debug)]
pub struct TransferModel {
    /// The pretrained part.
    pub backbone: Backbone,
    /// The new classifier.
    pub head: Head,
}

impl TransferModel {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, channels, size, size]` as the backbone expects
    /// - output: `[batch, classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.head.forward(self.backbone.features(images))
    }
}
