//! MaxPool2d: `forward` and `forward_relu` against burn's `max_pool2d` (then `relu`), values
//! and gradients, on flint's kernel (non-overlapping windows) and burn's path (overlapping
//! windows), in training and in inference.

mod common;

use burn::tensor::activation::relu;
use burn::tensor::module::max_pool2d;
use burn::tensor::ops::MaxPoolOptions;
use burn::tensor::{Distribution, Tensor, TensorData};
use common::{plain_device, train_device, values};
use flint_layers::MaxPool2dConfig;
use proptest::prelude::*;

/// Values as bit patterns, every NaN as one pattern.
fn bits(values: Vec<f32>) -> Vec<u32> {
    values
        .iter()
        .map(|v| if v.is_nan() { u32::MAX } else { v.to_bits() })
        .collect()
}

/// Output bits and input gradient of the layer's `forward_relu` (or `forward`) and of burn's
/// `relu(max_pool2d(..))` (or `max_pool2d`) on `data`, for the loss `sum(output * w)` with
/// random weights `w`.
fn compare(
    data: Vec<f32>,
    dims: [usize; 4],
    kernel: [usize; 2],
    strides: [usize; 2],
    fused_relu: bool,
) -> [(Vec<u32>, Vec<f32>); 2] {
    let device = train_device();
    let x = Tensor::<4>::from_data(TensorData::new(data, dims), &device).require_grad();
    let pool = MaxPool2dConfig::new(kernel)
        .with_strides(Some(strides))
        .init();
    let options = MaxPoolOptions::new(kernel).with_stride(strides);
    let run = |flint: bool| {
        let output = match (flint, fused_relu) {
            (true, true) => pool.forward_relu(x.clone()),
            (true, false) => pool.forward(x.clone()),
            (false, true) => relu(max_pool2d(x.clone(), options.clone())),
            (false, false) => max_pool2d(x.clone(), options.clone()),
        };
        let weights = Tensor::<4>::from_data(
            TensorData::new(
                (0..output.shape().num_elements())
                    .map(|i| 1.0 + (i % 13) as f32)
                    .collect::<Vec<_>>(),
                output.dims(),
            ),
            &device,
        );
        let grads = (output.clone() * weights).sum().backward();
        (bits(values(&output)), values(&x.grad(&grads).unwrap()))
    };
    [run(true), run(false)]
}

#[test]
fn forward_relu_zeroes_what_relu_zeroes() {
    // 2x2 windows: positive maximum, all negative, zeros of both signs, a NaN.
    let nan = f32::NAN;
    let data = vec![
        1.0, 5.0, -1.0, -2.0, -0.0, 0.0, -1.0, 2.0, //
        3.0, 4.0, -3.0, -0.5, 0.0, -0.0, 0.0, nan,
    ];
    let [flint, burn] = compare(data, [1, 1, 2, 8], [2, 2], [2, 2], true);
    assert_eq!(flint, burn);
    assert_eq!(flint.0[..3], [5.0f32.to_bits(), 0, 0]);
    assert_eq!(flint.1[1], 1.0, "the positive maximum gets its gradient");
    assert_eq!(
        flint.1[15], 4.0,
        "the NaN gets its gradient, as through burn's ReLU"
    );
}

#[test]
fn inference_takes_the_same_values() {
    let device = plain_device();
    device.seed(3);
    let x = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &device);
    for (kernel, strides) in [([2, 2], [2, 2]), ([3, 3], [2, 2])] {
        let pool = MaxPool2dConfig::new(kernel)
            .with_strides(Some(strides))
            .init();
        let burn = relu(max_pool2d(
            x.clone(),
            MaxPoolOptions::new(kernel).with_stride(strides),
        ));
        assert_eq!(
            bits(values(&pool.forward_relu(x.clone()))),
            bits(values(&burn))
        );
    }
}

/// Values from a small set (ties in most windows, zeros of both signs, negatives) picked by
/// `picks` in turn.
fn levels(len: usize, picks: &[usize]) -> Vec<f32> {
    let levels = [-1.5f32, -0.0, 0.0, 0.5, 2.0, -0.25];
    (0..len).map(|i| levels[picks[i % picks.len()]]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    /// Non-overlapping windows (flint's kernel) and overlapping ones (burn's path), with ties,
    /// zeros of both signs, negatives and now and then a NaN.
    #[test]
    fn matches_burn(
        batch in 1usize..3, channels in 1usize..4, height in 1usize..10, width in 1usize..10,
        kh in 1usize..4, kw in 1usize..4, overlap: bool, fused_relu: bool,
        picks in proptest::collection::vec(0usize..6, 1..64),
        nan_at in proptest::option::of(0usize..600),
    ) {
        let kernel = [kh.min(height), kw.min(width)];
        let strides = if overlap { [1, 1] } else { kernel };
        let dims = [batch, channels, height, width];
        let len = dims.iter().product::<usize>();
        let mut data = levels(len, &picks);
        if let Some(at) = nan_at.filter(|&at| at < len) {
            data[at] = f32::NAN;
        }
        let [flint, burn] = compare(data, dims, kernel, strides, fused_relu);
        prop_assert_eq!(flint, burn);
    }
}
