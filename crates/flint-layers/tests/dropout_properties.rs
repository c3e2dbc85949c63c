//! Properties of the dropout family: inference is the identity, training multiplies by a
//! `{0, 1/(1-p)}` mask of the right granularity, the empirical rates and moments are within
//! statistical bounds, and gradients flow only through kept units.

mod common;

use burn::module::Module;
use burn::nn::LinearConfig;
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::{
    assert_grouped_mask, binomial_bounds, plain_device, positive_input, train_device, values,
};
use flint_layers::{
    AlphaDropoutConfig, DropBlock2dConfig, DropConnectConfig, DropPathConfig, DropoutConfig,
    FeatureAlphaDropoutConfig, GaussianDropoutConfig, SpatialDropoutConfig,
};
use proptest::prelude::*;

/// A layer's forward pass, boxed so the identity properties run over every layer.
type BoxedForward = Box<dyn Fn(Tensor<4>, Mode) -> Tensor<4>>;

/// Every stochastic layer's forward, boxed so the identity properties run over all of them.
fn all_layers(
    prob: f64,
    block: usize,
    width: usize,
    device: &Device,
) -> Vec<(&'static str, BoxedForward)> {
    let drop_connect = DropConnectConfig::new(LinearConfig::new(width, width), prob).init(device);
    vec![
        (
            "Dropout",
            boxed(DropoutConfig::new(prob).init(), |l, x| l.forward(x)),
        ),
        (
            "SpatialDropout",
            boxed(SpatialDropoutConfig::new(prob).init(), |l, x| l.forward(x)),
        ),
        (
            "AlphaDropout",
            boxed(AlphaDropoutConfig::new(prob).init(), |l, x| l.forward(x)),
        ),
        (
            "FeatureAlphaDropout",
            boxed(FeatureAlphaDropoutConfig::new(prob).init(), |l, x| {
                l.forward(x)
            }),
        ),
        (
            "GaussianDropout",
            boxed(GaussianDropoutConfig::new(prob).init(), |l, x| l.forward(x)),
        ),
        (
            "DropPath",
            boxed(DropPathConfig::new(prob).init(), |l, x| l.forward(x)),
        ),
        (
            "DropBlock2d",
            boxed(DropBlock2dConfig::new(prob, block).init(), |l, x| {
                l.forward(x)
            }),
        ),
        // DropConnect is not the identity but the plain linear layer in inference.
        (
            "DropConnect",
            boxed(drop_connect, |l, x| {
                l.forward(x.clone()) - l.linear.forward(x.clone()) + x
            }),
        ),
    ]
}

#[derive(Clone, Copy, Debug)]
enum Mode {
    AsIs,
    Valid,
    Frozen,
}

fn boxed<L: Module + 'static>(layer: L, forward: fn(&L, Tensor<4>) -> Tensor<4>) -> BoxedForward {
    Box::new(move |x, mode| match mode {
        Mode::AsIs => forward(&layer, x),
        Mode::Valid => forward(&layer.valid(), x),
        Mode::Frozen => forward(&layer.clone().freeze(), x),
    })
}

