//! Where data sets are found: a discovery order a user can predict, then a verified download.
//!
//! For a data set named `fashion-mnist`, [`Locator::locate`] looks, in order, at:
//! 1. the folder given explicitly ([`Locator::data_dir`], the CLI's `--data-dir`): if given, it
//!    is the only place looked at, so a typo is an error rather than a silent fallback;
//! 2. `$FLINT_DATA/fashion-mnist/`;
//! 3. `./data/fashion-mnist/`;
//! 4. the system location `/usr/share/datasets/fashion-mnist/` (Debian's `dataset-fashion-mnist`);
//! 5. the user's cache, `~/.cache/flint/fashion-mnist/` (where downloads go);
//! 6. a download from the official mirrors into that cache, verified by SHA-256 (unless
//!    downloads are off: [`Locator::offline`] or `FLINT_OFFLINE=1`).
//!
//! When all fail, the error lists each place and why it did not serve, and how to get the data.

mod fetch;

use std::path::{Path, PathBuf};

use crate::error::{DataError, Result, Tried};
use crate::gzip::sha256_maybe_gzip;

pub use fetch::{download, extract_tar_gz, verify_file};

/// One file of a data set, with the SHA-256 of its decompressed content.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    /// Canonical (decompressed) file name, e.g. `train-images-idx3-ubyte`.
    pub name: &'static str,
    /// SHA-256 of the decompressed bytes (gzip wrappers differ between mirrors; content doesn't).
    pub sha256: &'static str,
    /// Length of the decompressed bytes: a download or a check inflates no more than this.
    pub size: u64,
}

/// How a data set is downloaded.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Each file is `<mirror><name>.gz`; mirrors are tried in order.
    GzipFiles { mirrors: &'static [&'static str] },
    /// One `.tar.gz` archive with the files inside `folder/`.
    TarGz {
        urls: &'static [&'static str],
        sha256: &'static str,
        folder: &'static str,
        /// The most bytes the archive may have; a larger download is stopped.
        max_bytes: u64,
    },
    /// No verified download: the user fetches it by hand from `url` (see the spec's hint).
    Manual { url: &'static str },
}

/// Everything flint needs to know to find, fetch and verify a data set.
#[derive(Debug, Clone, Copy)]
pub struct DatasetSpec {
    /// Name used in folder names and messages, e.g. `fashion-mnist`.
    pub name: &'static str,
    /// Folder names accepted under each search root (the first is the canonical one).
    pub folder_names: &'static [&'static str],
    /// The files that must all be present.
    pub files: &'static [DataFile],
    /// Sub-folders that must all be present (for image-folder data sets).
    pub subfolders: &'static [&'static str],
    /// Where downloads come from.
    pub source: Source,
    /// How to get the data by hand, shown when it is not found.
    pub hint: &'static str,
}

/// Where a data set was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The folder passed explicitly.
    Explicit,
    /// Under `$FLINT_DATA`.
    Env,
    /// Under `./data`.
    Local,
    /// Under a system folder (`/usr/share/datasets`).
    System,
    /// In the user's cache, from an earlier download.
    Cache,
    /// Downloaded just now.
    Downloaded,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Origin::Explicit => "explicit path",
            Origin::Env => "$FLINT_DATA",
            Origin::Local => "./data",
            Origin::System => "system",
            Origin::Cache => "cache",
            Origin::Downloaded => "downloaded",
        })
    }
}

/// A data set found on disk: its folder and the path of each of its files.
#[derive(Debug, Clone)]
pub struct Located {
    /// The folder holding the files.
    pub dir: PathBuf,
    /// Which step of the discovery order found it.
    pub origin: Origin,
    /// One path per [`DatasetSpec::files`] entry, in the same order.
    pub files: Vec<PathBuf>,
}

impl Located {
    /// The path of the spec file called `name`.
    ///
    /// # Panics
    /// If `name` is not one of the spec's files (a programming error).
    pub fn file(&self, spec: &DatasetSpec, name: &str) -> &Path {
        let i = spec
            .files
            .iter()
            .position(|f| f.name == name)
            .unwrap_or_else(|| panic!("{} has no file {name}", spec.name));
        &self.files[i]
    }

