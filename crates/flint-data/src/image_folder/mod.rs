//! A folder of images with one sub-folder per class (torchvision's `ImageFolder`).
//!
//! ```text
//! root/ants/0013035.jpg
//! root/bees/1092977343_cb42b38d62.jpg
//! ```
//!
//! Class names are the sub-folder names, sorted; files are found recursively and sorted, so
//! labels and order are the same on every machine. Files that cannot be used are left out and
//! reported with the reason ([`ImageFolder::skipped`]); only a folder where every file fails, or
//! a class with no usable file, is an error.
//!
//! What the scan reads, and what it leaves out (each with a [`SkipKind`] and a sentence):
//! - Only real folders are entered: a symbolic link to a folder is never followed (a link such
//!   as `ants/loop -> ..` would otherwise repeat the tree forever under the wrong label, and
//!   `/proc/self/root -> /` would walk the whole file system). This holds for class folders too.
//! - A symbolic link to a regular file is read; each file is counted once, however many links
//!   or hard links lead to it (the first path in sorted order keeps it).
//! - Pipes, devices and sockets are left out without being opened; hidden files (`.name`) are
//!   ignored silently.
//! - Each file's header is read (format by content, dimensions checked as in
//!   [`crate::image_file`]) and its end checked: a truncated JPEG or PNG is left out of the data
//!   set (kind [`SkipKind::Truncated`]) rather than trained on with a filled-in part.

mod dataset;
mod scan;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::image_file::{
    Decoded, ImageWarning, load_for_model, load_for_model_checked, load_rgb, load_rgb_checked,
};
pub use dataset::{ImageFolderDataset, ImageTransform, SampleRng, TensorItem};
pub use scan::{SkipKind, SkippedFile};

use crate::error::{DataError, Result};
use crate::split::LabelledSet;
use crate::transform::Normalize;
use scan::{LINKED_FOLDER, Scan, probe, read_sorted};

