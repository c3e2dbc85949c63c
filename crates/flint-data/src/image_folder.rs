//! A folder of images with one sub-folder per class (torchvision's `ImageFolder`).
//!
//! ```text
//! root/ants/0013035.jpg
//! root/bees/1092977343_cb42b38d62.jpg
//! ```
//!
//! Class names are the sub-folder names, sorted; files are found recursively and sorted, so
//! labels and order are the same on every machine. Files that are not decodable images are
//! skipped and reported with the reason ([`ImageFolder::skipped`]); only a folder where every
//! file fails is an error.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use burn::data::dataset::{Dataset, DatasetError};
use image::RgbImage;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::error::{DataError, Result};
use crate::split::LabelledSet;
use crate::transform::{
    Normalize, center_crop, flip_horizontal, random_resized_crop, resize_shorter_side, to_chw,
};

/// A file left out of an image folder, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it could not be used.
    pub reason: String,
}

/// The labelled files of an image folder (nothing decoded yet).
#[derive(Debug, Clone)]
pub struct ImageFolder {
    root: PathBuf,
    samples: Arc<Vec<(PathBuf, usize)>>,
    class_names: Arc<Vec<String>>,
    skipped: Arc<Vec<SkippedFile>>,
}

impl ImageFolder {
    /// Scans `root`: class sub-folders sorted by name, image files found recursively, each
    /// checked to have a readable image header.
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut classes: Vec<(String, PathBuf)> = read_sorted(&root)?
            .into_iter()
            .filter(|p| p.is_dir())
            .filter_map(|p| {
                let name = p.file_name()?.to_string_lossy().into_owned();
                (!name.starts_with('.')).then_some((name, p))
            })
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::NoImages {
                root,
                reason: "no class sub-folders; expected one folder per class, e.g. root/ants/*.jpg"
                    .into(),
            });
        }
        let mut samples = Vec::new();
        let mut skipped = Vec::new();
        let mut empty = Vec::new();
        for (label, (name, dir)) in classes.iter().enumerate() {
            let before = samples.len();
            for path in walk_files(dir)? {
                match probe(&path) {
                    Ok(()) => samples.push((path, label)),
                    Err(reason) => skipped.push(SkippedFile { path, reason }),
                }
            }
            if samples.len() == before {
                empty.push(name.clone());
            }
        }
        if samples.is_empty() {
            let examples: Vec<String> = skipped
                .iter()
                .take(3)
                .map(|s| format!("{}: {}", s.path.display(), s.reason))
                .collect();
            return Err(DataError::NoImages {
                root,
                reason: if examples.is_empty() {
                    "the class folders are empty".into()
                } else {
                    format!(
                        "all {} files failed, e.g. {}",
                        skipped.len(),
                        examples.join("; ")
                    )
                },
            });
        }
        if !empty.is_empty() {
            return Err(DataError::NoImages {
                root,
                reason: format!("class folder(s) {} hold no usable image", empty.join(", ")),
            });
        }
        Ok(Self {
            root,
            samples: Arc::new(samples),
            class_names: Arc::new(classes.into_iter().map(|(n, _)| n).collect()),
            skipped: Arc::new(skipped),
        })
    }

    /// Number of images found.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no image was found (never true for an opened folder).
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The folder scanned.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Files left out, with reasons.
    pub fn skipped(&self) -> &[SkippedFile] {
        &self.skipped
    }

    /// The file of sample `index`.
    pub fn path(&self, index: usize) -> &Path {
        &self.samples[index].0
    }

    /// How many images each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for (_, l) in self.samples.iter() {
            counts[*l] += 1;
        }
        counts
    }

    /// A burn [`Dataset`] decoding and transforming these images on access.
    pub fn dataset(&self, transform: ImageTransform, normalize: Normalize) -> ImageFolderDataset {
        ImageFolderDataset::new(self.clone(), transform, normalize, 0)
    }
}

impl LabelledSet for ImageFolder {
    fn len(&self) -> usize {
        ImageFolder::len(self)
    }

