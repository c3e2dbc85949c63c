//! Depthwise 2-D convolution on flex's host buffers: one input channel per group, each seen by
//! `multiplier = c_out / c_in` output channels through their own `kh x kw` filters.
//!
//! Per group the im2col products of [`super::conv`] would be `[multiplier, kh * kw]` by
//! `[kh * kw, positions]`: far too thin for gemm. burn computes the forward step with a direct
//! loop, but its backward step runs one convolution and one copy of the whole weight gradient
//! per channel. Here every step is a direct loop over one `(image, input channel)` plane at a
//! time:
//!
//! - the padded input plane is split into `stride_h * stride_w` phase planes (phase `(a, b)`
//!   holds padded rows `a, a + stride_h, ..` and columns `b, b + stride_w, ..`), so each kernel
//!   tap reads one phase plane at a fixed offset: stride 1, whatever the convolution's stride;
//! - forward: each output row in register blocks of 32 (then 16) columns, bias plus
//!   `Σ_tap weight · phase plane at the tap's offset`, written once straight into the output;
//! - input gradient: the output gradient is laid out with the phase planes' row length (zeros in
//!   the extra columns), and each phase-plane value gathers `Σ_tap weight · gradient at (value -
//!   tap offset)` over its phase's taps in registers, written once, then folded back into the
//!   image (padding dropped);
//! - weight and bias gradients: the dot products of the output gradient with the phase plane
//!   at each tap's offset, up to nine taps in one pass over the gradient, in f32 blocks summed
//!   in f64.
//!
//! A fused clamp ([`crate::conv2d_clamp`]) clamps each register block before it is written,
//! and its backward step masks the output gradient (by the clamped output) while spreading it.
//!
//! The phase split is one pass over a plane that stays in cache; the only passes over memory
//! are the reads of the input (and output gradient) and the writes of the results. While a
//! large plane is computed in cache, the next plane's data is prefetched a few lines per
//! register block ([`PREFETCH_PLANE`]), so those reads overlap the arithmetic.
//!
//! Tasks are runs of `(image, input channel)` planes on rayon's current pool, like the other
//! kernels. Each task writes its planes' weight and bias gradient terms to its own slots, summed
//! over the images afterwards in a fixed order, so the result does not depend on scheduling.
//! The loops are compiled for AVX-512 and AVX2 besides the baseline and picked at run time.

use burn::backend::flex::FlexTensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::clamp::Bounds;
use super::conv::{ConvOptions, Geometry};
use super::gemm::Wanted;
use super::simd::{Ahead, BLOCK, multiversion, sum};
use super::weighted::WeightedOp;
use super::{flex_tensor, rows_per_task, written};

/// Work (multiply-adds) below which a run of planes stays on one thread.
const MIN_TASK: usize = 1 << 16;

/// Input planes of at least this many values prefetch the next plane's data while they are
/// computed. Measured on MobileNetV2's depthwise shapes (Zen 2, one thread, best of 10 runs):
/// forward at batch 32 7-19 % faster from 56x56 up but 2-8 % slower at 28x28 and below, whose
/// planes the hardware's own prefetching keeps up with; forward + backward at batch 16 9-14 %
/// faster from 56x56 up.
const PREFETCH_PLANE: usize = 1024;

/// A convolution with `groups == c_in`, its output clamped to the bounds where given (a fused
/// ReLU6 or ReLU); the geometry is checked by `conv2d`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Depthwise(pub(crate) Geometry, pub(crate) Option<Bounds>);

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
    /// Per phase plane, its taps: their kernel indices and, for the input gradient's gather,
    /// where each reads the spread gradient ([`Plan::reach`] minus the tap's offset inside the
    /// phase plane).
    phase_taps: Vec<PhaseTaps>,
    /// Where each input row lands, from [`Plan::row_runs`]: `(row, first column, index)`.
    runs: Vec<[usize; 3]>,
    multiplier: usize,
}

