//! Batch normalisation with batch statistics on flex's host buffers.
//!
//! burn's generic `batch_norm_train` makes two transposed copies of the activation to reduce
//! over the batch and about ten element-wise passes for backward. Here every pass runs over
//! contiguous rows: forward the mean, the variance, then the output; backward the per-channel
//! sums of the gradient and of gradient times centred input, then the input gradient.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;
use burn::tensor::module::BatchNormTrainOutput;
use rayon::prelude::*;
use std::sync::Arc;

use super::profile::{self, KernelKind};
use super::{
    AutodiffFlex, OnFlex, contiguous, dims, flex_tensor, on_flex, rows_per_task, values, written,
};

/// `(x - mean) / sqrt(var + eps) * gamma + beta` with the batch's per-channel statistics, as
/// `burn::tensor::module::batch_norm_train` computes it: the output, and the batch's mean and
/// biased variance, detached. `None` where the tensors are not all f32 on flex (all tracked or
/// all plain), the input's rank is below 2 or gamma and beta are not `[channels]` (the caller
/// then uses burn's, which reports bad shapes).
///
/// # Shapes
/// - input: `[batch, channels, ...]`
/// - gamma, beta: `[channels]`
/// - output: the input's shape; mean, variance: `[channels]`
pub fn batch_norm_train<const D: usize>(
    input: &Tensor<D>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    epsilon: f64,
) -> Option<BatchNormTrainOutput<D>> {
    if D < 2 || gamma.dims() != [input.dims()[1]] || beta.dims() != gamma.dims() {
        return None;
    }
    match (on_flex(input)?, on_flex(gamma)?, on_flex(beta)?) {
        (OnFlex::Plain(x), OnFlex::Plain(g), OnFlex::Plain(b)) => {
            let (output, stats) = normalise(&contiguous(&x), values(&contiguous(&g)), &b, epsilon);
            Some(BatchNormTrainOutput {
                output: Tensor::from_primitive::<Flex>(output),
                mean: Tensor::from_primitive::<Flex>(stats.mean_tensor()),
                variance: Tensor::from_primitive::<Flex>(stats.variance_tensor()),
            })
        }
        (OnFlex::Autodiff(x), OnFlex::Autodiff(g), OnFlex::Autodiff(b)) => {
            let (output, stats) = train_tracked(x, g, b, epsilon);
            let detached = |t: FlexTensor| {
                Tensor::from_primitive::<AutodiffFlex>(<FloatTensor<AutodiffFlex>>::new(t))
            };
            Some(BatchNormTrainOutput {
                output: Tensor::from_primitive::<AutodiffFlex>(output),
                mean: detached(stats.mean_tensor()),
                variance: detached(stats.variance_tensor()),
            })
        }
        _ => None,
    }
}

/// Per-channel statistics of one batch.
#[derive(Clone, Debug)]
struct Statistics {
    mean: Arc<Vec<f32>>,
    variance: Arc<Vec<f32>>,
    inv_std: Arc<Vec<f32>>,
}

impl Statistics {
    fn mean_tensor(&self) -> FlexTensor {
        flex_tensor(self.mean.to_vec(), &[self.mean.len()])
    }

    fn variance_tensor(&self) -> FlexTensor {
        flex_tensor(self.variance.to_vec(), &[self.variance.len()])
    }
}

/// What backward needs: the input, gamma and the statistics.
#[derive(Clone, Debug)]
struct State {
    input: FlexTensor,
    gamma: Arc<Vec<f32>>,
    stats: Statistics,
}

#[derive(Debug)]
struct BatchNormBackward;