fn shape4() -> impl Strategy<Value = [usize; 4]> {
    (1usize..5, 1usize..6, 1usize..9, 4usize..9).prop_map(|(n, c, h, w)| [n, c, h.max(1), w])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Inference is the identity for every layer: on a plain device, after `valid()`, and after
    /// `freeze()` on the training device.
    #[test]
    fn inference_is_identity(shape in shape4(), prob in 0.0f64..0.95, block in 1usize..5, seed in any::<u64>()) {
        for (device, mode) in [
            (plain_device(), Mode::AsIs),
            (train_device(), Mode::Valid),
            (train_device(), Mode::Frozen),
        ] {
            device.seed(seed);
            let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &device);
            for (name, forward) in all_layers(prob, block, shape[3], &device) {
                let y = forward(x.clone(), mode);
                let (xs, ys) = (values(&x), values(&y));
                for (a, b) in xs.iter().zip(&ys) {
                    prop_assert!((a - b).abs() <= 1e-5 * (1.0 + a.abs()), "{name} {mode:?}: {a} became {b}");
                }
            }
        }
    }

    /// Training: element-wise `{0, 1/(1-p)}` mask for Dropout, per (sample, channel) for
    /// SpatialDropout, per sample for DropPath.
    #[test]
    fn training_masks_have_the_right_granularity(shape in shape4(), prob in 0.0f64..0.95, seed in any::<u64>()) {
        let device = train_device();
        device.seed(seed);
        let x = positive_input(shape, &device);
        let xs = values(&x);
        let scale = (1.0 / (1.0 - prob)) as f32;
        let [_, c, h, w] = shape;

        let y = DropoutConfig::new(prob).init().forward(x.clone());
        assert_grouped_mask(&xs, &values(&y), scale, |i| i);

        let y = SpatialDropoutConfig::new(prob).init().forward(x.clone());
        assert_grouped_mask(&xs, &values(&y), scale, |i| i / (h * w));

        let y = DropPathConfig::new(prob).init().forward(x.clone());
        assert_grouped_mask(&xs, &values(&y), scale, |i| i / (c * h * w));

        // Rank 3 (Dropout1d): per (sample, channel) too.
        let x3 = x.clone().reshape([shape[0], c, h * w]);
        let y = SpatialDropoutConfig::new(prob).init().forward(x3);
        assert_grouped_mask(&xs, &values(&y), scale, |i| i / (h * w));
    }

    /// DropBlock: every dropped pixel lies in a fully dropped `block × block` square inside the
    /// map, and kept pixels are scaled by one factor, `count / count_ones`.
    #[test]
    fn dropblock_drops_whole_blocks(
        n in 1usize..3, c in 1usize..4, h in 1usize..12, w in 1usize..12,
        block in 1usize..6, prob in 0.05f64..0.9, seed in any::<u64>(),
    ) {
        let device = train_device();
        device.seed(seed);
        let x = positive_input([n, c, h, w], &device);
        let y = DropBlock2dConfig::new(prob, block).init().forward(x.clone());
        let (xs, ys) = (values(&x), values(&y));
        let kept = ys.iter().filter(|&&v| v != 0.0).count();
        if kept > 0 {
            let scale = (xs.len() as f64 / kept as f64) as f32;
            assert_grouped_mask(&xs, &ys, scale, |i| i);
        }
        let b = block.min(h).min(w);
        let dropped = |map: usize, i: usize, j: usize| ys[map * h * w + i * w + j] == 0.0;
        for map in 0..n * c {
            for i in 0..h {
                for j in 0..w {
                    if !dropped(map, i, j) {
                        continue;
                    }
                    let covered = (i.saturating_sub(b - 1)..=i.min(h - b)).any(|top| {
                        (j.saturating_sub(b - 1)..=j.min(w - b)).any(|left| {
                            (top..top + b).all(|r| (left..left + b).all(|s| dropped(map, r, s)))
                        })
                    });
                    prop_assert!(covered, "pixel ({i}, {j}) of map {map} dropped outside a whole block");
                }
            }
        }
    }

    /// AlphaDropout and FeatureAlphaDropout: `y = a·(x·m + α'(1-m)) + b` with one mask value per
    /// element (per channel for the feature variant).
    #[test]
    fn alpha_dropout_is_the_papers_affine_map(shape in shape4(), prob in 0.01f64..0.9, seed in any::<u64>()) {
        let device = train_device();
        device.seed(seed);
        let x = positive_input(shape, &device);
        let xs = values(&x);
        let alpha = flint_layers::SELU_ALPHA_PRIME;
        let a = 1.0 / ((1.0 - prob) * (1.0 + prob * alpha * alpha)).sqrt();
        let b = -a * alpha * prob;
        let dropped_value = (a * alpha + b) as f32;
        let [_, _, h, w] = shape;
        for (feature, y) in [
            (false, AlphaDropoutConfig::new(prob).init().forward(x.clone())),
            (true, FeatureAlphaDropoutConfig::new(prob).init().forward(x.clone())),
        ] {
            let ys = values(&y);
            let mut status = std::collections::HashMap::new();
            for (i, (&xi, &yi)) in xs.iter().zip(&ys).enumerate() {
                let kept_value = (a * f64::from(xi) + b) as f32;
                let kept = if (yi - kept_value).abs() <= 1e-5 * (1.0 + kept_value.abs()) {
                    true
                } else {
                    prop_assert!((yi - dropped_value).abs() <= 1e-5, "{yi} is neither a·x+b nor a·α'+b");
                    false
                };
                let group = if feature { i / (h * w) } else { i };
                prop_assert_eq!(*status.entry(group).or_insert(kept), kept);
            }
        }
    }

    /// Gradients reach the input only through kept units, scaled like the kept values.
    #[test]
    fn gradients_flow_only_through_kept_units(shape in shape4(), prob in 0.0f64..0.9, seed in any::<u64>()) {
        let device = train_device();
        device.seed(seed);
        let x = positive_input(shape, &device).require_grad();
        let outputs: Vec<(&str, Tensor<4>)> = vec![
            ("Dropout", DropoutConfig::new(prob).init().forward(x.clone())),
            ("SpatialDropout", SpatialDropoutConfig::new(prob).init().forward(x.clone())),
            ("DropPath", DropPathConfig::new(prob).init().forward(x.clone())),
            ("DropBlock2d", DropBlock2dConfig::new(prob, 3).init().forward(x.clone())),
            ("GaussianDropout", GaussianDropoutConfig::new(prob).init().forward(x.clone())),
        ];
        let xs = values(&x);
        for (name, y) in outputs {
            let grads = y.clone().sum().backward();
            let grad = values(&x.grad(&grads).unwrap());
            // Every layer here is y = x · m, so dy/dx = m = y / x.
            for ((&xi, &yi), &gi) in xs.iter().zip(&values(&y)).zip(&grad) {
                let m = yi / xi;
                prop_assert!((gi - m).abs() <= 1e-4 * (1.0 + m.abs()), "{name}: grad {gi} but mask {m}");
                if yi == 0.0 {
                    prop_assert_eq!(gi, 0.0, "{} passed a gradient through a dropped unit", name);
                }
            }
        }
        // AlphaDropout: dy/dx = a on kept units, 0 on dropped ones.
        let y = AlphaDropoutConfig::new(prob.max(0.01)).init().forward(x.clone());
        let grads = y.clone().sum().backward();
        let grad = values(&x.grad(&grads).unwrap());
        let p = prob.max(0.01);
        let alpha = flint_layers::SELU_ALPHA_PRIME;
        let a = (1.0 / ((1.0 - p) * (1.0 + p * alpha * alpha)).sqrt()) as f32;
        for &g in &grad {
            prop_assert!(g == 0.0 || (g - a).abs() <= 1e-5, "AlphaDropout grad {g} is neither 0 nor a = {a}");
        }
    }

    /// DropConnect masks weights, not activations: with the identity as input the output shows
    /// the masked weight matrix, each entry 0 or w/(1-p), and only kept weights get gradients.
    #[test]
    fn drop_connect_masks_weights(d_in in 1usize..12, d_out in 1usize..12, prob in 0.0f64..0.9, seed in any::<u64>()) {
        let device = train_device();
        device.seed(seed);
        let layer = DropConnectConfig::new(LinearConfig::new(d_in, d_out), prob).init(&device);
        let eye: Vec<f32> = (0..d_in * d_in).map(|i| if i / d_in == i % d_in { 1.0 } else { 0.0 }).collect();
        let x = Tensor::<2>::from_data(TensorData::new(eye, [d_in, d_in]), &device);
        let y = layer.forward(x);
        let bias = layer.linear.bias.as_ref().unwrap().val().unsqueeze::<2>();
        let effective = values(&(y.clone() - bias));
        let weight = values(&layer.linear.weight.val());
        let scale = (1.0 / (1.0 - prob)) as f32;
        let grads = y.sum().backward();
        let weight_grad = values(&layer.linear.weight.grad(&grads).unwrap());
        for ((&w, &e), &g) in weight.iter().zip(&effective).zip(&weight_grad) {
            if e.abs() <= 1e-6 {
                prop_assert_eq!(g, 0.0, "a dropped weight received a gradient");
            } else {
                prop_assert!((e - w * scale).abs() <= 1e-5 * (1.0 + (w * scale).abs()), "{e} is not w/(1-p)");
                prop_assert!((g - scale).abs() <= 1e-5 * scale, "kept weight grad {g}, expected {scale}");
            }
        }
    }
}

