//! DropBlock (Ghiasi et al. 2018, "DropBlock: A regularization method for convolutional networks").

use burn::config::Config;
use burn::module::{Flag, Module, Param};
use burn::tensor::Tensor;
use burn::tensor::ops::PadMode;

use crate::error::{LayerConfigError, check_prob, or_panic};
use crate::mode::is_training;
use crate::random;

/// Configuration of a [`DropBlock2d`] layer.
#[derive(Config, Debug)]
pub struct DropBlock2dConfig {
    /// Target fraction of activations to drop, `1 - keep_prob` in the paper, in `[0, 1)`.
    pub prob: f64,
    /// Side of the square blocks, at least 1 (the paper uses 7 on ResNet-50's last stages).
    pub block_size: usize,
}

impl DropBlock2dConfig {
    /// Checks the configuration and builds the layer.
    pub fn try_init(&self) -> Result<DropBlock2d, LayerConfigError> {
        let prob = check_prob("DropBlock2d", self.prob)?;
        if self.block_size == 0 {
            return Err(LayerConfigError::Zero {
                layer: "DropBlock2d",
                field: "block_size",
            });
        }
        Ok(DropBlock2d {
            prob,
            block_size: self.block_size,
            training: Param::from_bool(true),
        })
    }

    /// Builds the layer; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> DropBlock2d {
        or_panic(self.try_init())
    }
}

/// Drops contiguous `block_size × block_size` regions of each feature map during training.
///
/// Block top-left corners are sampled with rate `γ` (Algorithm 1 and eq. 1 of the paper,
/// generalised to `H × W`):
///
/// `γ = p / block_size² · (H · W) / ((H - block_size + 1) (W - block_size + 1))`
///
/// only where the whole block fits in the map, each corner is expanded to its block, and the kept
/// activations are scaled by `count / count_ones` of the mask (the paper's normalisation), so the
/// expected sum is unchanged. Masks are independent per sample and channel (PyTorch's
/// `torchvision.ops.DropBlock2d`). A block larger than the map is clipped to the map, as torchvision
/// and timm do. The identity in inference.
///
/// The paper ramps `p` up linearly from 0 during training: see [`LinearSchedule`] and
/// [`DropBlock2d::with_prob`].
#[derive(Module, Debug)]
pub struct DropBlock2d {
    /// Target fraction of activations to drop.
    pub prob: f64,
    /// Side of the square blocks.
    pub block_size: usize,
    /// Training flag, cleared by `freeze()`, `freeze_group(..)` and `valid()`.
    pub training: Param<Flag>,
}

impl DropBlock2d {
    /// The same layer with another drop probability (for a schedule), keeping its training flag.
    ///
    /// # Panics
    ///
    /// If `prob` is not in `[0, 1)`.
    pub fn with_prob(mut self, prob: f64) -> Self {
        self.prob = or_panic(check_prob("DropBlock2d", prob));
        self
    }

    /// The corner sampling rate `γ` for an `height × width` map (clipped to at most 1).
    pub fn gamma(&self, height: usize, width: usize) -> f64 {
        let block = self.block_size.min(height).min(width);
        let valid = ((height - block + 1) * (width - block + 1)) as f64;
        let gamma = self.prob / (block * block) as f64 * (height * width) as f64 / valid;
        gamma.min(1.0)
    }

    /// The keep mask (1 = keep, 0 = drop) for an input of this shape, before normalisation.
    ///
    /// # Shapes
    ///
    /// - output: `[batch, channels, height, width]`
    pub fn sample_mask(&self, dims: [usize; 4], device: &burn::tensor::Device) -> Tensor<4> {
        let [batch, channels, height, width] = dims;
        let block = self.block_size.min(height).min(width);
        let corners = random::bernoulli(
            [batch, channels, height - block + 1, width - block + 1],
            self.gamma(height, width),
            1.0,
            device,
        );
        // Kept: no block covers the pixel (one comparison pass rather than clamp, neg and add).
        block_cover(corners, block).lower_equal_elem(0.0).float()
    }

    /// Applies DropBlock.
    ///
    /// # Shapes
    ///
    /// - input: `[batch, channels, height, width]`
    /// - output: same as input
    pub fn forward(&self, input: Tensor<4>) -> Tensor<4> {
        if self.prob == 0.0 || !is_training(&self.training, &input.device()) {
            return input;
        }
        let mask = self.sample_mask(input.dims(), &input.device());
        let count = mask.shape().num_elements() as f64;
        // count / count_ones, guarded so a fully dropped mask gives zeros rather than NaN.
        let scale = mask.clone().sum().clamp_min(1.0).recip().mul_scalar(count);
        input * (mask * scale.unsqueeze())
    }
}

/// For block corners (1 = a block starts here, 0 elsewhere) of shape
/// `[.., H - block + 1, W - block + 1]`, a `[.., H, W]` map that is positive where a block covers
/// the pixel (it is to be dropped) and 0 elsewhere. The positive values are small integers, not
/// exact counts (see [`window_sum`]).
///
/// Pixel i is covered iff some corner j has j <= i <= j + block - 1 on both axes: the corners
/// padded by `block - 1` zeros on every side, then a sum over a `block` window, which is separable
/// into one pass per axis. Thresholded, this is the max-pool the paper describes (kernel `block`,
/// stride 1, padding `block - 1`), but flex's `max_pool2d` was most of DropBlock's cost: on
/// `[128, 64, 14, 14]` with block 7 (2 busy cores) the pool alone took ~65 ms, the whole forward
/// 65-75 ms, burn's `Dropout` ~25 ms. A few shifted adds do it in a fraction of that.
fn block_cover(corners: Tensor<4>, block: usize) -> Tensor<4> {
    if block == 1 {
        return corners;
    }
    let pad = block - 1;
    let rows = window_sum(
        corners.pad([(pad, pad), (0, 0)], PadMode::Constant(0.0)),
        2,
        block,
    );
    window_sum(rows.pad([(pad, pad)], PadMode::Constant(0.0)), 3, block)
}

