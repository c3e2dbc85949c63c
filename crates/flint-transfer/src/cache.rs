//! Cached feature extraction: a frozen backbone's features computed once, stored on disk keyed
//! by model, data and transform, and reused by later runs.
//!
//! A cache entry is a safetensors file (`<key digest>.safetensors`): the features as an `F32`
//! tensor `[len, dim]`, the labels as `U32` `[len]`, and in its metadata the format, the full key
//! and the SHA-256 of the tensor bytes (safetensors has no checksum of its own). It is written
//! atomically and read bounded by [`MAX_CACHE_BYTES`]; an entry that cannot be read, belongs to
//! another key or fails its checksum is recomputed and replaced, never trusted. Entries of the
//! older `.feat` format count as stale: recomputed, and the old file removed.

use std::path::{Path, PathBuf};

use std::collections::HashMap;

use flint_io::FsError;
use flint_io::fs::{Sha256Hasher, read_regular};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::TransferError;

/// The metadata `format` of a cache entry.
const FORMAT: &str = "flint-features v2";

/// The largest cache entry read: 16 GiB, 4 million rows of 1,000 features.
pub const MAX_CACHE_BYTES: u64 = 16 << 30;

/// Features of a whole data set, one row per sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Features {
    /// Feature dimension.
    pub dim: usize,
    /// `len * dim` values, row-major.
    pub values: Vec<f32>,
    /// Class of each row.
    pub labels: Vec<u32>,
}

impl Features {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.values[i * self.dim..(i + 1) * self.dim]
    }
}

/// What a cache lookup did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheStatus {
    /// Read from the cache.
    Hit,
    /// Not cached: computed and stored.
    Miss,
    /// Cached but unusable: recomputed and replaced (why).
    Replaced(Stale),
}

/// Why a cache entry was not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    /// The file could not be read (or is larger than [`MAX_CACHE_BYTES`]).
    #[error("unreadable: {0}")]
    Unreadable(String),
    /// Not a safetensors file, or one without flint's tensors and metadata.
    #[error("not a flint feature cache file: {0}")]
    Format(String),
    /// Written in flint's older `.feat` format.
    #[error("written in an older flint cache format (.feat)")]
    OldFormat,
    /// Its metadata names another key (a digest collision or a renamed file).
    #[error("written for another key")]
    OtherKey,
    /// The tensor bytes do not have the SHA-256 recorded with them.
    #[error("checksum mismatch")]
    Checksum,
}

/// What the cached features depend on; any change gives another cache entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// The backbone and its weights (a name plus the weights' checksum).
    pub model: String,
    /// The data: a fingerprint of the files (see [`fingerprint_files`]).
    pub data: String,
    /// The transform and normalisation, as text.
    pub transform: String,
}

impl CacheKey {
    /// The SHA-256 of the three parts: the cache file's name.
    pub fn digest(&self) -> String {
        let mut h = Sha256Hasher::new();
        for part in [&self.model, &self.data, &self.transform] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        h.finish()
    }
}

/// A fingerprint of data files: their paths relative to `root`, sizes, modification times and
/// labels. Editing, adding, removing or relabelling a file changes it.
pub fn fingerprint_files<'a>(
    root: &Path,
    files: impl IntoIterator<Item = (&'a Path, usize)>,
) -> Result<String, TransferError> {
    let mut h = Sha256Hasher::new();
    for (path, label) in files {
        let meta = std::fs::metadata(path).map_err(|e| TransferError::io(path, e))?;
        let modified = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        let rel = path.strip_prefix(root).unwrap_or(path);
        h.update(rel.to_string_lossy().as_bytes());
        h.update(&[0]);
        h.update(&meta.len().to_le_bytes());
        h.update(&modified.to_le_bytes());
        h.update(&(label as u64).to_le_bytes());
    }
    Ok(h.finish())
}

/// A folder of cached features.
#[derive(Debug, Clone)]
pub struct FeatureCache {
    dir: PathBuf,
}

