//! What the engine needs from a model: the loss and logits of a batch ([`TrainStep`]), with
//! the adapter for image classifiers ([`Classify`]).

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use flint_data::ClassificationBatch;
use flint_layers::{MaxNormLayers, UnitWeights};

/// What a model computed on one batch.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The batch's mean data loss (the engine adds the weight penalties itself).
    pub loss: Tensor<1>,
    /// Class logits, `[batch, classes]`.
    pub logits: Tensor<2>,
    /// Class indices, `[batch]`.
    pub targets: Tensor<1, Int>,
}

impl Forward {
    /// Mean cross-entropy of `logits` against `targets`, the loss of every flint classifier.
    pub fn cross_entropy(logits: Tensor<2>, targets: Tensor<1, Int>) -> Self {
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), targets.clone());
        Self {
            loss,
            logits,
            targets,
        }
    }
}

/// A model the engine can train on batches of type `B`: the loss and logits of a batch. The
/// same call evaluates it (on `model.valid()`).
pub trait TrainStep<B>: Module {
    /// The loss, logits and targets of `batch`.
    fn forward_batch(&self, batch: B) -> Forward;

    /// The layers a max-norm constraint projects ([`MaxNormLayers`]); `None`, the default,
    /// makes a run that asks for max-norm an error rather than a silent no-op.
    fn max_norm_layers(&mut self) -> Option<&mut dyn MaxNormLayers> {
        None
    }
}

/// The adapter for image classifiers: a model that maps `[batch, channels, height, width]`
/// images to logits trains on flint-data's [`ClassificationBatch`] with cross-entropy.
pub trait Classify: Module {
    /// Class logits, `[batch, classes]`.
    fn logits(&self, images: Tensor<4>) -> Tensor<2>;

    /// As [`TrainStep::max_norm_layers`].
    fn max_norm_layers(&mut self) -> Option<&mut dyn MaxNormLayers> {
        None
    }
}

impl<M: Classify> TrainStep<ClassificationBatch> for M {
    fn forward_batch(&self, batch: ClassificationBatch) -> Forward {
        Forward::cross_entropy(self.logits(batch.images), batch.targets)
    }

    fn max_norm_layers(&mut self) -> Option<&mut dyn MaxNormLayers> {
        Classify::max_norm_layers(self)
    }
}

impl Classify for flint_models::Classifier {
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward(images)
    }

    fn max_norm_layers(&mut self) -> Option<&mut dyn MaxNormLayers> {
        Some(self)
    }
}

/// A model's max-norm layers as a value [`MaxNorm::apply`] takes.
pub(crate) struct Layers<'a>(pub(crate) &'a mut dyn MaxNormLayers);

impl MaxNormLayers for Layers<'_> {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        self.0.for_each_unit_weights(f)
    }
}
