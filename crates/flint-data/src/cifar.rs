//! CIFAR-10 in its binary format: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`,
//! each a sequence of 3073-byte records (one label byte, then 1024 red, 1024 green and 1024
//! blue bytes of a 32x32 image, row-major), 10,000 records a file.

use std::path::Path;

use crate::error::{DataError, Result};
use crate::image_set::ImageSet;
use crate::locate::{DataFile, DatasetSpec, Locator, Source};
use crate::mnist::Split;
use flint_io::fs::read_regular;

/// Bytes per record: one label, then 3 x 32 x 32 pixels.
pub const RECORD_LEN: usize = 1 + 3 * 32 * 32;

/// The class names of CIFAR-10, in label order.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Bytes of one official batch file.
const BATCH_LEN: u64 = (BATCH_RECORDS * RECORD_LEN) as u64;

const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];

/// CIFAR-10 (Krizhevsky 2009), binary version. The archive is verified by its SHA-256; the
/// individual files have no published checksum, so `sha256` is empty for them.
pub const CIFAR10: DatasetSpec = DatasetSpec {
    name: "cifar-10",
    folder_names: &["cifar-10", "cifar-10-batches-bin", "cifar10"],
    files: &[
        DataFile {
            name: "data_batch_1.bin",
            sha256: "",
            size: BATCH_LEN,
        },
        DataFile {
            name: "data_batch_2.bin",
            sha256: "",
            size: BATCH_LEN,
        },
        DataFile {
            name: "data_batch_3.bin",
            sha256: "",
            size: BATCH_LEN,
        },
        DataFile {
            name: "data_batch_4.bin",
            sha256: "",
            size: BATCH_LEN,
        },
        DataFile {
            name: "data_batch_5.bin",
            sha256: "",
            size: BATCH_LEN,
        },
        DataFile {
            name: "test_batch.bin",
            sha256: "",
            size: BATCH_LEN,
        },
    ],
    subfolders: &[],
    source: Source::TarGz {
        urls: &["https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"],
        sha256: "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
        // The archive is about 163 MiB; a server sending more than this is refused mid-stream.
        max_bytes: 200 << 20,
        folder: "cifar-10-batches-bin",
    },
    hint: "Get it with `cargo xtask data fetch cifar-10` (170 MB), or unpack \
           cifar-10-binary.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html into \
           ./data/cifar-10-batches-bin/ or $FLINT_DATA/cifar-10-batches-bin/.",
};

/// Records in one official batch file.
pub const BATCH_RECORDS: usize = 10_000;

/// The largest batch file read: ten times an official one (a regular file only; a pipe or a
/// device is refused before reading).
pub const MAX_BATCH_BYTES: u64 = (10 * BATCH_RECORDS * RECORD_LEN) as u64;

/// Reads one binary batch file: `(pixels, labels)`, pixels in `[N, 3, 32, 32]` order.
pub fn read_cifar_batch(path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    let bytes = read_regular(path, MAX_BATCH_BYTES)?;
    parse_cifar_batch(&bytes, path)
}

/// Validates and splits the bytes of a batch file; `path` is only used in messages.
pub fn parse_cifar_batch(bytes: &[u8], path: &Path) -> Result<(Vec<u8>, Vec<u8>)> {
    if bytes.is_empty() {
        return Err(DataError::format(path, "file is empty"));
    }
    if !bytes.len().is_multiple_of(RECORD_LEN) {
        let hint = if bytes.len().is_multiple_of(RECORD_LEN + 1) {
            " (its length fits 3074-byte records: is this CIFAR-100?)"
        } else {
            ""
        };
        return Err(DataError::format(
            path,
            format!(
                "file is truncated or not CIFAR-10 binary: {} bytes is {} whole {RECORD_LEN}-byte records and {} bytes left over{hint}",
                bytes.len(),
                bytes.len() / RECORD_LEN,
                bytes.len() % RECORD_LEN
            ),
        ));
    }
    let count = bytes.len() / RECORD_LEN;
    let mut pixels = Vec::with_capacity(count * (RECORD_LEN - 1));
    let mut labels = Vec::with_capacity(count);
    for (index, record) in bytes.chunks_exact(RECORD_LEN).enumerate() {
        let label = record[0];
        if label as usize >= CIFAR10_CLASSES.len() {
            return Err(DataError::LabelOutOfRange {
                path: path.to_path_buf(),
                index,
                label: label as usize,
                classes: CIFAR10_CLASSES.len(),
            });
        }
        labels.push(label);
        pixels.extend_from_slice(&record[1..]);
    }
    Ok((pixels, labels))
}

