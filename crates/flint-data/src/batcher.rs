//! From items to `[N, C, H, W]` tensors: burn `Batcher`s, small-image augmentation and
//! shuffled, multi-threaded loaders.

use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderBuilder, batcher::Batcher};
use burn::data::dataset::{Dataset, DatasetError};
use burn::prelude::*;
use rand::RngExt;

use crate::error::{DataError, Result};
use crate::image_folder::{SampleRng, TensorItem};
use crate::image_set::{ImageItem, ImageSet};
use crate::transform::{Normalize, flip_horizontal, pad_and_random_crop};

/// A batch for classification.
#[derive(Debug, Clone)]
pub struct ClassificationBatch {
    /// Images, `[N, C, H, W]`.
    pub images: Tensor<4>,
    /// Class indices, `[N]`.
    pub targets: Tensor<1, Int>,
}

/// Batches `u8` images: scales to `[0, 1]` (`x / 255`), then normalises per channel if asked.
#[derive(Debug, Clone, Default)]
pub struct ImageBatcher {
    normalize: Option<Normalize>,
}

impl ImageBatcher {
    /// `x / 255`, no further normalisation (the reference models' input).
    pub fn new() -> Self {
        Self { normalize: None }
    }

    /// `(x / 255 - mean) / std` per channel.
    pub fn normalized(normalize: Normalize) -> Self {
        Self {
            normalize: Some(normalize),
        }
    }
}

impl Batcher<ImageItem, ClassificationBatch> for ImageBatcher {
    fn batch(&self, items: Vec<ImageItem>, device: &Device) -> ClassificationBatch {
        let shape = items.first().map(|i| i.shape).unwrap_or([1, 1, 1]);
        let per_image: usize = shape.iter().product();
        let mut values = Vec::with_capacity(items.len() * per_image);
        let mut targets = Vec::with_capacity(items.len());
        for item in &items {
            assert_eq!(
                item.shape, shape,
                "all images of a batch must have the same shape"
            );
            let start = values.len();
            values.extend(item.pixels.iter().map(|&p| p as f32 / 255.0));
            if let Some(n) = &self.normalize {
                n.apply(&mut values[start..], shape[0]);
            }
            targets.push(item.label as i64);
        }
        to_batch(values, targets, shape, device)
    }
}

/// Batches already-transformed `f32` images (from an image folder).
#[derive(Debug, Clone, Copy, Default)]
pub struct TensorBatcher;

impl Batcher<TensorItem, ClassificationBatch> for TensorBatcher {
    fn batch(&self, items: Vec<TensorItem>, device: &Device) -> ClassificationBatch {
        let shape = items.first().map(|i| i.shape).unwrap_or([1, 1, 1]);
        let mut values = Vec::with_capacity(items.len() * shape.iter().product::<usize>());
        let mut targets = Vec::with_capacity(items.len());
        for item in items {
            assert_eq!(
                item.shape, shape,
                "all images of a batch must have the same shape"
            );
            values.extend_from_slice(&item.data);
            targets.push(item.label as i64);
        }
        to_batch(values, targets, shape, device)
    }
}

fn to_batch(
    values: Vec<f32>,
    targets: Vec<i64>,
    [c, h, w]: [usize; 3],
    device: &Device,
) -> ClassificationBatch {
    let n = targets.len();
    ClassificationBatch {
        images: Tensor::from_data(TensorData::new(values, [n, c, h, w]), device),
        targets: Tensor::from_data(TensorData::new(targets, [n]), device),
    }
}

/// Training-time augmentation for small images (28x28, 32x32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Augment {
    /// Zero-pad by this many pixels and crop back to the original size at a random offset
    /// (torchvision's `RandomCrop(size, padding=pad)`); 0 turns it off.
    pub pad_crop: usize,
    /// Mirror left-right with probability 0.5 (sensible for Fashion-MNIST and CIFAR, not for
    /// digits).
    pub hflip: bool,
}

impl Augment {
    /// No augmentation.
    pub fn none() -> Self {
        Self::default()
    }

    /// Whether this does anything.
    pub fn is_identity(&self) -> bool {
        self.pad_crop == 0 && !self.hflip
    }
}

/// An [`ImageSet`] with random augmentation on each access, reproducible per (seed, sample,
/// epoch) whatever the number of loader threads.
#[derive(Debug, Clone)]
pub struct AugmentedImages {
    set: ImageSet,
    augment: Augment,
    rng: SampleRng,
}

impl AugmentedImages {
    /// Wraps `set`; `seed` drives the augmentation.
    pub fn new(set: ImageSet, augment: Augment, seed: u64) -> Result<Self> {
        let [_, h, w] = set.shape();
        if augment.pad_crop > h.max(w) {
            return Err(DataError::invalid(format!(
                "crop padding {} is larger than the images ({h}x{w})",
                augment.pad_crop
            )));
        }
        let rng = SampleRng::new(seed, crate::LabelledSet::len(&set));
        Ok(Self { set, augment, rng })
    }
}

impl Dataset<ImageItem> for AugmentedImages {
    fn get(&self, index: usize) -> std::result::Result<ImageItem, DatasetError> {
        let mut item = self.set.get(index)?;
        if self.augment.is_identity() {
            return Ok(item);
        }
        let mut rng = self.rng.next_for(index);
        pad_and_random_crop(
            &mut item.pixels,
            item.shape,
            self.augment.pad_crop,
            &mut rng,
        );
        if self.augment.hflip && rng.random_bool(0.5) {
            flip_horizontal(&mut item.pixels, item.shape);
        }
        Ok(item)
    }