    fn label(&self, index: usize) -> usize {
        self.samples[index].1
    }

    fn class_names(&self) -> &[String] {
        &self.class_names
    }

    fn select(&self, indices: &[usize]) -> Self {
        Self {
            samples: Arc::new(indices.iter().map(|&i| self.samples[i].clone()).collect()),
            ..self.clone()
        }
    }

    fn relabel(&self, old_to_new: &[usize], class_names: Vec<String>) -> Self {
        Self {
            samples: Arc::new(
                self.samples
                    .iter()
                    .map(|(p, l)| (p.clone(), old_to_new[*l]))
                    .collect(),
            ),
            class_names: Arc::new(class_names),
            ..self.clone()
        }
    }
}

fn read_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut paths = Vec::new();
    for entry in entries {
        paths.push(entry.map_err(|e| DataError::io(dir, e))?.path());
    }
    paths.sort();
    Ok(paths)
}

/// Every non-hidden file under `dir`, sorted, recursing into sub-folders.
fn walk_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in read_sorted(dir)? {
        let hidden = path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            files.extend(walk_files(&path)?);
        } else {
            files.push(path);
        }
    }
    Ok(files)
}

/// Reads just the header: cheap, and catches non-images and unsupported formats.
fn probe(path: &Path) -> std::result::Result<(), String> {
    let reader = image::ImageReader::open(path)
        .map_err(|e| e.to_string())?
        .with_guessed_format()
        .map_err(|e| e.to_string())?;
    if reader.format().is_none() {
        return Err("not an image (unrecognised format)".into());
    }
    let (w, h) = reader.into_dimensions().map_err(|e| e.to_string())?;
    if w == 0 || h == 0 {
        return Err(format!("image has size {w}x{h}"));
    }
    Ok(())
}

