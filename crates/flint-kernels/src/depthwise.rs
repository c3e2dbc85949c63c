//! Depthwise 2-D convolution on flex's host buffers: one input channel per group, each seen by
//! `multiplier = c_out / c_in` output channels through their own `kh x kw` filters.
//!
//! Per group the im2col products of [`super::conv`] would be `[multiplier, kh * kw]` by
//! `[kh * kw, positions]`: far too thin for gemm. burn computes the forward step with a direct
//! loop, but its backward step runs one convolution and one copy of the whole weight gradient
//! per channel. Here every step is a direct loop over one `(image, input channel)` plane at a
//! time, whose inner loops run over the whole plane at once:
//!
//! - the padded input plane is split into `stride_h * stride_w` phase planes (phase `(a, b)`
//!   holds padded rows `a, a + stride_h, ..` and columns `b, b + stride_w, ..`), so each kernel
//!   tap reads one phase plane at a fixed offset: stride 1, whatever the convolution's stride;
//! - outputs are laid out with the phase planes' row length (a few extra columns per row, dropped
//!   at the end), so each tap is one contiguous multiply-add over the whole plane, not one per
//!   output row: long vector loops even for MobileNet's 7x7 planes;
//! - forward: output = bias + Σ_tap weight · phase plane at the tap's offset;
//! - input gradient: Σ_tap weight · output gradient, added onto the phase planes at the tap's
//!   offset, then folded back into the image (padding dropped);
//! - weight and bias gradients: per tap, the dot product of the output gradient with the phase
//!   plane at the tap's offset, in f32 blocks summed in f64.
//!
//! Tasks are runs of `(image, input channel)` planes on rayon's current pool, like the other
//! kernels. Each task writes its planes' weight and bias gradient terms to its own slots, summed
//! over the images afterwards in a fixed order, so the result does not depend on scheduling.
//! The loops are compiled for AVX-512 and AVX2 besides the baseline and picked at run time.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::conv::{ConvOptions, Geometry};
use super::gemm::Wanted;
use super::weighted::WeightedOp;
use super::{flex_tensor, rows_per_task, written};

/// Work (multiply-adds) below which a run of planes stays on one thread.
const MIN_TASK: usize = 1 << 16;

/// Products summed in f32 before the running sum moves to f64 (weight and bias gradients).
const BLOCK: usize = 256;

/// A convolution with `groups == c_in`; the geometry is checked by `conv2d`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Depthwise(pub(crate) Geometry);

/// Where one plane's values live in the phase planes, and where each tap reads.
#[derive(Clone, Debug)]
struct Plan {
    width: usize,
    out_h: usize,
    out_w: usize,
    stride: [usize; 2],
    /// Top and left padding.
    before: [usize; 2],
    /// Rows and columns of each phase plane.
    phase_h: usize,
    phase_w: usize,
    /// Offset of each tap (row-major over the kernel) in the phase planes' buffer.
    taps: Vec<usize>,
    multiplier: usize,
}

impl Plan {
    fn new(g: &Geometry) -> Self {
        let ConvOptions {
            stride,
            dilation,
            padding,
            ..
        } = g.options;
        let padded_h = g.height + padding[0][0] + padding[0][1];
        let padded_w = g.width + padding[1][0] + padding[1][1];
        let (phase_h, phase_w) = (padded_h.div_ceil(stride[0]), padded_w.div_ceil(stride[1]));
        let [kh, kw] = g.kernel;
        let mut taps = Vec::with_capacity(kh * kw);
        for dy in 0..kh {
            for dx in 0..kw {
                let [y, x] = [dy * dilation[0], dx * dilation[1]];
                let phase = (y % stride[0]) * stride[1] + x % stride[1];
                taps.push(phase * phase_h * phase_w + (y / stride[0]) * phase_w + x / stride[1]);
            }
        }
        Self {
            width: g.width,
            out_h: g.out_h,
            out_w: g.out_w,
            stride,
            before: [padding[0][0], padding[1][0]],
            phase_h,
            phase_w,
            taps,
            multiplier: g.c_out / g.c_in,
        }
    }

