//! The data sets flint knows by name, and a check of where each one is.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::cifar::{CIFAR10, cifar10};
use crate::error::{DataError, Result};
use crate::image_folder::ImageFolder;
use crate::locate::{DatasetSpec, Located, Locator, Source};
use crate::mnist::{FASHION_MNIST, MNIST, Split, fashion_mnist, mnist};

/// The ants/bees photos of PyTorch's transfer-learning tutorial: `train/` (245 images) and
/// `val/` (153), one sub-folder per class.
pub const HYMENOPTERA: DatasetSpec = DatasetSpec {
    name: "hymenoptera",
    folder_names: &["hymenoptera", "hymenoptera_data"],
    files: &[],
    subfolders: &["train", "val"],
    source: Source::Manual {
        url: "https://download.pytorch.org/tutorial/hymenoptera_data.zip",
    },
    hint: "Download https://download.pytorch.org/tutorial/hymenoptera_data.zip and unzip it \
           into ./data/ (it makes ./data/hymenoptera_data/{train,val}/), or point $FLINT_DATA \
           at a folder holding hymenoptera/.",
};

/// Opens the hymenoptera `split` (`"train"` or `"val"`), found by `locator`.
pub fn hymenoptera(split: &str, locator: &Locator) -> Result<ImageFolder> {
    if split != "train" && split != "val" {
        return Err(DataError::invalid(format!(
            "hymenoptera has splits `train` and `val`, not `{split}`"
        )));
    }
    let located = locator.locate(&HYMENOPTERA)?;
    ImageFolder::open(located.dir.join(split))
}

/// A data set flint can find by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KnownDataset {
    /// MNIST digits.
    Mnist,
    /// Fashion-MNIST articles.
    FashionMnist,
    /// CIFAR-10 (binary version).
    Cifar10,
    /// The hymenoptera ants/bees image folder.
    Hymenoptera,
}

impl KnownDataset {
    /// Every known data set, in the order `data check` lists them.
    pub const ALL: [KnownDataset; 4] = [
        KnownDataset::FashionMnist,
        KnownDataset::Mnist,
        KnownDataset::Cifar10,
        KnownDataset::Hymenoptera,
    ];

    /// Its description for discovery and download.
    pub fn spec(self) -> &'static DatasetSpec {
        match self {
            KnownDataset::Mnist => &MNIST,
            KnownDataset::FashionMnist => &FASHION_MNIST,
            KnownDataset::Cifar10 => &CIFAR10,
            KnownDataset::Hymenoptera => &HYMENOPTERA,
        }
    }

    /// Its name, as used on the command line.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Looks for it and, when found, loads every split to count samples per class.
    pub fn check(self, locator: &Locator) -> DatasetCheck {
        let located = match locator.find(self.spec()) {
            Ok(located) => located,
            Err(e) => {
                return DatasetCheck {
                    dataset: self,
                    located: None,
                    splits: Err(Arc::new(e)),
                };
            }
        };
        let only_here = Locator::only(&located.dir);
        let splits = self.count_splits(&only_here).map_err(Arc::new);
        DatasetCheck {
            dataset: self,
            located: Some(located),
            splits,
        }
    }

    fn count_splits(self, locator: &Locator) -> Result<Vec<SplitCount>> {
        let from_set = |name: &str, set: &dyn Fn() -> Result<crate::ImageSet>| {
            let set = set()?;
            Ok::<_, DataError>(SplitCount {
                split: name.to_string(),
                total: set.len(),
                per_class: set.class_counts(),
                skipped: 0,
            })
        };
        match self {
            KnownDataset::Mnist | KnownDataset::FashionMnist | KnownDataset::Cifar10 => {
                let load = |split| match self {
                    KnownDataset::Mnist => mnist(split, locator),
                    KnownDataset::FashionMnist => fashion_mnist(split, locator),
                    _ => cifar10(split, locator),
                };
                Ok(vec![
                    from_set("train", &|| load(Split::Train))?,
                    from_set("test", &|| load(Split::Test))?,
                ])
            }
            KnownDataset::Hymenoptera => ["train", "val"]
                .iter()
                .map(|split| {
                    let folder = hymenoptera(split, locator)?;
                    Ok(SplitCount {
                        split: split.to_string(),
                        total: folder.len(),
                        per_class: folder.class_counts(),
                        skipped: folder.skipped().len(),
                    })
                })
                .collect(),
        }
    }
}

