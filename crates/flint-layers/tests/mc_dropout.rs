//! Monte-Carlo dropout: `mc_dropout_mode` keeps dropout stochastic while every batch norm
//! (flint's and burn's) normalises with, and keeps, its running statistics; `mc_dropout_predict`
//! summarises the passes as the mean, entropy and variance computed by hand from the same passes.

mod common;

use std::cell::RefCell;

use burn::module::Module;
use burn::nn::{
    BatchNorm as BurnBatchNorm, BatchNormConfig as BurnBatchNormConfig, Dropout, DropoutConfig,
    Linear, LinearConfig,
};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Distribution, Tensor};
use common::{train_device, values};
use flint_layers::{
    BatchNorm, BatchNormConfig, BatchNormLayers, GaussianDropout, GaussianDropoutConfig,
    LayerConfigError, McDropoutPrediction, mc_dropout_mode, mc_dropout_predict,
};

const INPUTS: usize = 6;
const HIDDEN: usize = 16;
const CLASSES: usize = 4;

/// A classifier with both kinds of batch norm and two stochastic layers, one of burn's and one
/// of flint's.
#[derive(Module, Debug)]
struct Net {
    fc1: Linear,
    bn: BatchNorm,
    drop: Dropout,
    noise: GaussianDropout,
    fc2: Linear,
    head_bn: BurnBatchNorm,
}

impl BatchNormLayers for Net {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        f(&mut self.bn);
    }

    fn for_each_burn_batch_norm(&mut self, f: &mut dyn FnMut(&mut BurnBatchNorm)) {
        f(&mut self.head_bn);
    }
}

impl Net {
    fn new(prob: f64, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(INPUTS, HIDDEN).init(device),
            bn: BatchNormConfig::new(HIDDEN).init(device),
            drop: DropoutConfig::new(prob).init(),
            noise: GaussianDropoutConfig::new(prob).init(),
            fc2: LinearConfig::new(HIDDEN, CLASSES).init(device),
            head_bn: BurnBatchNormConfig::new(CLASSES).init(device),
        }
    }

    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let h = relu(self.bn.forward(self.fc1.forward(x)));
        let h = self.noise.forward(self.drop.forward(h));
        self.head_bn.forward(self.fc2.forward(h))
    }

    /// The four running statistics, read on the host.
    fn running_stats(&self) -> Vec<Vec<f32>> {
        vec![
            values(&self.bn.running_mean.as_ref().unwrap().value_sync()),
            values(&self.bn.running_var.as_ref().unwrap().value_sync()),
            values(&self.head_bn.running_mean.value_sync()),
            values(&self.head_bn.running_var.value_sync()),
        ]
    }
}

/// A network trained for a few batches from `N(2, 3²)`, so its running statistics are neither
/// the initial 0/1 nor the statistics of the standard-normal batches the tests feed it.
fn trained_net(prob: f64, device: &Device) -> Net {
    let net = Net::new(prob, device);
    for _ in 0..5 {
        net.forward(Tensor::random(
            [32, INPUTS],
            Distribution::Normal(2.0, 3.0),
            device,
        ));
    }
    net
}