impl FeatureCache {
    /// A cache in `dir` (created when first written).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// `$FLINT_CACHE/features`, else `~/.cache/flint/features`.
    pub fn default_dir() -> PathBuf {
        std::env::var_os("FLINT_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/flint")))
            .unwrap_or_else(|| PathBuf::from(".flint-cache"))
            .join("features")
    }

    /// The cache folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the entry for `key` lives.
    pub fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(format!("{}.safetensors", key.digest()))
    }

    /// The cached features for `key`, or those `compute` returns (then stored).
    pub fn get_or_compute(
        &self,
        key: &CacheKey,
        compute: impl FnOnce() -> Result<Features, TransferError>,
    ) -> Result<(Features, CacheStatus), TransferError> {
        let path = self.path(key);
        let status = match read_regular(&path, MAX_CACHE_BYTES) {
            Ok(bytes) => match decode(&bytes, key) {
                Ok(features) => return Ok((features, CacheStatus::Hit)),
                Err(stale) => CacheStatus::Replaced(stale),
            },
            Err(FsError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                self.remove_old_format(key)
            }
            Err(e) => CacheStatus::Replaced(Stale::Unreadable(e.reason())),
        };
        let features = compute()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| TransferError::io(&self.dir, e))?;
        let cache_error = |reason: String| TransferError::Cache {
            path: path.clone(),
            reason,
        };
        let bytes = encode(&features, key).map_err(|e| cache_error(e.to_string()))?;
        flint_io::fs::write_atomic(&path, &bytes).map_err(|e| cache_error(e.reason()))?;
        Ok((features, status))
    }

    /// A miss, or [`Stale::OldFormat`] when the entry exists in the `.feat` format of earlier
    /// flint versions (removed: it would never be read again).
    fn remove_old_format(&self, key: &CacheKey) -> CacheStatus {
        let old = self.dir.join(format!("{}.feat", key.digest()));
        if std::fs::symlink_metadata(&old).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::remove_file(&old);
            CacheStatus::Replaced(Stale::OldFormat)
        } else {
            CacheStatus::Miss
        }
    }
}

fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

/// The SHA-256 of the features' and labels' bytes, as stored in the metadata.
fn checksum(values: &[u8], labels: &[u8]) -> String {
    let mut h = Sha256Hasher::new();
    h.update(values);
    h.update(labels);
    h.finish()
}

fn encode(f: &Features, key: &CacheKey) -> Result<Vec<u8>, safetensors::SafeTensorError> {
    let values = le_bytes(&f.values, f32::to_le_bytes);
    let labels = le_bytes(&f.labels, u32::to_le_bytes);
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("key".to_string(), key.digest()),
        ("model".to_string(), key.model.clone()),
        ("transform".to_string(), key.transform.clone()),
        ("sha256".to_string(), checksum(&values, &labels)),
    ]);
    let tensors = [
        (
            "features",
            TensorView::new(Dtype::F32, vec![f.len(), f.dim], &values)?,
        ),
        (
            "labels",
            TensorView::new(Dtype::U32, vec![f.len()], &labels)?,
        ),
    ];
    safetensors::serialize(tensors, Some(metadata))
}

