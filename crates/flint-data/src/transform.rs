//! Image transforms with torchvision's semantics: resize-shorter-side, centre crop,
//! random-resized crop, horizontal flip, per-channel normalisation, and pad-and-crop for
//! small images.

use image::RgbImage;
use rand::{Rng, RngExt};

use crate::error::{DataError, Result};
use crate::image_file::MAX_ASPECT_RATIO;

/// Per-channel normalisation `(x - mean) / std`, applied to pixels scaled to `[0, 1]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalize {
    mean: Vec<f32>,
    std: Vec<f32>,
}

impl Normalize {
    /// ImageNet statistics (torchvision's pretrained models).
    pub fn imagenet() -> Self {
        Self {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        }
    }

    /// Custom statistics, one value per channel; every `std` must be positive and finite.
    pub fn new(mean: Vec<f32>, std: Vec<f32>) -> Result<Self> {
        if mean.is_empty() || mean.len() != std.len() {
            return Err(DataError::invalid(format!(
                "normalisation needs one mean and one std per channel, got {} means and {} stds",
                mean.len(),
                std.len()
            )));
        }
        if let Some(s) = std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return Err(DataError::invalid(format!(
                "normalisation std must be positive and finite, got {s}"
            )));
        }
        if let Some(m) = mean.iter().find(|m| !m.is_finite()) {
            return Err(DataError::invalid(format!(
                "normalisation mean must be finite, got {m}"
            )));
        }
        Ok(Self { mean, std })
    }

    /// The per-channel means.
    pub fn mean(&self) -> &[f32] {
        &self.mean
    }

    /// The per-channel standard deviations.
    pub fn std(&self) -> &[f32] {
        &self.std
    }

    /// Normalises a `[C, H, W]` buffer in place.
    ///
    /// # Panics
    /// If the buffer's channel count differs from the normaliser's (a programming error; the
    /// data sets check this when they are built).
    pub fn apply(&self, chw: &mut [f32], channels: usize) {
        assert_eq!(
            channels,
            self.mean.len(),
            "normaliser has {} channels, image has {channels}",
            self.mean.len()
        );
        let plane = chw.len() / channels;
        for (c, values) in chw.chunks_mut(plane).enumerate() {
            let (m, inv) = (self.mean[c], 1.0 / self.std[c]);
            for v in values {
                *v = (*v - m) * inv;
            }
        }
    }
}

/// Resizes so the shorter side is `size`, keeping the aspect ratio (torchvision's
/// `Resize(size)`: the longer side is `floor(size * long / short)`), bilinear with antialiasing.
///
/// The longer side is capped at [`MAX_ASPECT_RATIO`] times `size` (and at `u32::MAX`), so a
/// degenerate image (1 x 2,000,000 pixels) cannot ask for gigabytes; images flint decodes are
/// refused beyond that ratio before they get here, so for them the cap never applies.
pub fn resize_shorter_side(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w == 0 || h == 0 {
        return RgbImage::new(size, size);
    }
    let longer = |long: u32, short: u32| {
        let exact = size as u64 * long as u64 / short as u64;
        exact
            .min(size as u64 * MAX_ASPECT_RATIO as u64)
            .min(u32::MAX as u64) as u32
    };
    let (nw, nh) = if w <= h {
        (size, longer(h, w))
    } else {
        (longer(w, h), size)
    };
    if (nw, nh) == (w, h) {
        return img.clone();
    }
    resize_window(img, (0, 0, w, h), nw.max(1), nh.max(1))
}

/// The taps of a 1-D resampling from `in_len` to `out_len` values with the triangle (bilinear)
/// filter, widened by the scale when shrinking (antialiasing), as PIL's `resize(BILINEAR)`,
/// which torchvision's transforms call, computes them: output `i` is centred on source position
/// `(i + 0.5) * scale`, reads `count` source values from `start[i]` with `weights[i * taps..]`
/// (summing to 1).
struct Taps {
    start: Vec<usize>,
    count: Vec<usize>,
    weights: Vec<f32>,
    taps: usize,
}

