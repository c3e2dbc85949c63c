//! BatchNorm: train-mode normalisation, the running-statistics update formula (momentum, the
//! cumulative average, unbiased variance), options, folding into conv/linear, recalibration.

mod common;

use burn::module::{Module, Param};
use burn::nn::conv::Conv2dConfig;
use burn::nn::{LinearConfig, PaddingConfig2d};
use burn::tensor::{Device, Distribution, Tensor};
use common::{plain_device, train_device, values};
use flint_layers::{
    BatchNorm, BatchNormConfig, BatchNormLayers, fuse_conv_bn, fuse_linear_bn, recalibrate_bn,
};
use proptest::prelude::*;

/// Per-channel mean and biased/unbiased variance of a `[N, C, L]` tensor's values, on the host.
fn channel_stats(xs: &[f32], [n, c, l]: [usize; 3]) -> Vec<(f64, f64, f64)> {
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|b| (0..l).map(move |i| (b * c + ch) * l + i))
                .map(|i| f64::from(xs[i]))
                .collect();
            let m = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / m;
            let ss = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>();
            (mean, ss / m, ss / (m - 1.0))
        })
        .collect()
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// Random affine parameters and running statistics, so the properties don't rest on 1s and 0s.
fn randomise(bn: BatchNorm, device: &Device) -> BatchNorm {
    let c = bn.num_features;
    let mut bn = bn;
    if bn.gamma.is_some() {
        bn.gamma = Some(Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(0.5, 2.0),
            device,
        )));
        bn.beta = Some(Param::from_tensor(Tensor::random(
            [c],
            Distribution::Uniform(-1.0, 1.0),
            device,
        )));
    }
    if let (Some(mean), Some(var)) = (&bn.running_mean, &bn.running_var) {
        mean.update(Tensor::random(
            [c],
            Distribution::Uniform(-1.0, 1.0),
            device,
        ));
        var.update(Tensor::random([c], Distribution::Uniform(0.5, 2.0), device));
    }
    bn
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Train mode without affine: each channel of the output has mean 0 and (biased) variance
    /// `σ² / (σ² + eps)`, i.e. 1.
    #[test]
    fn train_output_is_standardised(n in 2usize..6, c in 1usize..5, h in 1usize..6, w in 1usize..6, seed in any::<u64>()) {
        let device = train_device();
        device.seed(seed);
        let x = Tensor::<4>::random([n, c, h, w], Distribution::Normal(3.0, 2.0), &device);
        let bn = BatchNormConfig::new(c).with_affine(false).init(&device);
        let ys = values(&bn.forward(x.clone()));
        let xs = values(&x);
        let input = channel_stats(&xs, [n, c, h * w]);
        for (ch, (mean, var, _)) in channel_stats(&ys, [n, c, h * w]).into_iter().enumerate() {
            let expected = input[ch].1 / (input[ch].1 + 1e-5);
            prop_assert!(mean.abs() < 1e-4, "channel {ch}: mean {mean}");
            prop_assert!(close(var, expected, 1e-3), "channel {ch}: variance {var}, expected {expected}");
        }
    }

    /// Running statistics follow `r ← (1-m) r + m · batch` with the unbiased batch variance
    /// (PyTorch), or the cumulative average when momentum is None; the counter counts batches.
    #[test]
    fn running_stats_follow_the_update_formula(
        n in 2usize..5, c in 1usize..4, l in 1usize..6, batches in 1usize..4,
        momentum in prop::option::of(0.0f64..=1.0), unbiased in any::<bool>(), seed in any::<u64>(),
    ) {
        let device = train_device();
        device.seed(seed);
        let bn = BatchNormConfig::new(c)
            .with_momentum(momentum)
            .with_unbiased_running_var(unbiased)
            .init(&device);
        let bn = randomise(bn, &device);
        let mut mean: Vec<f64> = values(&bn.running_mean.as_ref().unwrap().value_sync()).iter().map(|&v| f64::from(v)).collect();
        let mut var: Vec<f64> = values(&bn.running_var.as_ref().unwrap().value_sync()).iter().map(|&v| f64::from(v)).collect();
        for k in 1..=batches {
            let x = Tensor::<3>::random([n, c, l], Distribution::Normal(1.0, 3.0), &device);
            let stats = channel_stats(&values(&x), [n, c, l]);
            bn.forward(x);
            let factor = momentum.unwrap_or(1.0 / k as f64);
            for ch in 0..c {
                let batch_var = if unbiased { stats[ch].2 } else { stats[ch].1 };
                mean[ch] += factor * (stats[ch].0 - mean[ch]);
                var[ch] += factor * (batch_var - var[ch]);
            }
        }
        let got_mean = values(&bn.running_mean.as_ref().unwrap().value_sync());
        let got_var = values(&bn.running_var.as_ref().unwrap().value_sync());
        for ch in 0..c {
            prop_assert!(close(f64::from(got_mean[ch]), mean[ch], 1e-4), "mean {} vs {}", got_mean[ch], mean[ch]);
            prop_assert!(close(f64::from(got_var[ch]), var[ch], 1e-4), "var {} vs {}", got_var[ch], var[ch]);
        }
        let count = values(&bn.num_batches_tracked.as_ref().unwrap().value_sync());
        prop_assert_eq!(count, vec![batches as f32]);
    }

    /// Inference uses the running statistics, equal to burn's BatchNorm with the same values;
    /// without tracked statistics, batch statistics are used in inference too (PyTorch).
    #[test]
    fn inference_matches_burn_and_torch_rules(n in 1usize..4, c in 1usize..4, l in 2usize..6, seed in any::<u64>()) {
        let device = plain_device();
        device.seed(seed);
        let x = Tensor::<3>::random([n, c, l], Distribution::Normal(0.5, 2.0), &device);
        let ours = randomise(BatchNormConfig::new(c).init(&device), &device);
        let mut theirs = burn::nn::BatchNormConfig::new(c).init(&device);
        theirs.gamma = ours.gamma.clone().unwrap();
        theirs.beta = ours.beta.clone().unwrap();
        theirs.running_mean = burn::module::RunningState::new(ours.running_mean.as_ref().unwrap().value_sync());
        theirs.running_var = burn::module::RunningState::new(ours.running_var.as_ref().unwrap().value_sync());
        let (a, b) = (values(&ours.forward(x.clone())), values(&theirs.forward(x.clone())));
        for (a, b) in a.iter().zip(&b) {
            prop_assert!(close(f64::from(*a), f64::from(*b), 1e-5), "{a} vs burn's {b}");
        }

        let untracked = BatchNormConfig::new(c).with_affine(false).with_track_running_stats(false).init(&device);
        let ys = values(&untracked.forward(x.clone()));
        let input = channel_stats(&values(&x), [n, c, l]);
        for (ch, (mean, var, _)) in channel_stats(&ys, [n, c, l]).into_iter().enumerate() {
            prop_assert!(mean.abs() < 1e-4);
            prop_assert!(close(var, input[ch].1 / (input[ch].1 + 1e-5), 1e-3));
        }
    }

    /// Folding: `fuse_conv_bn(conv, bn)` equals `bn(conv(x))` in inference to 1e-5 relative, for
    /// flint's and burn's BatchNorm, with or without a conv bias.
    #[test]
    fn folded_conv_equals_conv_then_bn(
        c_in in 1usize..4, c_out in 1usize..5, kernel in 1usize..4, stride in 1usize..3,
        padding in 0usize..2, bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let device = plain_device();
        device.seed(seed);
        let conv = Conv2dConfig::new([c_in, c_out], [kernel, kernel])
            .with_stride([stride, stride])
            .with_padding(PaddingConfig2d::Explicit(padding, padding, padding, padding))
            .with_bias(bias)
            .init(&device);
        let bn = randomise(BatchNormConfig::new(c_out).init(&device), &device);
        let x = Tensor::<4>::random([2, c_in, 7, 6], Distribution::Normal(0.0, 1.0), &device);
        let expected = values(&bn.forward(conv.forward(x.clone())));
        let fused = values(&fuse_conv_bn(&conv, &bn).unwrap().forward(x.clone()));
        for (a, b) in fused.iter().zip(&expected) {
            prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "fused {a} vs conv+bn {b}");
        }

        let mut burn_bn = burn::nn::BatchNormConfig::new(c_out).init(&device);
        burn_bn.running_var = burn::module::RunningState::new(Tensor::random([c_out], Distribution::Uniform(0.5, 2.0), &device));
        let expected = values(&burn_bn.forward(conv.forward(x.clone())));
        let fused = values(&fuse_conv_bn(&conv, &burn_bn).unwrap().forward(x));
        for (a, b) in fused.iter().zip(&expected) {
            prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "fused {a} vs conv+burn bn {b}");
        }
    }

    /// The same for a linear layer followed by BatchNorm1d.
    #[test]
    fn folded_linear_equals_linear_then_bn(d_in in 1usize..8, d_out in 1usize..8, bias in any::<bool>(), seed in any::<u64>()) {
        let device = plain_device();
        device.seed(seed);
        let linear = LinearConfig::new(d_in, d_out).with_bias(bias).init(&device);
        let bn = randomise(BatchNormConfig::new(d_out).init(&device), &device);
        let x = Tensor::<2>::random([5, d_in], Distribution::Normal(0.0, 1.0), &device);
        let expected = values(&bn.forward(linear.forward(x.clone())));
        let fused = values(&fuse_linear_bn(&linear, &bn).unwrap().forward(x));
        for (a, b) in fused.iter().zip(&expected) {
            prop_assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "fused {a} vs linear+bn {b}");
        }
    }
}