/// Decodes an image file to 8-bit RGB (the first frame of a GIF).
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    let image = image::ImageReader::open(path)
        .map_err(|e| DataError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DataError::io(path, e))?
        .decode()
        .map_err(|e| DataError::Image {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    Ok(image.to_rgb8())
}

/// Decodes an image file for a small model: grey (luma) or RGB, resized to `size x size`
/// (bilinear), scaled to `[0, 1]`, `[channels, size, size]` order. `channels` must be 1 or 3.
pub fn load_for_model(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    if channels != 1 && channels != 3 {
        return Err(DataError::invalid(format!(
            "models take 1 (grey) or 3 (RGB) channels, not {channels}"
        )));
    }
    if size == 0 {
        return Err(DataError::invalid("image size must be positive"));
    }
    let rgb = load_rgb(path)?;
    let resized = image::imageops::resize(
        &rgb,
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    if channels == 3 {
        return Ok(to_chw(&resized));
    }
    let grey = image::DynamicImage::ImageRgb8(resized).to_luma8();
    Ok(grey.pixels().map(|p| p[0] as f32 / 255.0).collect())
}

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
                if flip && rand::Rng::random_bool(rng, 0.5) {
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

/// A seed for stream `stream` of a run seeded with `seed` (e.g. one per epoch): nearby inputs
/// give unrelated outputs, so derived streams do not overlap.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix(seed ^ mix(stream))
}

/// SplitMix64's finaliser: spreads nearby integers over all 64 bits.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
    pub fn load(&self, index: usize) -> Result<TensorItem> {
        let (path, label) = &self.folder.samples[index];
        let img = load_rgb(path)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn png(path: &Path, w: u32, h: u32, value: u8) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        RgbImage::from_pixel(w, h, image::Rgb([value, value, value]))
            .save(path)
            .unwrap();
    }

    #[test]
    fn scans_classes_sorted_and_reports_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("cats/b.png"), 4, 4, 10);
        png(&root.join("cats/sub/a image.png"), 4, 4, 20);
        png(&root.join("ants/x.png"), 4, 4, 30);
        std::fs::write(root.join("ants/notes.txt"), "not an image").unwrap();
        std::fs::write(root.join("ants/broken.png"), b"\x89PNG\r\n\x1a\n").unwrap();
        std::fs::write(root.join("ants/.hidden"), "x").unwrap();
        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(
            folder.class_names(),
            &["ants".to_string(), "cats".to_string()]
        );
        assert_eq!(folder.len(), 3);
        assert_eq!(folder.class_counts(), vec![1, 2]);
        assert!(folder.path(1).ends_with("cats/b.png"));
        assert!(folder.path(2).ends_with("cats/sub/a image.png"));
        let skipped: Vec<_> = folder
            .skipped()
            .iter()
            .map(|s| s.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(skipped, vec!["broken.png", "notes.txt"]);
        assert!(folder.skipped()[1].reason.contains("not an image"));
    }

    #[test]
    fn errors_for_missing_empty_and_all_bad_folders() {
        let dir = tempfile::tempdir().unwrap();
        let msg = ImageFolder::open(dir.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("No such file"), "{msg}");
        let msg = ImageFolder::open(dir.path()).unwrap_err().to_string();
        assert!(msg.ends_with("no usable images (no class sub-folders; expected one folder per class, e.g. root/ants/*.jpg)"), "{msg}");
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        std::fs::write(dir.path().join("a/x.jpg"), b"garbage").unwrap();
        let msg = ImageFolder::open(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("all 1 files failed, e.g. "), "{msg}");
        png(&dir.path().join("b/ok.png"), 2, 2, 1);
        let msg = ImageFolder::open(dir.path()).unwrap_err().to_string();
        assert!(
            msg.ends_with("class folder(s) a hold no usable image)"),
            "{msg}"
        );
    }

    #[test]
    fn eval_transform_gives_normalised_square_tensors() {
        let dir = tempfile::tempdir().unwrap();
        png(&dir.path().join("a/x.png"), 40, 30, 255);
        let folder = ImageFolder::open(dir.path()).unwrap();
        let ds = folder.dataset(
            ImageTransform::Eval {
                resize: 20,
                crop: 16,
            },
            Normalize::new(vec![0.5; 3], vec![0.5; 3]).unwrap(),
        );
        let item = ds.get(0).unwrap();
        assert_eq!(item.shape, [3, 16, 16]);
        assert_eq!(item.data.len(), 3 * 16 * 16);
        assert!(item.data.iter().all(|v| (v - 1.0).abs() < 1e-6));
    }

    #[test]
    fn train_transform_is_reproducible_per_access() {
        let dir = tempfile::tempdir().unwrap();
        let mut img = RgbImage::new(64, 48);
        for (x, y, p) in img.enumerate_pixels_mut() {
            *p = image::Rgb([(x * 4) as u8, (y * 5) as u8, 7]);
        }
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        img.save(dir.path().join("a/g.png")).unwrap();
        let folder = ImageFolder::open(dir.path()).unwrap();
        let make = || {
            ImageFolderDataset::new(
                folder.clone(),
                ImageTransform::Train {
                    size: 24,
                    scale: (0.08, 1.0),
                    ratio: (0.75, 4.0 / 3.0),
                    flip: true,
                },
                Normalize::imagenet(),
                5,
            )
        };
        let (a, b) = (make(), make());
        let a1 = a.get(0).unwrap();
        let a2 = a.get(0).unwrap();
        assert_eq!(a1, b.get(0).unwrap());
        assert_eq!(a2, b.get(0).unwrap());
        assert_ne!(a1, a2, "the second epoch should see a different crop");
        assert_eq!(a1.shape, [3, 24, 24]);
    }

    #[test]
    fn invalid_transforms_are_rejected() {
        let bad = ImageTransform::Train {
            size: 8,
            scale: (0.5, 0.1),
            ratio: (0.75, 1.33),
            flip: false,
        };
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("scale range")
        );
        let bad = ImageTransform::Eval { resize: 0, crop: 1 };
        assert!(bad.validate().is_err());
        assert!(ImageTransform::imagenet_train().validate().is_ok());
    }
}
