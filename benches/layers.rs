//! Regularisation layers against burn's equivalents, on the flex CPU backend in training mode.
//!
//! Run with `cargo bench --bench layers`. Every group holds burn's equivalent next to flint's
//! layers so the ratio can be read off one run:
//!
//! - `dropout fwd` / `dropout fwd+bwd`: burn's `Dropout` and flint's dropout family (its
//!   `Dropout` included) on
//!   `[128, 64, 14, 14]` activations;
//! - `drop_connect fwd` / `drop_connect fwd+bwd`: a `[128, 512] -> 512` linear layer, plain, with
//!   burn's `Dropout` on its output, and flint's `DropConnect`;
//! - `batch_norm`: flint's `BatchNorm` and burn's on `[128, 64, 14, 14]`, training (forward,
//!   forward+backward) and inference.
//!
//! Training mode means an autodiff device and the layers' training flag on. Every measured
//! iteration ends by reading a scalar back to the host (a sum of the output, or of the input's
//! gradient), so a lazy backend can't skip work; the reduction costs the same for every layer.
//! The backward starts from a fixed dense upstream gradient, as inside a network.

use std::time::Duration;

use burn::module::Module;
use burn::nn::{BatchNormConfig as BurnBatchNormConfig, DropoutConfig, Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, criterion_group, criterion_main};
use flint::layers::{
    AlphaDropoutConfig, BatchNormConfig, DropBlock2dConfig, DropConnectConfig, DropPathConfig,
    DropoutConfig as FlintDropoutConfig, FeatureAlphaDropoutConfig, GaussianDropoutConfig,
    SpatialDropoutConfig,
};

/// A typical conv activation: batch 128, 64 channels, 14 x 14.
const SHAPE: [usize; 4] = [128, 64, 14, 14];
/// Drop probability of every dropout layer.
const PROB: f64 = 0.1;

type Forward4 = Box<dyn Fn(Tensor<4>) -> Tensor<4>>;
type Forward2 = Box<dyn Fn(Tensor<2>) -> Tensor<2>>;

fn configure(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_millis(500));
}

/// Forward only: the output summed and read back.
///
/// Neither the input nor the layer's parameters require gradients here, so no autodiff graph is
/// recorded (the layers still act as in training). Graphs recorded and never consumed by a
/// backward appear to stay in burn-autodiff's bookkeeping, which every later `backward()` walks:
/// forward-only loops with trainable parameters made the next group's first fwd+bwd benchmark
/// ~10x slower (a plain `Linear` measured 33 ms instead of 3 ms).
fn forward<const D: usize>(layer: &dyn Fn(Tensor<D>) -> Tensor<D>, input: &Tensor<D>) -> f32 {
    layer(input.clone()).sum().into_scalar::<f32>()
}

/// Forward, backward from a dense upstream gradient (`(output * upstream).sum()`), and the
/// input gradient summed and read back.
///
/// The random upstream gradient is what a layer sees inside a network, rather than the
/// all-ones gradient of a bare `output.sum()`.
fn forward_backward<const D: usize>(
    layer: &dyn Fn(Tensor<D>) -> Tensor<D>,
    input: &Tensor<D>,
    upstream: &Tensor<D>,
) -> f32 {
    let input = input.clone().require_grad();
    let grads = (layer(input.clone()) * upstream.clone()).sum().backward();
    input
        .grad(&grads)
        .expect("the input takes part in the graph")
        .sum()
        .into_scalar::<f32>()
}

/// A fixed dense upstream gradient (not tracked) of `input`'s shape, for [`forward_backward`].
fn upstream<const D: usize>(input: &Tensor<D>) -> Tensor<D> {
    input.random_like(Distribution::Normal(0.0, 1.0))
}

fn dropout_layers() -> Vec<(&'static str, Forward4)> {
    let burn_dropout = DropoutConfig::new(PROB).init();
    let flint_dropout = FlintDropoutConfig::new(PROB).init();
    let spatial = SpatialDropoutConfig::new(PROB).init();
    let alpha = AlphaDropoutConfig::new(PROB).init();
    let feature_alpha = FeatureAlphaDropoutConfig::new(PROB).init();
    let gaussian = GaussianDropoutConfig::new(PROB).init();
    let drop_path = DropPathConfig::new(PROB).init();
    let drop_block = DropBlock2dConfig::new(PROB, 7).init();
    vec![
        (
            "burn Dropout",
            Box::new(move |x| burn_dropout.forward(x)) as Forward4,
        ),
        ("flint Dropout", Box::new(move |x| flint_dropout.forward(x))),
        (
            "flint SpatialDropout",
            Box::new(move |x| spatial.forward(x)),
        ),
        ("flint AlphaDropout", Box::new(move |x| alpha.forward(x))),
        (
            "flint FeatureAlphaDropout",
            Box::new(move |x| feature_alpha.forward(x)),
        ),
        (
            "flint GaussianDropout",
            Box::new(move |x| gaussian.forward(x)),
        ),
        ("flint DropPath", Box::new(move |x| drop_path.forward(x))),
        (
            "flint DropBlock2d(7)",
            Box::new(move |x| drop_block.forward(x)),
        ),
    ]
}