#[test]
fn folding_refuses_untracked_or_mismatched_batch_norm() {
    let device = plain_device();
    let conv = Conv2dConfig::new([2, 3], [3, 3]).init(&device);
    let untracked = BatchNormConfig::new(3)
        .with_track_running_stats(false)
        .init(&device);
    let err = fuse_conv_bn(&conv, &untracked).unwrap_err();
    assert!(
        err.to_string()
            .contains("does not track running statistics"),
        "{err}"
    );
    let err = fuse_conv_bn(&conv, &BatchNormConfig::new(4).init(&device)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "fuse_conv_bn: the layer has 3 output channels but the BatchNorm has 4"
    );
}

/// A frozen or `valid()` BatchNorm on the training device uses and keeps its running statistics.
#[test]
fn frozen_and_valid_batch_norm_keep_running_stats() {
    let device = train_device();
    let bn = randomise(BatchNormConfig::new(3).init(&device), &device);
    let before = values(&bn.running_mean.as_ref().unwrap().value_sync());
    let x = Tensor::<2>::random([8, 3], Distribution::Normal(5.0, 1.0), &device);
    let frozen = bn.clone().freeze();
    let y_frozen = values(&frozen.forward(x.clone()));
    let y_valid = values(&bn.valid().forward(x.clone().inner()));
    assert_eq!(
        values(&frozen.running_mean.as_ref().unwrap().value_sync()),
        before
    );
    for (a, b) in y_frozen.iter().zip(&y_valid) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()));
    }
    // Training changes them.
    bn.forward(x);
    assert_ne!(
        values(&bn.running_mean.as_ref().unwrap().value_sync()),
        before
    );
}