impl Taps {
    fn new(in_len: usize, out_len: usize) -> Self {
        let scale = in_len as f64 / out_len as f64;
        let filter_scale = scale.max(1.0);
        let support = filter_scale; // the triangle filter's support is 1
        let taps = (support.ceil() as usize) * 2 + 1;
        let mut start = Vec::with_capacity(out_len);
        let mut count = Vec::with_capacity(out_len);
        let mut weights = vec![0.0f32; out_len * taps];
        for i in 0..out_len {
            let center = (i as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5).floor().max(0.0) as usize).min(in_len - 1);
            let hi = ((center + support + 0.5).floor() as usize).clamp(lo + 1, in_len);
            let n = (hi - lo).min(taps);
            let row = &mut weights[i * taps..][..n];
            let mut sum = 0.0f32;
            for (k, w) in row.iter_mut().enumerate() {
                let x = ((lo + k) as f64 - center + 0.5) / filter_scale;
                *w = (1.0 - x.abs()).max(0.0) as f32;
                sum += *w;
            }
            for w in row.iter_mut() {
                *w = if sum > 0.0 { *w / sum } else { 1.0 / n as f32 };
            }
            start.push(lo);
            count.push(n);
        }
        Self {
            start,
            count,
            weights,
            taps,
        }
    }

    fn of(&self, i: usize) -> (usize, &[f32]) {
        (
            self.start[i],
            &self.weights[i * self.taps..][..self.count[i]],
        )
    }
}

/// Resizes the `(left, top, width, height)` window of `img` to `nw x nh` with PIL's antialiased
/// bilinear filter (torchvision's default for `Resize` and `RandomResizedCrop`), without copying
/// the window out first: rows are filtered horizontally into `f32`, then columns vertically,
/// the result rounded to the nearest byte. The same filter as `image`'s `FilterType::Triangle`
/// (values within one grey level of it), in separable passes over contiguous rows that the
/// compiler vectorises: several times faster on hymenoptera's photographs.
///
/// The window must lie inside the image and be non-empty, as must the output.
fn resize_window(img: &RgbImage, window: (u32, u32, u32, u32), nw: u32, nh: u32) -> RgbImage {
    let (left, top, w, h) = (
        window.0 as usize,
        window.1 as usize,
        window.2 as usize,
        window.3 as usize,
    );
    let (nw, nh) = (nw as usize, nh as usize);
    let stride = img.width() as usize * 3;
    let src = img.as_raw();
    let (horizontal, vertical) = (Taps::new(w, nw), Taps::new(h, nh));
    // Only the source rows some output row reads.
    let first = vertical.start[0];
    let last = (0..nh)
        .map(|i| vertical.start[i] + vertical.count[i])
        .max()
        .unwrap_or(first);
    let mut rows = vec![0.0f32; (last - first) * nw * 3];
    let mut line = vec![0.0f32; w * 3];
    for (r, out) in rows.chunks_exact_mut(nw * 3).enumerate() {
        let y = top + first + r;
        let pixels = &src[y * stride + left * 3..][..w * 3];
        line.iter_mut()
            .zip(pixels)
            .for_each(|(f, &p)| *f = p as f32);
        for (x, px) in out.chunks_exact_mut(3).enumerate() {
            let (s, weights) = horizontal.of(x);
            let mut acc = [0.0f32; 3];
            for (k, &wt) in weights.iter().enumerate() {
                let p = &line[(s + k) * 3..][..3];
                acc[0] += wt * p[0];
                acc[1] += wt * p[1];
                acc[2] += wt * p[2];
            }
            px.copy_from_slice(&acc);
        }
    }
    let mut output = vec![0u8; nw * nh * 3];
    let mut acc = vec![0.0f32; nw * 3];
    for (y, out) in output.chunks_exact_mut(nw * 3).enumerate() {
        let (s, weights) = vertical.of(y);
        acc.fill(0.0);
        for (k, &wt) in weights.iter().enumerate() {
            let row = &rows[(s - first + k) * nw * 3..][..nw * 3];
            acc.iter_mut().zip(row).for_each(|(a, &v)| *a += wt * v);
        }
        out.iter_mut()
            .zip(&acc)
            .for_each(|(o, &a)| *o = a.round().clamp(0.0, 255.0) as u8);
    }
    RgbImage::from_raw(nw as u32, nh as u32, output).expect("nw * nh * 3 bytes")
}

