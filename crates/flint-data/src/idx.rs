//! The IDX format of MNIST and Fashion-MNIST (`.gz` or raw), validated byte by byte.
//!
//! Layout: two zero bytes, an element-type byte, a dimension-count byte, one big-endian `u32`
//! per dimension, then the elements in row-major order. MNIST-style files store unsigned bytes
//! (type `0x08`); the reader insists on the exact length the header declares, so a truncated
//! download or a stray trailing byte is an error, never silently shorter data.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use flate2::read::MultiGzDecoder;

use flint_io::fs::open_regular;

use crate::error::{DataError, Result};
use crate::gzip::{DEFLATE_MAX_RATIO, gzip_error, is_gzip};

/// The element type code of unsigned bytes, the only one MNIST-style data sets use.
const UNSIGNED_BYTE: u8 = 0x08;
/// The most dimensions flint accepts: images are 3 (count, rows, cols), labels 1.
const MAX_DIMS: usize = 4;

/// A decoded IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// Dimensions, outermost first.
    pub dims: Vec<usize>,
    /// Elements in row-major order; `data.len()` is the product of `dims`.
    pub data: Vec<u8>,
}

/// How much unexpected data after an IDX array is inflated to count it before giving up.
const TRAILING_COUNT_LIMIT: u64 = 1 << 20;

/// Reads and validates an IDX file (gzip or raw), streamed: the header is read first, then
/// exactly the number of bytes it declares, then one more read checks that nothing follows.
///
/// Memory is bounded by what the file can hold: a raw file's header must match its size before
/// anything is allocated, and a gzip file's header may not declare more than deflate can expand
/// the file to (1032:1); the data is allocated as it arrives, so a header claiming gigabytes in
/// a short stream fails at the stream's end, not at the allocation.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let (file, size) = open_regular(path)?;
    let mut reader = BufReader::new(file.take(size));
    if is_gzip(reader.fill_buf().map_err(|e| DataError::io(path, e))?) {
        let limit = size.saturating_mul(DEFLATE_MAX_RATIO);
        read_idx_stream(
            MultiGzDecoder::new(reader),
            path,
            Stream::Gzip { size, limit },
        )
    } else {
        read_idx_stream(reader, path, Stream::Raw { size })
    }
}

/// What is known about a stream's length before reading it.
#[derive(Clone, Copy)]
enum Stream {
    /// An uncompressed file of `size` bytes.
    Raw { size: u64 },
    /// A gzip file of `size` bytes, which can inflate to at most `limit` bytes.
    Gzip { size: u64, limit: u64 },
}

fn read_idx_stream(mut reader: impl Read, path: &Path, stream: Stream) -> Result<IdxArray> {
    let read_error = |e: std::io::Error| match stream {
        Stream::Gzip { .. } => gzip_error(path, e),
        Stream::Raw { .. } => DataError::io(path, e),
    };
    let mut head = Vec::with_capacity(4 + 4 * MAX_DIMS);
    (&mut reader)
        .take(4)
        .read_to_end(&mut head)
        .map_err(read_error)?;
    let ndims = check_magic(&head, path)?;
    let header_len = 4 + 4 * ndims;
    (&mut reader)
        .take((header_len - 4) as u64)
        .read_to_end(&mut head)
        .map_err(read_error)?;
    let (dims, expected) = check_dims(&head, ndims, path)?;
    match stream {
        Stream::Raw { size } => {
            let actual = (size - header_len as u64) as usize;
            check_data_len(&dims, header_len, expected, actual, path)?;
        }
        Stream::Gzip { size, limit } => {
            if expected as u64 > limit {
                return Err(DataError::format(
                    path,
                    format!(
                        "file is truncated or corrupt: dimensions {} need {expected} data bytes, more than a {size}-byte gzip file can hold (deflate expands at most {DEFLATE_MAX_RATIO}:1)",
                        show_dims(&dims)
                    ),
                ));
            }
        }
    }
    // A raw file's data is allocated once (its size is known to be right); a gzip stream's as
    // it arrives (doubling), not up front from the header's claim.
    let mut data = Vec::with_capacity(match stream {
        Stream::Raw { .. } => expected,
        Stream::Gzip { .. } => expected.min(1 << 16),
    });
    (&mut reader)
        .take(expected as u64)
        .read_to_end(&mut data)
        .map_err(read_error)?;
    if data.len() < expected {
        check_data_len(&dims, header_len, expected, data.len(), path)?;
    }
    let trailing = std::io::copy(
        &mut (&mut reader).take(TRAILING_COUNT_LIMIT + 1),
        &mut std::io::sink(),
    )
    .map_err(read_error)?;
    if trailing > TRAILING_COUNT_LIMIT {
        return Err(DataError::format(
            path,
            format!(
                "file has more than {TRAILING_COUNT_LIMIT} unexpected bytes after the {expected} data bytes its header declares ({}); not read further",
                show_dims(&dims)
            ),
        ));
    }
    if trailing > 0 {
        check_data_len(
            &dims,
            header_len,
            expected,
            expected + trailing as usize,
            path,
        )?;
    }
    Ok(IdxArray { dims, data })
}

