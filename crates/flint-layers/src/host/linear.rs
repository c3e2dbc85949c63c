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

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::gemm::{Operand, Wanted, matmul_into};
use super::{AutodiffFlex, OnFlex, contiguous, flex_tensor, on_flex, values, written};

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
    let bias = match bias {
        Some(bias) => Some(on_flex(bias)?),
        None => None,
    };
    match (on_flex(input)?, on_flex(weight)?, bias) {
        (OnFlex::Plain(x), OnFlex::Plain(w), bias) => {
            let bias = match bias {
                None => None,
                Some(OnFlex::Plain(bias)) => Some(contiguous(&bias)),
                Some(OnFlex::Autodiff(_)) => return None,
            };
            let (x, w) = (contiguous(&x), contiguous(&w));
            let output = forward(sizes, values(&x), values(&w), bias.as_ref().map(values));
            Some(Tensor::from_primitive::<Flex>(output))
        }
        (OnFlex::Autodiff(x), OnFlex::Autodiff(w), None) => {
            Some(Tensor::from_primitive::<AutodiffFlex>(tracked::<2>(
                sizes,
                [x, w],
                None,
            )))
        }
        (OnFlex::Autodiff(x), OnFlex::Autodiff(w), Some(OnFlex::Autodiff(b))) => Some(
            Tensor::from_primitive::<AutodiffFlex>(tracked::<3>(sizes, [x, w], Some(b))),
        ),
        _ => None,
    }
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

/// What backward needs: the sizes, and the contiguous input and weight.
#[derive(Clone, Debug)]
struct State {
    sizes: Sizes,
    input: FlexTensor,
    weight: FlexTensor,
}

/// The backward step of a linear layer with `N` parents: input, weight and, when `N == 3`, bias.
#[derive(Debug)]
struct LinearBackward<const N: usize>;

impl<const N: usize> Backward<Flex, N> for LinearBackward<N> {
    type State = State;

    fn backward(self, ops: Ops<State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(&grads.consume::<Flex>(&ops.node));
        let state = ops.state;
        let wanted = Wanted {
            input: ops.parents[0].is_some(),
            weight: ops.parents[1].is_some(),
            bias: N == 3 && ops.parents[2].is_some(),
        };
        let computed = backward(
            state.sizes,
            values(&state.input),
            values(&state.weight),
            values(&grad),
            wanted,
        );
        for (parent, grad) in ops.parents.into_iter().zip(computed) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

/// The forward step on autodiff tensors, recording [`LinearBackward`] when any parent is
/// tracked. `N` is 3 with a bias, 2 without.
fn tracked<const N: usize>(
    sizes: Sizes,
    [x, w]: [FloatTensor<AutodiffFlex>; 2],
    bias: Option<FloatTensor<AutodiffFlex>>,
) -> FloatTensor<AutodiffFlex> {
    let mut nodes = vec![x.node(), w.node()];
    nodes.extend(bias.as_ref().map(|b| b.node()));
    let nodes: [_; N] = nodes.try_into().expect("a node per parent");
    let input = contiguous(x.primitive());
    let weight = contiguous(w.primitive());
    let bias = bias.map(|b| contiguous(b.primitive()));
    let output = forward(
        sizes,
        values(&input),
        values(&weight),
        bias.as_ref().map(values),
    );
    match LinearBackward::<N>
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(
            State {
                sizes,
                input,
                weight,
            },
            output,
        ),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
