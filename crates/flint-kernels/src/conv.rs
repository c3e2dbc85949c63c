//! 2-D convolution on flex's host buffers.
//!
//! burn-flex computes a convolution's weight gradient as another convolution whose "kernel" is
//! the whole output gradient, and its input gradient as a transposed convolution, each with
//! layout copies of the whole batch. Here each image is unfolded (im2col) into a buffer that
//! stays in cache, and every step is one matrix product (gemm) per image:
//! - forward: `W · cols`, written straight into the image's `[c_out, out_h * out_w]` output;
//! - weight gradient: `dY · colsᵀ`, summed over the images of a task;
//! - input gradient: `Wᵀ · dY`, folded back onto the image (col2im).
//!
//! The batch is split into one run of images per thread, and each product runs on one thread,
//! so no product is split across threads (small splits cost more in wake-ups than they save).
//!
//! A grouped convolution unfolds the image once and runs these products per group, on the group's
//! block of unfolded rows, weight rows and output channels. A depthwise one (one input channel
//! per group) has products too small for gemm and goes to [`super::depthwise`] instead.

use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::clamp::Bounds;
use super::depthwise::Depthwise;
use super::gemm::{Operand, Wanted, matmul, matmul_into_then, matmul_strided};
use super::profile::{self, Profiled};
use super::simd::{multiversion, sum};
use super::weighted::{self, WeightedOp};
use super::{flex_tensor, written};

/// Images per parallel task of a batch convolution at most (see `Geometry::images_per_task`).
const IMAGES_PER_TASK: usize = 8;

/// Tasks a batch is split into at least, where it has the images: a batch of 16 224x224 images
/// (protocol F1) runs as 8 tasks of 2, not 2 of 8.
const TASKS_PER_BATCH: usize = 8;

/// Stride, dilation, padding and groups of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvOptions {
    /// Step between output positions, `[height, width]`.
    pub stride: [usize; 2],
    /// Spacing of the kernel's taps, `[height, width]` (1: adjacent).
    pub dilation: [usize; 2],
    /// Zero padding `[[top, bottom], [left, right]]`, which may differ on the two sides (burn's
    /// `PaddingConfig2d::Same` pads one more after than before for even kernels).
    pub padding: [[usize; 2]; 2],
    /// Channel groups: input and output channels are split into `groups` runs, and each output
    /// run sees only its input run (1: a plain convolution; the input's channel count: a
    /// depthwise one, as `groups` of burn's `ConvOptions` and PyTorch's `Conv2d`).
    pub groups: usize,
}

/// `conv2d(input, weight) + bias`, as `burn::tensor::module::conv2d` computes it, or `None` where
/// the tensors are not all f32 on flex (all tracked or all plain), the weight's input channels
/// times `groups` differ from the input's, `c_out` is not a multiple of `groups`, the kernel does
/// not fit the padded input or the bias is not `[c_out]` (the caller then goes through burn,
/// which reports bad shapes).
///
/// Depthwise convolutions (`groups == c_in > 1`, any channel multiplier `c_out / c_in`) run a
/// direct loop per channel plane; other grouped ones a matrix product per group.
///
/// # Shapes
/// - input: `[batch, c_in, height, width]`
/// - weight: `[c_out, c_in / groups, kernel_h, kernel_w]`
/// - bias: `[c_out]`
/// - output: `[batch, c_out, out_h, out_w]`, `out = (size + pads - dilation (k - 1) - 1) / stride + 1`
pub fn conv2d(
    input: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    options: ConvOptions,
) -> Option<Tensor<4>> {
    run(input, weight, bias, options, None)
}

/// `clamp(conv2d(input, weight) + bias, min, max)` in one step, for every convolution
/// [`conv2d`] computes: ReLU6 is `min = 0, max = 6`, ReLU `min = 0, max = f32::INFINITY`.
///
/// Unfused, the clamp costs one pass over the activation forward (read and write) and one
/// backward (reading the input kept for it, the output gradient, and writing a masked copy).
/// Here the clamp is applied to each block of the output while it is still in cache: the
/// direct depthwise loop clamps its register blocks before writing them, the matrix-product
/// convolutions run each image's product in column blocks sized for the L2 cache and clamp a
/// block right after gemm writes it. Backward keeps only the clamped output (which the next
/// layer keeps anyway: the unclamped one is never stored), masks the output gradient per image
/// in the same column blocks (depthwise: per plane, while reading it) and feeds each masked
/// block straight to the weight, bias and input gradient products. Only the gradients of
/// tracked parents are computed.
///
/// The values are those of [`conv2d`] followed by [`crate::clamp`] (up to f32 rounding). The
/// gradients too, with one exception: the gradient flows where the clamped output is strictly
/// inside `(min, max)` (or NaN, or on an infinite bound), so where the *unclamped* output equals
/// a finite bound exactly, burn's clamp lets the gradient through and this step does not (the
/// output alone cannot tell it from a clamped value). For ReLU this is burn's own `relu`
/// gradient (zero where the output is 0).
///
/// The profile ([`crate::profile`]) counts a fused call under its convolution's kinds: the
/// clamps inside fused convolutions no longer appear as clamp calls of their own.
///
/// `None` where [`conv2d`] declines, or where the bounds are NaN or `min >= max` (the caller
/// then runs the convolution and the clamp apart).
///
/// # Shapes
/// - input: `[batch, c_in, height, width]`
/// - weight: `[c_out, c_in / groups, kernel_h, kernel_w]`
/// - bias: `[c_out]`
/// - output: `[batch, c_out, out_h, out_w]`, as [`conv2d`]'s
pub fn conv2d_clamp(
    input: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    options: ConvOptions,
    min: f32,
    max: f32,
) -> Option<Tensor<4>> {
    run(input, weight, bias, options, Some(Bounds::fused(min, max)?))
}

