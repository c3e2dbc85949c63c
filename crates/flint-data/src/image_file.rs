//! One image file, read and decoded with bounds: the checks every image flint decodes passes.
//!
//! - Only regular files are read ([`crate::files`]), and no more than [`MAX_IMAGE_FILE_BYTES`].
//! - The format is recognised by content (PNG, JPEG, GIF); a file of another format, or none,
//!   is refused with a sentence saying which.
//! - The dimensions are read from the header before anything is decoded: an image whose long
//!   side is more than [`MAX_ASPECT_RATIO`] times its short side is refused (scaling its short
//!   side to 256 for a model would make a 1 x 2,000,000 PNG of 8 kB into an 8 GB buffer), as is
//!   one of more than [`MAX_PIXELS`] pixels; the decoder itself runs under `image`'s allocation
//!   limit.
//! - A file that ends before its format's end marker (a JPEG without its end-of-image marker
//!   `FF D9`, a PNG without its `IEND` chunk) decodes, as other programs show it, but comes with
//!   an [`ImageWarning`]: part of the picture may be missing.

use std::fmt;
use std::fs::File;
use std::io::{Cursor, Read};
use std::path::Path;

use image::{ImageFormat, ImageReader, Limits, RgbImage};

use crate::error::{DataError, Result};
use crate::image_end::{jpeg_reaches_end, png_reaches_end};
use crate::image_folder::SkipKind;
use flint_io::fs::not_regular_reason;

/// The largest image file read: 256 MiB.
pub const MAX_IMAGE_FILE_BYTES: u64 = 256 << 20;

/// The most an image's long side may exceed its short side (`long <= 100 * short`).
pub const MAX_ASPECT_RATIO: u32 = 100;

/// The most pixels an image may have: 2^26 (about 67 megapixels, 8192 x 8192).
pub const MAX_PIXELS: u64 = 1 << 26;

/// The most pixels one byte of a whole PNG, JPEG or GIF file can encode: a 1-bit PNG row
/// deflated at deflate's limit (8 pixels a byte x 1032); GIF's LZW and JPEG's at least one DC
/// code per 8x8 block stay well below. A header claiming more pixels than its file can encode
/// is refused before the decoder allocates for them (a truncated file could otherwise make a
/// few hundred bytes into hundreds of megabytes of filled-in picture).
const PIXELS_PER_FILE_BYTE: u64 = 8 * 1032;

/// Something wrong with an image that still decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImageWarning {
    /// The file ends before its format's end marker: part of the picture may be missing (a
    /// JPEG decoder fills it in with grey), so what a model sees may not be the whole image.
    Truncated {
        /// `"JPEG"` or `"PNG"`.
        format: &'static str,
        /// The end marker that was not found.
        missing: &'static str,
    },
}

impl fmt::Display for ImageWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated { format, missing } => write!(
                f,
                "the {format} file is truncated (it ends before its {missing}): the picture may be incomplete"
            ),
        }
    }
}

/// A decoded image (or the values made from it) and what was wrong with the file, if anything.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded<T> {
    /// The image, or the values made from it.
    pub value: T,
    /// Set when the file decoded but is damaged (truncated): the caller should tell the user.
    pub warning: Option<ImageWarning>,
}

/// Why an image file cannot be used: an I/O error, or a refusal with its kind and a sentence.
pub(crate) enum Problem {
    Io(std::io::Error),
    Refused(SkipKind, String),
}

impl Problem {
    fn refused(kind: SkipKind, reason: impl Into<String>) -> Self {
        Self::Refused(kind, reason.into())
    }

    /// As a skipped file's kind and reason.
    pub(crate) fn into_skip(self) -> (SkipKind, String) {
        match self {
            Self::Io(e) => (SkipKind::Unreadable, format!("could not be read: {e}")),
            Self::Refused(kind, reason) => (kind, reason),
        }
    }

    fn into_error(self, path: &Path) -> DataError {
        match self {
            Self::Io(e) => DataError::io(path, e),
            Self::Refused(_, reason) => DataError::Image {
                path: path.to_path_buf(),
                reason,
            },
        }
    }
}

/// An image file read into memory, its format recognised and its header checked.
pub(crate) struct ImageBytes {
    bytes: Vec<u8>,
    format: ImageFormat,
    /// Width and height from the header, once checked.
    dims: (u32, u32),
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        ImageFormat::Bmp => "BMP",
        ImageFormat::Tiff => "TIFF",
        ImageFormat::Ico => "ICO",
        ImageFormat::Avif => "AVIF",
        ImageFormat::Pnm => "PNM",
        ImageFormat::Tga => "TGA",
        ImageFormat::Hdr => "HDR",
        ImageFormat::OpenExr => "OpenEXR",
        ImageFormat::Qoi => "QOI",
        _ => "other",
    }
}

