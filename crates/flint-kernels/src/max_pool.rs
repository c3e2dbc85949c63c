//! Non-overlapping max pooling on flex's host buffers.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::hint::select_unpredictable;
use std::mem::MaybeUninit;
use std::sync::Arc;

use super::profile::{self, KernelKind};
use super::{
    AutodiffFlex, OnFlex, contiguous, dims, flex_tensor, on_flex, rows_per_task, values, written,
};

/// Max pooling with windows of `kernel` and the same stride, no padding: burn's
/// `max_pool2d(input, MaxPoolOptions::new(kernel).with_stride(kernel))`, the same values and
/// gradients (a NaN in a window wins, ties go to the first maximum, as in PyTorch). `None` where
/// the input is not an f32 tensor on flex, a window is empty or holds more than 256 elements
/// (positions are kept as one byte), or the input is smaller than a window (the caller then uses
/// burn's, which reports it).
///
/// # Shapes
/// - input: `[batch, channels, height, width]`
/// - output: `[batch, channels, height / kernel_h, width / kernel_w]` (rows and columns that do
///   not fill a window are dropped)
pub fn max_pool2d(input: &Tensor<4>, kernel: [usize; 2]) -> Option<Tensor<4>> {
    pooled(input, kernel, false)
}

/// [`max_pool2d`] followed by a ReLU in the same pass: burn's
/// `relu(max_pool2d(input, MaxPoolOptions::new(kernel).with_stride(kernel)))`, the same values
/// and gradients. Each output is its window's maximum where that is positive or NaN (burn's
/// ReLU keeps a NaN, as PyTorch's), zero otherwise (`-0.0` included); backward passes each
/// output gradient to its window's maximum where the output is positive or NaN, and nothing
/// where the ReLU zeroed it. As for pooling then ReLU, it equals ReLU then pooling, on a
/// quarter of the values for 2x2 windows (both keep order, and ReLU's gradient is zero wherever
/// a window's maximum is not positive). `None` as for [`max_pool2d`], and for windows over 255
/// elements (one byte value marks "no gradient").
///
/// # Shapes
/// As [`max_pool2d`].
pub fn max_pool2d_relu(input: &Tensor<4>, kernel: [usize; 2]) -> Option<Tensor<4>> {
    if kernel[0] * kernel[1] > usize::from(NO_GRADIENT) {
        return None;
    }
    pooled(input, kernel, true)
}

/// [`max_pool2d`], followed by a ReLU where `relu`.
fn pooled(input: &Tensor<4>, kernel: [usize; 2], relu: bool) -> Option<Tensor<4>> {
    let [_, _, height, width] = input.dims();
    let [kh, kw] = kernel;
    if kh == 0 || kw == 0 || kh * kw > 256 || height < kh || width < kw {
        return None;
    }
    Some(match on_flex(input)? {
        OnFlex::Plain(x) => Tensor::from_primitive::<Flex>(pool(&x, kernel, relu).0),
        OnFlex::Autodiff(x) => {
            Tensor::from_primitive::<AutodiffFlex>(pool_tracked(x, kernel, relu))
        }
    })
}

/// The position kept for a window whose fused ReLU output is zero: its gradient goes nowhere.
/// Never a window position of a fused pooling (those windows hold at most 255 elements).
const NO_GRADIENT: u8 = u8::MAX;

/// Where each window's maximum was, as `row * kernel_width + column` in the window, or
/// [`NO_GRADIENT`] where a fused ReLU zeroed the window's output.
#[derive(Clone, Debug)]
struct Argmax {
    positions: Arc<Vec<u8>>,
    input_dims: [usize; 4],
    kernel: [usize; 2],
}

#[derive(Debug)]
struct MaxPoolBackward;

impl Backward<Flex, 1> for MaxPoolBackward {
    type State = Argmax;

    fn backward(self, ops: Ops<Argmax, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let argmax = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| unpool(&grad, &argmax));
    }
}

fn pool_tracked(
    x: FloatTensor<AutodiffFlex>,
    kernel: [usize; 2],
    relu: bool,
) -> FloatTensor<AutodiffFlex> {
    match MaxPoolBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let (output, argmax) = pool(x.primitive(), kernel, relu);
            prep.finish(argmax, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(pool(x.primitive(), kernel, relu).0),
    }
}

