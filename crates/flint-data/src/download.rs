//! Downloads with SHA-256 verification and atomic writes.
//!
//! Nothing is written under a file's final name until its content has been verified: a download
//! goes to `<name>.part-<pid>` and is renamed only after the checksum matched, so an interrupted
//! or corrupt download never leaves a file that looks valid.
//!
//! Downloads are streamed to disk and hashed as they arrive, never held in memory whole, and each
//! is capped: at the length the server announces, and at the most the caller expects. A server
//! sending more is cut off at the cap, and nothing it sent is kept.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use flint_io::fs::{Sha256Hasher, temp_sibling};

use crate::error::{DataError, Result};

/// The cap of [`fetch_to_file`] when the caller gives none: 4 GiB.
pub const DEFAULT_MAX_DOWNLOAD: u64 = 4 << 30;

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

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(20)))
        .timeout_recv_body(Some(Duration::from_secs(600)))
        .build()
        .into()
}

/// Downloads `url` into memory, refusing more than `max_bytes` (for files of tens of MB),
/// printing progress to stderr.
pub fn fetch_bytes(url: &str, max_bytes: u64) -> Result<Vec<u8>> {
    let (mut reader, announced, cap) = open_download(url, max_bytes)?;
    let mut bytes = Vec::with_capacity(announced.unwrap_or(0).min(cap) as usize);
    reader.read_to_end(&mut bytes).map_err(|e| {
        download_error(
            url,
            format!("connection broke after {} bytes ({e})", bytes.len()),
        )
    })?;
    check_length(url, bytes.len() as u64, announced, cap)?;
    Ok(bytes)
}

/// Starts downloading `url`, printing it to stderr: the body as a reader that stops one byte past
/// the download's cap (so a body longer than allowed shows), the length the server announced,
/// and the cap ([`capped`]).
fn open_download(url: &str, max_bytes: u64) -> Result<(impl Read, Option<u64>, u64)> {
    eprintln!("downloading {url}");
    let response = agent()
        .get(url)
        .call()
        .map_err(|e| download_error(url, e.to_string()))?;
    let announced = response.body().content_length();
    let cap = capped(url, announced, max_bytes)?;
    let reader = response.into_body().into_reader().take(cap + 1);
    Ok((reader, announced, cap))
}

fn download_error(url: &str, reason: String) -> DataError {
    DataError::Download {
        url: url.to_string(),
        reason,
    }
}

/// The cap of a download: `max_bytes`, or less when the server announces less; an announced
/// length above `max_bytes` is refused before reading.
fn capped(url: &str, announced: Option<u64>, max_bytes: u64) -> Result<u64> {
    match announced {
        Some(n) if n > max_bytes => Err(download_error(
            url,
            format!("the server announces {n} bytes, more than the {max_bytes} expected"),
        )),
        Some(n) => Ok(n),
        None => Ok(max_bytes),
    }
}

/// Checks a finished download's length against the cap and the announced length.
fn check_length(url: &str, total: u64, announced: Option<u64>, cap: u64) -> Result<()> {
    if total > cap {
        return Err(download_error(
            url,
            match announced {
                Some(n) => format!("the server sent more than the {n} bytes it announced; stopped"),
                None => format!("the download is larger than the {cap} bytes expected; stopped"),
            },
        ));
    }
    match announced {
        Some(n) if total < n => Err(download_error(
            url,
            format!("connection broke after {total} of {n} bytes"),
        )),
        _ => Ok(()),
    }
}

/// Streams `url` to `dest` while hashing it; `dest` appears only if the SHA-256 matches. At most
/// [`DEFAULT_MAX_DOWNLOAD`] bytes (and no more than the server announces) are accepted.
pub fn fetch_to_file(url: &str, dest: &Path, expected_sha256: &str) -> Result<()> {
    fetch_to_file_limited(url, dest, expected_sha256, DEFAULT_MAX_DOWNLOAD)
}

