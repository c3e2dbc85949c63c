//! Cached feature extraction: a frozen backbone's features computed once, stored on disk keyed
//! by model, data and transform, and reused by later runs.
//!
//! A cache file holds a one-line JSON header (key, count, dimension, SHA-256 of the payload)
//! and the features and labels as little-endian binary. It is written atomically; a file whose
//! header or checksum does not match is recomputed and replaced, never trusted.

use std::path::{Path, PathBuf};

use flint_io::fs::{Sha256Hasher, sha256_hex};

use crate::error::TransferError;

const MAGIC: &str = "flint-features v1";

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
    /// Cached but unreadable or corrupt: recomputed and replaced (the reason).
    Replaced(String),
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
        self.dir.join(format!("{}.feat", key.digest()))
    }

    /// The cached features for `key`, or those `compute` returns (then stored).
    pub fn get_or_compute(
        &self,
        key: &CacheKey,
        compute: impl FnOnce() -> Result<Features, TransferError>,
    ) -> Result<(Features, CacheStatus), TransferError> {
        let path = self.path(key);
        let status = match std::fs::read(&path) {
            Ok(bytes) => match decode(&bytes, key) {
                Ok(features) => return Ok((features, CacheStatus::Hit)),
                Err(reason) => CacheStatus::Replaced(reason),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => CacheStatus::Miss,
            Err(e) => CacheStatus::Replaced(e.to_string()),
        };
        let features = compute()?;
        std::fs::create_dir_all(&self.dir).map_err(|e| TransferError::io(&self.dir, e))?;
        flint_io::fs::write_atomic(&path, &encode(&features, key)).map_err(|e| {
            TransferError::Cache {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        Ok((features, status))
    }
}

fn encode(f: &Features, key: &CacheKey) -> Vec<u8> {
    let mut payload = Vec::with_capacity(4 * (f.values.len() + f.labels.len()));
    for v in &f.values {
        payload.extend_from_slice(&v.to_le_bytes());
    }
    for l in &f.labels {
        payload.extend_from_slice(&l.to_le_bytes());
    }
    let header = serde_json::json!({
        "magic": MAGIC,
        "key": key.digest(),
        "model": key.model,
        "transform": key.transform,
        "len": f.len(),
        "dim": f.dim,
        "sha256": sha256_hex(&payload),
    });
    let mut out = serde_json::to_vec(&header).expect("json");
    out.push(b'\n');
    out.extend_from_slice(&payload);
    out
}

fn decode(bytes: &[u8], key: &CacheKey) -> Result<Features, String> {
    let nl = bytes.iter().position(|&b| b == b'\n').ok_or("no header")?;
    let header: serde_json::Value =
        serde_json::from_slice(&bytes[..nl]).map_err(|e| format!("bad header: {e}"))?;
    if header["magic"] != MAGIC {
        return Err("not a flint feature cache file".into());
    }
    if header["key"] != key.digest().as_str() {
        return Err("written for another key".into());
    }
    let len = header["len"].as_u64().ok_or("no length")? as usize;
    let dim = header["dim"].as_u64().ok_or("no dimension")? as usize;
    let payload = &bytes[nl + 1..];
    if payload.len() != 4 * (len * dim + len) {
        return Err(format!(
            "truncated: {} payload bytes for {len} x {dim} features",
            payload.len()
        ));
    }
    if header["sha256"] != sha256_hex(payload).as_str() {
        return Err("checksum mismatch".into());
    }
    let word = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    let (v, l) = payload.split_at(4 * len * dim);
    Ok(Features {
        dim,
        values: v
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(word(c)))
            .collect(),
        labels: l
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
        assert_eq!(s, CacheStatus::Replaced("checksum mismatch".into()));
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        let (_, s) = cache.get_or_compute(&key("a"), || Ok(features())).unwrap();
        assert!(matches!(s, CacheStatus::Replaced(r) if r.starts_with("truncated")));
        let (_, s) = cache
            .get_or_compute(&key("a"), || panic!("replaced entry is valid"))
            .unwrap();
        assert_eq!(s, CacheStatus::Hit);
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