impl FromStr for KnownDataset {
    type Err = DataError;

    fn from_str(s: &str) -> Result<Self> {
        let wanted = s.to_ascii_lowercase().replace('_', "-");
        KnownDataset::ALL
            .into_iter()
            .find(|d| d.name() == wanted || (wanted == "cifar10" && *d == KnownDataset::Cifar10))
            .ok_or_else(|| {
                DataError::invalid(format!(
                    "unknown data set `{s}`; known: {}",
                    KnownDataset::ALL.map(|d| d.name()).join(", ")
                ))
            })
    }
}

impl fmt::Display for KnownDataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Sample counts of one split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCount {
    /// `train`, `test` or `val`.
    pub split: String,
    /// Number of samples.
    pub total: usize,
    /// Samples per class, by label.
    pub per_class: Vec<usize>,
    /// Files left out (image folders only).
    pub skipped: usize,
}

/// What `data check` found for one data set.
#[derive(Debug, Clone)]
pub struct DatasetCheck {
    /// Which data set.
    pub dataset: KnownDataset,
    /// Where it was found, if it was.
    pub located: Option<Located>,
    /// Per-split counts, or why it was not found or could not be read (shared, so the check can
    /// be cloned).
    pub splits: std::result::Result<Vec<SplitCount>, Arc<DataError>>,
}

impl DatasetCheck {
    /// Found and every split read.
    pub fn is_ok(&self) -> bool {
        self.located.is_some() && self.splits.is_ok()
    }
}

impl fmt::Display for DatasetCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.dataset.name();
        match (&self.located, &self.splits) {
            (Some(located), Ok(splits)) => {
                writeln!(
                    f,
                    "{name:<14} found ({}) in {}",
                    located.origin,
                    located.dir.display()
                )?;
                let parts: Vec<String> = splits
                    .iter()
                    .map(|s| {
                        let skipped = if s.skipped > 0 {
                            format!(", {} files skipped", s.skipped)
                        } else {
                            String::new()
                        };
                        format!(
                            "{} {} ({} classes{skipped})",
                            s.split,
                            s.total,
                            s.per_class.len()
                        )
                    })
                    .collect();
                write!(f, "{:<14} {}", "", parts.join(", "))
            }
            (Some(located), Err(e)) => write!(
                f,
                "{name:<14} FOUND BUT UNREADABLE in {}:\n{:<14} {e}",
                located.dir.display(),
                ""
            ),
            (None, Err(e)) => {
                write!(f, "{name:<14} not found")?;
                for line in e.to_string().lines().skip(1) {
                    write!(f, "\n{:<14} {line}", "")?;
                }
                Ok(())
            }
            (None, Ok(_)) => write!(f, "{name:<14} not found"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_unknown_names_list_choices() {
        assert_eq!(
            "fashion-mnist".parse::<KnownDataset>().unwrap(),
            KnownDataset::FashionMnist
        );
        assert_eq!(
            "CIFAR10".parse::<KnownDataset>().unwrap(),
            KnownDataset::Cifar10
        );
        assert_eq!(
            "fashion_mnist".parse::<KnownDataset>().unwrap(),
            KnownDataset::FashionMnist
        );
        let err = "imagenet".parse::<KnownDataset>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown data set `imagenet`; known: fashion-mnist, mnist, cifar-10, hymenoptera"
        );
    }

    #[test]
    fn hymenoptera_split_names_are_checked() {
        let err = hymenoptera("test", &Locator::only("/nonexistent")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hymenoptera has splits `train` and `val`, not `test`"
        );
    }

    #[test]
    fn check_reports_missing_data_with_reasons() {
        let locator = Locator::only("/nonexistent-flint");
        let check = KnownDataset::Mnist.check(&locator);
        assert!(!check.is_ok());
        let text = check.to_string();
        assert!(text.starts_with("mnist          not found"), "{text}");
        assert!(
            text.contains("/nonexistent-flint: no such folder"),
            "{text}"
        );
    }
}
