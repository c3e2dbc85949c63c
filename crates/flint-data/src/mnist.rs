//! MNIST and Fashion-MNIST: 28x28 grey images, 60,000 train / 10,000 test, 10 classes.

use crate::error::{DataError, Result};
use crate::idx::{read_idx_images, read_idx_labels};
use crate::image_set::ImageSet;
use crate::locate::{DataFile, DatasetSpec, Locator, Source};

/// Which half of a data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training images.
    Train,
    /// The held-out test images.
    Test,
}

impl Split {
    /// `train` or `test`.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

/// MNIST handwritten digits (LeCun, Cortes, Burges).
pub const MNIST: DatasetSpec = DatasetSpec {
    name: "mnist",
    folder_names: &["mnist", "MNIST/raw"],
    files: &[
        DataFile {
            name: "train-images-idx3-ubyte",
            sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            size: 47_040_016,
        },
        DataFile {
            name: "train-labels-idx1-ubyte",
            sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            size: 60_008,
        },
        DataFile {
            name: "t10k-images-idx3-ubyte",
            sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            size: 7_840_016,
        },
        DataFile {
            name: "t10k-labels-idx1-ubyte",
            sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            size: 10_008,
        },
    ],
    subfolders: &[],
    source: Source::GzipFiles {
        // torchvision's mirror first: the original site is often unavailable.
        mirrors: &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ],
    },
    hint: "Get it with `cargo xtask data fetch mnist`, or put the four IDX files (.gz or raw) in \
           ./data/mnist/ or $FLINT_DATA/mnist/.",
};

/// Fashion-MNIST (Xiao, Rasul, Vollgraf 2017): Zalando article images.
pub const FASHION_MNIST: DatasetSpec = DatasetSpec {
    name: "fashion-mnist",
    folder_names: &["fashion-mnist", "FashionMNIST/raw"],
    files: &[
        DataFile {
            name: "train-images-idx3-ubyte",
            sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            size: 47_040_016,
        },
        DataFile {
            name: "train-labels-idx1-ubyte",
            sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            size: 60_008,
        },
        DataFile {
            name: "t10k-images-idx3-ubyte",
            sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            size: 7_840_016,
        },
        DataFile {
            name: "t10k-labels-idx1-ubyte",
            sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            size: 10_008,
        },
    ],
    subfolders: &[],
    source: Source::GzipFiles {
        mirrors: &[
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
            "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        ],
    },
    hint: "On Debian/Ubuntu: `sudo apt-get install dataset-fashion-mnist` (installs \
           /usr/share/datasets/fashion-mnist/). Or `cargo xtask data fetch fashion-mnist`, or put \
           the four IDX files in ./data/fashion-mnist/ or $FLINT_DATA/fashion-mnist/.",
};

/// The digit names of MNIST.
pub const MNIST_CLASSES: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

/// The article names of Fashion-MNIST, in label order.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Loads MNIST's `split`, found by `locator`.
pub fn mnist(split: Split, locator: &Locator) -> Result<ImageSet> {
    load_idx_dataset(&MNIST, &MNIST_CLASSES, split, locator)
}

/// Loads Fashion-MNIST's `split`, found by `locator`.
pub fn fashion_mnist(split: Split, locator: &Locator) -> Result<ImageSet> {
    load_idx_dataset(&FASHION_MNIST, &FASHION_MNIST_CLASSES, split, locator)
}

/// Loads one split of an MNIST-format data set described by `spec`.
pub fn load_idx_dataset(
    spec: &DatasetSpec,
    classes: &[&str],
    split: Split,
    locator: &Locator,
) -> Result<ImageSet> {
    let located = locator.locate(spec)?;
    let (images, labels) = match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    };
    read_idx_pair(
        &format!("{}/{}", spec.name, split.as_str()),
        located.file(spec, images),
        located.file(spec, labels),
        classes,
    )
}

/// Reads an images file and a labels file into an [`ImageSet`], checking they match.
pub fn read_idx_pair(
    name: &str,
    images: &std::path::Path,
    labels: &std::path::Path,
    classes: &[&str],
) -> Result<ImageSet> {
    let (count, rows, cols, pixels) = read_idx_images(images)?;
    let label_bytes = read_idx_labels(labels, classes.len())?;
    if count != label_bytes.len() {
        return Err(DataError::CountMismatch {
            images: images.to_path_buf(),
            image_count: count,
            labels: labels.to_path_buf(),
            label_count: label_bytes.len(),
        });
    }
    if count == 0 {
        return Err(DataError::format(images, "holds no images"));
    }
    ImageSet::new(
        name,
        [1, rows, cols],
        pixels,
        label_bytes,
        classes.iter().map(|c| c.to_string()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idx::encode_idx;

    fn write(dir: &std::path::Path, name: &str, bytes: Vec<u8>) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn pair_count_mismatch_names_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(dir.path(), "img", encode_idx(&[3, 2, 2], &[0; 12]));
        let labels = write(dir.path(), "lab", encode_idx(&[2], &[0, 1]));
        let msg = read_idx_pair("t", &images, &labels, &MNIST_CLASSES)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "{} holds 3 images but {} holds 2 labels: they must be the same split",
                images.display(),
                labels.display()
            )
        );
    }

    #[test]
    fn pair_loads_a_small_valid_set() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(dir.path(), "img", encode_idx(&[2, 2, 3], &[9; 12]));
        let labels = write(dir.path(), "lab", encode_idx(&[2], &[4, 9]));
        let set = read_idx_pair("t", &images, &labels, &MNIST_CLASSES).unwrap();
        assert_eq!(set.shape(), [1, 2, 3]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.labels(), &[4, 9]);

        let empty_images = write(dir.path(), "e-img", encode_idx(&[0, 2, 3], &[]));
        let empty_labels = write(dir.path(), "e-lab", encode_idx(&[0], &[]));
        let msg = read_idx_pair("t", &empty_images, &empty_labels, &MNIST_CLASSES)
            .unwrap_err()
            .to_string();
        assert!(msg.ends_with("holds no images"), "{msg}");
    }

    #[test]
    fn label_out_of_range_through_the_loader() {
        let dir = tempfile::tempdir().unwrap();
        let images = write(dir.path(), "img", encode_idx(&[1, 1, 1], &[0]));
        let labels = write(dir.path(), "lab", encode_idx(&[1], &[12]));
        let msg = read_idx_pair("t", &images, &labels, &MNIST_CLASSES)
            .unwrap_err()
            .to_string();
        assert!(msg.ends_with("label 12 at index 0 is out of range (the data set has 10 classes)"));
    }
}