/// Reads `path` if it is a regular file holding a PNG, JPEG or GIF of acceptable dimensions.
pub(crate) fn read_image(path: &Path) -> std::result::Result<ImageBytes, Problem> {
    let meta = std::fs::metadata(path).map_err(Problem::Io)?;
    if !meta.is_file() {
        return Err(Problem::refused(
            SkipKind::SpecialFile,
            not_regular_reason(meta.file_type()),
        ));
    }
    let file = File::open(path).map_err(Problem::Io)?;
    let meta = file.metadata().map_err(Problem::Io)?;
    if !meta.is_file() {
        return Err(Problem::refused(
            SkipKind::SpecialFile,
            not_regular_reason(meta.file_type()),
        ));
    }
    let size = meta.len();
    if size == 0 {
        return Err(Problem::refused(SkipKind::Empty, "empty file (0 bytes)"));
    }
    if size > MAX_IMAGE_FILE_BYTES {
        return Err(Problem::refused(
            SkipKind::TooLarge,
            format!(
                "file is {size} bytes; flint reads image files of at most {} MiB",
                MAX_IMAGE_FILE_BYTES >> 20
            ),
        ));
    }
    let mut reader = file.take(size);
    let mut bytes = Vec::with_capacity(16);
    (&mut reader)
        .take(16)
        .read_to_end(&mut bytes)
        .map_err(Problem::Io)?;
    let format = match image::guess_format(&bytes) {
        Ok(f @ (ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Gif)) => f,
        Ok(other) => {
            return Err(Problem::refused(
                SkipKind::UnsupportedFormat,
                format!(
                    "a {} image: flint decodes PNG, JPEG and GIF only",
                    format_name(other)
                ),
            ));
        }
        Err(_) => {
            return Err(Problem::refused(
                SkipKind::NotAnImage,
                "not an image: the content is not PNG, JPEG or GIF",
            ));
        }
    };
    bytes.reserve(size as usize - bytes.len());
    reader.read_to_end(&mut bytes).map_err(Problem::Io)?;
    let mut image = ImageBytes {
        bytes,
        format,
        dims: (0, 0),
    };
    image.dims = image.dimensions()?;
    Ok(image)
}

/// The decoder's allocation limit for the header's `w x h`: room for the picture twice at
/// 16-bit RGBA (the output, and a frame buffer), plus 4 MiB of tables. A GIF frame placed far
/// outside its 24 x 16 screen asked for 88 MB from a 1 kB file before this limit (fuzzing).
fn limits(w: u32, h: u32) -> Limits {
    let mut limits = Limits::default();
    limits.max_alloc = Some(16 * w as u64 * h as u64 + (4 << 20));
    limits
}

impl ImageBytes {
    /// A reader under `limits`.
    fn reader_with(&self, limits: Limits) -> ImageReader<Cursor<&[u8]>> {
        let mut reader = ImageReader::with_format(Cursor::new(self.bytes.as_slice()), self.format);
        reader.limits(limits);
        reader
    }

    /// A reader for the header: the largest image accepted bounds it.
    fn reader(&self) -> ImageReader<Cursor<&[u8]>> {
        self.reader_with(limits(1, MAX_PIXELS as u32))
    }