/// For non-negative `x`, a tensor `y` with `y[i] > 0` iff `x[i..i + width]` holds a positive value
/// along `dim` (and `y[i] = 0` otherwise); `len - width + 1` long on `dim`.
///
/// Window sums by doubling: after each step `acc[i]` sums `x[i..i + covered]` with `covered`
/// doubled, then two overlapping windows of `covered` cover `width` (the overlap is counted
/// twice, which keeps zero and positive apart). `O(log width)` element-wise adds, not `width`.
fn window_sum(x: Tensor<4>, dim: usize, width: usize) -> Tensor<4> {
    let out_len = x.dims()[dim] - width + 1;
    let mut acc = x;
    let mut covered = 1;
    while covered * 2 <= width {
        let len = acc.dims()[dim] - covered;
        acc = acc.clone().narrow(dim, 0, len) + acc.narrow(dim, covered, len);
        covered *= 2;
    }
    if covered < width {
        // covered < width < 2 covered: [i, i + covered) and [i + shift, i + width) cover the window.
        let shift = width - covered;
        acc = acc.clone().narrow(dim, 0, out_len) + acc.narrow(dim, shift, out_len);
    }
    acc
}

/// A linear ramp from `start` to `end` over `steps` steps, then constant at `end`: the schedule
/// DropBlock's paper uses for its drop probability (keep_prob from 1 down to the target).
#[derive(Config, Debug, Copy)]
pub struct LinearSchedule {
    /// Value at step 0.
    pub start: f64,
    /// Value from step `steps` on.
    pub end: f64,
    /// Length of the ramp in steps (0: `end` from the start).
    pub steps: usize,
}

impl LinearSchedule {
    /// The value at `step`.
    pub fn value(&self, step: usize) -> f64 {
        if self.steps == 0 || step >= self.steps {
            return self.end;
        }
        self.start + (self.end - self.start) * step as f64 / self.steps as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_zero_block_size() {
        let err = DropBlock2dConfig::new(0.1, 0).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "DropBlock2d: block_size must be at least 1, got 0"
        );
    }

    #[test]
    fn rejects_probability_outside_unit_interval() {
        let err = DropBlock2dConfig::new(1.0, 3).try_init().unwrap_err();
        assert_eq!(
            err.to_string(),
            "DropBlock2d: drop probability must be finite and in [0, 1), got 1"
        );
    }

    #[test]
    #[should_panic(expected = "DropBlock2d: block_size must be at least 1, got 0")]
    fn init_panics_with_the_same_message() {
        DropBlock2dConfig::new(0.1, 0).init();
    }

    #[test]
    #[should_panic(
        expected = "DropBlock2d: drop probability must be finite and in [0, 1), got 1.5"
    )]
    fn schedule_rejects_invalid_probability() {
        DropBlock2dConfig::new(0.1, 3).init().with_prob(1.5);
    }

    #[test]
    fn gamma_is_the_papers() {
        // Paper eq. 1 with feat_size 14, block_size 7, keep_prob 0.9.
        let layer = DropBlock2dConfig::new(0.1, 7).init();
        let expected = 0.1 / 49.0 * 196.0 / 64.0;
        assert!((layer.gamma(14, 14) - expected).abs() < 1e-15);
    }

    #[test]
    fn block_cover_matches_the_papers_max_pool() {
        use burn::tensor::ops::MaxPoolOptions;
        let device = burn::tensor::Device::flex();
        device.seed(3);
        let cases = [
            (1, 5, 5),
            (2, 4, 9),
            (3, 8, 6),
            (4, 4, 4),
            (5, 7, 11),
            (6, 13, 6),
            (7, 14, 14),
            (9, 12, 30),
        ];
        for (block, h, w) in cases {
            let corners = Tensor::<4>::random(
                [2, 3, h - block + 1, w - block + 1],
                burn::tensor::Distribution::Bernoulli(0.3),
                &device,
            );
            let square = burn::tensor::module::max_pool2d(
                corners.clone(),
                MaxPoolOptions::new([block, block])
                    .with_stride([1, 1])
                    .with_padding([block - 1, block - 1]),
            );
            let cover = block_cover(corners, block);
            assert_eq!(cover.dims(), [2, 3, h, w]);
            let dropped = cover.greater_elem(0.0).float();
            assert_eq!(dropped.into_data(), square.into_data(), "block {block}");
        }
    }

    #[test]
    fn linear_schedule_ramps_then_holds() {
        let schedule = LinearSchedule::new(0.0, 0.1, 10);
        assert_eq!(schedule.value(0), 0.0);
        assert!((schedule.value(5) - 0.05).abs() < 1e-15);
        assert_eq!(schedule.value(10), 0.1);
        assert_eq!(schedule.value(1000), 0.1);
    }
}