/// Large fixed tensors: the empirical drop rates are within 6 binomial standard deviations.
#[test]
fn drop_rates_are_within_binomial_bounds() {
    let device = train_device();
    device.seed(7);
    let shape = [64, 64, 16, 16];
    let x = positive_input(shape, &device);
    for prob in [0.1, 0.5, 0.8] {
        let zeros = |y: Tensor<4>| values(&y).iter().filter(|&&v| v == 0.0).count();
        let n = shape.iter().product::<usize>();

        let dropped = zeros(DropoutConfig::new(prob).init().forward(x.clone()));
        let (lo, hi) = binomial_bounds(n, prob);
        assert!(
            (lo..=hi).contains(&(dropped as f64)),
            "Dropout p={prob}: {dropped} of {n}"
        );

        // Channel masks: count dropped channels, not elements.
        let maps = shape[0] * shape[1];
        let dropped = zeros(SpatialDropoutConfig::new(prob).init().forward(x.clone())) / (16 * 16);
        let (lo, hi) = binomial_bounds(maps, prob);
        assert!(
            (lo..=hi).contains(&(dropped as f64)),
            "SpatialDropout p={prob}: {dropped} of {maps}"
        );
    }
    // DropPath on many samples.
    let x = positive_input([100_000, 4], &device);
    for prob in [0.1, 0.5] {
        let dropped = values(&DropPathConfig::new(prob).init().forward(x.clone()))
            .iter()
            .filter(|&&v| v == 0.0)
            .count()
            / 4;
        let (lo, hi) = binomial_bounds(100_000, prob);
        assert!(
            (lo..=hi).contains(&(dropped as f64)),
            "DropPath p={prob}: {dropped}"
        );
    }
}