    fn name(&self) -> &'static str {
        format_name(self.format)
    }

    /// Width and height from the header, checked against the aspect-ratio and pixel limits.
    fn dimensions(&self) -> std::result::Result<(u32, u32), Problem> {
        let (w, h) = self.reader().into_dimensions().map_err(|e| match e {
            image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Problem::refused(
                    SkipKind::Truncated,
                    format!(
                        "the {} file is truncated: it ends inside its header",
                        self.name()
                    ),
                )
            }
            e => Problem::refused(
                SkipKind::Damaged,
                format!("damaged {} header ({e})", self.name()),
            ),
        })?;
        check_dimensions(w, h)?;
        let (pixels, size) = (w as u64 * h as u64, self.bytes.len() as u64);
        if pixels > PIXELS_PER_FILE_BYTE * size + 4096 {
            return Err(Problem::refused(
                SkipKind::Damaged,
                format!(
                    "the header claims {w}x{h} pixels, more than a {size}-byte {} file can hold: the file is truncated or damaged",
                    self.name()
                ),
            ));
        }
        Ok((w, h))
    }

    /// The warning for a file that ends before its format's end marker.
    pub(crate) fn truncation(&self) -> Option<ImageWarning> {
        let (complete, missing) = match self.format {
            ImageFormat::Jpeg => (jpeg_reaches_end(&self.bytes), "end-of-image marker FF D9"),
            ImageFormat::Png => (png_reaches_end(&self.bytes), "IEND chunk"),
            _ => (true, ""),
        };
        (!complete).then_some(ImageWarning::Truncated {
            format: self.name(),
            missing,
        })
    }

    /// Decodes to 8-bit RGB (the first frame of a GIF).
    pub(crate) fn decode(&self) -> std::result::Result<RgbImage, Problem> {
        let (w, h) = self.dims;
        let image = self.reader_with(limits(w, h)).decode().map_err(|e| match e {
            image::ImageError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                Problem::refused(
                    SkipKind::Truncated,
                    format!(
                        "the {} file is truncated: it ends before its image data does",
                        self.name()
                    ),
                )
            }
            image::ImageError::Limits(e) => Problem::refused(
                SkipKind::Damaged,
                format!(
                    "decoding the {} image would need more memory than a {w}x{h} picture can ({e}): the file is damaged",
                    self.name()
                ),
            ),
            e => Problem::refused(
                SkipKind::Damaged,
                format!("could not decode the {} image ({e})", self.name()),
            ),
        })?;
        Ok(image.into_rgb8())
    }
}

/// Refuses degenerate dimensions: zero, too thin, too many pixels.
fn check_dimensions(w: u32, h: u32) -> std::result::Result<(), Problem> {
    if w == 0 || h == 0 {
        return Err(Problem::refused(
            SkipKind::Damaged,
            format!("image has size {w}x{h}"),
        ));
    }
    let (long, short) = (w.max(h) as u64, w.min(h) as u64);
    if long > MAX_ASPECT_RATIO as u64 * short {
        return Err(Problem::refused(
            SkipKind::TooLarge,
            format!(
                "image is {w}x{h} pixels, an aspect ratio of {}:1; flint accepts at most {MAX_ASPECT_RATIO}:1, since resizing its short side for a model would make a huge image",
                (long + short / 2) / short
            ),
        ));
    }
    let pixels = w as u64 * h as u64;
    if pixels > MAX_PIXELS {
        return Err(Problem::refused(
            SkipKind::TooLarge,
            format!(
                "image is {w}x{h} pixels ({} megapixels); flint decodes at most {} megapixels",
                pixels / 1_000_000,
                MAX_PIXELS / 1_000_000
            ),
        ));
    }
    Ok(())
}

/// Decodes an image file to 8-bit RGB (the first frame of a GIF), with the checks of the
/// [module docs](self), and a warning when the file is truncated.
pub fn load_rgb_checked(path: &Path) -> Result<Decoded<RgbImage>> {
    let file = read_image(path).map_err(|p| p.into_error(path))?;
    let value = file.decode().map_err(|p| p.into_error(path))?;
    Ok(Decoded {
        value,
        warning: file.truncation(),
    })
}

/// Decodes an image file to 8-bit RGB (the first frame of a GIF). A truncated file decodes
/// without a word: use [`load_rgb_checked`] to hear about it.
pub fn load_rgb(path: &Path) -> Result<RgbImage> {
    load_rgb_checked(path).map(|d| d.value)
}

/// Decodes an image file for a small model: grey (luma) or RGB, resized to `size x size`
/// (bilinear), scaled to `[0, 1]`, `[channels, size, size]` order. `channels` must be 1 or 3.
/// A truncated file decodes without a word: use [`load_for_model_checked`] to hear about it.
pub fn load_for_model(path: &Path, channels: usize, size: usize) -> Result<Vec<f32>> {
    load_for_model_checked(path, channels, size).map(|d| d.value)
}

