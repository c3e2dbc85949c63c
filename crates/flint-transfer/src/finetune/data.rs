//! The data of a fine-tuning run as the training engine's batches: image folders and small
//! image sets ([`TransferData`]), and cached backbone features ([`FeatureBatches`]).

use std::path::Path;
use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use flint_data::{
    ClassificationBatch, ImageBatcher, ImageFolder, ImageFolderDataset, ImageSet, ImageTransform,
    LabelledSet, LoaderOptions, SkippedFile, TensorBatcher, loader, train_val_split,
};
use flint_io::seed::derive_seed;
use flint_train::{
    Batches, DatasetBatches, EvalAccumulator, EvalReport, Forward, TrainError, TrainStep,
};

use crate::backbone::InputSpec;
use crate::cache::{Features, fingerprint_files};
use crate::error::TransferError;
use crate::model::TransferModel;

/// Training and validation data of a transfer run.
#[derive(Debug, Clone)]
pub enum TransferData {
    /// Image files.
    Folder {
        /// Training images.
        train: ImageFolder,
        /// Validation images.
        val: ImageFolder,
    },
    /// Decoded small images (IDX data sets).
    Images {
        /// Training images.
        train: ImageSet,
        /// Validation images.
        val: ImageSet,
    },
}

impl TransferData {
    /// `root/train` and `root/val` when they exist, else `root` split by `val_fraction`.
    pub fn open_folder(root: &Path, val_fraction: f64, seed: u64) -> Result<Self, TransferError> {
        let (train, val) = if root.join("train").is_dir() && root.join("val").is_dir() {
            (
                ImageFolder::open(root.join("train"))?,
                ImageFolder::open(root.join("val"))?,
            )
        } else {
            let all = ImageFolder::open(root)?;
            train_val_split(&all, val_fraction, derive_seed(seed, 103))?
        };
        if train.class_names() != val.class_names() {
            return Err(TransferError::Invalid(format!(
                "{}: train and val have different classes ({:?} vs {:?})",
                root.display(),
                train.class_names(),
                val.class_names()
            )));
        }
        Ok(Self::Folder { train, val })
    }

    /// The files of the folders that could not be used, each once, with why.
    pub fn skipped(&self) -> Vec<SkippedFile> {
        let mut all: Vec<SkippedFile> = match self {
            Self::Folder { train, val } => train
                .skipped()
                .iter()
                .chain(val.skipped())
                .cloned()
                .collect(),
            Self::Images { .. } => Vec::new(),
        };
        // A folder split in two shares one scan, so its skipped files appear on both sides.
        all.sort_by(|a, b| a.path.cmp(&b.path));
        all.dedup_by(|a, b| a.path == b.path);
        all
    }

    /// Class names.
    pub fn class_names(&self) -> Vec<String> {
        match self {
            Self::Folder { train, .. } => train.class_names().to_vec(),
            Self::Images { train, .. } => train.class_names().to_vec(),
        }
    }

    pub(crate) fn len(&self, val: bool) -> usize {
        match (self, val) {
            (Self::Folder { train, .. }, false) => train.len(),
            (Self::Folder { val, .. }, true) => val.len(),
            (Self::Images { train, .. }, false) => train.len(),
            (Self::Images { val, .. }, true) => val.len(),
        }
    }

    pub(crate) fn check_input(&self, input: &InputSpec) -> Result<(), TransferError> {
        match self {
            Self::Folder { .. } if input.channels != 3 => Err(TransferError::Invalid(format!(
                "this backbone takes {}-channel {}x{} images; image folders need an RGB backbone",
                input.channels, input.size, input.size
            ))),
            Self::Images { train, .. }
                if train.shape() != [input.channels, input.size as usize, input.size as usize] =>
            {
                Err(TransferError::Invalid(format!(
                    "images are {:?} but the backbone takes [{}, {}, {}]",
                    train.shape(),
                    input.channels,
                    input.size,
                    input.size
                )))
            }
            _ => Ok(()),
        }
    }