impl Backward<Flex, 3> for BatchNormBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = grads.consume::<Flex>(&ops.node);
        let (input_grad, gamma_grad, beta_grad) = gradients(&ops.state, &grad);
        let [x, gamma, beta] = ops.parents;
        for (parent, grad) in [(x, input_grad), (gamma, gamma_grad), (beta, beta_grad)] {
            if let Some(parent) = parent {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

fn train_tracked(
    x: FloatTensor<AutodiffFlex>,
    gamma: FloatTensor<AutodiffFlex>,
    beta: FloatTensor<AutodiffFlex>,
    epsilon: f64,
) -> (FloatTensor<AutodiffFlex>, Statistics) {
    let prep = BatchNormBackward
        .prepare::<NoCheckpointing>([x.node(), gamma.node(), beta.node()])
        .compute_bound()
        .stateful();
    let input = contiguous(x.primitive());
    let gamma = Arc::new(values(&contiguous(gamma.primitive())).to_vec());
    let (output, stats) = normalise(&input, &gamma, beta.primitive(), epsilon);
    let output = match prep {
        OpsKind::Tracked(prep) => {
            let stats = stats.clone();
            prep.finish(
                State {
                    input,
                    gamma,
                    stats,
                },
                output,
            )
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    };
    (output, stats)
}

/// `[batch, channels, spatial]` sizes of a `[batch, channels, ...]` tensor.
fn layout(shape: &[usize]) -> (usize, usize, usize) {
    (shape[0], shape[1], shape[2..].iter().product())
}

/// Sum of `f(values[i])` in f32 lanes the compiler vectorises, returned as f64. (Measured: one
/// pass per sum beats one pass with two sets of lanes on these row lengths.)
fn sum_map(values: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut chunks = values.chunks_exact(16);
    for chunk in &mut chunks {
        for (lane, &value) in lanes.iter_mut().zip(chunk) {
            *lane += f(value);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Sum of `f(a[i], b[i])` in f32 lanes, returned as f64.
fn sum_zip(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f64 {
    let mut lanes = [0.0f32; 16];
    let mut chunks_a = a.chunks_exact(16);
    let mut chunks_b = b.chunks_exact(16);
    for (ca, cb) in (&mut chunks_a).zip(&mut chunks_b) {
        for ((lane, &x), &y) in lanes.iter_mut().zip(ca).zip(cb) {
            *lane += f(x, y);
        }
    }
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(&x, &y)| f(x, y))
        .sum();
    lanes.iter().map(|&v| v as f64).sum::<f64>() + tail as f64
}

/// Normalises a contiguous input with its batch statistics.
fn normalise(
    input: &FlexTensor,
    gamma: &[f32],
    beta: &FlexTensor,
    epsilon: f64,
) -> (FlexTensor, Statistics) {
    let _span = profile::span(KernelKind::BatchNormForward, 0);
    let shape = dims(input);
    let (batch, channels, spatial) = layout(&shape);
    let input = values(input);
    let count = (batch * spatial) as f64;
    let row = |b: usize, c: usize| &input[(b * channels + c) * spatial..][..spatial];

    let (mean, variance): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .with_min_len(rows_per_task(batch * spatial, 1 << 15))
        .map(|c| {
            let mean = (0..batch).map(|b| sum_map(row(b, c), |v| v)).sum::<f64>() / count;
            let centre = mean as f32;
            let squares = (0..batch)
                .map(|b| sum_map(row(b, c), |v| (v - centre) * (v - centre)))
                .sum::<f64>();
            (mean as f32, (squares / count) as f32)
        })
        .unzip();
    let inv_std: Vec<f32> = variance
        .iter()
        .map(|&v| (1.0 / (v as f64 + epsilon).sqrt()) as f32)
        .collect();

    let beta = values(&contiguous(beta)).to_vec();
    let scale: Vec<f32> = (0..channels).map(|c| gamma[c] * inv_std[c]).collect();
    // SAFETY: the rows of `spatial` values cover the output, and each value of each is written.
    let output = unsafe {
        written(input.len(), |output| {
            output
                .par_chunks_mut(spatial.max(1))
                .enumerate()
                .with_min_len(rows_per_task(spatial, 1 << 15))
                .for_each(|(r, out)| {
                    let c = r % channels;
                    let (centre, a, b) = (mean[c], scale[c], beta[c]);
                    for (o, &v) in out.iter_mut().zip(&input[r * spatial..][..spatial]) {
                        o.write((v - centre) * a + b);
                    }
                })
        })
    };
    let stats = Statistics {
        mean: Arc::new(mean),
        variance: Arc::new(variance),
        inv_std: Arc::new(inv_std),
    };
    (flex_tensor(output, &shape), stats)
}

/// Gradients of the input, gamma and beta given the output's gradient:
/// `dbeta = Σ dy`, `dgamma = Σ dy x̂`, `dx = γ σ⁻¹ (dy - dbeta / m - x̂ dgamma / m)`.
fn gradients(state: &State, grad: &FlexTensor) -> (FlexTensor, FlexTensor, FlexTensor) {
    let _span = profile::span(KernelKind::BatchNormBackward, 0);
    let grad = contiguous(grad);
    let dy = values(&grad);
    let input = values(&state.input);
    let shape = dims(&state.input);
    let (batch, channels, spatial) = layout(&shape);
    let count = (batch * spatial) as f64;
    fn rows(data: &[f32], start: usize, len: usize) -> &[f32] {
        &data[start * len..][..len]
    }
    let Statistics { mean, inv_std, .. } = &state.stats;

    let (beta_grad, gamma_grad): (Vec<f32>, Vec<f32>) = (0..channels)
        .into_par_iter()
        .with_min_len(rows_per_task(batch * spatial, 1 << 15))
        .map(|c| {
            let centre = mean[c];
            let (mut sum_dy, mut sum_dy_centred) = (0.0f64, 0.0f64);
            for b in 0..batch {
                sum_dy += sum_map(rows(dy, b * channels + c, spatial), |g| g);
                sum_dy_centred += sum_zip(
                    rows(dy, b * channels + c, spatial),
                    rows(input, b * channels + c, spatial),
                    |g, v| g * (v - centre),
                );
            }
            (sum_dy as f32, (sum_dy_centred * inv_std[c] as f64) as f32)
        })
        .unzip();

    // dx = k_dy dy + k_x (x - mean) + k_0 per channel.
    let coefficients: Vec<[f32; 4]> = (0..channels)
        .map(|c| {
            let scale = state.gamma[c] as f64 * inv_std[c] as f64;
            let k_x = -scale * inv_std[c] as f64 * gamma_grad[c] as f64 / count;
            let k_0 = -scale * beta_grad[c] as f64 / count;
            [scale as f32, k_x as f32, k_0 as f32, mean[c]]
        })
        .collect();
    // SAFETY: the rows of `spatial` values cover the gradient, and each value of each is written.
    let input_grad = unsafe {
        written(input.len(), |input_grad| {
            input_grad
                .par_chunks_mut(spatial.max(1))
                .enumerate()
                .with_min_len(rows_per_task(spatial, 1 << 15))
                .for_each(|(r, out)| {
                    let [k_dy, k_x, k_0, centre] = coefficients[r % channels];
                    let rows = dy[r * spatial..][..spatial]
                        .iter()
                        .zip(&input[r * spatial..][..spatial]);
                    for (o, (&g, &v)) in out.iter_mut().zip(rows) {
                        o.write(k_dy * g + k_x * (v - centre) + k_0);
                    }
                })
        })
    };
    (
        flex_tensor(input_grad, &shape),
        flex_tensor(gamma_grad, &[channels]),
        flex_tensor(beta_grad, &[channels]),
    )
}

#[cfg(test)]
mod tests {
    use crate::test_util::values;
    use burn::tensor::module::batch_norm_train;
    use burn::tensor::{Device, Distribution, Tensor};
    use proptest::prelude::*;

    fn assert_close(name: &str, ours: &[f32], burn: &[f32]) {
        assert_eq!(ours.len(), burn.len(), "{name}: lengths");
        let scale = burn.iter().fold(1.0f32, |m, v| m.max(v.abs()));
        for (i, (a, b)) in ours.iter().zip(burn).enumerate() {
            assert!(
                (a - b).abs() <= 2e-4 * scale,
                "{name}[{i}]: flint {a}, burn {b} (scale {scale})"
            );
        }
    }

    /// flint's host batch norm and burn's on the same input: output, mean, variance and the
    /// gradients of the input, gamma and beta for a random output weighting.
    fn compare<const D: usize>(dims: [usize; D], mean: f64, std: f64, seed: u64) {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let channels = dims[1];
        let x = Tensor::<D>::random(dims, Distribution::Normal(mean, std), &device).require_grad();
        let gamma = Tensor::<1>::random([channels], Distribution::Uniform(0.5, 1.5), &device)
            .require_grad();
        let beta =
            Tensor::<1>::random([channels], Distribution::Normal(0.0, 1.0), &device).require_grad();
        let weights = Tensor::<D>::random(dims, Distribution::Normal(0.0, 1.0), &device);
        let mut results = Vec::new();
        for flint in [true, false] {
            let (output, batch_mean, variance) = if flint {
                let r = super::batch_norm_train(&x, &gamma, &beta, 1e-5)
                    .expect("flex takes the host path");
                (r.output, r.mean, r.variance)
            } else {
                let r = batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5);
                (r.output, r.mean, r.variance)
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            results.push([
                values(output),
                values(batch_mean),
                values(variance),
                values(x.grad(&grads).unwrap()),
                values(gamma.grad(&grads).unwrap()),
                values(beta.grad(&grads).unwrap()),
            ]);
        }
        let names = [
            "output",
            "mean",
            "variance",
            "x grad",
            "gamma grad",
            "beta grad",
        ];
        for (i, name) in names.iter().enumerate() {
            assert_close(name, &results[0][i], &results[1][i]);
        }
    }

    #[test]
    fn matches_burn_for_images_and_features() {
        compare([8, 3, 5, 7], 0.0, 1.0, 1);
        compare([16, 4], 0.0, 1.0, 2);
        compare([4, 2, 3, 2, 5], 0.0, 1.0, 3);
    }

    #[test]
    fn matches_burn_with_a_large_mean() {
        compare([8, 3, 6, 6], 100.0, 0.5, 4);
        // Rows as long as the reference CNN's, summed in f32 lanes.
        compare([6, 3, 16, 16], 100.0, 0.5, 5);
        compare([6, 2, 28, 28], -3.0, 2.0, 6);
    }

    #[test]
    fn statistics_are_detached_and_normalise_the_batch() {
        let device = Device::flex().autodiff();
        let x = Tensor::<2>::from_floats([[1.0, 10.0], [3.0, 30.0]], &device).require_grad();
        let gamma = Tensor::<1>::ones([2], &device).require_grad();
        let beta = Tensor::<1>::zeros([2], &device).require_grad();
        let r = super::batch_norm_train(&x, &gamma, &beta, 0.0).unwrap();
        assert_eq!(values(r.mean.clone()), vec![2.0, 20.0]);
        assert_eq!(values(r.variance.clone()), vec![1.0, 100.0]);
        assert!(!r.mean.is_require_grad() && !r.variance.is_require_grad());
        assert_close("output", &values(r.output), &[-1.0, -1.0, 1.0, 1.0]);
    }

    #[test]
    fn declines_shapes_it_does_not_compute() {
        let device = Device::flex();
        let x = Tensor::<4>::zeros([2, 3, 4, 4], &device);
        let three = Tensor::<1>::ones([3], &device);
        let two = Tensor::<1>::ones([2], &device);
        assert!(super::batch_norm_train(&x, &two, &three, 1e-5).is_none());
        assert!(super::batch_norm_train(&x, &three, &two, 1e-5).is_none());
        let rank_one = Tensor::<1>::zeros([3], &device);
        assert!(super::batch_norm_train(&rank_one, &three, &three, 1e-5).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_burn(
            batch in 2usize..6, channels in 1usize..5, height in 1usize..7, width in 1usize..7,
            mean in -3.0f64..3.0, std in 0.1f64..3.0, seed in 0u64..1000,
        ) {
            compare([batch, channels, height, width], mean, std, seed);
        }
    }
}