    /// Checks each file's decompressed content against the official SHA-256, streamed: a file
    /// is inflated no further than its official size, so a gzip bomb is cut off there.
    /// Returns the names of the files that differ (empty when all match).
    pub fn verify(&self, spec: &DatasetSpec) -> Result<Vec<String>> {
        let mut differ = Vec::new();
        for (file, path) in spec.files.iter().zip(&self.files) {
            if file.sha256.is_empty() {
                continue; // no published checksum for this file
            }
            let matches = sha256_maybe_gzip(path, file.size)?
                .is_some_and(|sha| sha.eq_ignore_ascii_case(file.sha256));
            if !matches {
                differ.push(file.name.to_string());
            }
        }
        Ok(differ)
    }
}

/// Finds data sets following the discovery order in the [module docs](self).
#[derive(Debug, Clone)]
pub struct Locator {
    explicit: Option<PathBuf>,
    env_root: Option<PathBuf>,
    local_root: Option<PathBuf>,
    system_roots: Vec<PathBuf>,
    cache_root: Option<PathBuf>,
    download: bool,
}

impl Default for Locator {
    fn default() -> Self {
        Self::new()
    }
}

impl Locator {
    /// The standard discovery order, reading `FLINT_DATA` and `FLINT_OFFLINE` now.
    pub fn new() -> Self {
        let env_root = std::env::var_os("FLINT_DATA")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from);
        let offline = std::env::var_os("FLINT_OFFLINE").is_some_and(|v| !v.is_empty() && v != "0");
        Self {
            explicit: None,
            env_root,
            local_root: Some(PathBuf::from("data")),
            system_roots: vec![PathBuf::from("/usr/share/datasets")],
            cache_root: dirs::cache_dir().map(|d| d.join("flint")),
            download: !offline,
        }
    }

    /// A locator that looks only in `dir` (it must hold the files itself).
    pub fn only(dir: impl Into<PathBuf>) -> Self {
        Self {
            explicit: Some(dir.into()),
            env_root: None,
            local_root: None,
            system_roots: Vec::new(),
            cache_root: None,
            download: false,
        }
    }

    /// Uses `dir` as the explicit folder (step 1): when set, nothing else is searched.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.explicit = Some(dir.into());
        self
    }

    /// Overrides the `$FLINT_DATA` root (step 2); `None` skips the step.
    pub fn env_root(mut self, root: Option<PathBuf>) -> Self {
        self.env_root = root;
        self
    }

    /// Overrides the `./data` root (step 3); `None` skips the step.
    pub fn local_root(mut self, root: Option<PathBuf>) -> Self {
        self.local_root = root;
        self
    }

    /// Overrides the system roots (step 4).
    pub fn system_roots(mut self, roots: Vec<PathBuf>) -> Self {
        self.system_roots = roots;
        self
    }

    /// Overrides the cache root (step 5 and where step 6 downloads to); `None` skips both.
    pub fn cache_root(mut self, root: Option<PathBuf>) -> Self {
        self.cache_root = root;
        self
    }

    /// Turns downloads off (step 6).
    pub fn offline(mut self) -> Self {
        self.download = false;
        self
    }

    /// Whether step 6 may download.
    pub fn downloads(&self) -> bool {
        self.download
    }

    /// Searches steps 1-5 without downloading.
    pub fn find(&self, spec: &DatasetSpec) -> Result<Located> {
        let mut tried = Tried::default();
        if let Some(found) = self.search(spec, &mut tried) {
            return Ok(found);
        }
        Err(self.not_found(spec, tried))
    }

    /// Searches steps 1-5, then downloads into the cache if allowed.
    pub fn locate(&self, spec: &DatasetSpec) -> Result<Located> {
        let mut tried = Tried::default();
        if let Some(found) = self.search(spec, &mut tried) {
            return Ok(found);
        }
        if self.explicit.is_some() {
            return Err(self.not_found(spec, tried));
        }
        match (&self.cache_root, self.download) {
            (Some(cache), true) => match download(spec, &cache.join(spec.folder_names[0])) {
                Ok(mut found) => {
                    found.origin = Origin::Downloaded;
                    Ok(found)
                }
                Err(e) => {
                    tried.push("download", e.to_string());
                    Err(self.not_found(spec, tried))
                }
            },
            (None, true) => {
                tried.push("download", "no cache folder to download into");
                Err(self.not_found(spec, tried))
            }
            (_, false) => {
                tried.push("download", "downloads are off (FLINT_OFFLINE or --offline)");
                Err(self.not_found(spec, tried))
            }
        }
    }

    fn search(&self, spec: &DatasetSpec, tried: &mut Tried) -> Option<Located> {
        if let Some(dir) = &self.explicit {
            match files_in(dir, spec) {
                Ok(files) => {
                    return Some(Located {
                        dir: dir.clone(),
                        origin: Origin::Explicit,
                        files,
                    });
                }
                Err(why) => {
                    tried.push(dir.display().to_string(), why.to_string());
                    return None;
                }
            }
        }
        let mut roots: Vec<(PathBuf, Origin)> = Vec::new();
        match &self.env_root {
            Some(root) => roots.push((root.clone(), Origin::Env)),
            None => tried.push("$FLINT_DATA", "not set"),
        }
        if let Some(root) = &self.local_root {
            roots.push((root.clone(), Origin::Local));
        }
        for root in &self.system_roots {
            roots.push((root.clone(), Origin::System));
        }
        if let Some(root) = &self.cache_root {
            roots.push((root.clone(), Origin::Cache));
        }
        for (root, origin) in roots {
            for folder in spec.folder_names {
                let dir = root.join(folder);
                match files_in(&dir, spec) {
                    Ok(files) => {
                        return Some(Located { dir, origin, files });
                    }
                    Err(why) => {
                        // One line per root for a missing folder keeps the list readable.
                        if why != FolderProblem::Missing || *folder == spec.folder_names[0] {
                            tried.push(dir.display().to_string(), why.to_string());
                        }
                    }
                }
            }
        }
        None
    }

    fn not_found(&self, spec: &DatasetSpec, tried: Tried) -> DataError {
        DataError::NotFound {
            dataset: spec.name.to_string(),
            tried,
            hint: spec.hint.to_string(),
        }
    }
}

