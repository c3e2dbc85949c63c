//! One training step and one inference batch of the reference models, per CPU backend.
//!
//! Run with `cargo bench --bench models` (add `--features ndarray` for the ndarray backend). A
//! training step is what `flint train` does per batch: forward, cross-entropy, backward, Adam
//! step; inputs are random images in [0, 1] so the bench needs no data files. The full-epoch
//! protocol (data loading included, beside PyTorch) is `cargo xtask bench`.

use std::time::Duration;

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::Distribution;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flint::models::{Classifier, ModelConfig};
use flint::train::{OptimizerConfig, optim::build_optimizer};

/// The CPU backends compiled into this bench.
fn backends() -> Vec<(&'static str, Device)> {
    #[allow(unused_mut)]
    let mut list = vec![("flex", Device::flex())];
    #[cfg(feature = "ndarray")]
    #[allow(deprecated)] // burn-ndarray is deprecated upstream; flint keeps it selectable.
    list.push(("ndarray", Device::ndarray()));
    list
}

fn batch(size: usize, device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    let images = Tensor::<4>::random([size, 1, 28, 28], Distribution::Uniform(0.0, 1.0), device);
    let targets = Tensor::<1, Int>::from_data(
        TensorData::new((0..size as i64).map(|i| i % 10).collect(), [size]),
        device,
    );
    (images, targets)
}

fn models(c: &mut Criterion) {
    for (backend, device) in backends() {
        for name in ["mlp", "cnn"] {
            let config = ModelConfig::reference(name).unwrap();
            let mut group = c.benchmark_group(format!("{name}/{backend}"));
            group
                .sample_size(10)
                .measurement_time(Duration::from_secs(6))
                .warm_up_time(Duration::from_secs(2));
            for size in [128, 1000] {
                group.throughput(Throughput::Elements(size as u64));

                // Training step on the autodiff device.
                let train_device = device.clone().autodiff();
                let (images, targets) = batch(size, &train_device);
                let mut model: Option<Classifier> = Some(config.init(&train_device));
                let mut optimizer = build_optimizer(&OptimizerConfig::new());
                let ce = CrossEntropyLossConfig::new().init(&train_device);
                group.bench_function(BenchmarkId::new("train step", size), |b| {
                    b.iter(|| {
                        let m = model.take().unwrap();
                        let loss = ce.forward(m.forward(images.clone()), targets.clone());
                        let loss_value: f32 = loss.clone().into_scalar();
                        let grads = GradientsParams::from_grads(loss.backward(), &m);
                        model = Some(optimizer.step(1e-3, m, grads));
                        loss_value
                    })
                });

                // Inference batch on the plain device.
                let (images, _) = batch(size, &device);
                let eval_model = config.init(&device);
                group.bench_function(BenchmarkId::new("inference", size), |b| {
                    b.iter(|| eval_model.forward(images.clone()).into_data())
                });
            }
            group.finish();
        }
    }
}

criterion_group! {
    name = benches;
    // criterion's plotters backend panics (FontUnavailable) on machines without fonts.
    config = Criterion::default().without_plots();
    targets = models
}
criterion_main!(benches);
