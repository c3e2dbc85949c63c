//! Depthwise 2-D convolution on flex's host buffers: one input channel per group, each seen by
//! `multiplier = c_out / c_in` output channels through their own `kh x kw` filters.
//!
//! Per group the im2col products of [`super::conv`] would be `[multiplier, kh * kw]` by
//! `[kh * kw, positions]`: far too thin for gemm. burn computes the forward step with a direct
//! loop, but its backward step runs one convolution and one copy of the whole weight gradient
//! per channel. Here every step is a direct loop over channel planes, kernel taps outside and
//! output columns inside (contiguous and vectorised for stride 1):
//! - forward: each output row is the bias plus, per tap, its weight times an input row;
//! - input gradient: each output-gradient row, times the tap's weight, is added back onto the
//!   input row it came from;
//! - weight and bias gradients: per tap, dot products of output-gradient rows with input rows,
//!   summed in f64 over rows and images.
//!
//! The forward step and the input gradient run one task per `(image, channel)` plane, the weight
//! and bias gradients one per output channel over all images (so each sum is taken in the same
//! order whatever the scheduling), on rayon's current pool like the other kernels.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::conv::Geometry;
use super::gemm::Wanted;
use super::weighted::WeightedOp;
use super::{flex_tensor, rows_per_task, written};

/// Work (multiply-adds) below which a run of planes stays on one thread.
const MIN_TASK: usize = 1 << 16;

/// A convolution with `groups == c_in`; the geometry is checked by `conv2d`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Depthwise(pub(crate) Geometry);

/// The valid output columns of each kernel column and the input column each run starts at.
#[derive(Clone, Copy)]
struct Run {
    /// First output column whose tap falls inside the input row.
    lo: usize,
    /// One past the last such column.
    hi: usize,
    /// Input column of output column `lo`.
    first: usize,
}

impl Depthwise {
    fn multiplier(&self) -> usize {
        self.0.c_out / self.0.c_in
    }

    fn taps(&self) -> usize {
        self.0.kernel[0] * self.0.kernel[1]
    }

    /// The column run of each kernel column `dx` (empty where the tap only sees padding).
    fn runs(&self) -> Vec<Run> {
        let g = &self.0;
        (0..g.kernel[1])
            .map(|dx| {
                let (lo, hi, offset) = g.columns(dx);
                let first = if lo < hi {
                    ((lo * g.options.stride[1]) as isize + offset) as usize
                } else {
                    0
                };
                Run { lo, hi, first }
            })
            .collect()
    }

    /// Planes per parallel task so that each task does at least [`MIN_TASK`] multiply-adds.
    fn planes_per_task(&self) -> usize {
        rows_per_task(self.0.positions() * self.taps(), MIN_TASK)
    }
}

/// `dst[i] += a * src[i * stride]`.
#[inline]
fn axpy(dst: &mut [f32], a: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        let src = &src[..dst.len()];
        for (d, s) in dst.iter_mut().zip(src) {
            *d += a * s;
        }
    } else {
        for (d, s) in dst.iter_mut().zip(src.iter().step_by(stride)) {
            *d += a * s;
        }
    }
}

/// `dst[i * stride] += a * src[i]`.
#[inline]
fn scatter(dst: &mut [f32], a: f32, src: &[f32], stride: usize) {
    if stride == 1 {
        for (d, s) in dst[..src.len()].iter_mut().zip(src) {
            *d += a * s;
        }
    } else {
        for (d, s) in dst.iter_mut().step_by(stride).zip(src) {
            *d += a * s;
        }
    }
}