#[derive(Module, Debug)]
struct TwoNorms {
    first: BatchNorm,
    second: BatchNorm,
}

impl BatchNormLayers for TwoNorms {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(&mut self.first);
        f(&mut self.second);
    }
}

/// Recalibration: running statistics become the plain average of the batches' means and
/// unbiased variances, whatever they were; the momentum is restored afterwards.
#[test]
fn recalibration_averages_batch_statistics() {
    let device = train_device();
    device.seed(17);
    let model = TwoNorms {
        first: randomise(BatchNormConfig::new(2).init(&device), &device),
        second: randomise(
            BatchNormConfig::new(2)
                .with_momentum(Some(0.3))
                .init(&device),
            &device,
        ),
    };
    let batches: Vec<Tensor<3>> = (0..4)
        .map(|k| {
            Tensor::random(
                [3, 2, 5],
                Distribution::Normal(k as f64, 1.0 + k as f64),
                &device,
            )
        })
        .collect();
    let model = recalibrate_bn(model, batches.clone(), |model, x| {
        model.second.forward(model.first.forward(x))
    });
    assert_eq!(model.first.momentum, Some(0.1));
    assert_eq!(model.second.momentum, Some(0.3));

    let (mut mean, mut var) = (vec![0.0; 2], vec![0.0; 2]);
    for x in &batches {
        for (ch, (m, _, v)) in channel_stats(&values(x), [3, 2, 5]).into_iter().enumerate() {
            mean[ch] += m / 4.0;
            var[ch] += v / 4.0;
        }
    }
    let got_mean = values(&model.first.running_mean.as_ref().unwrap().value_sync());
    let got_var = values(&model.first.running_var.as_ref().unwrap().value_sync());
    for ch in 0..2 {
        assert!(
            close(f64::from(got_mean[ch]), mean[ch], 1e-4),
            "{got_mean:?} vs {mean:?}"
        );
        assert!(
            close(f64::from(got_var[ch]), var[ch], 1e-4),
            "{got_var:?} vs {var:?}"
        );
    }
    assert_eq!(
        values(
            &model
                .first
                .num_batches_tracked
                .as_ref()
                .unwrap()
                .value_sync()
        ),
        vec![4.0]
    );
}
