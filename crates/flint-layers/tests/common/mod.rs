//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod tensor_proto;

use burn::tensor::{Device, Distribution, Tensor};

/// The CPU backend with autodiff: where layers act as in training.
pub fn train_device() -> Device {
    Device::flex().autodiff()
}

/// The plain CPU backend: where every layer acts as in inference.
pub fn plain_device() -> Device {
    Device::flex()
}

/// A tensor's values as `f32`s, row-major.
pub fn values<const D: usize>(tensor: &Tensor<D>) -> Vec<f32> {
    tensor
        .to_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap()
}

/// Input in `[1, 2)`: no zeros, so a dropped unit can't be mistaken for a kept one.
pub fn positive_input<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::random(shape, Distribution::Uniform(1.0, 2.0), device)
}

/// Asserts `output = input · mask` where the mask is one of `{0, scale}` and constant over each
/// group (`group(i)` for flat index `i`); returns the number of dropped elements.
pub fn assert_grouped_mask(
    input: &[f32],
    output: &[f32],
    scale: f32,
    group: impl Fn(usize) -> usize,
) -> usize {
    assert_eq!(input.len(), output.len());
    let mut status: std::collections::HashMap<usize, bool> = Default::default();
    let mut dropped = 0;
    for (i, (&x, &y)) in input.iter().zip(output).enumerate() {
        let kept = if y == 0.0 {
            dropped += 1;
            false
        } else {
            let expected = x * scale;
            assert!(
                (y - expected).abs() <= 1e-5 * expected.abs(),
                "element {i}: output {y} is neither 0 nor input {x} x scale {scale}"
            );
            true
        };
        let previous = *status.entry(group(i)).or_insert(kept);
        assert_eq!(
            previous, kept,
            "element {i}: mask not constant over its group"
        );
    }
    dropped
}

/// Bounds of a binomial count at 6 standard deviations: a correct layer fails one in ~5e8 runs.
pub fn binomial_bounds(trials: usize, prob: f64) -> (f64, f64) {
    let mean = trials as f64 * prob;
    let sd = (trials as f64 * prob * (1.0 - prob)).sqrt();
    (mean - 6.0 * sd - 1.0, mean + 6.0 * sd + 1.0)
}