    /// A loader over one split; `augment` applies the random training transform (folders).
    pub(crate) fn loader(
        &self,
        val: bool,
        augment: bool,
        input: &InputSpec,
        options: &LoaderOptions,
        seed: u64,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<ClassificationBatch>>, TransferError> {
        Ok(match self {
            Self::Folder { train, val: v } => {
                let folder = if val { v } else { train };
                let transform = if augment {
                    ImageTransform::Train {
                        size: input.size,
                        scale: (0.08, 1.0),
                        ratio: (3.0 / 4.0, 4.0 / 3.0),
                        flip: true,
                    }
                } else {
                    ImageTransform::Eval {
                        resize: input.resize,
                        crop: input.size,
                    }
                };
                let ds = ImageFolderDataset::new(
                    folder.clone(),
                    transform,
                    input.normalize.clone(),
                    seed,
                );
                loader(ds, TensorBatcher, options, device)?
            }
            Self::Images { train, val: v } => {
                let set = if val { v } else { train };
                loader(
                    set.clone(),
                    ImageBatcher::normalized(input.normalize.clone()),
                    options,
                    device,
                )?
            }
        })
    }

    /// Identifies a split's content for the feature cache.
    pub(crate) fn fingerprint(&self, val: bool) -> Result<String, TransferError> {
        match self {
            Self::Folder { train, val: v } => {
                let f = if val { v } else { train };
                fingerprint_files(f.root(), (0..f.len()).map(|i| (f.path(i), f.label(i))))
            }
            Self::Images { train, val: v } => {
                use sha2::{Digest, Sha256};
                let s = if val { v } else { train };
                let mut h = Sha256::new();
                h.update(s.name().as_bytes());
                for i in 0..s.len() {
                    h.update(s.image(i));
                }
                h.update(s.labels());
                Ok(format!("{:x}", h.finalize()))
            }
        }
    }
}

/// One split of a [`TransferData`] as the engine's data: the random training transform on
/// training epochs when `augment` is set, the evaluation transform otherwise.
pub struct SplitBatches<'a> {
    /// The run's data.
    pub data: &'a TransferData,
    /// The validation split (else the training split).
    pub val: bool,
    /// Random-resized-crop and flips on training epochs (image folders).
    pub augment: bool,
    /// What the backbone expects.
    pub input: &'a InputSpec,
    /// Loader threads.
    pub workers: usize,
}

impl Batches<ClassificationBatch> for SplitBatches<'_> {
    fn len(&self) -> usize {
        self.data.len(self.val)
    }

    fn class_names(&self) -> Vec<String> {
        self.data.class_names()
    }

    fn epoch(
        &self,
        batch_size: usize,
        seed: Option<u64>,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<ClassificationBatch>>, TrainError> {
        let options = LoaderOptions::new(batch_size).workers(self.workers);
        let result = match seed {
            Some(seed) => self.data.loader(
                self.val,
                self.augment,
                self.input,
                &options.shuffled(seed),
                seed,
                device,
            ),
            None => self
                .data
                .loader(self.val, false, self.input, &options, 0, device),
        };
        result.map_err(|e| match e {
            TransferError::Data(e) => TrainError::Data(e),
            TransferError::Train(e) => e,
            other => TrainError::Hook(Box::new(other)),
        })
    }
}

/// A batch of cached backbone features.
#[derive(Debug, Clone)]
pub struct FeatureBatch {
    /// Features, `[batch, dim]`.
    pub features: Tensor<2>,
    /// Class indices, `[batch]`.
    pub targets: Tensor<1, Int>,
}

/// A feature-extraction run trains the head on cached features; the frozen backbone is carried
/// along so every checkpoint is the whole network `flint predict` runs.
impl TrainStep<FeatureBatch> for TransferModel {
    fn forward_batch(&self, batch: FeatureBatch) -> Forward {
        Forward::cross_entropy(self.head.forward(batch.features), batch.targets)
    }
}