/// Inverted dropout keeps the mean: for inputs in [1, 2) each output has mean E[x] and variance
/// at most E[x²]/(1-p); the sample mean is within 6 standard errors.
#[test]
fn means_are_kept_within_bounds() {
    let device = train_device();
    device.seed(11);
    let n = 1 << 20;
    let x = positive_input([n], &device);
    let input_mean = values(&x).iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
    for prob in [0.2, 0.6] {
        let bound = 6.0 * (4.0 / (1.0 - prob) / n as f64).sqrt();
        for (name, y) in [
            (
                "Dropout",
                DropoutConfig::new(prob).init().forward(x.clone()),
            ),
            (
                "GaussianDropout",
                GaussianDropoutConfig::new(prob).init().forward(x.clone()),
            ),
        ] {
            let mean = values(&y).iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64;
            assert!(
                (mean - input_mean).abs() < bound,
                "{name} p={prob}: mean {mean} vs {input_mean}"
            );
        }
    }
}

/// GaussianDropout's noise has mean 1 and variance p/(1-p).
#[test]
fn gaussian_dropout_noise_moments() {
    let device = train_device();
    device.seed(3);
    let n = 1 << 20;
    let prob = 0.3;
    let noise = values(
        &GaussianDropoutConfig::new(prob)
            .init()
            .forward(Tensor::<1>::ones([n], &device)),
    );
    let (mean, var) = moments(&noise);
    let expected_var = prob / (1.0 - prob);
    assert!(
        (mean - 1.0).abs() < 6.0 * (expected_var / n as f64).sqrt(),
        "mean {mean}"
    );
    // Normal noise: Var[sample variance] = 2σ⁴/n.
    let sd = (2.0 * expected_var * expected_var / n as f64).sqrt();
    assert!(
        (var - expected_var).abs() < 6.0 * sd,
        "variance {var}, expected {expected_var}"
    );
}