/// The taps that read one phase plane (see [`Plan::phase_taps`]).
#[derive(Clone, Debug)]
struct PhaseTaps {
    indices: Vec<usize>,
    starts: Vec<usize>,
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
        let plane = phase_h * phase_w;
        let reach = taps.iter().map(|&t| t % plane).max().unwrap_or(0);
        let phase_taps = (0..stride[0] * stride[1])
            .map(|k| {
                let indices: Vec<usize> =
                    (0..taps.len()).filter(|&t| taps[t] / plane == k).collect();
                let starts = indices.iter().map(|&t| reach - taps[t] % plane).collect();
                PhaseTaps { indices, starts }
            })
            .collect();
        let mut plan = Self {
            width: g.width,
            out_h: g.out_h,
            out_w: g.out_w,
            stride,
            before: [padding[0][0], padding[1][0]],
            phase_h,
            phase_w,
            taps,
            phase_taps,
            runs: Vec::new(),
            multiplier: g.c_out / g.c_in,
        };
        plan.runs = (0..g.height)
            .flat_map(|iy| plan.row_runs(iy).map(move |(ix, start)| [iy, ix, start]))
            .collect();
        plan
    }

    /// Length of one phase plane.
    fn plane(&self) -> usize {
        self.phase_h * self.phase_w
    }

    /// Length of the phase planes' buffer.
    fn phases(&self) -> usize {
        self.stride[0] * self.stride[1] * self.plane()
    }

    /// Length of an output plane laid out with the phase planes' row length: output `(oy, ox)`
    /// at `oy * phase_w + ox`. Every tap's read of this length stays inside the phase buffer:
    /// the last valid output reads the last padded row and column of its phase.
    fn span(&self) -> usize {
        (self.out_h - 1) * self.phase_w + self.out_w
    }

    /// The largest offset of a tap inside its own phase plane.
    fn reach(&self) -> usize {
        let plane = self.plane();
        self.taps.iter().map(|&t| t % plane).max().unwrap_or(0)
    }

    /// Where input row `iy` lands: for each phase column `b`, the first input column of that
    /// phase and the phase-buffer index it goes to (the row's later columns of the phase
    /// follow one `stride_w` apart in the input, adjacent in the phase plane).
    fn row_runs(&self, iy: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
        let [sy, sx] = self.stride;
        let r = iy + self.before[0];
        let plane = self.plane();
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

    /// Copies the `[height, width]` plane into the phase planes. Only the positions of input
    /// values are written, the same ones for every plane: the padding keeps the zeros the
    /// buffer was created with.
    #[inline(always)]
    fn split(&self, plane: &[f32], phases: &mut [f32]) {
        let (width, sx) = (self.width, self.stride[1]);
        for &[iy, ix, start] in &self.runs {
            let row = &plane[iy * width..][ix..width];
            let dst = &mut phases[start..][..row.len().div_ceil(sx)];
            match sx {
                1 => dst.copy_from_slice(row),
                2 => {
                    // The row's last value after the others: the row is read front to back
                    // (its first touch often misses the cache; prefetching follows the order).
                    let pairs = row.chunks_exact(2);
                    let last = pairs.remainder().first().copied();
                    for (d, pair) in dst.iter_mut().zip(pairs) {
                        *d = pair[0];
                    }
                    if let Some(last) = last {
                        dst[dst.len() - 1] = last;
                    }
                }
                _ => {
                    for (d, &v) in dst.iter_mut().zip(row.iter().step_by(sx)) {
                        *d = v;
                    }
                }
            }
        }
    }

    /// The reverse of [`Plan::split`]: the plane's values from the phase planes (padding
    /// dropped).
    #[inline(always)]
    fn join(&self, phases: &[f32], plane: &mut [f32]) {
        let (width, sx) = (self.width, self.stride[1]);
        if sx == 2 && width >= 2 {
            // Each row has two runs, even and odd columns: interleaved in one pass.
            for runs in self.runs.chunks_exact(2) {
                let [[iy, ix, a], [_, _, b]] = [runs[0], runs[1]];
                let (even, odd) = if ix == 0 { (a, b) } else { (b, a) };
                let row = &mut plane[iy * width..][..width];
                let (even, odd) = (&phases[even..][..width.div_ceil(2)], &phases[odd..]);
                let mut pairs = row.chunks_exact_mut(2);
                for (pair, (&e, &o)) in pairs.by_ref().zip(even.iter().zip(odd)) {
                    pair[0] = e;
                    pair[1] = o;
                }
                if let [last] = pairs.into_remainder() {
                    *last = even[even.len() - 1];
                }
            }
            return;
        }
        for &[iy, ix, start] in &self.runs {
            let row = &mut plane[iy * width..][ix..width];
            let src = &phases[start..][..row.len().div_ceil(sx)];
            if sx == 1 {
                row.copy_from_slice(src);
                continue;
            }
            for (d, &v) in row.iter_mut().step_by(sx).zip(src) {
                *d = v;
            }
        }
    }
}

// Register blocks. Each loop is generic over its block widths, `WIDE` lanes for the bulk of a
// row or plane and `NARROW` (one vector register) for what is left and for the weight gradient's
// nine running sums, and compiled per instruction set with widths that fit its registers
// (`multiversion!`: AVX-512 32 and 16 lanes, AVX2 32 and 8, the baseline 16 and 4, for SSE2's
// and NEON's registers). AVX-512 has 32 registers of 16 lanes, AVX2 16 of 8. With 16-lane sums
// on AVX2, the weight gradient's nine taps held 18 registers of sums and spilled them to memory
// on every step (1.4 GFLOP/s on a Zen 2 machine).

/// Zeros kept after the phase planes and the spread gradient, so that a block that starts
/// before the end of a row or plane may read its whole width: the widest block.
const SLACK: usize = 32;