/// Rows of [`Features`] as a burn data set.
struct FeatureRows(Arc<Features>);

impl Dataset<(Vec<f32>, u32)> for FeatureRows {
    fn get(&self, index: usize) -> Result<(Vec<f32>, u32), DatasetError> {
        if index >= self.0.len() {
            return Err(DatasetError::new(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("row {index} of {} features", self.0.len()),
            )));
        }
        Ok((self.0.row(index).to_vec(), self.0.labels[index]))
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

#[derive(Debug, Clone, Copy)]
struct FeatureBatcher {
    dim: usize,
}

impl Batcher<(Vec<f32>, u32), FeatureBatch> for FeatureBatcher {
    fn batch(&self, items: Vec<(Vec<f32>, u32)>, device: &Device) -> FeatureBatch {
        let n = items.len();
        let mut values = Vec::with_capacity(n * self.dim);
        let mut labels = Vec::with_capacity(n);
        for (row, label) in items {
            values.extend_from_slice(&row);
            labels.push(i64::from(label));
        }
        FeatureBatch {
            features: Tensor::from_data(TensorData::new(values, [n, self.dim]), device),
            targets: Tensor::from_data(TensorData::new(labels, [n]), device),
        }
    }
}

/// Cached features as the engine's data.
pub struct FeatureBatches(DatasetBatches<(Vec<f32>, u32), FeatureBatch>);

impl FeatureBatches {
    /// `features`, labelled with `class_names`.
    pub fn new(features: Features, class_names: Vec<String>) -> Self {
        let dim = features.dim;
        Self(DatasetBatches::new(
            FeatureRows(Arc::new(features)),
            FeatureBatcher { dim },
            class_names,
        ))
    }
}

impl Batches<FeatureBatch> for FeatureBatches {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn class_names(&self) -> Vec<String> {
        self.0.class_names()
    }

    fn epoch(
        &self,
        batch_size: usize,
        seed: Option<u64>,
        device: &Device,
    ) -> Result<Arc<dyn DataLoader<FeatureBatch>>, TrainError> {
        self.0.epoch(batch_size, seed, device)
    }
}

/// Backbone features of every batch of `dl`.
pub fn extract(
    backbone: &crate::backbone::Backbone,
    dl: &dyn DataLoader<ClassificationBatch>,
    dim: usize,
) -> Result<Features, TransferError> {
    let mut values = Vec::new();
    let mut labels = Vec::new();
    for batch in dl.iter() {
        let batch = batch.map_err(|e| TransferError::Invalid(format!("loading: {e}")))?;
        let f = backbone.features(batch.images);
        let [_, d] = f.dims();
        if d != dim {
            return Err(TransferError::Invalid(format!(
                "backbone returned {d} features, expected {dim}"
            )));
        }
        values.extend(
            f.into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .expect("converted to f32"),
        );
        labels.extend(
            batch
                .targets
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .expect("converted to i64")
                .into_iter()
                .map(|l| l as u32),
        );
    }
    Ok(Features {
        dim,
        values,
        labels,
    })
}

/// Accuracy, loss, per-class accuracy and confusion matrix of `forward` over `dl`.
pub fn evaluate_loader(
    forward: impl Fn(Tensor<4>) -> Tensor<2>,
    dl: &dyn DataLoader<ClassificationBatch>,
    classes: &[String],
    device: &Device,
) -> Result<EvalReport, TransferError> {
    let mut eval = EvalAccumulator::new(classes.len(), device);
    for batch in dl.iter() {
        let batch = batch.map_err(|e| TransferError::Invalid(format!("loading: {e}")))?;
        eval.add(forward(batch.images), batch.targets);
    }
    Ok(eval.finish(classes.to_vec()))
}