fn batch(device: &Device) -> Tensor<2> {
    Tensor::random([12, INPUTS], Distribution::Normal(0.0, 1.0), device)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Softmax of one row of logits, in `f64`.
fn softmax_row(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f64> = logits.iter().map(|&l| f64::from(l - max).exp()).collect();
    let total: f64 = exps.iter().sum();
    exps.iter().map(|e| e / total).collect()
}

/// Runs `mc_dropout_predict` with `forward`, recording the logits of every pass.
fn predict_recording(
    input: Tensor<2>,
    samples: usize,
    forward: impl Fn(Tensor<2>) -> Tensor<2>,
) -> (Result<McDropoutPrediction, LayerConfigError>, Vec<Vec<f32>>) {
    let passes = RefCell::new(Vec::new());
    let prediction = mc_dropout_predict(input, samples, |x| {
        let logits = forward(x);
        passes.borrow_mut().push(values(&logits));
        logits
    });
    (prediction, passes.into_inner())
}

/// The summary computed by hand from the recorded passes: per `(sample, class)` the mean and
/// population variance of the softmax probabilities, per sample the entropy of the mean.
struct Expected {
    mean: Vec<f64>,
    variance: Vec<f64>,
    entropy: Vec<f64>,
}

fn expected_summary(passes: &[Vec<f32>], classes: usize) -> Expected {
    let probs: Vec<Vec<f64>> = passes
        .iter()
        .map(|pass| pass.chunks(classes).flat_map(softmax_row).collect())
        .collect();
    let n = probs.len() as f64;
    let len = probs[0].len();
    let mean: Vec<f64> = (0..len)
        .map(|i| probs.iter().map(|p| p[i]).sum::<f64>() / n)
        .collect();
    let variance = (0..len)
        .map(|i| probs.iter().map(|p| (p[i] - mean[i]).powi(2)).sum::<f64>() / n)
        .collect();
    let entropy = mean
        .chunks(classes)
        .map(|row| {
            -row.iter()
                .map(|&p| if p > 0.0 { p * p.ln() } else { 0.0 })
                .sum::<f64>()
        })
        .collect();
    Expected {
        mean,
        variance,
        entropy,
    }
}

/// (a) After `mc_dropout_mode`, dropout stays stochastic while both batch norms normalise with
/// their running statistics (the inference output) and no longer update them.
#[test]
fn mc_mode_keeps_dropout_stochastic_and_batch_norm_in_inference() {
    let device = train_device();
    device.seed(1);
    let net = trained_net(0.5, &device);
    let x = batch(&device);
    let hidden = net.fc1.forward(x.clone());
    let logits_in = Tensor::<2>::random([12, CLASSES], Distribution::Normal(0.0, 1.0), &device);

    // Control: in plain training mode the batch norms use this batch's statistics, which differ
    // from the running ones, so the comparison below can tell the two apart.
    let before_control = net.valid();
    assert!(
        max_abs_diff(
            &values(&net.bn.forward(hidden.clone())),
            &values(&before_control.bn.forward(hidden.clone().inner())),
        ) > 1e-2
    );
    assert!(
        max_abs_diff(
            &values(&net.head_bn.forward(logits_in.clone())),
            &values(&before_control.head_bn.forward(logits_in.clone().inner())),
        ) > 1e-2
    );

    let stats = net.running_stats();
    let valid = net.valid();
    let mc = mc_dropout_mode(net);

    assert!(mc.drop.training.is_enabled() && mc.noise.training.is_enabled());
    assert!(!mc.bn.training.is_enabled() && !mc.head_bn.training.is_enabled());
    // Only the batch norms are frozen.
    assert!(mc.fc1.weight.val().is_require_grad() && mc.fc2.weight.val().is_require_grad());
    assert!(!mc.bn.gamma.as_ref().unwrap().val().is_require_grad());
    assert!(!mc.head_bn.gamma.val().is_require_grad());

    // Two passes differ (dropout at p = 0.5 on 12 x 16 hidden units).
    let first = values(&mc.forward(x.clone()));
    let second = values(&mc.forward(x.clone()));
    assert!(
        max_abs_diff(&first, &second) > 1e-3,
        "two MC passes gave the same output"
    );

    // Each batch norm gives its inference output.
    let flint_mc = values(&mc.bn.forward(hidden.clone()));
    let flint_inference = values(&valid.bn.forward(hidden.inner()));
    assert!(max_abs_diff(&flint_mc, &flint_inference) <= 1e-5);
    let burn_mc = values(&mc.head_bn.forward(logits_in.clone()));
    let burn_inference = values(&valid.head_bn.forward(logits_in.inner()));
    assert!(max_abs_diff(&burn_mc, &burn_inference) <= 1e-5);

    // And the passes left the running statistics alone.
    assert_eq!(mc.running_stats(), stats);
}

/// (b) The prediction is the summary of the passes: probabilities that sum to 1, the entropy
/// of their mean within `[0, ln C]`, and a non-negative variance equal to the passes' sample
/// (population) variance.
#[test]
fn prediction_summarises_the_passes() {
    let device = train_device();
    for seed in [2, 3, 4] {
        device.seed(seed);
        let mc = mc_dropout_mode(trained_net(0.5, &device));
        let x = batch(&device);
        let samples = 16;
        let (prediction, passes) = predict_recording(x, samples, |x| mc.forward(x));
        let prediction = prediction.unwrap();
        assert_eq!(passes.len(), samples, "forward called once per sample");
        assert_eq!(prediction.mean.dims(), [12, CLASSES]);
        assert_eq!(prediction.variance.dims(), [12, CLASSES]);
        assert_eq!(prediction.entropy.dims(), [12]);

        let expected = expected_summary(&passes, CLASSES);
        let mean = values(&prediction.mean);
        let variance = values(&prediction.variance);
        let entropy = values(&prediction.entropy);

        for (row, probs) in mean.chunks(CLASSES).enumerate() {
            let total: f32 = probs.iter().sum();
            assert!((total - 1.0).abs() <= 1e-5, "row {row}: sums to {total}");
            let by_hand: f64 = -probs
                .iter()
                .map(|&p| f64::from(p) * f64::from(p).ln())
                .sum::<f64>();
            let h = f64::from(entropy[row]);
            assert!(
                (h - by_hand).abs() <= 1e-5,
                "row {row}: entropy {h} vs {by_hand}"
            );
            assert!(
                (-1e-6..=(CLASSES as f64).ln() + 1e-6).contains(&h),
                "row {row}: entropy {h} outside [0, ln C]"
            );
            assert!((h - expected.entropy[row]).abs() <= 1e-5);
        }
        for (i, (&m, e)) in mean.iter().zip(&expected.mean).enumerate() {
            assert!((f64::from(m) - e).abs() <= 1e-5, "mean[{i}]: {m} vs {e}");
        }
        for (i, (&v, e)) in variance.iter().zip(&expected.variance).enumerate() {
            assert!(v >= 0.0, "variance[{i}] = {v}");
            assert!(
                (f64::from(v) - e).abs() <= 2e-6,
                "variance[{i}]: {v} vs {e}"
            );
        }
        // Stochastic passes: the variance is not trivially zero.
        assert!(expected.variance.iter().any(|&v| v > 1e-4));
    }
}

/// The entropy's bounds are reached: uniform logits give `ln C`, a confident one-hot gives 0.
#[test]
fn entropy_bounds_are_reached() {
    let device = train_device();
    let x = batch(&device);
    let uniform = mc_dropout_predict(x.clone(), 3, |x| {
        Tensor::zeros([x.dims()[0], CLASSES], &device)
    })
    .unwrap();
    for h in values(&uniform.entropy) {
        assert!((f64::from(h) - (CLASSES as f64).ln()).abs() <= 1e-6, "{h}");
    }
    assert!(values(&uniform.variance).iter().all(|&v| v.abs() <= 1e-7));

    let confident = mc_dropout_predict(x, 3, |x| {
        Tensor::<1>::from_floats([100.0, 0.0, 0.0, 0.0], &device)
            .unsqueeze::<2>()
            .repeat_dim(0, x.dims()[0])
    })
    .unwrap();
    for h in values(&confident.entropy) {
        assert!((-1e-6..=1e-6).contains(&h), "{h}");
    }
}

/// (c) With p = 0 the passes agree, the variance is 0, and the mean is the softmax of the
/// inference output (the batch norms use their running statistics).
#[test]
fn no_dropout_gives_identical_passes_and_zero_variance() {
    let device = train_device();
    device.seed(5);
    let net = trained_net(0.0, &device);
    let valid = net.valid();
    let mc = mc_dropout_mode(net);
    let x = batch(&device);
    let (prediction, passes) = predict_recording(x.clone(), 8, |x| mc.forward(x));
    let prediction = prediction.unwrap();
    for pass in &passes[1..] {
        assert_eq!(pass, &passes[0]);
    }
    assert!(values(&prediction.variance).iter().all(|&v| v <= 1e-7));

    let inference = values(&burn::tensor::activation::softmax(
        valid.forward(x.inner()),
        1,
    ));
    assert!(max_abs_diff(&values(&prediction.mean), &inference) <= 1e-5);
}

/// One sample: the mean is that pass's softmax and the variance is exactly 0.
#[test]
fn one_sample_is_its_own_mean() {
    let device = train_device();
    device.seed(6);
    let mc = mc_dropout_mode(trained_net(0.5, &device));
    let (prediction, passes) = predict_recording(batch(&device), 1, |x| mc.forward(x));
    let prediction = prediction.unwrap();
    let expected = expected_summary(&passes, CLASSES);
    for (&m, e) in values(&prediction.mean).iter().zip(&expected.mean) {
        assert!((f64::from(m) - e).abs() <= 1e-6);
    }
    assert!(values(&prediction.variance).iter().all(|&v| v == 0.0));
}

/// (d) Zero samples is an error with a clear message, and the model is never run.
#[test]
fn zero_samples_is_an_error() {
    let device = train_device();
    let (prediction, passes) = predict_recording(batch(&device), 0, |x| {
        Tensor::zeros([x.dims()[0], CLASSES], &x.device())
    });
    let err = prediction.unwrap_err();
    assert_eq!(
        err,
        LayerConfigError::Zero {
            layer: "mc_dropout_predict",
            field: "samples",
        }
    );
    assert_eq!(
        err.to_string(),
        "mc_dropout_predict: samples must be at least 1, got 0"
    );
    assert!(passes.is_empty());
}