/// [`load_for_model`], with a warning when the file is truncated.
pub fn load_for_model_checked(
    path: &Path,
    channels: usize,
    size: usize,
) -> Result<Decoded<Vec<f32>>> {
    if channels != 1 && channels != 3 {
        return Err(DataError::invalid(format!(
            "models take 1 (grey) or 3 (RGB) channels, not {channels}"
        )));
    }
    if size == 0 || size > u32::MAX as usize {
        return Err(DataError::invalid(format!(
            "image size must be positive and fit in 32 bits, got {size}"
        )));
    }
    let Decoded {
        value: rgb,
        warning,
    } = load_rgb_checked(path)?;
    let resized = image::imageops::resize(
        &rgb,
        size as u32,
        size as u32,
        image::imageops::FilterType::Triangle,
    );
    let value = if channels == 3 {
        crate::transform::to_chw(&resized)
    } else {
        let grey = image::DynamicImage::ImageRgb8(resized).to_luma8();
        grey.pixels().map(|p| p[0] as f32 / 255.0).collect()
    };
    Ok(Decoded { value, warning })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(img: &RgbImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn encode_dynamic(img: &image::DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, format).unwrap();
        out.into_inner()
    }

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 7) as u8, (y * 5) as u8, 99]))
    }

    #[test]
    fn jpeg_end_is_found_through_the_marker_structure() {
        let jpeg = encode(&gradient(40, 30), ImageFormat::Jpeg);
        assert!(jpeg_reaches_end(&jpeg));
        // Appended data (a camera's trailer) does not hide the end.
        let mut trailer = jpeg.clone();
        trailer.extend_from_slice(b"trailing camera data \xff\x00\x12");
        assert!(jpeg_reaches_end(&trailer));
        // Every cut before the marker is truncated.
        for cut in [jpeg.len() - 1, jpeg.len() - 2, jpeg.len() / 2, 10, 2] {
            assert!(!jpeg_reaches_end(&jpeg[..cut]), "cut at {cut}");
        }
        // An FF D9 inside a segment (a comment) is not the end.
        let mut fake = vec![0xFF, 0xD8, 0xFF, 0xFE, 0x00, 0x06, 0xFF, 0xD9, 0x00, 0x00];
        assert!(!jpeg_reaches_end(&fake));
        fake.extend_from_slice(&[0xFF, 0xD9]);
        assert!(jpeg_reaches_end(&fake));
    }

    #[test]
    fn png_end_is_the_iend_chunk() {
        let png = encode(&gradient(20, 20), ImageFormat::Png);
        assert!(png_reaches_end(&png));
        for cut in [png.len() - 1, png.len() - 12, png.len() / 2, 9] {
            assert!(!png_reaches_end(&png[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn truncated_jpeg_decodes_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let jpeg = encode(&gradient(64, 48), ImageFormat::Jpeg);
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        let decoded = load_rgb_checked(&whole).unwrap();
        assert_eq!(decoded.value.dimensions(), (64, 48));
        assert_eq!(decoded.warning, None);

        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &jpeg[..jpeg.len() * 2 / 3]).unwrap();
        let decoded = load_rgb_checked(&cut).unwrap();
        assert_eq!(decoded.value.dimensions(), (64, 48));
        let warning = decoded.warning.expect("a truncated JPEG must warn");
        assert_eq!(
            warning.to_string(),
            "the JPEG file is truncated (it ends before its end-of-image marker FF D9): the picture may be incomplete"
        );
        // The old entry points still decode it, silently.
        assert_eq!(load_rgb(&cut).unwrap().dimensions(), (64, 48));
        let model = load_for_model_checked(&cut, 1, 8).unwrap();
        assert_eq!(model.value.len(), 64);
        assert!(model.warning.is_some());
    }

    #[test]
    fn truncated_png_is_an_error_or_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let png = encode(&gradient(64, 48), ImageFormat::Png);
        // Cut inside the image data: the decoder fails, with the file named.
        let cut = dir.path().join("cut.png");
        std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
        let msg = load_rgb_checked(&cut).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: the PNG file is truncated: it ends before its image data does",
                cut.display()
            )
        );
        // Cut inside the IEND chunk: the decoder is content, the file is not whole.
        let no_end = dir.path().join("no-end.png");
        std::fs::write(&no_end, &png[..png.len() - 2]).unwrap();
        let decoded = load_rgb_checked(&no_end).unwrap();
        assert_eq!(
            decoded.warning.unwrap().to_string(),
            "the PNG file is truncated (it ends before its IEND chunk): the picture may be incomplete"
        );
    }

    #[test]
    fn thin_and_huge_images_are_refused_from_the_header() {
        let dir = tempfile::tempdir().unwrap();
        let thin = dir.path().join("thin.png");
        image::GrayImage::new(1, 2_000_000).save(&thin).unwrap();
        let msg = load_rgb_checked(&thin).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: image is 1x2000000 pixels, an aspect ratio of 2000000:1; flint accepts at most 100:1, since resizing its short side for a model would make a huge image",
                thin.display()
            )
        );
        assert!(load_for_model(&thin, 1, 28).is_err());
        // Exactly 100:1 is accepted.
        let ok = dir.path().join("ok.png");
        image::GrayImage::new(3, 300).save(&ok).unwrap();
        assert_eq!(load_rgb(&ok).unwrap().dimensions(), (3, 300));

        // A header claiming 60000 x 60000 pixels (a 12-byte IDAT): refused before decoding.
        let mut png = encode(&gradient(1, 1), ImageFormat::Png);
        png[16..20].copy_from_slice(&60_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&60_000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let huge = dir.path().join("huge.png");
        std::fs::write(&huge, &png).unwrap();
        let msg = load_rgb(&huge).unwrap_err().to_string();
        assert!(
            msg.ends_with(
                "image is 60000x60000 pixels (3600 megapixels); flint decodes at most 67 megapixels"
            ),
            "{msg}"
        );
    }

    #[test]
    fn headers_claiming_more_than_the_file_holds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        // A 16 x 16 JPEG whose frame header says 4000 x 4000: 16 megapixels from 700 bytes,
        // which the decoder would fill in as a truncated image.
        let mut jpeg = encode(&gradient(16, 16), ImageFormat::Jpeg);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        jpeg[sof + 5..sof + 7].copy_from_slice(&4000u16.to_be_bytes());
        jpeg[sof + 7..sof + 9].copy_from_slice(&4000u16.to_be_bytes());
        let lie = dir.path().join("lie.jpg");
        std::fs::write(&lie, &jpeg).unwrap();
        let msg = load_rgb(&lie).unwrap_err().to_string();
        assert_eq!(
            msg,
            format!(
                "{}: the header claims 4000x4000 pixels, more than a {}-byte JPEG file can hold: the file is truncated or damaged",
                lie.display(),
                jpeg.len()
            )
        );
    }

    /// Found by fuzzing: a 1 kB GIF whose first frame sits at (20495, 4275) with size
    /// 10320 x 2127, on a 24 x 16 screen, made the decoder allocate 88 MB.
    #[test]
    fn a_gif_frame_larger_than_its_screen_is_refused_before_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let img = image::DynamicImage::ImageRgb8(gradient(24, 16));
        let mut gif = encode_dynamic(&img, ImageFormat::Gif);
        // The image descriptor: after the header, the global colour table and the extensions.
        let mut at = 13;
        if gif[10] & 0x80 != 0 {
            at += 3 << ((gif[10] & 7) + 1);
        }
        while gif[at] == 0x21 {
            at += 2;
            while gif[at] != 0 {
                at += gif[at] as usize + 1;
            }
            at += 1;
        }
        assert_eq!(gif[at], 0x2C);
        for (i, v) in [20495u16, 4275, 10320, 2127].iter().enumerate() {
            gif[at + 1 + 2 * i..at + 3 + 2 * i].copy_from_slice(&v.to_le_bytes());
        }
        let path = dir.path().join("frame.gif");
        std::fs::write(&path, &gif).unwrap();
        let msg = load_rgb(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with(&format!(
                "{}: decoding the GIF image would need more memory than a 24x16 picture can (",
                path.display()
            )),
            "{msg}"
        );
    }

    #[test]
    fn non_images_name_what_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 5] = [
            ("empty.jpg", b"", "empty file (0 bytes)"),
            (
                "text.png",
                b"hello, not a picture",
                "not an image: the content is not PNG, JPEG or GIF",
            ),
            (
                "bitmap.bmp",
                b"BM\x00\x00\x00\x00\x00\x00\x00\x00\x36\x00\x00\x00",
                "a BMP image: flint decodes PNG, JPEG and GIF only",
            ),
            ("header.png",
                b"\x89PNG\r\n\x1a\n",
                "the PNG file is truncated: it ends inside its header",
            ),
            (
                "chunk.png",
                b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDX\x00\x00\x00\x01\x00\x00\x00\x01\x08\x00\x00\x00\x00\x00\x00\x00\x00",
                "damaged PNG header (",
            ),
        ];
        for (name, bytes, reason) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let msg = load_rgb(&path).unwrap_err().to_string();
            assert!(
                msg.starts_with(&format!("{}: {reason}", path.display())),
                "{msg}"
            );
        }
        let msg = load_rgb(dir.path()).unwrap_err().to_string();
        assert!(msg.ends_with("a folder, not a regular file: flint reads only regular files"));
    }
}