/// Validates and decodes IDX bytes; `path` is only used in error messages.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let ndims = check_magic(bytes, path)?;
    let header_len = 4 + 4 * ndims;
    let (dims, expected) = check_dims(&bytes[..header_len.min(bytes.len())], ndims, path)?;
    check_data_len(&dims, header_len, expected, bytes.len() - header_len, path)?;
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// Checks the first four bytes (magic, element type, dimension count); returns the count.
fn check_magic(bytes: &[u8], path: &Path) -> Result<usize> {
    if bytes.len() < 4 {
        return Err(DataError::format(
            path,
            format!(
                "file is truncated: {} bytes, an IDX header needs at least 4",
                bytes.len()
            ),
        ));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(DataError::format(
            path,
            format!(
                "not an IDX file: magic bytes are {:02x} {:02x} {:02x} {:02x}, expected 00 00 <type> <dims>",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
        ));
    }
    let dtype = bytes[2];
    if dtype != UNSIGNED_BYTE {
        return Err(DataError::format(
            path,
            format!(
                "unsupported IDX element type 0x{dtype:02x} ({}); MNIST-style data sets store unsigned bytes (0x08)",
                dtype_name(dtype)
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims == 0 || ndims > MAX_DIMS {
        return Err(DataError::format(
            path,
            format!("IDX header declares {ndims} dimensions; expected 1 to {MAX_DIMS}"),
        ));
    }
    Ok(ndims)
}

/// Decodes the dimensions of a header (`header` holds what could be read of it); returns them
/// and the number of data bytes they need.
fn check_dims(header: &[u8], ndims: usize, path: &Path) -> Result<(Vec<usize>, usize)> {
    let header_len = 4 + 4 * ndims;
    if header.len() < header_len {
        return Err(DataError::format(
            path,
            format!(
                "file is truncated: the header declares {ndims} dimensions ({header_len} bytes) but the file has {} bytes",
                header.len()
            ),
        ));
    }
    let dims: Vec<usize> = header[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::format(path, format!("dimensions {} overflow", show_dims(&dims)))
        })?;
    Ok((dims, expected))
}

/// Compares the data bytes found after the header with the number the header declares.
fn check_data_len(
    dims: &[usize],
    header_len: usize,
    expected: usize,
    actual: usize,
    path: &Path,
) -> Result<()> {
    if actual < expected {
        return Err(DataError::format(
            path,
            format!(
                "file is truncated: dimensions {} need {expected} data bytes after the {header_len}-byte header, found {actual}",
                show_dims(dims)
            ),
        ));
    }
    if actual > expected {
        return Err(DataError::format(
            path,
            format!(
                "file has {} unexpected bytes after the {expected} data bytes its header declares ({})",
                actual - expected,
                show_dims(dims)
            ),
        ));
    }
    Ok(())
}

/// Images of an IDX file: `(count, rows, cols, pixels)`.
pub fn read_idx_images(path: &Path) -> Result<(usize, usize, usize, Vec<u8>)> {
    let array = read_idx(path)?;
    match array.dims.as_slice() {
        &[count, rows, cols] => Ok((count, rows, cols, array.data)),
        dims => Err(DataError::format(
            path,
            format!(
                "expected an image file (3 dimensions: count x rows x cols), found {} dimension(s) [{}]{}",
                dims.len(),
                show_dims(dims),
                if dims.len() == 1 {
                    "; is this a label file?"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// Labels of an IDX file, each checked to be below `classes`.
pub fn read_idx_labels(path: &Path, classes: usize) -> Result<Vec<u8>> {
    let array = read_idx(path)?;
    if array.dims.len() != 1 {
        return Err(DataError::format(
            path,
            format!(
                "expected a label file (1 dimension), found {} dimensions [{}]{}",
                array.dims.len(),
                show_dims(&array.dims),
                if array.dims.len() == 3 {
                    "; is this an image file?"
                } else {
                    ""
                }
            ),
        ));
    }
    if let Some((index, &label)) = array
        .data
        .iter()
        .enumerate()
        .find(|&(_, &l)| l as usize >= classes)
    {
        return Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: label as usize,
            classes,
        });
    }
    Ok(array.data)
}

/// Encodes unsigned bytes as IDX (used by tests and by anyone writing subsets back out).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, UNSIGNED_BYTE, dims.len() as u8];
    for &d in dims {
        out.extend_from_slice(&(d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

fn show_dims(dims: &[usize]) -> String {
    dims.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

fn dtype_name(code: u8) -> &'static str {
    match code {
        0x08 => "u8",
        0x09 => "i8",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gzip::{read_maybe_gzip, sha256_maybe_gzip};
    use std::io::Write;

    fn path() -> &'static Path {
        Path::new("test.idx")
    }

    fn message(bytes: &[u8]) -> String {
        parse_idx(bytes, path()).unwrap_err().to_string()
    }

    #[test]
    fn decodes_a_valid_image_array() {
        let data: Vec<u8> = (0..24).collect();
        let array = parse_idx(&encode_idx(&[2, 3, 4], &data), path()).unwrap();
        assert_eq!(array.dims, vec![2, 3, 4]);
        assert_eq!(array.data, data);
    }

    #[test]
    fn too_short_for_a_header() {
        assert_eq!(
            message(&[0, 0]),
            "test.idx: file is truncated: 2 bytes, an IDX header needs at least 4"
        );
    }

    #[test]
    fn wrong_magic() {
        let msg = message(&[0x50, 0x4b, 3, 4, 0, 0, 0, 0]);
        assert!(
            msg.contains("not an IDX file: magic bytes are 50 4b 03 04"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_dtype() {
        let mut bytes = encode_idx(&[1], &[0]);
        bytes[2] = 0x0D;
        assert!(
            message(&bytes).contains("unsupported IDX element type 0x0d (f32)"),
            "{}",
            message(&bytes)
        );
    }

    #[test]
    fn zero_or_too_many_dimensions() {
        assert!(message(&[0, 0, 8, 0]).contains("declares 0 dimensions"));
        assert!(message(&[0, 0, 8, 9]).contains("declares 9 dimensions"));
    }

    #[test]
    fn truncated_header() {
        let msg = message(&[0, 0, 8, 3, 0, 0, 0, 1, 0, 0]);
        assert!(
            msg.contains("header declares 3 dimensions (16 bytes) but the file has 10 bytes"),
            "{msg}"
        );
    }

    #[test]
    fn truncated_data() {
        let bytes = encode_idx(&[2, 3, 4], &[0; 20]);
        let msg = message(&bytes);
        assert!(
            msg.contains("file is truncated: dimensions 2 x 3 x 4 need 24 data bytes after the 16-byte header, found 20"),
            "{msg}"
        );
    }

    #[test]
    fn trailing_bytes() {
        let bytes = encode_idx(&[2], &[0; 5]);
        let msg = message(&bytes);
        assert!(
            msg.contains("3 unexpected bytes after the 2 data bytes"),
            "{msg}"
        );
    }

    #[test]
    fn overflowing_dimensions() {
        let bytes = [
            0, 0, 8, 4, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255, 255,
            255,
        ];
        assert!(message(&bytes).contains("overflow"));
    }

    #[test]
    fn labels_out_of_range_and_wrong_rank() {
        let dir = tempfile::tempdir().unwrap();
        let labels = dir.path().join("labels");
        std::fs::write(&labels, encode_idx(&[4], &[1, 2, 10, 3])).unwrap();
        let msg = read_idx_labels(&labels, 10).unwrap_err().to_string();
        assert!(
            msg.ends_with("label 10 at index 2 is out of range (the data set has 10 classes)"),
            "{msg}"
        );

        let images = dir.path().join("images");
        std::fs::write(&images, encode_idx(&[1, 2, 2], &[0; 4])).unwrap();
        let msg = read_idx_labels(&images, 10).unwrap_err().to_string();
        assert!(msg.contains("expected a label file (1 dimension), found 3 dimensions [1 x 2 x 2]; is this an image file?"), "{msg}");
        let msg = read_idx_images(&labels).unwrap_err().to_string();
        assert!(
            msg.contains("expected an image file (3 dimensions: count x rows x cols), found 1 dimension(s) [4]; is this a label file?"),
            "{msg}"
        );
    }

    #[test]
    fn gzip_is_detected_by_content_and_truncation_reported() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx(&[2, 2, 2], &[1, 2, 3, 4, 5, 6, 7, 8]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&bytes).unwrap();
        let gz = gz.finish().unwrap();

        let whole = dir.path().join("no-extension");
        std::fs::write(&whole, &gz).unwrap();
        let (count, rows, cols, pixels) = read_idx_images(&whole).unwrap();
        assert_eq!((count, rows, cols), (2, 2, 2));
        assert_eq!(pixels, vec![1, 2, 3, 4, 5, 6, 7, 8]);

        let cut = dir.path().join("cut.gz");
        std::fs::write(&cut, &gz[..gz.len() - 6]).unwrap();
        let msg = read_idx(&cut).unwrap_err().to_string();
        assert!(
            msg.contains("cut.gz: gzip stream is truncated or corrupt"),
            "{msg}"
        );
    }

    fn gzip(parts: &[&[u8]]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        for part in parts {
            gz.write_all(part).unwrap();
        }
        gz.finish().unwrap()
    }

    /// Case 7 of issue #18: a 2 MB gzip bomb inflated to 3-4 GB before being refused, as
    /// "truncated or corrupt (out of memory)". Now inflation stops one MiB past the data the
    /// header declares, and the message says what is wrong.
    #[test]
    fn gzip_bomb_stops_after_the_declared_data() {
        let dir = tempfile::tempdir().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&encode_idx(&[2], &[1, 2])).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..16 {
            gz.write_all(&zeros).unwrap(); // 16 MiB of zeros, 16 kB compressed
        }
        let bomb = dir.path().join("bomb.gz");
        std::fs::write(&bomb, gz.finish().unwrap()).unwrap();
        let msg = read_idx(&bomb).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: file has more than 1048576 unexpected bytes after the 2 data bytes its header declares (2); not read further",
                bomb.display()
            )
        );
        let msg = read_maybe_gzip(&bomb, 1000).unwrap_err().to_string();
        assert!(
            msg.ends_with("bomb.gz: file decompresses to more than the 1000 bytes expected"),
            "{msg}"
        );
        assert_eq!(sha256_maybe_gzip(&bomb, 1000).unwrap(), None);

        // A few trailing bytes are counted exactly, as for a raw file.
        let small = dir.path().join("small.gz");
        std::fs::write(&small, gzip(&[&encode_idx(&[2], &[1, 2]), &[9; 3]])).unwrap();
        let msg = read_idx(&small).unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "file has 3 unexpected bytes after the 2 data bytes its header declares (2)"
            ),
            "{msg}"
        );
    }

    /// A header claiming 4e9 images in a short file is refused before anything is allocated.
    #[test]
    fn huge_claims_in_short_files_are_refused_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = encode_idx(&[1, 28, 28], &[0; 784]);
        bytes[4..8].copy_from_slice(&4_000_000_000u32.to_be_bytes());
        let raw = dir.path().join("raw-idx3");
        std::fs::write(&raw, &bytes).unwrap();
        let msg = read_idx(&raw).unwrap_err().to_string();
        assert!(
            msg.ends_with("file is truncated: dimensions 4000000000 x 28 x 28 need 3136000000000 data bytes after the 16-byte header, found 784"),
            "{msg}"
        );
        let gz = dir.path().join("claim.gz");
        let compressed = gzip(&[&bytes]);
        std::fs::write(&gz, &compressed).unwrap();
        let msg = read_idx(&gz).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: file is truncated or corrupt: dimensions 4000000000 x 28 x 28 need 3136000000000 data bytes, more than a {}-byte gzip file can hold (deflate expands at most 1032:1)",
                gz.display(),
                compressed.len()
            )
        );
        // A claim within deflate's reach but beyond the stream: truncated, found what was there.
        bytes[4..8].copy_from_slice(&2u32.to_be_bytes());
        std::fs::write(&gz, gzip(&[&bytes])).unwrap();
        let msg = read_idx(&gz).unwrap_err().to_string();
        assert!(
            msg.ends_with("file is truncated: dimensions 2 x 28 x 28 need 1568 data bytes after the 16-byte header, found 784"),
            "{msg}"
        );
    }

    #[test]
    fn streamed_reading_matches_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = encode_idx(&[3, 2, 2], &(0..12).collect::<Vec<u8>>());
        let raw = dir.path().join("raw");
        std::fs::write(&raw, &bytes).unwrap();
        let gz = dir.path().join("gz");
        std::fs::write(&gz, gzip(&[&bytes])).unwrap();
        let parsed = parse_idx(&bytes, &raw).unwrap();
        assert_eq!(read_idx(&raw).unwrap(), parsed);
        assert_eq!(read_idx(&gz).unwrap(), parsed);
        assert_eq!(read_maybe_gzip(&gz, 28).unwrap(), bytes);
        assert_eq!(read_maybe_gzip(&raw, 28).unwrap(), bytes);
        assert!(read_maybe_gzip(&raw, 27).is_err());
        let sha = flint_io::fs::sha256_hex(&bytes);
        assert_eq!(sha256_maybe_gzip(&gz, 28).unwrap(), Some(sha.clone()));
        assert_eq!(sha256_maybe_gzip(&raw, 28).unwrap(), Some(sha));
        assert_eq!(sha256_maybe_gzip(&raw, 27).unwrap(), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_device_is_refused_without_reading() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("train-images-idx3-ubyte");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let msg = read_idx(&link).unwrap_err().to_string();
        assert!(
            msg.ends_with("a character device, not a regular file: flint reads only regular files"),
            "{msg}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let msg = read_idx(Path::new("/nonexistent/flint.idx"))
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with("/nonexistent/flint.idx: No such file"),
            "{msg}"
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever the bytes, the parser answers with a value or an error, never a panic.
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_idx(&bytes, path());
        }

        /// Any prefix shorter than a valid file is rejected.
        #[test]
        fn every_truncation_is_an_error(cut in 0usize..40) {
            let bytes = encode_idx(&[2, 2, 6], &[7; 24]);
            let cut = cut.min(bytes.len() - 1);
            proptest::prop_assert!(parse_idx(&bytes[..cut], path()).is_err());
        }
    }
}