/// Loads CIFAR-10's `split`, found by `locator`.
pub fn cifar10(split: Split, locator: &Locator) -> Result<ImageSet> {
    let located = locator.locate(&CIFAR10)?;
    let files: Vec<&Path> = match split {
        Split::Train => TRAIN_FILES
            .iter()
            .map(|f| located.file(&CIFAR10, f))
            .collect(),
        Split::Test => vec![located.file(&CIFAR10, "test_batch.bin")],
    };
    read_cifar_files(&format!("cifar-10/{}", split.as_str()), &files)
}

/// Reads and concatenates binary batch files into one [`ImageSet`].
pub fn read_cifar_files(name: &str, files: &[&Path]) -> Result<ImageSet> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let (p, l) = read_cifar_batch(file)?;
        pixels.extend_from_slice(&p);
        labels.extend_from_slice(&l);
    }
    ImageSet::new(
        name,
        [3, 32, 32],
        pixels,
        labels,
        CIFAR10_CLASSES.iter().map(|c| c.to_string()).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LabelledSet;

    /// A record whose red plane is `label`, green `label + 1`, blue `label + 2`.
    fn record(label: u8) -> Vec<u8> {
        let mut r = vec![label];
        for c in 0..3u8 {
            r.extend(std::iter::repeat_n(label + c, 1024));
        }
        r
    }

    #[test]
    fn parses_records_in_channel_major_order() {
        let bytes: Vec<u8> = [3u8, 7].iter().flat_map(|&l| record(l)).collect();
        let (pixels, labels) = parse_cifar_batch(&bytes, Path::new("b.bin")).unwrap();
        assert_eq!(labels, vec![3, 7]);
        assert_eq!(pixels.len(), 2 * 3072);
        assert_eq!(pixels[0], 3); // red of image 0
        assert_eq!(pixels[1024], 4); // green of image 0
        assert_eq!(pixels[3072 + 2048], 9); // blue of image 1
    }

    #[test]
    fn truncated_empty_and_bad_labels() {
        let path = Path::new("b.bin");
        let mut bytes = record(1);
        bytes.pop();
        let msg = parse_cifar_batch(&bytes, path).unwrap_err().to_string();
        assert_eq!(
            msg,
            "b.bin: file is truncated or not CIFAR-10 binary: 3072 bytes is 0 whole 3073-byte records and 3072 bytes left over"
        );
        let msg = parse_cifar_batch(&[], path).unwrap_err().to_string();
        assert_eq!(msg, "b.bin: file is empty");
        let mut bad = record(1);
        bad.extend(record(10));
        let msg = parse_cifar_batch(&bad, path).unwrap_err().to_string();
        assert_eq!(
            msg,
            "b.bin: label 10 at index 1 is out of range (the data set has 10 classes)"
        );
        let cifar100 = vec![0u8; 2 * 3074];
        let msg = parse_cifar_batch(&cifar100, path).unwrap_err().to_string();
        assert!(msg.ends_with("(its length fits 3074-byte records: is this CIFAR-100?)"));
    }

    #[test]
    fn loads_both_splits_through_discovery() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("cifar-10-batches-bin");
        std::fs::create_dir_all(&root).unwrap();
        for (i, f) in TRAIN_FILES.iter().enumerate() {
            let bytes: Vec<u8> = (0..3).flat_map(|j| record(((i + j) % 10) as u8)).collect();
            std::fs::write(root.join(f), bytes).unwrap();
        }
        std::fs::write(root.join("test_batch.bin"), record(9)).unwrap();
        let locator = Locator::only(&root);
        let train = cifar10(Split::Train, &locator).unwrap();
        assert_eq!(train.len(), 15);
        assert_eq!(train.shape(), [3, 32, 32]);
        assert_eq!(train.labels()[..6], [0, 1, 2, 1, 2, 3]);
        let test = cifar10(Split::Test, &locator).unwrap();
        assert_eq!(test.labels(), &[9]);
        assert_eq!(test.class_names()[9], "truck");
        assert_eq!(test.image(0)[2048], 11);
    }
}
