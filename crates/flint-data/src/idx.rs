//! The IDX format of MNIST and Fashion-MNIST (`.gz` or raw), validated byte by byte.
//!
//! Layout: two zero bytes, an element-type byte, a dimension-count byte, one big-endian `u32`
//! per dimension, then the elements in row-major order. MNIST-style files store unsigned bytes
//! (type `0x08`); the reader insists on the exact length the header declares, so a truncated
//! download or a stray trailing byte is an error, never silently shorter data.

use std::io::Read;
use std::path::Path;

use crate::error::{DataError, Result};

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

/// Reads a whole file, transparently decompressing gzip (detected by its magic bytes, not the
/// file name, so a `.gz` that was already unpacked by a browser still works).
pub fn read_maybe_gzip(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::with_capacity(raw.len() * 4);
        flate2::read::MultiGzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::format(path, format!("gzip stream is truncated or corrupt ({e})"))
            })?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Reads and validates an IDX file (gzip or raw).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gzip(path)?;
    parse_idx(&bytes, path)
}

/// Validates and decodes IDX bytes; `path` is only used in error messages.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
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
    let header_len = 4 + 4 * ndims;
    if bytes.len() < header_len {
        return Err(DataError::format(
            path,
            format!(
                "file is truncated: the header declares {ndims} dimensions ({header_len} bytes) but the file has {} bytes",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = bytes[4..header_len]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            DataError::format(path, format!("dimensions {} overflow", show_dims(&dims)))
        })?;
    let actual = bytes.len() - header_len;
    if actual < expected {
        return Err(DataError::format(
            path,
            format!(
                "file is truncated: dimensions {} need {expected} data bytes after the {header_len}-byte header, found {actual}",
                show_dims(&dims)
            ),
        ));
    }
    if actual > expected {
        return Err(DataError::format(
            path,
            format!(
                "file has {} unexpected bytes after the {expected} data bytes its header declares ({})",
                actual - expected,
                show_dims(&dims)
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
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
