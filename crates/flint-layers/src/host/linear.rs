//! Fully connected layers on flex's host buffers (see [`crate::linear`]).
//!
//! burn-flex lets gemm split every product of a training step across all threads: on the
//! reference MLP about 200 thread wake-ups per step, which made two threads slower than one.
//! Here the work is split into at most one run per thread (small products stay on one thread)
//! and each product runs on its own thread:
//! - forward `y = x·W + b` and input gradient `dx = dy·Wᵀ`, per run of the batch's rows;
//! - weight gradient `dW = xᵀ·dy`, per run of W's rows (input features), over the whole batch,
//!   so no partial sums are added up afterwards;
//! - bias gradient: the column sums of `dy`.

use burn::backend::flex::FlexTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::gemm::{Operand, Wanted, matmul_into};
use super::weighted::{self, WeightedOp};
use super::{flex_tensor, written};

/// `input · weight + bias` for `[batch, d_in]` by `[d_in, d_out]`, or `None` where the tensors
/// are not f32 on flex or the shapes do not fit (the caller then goes through burn).
pub(crate) fn linear(
    input: &Tensor<2>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    let [batch, d_in] = input.dims();
    let [w_in, d_out] = weight.dims();
    if d_in != w_in || batch * d_in * d_out == 0 || bias.is_some_and(|b| b.dims() != [d_out]) {
        return None;
    }
    let sizes = Sizes { batch, d_in, d_out };
    weighted::apply(sizes, input, weight, bias)
}

/// The sizes of one product.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    d_in: usize,
    d_out: usize,
}

/// Rows per parallel run when each row costs `row_work` multiply-adds: one run per thread, but
/// at least 2^18 multiply-adds each (a smaller product is done before another thread wakes).
fn rows_per_run(rows: usize, row_work: usize) -> usize {
    let per_thread = rows.div_ceil(rayon::current_num_threads());
    per_thread
        .max((1usize << 18).div_ceil(row_work.max(1)))
        .max(1)
}

/// `x · w + bias` for contiguous `x` `[batch, d_in]` and `w` `[d_in, d_out]`.
fn forward(s: Sizes, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> FlexTensor {
    let rows = rows_per_run(s.batch, s.d_in * s.d_out);
    let fill = |output: &mut [MaybeUninit<f32>]| {
        output
            .par_chunks_mut(rows * s.d_out)
            .enumerate()
            .for_each(|(run, out)| {
                let n = out.len() / s.d_out;
                let x = &x[run * rows * s.d_in..][..n * s.d_in];
                let out = matmul_into(
                    out,
                    Operand::rows(x, s.d_in),
                    Operand::rows(w, s.d_out),
                    [n, s.d_out, s.d_in],
                );
                if let Some(bias) = bias {
                    for row in out.chunks_exact_mut(s.d_out) {
                        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
                    }
                }
            })
    };
    // SAFETY: the runs of rows cover the output and `matmul_into` writes each run's block.
    let output = unsafe { written(s.batch * s.d_out, fill) };
    flex_tensor(output, &[s.batch, s.d_out])
}

/// The gradients of the input, weight and bias (those `wanted`) from the output's gradient.
fn backward(
    s: Sizes,
    x: &[f32],
    w: &[f32],
    grad: &[f32],
    wanted: Wanted,
) -> [Option<FlexTensor>; 3] {
    let input_grad = wanted.input.then(|| {
        let rows = rows_per_run(s.batch, s.d_in * s.d_out);
        let fill = |input_grad: &mut [MaybeUninit<f32>]| {
            input_grad
                .par_chunks_mut(rows * s.d_in)
                .enumerate()
                .for_each(|(run, dx)| {
                    let n = dx.len() / s.d_in;
                    let dy = &grad[run * rows * s.d_out..][..n * s.d_out];
                    matmul_into(
                        dx,
                        Operand::rows(dy, s.d_out),
                        Operand::transposed(w, s.d_out),
                        [n, s.d_in, s.d_out],
                    );
                })
        };
        // SAFETY: the runs of rows cover the gradient and `matmul_into` writes each run's block.
        flex_tensor(
            unsafe { written(s.batch * s.d_in, fill) },
            &[s.batch, s.d_in],
        )
    });
    let weight_grad = wanted.weight.then(|| {
        let rows = rows_per_run(s.d_in, s.batch * s.d_out);
        let fill = |weight_grad: &mut [MaybeUninit<f32>]| {
            weight_grad
                .par_chunks_mut(rows * s.d_out)
                .enumerate()
                .for_each(|(run, dw)| {
                    let n = dw.len() / s.d_out;
                    // Rows `run * rows..` of xᵀ: columns of x.
                    let x_columns = Operand::transposed(&x[run * rows..], s.d_in);
                    matmul_into(
                        dw,
                        x_columns,
                        Operand::rows(grad, s.d_out),
                        [n, s.d_out, s.batch],
                    );
                })
        };
        // SAFETY: the runs of W's rows cover the gradient and `matmul_into` writes each block.
        flex_tensor(
            unsafe { written(s.d_in * s.d_out, fill) },
            &[s.d_in, s.d_out],
        )
    });
    let bias_grad = wanted.bias.then(|| {
        let mut sums = vec![0.0f64; s.d_out];
        for row in grad.chunks_exact(s.d_out) {
            sums.iter_mut()
                .zip(row)
                .for_each(|(sum, &g)| *sum += g as f64);
        }
        flex_tensor(sums.into_iter().map(|v| v as f32).collect(), &[s.d_out])
    });
    [input_grad, weight_grad, bias_grad]
}

impl WeightedOp for Sizes {
    fn forward(&self, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        forward(*self, input, weight, bias)
    }

    fn backward(
        &self,
        input: &[f32],
        weight: &[f32],
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3] {
        backward(*self, input, weight, grad, wanted)
    }
}