/// `start + Σ_t weights[t] · src[offsets[t] + at + i]` for the `L` lanes `i`, summed in
/// registers, taps in order.
#[inline(always)]
fn taps_block<const L: usize>(
    src: &[f32],
    offsets: &[usize],
    weights: &[f32],
    at: usize,
    start: [f32; L],
) -> [f32; L] {
    let mut acc = start;
    for (&w, &offset) in weights.iter().zip(offsets) {
        let s: &[f32; L] = src[offset + at..][..L].try_into().expect("L values");
        for lane in 0..L {
            acc[lane] += w * s[lane];
        }
    }
    acc
}

/// `block` clamped to `bounds`, where given.
#[inline(always)]
fn clamped<const L: usize>(mut block: [f32; L], bounds: Option<Bounds>) -> [f32; L] {
    if let Some(bounds) = bounds {
        for v in &mut block {
            *v = bounds.apply(*v);
        }
    }
    block
}

/// Writes the first `dst.len()` of `values` into `dst`.
#[inline(always)]
fn store(dst: &mut [MaybeUninit<f32>], values: &[f32]) {
    for (d, &v) in dst.iter_mut().zip(values) {
        d.write(v);
    }
}

/// The weight and bias gradient terms of `N` taps at once, in one pass over the gradient:
/// `sums[t] = Σ_p grad[p] · phases[offsets[t] + p]` for `p < span`, and, where `bias` is given,
/// `Σ_p grad[p]` into it. `grad` and `phases` hold zeros (or anything finite times zero) up to
/// `L` values past `span` and `offsets[t] + span`. Sums run in `L` f32 lanes per tap (one
/// register each) over blocks of [`BLOCK`] positions, then in f64.
#[inline(always)]
fn tap_dots<const N: usize, const L: usize>(
    grad: &[f32],
    phases: &[f32],
    offsets: &[usize],
    span: usize,
    sums: &mut [f64],
    bias: Option<&mut f64>,
    ahead: &mut Ahead,
) {
    let offsets: &[usize; N] = offsets.try_into().expect("N taps");
    let mut totals = [0.0f64; N];
    let mut bias_total = 0.0f64;
    for block in (0..span).step_by(BLOCK) {
        ahead.step();
        let mut lanes = [[0.0f32; L]; N];
        let mut bias_lanes = [0.0f32; L];
        for p in (block..(block + BLOCK).min(span)).step_by(L) {
            let g: &[f32; L] = grad[p..][..L].try_into().expect("a block");
            for lane in 0..L {
                bias_lanes[lane] += g[lane];
            }
            for (lanes, &offset) in lanes.iter_mut().zip(offsets) {
                let x: &[f32; L] = phases[offset + p..][..L].try_into().expect("a block");
                for lane in 0..L {
                    lanes[lane] += g[lane] * x[lane];
                }
            }
        }
        for (total, lanes) in totals.iter_mut().zip(&lanes) {
            *total += lanes.iter().sum::<f32>() as f64;
        }
        bias_total += bias_lanes.iter().sum::<f32>() as f64;
    }
    sums[..N].copy_from_slice(&totals);
    if let Some(bias) = bias {
        *bias = bias_total;
    }
}

/// Buffers one task reuses from plane to plane. The positions a plane writes are the same for
/// every plane, so the zeros around them (padding, extra columns, [`SLACK`]) are set once.
struct Scratch {
    /// The phase planes of the input.
    phases: Vec<f32>,
    /// The phase planes of the input's gradient.
    grad_phases: Vec<f32>,
    /// One output gradient plane in the phase planes' row length, after [`Plan::reach`] zeros.
    spread: Vec<f32>,
    /// One output plane in the phase planes' row length (forward).
    rows: Vec<f32>,
}

impl Scratch {
    fn new(plan: &Plan) -> Self {
        Self {
            phases: vec![0.0; plan.phases() + SLACK],
            grad_phases: Vec::new(),
            spread: Vec::new(),
            rows: Vec::new(),
        }
    }
}

multiversion!(forward_plane => forward_plane_body [::<32, 16>] [::<32, 8>] [::<16, 4>] (
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    next: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    bounds: Option<Bounds>,
    out: &mut [MaybeUninit<f32>],
));

