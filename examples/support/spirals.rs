//! The examples' small data set: interleaved spirals in the plane, generated in memory.

use burn::tensor::{Device, Int, Tensor, TensorData};

/// `per_class` points on each of `classes` spiral arms, with Gaussian-ish noise from a small
/// deterministic generator (so the example needs no data files and gives the same numbers on
/// every run).
pub fn spirals(per_class: usize, classes: usize, noise: f32, seed: u64) -> (Vec<f32>, Vec<i64>) {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut uniform = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32) / ((1u64 << 24) as f32)
    };
    let (mut points, mut labels) = (Vec::new(), Vec::new());
    for class in 0..classes {
        for i in 0..per_class {
            let r = i as f32 / per_class as f32;
            let angle = class as f32 * std::f32::consts::TAU / classes as f32 + r * 4.0;
            // Sum of three uniforms: a cheap bell-shaped noise.
            let mut jitter = || (uniform() + uniform() + uniform() - 1.5) * noise;
            points.push(r * angle.cos() + jitter());
            points.push(r * angle.sin() + jitter());
            labels.push(class as i64);
        }
    }
    (points, labels)
}

pub fn tensors(data: (Vec<f32>, Vec<i64>), device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
    let (points, labels) = data;
    let n = labels.len();
    (
        Tensor::from_data(TensorData::new(points, [n, 2]), device),
        Tensor::from_data(TensorData::new(labels, [n]), device),
    )
}

pub fn accuracy(logits: Tensor<2>, labels: Tensor<1, Int>) -> f32 {
    let n = labels.dims()[0] as f32;
    let correct: i64 = logits
        .argmax(1)
        .squeeze_dim::<1>(1)
        .equal(labels)
        .int()
        .sum()
        .into_scalar();
    correct as f32 / n
}