/// How deep below a class folder the scan goes.
const MAX_DEPTH: usize = 64;

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
    /// checked as the [module docs](self) say; what is left out is in [`ImageFolder::skipped`].
    pub fn open(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref().to_path_buf();
        let mut scan = Scan::default();
        let mut classes: Vec<(String, PathBuf)> = Vec::new();
        for path in read_sorted(&root)? {
            let Some(name) = path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
                continue;
            };
            if name.starts_with('.') {
                continue;
            }
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_dir() => classes.push((name, path)),
                Ok(meta) if meta.file_type().is_symlink() && path.is_dir() => {
                    scan.skip(path, SkipKind::LinkedFolder, LINKED_FOLDER);
                }
                // Files beside the class folders (a README, a licence) are not samples.
                _ => {}
            }
        }
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::NoImages {
                root,
                reason: "no class sub-folders; expected one folder per class, e.g. root/ants/*.jpg"
                    .into(),
            });
        }
        let mut samples = Vec::new();
        let mut empty = Vec::new();
        for (label, (name, dir)) in classes.iter().enumerate() {
            let before = samples.len();
            let mut files = Vec::new();
            scan.dir(dir, 0, &mut files);
            for path in files {
                match probe(&path) {
                    Ok(()) => samples.push((path, label)),
                    Err((kind, reason)) => scan.skip(path, kind, reason),
                }
            }
            if samples.len() == before {
                empty.push(name.clone());
            }
        }
        let mut skipped = scan.skipped;
        skipped.sort_by(|a, b| a.path.cmp(&b.path));
        if samples.is_empty() {
            let examples: Vec<String> = skipped.iter().take(3).map(|s| s.to_string()).collect();
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

    /// Files (and linked folders) left out, with reasons, sorted by path: everything under the
    /// class folders that is not a sample, except hidden files.
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

    /// A burn [`Dataset`](burn::data::dataset::Dataset) decoding and transforming these images on access.
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

#[cfg(test)]
mod tests {
    use burn::data::dataset::Dataset;
    use image::RgbImage;

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
        assert_eq!(folder.skipped()[0].kind, SkipKind::Truncated);
        assert_eq!(
            folder.skipped()[0].reason,
            "the PNG file is truncated: it ends inside its header"
        );
        assert_eq!(folder.skipped()[1].kind, SkipKind::NotAnImage);
        assert_eq!(
            folder.skipped()[1].to_string(),
            format!(
                "{}: not an image: the content is not PNG, JPEG or GIF",
                root.join("ants/notes.txt").display()
            )
        );
    }

    fn reasons(folder: &ImageFolder) -> Vec<(String, SkipKind, String)> {
        folder
            .skipped()
            .iter()
            .map(|s| {
                let rel = s.path.strip_prefix(folder.root()).unwrap();
                (rel.display().to_string(), s.kind, s.reason.clone())
            })
            .collect()
    }

    /// Case 9 of issue #18: `ants/loop -> ..` made 6 images into 246 samples, all "ants".
    #[cfg(unix)]
    #[test]
    fn symlink_loops_are_not_followed_and_each_file_counts_once() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("train");
        for i in 0..3 {
            png(&root.join(format!("ants/a{i}.png")), 4, 4, 10);
            png(&root.join(format!("bees/b{i}.png")), 4, 4, 20);
        }
        symlink("..", root.join("ants/loop")).unwrap();
        symlink(root.join("bees"), root.join("ants/bees-too")).unwrap();
        // A link to a file is read once; a second path to a file already counted is not.
        png(&dir.path().join("elsewhere/o.png"), 4, 4, 30);
        symlink(dir.path().join("elsewhere/o.png"), root.join("ants/o.png")).unwrap();
        symlink("a0.png", root.join("ants/z-again.png")).unwrap();
        std::fs::hard_link(root.join("bees/b1.png"), root.join("bees/b1-hard.png")).unwrap();
        symlink("missing.png", root.join("ants/dangling.png")).unwrap();
        // A class folder that is a link is not a class either.
        symlink(root.join("bees"), root.join("wasps")).unwrap();

        let folder = ImageFolder::open(&root).unwrap();
        assert_eq!(folder.len(), 7, "6 images and one linked file");
        assert_eq!(folder.class_counts(), vec![4, 3]);
        assert_eq!(
            folder.class_names(),
            &["ants".to_string(), "bees".to_string()]
        );
        let linked = "symbolic link to a folder, not followed (links to folders can loop back into the tree or pull in another one; copy the folder, or link its files)";
        let same = |first: &str| {
            format!(
                "the same file as {} (a link or hard link): counted once",
                root.join(first).display()
            )
        };
        assert_eq!(
            reasons(&folder),
            vec![
                (
                    "ants/bees-too".into(),
                    SkipKind::LinkedFolder,
                    linked.into()
                ),
                (
                    "ants/dangling.png".into(),
                    SkipKind::BrokenLink,
                    "broken symbolic link (No such file or directory (os error 2))".into()
                ),
                ("ants/loop".into(), SkipKind::LinkedFolder, linked.into()),
                (
                    "ants/z-again.png".into(),
                    SkipKind::Duplicate,
                    same("ants/a0.png")
                ),
                (
                    "bees/b1.png".into(),
                    SkipKind::Duplicate,
                    same("bees/b1-hard.png")
                ),
                ("wasps".into(), SkipKind::LinkedFolder, linked.into()),
            ]
        );
    }

    /// Case 8 of issue #18: `--data /proc/self` walked the file system forever. A folder of
    /// links back up the tree, a FIFO and a device link ends at once, reading nothing special.
    #[cfg(target_os = "linux")]
    #[test]
    fn special_files_are_left_out_unopened() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("a/x.png"), 4, 4, 1);
        std::fs::create_dir_all(root.join("a/task/1")).unwrap();
        symlink("/", root.join("a/task/1/root")).unwrap();
        symlink("../..", root.join("a/task/1/cwd")).unwrap();
        symlink("/dev/zero", root.join("a/zero.jpg")).unwrap();
        let fifo = root.join("a/pipe.png");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        std::fs::write(root.join("a/task/1/status"), b"").unwrap();
        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(folder.len(), 1);
        let kinds: Vec<_> = reasons(&folder)
            .into_iter()
            .map(|(p, k, r)| format!("{p} {k}: {r}"))
            .collect();
        assert_eq!(
            kinds,
            vec![
                "a/pipe.png special-file: a named pipe (FIFO), not a regular file: flint reads only regular files",
                "a/task/1/cwd linked-folder: symbolic link to a folder, not followed (links to folders can loop back into the tree or pull in another one; copy the folder, or link its files)",
                "a/task/1/root linked-folder: symbolic link to a folder, not followed (links to folders can loop back into the tree or pull in another one; copy the folder, or link its files)",
                "a/task/1/status empty: empty file (0 bytes)",
                "a/zero.jpg special-file: a character device, not a regular file: flint reads only regular files",
            ]
        );
    }

    /// Cases 6, 10 and 14 of issue #18: thin, empty, non-image and truncated files are left
    /// out, each with its reason.
    #[test]
    fn unusable_images_are_reported_with_reasons() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        png(&root.join("a/ok.png"), 8, 8, 1);
        std::fs::write(root.join("a/empty.jpg"), b"").unwrap();
        std::fs::write(root.join("a/text.png"), b"just some words").unwrap();
        image::GrayImage::new(1, 20_000)
            .save(root.join("a/thin.png"))
            .unwrap();
        let mut jpeg = std::io::Cursor::new(Vec::new());
        RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 0]))
            .write_to(&mut jpeg, image::ImageFormat::Jpeg)
            .unwrap();
        let jpeg = jpeg.into_inner();
        std::fs::write(root.join("a/cut.jpg"), &jpeg[..jpeg.len() - 40]).unwrap();
        let folder = ImageFolder::open(root).unwrap();
        assert_eq!(folder.len(), 1);
        let got: Vec<_> = reasons(&folder)
            .into_iter()
            .map(|(p, k, r)| format!("{p} {k}: {r}"))
            .collect();
        assert_eq!(
            got,
            vec![
                "a/cut.jpg truncated: the JPEG file is truncated (it ends before its end-of-image marker FF D9): the picture may be incomplete",
                "a/empty.jpg empty: empty file (0 bytes)",
                "a/text.png not-an-image: not an image: the content is not PNG, JPEG or GIF",
                "a/thin.png too-large: image is 1x20000 pixels, an aspect ratio of 20000:1; flint accepts at most 100:1, since resizing its short side for a model would make a huge image",
            ]
        );
        // The dataset refuses a file truncated after the folder was opened.
        std::fs::write(root.join("a/ok.png"), &{
            let mut b = std::io::Cursor::new(Vec::new());
            RgbImage::new(8, 8)
                .write_to(&mut b, image::ImageFormat::Png)
                .unwrap();
            let b = b.into_inner();
            b[..b.len() - 2].to_vec()
        })
        .unwrap();
        let ds = folder.dataset(ImageTransform::imagenet_eval(), Normalize::imagenet());
        let msg = ds.load(0).unwrap_err().to_string();
        assert!(msg.ends_with("the PNG file is truncated (it ends before its IEND chunk): the picture may be incomplete"), "{msg}");
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