/// [`conv2d`], clamped to `bounds` where given.
fn run(
    input: &Tensor<4>,
    weight: &Tensor<4>,
    bias: Option<&Tensor<1>>,
    options: ConvOptions,
    bounds: Option<Bounds>,
) -> Option<Tensor<4>> {
    let g = Geometry::new(input.dims(), weight.dims(), options)?;
    if bias.is_some_and(|bias| bias.dims() != [g.c_out]) {
        return None;
    }
    let kinds = profile::conv_kinds(g.depthwise(), g.kernel);
    let multiply_adds = g.multiply_adds();
    if g.depthwise() {
        let op = Profiled::new(Depthwise(g, bounds), kinds, multiply_adds);
        weighted::apply(op, input, weight, bias)
    } else {
        let op = Profiled::new(Conv { g, bounds }, kinds, multiply_adds);
        weighted::apply(op, input, weight, bias)
    }
}

/// The sizes of one convolution.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub(crate) batch: usize,
    pub(crate) c_in: usize,
    pub(crate) height: usize,
    pub(crate) width: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: [usize; 2],
    pub(crate) options: ConvOptions,
    pub(crate) out_h: usize,
    pub(crate) out_w: usize,
}

impl Geometry {
    /// The geometry of `[batch, c_in, h, w]` by `[c_out, c_in / groups, kh, kw]`, or `None`
    /// where the channels do not split into the groups or the kernel does not fit the padded
    /// input.
    pub(crate) fn new(input: [usize; 4], weight: [usize; 4], options: ConvOptions) -> Option<Self> {
        let [batch, c_in, height, width] = input;
        let [c_out, w_in, kh, kw] = weight;
        let ConvOptions {
            stride,
            dilation,
            padding,
            groups,
        } = options;
        let extent = |size: usize, pad: [usize; 2], k: usize, dilation: usize, stride: usize| {
            let padded = size + pad[0] + pad[1];
            let reach = dilation * (k - 1) + 1;
            (padded >= reach).then(|| (padded - reach) / stride + 1)
        };
        let sizes = [
            kh,
            kw,
            stride[0],
            stride[1],
            dilation[0],
            dilation[1],
            groups,
        ];
        if sizes.contains(&0) || Some(c_in) != w_in.checked_mul(groups) || c_out % groups != 0 {
            return None;
        }
        let out_h = extent(height, padding[0], kh, dilation[0], stride[0])?;
        let out_w = extent(width, padding[1], kw, dilation[1], stride[1])?;
        (batch * c_out * out_h * out_w > 0).then_some(Self {
            batch,
            c_in,
            height,
            width,
            c_out,
            kernel: [kh, kw],
            options,
            out_h,
            out_w,
        })
    }

    /// Multiply-adds of the forward step (and of each gradient): one per output value and
    /// kernel tap of its group's input channels, zero padding included.
    fn multiply_adds(&self) -> u64 {
        (self.batch * self.c_out * self.positions() * self.patch()) as u64
    }

    /// Length of one group's unfolded patch: `c_in / groups * kh * kw`.
    fn patch(&self) -> usize {
        self.c_in / self.options.groups * self.kernel[0] * self.kernel[1]
    }

    /// Output channels per group.
    fn group_out(&self) -> usize {
        self.c_out / self.options.groups
    }

    /// One input channel per group: the direct loop of [`Depthwise`] applies.
    pub(crate) fn depthwise(&self) -> bool {
        self.options.groups > 1 && self.options.groups == self.c_in
    }

    /// Output positions per image.
    pub(crate) fn positions(&self) -> usize {
        self.out_h * self.out_w
    }

    fn image_in(&self) -> usize {
        self.c_in * self.height * self.width
    }

    fn image_out(&self) -> usize {
        self.c_out * self.positions()
    }

    /// A 1x1 kernel with stride 1 and no padding: the image is its own unfolding.
    fn pointwise(&self) -> bool {
        self.kernel == [1, 1]
            && self.options.stride == [1, 1]
            && self.options.padding == [[0, 0], [0, 0]]
    }

    /// Images per parallel task: short runs of a fixed length, not one run per thread, so that
    /// a thread that finishes early (the other was descheduled, woke late or ran slower) takes
    /// the remaining runs instead of waiting; the weight gradient's per-task sums are added in
    /// task order, the same whatever the scheduling and the number of threads.
    fn images_per_task(&self) -> usize {
        (self.batch / TASKS_PER_BATCH).clamp(1, IMAGES_PER_TASK)
    }

    /// The output columns `lo..hi` whose input column for kernel column `dx` is inside the
    /// image, and the input column of output column `lo` (0 where no column is: then the tap
    /// sees only padding, and nothing is read).
    pub(crate) fn columns(&self, dx: usize) -> (usize, usize, usize) {
        let [stride, dilation] = [self.options.stride[1], self.options.dilation[1]];
        let offset = (dx * dilation) as isize - self.options.padding[1][0] as isize;
        let lo = if offset >= 0 {
            0
        } else {
            offset.unsigned_abs().div_ceil(stride)
        };
        let last = self.width as isize - 1 - offset;
        let hi = if last < 0 {
            0
        } else {
            (last as usize / stride + 1).min(self.out_w)
        };
        if lo >= hi {
            return (hi, hi, 0);
        }
        (lo, hi, ((lo * stride) as isize + offset) as usize)
    }

    /// The input row of output row `oy` for kernel row `dy`, if inside the image.
    pub(crate) fn row(&self, oy: usize, dy: usize) -> Option<usize> {
        let row = (oy * self.options.stride[0] + dy * self.options.dilation[0]) as isize
            - self.options.padding[0][0] as isize;
        (0..self.height as isize)
            .contains(&row)
            .then_some(row as usize)
    }
}