/// The `multiplier` output planes of one input plane: `weight` and `bias` are those output
/// channels', `out` their `[multiplier, out_h, out_w]` block.
///
/// Each output plane is computed in the phase planes' row length (the extra columns of each
/// row, two for a 3x3 kernel at stride 1, are computed and dropped) in blocks of `WIDE` values
/// held in registers over all the taps, then its rows are copied out. Computed row by row,
/// MobileNetV2's rows of 7 to 28 columns (and the end of every longer row) went through
/// one-register blocks, whose taps form one chain of dependent additions.
///
/// While the first output plane is computed, `next` (the input plane the task computes next,
/// or nothing) is prefetched a few cache lines per block, so that its split does not wait on
/// memory.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn forward_plane_body<const WIDE: usize, const NARROW: usize>(
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    next: &[f32],
    weight: &[f32],
    bias: Option<&[f32]>,
    bounds: Option<Bounds>,
    out: &mut [MaybeUninit<f32>],
) {
    let taps = plan.taps.len();
    let phases = &mut scratch.phases;
    plan.split(plane, phases);
    let phases = &phases[..];
    let (out_w, phase_w, span) = (plan.out_w, plan.phase_w, plan.span());
    let rows = &mut scratch.rows;
    if rows.is_empty() {
        rows.resize(span.next_multiple_of(NARROW), 0.0);
    }
    // All of `next` over the first output plane's blocks.
    let mut ahead = Ahead::new([next, &[], &[]], rows.len() / WIDE);
    for (j, out) in out.chunks_exact_mut(plan.out_h * out_w).enumerate() {
        let weights = &weight[j * taps..][..taps];
        let b = bias.map_or(0.0, |bias| bias[j]);
        // Blocks end at most NARROW - 1 values past the span: inside the phase planes' SLACK
        // (see `Plan::span`).
        let mut at = 0;
        while at + WIDE <= rows.len() {
            if j == 0 {
                ahead.step();
            }
            let block = taps_block(phases, &plan.taps, weights, at, [b; WIDE]);
            rows[at..at + WIDE].copy_from_slice(&clamped(block, bounds));
            at += WIDE;
        }
        while at < rows.len() {
            let block = taps_block(phases, &plan.taps, weights, at, [b; NARROW]);
            rows[at..at + NARROW].copy_from_slice(&clamped(block, bounds));
            at += NARROW;
        }
        for (oy, row) in out.chunks_exact_mut(out_w).enumerate() {
            store(row, &rows[oy * phase_w..][..out_w]);
        }
    }
}

multiversion!(backward_plane => backward_plane_body [::<32, 16>] [::<32, 8>] [::<16, 4>] (
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    grad: &[f32],
    weight: &[f32],
    input_grad: Option<&mut [f32]>,
    sums: &mut [f64],
    mask: Option<(&[f32], Bounds)>,
    wanted: Wanted,
    next: [&[f32]; 3],
));

/// The gradients from the `multiplier` output-gradient planes `grad` of one input plane: its
/// gradient into `input_grad` (where wanted), and into `sums` (`[multiplier, taps + 1]`) each
/// output channel's weight gradient terms followed by its bias gradient term.
///
/// The input gradient is gathered, not scattered: each phase-plane value is
/// `Σ_tap weight · gradient at (value - tap offset)` over the taps of its phase, summed in
/// registers and written once (added for the second and later output channels).
///
/// `next` (the next plane's input, output gradient and output, or empty slices) is prefetched
/// a few cache lines per block of these loops, so that the next plane's copies do not wait on
/// memory.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn backward_plane_body<const WIDE: usize, const NARROW: usize>(
    plan: &Plan,
    scratch: &mut Scratch,
    plane: &[f32],
    grad: &[f32],
    weight: &[f32],
    input_grad: Option<&mut [f32]>,
    sums: &mut [f64],
    mask: Option<(&[f32], Bounds)>,
    wanted: Wanted,
    next: [&[f32]; 3],
) {
    let taps = plan.taps.len();
    let (out_w, phase_w, span) = (plan.out_w, plan.phase_w, plan.span());
    let (phase_plane, reach) = (plan.plane(), plan.reach());
    let mut tap_weights = [0.0f32; 9];
    let Scratch {
        phases,
        grad_phases,
        spread,
        ..
    } = scratch;
    if spread.is_empty() {
        // `reach` zeros, the gradient plane, then zeros up to one phase plane and SLACK.
        spread.resize(reach + phase_plane.max(span) + SLACK, 0.0);
    }
    if input_grad.is_some() && grad_phases.is_empty() {
        grad_phases.resize(plan.phases() + SLACK, 0.0);
    }
    if wanted.weight {
        plan.split(plane, phases);
    }
    // The blocks of the loops below that step the prefetch: the weight gradient's passes over
    // the gradient and the input gradient's over the phase planes, per output channel.
    let steps = plan.multiplier
        * (usize::from(wanted.weight) * span.div_ceil(BLOCK)
            + usize::from(input_grad.is_some()) * plan.phases() / WIDE);
    let mut ahead = Ahead::new(next, steps);
    for (j, grad) in grad.chunks_exact(plan.out_h * out_w).enumerate() {
        let sums = &mut sums[j * (taps + 1)..][..taps + 1];
        // The gradient in the phase planes' row length after `reach` zeros; the extra columns
        // and everything after stay zero.
        let rows = spread[reach..]
            .chunks_mut(phase_w)
            .zip(grad.chunks_exact(out_w));
        match mask {
            None => rows.for_each(|(dst, src)| dst[..out_w].copy_from_slice(src)),
            // A fused clamp: the gradient where the output is strictly inside the bounds.
            Some((output, bounds)) => {
                let output = output[j * grad.len()..][..grad.len()].chunks_exact(out_w);
                for ((dst, src), y) in rows.zip(output) {
                    for ((d, &g), &y) in dst.iter_mut().zip(src).zip(y) {
                        *d = if bounds.passes_output(y) { g } else { 0.0 };
                    }
                }
            }
        }
        let spread_grad = &spread[reach..];
        if wanted.weight || wanted.bias {
            let (weights, bias) = sums.split_at_mut(taps);
            let bias = wanted.bias.then_some(&mut bias[0]);
            if wanted.weight {
                // Taps in runs of at most nine, each run in one pass over the gradient (the
                // first run sums the bias gradient term too).
                let mut bias = bias;
                for (weights, offsets) in weights.chunks_mut(9).zip(plan.taps.chunks(9)) {
                    let (phases, bias) = (&phases[..], bias.take());
                    macro_rules! runs {
                        ($($n:literal)*) => {
                            match offsets.len() {
                                $($n => tap_dots::<$n, NARROW>(spread_grad, phases, offsets, span, weights, bias, &mut ahead),)*
                                n => unreachable!("runs of one to nine taps, not {n}"),
                            }
                        };
                    }
                    runs!(1 2 3 4 5 6 7 8 9);
                }
            } else if let Some(bias) = bias {
                *bias = sum(&spread_grad[..span]);
            }
        }
        if input_grad.is_some() {
            let weights = &weight[j * taps..][..taps];
            for (k, PhaseTaps { indices, starts }) in plan.phase_taps.iter().enumerate() {
                let out = &mut grad_phases[k * phase_plane..][..phase_plane];
                // Taps in runs of at most nine: the first writes, the others add.
                for (run, (indices, starts)) in indices.chunks(9).zip(starts.chunks(9)).enumerate()
                {
                    let tap_weights = &mut tap_weights[..indices.len()];
                    for (w, &t) in tap_weights.iter_mut().zip(indices) {
                        *w = weights[t];
                    }
                    gather::<WIDE, NARROW>(
                        spread,
                        starts,
                        tap_weights,
                        out,
                        j > 0 || run > 0,
                        &mut ahead,
                    );
                }
                if indices.is_empty() && j == 0 {
                    // No tap reads this phase (a dilation that is a multiple of the stride).
                    out.fill(0.0);
                }
            }
        }
    }
    if let Some(input_grad) = input_grad {
        plan.join(grad_phases, input_grad);
    }
}