/// Non-overlapping max pooling of a `[n, c, h, w]` f32 tensor, followed by a ReLU where
/// `relu`; windows that do not fit (`h % kh` last rows, `w % kw` last columns) are dropped, as
/// PyTorch does.
fn pool(x: &FlexTensor, kernel: [usize; 2], relu: bool) -> (FlexTensor, Argmax) {
    let _span = profile::span(KernelKind::MaxPoolForward, 0);
    let x = contiguous(x);
    let shape = dims(&x);
    let (planes, height, width) = (shape[0] * shape[1], shape[2], shape[3]);
    let [kh, kw] = kernel;
    let (out_h, out_w) = (height / kh, width / kw);
    let input = values(&x);
    let plane_out = out_h * out_w;
    // Offset of each window position from the window's corner.
    let offsets: Vec<usize> = (0..kh * kw).map(|at| (at / kw) * width + at % kw).collect();
    let per_task = rows_per_task(height * width, 1 << 15);
    let mut positions = Vec::new();
    // SAFETY: each plane's output rows cover its chunk, and `pool_plane` writes every window of
    // each row to both the output and the positions.
    let output = unsafe {
        written(planes * plane_out, |output| {
            positions = written(planes * plane_out, |positions| {
                output
                    .par_chunks_mut(plane_out)
                    .zip(positions.par_chunks_mut(plane_out))
                    .enumerate()
                    .with_min_len(per_task)
                    .for_each(|(plane, (out, pos))| {
                        let src = &input[plane * height * width..][..height * width];
                        // One loop per case, without a test of `relu` per window.
                        if relu {
                            pool_plane::<true>(src, out, pos, width, kernel, &offsets);
                        } else {
                            pool_plane::<false>(src, out, pos, width, kernel, &offsets);
                        }
                    })
            })
        })
    };
    let argmax = Argmax {
        positions: Arc::new(positions),
        input_dims: [shape[0], shape[1], height, width],
        kernel,
    };
    (
        flex_tensor(output, &[shape[0], shape[1], out_h, out_w]),
        argmax,
    )
}

/// Pools one plane `src` of rows of `width` into `out` and `positions` (`out_h * out_w` each,
/// every element written), with a ReLU after each window where `RELU`.
#[inline(always)]
fn pool_plane<const RELU: bool>(
    src: &[f32],
    out: &mut [MaybeUninit<f32>],
    positions: &mut [MaybeUninit<u8>],
    width: usize,
    [kh, kw]: [usize; 2],
    offsets: &[usize],
) {
    let out_w = width / kw;
    let finish = |best: (f32, u8)| if RELU { relu_max(best) } else { best };
    for (oy, (out, pos)) in out
        .chunks_exact_mut(out_w)
        .zip(positions.chunks_exact_mut(out_w))
        .enumerate()
    {
        if [kh, kw] == [2, 2] {
            let top = &src[2 * oy * width..][..2 * out_w];
            let bottom = &src[(2 * oy + 1) * width..][..2 * out_w];
            for (((o, p), t), b) in out
                .iter_mut()
                .zip(pos.iter_mut())
                .zip(top.chunks_exact(2))
                .zip(bottom.chunks_exact(2))
            {
                let (value, at) = finish(window_max([t[0], t[1], b[0], b[1]]));
                o.write(value);
                p.write(at);
            }
        } else {
            for (ox, (o, p)) in out.iter_mut().zip(pos.iter_mut()).enumerate() {
                let corner = &src[oy * kh * width + ox * kw..];
                let mut best = (corner[0], 0u8);
                for (at, &offset) in offsets.iter().enumerate().skip(1) {
                    best = keep_max(best, corner[offset], at as u8);
                }
                let (value, at) = finish(best);
                o.write(value);
                p.write(at);
            }
        }
    }
}

/// burn-flex's ReLU of a window's maximum: the maximum where it is positive or NaN, `+0.0`
/// and [`NO_GRADIENT`] otherwise (burn's `relu_backward` passes the gradient exactly where the
/// output is positive or NaN).
#[inline(always)]
fn relu_max((value, at): (f32, u8)) -> (f32, u8) {
    let keep = value.is_nan() | (value > 0.0);
    (
        f32::from_bits(select_unpredictable(keep, value.to_bits(), 0)),
        select_unpredictable(keep, at, NO_GRADIENT),
    )
}