/// Crops the central `size x size` square (torchvision's `CenterCrop`; an image smaller than
/// the crop is padded with black first, as torchvision does).
pub fn center_crop(img: &RgbImage, size: u32) -> RgbImage {
    let (w, h) = img.dimensions();
    if w < size || h < size {
        let (pw, ph) = (w.max(size), h.max(size));
        let mut padded = RgbImage::new(pw, ph);
        image::imageops::replace(
            &mut padded,
            img,
            ((pw - w) / 2) as i64,
            ((ph - h) / 2) as i64,
        );
        return center_crop(&padded, size);
    }
    let left = ((w - size) as f64 / 2.0).round() as u32;
    let top = ((h - size) as f64 / 2.0).round() as u32;
    image::imageops::crop_imm(img, left, top, size, size).to_image()
}

/// The crop window `(left, top, width, height)` of torchvision's `RandomResizedCrop`: area
/// uniform in `scale` of the image, log-aspect-ratio uniform in `ratio`, ten tries, then a
/// centre crop clamped to the ratio range.
pub fn random_resized_crop_window(
    width: u32,
    height: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> (u32, u32, u32, u32) {
    let area = width as f32 * height as f32;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.random_range(scale.0..=scale.1);
        let aspect = rng.random_range(log_lo..=log_hi).exp();
        let w = (target * aspect).sqrt().round() as u32;
        let h = (target / aspect).sqrt().round() as u32;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (left, top, w, h);
        }
    }
    let in_ratio = width as f32 / height as f32;
    let (w, h) = if in_ratio < ratio.0 {
        (
            width,
            ((width as f32 / ratio.0).round() as u32).clamp(1, height),
        )
    } else if in_ratio > ratio.1 {
        (
            ((height as f32 * ratio.1).round() as u32).clamp(1, width),
            height,
        )
    } else {
        (width, height)
    };
    ((width - w) / 2, (height - h) / 2, w, h)
}

