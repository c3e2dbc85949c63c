//! Fully connected layers on flex's host buffers.
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
use super::profile::{LINEAR_KINDS, Profiled};
use super::weighted::{self, WeightedOp};
use super::{flex_tensor, rows_per_task, written};

/// `input · weight + bias`, as `burn::tensor::module::linear` computes it for a rank-2 input, or
/// `None` where the tensors are not all f32 on flex (all tracked or all plain) or the shapes do
/// not fit (the caller then goes through burn). Flatten leading dimensions into rows first.
///
/// # Shapes
/// - input: `[batch, d_in]`
/// - weight: `[d_in, d_out]` (burn's row layout)
/// - bias: `[d_out]`
/// - output: `[batch, d_out]`
pub fn linear(
    input: &Tensor<2>,
    weight: &Tensor<2>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<2>> {
    let [batch, d_in] = input.dims();
    let [w_in, d_out] = weight.dims();
    if d_in != w_in || batch * d_in * d_out == 0 || bias.is_some_and(|b| b.dims() != [d_out]) {
        return None;
    }
    let multiply_adds = (batch * d_in * d_out) as u64;
    let op = Profiled::new(Sizes { batch, d_in, d_out }, LINEAR_KINDS, multiply_adds);
    weighted::apply(op, input, weight, bias)
}

/// The sizes of one product.
#[derive(Clone, Copy, Debug)]
struct Sizes {
    batch: usize,
    d_in: usize,
    d_out: usize,
}

/// Multiply-adds below which a run is not worth another thread: about 35 µs of gemm on this
/// machine's cores (60 GFLOP/s), against 15-25 µs for a sleeping rayon thread to wake, find the
/// run and spin down again (measured with `perf sched` on the reference MLP at 2 threads: the
/// wake-up alone took 10-15 µs, then ~30 yields). At 2^18 the MLP's 256 -> 10 layer (0.33 M
/// multiply-adds per product at batch 128) was split three times per step for about 10 µs of
/// work each; now it stays on the calling thread, while the 784 -> 256 and 256 -> 256 products
/// (8-26 M) still split.
const MIN_RUN_WORK: usize = 1 << 20;

/// Rows per parallel run when each row costs `row_work` multiply-adds: one run per thread, but
/// at least [`MIN_RUN_WORK`] multiply-adds each (a smaller product is done before another
/// thread wakes). More runs per thread were measured slower on the MLP at 2 threads (each run
/// packs the weight again for gemm).
fn rows_per_run(rows: usize, row_work: usize) -> usize {
    rows.div_ceil(rayon::current_num_threads())
        .max(rows_per_task(row_work, MIN_RUN_WORK))
}

/// A row-major matrix of `rows` rows of `row_len` values, each run of `per_run` rows (the last
/// one shorter) computed in parallel by `product(run, block)`, which returns the block written.
fn by_runs<F>(rows: usize, row_len: usize, per_run: usize, product: F) -> Vec<f32>
where
    F: for<'a> Fn(usize, &'a mut [MaybeUninit<f32>]) -> &'a mut [f32] + Sync,
{
    let fill = |matrix: &mut [MaybeUninit<f32>]| {
        matrix
            .par_chunks_mut(per_run * row_len)
            .enumerate()
            .for_each(|(run, block)| {
                let (start, len) = (block.as_ptr() as usize, block.len());
                let done = product(run, block);
                // Safe code can only hand back initialised `f32`s (from `matmul_into`); the
                // same start and length means all of the block was written.
                assert!(
                    done.as_ptr() as usize == start && done.len() == len,
                    "a run's product must write its whole block"
                );
            })
    };
    // SAFETY: the runs cover the matrix, and each run's block was checked written above.
    unsafe { written(rows * row_len, fill) }
}

impl WeightedOp for Sizes {
    /// `x · w + bias` for contiguous `x` `[batch, d_in]` and `w` `[d_in, d_out]`.
    fn forward(&self, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        let s = *self;
        let rows = rows_per_run(s.batch, s.d_in * s.d_out);
        let output = by_runs(s.batch, s.d_out, rows, |run, out| {
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
            out
        });
        flex_tensor(output, &[s.batch, s.d_out])
    }