/// `(value, at)` or `(best, at)` of the two, whichever wins: the larger value, the earlier one on
/// a tie, a NaN over any number and the later of two NaNs (as PyTorch and burn). Written as
/// selects, not branches: on random activations a branch per comparison mispredicts half the time.
#[inline(always)]
fn keep_max((best, best_at): (f32, u8), value: f32, at: u8) -> (f32, u8) {
    let take = value.is_nan() | (value > best);
    // On integers: x86's baseline has no select for floats, and LLVM branches instead.
    let bits = select_unpredictable(take, value.to_bits(), best.to_bits());
    (
        f32::from_bits(bits),
        select_unpredictable(take, at, best_at),
    )
}

/// The maximum of a 2x2 window in row-major order and its position, as [`keep_max`] over the
/// four in order would find it. Without NaNs: the maximum from `maxss`-style comparisons and the
/// first position holding it from integer arithmetic, so neither branches (LLVM turns selects
/// on floats back into branches where it does not vectorise the loop, as for the last windows
/// of a row).
#[inline(always)]
fn window_max(window: [f32; 4]) -> (f32, u8) {
    let [a, b, c, d] = window;
    if a.is_nan() | b.is_nan() | c.is_nan() | d.is_nan() {
        let best = keep_max((a, 0), b, 1);
        let best = keep_max(best, c, 2);
        return keep_max(best, d, 3);
    }
    let max = |x: f32, y: f32| if y > x { y } else { x };
    let m = max(max(max(a, b), c), d);
    let differs = |v: f32| (v != m) as u8;
    (m, differs(a) * (1 + differs(b) * (1 + differs(c))))
}

/// The gradient of the pooling's input: each output gradient at its window's maximum, zero
/// elsewhere (windows do not overlap, so every input gets at most one), and zero over the
/// whole window where the position is [`NO_GRADIENT`] (a fused ReLU zeroed its output). Each task writes its
/// planes whole, zeros included, so there is no serial zero-filling pass over the whole
/// gradient first (a memset of the full input size on the calling thread, while the other
/// threads waited).
fn unpool(grad: &FlexTensor, argmax: &Argmax) -> FlexTensor {
    let _span = profile::span(KernelKind::MaxPoolBackward, 0);
    let grad = contiguous(grad);
    let grad = values(&grad);
    let [n, c, height, width] = argmax.input_dims;
    let [kh, kw] = argmax.kernel;
    let (out_h, out_w) = (height / kh, width / kw);
    let plane_out = out_h * out_w;
    // Offset of each window position from the window's corner (no division per element).
    let offsets: Vec<usize> = (0..kh * kw).map(|at| (at / kw) * width + at % kw).collect();
    let per_task = rows_per_task(height * width, 1 << 15);
    let zero = |values: &mut [MaybeUninit<f32>]| values.iter_mut().for_each(|v| _ = v.write(0.0));
    // SAFETY: each task writes every element of its planes: in the 2x2 case each window's four
    // elements, then the columns and rows no window covers; otherwise zeros, then the maxima.
    let input_grad = unsafe {
        written(n * c * height * width, |input_grad| {
            input_grad
                .par_chunks_mut(height * width)
                .enumerate()
                .with_min_len(per_task)
                .for_each(|(plane, dst)| {
                    let grad = &grad[plane * plane_out..(plane + 1) * plane_out];
                    let positions = &argmax.positions[plane * plane_out..(plane + 1) * plane_out];
                    if [kh, kw] != [2, 2] {
                        zero(dst);
                    }
                    for oy in 0..out_h {
                        let grad = &grad[oy * out_w..][..out_w];
                        let positions = &positions[oy * out_w..][..out_w];
                        if [kh, kw] == [2, 2] {
                            // Every element of each window written in order, zero or the
                            // gradient, rather than one scattered store per window
                            // (`NO_GRADIENT` matches no position: the window stays zero).
                            let (top, bottom) = dst[2 * oy * width..].split_at_mut(width);
                            let bottom = &mut bottom[..width];
                            let pairs = top.chunks_exact_mut(2).zip(bottom.chunks_exact_mut(2));
                            for ((t, b), (&g, &at)) in pairs.zip(grad.iter().zip(positions)) {
                                let at_or_zero = |here: u8| {
                                    f32::from_bits(select_unpredictable(at == here, g.to_bits(), 0))
                                };
                                t[0].write(at_or_zero(0));
                                t[1].write(at_or_zero(1));
                                b[0].write(at_or_zero(2));
                                b[1].write(at_or_zero(3));
                            }
                            // An odd width's last column.
                            zero(&mut top[2 * out_w..]);
                            zero(&mut bottom[2 * out_w..]);
                        } else {
                            for (ox, (&g, &at)) in grad.iter().zip(positions).enumerate() {
                                // `NO_GRADIENT` is past the offsets of a fused pooling's
                                // windows: those windows keep their zeros.
                                if let Some(&offset) = offsets.get(usize::from(at)) {
                                    dst[oy * kh * width + ox * kw + offset].write(g);
                                }
                            }
                        }
                    }
                    if [kh, kw] == [2, 2] {
                        // An odd height's last row.
                        zero(&mut dst[2 * out_h * width..]);
                    }
                })
        })
    };
    flex_tensor(input_grad, &[n, c, height, width])
}

