//! flint's data sets, offline first.
//!
//! - [`mnist()`] / [`fashion_mnist()`] / [`cifar10()`]: in-memory [`ImageSet`]s of `u8` pixels,
//!   found by a [`Locator`] (explicit path, `$FLINT_DATA`, `./data`, the system location, the
//!   cache, then a verified download) and validated byte by byte.
//! - [`ImageFolder`]: one sub-folder per class, decoded on access with torchvision's transforms
//!   ([`ImageTransform`], [`Normalize`]); files it cannot use are listed with the reason
//!   ([`SkippedFile`]). Single images decode with [`image_file::load_rgb_checked`], which
//!   refuses degenerate sizes from the header and warns about truncated files.
//!
//! Every file is read as a regular file, bounded by its size (`flint_io::fs`); compressed data is
//! inflated no further than its header says it holds, and downloads are streamed and capped.
//! - [`train_val_split`], [`filter_classes`], [`few_shot`], [`random_subset`]: seeded,
//!   deterministic subsets of either kind of data set.
//! - [`ImageBatcher`] / [`TensorBatcher`] and [`loader`]: burn batchers producing
//!   `[N, C, H, W]` images and `Int` targets, in shuffled multi-threaded loaders.
//!
//! ```no_run
//! use flint_data::{fashion_mnist, Locator, Split, LabelledSet};
//! let train = fashion_mnist(Split::Train, &Locator::new())?;
//! assert_eq!(train.len(), 60_000);
//! # Ok::<(), flint_data::DataError>(())
//! ```
//!
//! Any data set in memory gets the same seeded splits and subsets:
//!
//! ```
//! use flint_data::{ImageSet, LabelledSet, few_shot, train_val_split};
//!
//! // 100 one-pixel "images" of two classes.
//! let pixels: Vec<u8> = (0..100).map(|i| i as u8).collect();
//! let labels: Vec<u8> = (0..100).map(|i| (i % 2) as u8).collect();
//! let set = ImageSet::new("toy", [1, 1, 1], pixels, labels, vec!["even".into(), "odd".into()])?;
//! let (train, val) = train_val_split(&set, 0.2, 0)?;
//! assert_eq!((train.len(), val.len()), (80, 20));
//! // Five labelled examples per class, the same five for the same seed.
//! let five = few_shot(&train, 5, 7)?;
//! assert_eq!(five.len(), 10);
//! assert_eq!(few_shot(&train, 5, 7)?.labels(), five.labels());
//! # Ok::<(), flint_data::DataError>(())
//! ```

pub mod batcher;
pub mod catalog;
pub mod cifar;
pub mod download;
pub mod error;
pub mod gzip;
pub mod idx;
mod image_end;
pub mod image_file;
pub mod image_folder;
pub mod image_set;
pub mod locate;
pub mod mnist;
pub mod split;
pub mod transform;

pub use batcher::{
    Augment, AugmentedImages, ClassificationBatch, ImageBatcher, LoaderOptions, TensorBatcher,
    loader,
};
pub use catalog::{DatasetCheck, HYMENOPTERA, KnownDataset, SplitCount, hymenoptera};
pub use cifar::{CIFAR10, CIFAR10_CLASSES, cifar10};
pub use error::{DataError, Result};
pub use image_file::{Decoded, ImageWarning};
pub use image_folder::{
    ImageFolder, ImageFolderDataset, ImageTransform, SkipKind, SkippedFile, TensorItem,
};
pub use image_set::{ImageItem, ImageSet};
pub use locate::{DatasetSpec, Located, Locator, Origin};
pub use mnist::{
    FASHION_MNIST, FASHION_MNIST_CLASSES, MNIST, MNIST_CLASSES, Split, fashion_mnist, mnist,
};
pub use split::{LabelledSet, few_shot, filter_classes, k_fold, random_subset, train_val_split};
pub use transform::Normalize;
