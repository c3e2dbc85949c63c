//! Downloads with SHA-256 verification and atomic writes.
//!
//! Nothing is written under a file's final name until its content has been verified: a download
//! goes to `<name>.part-<pid>` and is renamed only after the checksum matched, so an interrupted
//! or corrupt download never leaves a file that looks valid.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex SHA-256 of a file's bytes, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks `actual` against `expected`, naming `what` on a mismatch.
pub fn check_sha256(what: &str, expected: &str, actual: &str) -> Result<()> {
    if expected.eq_ignore_ascii_case(actual) {
        Ok(())
    } else {
        Err(DataError::Checksum {
            what: what.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        })
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed, then
/// renamed over `path`. A crash leaves either the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(DataError::io(path, e));
    }
    Ok(())
}

/// A temporary name next to `path`, unique to this process.
pub(crate) fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.part-{}", std::process::id()))
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// Downloads `url` into memory (for files of tens of MB), printing progress to stderr.
pub fn fetch_bytes(url: &str) -> Result<Vec<u8>> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    eprintln!("downloading {url}");
    let response = agent().get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut bytes = Vec::new();
    response
        .into_body()
        .into_reader()
        .read_to_end(&mut bytes)
        .map_err(|e| {
            fail(format!(
                "connection broke after {} bytes ({e})",
                bytes.len()
            ))
        })?;
    Ok(bytes)
}

/// Streams `url` to `dest` while hashing it; `dest` appears only if the SHA-256 matches.
pub fn fetch_to_file(url: &str, dest: &Path, expected_sha256: &str) -> Result<()> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    eprintln!("downloading {url}");
    let response = agent().get(url).call().map_err(|e| fail(e.to_string()))?;
    let mut reader = response.into_body().into_reader();
    let tmp = temp_sibling(dest);
    let result = (|| -> Result<()> {
        let mut file = std::fs::File::create(&tmp).map_err(|e| DataError::io(&tmp, e))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0usize;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| fail(format!("connection broke after {total} bytes ({e})")))?;
            if n == 0 {
                break;
            }
            total += n;
            hasher.update(&buf[..n]);
            file.write_all(&buf[..n])
                .map_err(|e| DataError::io(&tmp, e))?;
        }
        file.sync_all().map_err(|e| DataError::io(&tmp, e))?;
        check_sha256(url, expected_sha256, &hex(&hasher.finalize()))?;
        std::fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("abc");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(sha256_file(&path).unwrap(), sha256_hex(b"abc"));
    }

    #[test]
    fn checksum_mismatch_message() {
        let err = check_sha256("train-images", "00", "ff").unwrap_err();
        assert_eq!(
            err.to_string(),
            "train-images: SHA-256 mismatch (expected 00, got ff); the file is corrupt or not the official one"
        );
        assert!(check_sha256("x", "AB", "ab").is_ok());
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.bin");
        std::fs::write(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn atomic_write_into_missing_folder_fails_cleanly() {
        let err = write_atomic(Path::new("/nonexistent-flint-dir/x"), b"1").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent-flint-dir/x: No such file")
        );
    }

    #[test]
    fn unreachable_url_is_a_clear_error() {
        // Port 9 on loopback (discard) is closed here: the error must name the URL.
        let err = fetch_bytes("http://127.0.0.1:9/mnist.gz").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("download of http://127.0.0.1:9/mnist.gz failed:"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("f");
        assert!(fetch_to_file("http://127.0.0.1:9/f", &dest, "00").is_err());
        assert!(!dest.exists());
    }
}