#[cfg(test)]
mod tests {
    use crate::test_util::values;
    use burn::tensor::activation::relu;
    use burn::tensor::module::max_pool2d;
    use burn::tensor::ops::MaxPoolOptions;
    use burn::tensor::{Device, Distribution, Tensor, TensorData};
    use proptest::prelude::*;

    /// Output and input gradient of flint's pooling and of burn's on the same input (each
    /// followed by its ReLU where `relu`).
    fn both(
        dims: [usize; 4],
        kernel: [usize; 2],
        seed: u64,
        relu: bool,
    ) -> [(Vec<f32>, Vec<f32>); 2] {
        let device = Device::flex().autodiff();
        // Both inputs drawn at once: other tests draw from burn's process-wide generator too.
        device.seed(seed);
        let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device).require_grad();
        let [n, c, h, w] = dims;
        let pooled = [n, c, h / kernel[0], w / kernel[1]];
        let weights = Tensor::<4>::random(pooled, Distribution::Default, &device);
        pool_both(&x, &weights, kernel, relu)
    }

    /// Output and input gradient of flint's pooling and of burn's on `x`, for the loss
    /// `sum(output * weights)`: `max_pool2d` and burn's, or where `relu` `max_pool2d_relu` and
    /// burn's pooling then burn's ReLU.
    fn pool_both(
        x: &Tensor<4>,
        weights: &Tensor<4>,
        kernel: [usize; 2],
        fused_relu: bool,
    ) -> [(Vec<f32>, Vec<f32>); 2] {
        let run = |flint: bool| {
            let output = match (flint, fused_relu) {
                (true, false) => super::max_pool2d(x, kernel).expect("flex takes the host path"),
                (true, true) => {
                    super::max_pool2d_relu(x, kernel).expect("flex takes the host path")
                }
                (false, false) => max_pool2d(x.clone(), MaxPoolOptions::new(kernel)),
                (false, true) => relu(max_pool2d(x.clone(), MaxPoolOptions::new(kernel))),
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            (values(output), values(x.grad(&grads).unwrap()))
        };
        [run(true), run(false)]
    }

    #[test]
    fn matches_burn_on_odd_sizes_and_windows() {
        for (dims, kernel) in [
            ([2, 3, 8, 8], [2, 2]),
            ([1, 2, 7, 9], [2, 2]),
            ([3, 1, 9, 10], [3, 2]),
            ([2, 2, 5, 5], [1, 1]),
        ] {
            for relu in [false, true] {
                let [(out, grad), (burn_out, burn_grad)] = both(dims, kernel, 7, relu);
                assert_eq!(
                    out, burn_out,
                    "output for {dims:?} / {kernel:?}, relu {relu}"
                );
                assert_eq!(grad, burn_grad, "input gradient for {dims:?} / {kernel:?}");
            }
        }
    }

    #[test]
    fn each_window_passes_its_gradient_to_its_maximum_only() {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_floats([[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 9.0, 8.0]]]], &device)
            .require_grad();
        let output = super::max_pool2d(&x, [2, 2]).unwrap();
        assert_eq!(values(output.clone()), vec![5.0, 9.0]);
        let grads = (output * Tensor::from_floats([[[[10.0, 20.0]]]], &device))
            .sum()
            .backward();
        assert_eq!(
            values(x.grad(&grads).unwrap()),
            vec![0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 20.0, 0.0]
        );
    }

    #[test]
    fn declines_windows_it_does_not_compute() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([1, 1, 20, 20], &device);
        assert!(super::max_pool2d(&x, [0, 2]).is_none());
        // 17 x 17 = 289 positions do not fit in a byte.
        assert!(super::max_pool2d(&x, [17, 17]).is_none());
        assert!(super::max_pool2d(&x, [21, 1]).is_none());
        assert!(super::max_pool2d(&x, [16, 16]).is_some());
        // The fused ReLU keeps one byte value for "no gradient": 255 positions at most.
        assert!(super::max_pool2d_relu(&x, [16, 16]).is_none());
        assert!(super::max_pool2d_relu(&x, [0, 2]).is_none());
        assert!(super::max_pool2d_relu(&x, [15, 17]).is_some());
    }

    /// The fused ReLU on 2x2 windows: a positive maximum keeps its value and gradient; windows
    /// of negatives, of zeros of either sign and a negative maximum give +0 and no gradient; a
    /// NaN stays NaN and passes its gradient, as burn's ReLU does.
    #[test]
    fn relu_zeroes_windows_without_a_positive_maximum() {
        let device = Device::flex().autodiff();
        let nan = f32::NAN;
        let rows = [
            [1.0, 5.0, -1.0, -2.0, -0.0, -0.0, 0.0, -3.0, -1.0, 2.0],
            [3.0, 4.0, -3.0, -0.5, -0.0, -0.0, -0.0, -1.0, 0.0, nan],
        ];
        let x = Tensor::<4>::from_floats([[rows]], &device).require_grad();
        let output = super::max_pool2d_relu(&x, [2, 2]).unwrap();
        let out = values(output.clone());
        assert_eq!(out[..4], [5.0, 0.0, 0.0, 0.0]);
        assert!(out[4].is_nan());
        // `+0.0`, as burn's ReLU writes, never `-0.0`.
        assert!(out[..4].iter().all(|v| v.is_sign_positive()));
        let weights = Tensor::<4>::from_floats([[[[10.0, 20.0, 30.0, 40.0, 50.0]]]], &device);
        let grads = (output * weights).sum().backward();
        let mut expected = [[0.0f32; 10]; 2];
        expected[0][1] = 10.0;
        expected[1][9] = 50.0;
        assert_eq!(values(x.grad(&grads).unwrap()), expected.concat());
    }

    /// The largest fused window, 255 positions: its maximum at the last position (254, one
    /// below the "no gradient" mark) in one plane, all negatives in the other.
    #[test]
    fn relu_on_the_largest_window_matches_burn() {
        let dims = [1, 2, 15, 17];
        let plane = 15 * 17;
        let mut data: Vec<f32> = (0..2 * plane).map(|i| -1.0 - (i % 7) as f32).collect();
        data[plane - 1] = 3.0;
        let [flint, burn] = both_on(data, dims, [15, 17], true);
        assert_eq!(flint, burn);
        assert_eq!(flint.1[plane - 1], 1.0);
        assert!(flint.1[plane..].iter().all(|&g| g == 0.0));
    }

    #[test]
    fn a_nan_in_a_window_wins() {
        let device = Device::flex();
        let x = Tensor::<4>::from_floats([[[[1.0, f32::NAN], [3.0, 4.0]]]], &device);
        assert!(values(super::max_pool2d(&x, [2, 2]).unwrap())[0].is_nan());
    }

    #[test]
    fn nans_and_ties_pick_the_same_position_as_burn() {
        let device = Device::flex().autodiff();
        let nan = f32::NAN;
        // Windows (2x2, row-major): one NaN, two NaNs, a tie, a NaN first, all equal, zeros of
        // both signs, a tie in the bottom row.
        let rows = [
            [
                1.0, nan, nan, 2.0, 3.0, 3.0, nan, 0.0, 5.0, 5.0, -0.0, 0.0, 1.0, 2.0,
            ],
            [
                3.0, 4.0, 1.0, nan, 1.0, 2.0, 9.0, 8.0, 5.0, 5.0, 0.0, -0.0, 7.0, 7.0,
            ],
        ];
        let x = Tensor::<4>::from_floats([[rows]], &device).require_grad();
        let weights = Tensor::<4>::from_floats([[[[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]]]], &device);
        let run = |flint: bool| {
            let output = if flint {
                super::max_pool2d(&x, [2, 2]).unwrap()
            } else {
                max_pool2d(x.clone(), MaxPoolOptions::new([2, 2]))
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            let bits = |v: Vec<f32>| {
                v.iter()
                    .map(|v| if v.is_nan() { 0 } else { v.to_bits() })
                    .collect::<Vec<_>>()
            };
            (bits(values(output)), values(x.grad(&grads).unwrap()))
        };
        let (flint, burn) = (run(true), run(false));
        assert_eq!(flint, burn);
        // The later NaN wins in the second window.
        assert_eq!(flint.1[17], 2.0);
    }

    /// Output (NaNs compared as NaN) and input gradient of flint's pooling and of burn's on
    /// `data`, with gradient weights 1, 2, 3, ... on the output.
    fn both_on(
        data: Vec<f32>,
        dims: [usize; 4],
        kernel: [usize; 2],
        relu: bool,
    ) -> [(Vec<u32>, Vec<f32>); 2] {
        let device = Device::flex().autodiff();
        let x = Tensor::<4>::from_data(TensorData::new(data, dims), &device).require_grad();
        let [n, c, h, w] = dims;
        let pooled = [n, c, h / kernel[0], w / kernel[1]];
        let count = pooled.iter().product::<usize>();
        let weights: Vec<f32> = (1..=count).map(|v| v as f32).collect();
        let weights = Tensor::<4>::from_data(TensorData::new(weights, pooled), &device);
        pool_both(&x, &weights, kernel, relu).map(|(output, grad)| {
            let bits = output
                .iter()
                .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
                .collect();
            (bits, grad)
        })
    }

    /// 2x2 windows: ties everywhere (values from a set of five, zeros of both signs included)
    /// must pick the same first maximum as burn, in planes with and without a NaN.
    #[test]
    fn ties_in_2x2_windows_pick_the_same_position_as_burn() {
        let levels = [-1.0f32, -0.0, 0.0, 0.5, 1.0];
        let dims = [2, 3, 6, 8];
        let len = dims.iter().product::<usize>();
        let mut data: Vec<f32> = (0..len).map(|i| levels[(i * 7 + i / 5) % 5]).collect();
        for relu in [false, true] {
            let [flint, burn] = both_on(data.clone(), dims, [2, 2], relu);
            assert_eq!(flint, burn, "relu {relu}");
        }
        // One NaN in the second plane only.
        data[48 + 9] = f32::NAN;
        for relu in [false, true] {
            let [flint, burn] = both_on(data.clone(), dims, [2, 2], relu);
            assert_eq!(flint, burn, "relu {relu}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_burn(
            batch in 1usize..4, channels in 1usize..5, height in 2usize..12, width in 2usize..12,
            kh in 1usize..3, kw in 1usize..3, seed in 0u64..1000, relu: bool,
        ) {
            let [(out, grad), (burn_out, burn_grad)] =
                both([batch, channels, height, width], [kh, kw], seed, relu);
            prop_assert_eq!(out, burn_out);
            prop_assert_eq!(grad, burn_grad);
        }

        /// Inputs with many ties (values from a set of five, zeros of both signs) and now and
        /// then a NaN, on every path: 2x2 with even and odd widths and other windows.
        #[test]
        fn matches_burn_with_ties_and_nans(
            batch in 1usize..3, channels in 1usize..4, height in 2usize..10, width in 2usize..12,
            kh in 1usize..4, kw in 1usize..4, picks in proptest::collection::vec(0usize..5, 500),
            nan_at in proptest::option::of(0usize..500), relu: bool,
        ) {
            let levels = [-1.0f32, -0.0, 0.0, 0.5, 1.0];
            let dims = [batch, channels, height, width];
            let len = dims.iter().product::<usize>();
            let mut data: Vec<f32> = (0..len).map(|i| levels[picks[i % picks.len()]]).collect();
            if let Some(at) = nan_at.filter(|&at| at < len) {
                data[at] = f32::NAN;
            }
            let kernel = [kh.min(height), kw.min(width)];
            let [flint, burn] = both_on(data, dims, kernel, relu);
            prop_assert_eq!(flint, burn);
        }
    }
}
