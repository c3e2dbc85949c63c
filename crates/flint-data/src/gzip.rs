//! Files that may be gzip-compressed (MNIST's `.gz` downloads, or the same files unpacked),
//! read or hashed without ever producing more bytes than the caller expects.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flint_io::fs::open_regular;

use crate::error::{DataError, Result};

/// The most a deflate stream can expand: 1032 output bytes per input byte (zlib's documented
/// limit). A gzip file's header claiming more than this allows is refused before inflating.
pub(crate) const DEFLATE_MAX_RATIO: u64 = 1032;
pub(crate) fn is_gzip(head: &[u8]) -> bool {
    head.starts_with(&[0x1f, 0x8b])
}

/// Reads a whole file, transparently decompressing gzip (detected by its magic bytes, not the
/// file name, so a `.gz` that was already unpacked by a browser still works).
///
/// At most `max_len` bytes are produced: a file, or a gzip stream, holding more is refused as
/// soon as the limit is passed, so a small "gzip bomb" cannot fill memory.
pub fn read_maybe_gzip(path: &Path, max_len: u64) -> Result<Vec<u8>> {
    let (file, size) = open_regular(path)?;
    let mut reader = BufReader::new(file.take(size));
    let head = reader.fill_buf().map_err(|e| DataError::io(path, e))?;
    if !is_gzip(head) {
        if size > max_len {
            return Err(too_long(path, max_len, "is"));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| DataError::io(path, e))?;
        return Ok(bytes);
    }
    let mut out = Vec::new();
    MultiGzDecoder::new(reader)
        .take(max_len.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| gzip_error(path, e))?;
    if out.len() as u64 > max_len {
        return Err(too_long(path, max_len, "decompresses to"));
    }
    Ok(out)
}

fn too_long(path: &Path, max_len: u64, verb: &str) -> DataError {
    DataError::format(
        path,
        format!("file {verb} more than the {max_len} bytes expected"),
    )
}

pub(crate) fn gzip_error(path: &Path, e: std::io::Error) -> DataError {
    DataError::format(path, format!("gzip stream is truncated or corrupt ({e})"))
}

/// Hex SHA-256 of a file's content, decompressed if it is gzip, streamed (constant memory).
/// Returns `None` when the content is longer than `max_len` bytes (it cannot be the expected
/// file); inflation stops there, so a gzip bomb costs no more than `max_len` bytes of work.
pub fn sha256_maybe_gzip(path: &Path, max_len: u64) -> Result<Option<String>> {
    let (file, size) = open_regular(path)?;
    let mut reader = BufReader::new(file.take(size));
    let gz = is_gzip(reader.fill_buf().map_err(|e| DataError::io(path, e))?);
    let mut content: Box<dyn Read> = if gz {
        Box::new(MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    let mut hasher = flint_io::fs::Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = content.read(&mut buf).map_err(|e| {
            if gz {
                gzip_error(path, e)
            } else {
                DataError::io(path, e)
            }
        })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > max_len {
            return Ok(None);
        }
        hasher.update(&buf[..n]);
    }
    Ok(Some(hasher.finish()))
}