    fn len(&self) -> usize {
        Dataset::<ImageItem>::len(&self.set)
    }
}

/// How a data loader batches and orders its data set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoaderOptions {
    /// Samples per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Reshuffle every epoch from this seed; `None` keeps the data set's order.
    pub shuffle: Option<u64>,
    /// Background loading threads; 0 loads on the calling thread. With one thread or none the
    /// batch order is fully determined by the seed; with several, burn interleaves the threads'
    /// batches in arrival order.
    pub workers: usize,
}

impl LoaderOptions {
    /// Batches of `batch_size`, in order, on the calling thread.
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: None,
            workers: 0,
        }
    }

    /// Reshuffles every epoch from `seed`.
    pub fn shuffled(mut self, seed: u64) -> Self {
        self.shuffle = Some(seed);
        self
    }

    /// Loads on `workers` background threads.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }
}

/// Builds a burn data loader over `dataset` placing batches on `device`.
pub fn loader<I, B, D>(
    dataset: D,
    batcher: B,
    options: &LoaderOptions,
    device: &Device,
) -> Result<Arc<dyn DataLoader<ClassificationBatch>>>
where
    I: Send + Sync + Clone + std::fmt::Debug + 'static,
    B: Batcher<I, ClassificationBatch> + 'static,
    D: Dataset<I> + 'static,
{
    if options.batch_size == 0 {
        return Err(DataError::invalid("batch size must be at least 1"));
    }
    if dataset.is_empty() {
        return Err(DataError::invalid(
            "cannot build a loader over an empty data set",
        ));
    }
    // A batch never holds more than the whole set; burn reserves room for a full batch up
    // front, so an absurd batch size would otherwise abort on the allocation.
    let mut builder = DataLoaderBuilder::new(batcher)
        .batch_size(options.batch_size.min(dataset.len()))
        .set_device(device.clone());
    if let Some(seed) = options.shuffle {
        builder = builder.shuffle(seed);
    }
    if options.workers > 0 {
        builder = builder.num_workers(options.workers);
    }
    Ok(builder.build(dataset))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> ImageSet {
        let pixels: Vec<u8> = (0..4 * 4).map(|i| (i * 17) as u8).collect();
        ImageSet::new(
            "t",
            [1, 2, 2],
            pixels,
            vec![0, 1, 2, 1],
            vec!["a".into(), "b".into(), "c".into()],
        )
        .unwrap()
    }

    #[test]
    fn batches_scale_and_normalise() {
        let device = Device::flex();
        let items: Vec<ImageItem> = (0..2).map(|i| set().get(i).unwrap()).collect();
        let batch = ImageBatcher::new().batch(items.clone(), &device);
        assert_eq!(batch.images.dims(), [2, 1, 2, 2]);
        let v: Vec<f32> = batch.images.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(v[1], 17.0 / 255.0);
        let t: Vec<i64> = batch
            .targets
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        assert_eq!(t, vec![0, 1]);

        let norm = Normalize::new(vec![0.5], vec![0.5]).unwrap();
        let batch = ImageBatcher::normalized(norm).batch(items, &device);
        let v: Vec<f32> = batch.images.into_data().try_to_vec::<f32>().unwrap();
        assert!((v[0] + 1.0).abs() < 1e-6);
    }

    #[test]
    fn loader_covers_every_sample_once_per_epoch() {
        let device = Device::flex();
        for workers in [0, 2] {
            let dl = loader(
                set(),
                ImageBatcher::new(),
                &LoaderOptions::new(3).shuffled(9).workers(workers),
                &device,
            )
            .unwrap();
            let mut labels = Vec::new();
            let mut sizes = Vec::new();
            for batch in dl.iter() {
                let batch = batch.unwrap();
                sizes.push(batch.images.dims()[0]);
                let t: Vec<i64> = batch
                    .targets
                    .into_data()
                    .convert::<i64>()
                    .try_to_vec::<i64>()
                    .unwrap();
                labels.extend(t);
            }
            labels.sort_unstable();
            assert_eq!(labels, vec![0, 1, 1, 2], "workers = {workers}");
            assert_eq!(sizes.iter().sum::<usize>(), 4);
        }
    }

    #[test]
    fn loader_rejects_bad_options() {
        let device = Device::flex();
        let err = loader(set(), ImageBatcher::new(), &LoaderOptions::new(0), &device)
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "batch size must be at least 1");
    }

    #[test]
    fn augmentation_flips_and_shifts_reproducibly() {
        let flip = AugmentedImages::new(
            set(),
            Augment {
                pad_crop: 0,
                hflip: true,
            },
            3,
        )
        .unwrap();
        let original = set().get(0).unwrap().pixels;
        let mut flipped_seen = false;
        for _ in 0..20 {
            let p = flip.get(0).unwrap().pixels;
            let mirrored = vec![original[1], original[0], original[3], original[2]];
            assert!(p == original || p == mirrored);
            flipped_seen |= p == mirrored;
        }
        assert!(flipped_seen);
        let again = AugmentedImages::new(
            set(),
            Augment {
                pad_crop: 1,
                hflip: true,
            },
            3,
        )
        .unwrap();
        let twin = AugmentedImages::new(
            set(),
            Augment {
                pad_crop: 1,
                hflip: true,
            },
            3,
        )
        .unwrap();
        for _ in 0..5 {
            assert_eq!(again.get(2).unwrap(), twin.get(2).unwrap());
        }
        let err = AugmentedImages::new(
            set(),
            Augment {
                pad_crop: 3,
                hflip: false,
            },
            0,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "crop padding 3 is larger than the images (2x2)"
        );
    }
}