    /// Length of the phase planes' buffer.
    fn phases(&self) -> usize {
        self.stride[0] * self.stride[1] * self.phase_h * self.phase_w
    }

    /// Length of an output plane laid out with the phase planes' row length: output `(oy, ox)`
    /// at `oy * phase_w + ox`. Every tap's read of this length stays inside the phase buffer:
    /// the last valid output reads the last padded row and column of its phase.
    fn span(&self) -> usize {
        (self.out_h - 1) * self.phase_w + self.out_w
    }

    /// Where input row `iy` lands: for each phase column `b`, the first input column of that
    /// phase and the phase-buffer index it goes to (the row's later columns of the phase
    /// follow one `stride_w` apart in the input, adjacent in the phase plane).
    fn row_runs(&self, iy: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let [sy, sx] = self.stride;
        let r = iy + self.before[0];
        let plane = self.phase_h * self.phase_w;
        let base = (r % sy) * sx * plane + (r / sy) * self.phase_w;
        let left = self.before[1];
        (0..sx)
            .map(move |b| {
                // The first input column `ix` with `(left + ix) % sx == b`.
                let ix = (b + sx - left % sx) % sx;
                (ix, base + b * plane + (left + ix) / sx)
            })
            .filter(|&(ix, _)| ix < self.width)
    }

    /// Splits the `[height, width]` plane into the zero-padded phase planes.
    #[inline(always)]
    fn split(&self, plane: &[f32], phases: &mut [f32]) {
        phases.fill(0.0);
        let sx = self.stride[1];
        for (iy, row) in plane.chunks_exact(self.width).enumerate() {
            for (ix, start) in self.row_runs(iy) {
                let src = row.iter().skip(ix).step_by(sx);
                for (d, &v) in phases[start..].iter_mut().zip(src) {
                    *d = v;
                }
            }
        }
    }

    /// The reverse of [`Plan::split`]: the plane's values from the phase planes (padding
    /// dropped).
    #[inline(always)]
    fn join(&self, phases: &[f32], plane: &mut [f32]) {
        let sx = self.stride[1];
        for (iy, row) in plane.chunks_exact_mut(self.width).enumerate() {
            for (ix, start) in self.row_runs(iy) {
                let dst = row.iter_mut().skip(ix).step_by(sx);
                for (d, &v) in dst.zip(&phases[start..]) {
                    *d = v;
                }
            }
        }
    }
}

/// `dst[i] += a * src[i]`.
#[inline(always)]
fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
    let src = &src[..dst.len()];
    for (d, s) in dst.iter_mut().zip(src) {
        *d += a * s;
    }
}

/// `Σ a[i] * b[i]`, in f32 blocks of [`BLOCK`] (sixteen partial sums each, so the loop
/// vectorises) summed in f64.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f64 {
    let b = &b[..a.len()];
    let mut total = 0.0f64;
    for (a, b) in a.chunks(BLOCK).zip(b.chunks(BLOCK)) {
        let mut lanes = [0.0f32; 16];
        let (a16, b16) = (a.chunks_exact(16), b.chunks_exact(16));
        let tail: f32 = a16
            .remainder()
            .iter()
            .zip(b16.remainder())
            .map(|(x, y)| x * y)
            .sum();
        for (x, y) in a16.zip(b16) {
            for lane in 0..16 {
                lanes[lane] += x[lane] * y[lane];
            }
        }
        total += (lanes.iter().sum::<f32>() + tail) as f64;
    }
    total
}

/// `Σ values`, in f32 blocks of [`BLOCK`] summed in f64.
#[inline(always)]
fn sum(values: &[f32]) -> f64 {
    values
        .chunks(BLOCK)
        .map(|block| {
            let mut lanes = [0.0f32; 16];
            let chunks = block.chunks_exact(16);
            let tail: f32 = chunks.remainder().iter().sum();
            for x in chunks {
                for lane in 0..16 {
                    lanes[lane] += x[lane];
                }
            }
            (lanes.iter().sum::<f32>() + tail) as f64
        })
        .sum()
}

