//! An image folder as a burn dataset: decoding, torchvision's transforms, per-sample seeds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::data::dataset::{Dataset, DatasetError};
use flint_io::seed::derive_seed;
use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::ImageFolder;
use crate::error::{DataError, Result};
use crate::image_file::{Decoded, load_rgb_checked};
use crate::transform::{
    Normalize, center_crop, flip_horizontal, random_resized_crop, resize_shorter_side, to_chw,
};

/// How images become tensors.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageTransform {
    /// Evaluation: resize the shorter side to `resize`, then centre-crop `crop x crop`
    /// (torchvision's `Resize(256)` + `CenterCrop(224)`).
    Eval { resize: u32, crop: u32 },
    /// Training: `RandomResizedCrop(size, scale, ratio)`, then a horizontal flip with
    /// probability 0.5 if `flip`.
    Train {
        size: u32,
        scale: (f32, f32),
        ratio: (f32, f32),
        flip: bool,
    },
}

impl ImageTransform {
    /// `Resize(256)` + `CenterCrop(224)`: the ImageNet evaluation transform.
    pub fn imagenet_eval() -> Self {
        Self::Eval {
            resize: 256,
            crop: 224,
        }
    }

    /// `RandomResizedCrop(224)` + `RandomHorizontalFlip()`: the ImageNet training transform.
    pub fn imagenet_train() -> Self {
        Self::Train {
            size: 224,
            scale: (0.08, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            flip: true,
        }
    }

    /// The side of the square images this transform produces.
    pub fn output_size(&self) -> u32 {
        match self {
            Self::Eval { crop, .. } => *crop,
            Self::Train { size, .. } => *size,
        }
    }

    /// Checks the parameters make sense.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Eval { resize, crop } => {
                if resize == 0 || crop == 0 {
                    return Err(DataError::invalid(format!(
                        "resize ({resize}) and crop ({crop}) must be positive"
                    )));
                }
            }
            Self::Train {
                size, scale, ratio, ..
            } => {
                if size == 0 {
                    return Err(DataError::invalid("crop size must be positive"));
                }
                if !(scale.0 > 0.0 && scale.0 <= scale.1 && scale.1 <= 1.0) {
                    return Err(DataError::invalid(format!(
                        "scale range must satisfy 0 < min <= max <= 1, got {scale:?}"
                    )));
                }
                if !(ratio.0 > 0.0 && ratio.0 <= ratio.1 && ratio.1.is_finite()) {
                    return Err(DataError::invalid(format!(
                        "ratio range must satisfy 0 < min <= max, got {ratio:?}"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies the transform, returning `[3, S, S]` floats in `[0, 1]`.
    pub fn apply(&self, img: &RgbImage, rng: &mut StdRng) -> Vec<f32> {
        match *self {
            Self::Eval { resize, crop } => {
                to_chw(&center_crop(&resize_shorter_side(img, resize), crop))
            }
            Self::Train {
                size,
                scale,
                ratio,
                flip,
            } => {
                let mut chw = to_chw(&random_resized_crop(img, size, scale, ratio, rng));
                if flip && rand::RngExt::random_bool(rng, 0.5) {
                    flip_horizontal(&mut chw, [3, size as usize, size as usize]);
                }
                chw
            }
        }
    }
}

/// One transformed image: `f32` values in `[C, H, W]` order.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorItem {
    /// Values, channel-major.
    pub data: Vec<f32>,
    /// `[channels, height, width]`.
    pub shape: [usize; 3],
    /// Class index.
    pub label: usize,
}

/// Per-sample random streams that do not depend on thread scheduling: the `k`-th access to
/// sample `i` always draws from the same seed, so augmentation is reproducible even with
/// several loader threads.
#[derive(Debug, Clone)]
pub struct SampleRng {
    seed: u64,
    draws: Arc<Vec<AtomicU32>>,
}

impl SampleRng {
    /// Streams for `len` samples derived from `seed`.
    pub fn new(seed: u64, len: usize) -> Self {
        Self {
            seed,
            draws: Arc::new((0..len).map(|_| AtomicU32::new(0)).collect()),
        }
    }

    /// The generator for the next access to sample `index`.
    pub fn next_for(&self, index: usize) -> StdRng {
        let k = self.draws[index].fetch_add(1, Ordering::Relaxed) as u64;
        StdRng::seed_from_u64(derive_seed(derive_seed(self.seed, index as u64), k))
    }
}

/// An [`ImageFolder`] as a burn [`Dataset`]: each access decodes, transforms and normalises.
#[derive(Debug, Clone)]
pub struct ImageFolderDataset {
    folder: ImageFolder,
    transform: ImageTransform,
    normalize: Normalize,
    rng: SampleRng,
}

impl ImageFolderDataset {
    /// Wraps `folder`; `seed` drives the random transforms.
    pub fn new(
        folder: ImageFolder,
        transform: ImageTransform,
        normalize: Normalize,
        seed: u64,
    ) -> Self {
        let rng = SampleRng::new(seed, folder.len());
        Self {
            folder,
            transform,
            normalize,
            rng,
        }
    }

    /// The folder behind the data set.
    pub fn folder(&self) -> &ImageFolder {
        &self.folder
    }

    /// Decodes and transforms sample `index`.
    ///
    /// A file found truncated now (it was whole when the folder was opened, so it changed since)
    /// is an error rather than a silently filled-in sample.
    pub fn load(&self, index: usize) -> Result<TensorItem> {
        let (path, label) = &self.folder.samples[index];
        let Decoded {
            value: img,
            warning,
        } = load_rgb_checked(path)?;
        if let Some(warning) = warning {
            return Err(DataError::Image {
                path: path.clone(),
                reason: warning.to_string(),
            });
        }
        let mut data = self.transform.apply(&img, &mut self.rng.next_for(index));
        self.normalize.apply(&mut data, 3);
        let s = self.transform.output_size() as usize;
        Ok(TensorItem {
            data,
            shape: [3, s, s],
            label: *label,
        })
    }
}

impl Dataset<TensorItem> for ImageFolderDataset {
    fn get(&self, index: usize) -> std::result::Result<TensorItem, DatasetError> {
        self.load(index).map_err(DatasetError::new)
    }

    fn len(&self) -> usize {
        self.folder.samples.len()
    }
}