fn decode(bytes: &[u8], key: &CacheKey) -> Result<Features, Stale> {
    let format = |e: &dyn std::fmt::Display| Stale::Format(e.to_string());
    let (_, metadata) = SafeTensors::read_metadata(bytes).map_err(|e| format(&e))?;
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| format(&e))?;
    let meta = metadata.metadata().clone().unwrap_or_default();
    let field = |name: &str| meta.get(name).map(String::as_str);
    if field("format") != Some(FORMAT) {
        return Err(Stale::Format("no flint-features metadata".into()));
    }
    if field("key") != Some(key.digest().as_str()) {
        return Err(Stale::OtherKey);
    }
    let tensor = |name: &str, dtype: Dtype| {
        let view = tensors.tensor(name).map_err(|e| format(&e))?;
        if view.dtype() != dtype {
            return Err(format(&format_args!(
                "`{name}` is {:?}, not {dtype:?}",
                view.dtype()
            )));
        }
        Ok(view)
    };
    let values = tensor("features", Dtype::F32)?;
    let labels = tensor("labels", Dtype::U32)?;
    let (&[len, dim], &[n]) = (values.shape(), labels.shape()) else {
        return Err(Stale::Format(
            "`features` must be [len, dim] and `labels` [len]".into(),
        ));
    };
    if n != len {
        return Err(Stale::Format(format!("{len} feature rows but {n} labels")));
    }
    if field("sha256") != Some(checksum(values.data(), labels.data()).as_str()) {
        return Err(Stale::Checksum);
    }
    let word = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    Ok(Features {
        dim,
        values: values
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(word(c)))
            .collect(),
        labels: labels
            .data()
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(word(c)))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(transform: &str) -> CacheKey {
        CacheKey {
            model: "m".into(),
            data: "d".into(),
            transform: transform.into(),
        }
    }

    fn features() -> Features {
        Features {
            dim: 2,
            values: vec![1.0, 2.0, 3.0, -4.5],
            labels: vec![0, 1],
        }
    }

    #[test]
    fn miss_then_hit_then_invalidated_by_transform() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        let (f, s) = cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        assert_eq!((f, s), (features(), CacheStatus::Miss));
        let (f, s) = cache
            .get_or_compute(&key("a"), || panic!("must not recompute"))
            .unwrap();
        assert_eq!((f, s), (features(), CacheStatus::Hit));
        let (_, s) = cache.get_or_compute(&key("b"), || Ok(features())).unwrap();
        assert_eq!(s, CacheStatus::Miss);
    }

    #[test]
    fn corrupt_or_truncated_entries_are_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        let path = cache.path(&key("a"));
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (_, s) = cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        assert_eq!(s, CacheStatus::Replaced(Stale::Checksum));
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (_, s) = cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        assert!(
            matches!(s, CacheStatus::Replaced(Stale::Format(_))),
            "{s:?}"
        );
        std::fs::write(&path, b"").unwrap();
        let (_, s) = cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        assert!(
            matches!(s, CacheStatus::Replaced(Stale::Format(_))),
            "{s:?}"
        );
        let (_, s) = cache
            .get_or_compute(&key("a"), || panic!("replaced entry is valid"))
            .unwrap();
        assert_eq!(s, CacheStatus::Hit);
    }

    #[test]
    fn other_keys_and_old_format_files_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        std::fs::copy(cache.path(&key("a")), cache.path(&key("b"))).unwrap();
        let (_, s) = cache.get_or_compute(&key("b"), || Ok(features())).unwrap();
        assert_eq!(s, CacheStatus::Replaced(Stale::OtherKey));

        let old = dir.path().join(format!("{}.feat", key("c").digest()));
        std::fs::write(&old, b"{\"magic\":\"flint-features v1\"}\n").unwrap();
        let (f, s) = cache.get_or_compute(&key("c"), || Ok(features())).unwrap();
        assert_eq!(
            (f, s),
            (features(), CacheStatus::Replaced(Stale::OldFormat))
        );
        assert!(!old.exists());
        assert!(cache.path(&key("c")).exists());
    }

    #[test]
    fn a_folder_in_place_of_an_entry_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FeatureCache::new(dir.path());
        std::fs::create_dir(cache.path(&key("a"))).unwrap();
        let err = cache
            .get_or_compute(&key("a"), || Ok(features()))
            .unwrap_err();
        assert!(matches!(err, TransferError::Cache { .. }), "{err}");
    }

    #[test]
    fn fingerprint_changes_with_files_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.jpg");
        std::fs::write(&a, b"1").unwrap();
        let f1 = fingerprint_files(dir.path(), [(a.as_path(), 0)]).unwrap();
        assert_eq!(
            f1,
            fingerprint_files(dir.path(), [(a.as_path(), 0)]).unwrap()
        );
        assert_ne!(
            f1,
            fingerprint_files(dir.path(), [(a.as_path(), 1)]).unwrap()
        );
        std::fs::write(&a, b"12").unwrap();
        assert_ne!(
            f1,
            fingerprint_files(dir.path(), [(a.as_path(), 0)]).unwrap()
        );
    }
}