    fn backward(
        &self,
        x: &[f32],
        w: &[f32],
        _output: Option<&[f32]>,
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3] {
        let s = *self;
        // dx = dy · Wᵀ, per run of the batch's rows.
        let input_grad = wanted.input.then(|| {
            let rows = rows_per_run(s.batch, s.d_in * s.d_out);
            let dx = by_runs(s.batch, s.d_in, rows, |run, dx| {
                let n = dx.len() / s.d_in;
                let dy = &grad[run * rows * s.d_out..][..n * s.d_out];
                let (dy, w_t) = (Operand::rows(dy, s.d_out), Operand::transposed(w, s.d_out));
                matmul_into(dx, dy, w_t, [n, s.d_in, s.d_out])
            });
            flex_tensor(dx, &[s.batch, s.d_in])
        });
        // dW = xᵀ · dy, per run of W's rows (input features), over the whole batch.
        let weight_grad = wanted.weight.then(|| {
            let rows = rows_per_run(s.d_in, s.batch * s.d_out);
            let dw = by_runs(s.d_in, s.d_out, rows, |run, dw| {
                let n = dw.len() / s.d_out;
                let x_columns = Operand::transposed(&x[run * rows..], s.d_in);
                let dy = Operand::rows(grad, s.d_out);
                matmul_into(dw, x_columns, dy, [n, s.d_out, s.batch])
            });
            flex_tensor(dw, &[s.d_in, s.d_out])
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
}

#[cfg(test)]
mod tests {
    use crate::test_util::{relative_error, values};
    use burn::tensor::module::linear;
    use burn::tensor::{Device, Distribution, Tensor};
    use proptest::prelude::*;

    /// Checks flint's output and gradients (input, weight, bias; empty where not tracked) against
    /// burn's `linear` on the same tensors.
    fn assert_matches(dims: [usize; 3], bias: bool, tracked: [bool; 2], seed: u64) {
        let [batch, d_in, d_out] = dims;
        let device = Device::flex().autodiff();
        // Every random tensor drawn at once: other tests draw from burn's generator too.
        device.seed(seed);
        let normal = Distribution::Normal(0.0, 1.0);
        let mut x = Tensor::<2>::random([batch, d_in], normal, &device);
        let mut w = Tensor::<2>::random([d_in, d_out], normal, &device);
        let mut b = Tensor::<1>::random([d_out], normal, &device);
        let weights = Tensor::<2>::random([batch, d_out], Distribution::Default, &device);
        if tracked[0] {
            x = x.require_grad();
        }
        if tracked[1] {
            w = w.require_grad();
            b = b.require_grad();
        }
        let run = |flint: bool| {
            let bias = bias.then_some(&b);
            let output = if flint {
                super::linear(&x, &w, bias).expect("flex takes the host path")
            } else {
                linear(x.clone(), w.clone(), bias.cloned())
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            let grad = |t: Option<Vec<f32>>| t.unwrap_or_default();
            [
                values(output),
                grad(x.grad(&grads).map(values)),
                grad(w.grad(&grads).map(values)),
                grad(bias.and_then(|b| b.grad(&grads)).map(values)),
            ]
        };
        let [flint, burn] = [run(true), run(false)];
        for (name, (ours, theirs)) in ["output", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(flint.iter().zip(&burn))
        {
            let case = format!("{name} of {dims:?}, bias {bias}, tracked {tracked:?}");
            assert_eq!(ours.len(), theirs.len(), "{case}");
            if !theirs.is_empty() {
                let error = relative_error(ours, theirs);
                assert!(error < 1e-5, "{case}: relative error {error}");
            }
        }
    }

    #[test]
    fn matches_burn_with_and_without_bias_and_tracking() {
        // The reference MLP's first layer at batch 128: split into runs across threads.
        assert_matches([128, 784, 256], true, [false, true], 1);
        assert_matches([12, 5, 7], false, [true, true], 2);
        assert_matches([3, 4, 2], true, [true, false], 3);
    }

    #[test]
    fn small_products_stay_on_one_thread_and_large_ones_split() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let (small, large, weight_grad) = pool.install(|| {
            (
                // The reference MLP's 256 -> 10 layer at batch 128: 0.33 M multiply-adds.
                super::rows_per_run(128, 256 * 10),
                // Its 784 -> 256 layer: 25.7 M, one run per thread.
                super::rows_per_run(128, 784 * 256),
                // The weight gradient of 784 -> 256: runs of W's 784 rows over the batch.
                super::rows_per_run(784, 128 * 256),
            )
        });
        assert!(small >= 128, "the whole batch in one run, not {small} rows");
        assert_eq!(large, 64);
        assert_eq!(weight_grad, 392);
        // On one thread, one run.
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        assert_eq!(one.install(|| super::rows_per_run(128, 784 * 256)), 128);
    }

    #[test]
    fn plain_tensors_give_burns_output() {
        let device = Device::flex();
        device.seed(4);
        let normal = Distribution::Normal(0.0, 1.0);
        let x = Tensor::<2>::random([9, 6], normal, &device);
        let w = Tensor::<2>::random([6, 4], normal, &device);
        let b = Tensor::<1>::random([4], normal, &device);
        let ours = super::linear(&x, &w, Some(&b)).unwrap();
        let theirs = linear(x, w, Some(b));
        assert!(relative_error(&values(ours), &values(theirs)) < 1e-5);
    }

    #[test]
    fn declines_shapes_that_do_not_fit() {
        let device = Device::flex();
        let x = Tensor::<2>::zeros([3, 4], &device);
        let w = Tensor::<2>::zeros([5, 2], &device);
        assert!(super::linear(&x, &w, None).is_none());
        let w = Tensor::<2>::zeros([4, 2], &device);
        let b = Tensor::<1>::zeros([3], &device);
        assert!(super::linear(&x, &w, Some(&b)).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_burn(
            batch in 1usize..70, d_in in 1usize..40, d_out in 1usize..40, bias: bool,
            input_tracked: bool, seed in 0u64..1000,
        ) {
            assert_matches([batch, d_in, d_out], bias, [input_tracked, true], seed);
        }
    }
}