/// [`fetch_to_file`] with a cap of `max_bytes`: a larger download is stopped at the cap and
/// nothing of it is kept.
pub fn fetch_to_file_limited(
    url: &str,
    dest: &Path,
    expected_sha256: &str,
    max_bytes: u64,
) -> Result<()> {
    let tmp = temp_sibling(dest);
    let result = fetch_to_temp(url, &tmp, max_bytes).and_then(|sha| {
        check_sha256(url, expected_sha256, &sha)?;
        std::fs::rename(&tmp, dest).map_err(|e| DataError::io(dest, e))
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Streams `url` into `tmp` (created or truncated), at most `max_bytes`, hashing as it goes;
/// returns the hex SHA-256. The caller removes `tmp` on failure.
pub(crate) fn fetch_to_temp(url: &str, tmp: &Path, max_bytes: u64) -> Result<String> {
    let (mut reader, announced, cap) = open_download(url, max_bytes)?;
    let mut file = std::fs::File::create(tmp).map_err(|e| DataError::io(tmp, e))?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| {
            download_error(url, format!("connection broke after {total} bytes ({e})"))
        })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > cap {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .map_err(|e| DataError::io(tmp, e))?;
    }
    check_length(url, total, announced, cap)?;
    file.sync_all().map_err(|e| DataError::io(tmp, e))?;
    Ok(hasher.finish())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn checksum_mismatch_message() {
        let err = check_sha256("train-images", "00", "ff").unwrap_err();
        assert_eq!(
            err.to_string(),
            "train-images: SHA-256 mismatch (expected 00, got ff); the file is corrupt or not the official one"
        );
        assert!(check_sha256("x", "AB", "ab").is_ok());
    }

    /// A one-shot HTTP server on loopback answering `count` requests with `body`, announcing
    /// `content_length` if given (else the body ends when the connection closes).
    pub(crate) fn serve(count: usize, body: Vec<u8>, content_length: Option<usize>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for _ in 0..count {
                let Ok((mut stream, _)) = listener.accept() else {
                    return;
                };
                let mut request = Vec::new();
                let mut buf = [0u8; 1024];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let mut head = String::from("HTTP/1.1 200 OK\r\nConnection: close\r\n");
                if let Some(n) = content_length {
                    head.push_str(&format!("Content-Length: {n}\r\n"));
                }
                head.push_str("\r\n");
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        format!("http://{addr}/")
    }

    /// Case 7 of issue #18: a download was held in memory whole and not capped.
    #[test]
    fn downloads_are_streamed_capped_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("model.bin");
        let body = vec![7u8; 5000];
        let sha = flint_io::fs::sha256_hex(&body);

        let url = serve(1, body.clone(), None);
        let msg = fetch_to_file_limited(&url, &dest, &sha, 1000)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "download of {url} failed: the download is larger than the 1000 bytes expected; stopped"
            )
        );
        let url = serve(1, body.clone(), Some(5000));
        let msg = fetch_to_file_limited(&url, &dest, &sha, 1000)
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            format!(
                "download of {url} failed: the server announces 5000 bytes, more than the 1000 expected"
            )
        );
        let url = serve(1, body.clone(), Some(5000));
        let msg = fetch_to_file(&url, &dest, "00").unwrap_err().to_string();
        assert!(msg.contains("SHA-256 mismatch (expected 00, got "), "{msg}");
        assert!(!dest.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        let url = serve(1, body.clone(), None);
        fetch_to_file_limited(&url, &dest, &sha, 5000).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), body);

        let url = serve(2, body.clone(), Some(5000));
        assert_eq!(fetch_bytes(&url, 5000).unwrap(), body);
        let msg = fetch_bytes(&url, 4999).unwrap_err().to_string();
        assert!(
            msg.ends_with("the server announces 5000 bytes, more than the 4999 expected"),
            "{msg}"
        );
    }

    #[test]
    fn unreachable_url_is_a_clear_error() {
        // Port 9 on loopback (discard) is closed here: the error must name the URL.
        let err = fetch_bytes("http://127.0.0.1:9/mnist.gz", 100).unwrap_err();
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