fn dropout(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let input = Tensor::<4>::random(SHAPE, Distribution::Normal(0.0, 1.0), &device);
    let upstream = upstream(&input);
    let layers = dropout_layers();

    let mut group = c.benchmark_group("dropout fwd [128,64,14,14]");
    configure(&mut group);
    for (name, layer) in &layers {
        group.bench_function(*name, |b| b.iter(|| forward(layer, &input)));
    }
    group.finish();

    let mut group = c.benchmark_group("dropout fwd+bwd [128,64,14,14]");
    configure(&mut group);
    for (name, layer) in &layers {
        group.bench_function(*name, |b| {
            b.iter(|| forward_backward(layer, &input, &upstream))
        });
    }
    group.finish();
}

/// The linear layers; `trainable: false` gives them parameters that don't require gradients.
fn drop_connect_layers(device: &Device, trainable: bool) -> Vec<(&'static str, Forward2)> {
    let config = LinearConfig::new(512, 512);
    let params = |linear: Linear| if trainable { linear } else { linear.no_grad() };
    let linear = params(config.init(device));
    let with_dropout = (params(config.init(device)), DropoutConfig::new(PROB).init());
    let mut drop_connect = DropConnectConfig::new(config.clone(), PROB).init(device);
    drop_connect.linear = params(drop_connect.linear);
    vec![
        (
            "burn Linear",
            Box::new(move |x| linear.forward(x)) as Forward2,
        ),
        (
            "burn Linear+Dropout",
            Box::new(move |x| with_dropout.1.forward(with_dropout.0.forward(x))),
        ),
        (
            "flint DropConnect",
            Box::new(move |x| drop_connect.forward(x)),
        ),
    ]
}

fn drop_connect(c: &mut Criterion) {
    let device = Device::flex().autodiff();
    let input = Tensor::<2>::random([128, 512], Distribution::Normal(0.0, 1.0), &device);
    let upstream = upstream(&input);

    let mut group = c.benchmark_group("drop_connect fwd [128,512]->512");
    configure(&mut group);
    for (name, layer) in &drop_connect_layers(&device, false) {
        group.bench_function(*name, |b| b.iter(|| forward(layer, &input)));
    }
    group.finish();

    let mut group = c.benchmark_group("drop_connect fwd+bwd [128,512]->512");
    configure(&mut group);
    for (name, layer) in &drop_connect_layers(&device, true) {
        group.bench_function(*name, |b| {
            b.iter(|| forward_backward(layer, &input, &upstream))
        });
    }
    group.finish();
}

fn batch_norm(c: &mut Criterion) {
    let train_device = Device::flex().autodiff();
    let plain_device = Device::flex();
    let train_input = Tensor::<4>::random(SHAPE, Distribution::Normal(0.0, 1.0), &train_device);
    let plain_input = Tensor::<4>::random(SHAPE, Distribution::Normal(0.0, 1.0), &plain_device);
    let train_upstream = upstream(&train_input);

    let flint_bn = BatchNormConfig::new(SHAPE[1]).init(&train_device);
    let burn_bn = BurnBatchNormConfig::new(SHAPE[1]).init(&train_device);
    // Inference: the `valid()` copies, on the plain device.
    let flint_valid = flint_bn.valid();
    let burn_valid = burn_bn.valid();
    // Training forward alone: parameters that don't require gradients (see `forward`).
    let flint_untracked = flint_bn.clone().no_grad();
    let burn_untracked = burn_bn.clone().no_grad();
    let train_forward: Vec<(&str, Forward4)> = vec![
        (
            "burn BatchNorm",
            Box::new(move |x| burn_untracked.forward(x)),
        ),
        (
            "flint BatchNorm",
            Box::new(move |x| flint_untracked.forward(x)),
        ),
    ];
    let train: Vec<(&str, Forward4)> = vec![
        ("burn BatchNorm", Box::new(move |x| burn_bn.forward(x))),
        ("flint BatchNorm", Box::new(move |x| flint_bn.forward(x))),
    ];
    let inference: Vec<(&str, Forward4)> = vec![
        ("burn BatchNorm", Box::new(move |x| burn_valid.forward(x))),
        ("flint BatchNorm", Box::new(move |x| flint_valid.forward(x))),
    ];

    let mut group = c.benchmark_group("batch_norm [128,64,14,14]");
    configure(&mut group);
    for (name, layer) in &train_forward {
        group.bench_function(format!("{name} train fwd"), |b| {
            b.iter(|| forward(layer, &train_input))
        });
    }
    for (name, layer) in &train {
        group.bench_function(format!("{name} train fwd+bwd"), |b| {
            b.iter(|| forward_backward(layer, &train_input, &train_upstream))
        });
    }
    for (name, layer) in &inference {
        group.bench_function(format!("{name} inference fwd"), |b| {
            b.iter(|| forward(layer, &plain_input))
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // criterion's plotters backend panics (FontUnavailable) on machines without fonts, e.g. CI
    // containers; the figures are what matter here.
    config = Criterion::default().without_plots();
    targets = dropout, drop_connect, batch_norm
}
criterion_main!(benches);