/// `sum(a[i] * b[i * stride])`, in eight partial sums for stride 1 (so the loop vectorises).
#[inline]
fn dot(a: &[f32], b: &[f32], stride: usize) -> f32 {
    if stride != 1 {
        return a
            .iter()
            .zip(b.iter().step_by(stride))
            .map(|(x, y)| x * y)
            .sum();
    }
    let b = &b[..a.len()];
    let mut lanes = [0.0f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = a8
        .remainder()
        .iter()
        .zip(b8.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a8.zip(b8) {
        for lane in 0..8 {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

impl WeightedOp for Depthwise {
    /// The depthwise convolution of a contiguous `[batch, c_in, h, w]` input by a contiguous
    /// `[c_out, 1, kh, kw]` weight, plus `bias` per output channel.
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        let g = &self.0;
        let [kh, kw] = g.kernel;
        let (plane_in, plane_out) = (g.height * g.width, g.positions());
        let (multiplier, taps, stride) = (self.multiplier(), self.taps(), g.options.stride[1]);
        let runs = self.runs();
        let fill = |output: &mut [MaybeUninit<f32>]| {
            output
                .par_chunks_mut(plane_out)
                .with_min_len(self.planes_per_task())
                .enumerate()
                .for_each(|(index, out)| {
                    let (image, co) = (index / g.c_out, index % g.c_out);
                    let plane = &x[(image * g.c_in + co / multiplier) * plane_in..][..plane_in];
                    let weight = &weight[co * taps..][..taps];
                    let start = bias.map_or(0.0, |bias| bias[co]);
                    let out = filled(out, start);
                    for (oy, row) in out.chunks_exact_mut(g.out_w).enumerate() {
                        for dy in 0..kh {
                            let Some(iy) = g.row(oy, dy) else { continue };
                            let src = &plane[iy * g.width..][..g.width];
                            for (dx, run) in runs.iter().enumerate().filter(|(_, r)| r.lo < r.hi) {
                                let w = weight[dy * kw + dx];
                                axpy(&mut row[run.lo..run.hi], w, &src[run.first..], stride);
                            }
                        }
                    }
                })
        };
        // SAFETY: every output plane is filled with its bias (or zero) before being added to.
        let output = unsafe { written(g.batch * g.c_out * plane_out, fill) };
        flex_tensor(output, &[g.batch, g.c_out, g.out_h, g.out_w])
    }

    fn backward(
        &self,
        x: &[f32],
        weight: &[f32],
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3] {
        let g = &self.0;
        let [kh, kw] = g.kernel;
        let (plane_in, plane_out) = (g.height * g.width, g.positions());
        let (multiplier, taps, stride) = (self.multiplier(), self.taps(), g.options.stride[1]);
        let runs = self.runs();
        let live = |runs: &[Run]| -> Vec<(usize, Run)> {
            runs.iter()
                .copied()
                .enumerate()
                .filter(|(_, r)| r.lo < r.hi)
                .collect()
        };
        let runs = live(&runs);

        let input_grad = wanted.input.then(|| {
            let mut input_grad = vec![0.0f32; g.batch * g.c_in * plane_in];
            let per_task = rows_per_task(plane_out * taps * multiplier, MIN_TASK);
            input_grad
                .par_chunks_mut(plane_in)
                .with_min_len(per_task)
                .enumerate()
                .for_each(|(index, plane)| {
                    let (image, ci) = (index / g.c_in, index % g.c_in);
                    for co in ci * multiplier..(ci + 1) * multiplier {
                        let grad = &grad[(image * g.c_out + co) * plane_out..][..plane_out];
                        let weight = &weight[co * taps..][..taps];
                        for (oy, src) in grad.chunks_exact(g.out_w).enumerate() {
                            for dy in 0..kh {
                                let Some(iy) = g.row(oy, dy) else { continue };
                                let dst = &mut plane[iy * g.width..][..g.width];
                                for &(dx, run) in &runs {
                                    let w = weight[dy * kw + dx];
                                    let src = &src[run.lo..run.hi];
                                    scatter(&mut dst[run.first..], w, src, stride);
                                }
                            }
                        }
                    }
                });
            flex_tensor(input_grad, &[g.batch, g.c_in, g.height, g.width])
        });

        let sums: Vec<(Vec<f64>, f64)> = if wanted.weight || wanted.bias {
            (0..g.c_out)
                .into_par_iter()
                .map(|co| {
                    let mut weight_grad = vec![0.0f64; taps];
                    let mut bias_grad = 0.0f64;
                    for image in 0..g.batch {
                        let grad = &grad[(image * g.c_out + co) * plane_out..][..plane_out];
                        let ci = co / multiplier;
                        let plane = &x[(image * g.c_in + ci) * plane_in..][..plane_in];
                        for (oy, row) in grad.chunks_exact(g.out_w).enumerate() {
                            if wanted.bias {
                                bias_grad += row.iter().sum::<f32>() as f64;
                            }
                            if !wanted.weight {
                                continue;
                            }
                            for dy in 0..kh {
                                let Some(iy) = g.row(oy, dy) else { continue };
                                let src = &plane[iy * g.width..][..g.width];
                                for &(dx, run) in &runs {
                                    let d = dot(&row[run.lo..run.hi], &src[run.first..], stride);
                                    weight_grad[dy * kw + dx] += d as f64;
                                }
                            }
                        }
                    }
                    (weight_grad, bias_grad)
                })
                .collect()
        } else {
            Vec::new()
        };
        let weight_grad = wanted.weight.then(|| {
            let values = sums.iter().flat_map(|(w, _)| w.iter().map(|&v| v as f32));
            flex_tensor(values.collect(), &[g.c_out, 1, kh, kw])
        });
        let bias_grad = wanted.bias.then(|| {
            let values = sums.iter().map(|&(_, b)| b as f32).collect();
            flex_tensor(values, &[g.c_out])
        });
        [input_grad, weight_grad, bias_grad]
    }
}

/// Sets every element of `slice` to `value` and returns it, now initialised.
fn filled(slice: &mut [MaybeUninit<f32>], value: f32) -> &mut [f32] {
    slice.fill(MaybeUninit::new(value));
    // SAFETY: every element was just initialised.
    unsafe { &mut *(slice as *mut [MaybeUninit<f32>] as *mut [f32]) }
}