/// Buffers one task reuses from plane to plane.
struct Scratch {
    /// The phase planes of the input.
    phases: Vec<f32>,
    /// The phase planes of the input's gradient.
    grad_phases: Vec<f32>,
    /// One output (or output gradient) plane in the phase planes' row length.
    spread: Vec<f32>,
}

impl Scratch {
    fn new(plan: &Plan) -> Self {
        Self {
            phases: vec![0.0; plan.phases()],
            grad_phases: Vec::new(),
            spread: vec![0.0; plan.span()],
        }
    }
}

/// Defines `$name` as `$body` compiled for AVX-512 or AVX2 where the CPU has them (checked at
/// run time), for the baseline otherwise; `$body` must be `#[inline(always)]`.
macro_rules! multiversion {
    ($name:ident => $body:ident ($($arg:ident: $ty:ty),* $(,)?)) => {
        #[allow(clippy::too_many_arguments)]
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $body($($arg),*)
                }
                #[allow(clippy::too_many_arguments)]
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    // SAFETY: the CPU has the features `avx512` is compiled for.
                    return unsafe { avx512($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    // SAFETY: the CPU has the features `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

multiversion!(forward_plane => forward_plane_body(
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
));

/// The `multiplier` output planes of one input plane: `weight` and `bias` are those output
/// channels', `out` their `[multiplier, out_h, out_w]` block.
#[inline(always)]
fn forward_plane_body(
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    out: &mut [MaybeUninit<f32>],
) {
    let taps = plan.taps.len();
    let Scratch { phases, spread, .. } = scratch;
    plan.split(plane, phases);
    let out_plane = plan.out_h * plan.out_w;
    for (j, out) in out.chunks_exact_mut(out_plane).enumerate() {
        spread.fill(bias.map_or(0.0, |bias| bias[j]));
        for (&w, &offset) in weight[j * taps..][..taps].iter().zip(&plan.taps) {
            axpy(spread, w, &phases[offset..]);
        }
        for (dst, src) in out
            .chunks_exact_mut(plan.out_w)
            .zip(spread.chunks(plan.phase_w))
        {
            for (d, &s) in dst.iter_mut().zip(src) {
                d.write(s);
            }
        }
    }
}

multiversion!(backward_plane => backward_plane_body(
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    grad: &[f32],
    weight: &[f32],
    input_grad: Option<&mut [f32]>,
    sums: &mut [f64],
    wanted: Wanted,
));

/// The gradients from the `multiplier` output-gradient planes `grad` of one input plane: its
/// gradient into `input_grad` (where wanted), and into `sums` (`[multiplier, taps + 1]`) each
/// output channel's weight gradient terms followed by its bias gradient term.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_plane_body(
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    grad: &[f32],
    weight: &[f32],
    input_grad: Option<&mut [f32]>,
    sums: &mut [f64],
    wanted: Wanted,
) {
    let taps = plan.taps.len();
    let out_plane = plan.out_h * plan.out_w;
    let Scratch {
        phases,
        grad_phases,
        spread,
    } = scratch;
    let mut input_phases = input_grad.is_some().then(|| {
        grad_phases.clear();
        grad_phases.resize(plan.phases(), 0.0);
        &mut grad_phases[..]
    });
    if wanted.weight {
        plan.split(plane, phases);
    }
    for (j, grad) in grad.chunks_exact(out_plane).enumerate() {
        let sums = &mut sums[j * (taps + 1)..][..taps + 1];
        if wanted.bias {
            sums[taps] = sum(grad);
        }
        // The gradient in the phase planes' row length, zero in the extra columns.
        spread.fill(0.0);
        for (dst, src) in spread
            .chunks_mut(plan.phase_w)
            .zip(grad.chunks_exact(plan.out_w))
        {
            dst[..plan.out_w].copy_from_slice(src);
        }
        if wanted.weight {
            for (sum, &offset) in sums[..taps].iter_mut().zip(&plan.taps) {
                *sum = dot(spread, &phases[offset..]);
            }
        }
        if let Some(input_phases) = input_phases.as_deref_mut() {
            for (&w, &offset) in weight[j * taps..][..taps].iter().zip(&plan.taps) {
                axpy(&mut input_phases[offset..][..spread.len()], w, spread);
            }
        }
    }
    if let (Some(input_grad), Some(input_phases)) = (input_grad, input_phases) {
        plan.join(input_phases, input_grad);
    }
}

impl WeightedOp for Depthwise {
    /// The depthwise convolution of a contiguous `[batch, c_in, h, w]` input by a contiguous
    /// `[c_out, 1, kh, kw]` weight, plus `bias` per output channel.
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        let g = &self.0;
        let plan = Plan::new(g);
        let (plane_in, multiplier) = (g.height * g.width, plan.multiplier);
        let block = multiplier * g.positions();
        let taps = plan.taps.len();
        let per_task = rows_per_task(block * taps, MIN_TASK);
        let fill = |output: &mut [MaybeUninit<f32>]| {
            output
                .par_chunks_mut(block)
                .with_min_len(per_task)
                .enumerate()
                .for_each_init(
                    || Scratch::new(&plan),
                    |scratch, (index, out)| {
                        let ci = index % g.c_in;
                        let channels = ci * multiplier;
                        forward_plane(
                            &plan,
                            scratch,
                            &x[index * plane_in..][..plane_in],
                            &weight[channels * taps..][..multiplier * taps],
                            bias.map(|bias| &bias[channels..][..multiplier]),
                            out,
                        );
                    },
                )
        };
        // SAFETY: the `(image, input channel)` blocks cover the output, and `forward_plane`
        // writes every value of its block.
        let output = unsafe { written(g.batch * g.c_out * g.positions(), fill) };
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
        let plan = Plan::new(g);
        let (plane_in, multiplier) = (g.height * g.width, plan.multiplier);
        let block = multiplier * g.positions();
        let taps = plan.taps.len();
        let per_task = rows_per_task(block * taps * 2, MIN_TASK);
        let slots = multiplier * (taps + 1);
        // Per (image, output channel): the weight gradient terms, then the bias gradient term.
        let mut sums = vec![0.0f64; g.batch * g.c_out * (taps + 1)];
        let mut input_grad = vec![
            0.0f32;
            if wanted.input {
                g.batch * g.c_in * plane_in
            } else {
                0
            }
        ];
        let run = |scratch: &mut Scratch,
                   index: usize,
                   input_grad: Option<&mut [f32]>,
                   sums: &mut [f64]| {
            let ci = index % g.c_in;
            backward_plane(
                &plan,
                scratch,
                &x[index * plane_in..][..plane_in],
                &grad[index * block..][..block],
                &weight[ci * multiplier * taps..][..multiplier * taps],
                input_grad,
                sums,
                wanted,
            );
        };
        if wanted.input {
            input_grad
                .par_chunks_mut(plane_in)
                .zip(sums.par_chunks_mut(slots))
                .with_min_len(per_task)
                .enumerate()
                .for_each_init(
                    || Scratch::new(&plan),
                    |scratch, (index, (input_grad, sums))| {
                        run(scratch, index, Some(input_grad), sums)
                    },
                );
        } else {
            sums.par_chunks_mut(slots)
                .with_min_len(per_task)
                .enumerate()
                .for_each_init(
                    || Scratch::new(&plan),
                    |scratch, (index, sums)| run(scratch, index, None, sums),
                );
        }
        // Each channel's terms summed over the images, in order.
        let mut totals = vec![0.0f64; g.c_out * (taps + 1)];
        for image in sums.chunks_exact(totals.len()) {
            totals.iter_mut().zip(image).for_each(|(t, v)| *t += v);
        }
        let [kh, kw] = g.kernel;
        let per_channel = totals.chunks_exact(taps + 1);
        [
            wanted
                .input
                .then(|| flex_tensor(input_grad, &[g.batch, g.c_in, g.height, g.width])),
            wanted.weight.then(|| {
                let values = per_channel
                    .clone()
                    .flat_map(|c| c[..taps].iter().map(|&v| v as f32));
                flex_tensor(values.collect(), &[g.c_out, 1, kh, kw])
            }),
            wanted.bias.then(|| {
                let values = per_channel.map(|c| c[taps] as f32).collect();
                flex_tensor(values, &[g.c_out])
            }),
        ]
    }
}