/// `out[q] (+)= Σ_t weights[t] · spread[starts[t] + q]` for every `q` of `out`, in register
/// blocks of `WIDE` (then `NARROW`); added to `out`'s values where `add`.
#[inline(always)]
fn gather<const WIDE: usize, const NARROW: usize>(
    spread: &[f32],
    starts: &[usize],
    weights: &[f32],
    out: &mut [f32],
    add: bool,
    ahead: &mut Ahead,
) {
    let mut q = 0;
    while q + WIDE <= out.len() {
        ahead.step();
        let start = if add {
            out[q..q + WIDE].try_into().expect("WIDE values")
        } else {
            [0.0; WIDE]
        };
        let block = taps_block(spread, starts, weights, q, start);
        out[q..q + WIDE].copy_from_slice(&block);
        q += WIDE;
    }
    while q < out.len() {
        let end = (q + NARROW).min(out.len());
        let mut start = [0.0; NARROW];
        if add {
            start[..end - q].copy_from_slice(&out[q..end]);
        }
        let block = taps_block(spread, starts, weights, q, start);
        out[q..end].copy_from_slice(&block[..end - q]);
        q = end;
    }
}

/// Block `index + 1` of `len` values of `values` (what the task computes next, to prefetch),
/// where `wanted` and it exists; else nothing.
fn next_block(values: &[f32], index: usize, len: usize, wanted: bool) -> &[f32] {
    match values.get((index + 1) * len..) {
        Some(next) if wanted => &next[..len.min(next.len())],
        _ => &[],
    }
}

impl WeightedOp for Depthwise {
    /// The depthwise convolution of a contiguous `[batch, c_in, h, w]` input by a contiguous
    /// `[c_out, 1, kh, kw]` weight, plus `bias` per output channel, clamped where the op has
    /// bounds (in registers, before each block is written).
    fn forward(&self, x: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        self.run_forward(x, weight, bias, self.1)
    }

    fn reads_output(&self) -> bool {
        self.1.is_some()
    }

    /// With bounds, the output gradient counts only where the clamped output is strictly inside
    /// them, masked while it is read.
    fn backward(
        &self,
        x: &[f32],
        weight: &[f32],
        output: Option<&[f32]>,
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3] {
        let mask = Bounds::mask(self.1, output);
        self.run_backward(x, weight, grad, mask, wanted)
    }
}