/// Why a folder does not hold a data set (one line of [`DataError::NotFound`]'s list).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum FolderProblem {
    #[error("no such folder")]
    Missing,
    #[error("folder exists but lacks {}", .0.join(", "))]
    Lacks(Vec<String>),
}

/// The path of each spec file in `dir`, accepting `name`, `name.gz` and the dotted variant some
/// archives use (`train-images.idx3-ubyte`).
fn files_in(dir: &Path, spec: &DatasetSpec) -> std::result::Result<Vec<PathBuf>, FolderProblem> {
    if !dir.is_dir() {
        return Err(FolderProblem::Missing);
    }
    let mut found = Vec::new();
    let mut missing: Vec<String> = spec
        .subfolders
        .iter()
        .filter(|s| !dir.join(s).is_dir())
        .map(|s| format!("{s}/"))
        .collect();
    for file in spec.files {
        match candidates(file.name)
            .into_iter()
            .map(|c| dir.join(c))
            .find(|p| p.is_file())
        {
            Some(path) => found.push(path),
            None => missing.push(format!("{} (or .gz)", file.name)),
        }
    }
    if missing.is_empty() {
        Ok(found)
    } else {
        Err(FolderProblem::Lacks(missing))
    }
}

fn candidates(name: &str) -> Vec<String> {
    let mut names = vec![format!("{name}.gz"), name.to_string()];
    if let Some(pos) = name.find("-idx") {
        let dotted = format!("{}.{}", &name[..pos], &name[pos + 1..]);
        names.push(format!("{dotted}.gz"));
        names.push(dotted);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: DatasetSpec = DatasetSpec {
        name: "toy",
        folder_names: &["toy", "toy-alt"],
        files: &[
            DataFile {
                name: "train-images-idx3-ubyte",
                sha256: "",
                size: 16,
            },
            DataFile {
                name: "train-labels-idx1-ubyte",
                sha256: "",
                size: 9,
            },
        ],
        subfolders: &[],
        source: Source::GzipFiles {
            mirrors: &["http://127.0.0.1:9/"],
        },
        hint: "Get it from the toy shop.",
    };

    fn touch(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), b"x").unwrap();
        }
    }

    fn isolated() -> Locator {
        Locator::new()
            .env_root(None)
            .local_root(None)
            .system_roots(vec![])
            .cache_root(None)
            .offline()
    }

    #[test]
    fn order_is_env_then_local_then_system_then_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let root = |n: &str| tmp.path().join(n);
        let files = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"];
        for r in ["env", "local", "system", "cache"] {
            touch(&root(r).join("toy"), &files);
        }
        let full = isolated()
            .env_root(Some(root("env")))
            .local_root(Some(root("local")))
            .system_roots(vec![root("system")])
            .cache_root(Some(root("cache")));
        assert_eq!(full.find(&SPEC).unwrap().origin, Origin::Env);
        let no_env = full.clone().env_root(None);
        assert_eq!(no_env.find(&SPEC).unwrap().origin, Origin::Local);
        let found = no_env.clone().local_root(None).find(&SPEC).unwrap();
        assert_eq!(found.origin, Origin::System);
        assert_eq!(
            found.file(&SPEC, "train-images-idx3-ubyte"),
            root("system").join("toy/train-images-idx3-ubyte.gz")
        );
        let cache_only = isolated().cache_root(Some(root("cache")));
        assert_eq!(cache_only.find(&SPEC).unwrap().origin, Origin::Cache);
    }

    #[test]
    fn explicit_folder_is_the_only_place_looked_at() {
        let tmp = tempfile::tempdir().unwrap();
        touch(
            &tmp.path().join("env/toy"),
            &["train-images-idx3-ubyte", "train-labels-idx1-ubyte"],
        );
        let locator = isolated()
            .env_root(Some(tmp.path().join("env")))
            .data_dir(tmp.path().join("typo"));
        let msg = locator.locate(&SPEC).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "toy not found. Looked in:\n  1. {}: no such folder\nGet it from the toy shop.",
                tmp.path().join("typo").display()
            )
        );
    }

    #[test]
    fn accepts_alternative_folder_and_dotted_names() {
        let tmp = tempfile::tempdir().unwrap();
        touch(
            &tmp.path().join("toy-alt"),
            &["train-images.idx3-ubyte", "train-labels.idx1-ubyte.gz"],
        );
        let found = isolated()
            .env_root(Some(tmp.path().into()))
            .find(&SPEC)
            .unwrap();
        assert_eq!(found.dir, tmp.path().join("toy-alt"));
        assert!(found.files[1].ends_with("train-labels.idx1-ubyte.gz"));
    }

    #[test]
    fn not_found_lists_every_place_and_why() {
        let tmp = tempfile::tempdir().unwrap();
        touch(&tmp.path().join("toy"), &["train-images-idx3-ubyte"]);
        let locator = isolated()
            .local_root(Some(tmp.path().into()))
            .system_roots(vec![tmp.path().join("sys")]);
        let msg = locator.locate(&SPEC).unwrap_err().to_string();
        let expected = format!(
            "toy not found. Looked in:\n  1. $FLINT_DATA: not set\n  2. {}: folder exists but lacks train-labels-idx1-ubyte (or .gz)\n  3. {}: no such folder\n  4. download: downloads are off (FLINT_OFFLINE or --offline)\nGet it from the toy shop.",
            tmp.path().join("toy").display(),
            tmp.path().join("sys/toy").display()
        );
        assert_eq!(msg, expected);
    }

    #[test]
    fn failed_download_leaves_nothing_that_looks_valid() {
        let tmp = tempfile::tempdir().unwrap();
        let locator = isolated().cache_root(Some(tmp.path().into()));
        let locator = Locator {
            download: true,
            ..locator
        };
        let msg = locator.locate(&SPEC).unwrap_err().to_string();
        assert!(msg.contains("download: download of train-images-idx3-ubyte failed: download of http://127.0.0.1:9/train-images-idx3-ubyte.gz failed"), "{msg}");
        let left: Vec<_> = std::fs::read_dir(tmp.path().join("toy")).unwrap().collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