/// torchvision's `RandomResizedCrop(size, scale, ratio)`: a random window resized to
/// `size x size`.
pub fn random_resized_crop(
    img: &RgbImage,
    size: u32,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> RgbImage {
    let (w, h) = img.dimensions();
    let (left, top, cw, ch) = random_resized_crop_window(w, h, scale, ratio, rng);
    if size == 0 || cw == 0 || ch == 0 {
        return RgbImage::new(size, size);
    }
    resize_window(img, (left, top, cw, ch), size, size)
}

/// RGB image to `[3, H, W]` floats in `[0, 1]`.
pub fn to_chw(img: &RgbImage) -> Vec<f32> {
    let (w, h) = img.dimensions();
    let plane = (w * h) as usize;
    let mut out = vec![0.0; 3 * plane];
    for (i, p) in img.pixels().enumerate() {
        out[i] = p[0] as f32 / 255.0;
        out[plane + i] = p[1] as f32 / 255.0;
        out[2 * plane + i] = p[2] as f32 / 255.0;
    }
    out
}

/// Pads a `[C, H, W]` `u8` image by `pad` zero pixels on each side and crops a random
/// `H x W` window (the classic CIFAR/MNIST augmentation, torchvision's `RandomCrop(size,
/// padding)`), in place of `pixels`.
pub fn pad_and_random_crop(pixels: &mut [u8], shape: [usize; 3], pad: usize, rng: &mut impl Rng) {
    if pad == 0 {
        return;
    }
    let [c, h, w] = shape;
    // Offset of the crop window in padded coordinates, 0..=2*pad on each axis.
    let dy = rng.random_range(0..=2 * pad) as isize - pad as isize;
    let dx = rng.random_range(0..=2 * pad) as isize - pad as isize;
    if dx == 0 && dy == 0 {
        return;
    }
    let src = pixels.to_vec();
    for ch in 0..c {
        for y in 0..h {
            let sy = y as isize + dy;
            for x in 0..w {
                let sx = x as isize + dx;
                let inside = sy >= 0 && sy < h as isize && sx >= 0 && sx < w as isize;
                pixels[ch * h * w + y * w + x] = if inside {
                    src[ch * h * w + sy as usize * w + sx as usize]
                } else {
                    0
                };
            }
        }
    }
}

/// Mirrors a `[C, H, W]` buffer left-right in place.
pub fn flip_horizontal<T>(pixels: &mut [T], shape: [usize; 3]) {
    let w = shape[2];
    for row in pixels.chunks_mut(w) {
        row.reverse();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn normalize_validates_and_applies() {
        assert!(
            Normalize::new(vec![0.5], vec![0.0])
                .unwrap_err()
                .to_string()
                .contains("std must be positive")
        );
        assert!(
            Normalize::new(vec![0.5, 0.5], vec![1.0])
                .unwrap_err()
                .to_string()
                .contains("got 2 means and 1 stds")
        );
        let n = Normalize::new(vec![0.5, 0.0], vec![0.25, 2.0]).unwrap();
        let mut x = vec![0.5, 1.0, 1.0, 4.0];
        n.apply(&mut x, 2);
        assert_eq!(x, vec![0.0, 2.0, 0.5, 2.0]);
    }

    #[test]
    fn resize_shorter_side_matches_torchvision_sizes() {
        let img = RgbImage::new(500, 375);
        assert_eq!(resize_shorter_side(&img, 256).dimensions(), (341, 256));
        let tall = RgbImage::new(300, 451);
        assert_eq!(resize_shorter_side(&tall, 256).dimensions(), (256, 384));
    }

    #[test]
    fn resize_shorter_side_caps_degenerate_images() {
        // 1 x 100,000 would become 256 x 25,600,000 (19.7 GB of RGB): capped at 100:1.
        let thin = RgbImage::new(1, 100_000);
        assert_eq!(resize_shorter_side(&thin, 4).dimensions(), (4, 400));
        let wide = RgbImage::new(100_000, 2);
        assert_eq!(resize_shorter_side(&wide, 4).dimensions(), (400, 4));
        // At exactly 100:1 nothing changes.
        let edge = RgbImage::new(3, 300);
        assert_eq!(resize_shorter_side(&edge, 6).dimensions(), (6, 600));
    }

    /// A deterministic image with detail at every scale.
    fn pattern(w: u32, h: u32, seed: u64) -> RgbImage {
        let mut rng = StdRng::seed_from_u64(seed);
        RgbImage::from_fn(w, h, |x, y| {
            let noise: u8 = rng.random();
            image::Rgb([(x * 255 / w.max(1)) as u8, noise, ((x ^ y) & 0xff) as u8])
        })
    }

    /// The largest difference, in grey levels, between two images of the same size.
    fn max_difference(a: &RgbImage, b: &RgbImage) -> u8 {
        assert_eq!(a.dimensions(), b.dimensions());
        a.as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn resize_matches_the_triangle_filter_of_image() {
        // Hymenoptera-like shrinking, enlarging, and a window of a larger image.
        let img = pattern(500, 375, 1);
        let ours = resize_shorter_side(&img, 256);
        let theirs = image::imageops::resize(&img, 341, 256, image::imageops::FilterType::Triangle);
        assert!(max_difference(&ours, &theirs) <= 1);
        let small = pattern(30, 20, 2);
        let ours = resize_shorter_side(&small, 224);
        let theirs =
            image::imageops::resize(&small, 336, 224, image::imageops::FilterType::Triangle);
        assert!(max_difference(&ours, &theirs) <= 1);
        let window = image::imageops::crop_imm(&img, 40, 30, 200, 150).to_image();
        let ours = resize_window(&img, (40, 30, 200, 150), 224, 224);
        let theirs =
            image::imageops::resize(&window, 224, 224, image::imageops::FilterType::Triangle);
        assert!(max_difference(&ours, &theirs) <= 1);
    }

    #[test]
    fn resize_keeps_a_flat_image_flat() {
        let flat = RgbImage::from_pixel(37, 23, image::Rgb([7, 128, 255]));
        for (w, h) in [(224, 224), (5, 3), (1, 1), (100, 9)] {
            let out = resize_window(&flat, (0, 0, 37, 23), w, h);
            assert!(out.pixels().all(|p| p.0 == [7, 128, 255]), "{w}x{h}");
        }
    }

    #[test]
    fn center_crop_takes_the_middle_and_pads_small_images() {
        let mut img = RgbImage::new(5, 3);
        img.put_pixel(2, 1, image::Rgb([9, 9, 9]));
        let c = center_crop(&img, 1);
        assert_eq!(c.get_pixel(0, 0), &image::Rgb([9, 9, 9]));
        let small = RgbImage::from_pixel(2, 2, image::Rgb([5, 5, 5]));
        let padded = center_crop(&small, 4);
        assert_eq!(padded.dimensions(), (4, 4));
        assert_eq!(padded.get_pixel(0, 0), &image::Rgb([0, 0, 0]));
        assert_eq!(padded.get_pixel(1, 1), &image::Rgb([5, 5, 5]));
    }

    #[test]
    fn flip_and_chw_layout() {
        let mut img = RgbImage::new(2, 1);
        img.put_pixel(0, 0, image::Rgb([255, 0, 0]));
        img.put_pixel(1, 0, image::Rgb([0, 255, 0]));
        let mut chw = to_chw(&img);
        assert_eq!(chw, vec![1.0, 0.0, 0.0, 1.0, 0.0, 0.0]);
        flip_horizontal(&mut chw, [3, 1, 2]);
        assert_eq!(chw, vec![0.0, 1.0, 1.0, 0.0, 0.0, 0.0]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// The crop window always lies inside the image and its aspect ratio stays in range
        /// (up to rounding), whatever the image shape.
        #[test]
        fn random_resized_crop_window_is_valid(w in 1u32..600, h in 1u32..600, seed in any::<u64>()) {
            let mut rng = StdRng::seed_from_u64(seed);
            let (left, top, cw, ch) = random_resized_crop_window(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            prop_assert!(cw >= 1 && ch >= 1);
            prop_assert!(left + cw <= w && top + ch <= h);
        }

        /// Any window of any image resizes to any size within one grey level of `image`'s
        /// triangle filter on the copied-out window.
        #[test]
        fn resize_window_matches_image(
            w in 1u32..80, h in 1u32..80, nw in 1u32..90, nh in 1u32..90, seed in any::<u64>(),
        ) {
            let img = pattern(w, h, seed);
            let mut rng = StdRng::seed_from_u64(seed);
            let (left, top, cw, ch) =
                random_resized_crop_window(w, h, (0.08, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            let window = image::imageops::crop_imm(&img, left, top, cw, ch).to_image();
            let theirs =
                image::imageops::resize(&window, nw, nh, image::imageops::FilterType::Triangle);
            let ours = resize_window(&img, (left, top, cw, ch), nw, nh);
            prop_assert!(max_difference(&ours, &theirs) <= 1);
        }

        /// Pad-and-crop is a shift: every output pixel is 0 or the input pixel shifted by the
        /// same (dx, dy) with |dx|, |dy| <= pad.
        #[test]
        fn pad_and_crop_is_a_bounded_shift(pad in 0usize..5, seed in any::<u64>()) {
            let shape = [1, 8, 8];
            let original: Vec<u8> = (1..=64).collect();
            let mut shifted = original.clone();
            pad_and_random_crop(&mut shifted, shape, pad, &mut StdRng::seed_from_u64(seed));
            let mut found = None;
            'search: for dy in -(pad as isize)..=pad as isize {
                for dx in -(pad as isize)..=pad as isize {
                    let ok = (0..8).all(|y| (0..8).all(|x| {
                        let (sy, sx) = (y as isize + dy, x as isize + dx);
                        let expect = if (0..8).contains(&sy) && (0..8).contains(&sx) {
                            original[(sy * 8 + sx) as usize]
                        } else { 0 };
                        shifted[y * 8 + x] == expect
                    }));
                    if ok { found = Some((dx, dy)); break 'search; }
                }
            }
            prop_assert!(found.is_some());
        }
    }
}
