//! What the engine needs from data: one epoch's batches from a seed ([`Batches`]), for any
//! burn `Dataset` + `Batcher` ([`DatasetBatches`]).

use std::sync::Arc;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::Dataset;
use burn::prelude::*;

use crate::error::TrainError;

/// A labelled data set the engine draws batches of type `B` from.
pub trait Batches<B>: Send + Sync {
    /// Samples in one pass.
    fn len(&self) -> usize;
    /// Whether there are no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names, by label.
    fn class_names(&self) -> Vec<String>;
    /// One pass in batches of `batch_size` on `device`. `seed` is the epoch's: the order and any
    /// random augmentation derive from it alone, so a resumed run sees the same batches; `None`
    /// (evaluation) keeps the order and augments nothing.
    fn epoch(
        &self,
        batch_size: usize,
        seed: Option<u64>,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<B>>, TrainError>;
}

/// Any burn `Dataset` with a `Batcher`, shuffled from each epoch's seed.
pub struct DatasetBatches<I, B> {
    dataset: Arc<dyn Dataset<I>>,
    batcher: Arc<dyn Batcher<I, B>>,
    class_names: Vec<String>,
    workers: usize,
}

impl<I, B> DatasetBatches<I, B> {
    /// `dataset` batched by `batcher`, with these class names (by label).
    pub fn new(
        dataset: impl Dataset<I> + 'static,
        batcher: impl Batcher<I, B> + 'static,
        class_names: Vec<String>,
    ) -> Self {
        Self {
            dataset: Arc::new(dataset),
            batcher: Arc::new(batcher),
            class_names,
            workers: 0,
        }
    }

    /// Background loading threads (0, the default, loads on the training thread; with 0 or 1
    /// the batch order is fully determined by the seed).
    pub fn with_workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
}

/// A shared batcher as a batcher (burn's builder takes one by value).
struct SharedBatcher<I, B>(Arc<dyn Batcher<I, B>>);

impl<I, B> Batcher<I, B> for SharedBatcher<I, B> {
    fn batch(&self, items: Vec<I>, device: &Device) -> B {
        self.0.batch(items, device)
    }
}

impl<I, B> Batches<B> for DatasetBatches<I, B>
where
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    B: Send + Clone + std::fmt::Debug + 'static,
{
    fn len(&self) -> usize {
        self.dataset.len()
    }

    fn class_names(&self) -> Vec<String> {
        self.class_names.clone()
    }

    fn epoch(
        &self,
        batch_size: usize,
        seed: Option<u64>,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<B>>, TrainError> {
        if self.dataset.is_empty() {
            return Err(TrainError::Config("the data set is empty".into()));
        }
        let mut builder = DataLoaderBuilder::new(SharedBatcher(self.batcher.clone()))
            .batch_size(batch_size.clamp(1, self.dataset.len()))
            .set_device(device.clone());
        if let Some(seed) = seed {
            builder = builder.shuffle(seed);
        }
        if self.workers > 0 {
            builder = builder.num_workers(self.workers);
        }
        Ok(builder.build(self.dataset.clone()))
    }
}