impl Depthwise {
    /// [`WeightedOp::forward`], clamped to `bounds` where given.
    fn run_forward(
        &self,
        x: &[f32],
        weight: &[f32],
        bias: Option<&[f32]>,
        bounds: Option<Bounds>,
    ) -> FlexTensor {
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
                        let next = next_block(x, index, plane_in, plane_in >= PREFETCH_PLANE);
                        forward_plane(
                            &plan,
                            scratch,
                            &x[index * plane_in..][..plane_in],
                            next,
                            &weight[channels * taps..][..multiplier * taps],
                            bias.map(|bias| &bias[channels..][..multiplier]),
                            bounds,
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

    /// [`WeightedOp::backward`]; with `mask` (the clamped output and its bounds), of the
    /// convolution fused with a clamp: the output gradient counts only where the output is
    /// strictly inside the bounds.
    fn run_backward(
        &self,
        x: &[f32],
        weight: &[f32],
        grad: &[f32],
        mask: Option<(&[f32], Bounds)>,
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
            // The next plane's input (where the weight gradient reads it), output gradient and
            // output (where a fused clamp masks by it), for large planes.
            let large = plane_in >= PREFETCH_PLANE;
            let next = [
                next_block(x, index, plane_in, large && wanted.weight),
                next_block(grad, index, block, large),
                mask.map_or(&[], |(output, _)| next_block(output, index, block, large)),
            ];
            backward_plane(
                &plan,
                scratch,
                &x[index * plane_in..][..plane_in],
                &grad[index * block..][..block],
                &weight[ci * multiplier * taps..][..multiplier * taps],
                input_grad,
                sums,
                mask.map(|(output, bounds)| (&output[index * block..][..block], bounds)),
                wanted,
                next,
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

#[cfg(test)]
mod tests {
    use crate::conv::ConvOptions;
    use crate::test_util::{relative_error, values};
    use burn::tensor::module::conv2d;
    use burn::tensor::ops::ConvOptions as BurnOptions;
    use burn::tensor::{Device, Distribution, Tensor};
    use proptest::prelude::*;

    /// flint's and burn's output and gradients (input, weight, bias) for one depthwise case,
    /// each as a relative error; with `clamp`, flint's fused convolution + clamp against burn's
    /// convolution followed by its clamp.
    fn errors(
        input: [usize; 4],
        multiplier: usize,
        kernel: [usize; 2],
        options: ConvOptions,
        bias: bool,
        seed: u64,
    ) -> [f32; 4] {
        clamp_errors(input, multiplier, kernel, options, bias, None, seed)
    }

    fn clamp_errors(
        input: [usize; 4],
        multiplier: usize,
        kernel: [usize; 2],
        options: ConvOptions,
        bias: bool,
        clamp: Option<(f32, f32)>,
        seed: u64,
    ) -> [f32; 4] {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let normal = Distribution::Normal(0.0, 1.0);
        let c_out = input[1] * multiplier;
        let x = Tensor::<4>::random(input, normal, &device).require_grad();
        let w = Tensor::<4>::random([c_out, 1, kernel[0], kernel[1]], normal, &device);
        let w = w.require_grad();
        let b = Tensor::<1>::random([c_out], normal, &device).require_grad();
        let b = bias.then_some(b);
        let ours = match clamp {
            None => crate::conv2d(&x, &w, b.as_ref(), options),
            Some((min, max)) => crate::conv2d_clamp(&x, &w, b.as_ref(), options, min, max),
        };
        let ours = ours.expect("the kernel applies");
        let upstream = Tensor::<4>::random(ours.dims(), normal, &device);
        let [[top, bottom], [left, right]] = options.padding;
        let burn_options = BurnOptions::new_with_padding(
            options.stride,
            [(top, bottom), (left, right)],
            options.dilation,
            options.groups,
        );
        let theirs = conv2d(x.clone(), w.clone(), b.clone(), burn_options);
        let theirs = match clamp {
            None => theirs,
            Some((min, max)) => theirs.clamp(min, max),
        };
        let gradients = |y: Tensor<4>| {
            let grads = (y.clone() * upstream.clone()).sum().backward();
            let bias = b.as_ref().map(|b| values(b.grad(&grads).unwrap()));
            [
                values(y),
                values(x.grad(&grads).unwrap()),
                values(w.grad(&grads).unwrap()),
                bias.unwrap_or_default(),
            ]
        };
        let [ours, theirs] = [gradients(ours), gradients(theirs)];
        std::array::from_fn(|i| {
            if theirs[i].is_empty() {
                0.0
            } else {
                relative_error(&ours[i], &theirs[i])
            }
        })
    }

    /// A 3x3 kernel's options with one value of padding on each side.
    fn padded_3x3(stride: usize, groups: usize) -> ConvOptions {
        ConvOptions {
            stride: [stride, stride],
            dilation: [1, 1],
            padding: [[1, 1], [1, 1]],
            groups,
        }
    }

    #[test]
    fn rows_wider_than_a_register_block() {
        // Output rows of 37 and 19 columns: a 32-wide block, then a 16-wide one cut short.
        for options in [padded_3x3(1, 3), padded_3x3(2, 3)] {
            let errors = errors([2, 3, 5, 37], 1, [3, 3], options, true, 7);
            assert!(errors.iter().all(|&e| e < 1e-5), "{options:?}: {errors:?}");
        }
    }

    /// Planes large enough to prefetch the next one (forward and backward), over several
    /// images and channels so that a task moves from plane to plane and from image to image,
    /// with and without a fused ReLU6, at stride 1 and 2.
    #[test]
    fn large_planes_that_prefetch_the_next() {
        let input = [2, 3, 34, 33];
        assert!(input[2] * input[3] >= super::PREFETCH_PLANE);
        for (options, clamp) in [
            (padded_3x3(1, 3), None),
            (padded_3x3(2, 3), Some((0.0, 6.0))),
        ] {
            let errors = clamp_errors(input, 1, [3, 3], options, true, clamp, 11);
            assert!(errors.iter().all(|&e| e < 1e-5), "{options:?}: {errors:?}");
        }
    }

    #[test]
    fn fused_relu6_matches_burn_on_plain_tensors() {
        let device = Device::flex();
        device.seed(3);
        let x = Tensor::<4>::random([2, 4, 9, 9], Distribution::Normal(0.0, 3.0), &device);
        let w = Tensor::<4>::random([8, 1, 3, 3], Distribution::Default, &device);
        let b = Tensor::<1>::random([8], Distribution::Default, &device);
        let options = ConvOptions {
            stride: [2, 2],
            dilation: [1, 1],
            padding: [[1, 1], [1, 1]],
            groups: 4,
        };
        let ours = crate::conv2d_clamp(&x, &w, Some(&b), options, 0.0, 6.0).unwrap();
        let burn_options = BurnOptions::new([2, 2], [1, 1], [1, 1], 4);
        let theirs = conv2d(x.clone(), w.clone(), Some(b.clone()), burn_options).clamp(0.0, 6.0);
        assert!(relative_error(&values(ours), &values(theirs)) < 1e-5);
    }

    /// One plane's forward output, input gradient and weight and bias gradient terms, through the
    /// per-plane loops compiled with block widths `W` and `N` (the instruction set stays the
    /// build's baseline: this checks the blocking, which the run-time dispatch picks per CPU).
    fn plane_steps<const W: usize, const N: usize>(
        geometry: &super::Geometry,
        plane: &[f32],
        weight: &[f32],
        grad: &[f32],
        bounds: Option<super::Bounds>,
    ) -> [Vec<f64>; 3] {
        use super::*;
        let plan = Plan::new(geometry);
        let taps = plan.taps.len();
        let mut scratch = Scratch::new(&plan);
        let bias: Vec<f32> = (0..plan.multiplier).map(|j| j as f32 - 0.5).collect();
        let mut out = vec![MaybeUninit::new(f32::NAN); grad.len()];
        // The prefetch reads the same plane again: it must not change a value.
        forward_plane_body::<W, N>(
            &plan,
            &mut scratch,
            plane,
            plane,
            weight,
            Some(&bias),
            bounds,
            &mut out,
        );
        // SAFETY: set above (NaN where the loop wrote nothing, which the comparison would show).
        let out: Vec<f32> = out.iter().map(|v| unsafe { v.assume_init() }).collect();
        let mut input_grad = vec![f32::NAN; plane.len()];
        let mut sums = vec![0.0f64; plan.multiplier * (taps + 1)];
        let wanted = Wanted {
            input: true,
            weight: true,
            bias: true,
        };
        let mask = bounds.map(|bounds| (&out[..], bounds));
        backward_plane_body::<W, N>(
            &plan,
            &mut scratch,
            plane,
            grad,
            weight,
            Some(&mut input_grad),
            &mut sums,
            mask,
            wanted,
            [plane, grad, &out],
        );
        let wide = |v: &[f32]| v.iter().map(|&v| v as f64).collect();
        [wide(&out), wide(&input_grad), sums]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// The block widths of each instruction set (AVX-512: 32 and 16 lanes, AVX2: 32 and 8,
        /// baseline: 16 and 4) give the same forward values and input gradients bit for bit
        /// (each lane sums its taps in the same order), and weight and bias gradients that differ
        /// only by the rounding of their f32 partial sums.
        #[test]
        fn every_block_width_agrees(
            multiplier in 1usize..3, height in 1usize..10, width in 1usize..70,
            kh in 1usize..6, kw in 1usize..4, stride in 1usize..3, dilation in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), relu6: bool, seed in 0u64..1000,
        ) {
            let reach = |k: usize| dilation * (k - 1) + 1;
            prop_assume!(height + pads[0] + pads[1] >= reach(kh));
            prop_assume!(width + pads[2] + pads[3] >= reach(kw));
            let options = ConvOptions {
                stride: [stride, stride],
                dilation: [dilation, dilation],
                padding: [[pads[0], pads[1]], [pads[2], pads[3]]],
                groups: 1,
            };
            let geometry =
                super::Geometry::new([1, 1, height, width], [multiplier, 1, kh, kw], options)
                    .expect("a valid geometry");
            let device = Device::flex();
            device.seed(seed);
            let normal = Distribution::Normal(0.0, 2.0);
            let random = |len: usize| values(Tensor::<1>::random([len], normal, &device));
            let plane = random(height * width);
            let weight = random(multiplier * kh * kw);
            let grad = random(multiplier * geometry.out_h * geometry.out_w);
            let bounds = relu6.then_some(super::Bounds { min: 0.0, max: 6.0 });
            let steps = [
                plane_steps::<32, 16>(&geometry, &plane, &weight, &grad, bounds),
                plane_steps::<32, 8>(&geometry, &plane, &weight, &grad, bounds),
                plane_steps::<16, 4>(&geometry, &plane, &weight, &grad, bounds),
            ];
            // A sum's rounding error is bounded by the sum of its terms' magnitudes: at most
            // Σ|grad| · max|input| (or Σ|grad| for the bias).
            let largest = plane.iter().fold(1.0f32, |m, v| m.max(v.abs())) as f64;
            let scale = grad.iter().map(|g| g.abs() as f64).sum::<f64>() * largest;
            for other in &steps[1..] {
                prop_assert!(other[0] == steps[0][0], "forward values differ");
                prop_assert!(other[1] == steps[0][1], "input gradients differ");
                for (a, b) in other[2].iter().zip(&steps[0][2]) {
                    prop_assert!((a - b).abs() <= 1e-7 * scale, "sums {} and {}", a, b);
                }
            }
        }

        /// The fused convolution + clamp (ReLU6 and other bounds) against burn's convolution
        /// followed by its clamp, values and gradients.
        #[test]
        fn fused_clamp_matches_burn(
            batch in 1usize..3, channels in 2usize..5, multiplier in 1usize..3,
            height in 1usize..12, width in 1usize..30, kh in 1usize..4, kw in 1usize..4,
            stride in 1usize..3, dilation in 1usize..3,
            pads in proptest::array::uniform4(0usize..3), bias: bool, relu6: bool,
            min in -2.0f32..0.5, width_of_bounds in 0.1f32..3.0, seed in 0u64..1000,
        ) {
            let reach = |k: usize| dilation * (k - 1) + 1;
            prop_assume!(height + pads[0] + pads[1] >= reach(kh));
            prop_assume!(width + pads[2] + pads[3] >= reach(kw));
            let options = ConvOptions {
                stride: [stride, stride],
                dilation: [dilation, dilation],
                padding: [[pads[0], pads[1]], [pads[2], pads[3]]],
                groups: channels,
            };
            let bounds = if relu6 { (0.0, 6.0) } else { (min, min + width_of_bounds) };
            let input = [batch, channels, height, width];
            let errors =
                clamp_errors(input, multiplier, [kh, kw], options, bias, Some(bounds), seed);
            for (name, error) in ["output", "input grad", "weight grad", "bias grad"].iter().zip(errors) {
                prop_assert!(error < 1e-5, "{}: relative error {}", name, error);
            }
        }

        /// Depthwise convolutions with a stride, dilation and padding of their own per axis
        /// (odd sizes with stride 2 and 3, asymmetric padding), channel multipliers up to 3,
        /// kernels up to 5x5 (runs of nine taps and more), rows up to 40 columns.
        #[test]
        fn matches_burn_per_axis(
            batch in 1usize..3, channels in 2usize..5, multiplier in 1usize..4,
            height in 1usize..12, width in 1usize..41, kh in 1usize..6, kw in 1usize..6,
            strides in proptest::array::uniform2(1usize..4),
            dilations in proptest::array::uniform2(1usize..3),
            pads in proptest::array::uniform4(0usize..3), bias: bool, seed in 0u64..1000,
        ) {
            let reach = |k: usize, d: usize| d * (k - 1) + 1;
            prop_assume!(height + pads[0] + pads[1] >= reach(kh, dilations[0]));
            prop_assume!(width + pads[2] + pads[3] >= reach(kw, dilations[1]));
            let options = ConvOptions {
                stride: strides,
                dilation: dilations,
                padding: [[pads[0], pads[1]], [pads[2], pads[3]]],
                groups: channels,
            };
            let input = [batch, channels, height, width];
            let errors = errors(input, multiplier, [kh, kw], options, bias, seed);
            for (name, error) in ["output", "input grad", "weight grad", "bias grad"].iter().zip(errors) {
                prop_assert!(error < 1e-5, "{}: relative error {}", name, error);
            }
        }
    }
}