/// Unfolds one `[c_in, h, w]` image into `cols`, `[c_in * kh * kw, out_h * out_w]`: row
/// `(ci * kh + dy) * kw + dx` holds the input each output position sees through that kernel
/// tap, zero where it falls in the padding.
fn unfold(g: &Geometry, image: &[f32], cols: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let (positions, plane) = (g.positions(), g.height * g.width);
    let stride = g.options.stride[1];
    for ci in 0..g.c_in {
        let plane = &image[ci * plane..][..plane];
        for dy in 0..kh {
            for dx in 0..kw {
                let (lo, hi, first) = g.columns(dx);
                let tap = &mut cols[((ci * kh + dy) * kw + dx) * positions..][..positions];
                for (oy, dst) in tap.chunks_exact_mut(g.out_w).enumerate() {
                    let Some(iy) = g.row(oy, dy) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[iy * g.width..][..g.width];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if stride == 1 {
                        dst[lo..hi].copy_from_slice(&src[first..][..hi - lo]);
                    } else {
                        for (i, value) in dst[lo..hi].iter_mut().enumerate() {
                            *value = src[first + i * stride];
                        }
                    }
                }
            }
        }
    }
}

/// The reverse of [`unfold`]: adds each unfolded gradient back onto the input position it came
/// from (positions seen by several taps get the sum).
fn fold(g: &Geometry, cols: &[f32], image: &mut [f32]) {
    let [kh, kw] = g.kernel;
    let (positions, plane) = (g.positions(), g.height * g.width);
    let stride = g.options.stride[1];
    for ci in 0..g.c_in {
        let plane = &mut image[ci * plane..][..plane];
        for dy in 0..kh {
            for dx in 0..kw {
                let (lo, hi, first) = g.columns(dx);
                let tap = &cols[((ci * kh + dy) * kw + dx) * positions..][..positions];
                for (oy, src) in tap.chunks_exact(g.out_w).enumerate() {
                    let Some(iy) = g.row(oy, dy) else { continue };
                    let dst = &mut plane[iy * g.width..][..g.width];
                    if stride == 1 {
                        for (d, s) in dst[first..][..hi - lo].iter_mut().zip(&src[lo..hi]) {
                            *d += s;
                        }
                    } else {
                        for (i, s) in src[lo..hi].iter().enumerate() {
                            dst[first + i * stride] += s;
                        }
                    }
                }
            }
        }
    }
}

/// Bytes of one column block of a fused epilogue: the block's output (or output gradient) rows
/// and unfolded input rows, three quarters of the 1 MiB L2 cache per core of the machines flint
/// is measured on (AMD EPYC). A block is clamped (or masked) right after gemm writes it (or
/// before gemm reads it), while it is still in L2. Smaller blocks cost more: each gemm call
/// packs the weight again, and the weight gradient's products get shorter.
const BLOCK_BYTES: usize = 3 << 18;

/// Columns of a block at least: below this, gemm's per-call overhead shows.
const MIN_BLOCK: usize = 128;

/// A convolution computed by matrix products (any groups but depthwise), its output clamped to
/// the bounds where given (a fused ReLU6 or ReLU).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Conv {
    g: Geometry,
    bounds: Option<Bounds>,
}

impl Conv {
    /// Output columns per block: all of them without bounds (there is no pass to fuse), else
    /// as many as keep the block's output and unfolded input rows within [`BLOCK_BYTES`], a
    /// multiple of 16 (gemm's register tiles).
    fn block_columns(&self) -> usize {
        let g = &self.g;
        if self.bounds.is_none() {
            return g.positions();
        }
        let rows = g.c_out + g.options.groups * g.patch();
        let columns = (BLOCK_BYTES / (4 * rows)) / 16 * 16;
        columns.max(MIN_BLOCK).min(g.positions())
    }
}

multiversion!(add_and_clamp => add_and_clamp_body [] [] [] (
    values: &mut [f32],
    bias: f32,
    bounds: Option<Bounds>,
));

/// `values + bias`, clamped to `bounds` where given: the epilogue of each block gemm writes.
#[inline(always)]
fn add_and_clamp_body(values: &mut [f32], bias: f32, bounds: Option<Bounds>) {
    match bounds {
        None => values.iter_mut().for_each(|v| *v += bias),
        Some(bounds) => values.iter_mut().for_each(|v| *v = bounds.apply(*v + bias)),
    }
}

multiversion!(mask_gradient => mask_gradient_body [] [] [] (
    dst: &mut [f32],
    grad: &[f32],
    output: &[f32],
    bounds: Bounds,
));

/// `grad` where the clamped `output` is strictly inside `bounds`, zero elsewhere, into `dst`.
#[inline(always)]
fn mask_gradient_body(dst: &mut [f32], grad: &[f32], output: &[f32], bounds: Bounds) {
    for ((d, &g), &y) in dst.iter_mut().zip(grad).zip(output) {
        *d = if bounds.passes_output(y) { g } else { 0.0 };
    }
}

multiversion!(row_sum => sum [] [] [] (values: &[f32]) -> f64);