/// AlphaDropout keeps zero mean and unit variance of standard-normal input; bounds from the
/// output's own fourth moment (standard error of the sample variance).
#[test]
fn alpha_dropout_keeps_zero_mean_unit_variance() {
    let device = train_device();
    device.seed(5);
    let n = 1 << 20;
    let x = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
    for prob in [0.05, 0.2, 0.5] {
        let ys = values(&AlphaDropoutConfig::new(prob).init().forward(x.clone()));
        let (mean, var) = moments(&ys);
        let m4 = ys
            .iter()
            .map(|&v| (f64::from(v) - mean).powi(4))
            .sum::<f64>()
            / n as f64;
        let var_se = ((m4 - var * var) / n as f64).sqrt();
        assert!(
            mean.abs() < 6.0 / (n as f64).sqrt() * var.sqrt(),
            "p={prob}: mean {mean}"
        );
        assert!((var - 1.0).abs() < 6.0 * var_se, "p={prob}: variance {var}");
        // Feature variant, over many channels.
        let xf = x.clone().reshape([1024, 1024, 1]);
        let ys = values(&FeatureAlphaDropoutConfig::new(prob).init().forward(xf));
        let (mean, var) = moments(&ys);
        // Only 1024 independent masks: the mean's error is dominated by them.
        assert!(mean.abs() < 6.0 / 32.0, "feature p={prob}: mean {mean}");
        assert!((var - 1.0).abs() < 0.25, "feature p={prob}: variance {var}");
    }
}

/// DropBlock keeps the sum of a constant map exactly (count / count_ones normalisation) and drops
/// the fraction the paper's γ implies: `1 - (1-γ)^k` per pixel, `k` the corners covering it.
#[test]
fn dropblock_rate_matches_gamma() {
    let device = train_device();
    device.seed(13);
    let (n, c, h, w, block, prob) = (64, 64, 14, 14, 5, 0.2);
    let layer = DropBlock2dConfig::new(prob, block).init();
    let y = layer.forward(Tensor::<4>::ones([n, c, h, w], &device));
    let ys = values(&y);
    let total: f64 = ys.iter().map(|&v| f64::from(v)).sum();
    assert!(
        (total - ys.len() as f64).abs() < 1e-3 * ys.len() as f64,
        "sum {total}"
    );
    let gamma = layer.gamma(h, w);
    let covering =
        |i: usize, len: usize| (i.min(len - block) + 1).saturating_sub(i.saturating_sub(block - 1));
    let mut expected = 0.0;
    for i in 0..h {
        for j in 0..w {
            expected += 1.0 - (1.0 - gamma).powi((covering(i, h) * covering(j, w)) as i32);
        }
    }
    expected /= (h * w) as f64;
    let dropped = ys.iter().filter(|&&v| v == 0.0).count() as f64 / ys.len() as f64;
    // Each map's drop fraction lies in [0, 1]: its standard deviation is at most 1/2, so the mean
    // over n·c independent maps is within 6 · 0.5 / sqrt(n·c).
    let bound = 3.0 / ((n * c) as f64).sqrt();
    assert!(
        (dropped - expected).abs() < bound,
        "dropped {dropped}, expected {expected}"
    );
}

fn moments(values: &[f32]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var = values
        .iter()
        .map(|&v| (f64::from(v) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var)
}