impl WeightedOp for Conv {
    /// The convolution of a contiguous `[batch, c_in, h, w]` input by a contiguous
    /// `[c_out, c_in, kh, kw]` weight, plus `bias` per output channel, clamped where the op has
    /// bounds: each image's product runs in column blocks, and each block gets its bias and
    /// clamp right after gemm writes it.
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        let g = &self.g;
        let (patch, positions, group_out) = (g.patch(), g.positions(), g.group_out());
        let (image_in, image_out) = (g.image_in(), g.image_out());
        let unfolded = g.options.groups * patch * positions;
        let per_task = g.images_per_task();
        let (block, bounds) = (self.block_columns(), self.bounds);
        let fill = |output: &mut [MaybeUninit<f32>]| {
            output
                .par_chunks_mut(per_task * image_out)
                .enumerate()
                .for_each(|(task, output)| {
                    let mut cols = vec![0.0f32; if g.pointwise() { 0 } else { unfolded }];
                    for (i, out) in output.chunks_exact_mut(image_out).enumerate() {
                        let image = &x[(task * per_task + i) * image_in..][..image_in];
                        let cols: &[f32] = if g.pointwise() {
                            image
                        } else {
                            unfold(g, image, &mut cols);
                            &cols
                        };
                        // Group `k`: its weight rows times its block of unfolded rows, into its
                        // output channels, one column block at a time.
                        let groups = out.chunks_exact_mut(group_out * positions).enumerate();
                        for (k, out) in groups {
                            let bias = bias.map(|bias| &bias[k * group_out..][..group_out]);
                            let weight = Operand::rows(&weight[k * group_out * patch..], patch);
                            let cols = &cols[k * patch * positions..];
                            for start in (0..positions).step_by(block) {
                                let n = block.min(positions - start);
                                let epilogue = |row: usize, values: &mut [f32]| {
                                    if bias.is_some() || bounds.is_some() {
                                        let b = bias.map_or(0.0, |bias| bias[row]);
                                        add_and_clamp(values, b, bounds);
                                    }
                                };
                                matmul_into_then(
                                    &mut out[start..],
                                    positions,
                                    weight,
                                    Operand::rows(&cols[start..], positions),
                                    [group_out, n, patch],
                                    epilogue,
                                );
                            }
                        }
                    }
                })
        };
        // SAFETY: the tasks' runs of images cover the output, and each image's `[c_out,
        // positions]` block is written group by group and column block by column block by
        // `matmul_into_then`.
        let output = unsafe { written(g.batch * image_out, fill) };
        flex_tensor(output, &[g.batch, g.c_out, g.out_h, g.out_w])
    }

    fn reads_output(&self) -> bool {
        self.bounds.is_some()
    }

    /// With bounds, each image's output gradient is masked (where the clamped output is
    /// strictly inside the bounds) one column block at a time into a buffer that stays in cache,
    /// and that block goes straight into the weight, bias and input gradient products.
    fn backward(
        &self,
        x: &[f32],
        weight: &[f32],
        output: Option<&[f32]>,
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3] {
        let g = &self.g;
        let (patch, positions, group_out) = (g.patch(), g.positions(), g.group_out());
        let (image_in, image_out) = (g.image_in(), g.image_out());
        let groups = g.options.groups;
        let per_task = g.images_per_task();
        let mask = Bounds::mask(self.bounds, output);
        let block = self.block_columns();
        // Not `vec![0.0; n]`: its zero-filling runs on the calling thread alone while the others
        // wait (3.2 MB per step for the reference CNN's second convolution). Each task zeroes
        // its own run below.
        let input_len = if wanted.input { g.batch * image_in } else { 0 };
        let mut input_grad: Vec<f32> = Vec::with_capacity(input_len);
        let tasks = g.batch.div_ceil(per_task);
        let slots: Vec<Option<&mut [MaybeUninit<f32>]>> = if wanted.input {
            input_grad.spare_capacity_mut()[..input_len]
                .chunks_mut(per_task * image_in)
                .map(Some)
                .collect()
        } else {
            (0..tasks).map(|_| None).collect()
        };
        let sums: Vec<(Vec<f32>, Vec<f64>)> = slots
            .into_par_iter()
            .enumerate()
            .map(|(task, slot)| {
                // SAFETY: every element of the slot is written (zero) before it is read.
                let mut input_grad = slot.map(|slot| {
                    slot.iter_mut().for_each(|v| _ = v.write(0.0));
                    unsafe {
                        std::slice::from_raw_parts_mut(slot.as_mut_ptr().cast::<f32>(), slot.len())
                    }
                });
                let first = task * per_task;
                let images = per_task.min(g.batch - first);
                let unfolded = !g.pointwise() && (wanted.weight || wanted.input);
                let mut cols = vec![
                    0.0f32;
                    if unfolded {
                        groups * patch * positions
                    } else {
                        0
                    }
                ];
                let mut masked = vec![0.0f32; if mask.is_some() { g.c_out * block } else { 0 }];
                let mut weight_grad = vec![0.0f32; if wanted.weight { g.c_out * patch } else { 0 }];
                let mut bias_grad = vec![0.0f64; if wanted.bias { g.c_out } else { 0 }];
                for i in 0..images {
                    let image = &x[(first + i) * image_in..][..image_in];
                    let grad = &grad[(first + i) * image_out..][..image_out];
                    if wanted.weight && !g.pointwise() {
                        unfold(g, image, &mut cols);
                    }
                    for start in (0..positions).step_by(block) {
                        let n = block.min(positions - start);
                        // The block's output gradient, `[c_out, n]` with rows `stride` apart.
                        let (dy, stride): (&[f32], usize) = match mask {
                            None => (&grad[start..], positions),
                            Some((output, bounds)) => {
                                let output = &output[(first + i) * image_out..][..image_out];
                                let rows = masked.chunks_exact_mut(n);
                                for (c, dst) in rows.take(g.c_out).enumerate() {
                                    let at = c * positions + start;
                                    let (src, y) = (&grad[at..][..n], &output[at..][..n]);
                                    mask_gradient(dst, src, y, bounds);
                                }
                                (&masked[..], n)
                            }
                        };
                        for k in 0..groups {
                            let dy = &dy[k * group_out * stride..];
                            if wanted.weight {
                                let cols: &[f32] = if g.pointwise() { image } else { &cols };
                                matmul(
                                    &mut weight_grad[k * group_out * patch..][..group_out * patch],
                                    i > 0 || start > 0,
                                    Operand::rows(dy, stride),
                                    Operand::transposed(
                                        &cols[k * patch * positions + start..],
                                        positions,
                                    ),
                                    [group_out, patch, n],
                                );
                            }
                            if wanted.bias {
                                let sums = &mut bias_grad[k * group_out..][..group_out];
                                for (r, sum) in sums.iter_mut().enumerate() {
                                    *sum += row_sum(&dy[r * stride..][..n]);
                                }
                            }
                            if let Some(input_grad) = input_grad.as_deref_mut() {
                                // Into the image's gradient (1x1) or its unfolded gradient,
                                // over the unfolded input this block no longer needs.
                                let dst = if g.pointwise() {
                                    &mut input_grad[i * image_in..][..image_in]
                                } else {
                                    &mut cols[..]
                                };
                                matmul_strided(
                                    &mut dst[k * patch * positions + start..],
                                    positions,
                                    false,
                                    Operand::transposed(&weight[k * group_out * patch..], patch),
                                    Operand::rows(dy, stride),
                                    [patch, n, group_out],
                                );
                            }
                        }
                    }
                    if let Some(input_grad) = input_grad.as_deref_mut()
                        && !g.pointwise()
                    {
                        fold(g, &cols, &mut input_grad[i * image_in..][..image_in]);
                    }
                }
                (weight_grad, bias_grad)
            })
            .collect();
        // SAFETY: the tasks' slots cover `0..input_len`, and each task zeroed its slot.
        unsafe { input_grad.set_len(input_len) };
        let mut sums = sums.into_iter();
        let (mut weight_grad, mut bias_grad) = sums.next().expect("a batch has a first image");
        for (w, b) in sums {
            weight_grad.iter_mut().zip(w).for_each(|(sum, v)| *sum += v);
            bias_grad.iter_mut().zip(b).for_each(|(sum, v)| *sum += v);
        }
        let [kh, kw] = g.kernel;
        [
            wanted
                .input
                .then(|| flex_tensor(input_grad, &[g.batch, g.c_in, g.height, g.width])),
            wanted
                .weight
                .then(|| flex_tensor(weight_grad, &[g.c_out, g.c_in / groups, kh, kw])),
            wanted.bias.then(|| {
                let bias_grad = bias_grad.into_iter().map(|v| v as f32).collect();
                flex_tensor(bias_grad, &[g.c_out])
            }),
        ]
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::{relative_error, values};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions as BurnOptions;
    use burn::tensor::{Device, Distribution, Tensor};
    use proptest::prelude::*;

    use super::ConvOptions;

    /// What one case runs: shapes, options, and which tensors carry gradients.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        input: [usize; 4],
        weight: [usize; 4],
        options: ConvOptions,
        bias: bool,
        input_grad: bool,
        weight_grad: bool,
        /// Bounds of a fused clamp (`conv2d_clamp` against burn's `conv2d` then `clamp`).
        clamp: Option<(f32, f32)>,
    }

    impl Case {
        fn new(input: [usize; 4], weight: [usize; 4], options: ConvOptions) -> Self {
            Self {
                input,
                weight,
                options,
                bias: true,
                input_grad: true,
                weight_grad: true,
                clamp: None,
            }
        }

        /// The case with a fused clamp to `[min, max]`.
        fn clamped(self, min: f32, max: f32) -> Self {
            Self {
                clamp: Some((min, max)),
                ..self
            }
        }
    }

    fn options(stride: usize, dilation: usize, padding: [[usize; 2]; 2]) -> ConvOptions {
        ConvOptions {
            stride: [stride, stride],
            dilation: [dilation, dilation],
            padding,
            groups: 1,
        }
    }

    /// [`options`] with `groups` channel groups.
    fn grouped(
        groups: usize,
        stride: usize,
        dilation: usize,
        padding: [[usize; 2]; 2],
    ) -> ConvOptions {
        ConvOptions {
            groups,
            ..options(stride, dilation, padding)
        }
    }

    /// The proptests' options: square strides and dilations, padding `[top, bottom, left,
    /// right]`.
    fn sampled(groups: usize, stride: usize, dilation: usize, pads: [usize; 4]) -> ConvOptions {
        grouped(
            groups,
            stride,
            dilation,
            [[pads[0], pads[1]], [pads[2], pads[3]]],
        )
    }

    /// Whether the kernel fits the padded input (proptest rejects the other samples; too many
    /// rejections fail the test, so a wrong check cannot pass silently).
    fn fits(case: &Case) -> bool {
        super::Geometry::new(case.input, case.weight, case.options).is_some()
    }

    /// Output and gradients (input, weight, bias; empty where not tracked) from flint's
    /// convolution and from burn's on the same tensors.
    fn both(case: Case, seed: u64) -> [[Vec<f32>; 4]; 2] {
        let device = Device::flex().autodiff();
        // Every random tensor drawn at once: other tests draw from burn's generator too.
        device.seed(seed);
        let normal = Distribution::Normal(0.0, 1.0);
        let mut x = Tensor::<4>::random(case.input, normal, &device);
        let mut w = Tensor::<4>::random(case.weight, normal, &device);
        let mut b = Tensor::<1>::random([case.weight[0]], normal, &device);
        let flint = super::conv2d(&x, &w, case.bias.then_some(&b), case.options)
            .expect("flex takes the host path");
        let weights = Tensor::<4>::random(flint.dims(), Distribution::Default, &device);
        if case.input_grad {
            x = x.require_grad();
        }
        if case.weight_grad {
            w = w.require_grad();
            b = b.require_grad();
        }
        let [[top, bottom], [left, right]] = case.options.padding;
        let burn_options = BurnOptions::new_with_padding(
            case.options.stride,
            [(top, bottom), (left, right)],
            case.options.dilation,
            case.options.groups,
        );
        let run = |flint: bool| {
            let bias = case.bias.then_some(&b);
            let output = match (flint, case.clamp) {
                (true, None) => super::conv2d(&x, &w, bias, case.options).unwrap(),
                (true, Some((min, max))) => {
                    super::conv2d_clamp(&x, &w, bias, case.options, min, max).unwrap()
                }
                (false, clamp) => {
                    let y = conv2d(x.clone(), w.clone(), bias.cloned(), burn_options.clone());
                    clamp.map_or(y.clone(), |(min, max)| y.clamp(min, max))
                }
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            let grad = |t: Option<Vec<f32>>| t.unwrap_or_default();
            [
                values(output),
                grad(x.grad(&grads).map(values)),
                grad(w.grad(&grads).map(values)),
                grad(case.bias.then(|| b.grad(&grads).map(values)).flatten()),
            ]
        };
        [run(true), run(false)]
    }

    fn assert_matches(case: Case, seed: u64) {
        let [flint, burn] = both(case, seed);
        for (name, (ours, theirs)) in ["output", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(flint.iter().zip(&burn))
        {
            assert_eq!(ours.len(), theirs.len(), "{name} of {case:?}");
            if !theirs.is_empty() {
                let error = relative_error(ours, theirs);
                assert!(error < 1e-5, "{name} of {case:?}: relative error {error}");
            }
        }
    }

    #[test]
    fn matches_burn_on_strides_dilations_and_padding() {
        let none = [[0, 0], [0, 0]];
        for case in [
            // The reference cnn's two layers, on a small batch.
            Case::new(
                [3, 1, 28, 28],
                [8, 1, 3, 3],
                options(1, 1, [[1, 1], [1, 1]]),
            ),
            Case::new(
                [5, 6, 14, 14],
                [7, 6, 3, 3],
                options(1, 1, [[1, 1], [1, 1]]),
            ),
            Case::new([2, 3, 9, 11], [4, 3, 3, 3], options(2, 1, [[1, 1], [1, 1]])),
            Case::new([2, 2, 10, 9], [3, 2, 3, 2], options(1, 2, [[2, 0], [0, 3]])),
            Case::new([1, 3, 7, 7], [5, 3, 7, 7], options(1, 1, none)),
            Case::new([2, 3, 8, 5], [4, 3, 1, 1], options(1, 1, none)),
            Case::new([2, 3, 8, 5], [4, 3, 1, 1], options(2, 1, [[1, 0], [0, 1]])),
            Case::new([2, 2, 5, 5], [3, 2, 5, 3], options(3, 1, [[2, 2], [1, 1]])),
            // Taps that see only padding: with dilation 2 and two columns of left padding, the
            // first kernel column of a 3-wide image reads nothing (proptest found it panicking).
            Case::new([1, 1, 3, 3], [1, 1, 1, 3], options(1, 2, [[0, 0], [2, 0]])),
            Case::new([1, 2, 4, 3], [2, 2, 3, 3], options(1, 2, [[2, 0], [0, 2]])),
        ] {
            assert_matches(case, 11);
        }
    }

    #[test]
    fn matches_burn_on_grouped_and_depthwise_convolutions() {
        let same = [[1, 1], [1, 1]];
        for case in [
            // MobileNetV2's 3x3 depthwise layers, stride 1 and 2, on a small batch.
            Case::new([2, 8, 12, 12], [8, 1, 3, 3], grouped(8, 1, 1, same)),
            Case::new([2, 8, 12, 12], [8, 1, 3, 3], grouped(8, 2, 1, same)),
            Case::new([3, 5, 7, 7], [5, 1, 3, 3], grouped(5, 2, 1, same)),
            // Channel multiplier 3, a 5x5 kernel (EfficientNet), dilation, asymmetric padding.
            Case::new(
                [2, 4, 9, 10],
                [12, 1, 5, 5],
                grouped(4, 1, 1, [[2, 2], [2, 2]]),
            ),
            Case::new(
                [2, 3, 11, 9],
                [6, 1, 3, 2],
                grouped(3, 2, 2, [[2, 0], [1, 3]]),
            ),
            // TensorFlow's "same" padding for stride 2: one more after than before.
            Case::new(
                [1, 6, 8, 8],
                [6, 1, 3, 3],
                grouped(6, 2, 1, [[0, 1], [0, 1]]),
            ),
            // A depthwise 1x1 kernel (a per-channel scale).
            Case::new(
                [2, 4, 5, 6],
                [8, 1, 1, 1],
                grouped(4, 1, 1, [[0, 0], [0, 0]]),
            ),
            // Grouped, 2 input and 3 output channels per group, with and without unfolding.
            Case::new([2, 6, 8, 7], [9, 2, 3, 3], grouped(3, 1, 1, same)),
            Case::new(
                [2, 6, 9, 9],
                [6, 3, 3, 3],
                grouped(2, 2, 2, [[1, 2], [3, 0]]),
            ),
            Case::new(
                [3, 8, 5, 5],
                [4, 4, 1, 1],
                grouped(2, 1, 1, [[0, 0], [0, 0]]),
            ),
            Case::new(
                [2, 4, 6, 6],
                [8, 2, 1, 1],
                grouped(2, 2, 1, [[1, 0], [0, 1]]),
            ),
        ] {
            assert_matches(case, 17);
        }
    }

    /// Plain and fused (ReLU6) steps compute only the gradients asked for.
    #[test]
    fn computes_only_the_gradients_asked_for() {
        let same = [[1, 1], [1, 1]];
        let cases = [
            Case::new([3, 4, 6, 6], [6, 4, 1, 1], options(1, 1, [[0, 0], [0, 0]])),
            Case::new([3, 2, 6, 6], [4, 2, 3, 3], options(1, 1, same)),
            Case::new([3, 4, 6, 6], [8, 1, 3, 3], grouped(4, 1, 1, same)),
            Case::new([3, 4, 6, 6], [6, 2, 3, 3], grouped(2, 1, 1, same)),
        ];
        for case in cases.into_iter().flat_map(|c| [c, c.clamped(0.0, 6.0)]) {
            for (input_grad, weight_grad, bias) in [
                (false, true, true),
                (true, false, true),
                (true, true, false),
                (false, true, false),
            ] {
                let case = Case {
                    input_grad,
                    weight_grad,
                    bias,
                    ..case
                };
                let [flint, _] = both(case, 3);
                assert_eq!(flint[1].is_empty(), !input_grad, "{case:?}");
                assert_eq!(flint[2].is_empty(), !weight_grad, "{case:?}");
                assert_matches(case, 3);
            }
        }
    }

    #[test]
    fn plain_tensors_give_burns_output() {
        let device = Device::flex();
        device.seed(5);
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([4, 3, 10, 10], normal, &device);
        let w = Tensor::<4>::random([6, 3, 3, 3], normal, &device);
        let b = Tensor::<1>::random([6], normal, &device);
        let depthwise = Tensor::<4>::random([6, 1, 3, 3], normal, &device);
        for (w, groups) in [(w, 1), (depthwise, 3)] {
            let options = grouped(groups, 2, 1, [[1, 0], [1, 0]]);
            let ours = super::conv2d(&x, &w, Some(&b), options).unwrap();
            let padding = [(1, 0), (1, 0)];
            let burn_options = BurnOptions::new_with_padding([2, 2], padding, [1, 1], groups);
            let theirs = conv2d(x.clone(), w, Some(b.clone()), burn_options);
            assert_eq!(ours.dims(), theirs.dims());
            assert!(relative_error(&values(ours), &values(theirs)) < 1e-5);
        }
    }

    #[test]
    fn declines_what_it_does_not_compute() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 4, 5, 5], &device);
        let same = options(1, 1, [[0, 0], [0, 0]]);
        // Channels that do not split into the groups: the weight's input channels times the
        // groups differ from the input's, output channels not a multiple of the groups, and
        // zero groups.
        let halves = Tensor::<4>::zeros([4, 2, 3, 3], &device);
        assert!(super::conv2d(&x, &halves, None, same).is_none());
        assert!(super::conv2d(&x, &halves, None, ConvOptions { groups: 3, ..same }).is_none());
        let odd = Tensor::<4>::zeros([5, 2, 3, 3], &device);
        assert!(super::conv2d(&x, &odd, None, ConvOptions { groups: 2, ..same }).is_none());
        let depthwise = Tensor::<4>::zeros([4, 1, 3, 3], &device);
        assert!(super::conv2d(&x, &depthwise, None, ConvOptions { groups: 0, ..same }).is_none());
        // A kernel larger than the padded input.
        let large = Tensor::<4>::zeros([2, 4, 7, 7], &device);
        assert!(super::conv2d(&x, &large, None, same).is_none());
        // A bias of the wrong length.
        let weight = Tensor::<4>::zeros([2, 4, 3, 3], &device);
        let bias = Tensor::<1>::zeros([3], &device);
        assert!(super::conv2d(&x, &weight, Some(&bias), same).is_none());
    }

    /// ReLU6, ReLU (an infinite max) and other bounds fused into every kind of convolution:
    /// pointwise, unfolded (strides, dilation, asymmetric padding), grouped and depthwise.
    #[test]
    fn fused_clamp_matches_conv_then_clamp() {
        let same = [[1, 1], [1, 1]];
        let none = [[0, 0], [0, 0]];
        for (min, max) in [(0.0, 6.0), (0.0, f32::INFINITY), (-0.5, 0.75)] {
            for case in [
                Case::new([2, 5, 8, 7], [6, 5, 1, 1], options(1, 1, none)),
                Case::new([2, 3, 9, 11], [4, 3, 3, 3], options(2, 1, same)),
                Case::new([2, 2, 10, 9], [3, 2, 3, 2], options(1, 2, [[2, 0], [0, 3]])),
                Case::new([2, 4, 8, 5], [4, 4, 1, 1], options(2, 1, [[1, 0], [0, 1]])),
                Case::new([2, 6, 8, 7], [9, 2, 3, 3], grouped(3, 1, 1, same)),
                Case::new([3, 8, 5, 5], [4, 4, 1, 1], grouped(2, 1, 1, none)),
                Case::new([2, 8, 12, 12], [8, 1, 3, 3], grouped(8, 2, 1, same)),
                Case::new(
                    [2, 4, 9, 10],
                    [12, 1, 5, 5],
                    grouped(4, 1, 1, [[2, 2], [2, 2]]),
                ),
            ] {
                assert_matches(case.clamped(min, max), 23);
            }
        }
    }

    /// Images wide enough for several column blocks (the last one shorter, not a multiple of
    /// 16), 1x1 and 3x3, over a batch split between threads.
    #[test]
    fn fused_clamp_over_several_column_blocks() {
        let same = [[1, 1], [1, 1]];
        for case in [
            Case::new(
                [3, 64, 41, 41],
                [128, 64, 1, 1],
                options(1, 1, [[0, 0], [0, 0]]),
            ),
            Case::new([3, 16, 39, 39], [32, 16, 3, 3], options(1, 1, same)),
            Case::new([2, 16, 39, 39], [32, 8, 3, 3], grouped(2, 1, 1, same)),
        ] {
            let conv = super::Conv {
                g: super::Geometry::new(case.input, case.weight, case.options).unwrap(),
                bounds: Some(super::Bounds { min: 0.0, max: 6.0 }),
            };
            let positions = conv.g.positions();
            assert!(conv.block_columns() < positions, "{case:?} is one block");
            assert!(
                !(positions % conv.block_columns()).is_multiple_of(16),
                "{case:?}"
            );
            assert_matches(case.clamped(0.0, 6.0), 29);
        }
    }

    /// The one documented difference: where the unclamped output equals a finite bound exactly,
    /// burn's clamp passes the gradient and the fused step does not (it keeps only the clamped
    /// output). A zero input and a zero bias give outputs of exactly 0: with `min = 0` burn's
    /// clamp sends the upstream gradient to the bias, the fused step sends none, which is
    /// burn's own `relu` gradient.
    #[test]
    fn fused_clamp_stops_the_gradient_on_a_bound() {
        let device = Device::flex().autodiff();
        device.seed(31);
        let x = Tensor::<4>::zeros([2, 3, 5, 5], &device).require_grad();
        for (weight, groups) in [([4, 3, 1, 1], 1), ([4, 3, 3, 3], 1), ([6, 1, 3, 3], 3)] {
            let w = Tensor::<4>::random(weight, Distribution::Default, &device).require_grad();
            let b = Tensor::<1>::zeros([weight[0]], &device).require_grad();
            let options = grouped(groups, 1, 1, [[1, 1], [1, 1]]);
            let burn_options = BurnOptions::new([1, 1], [1, 1], [1, 1], groups);
            let burn = || conv2d(x.clone(), w.clone(), Some(b.clone()), burn_options.clone());
            let upstream = Tensor::<4>::ones(burn().dims(), &device);
            let bias_grad = |y: Tensor<4>| {
                let grads = (y * upstream.clone()).sum().backward();
                values(b.grad(&grads).unwrap())
            };
            let fused = |max| super::conv2d_clamp(&x, &w, Some(&b), options, 0.0, max).unwrap();
            let [batch, _, out_h, out_w] = upstream.dims();
            let positions = (batch * out_h * out_w) as f32;
            let through_clamp = bias_grad(burn().clamp(0.0, 6.0));
            assert!(
                through_clamp.iter().all(|&g| g == positions),
                "{through_clamp:?}"
            );
            assert!(bias_grad(fused(6.0)).iter().all(|&g| g == 0.0));
            let through_relu = bias_grad(burn::tensor::activation::relu(burn()));
            assert_eq!(bias_grad(fused(f32::INFINITY)), through_relu);
            assert!(through_relu.iter().all(|&g| g == 0.0));
        }
    }

    #[test]
    fn fused_clamp_on_plain_tensors_and_declined_bounds() {
        let device = Device::flex();
        device.seed(37);
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<4>::random([3, 4, 10, 9], normal, &device);
        let b = Tensor::<1>::random([8], normal, &device);
        for (weight, groups, stride) in [
            ([8, 4, 1, 1], 1, 1),
            ([8, 2, 3, 3], 2, 2),
            ([8, 1, 3, 3], 4, 1),
        ] {
            let w = Tensor::<4>::random(weight, normal, &device);
            let options = grouped(groups, stride, 1, [[1, 0], [0, 1]]);
            let burn_options =
                BurnOptions::new_with_padding([stride; 2], [(1, 0), (0, 1)], [1, 1], groups);
            let theirs = conv2d(x.clone(), w.clone(), Some(b.clone()), burn_options);
            for (min, max) in [(0.0, 6.0), (0.0, f32::INFINITY), (-1.0, 0.5)] {
                let ours = super::conv2d_clamp(&x, &w, Some(&b), options, min, max).unwrap();
                let theirs = theirs.clone().clamp(min, max);
                assert!(relative_error(&values(ours), &values(theirs)) < 1e-5);
            }
            // NaN, equal or reversed bounds: left to the caller.
            for (min, max) in [(f32::NAN, 6.0), (0.0, f32::NAN), (1.0, 1.0), (6.0, 0.0)] {
                assert!(super::conv2d_clamp(&x, &w, Some(&b), options, min, max).is_none());
            }
        }
        // Shapes conv2d declines.
        let odd = Tensor::<4>::zeros([5, 2, 3, 3], &device);
        let options = grouped(2, 1, 1, [[0, 0], [0, 0]]);
        assert!(super::conv2d_clamp(&x, &odd, None, options, 0.0, 6.0).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_burn(
            batch in 1usize..5, c_in in 1usize..4, c_out in 1usize..5,
            height in 3usize..12, width in 3usize..12, kh in 1usize..4, kw in 1usize..4,
            stride in 1usize..3, dilation in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), bias: bool, seed in 0u64..1000,
        ) {
            let options = sampled(1, stride, dilation, pads);
            let case = Case {
                bias,
                ..Case::new([batch, c_in, height, width], [c_out, c_in, kh, kw], options)
            };
            prop_assume!(fits(&case));
            assert_matches(case, seed);
        }

        /// Depthwise (one input channel per group, channel multiplier 1 to 3) and grouped (1 to
        /// 3 input and output channels per group) convolutions.
        #[test]
        fn matches_burn_with_groups(
            batch in 1usize..4, groups in 2usize..5, per_in in 1usize..4, per_out in 1usize..4,
            height in 3usize..12, width in 3usize..12, kh in 1usize..4, kw in 1usize..4,
            stride in 1usize..3, dilation in 1usize..3, depthwise: bool,
            pads in proptest::array::uniform4(0usize..3), bias: bool, seed in 0u64..1000,
        ) {
            let per_in = if depthwise { 1 } else { per_in };
            let options = sampled(groups, stride, dilation, pads);
            let input = [batch, groups * per_in, height, width];
            let weight = [groups * per_out, per_in, kh, kw];
            let case = Case { bias, ..Case::new(input, weight, options) };
            prop_assume!(fits(&case));
            assert_matches(case, seed);
        }
        /// `conv2d_clamp` against burn's `conv2d` then `clamp`, values and gradients, on every
        /// kind of convolution (plain, grouped, depthwise; 1x1 and kxk; strides, dilations,
        /// asymmetric padding) and bounds (ReLU6, ReLU with an infinite max, others).
        #[test]
        fn fused_clamp_matches_burn(
            batch in 1usize..4, groups in 1usize..4, per_in in 1usize..4, per_out in 1usize..4,
            height in 3usize..12, width in 3usize..12, kh in 1usize..4, kw in 1usize..4,
            stride in 1usize..3, dilation in 1usize..3, depthwise: bool,
            pads in proptest::array::uniform4(0usize..3), bias: bool, kind in 0usize..3,
            min in -2.0f32..0.5, span in 0.1f32..3.0, seed in 0u64..1000,
        ) {
            let (groups, per_in) = if depthwise { (groups + 1, 1) } else { (groups, per_in) };
            let options = sampled(groups, stride, dilation, pads);
            let (min, max) = match kind {
                0 => (0.0, 6.0),
                1 => (0.0, f32::INFINITY),
                _ => (min, min + span),
            };
            let input = [batch, groups * per_in, height, width];
            let weight = [groups * per_out, per_in, kh, kw];
            let case = Case { bias, ..Case::new(input, weight, options) }.clamped(min, max);
            prop_assume!(fits(&case));
            assert_matches(case, seed);
        }
    }
}
