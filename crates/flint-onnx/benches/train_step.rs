//! MobileNetV2 (batch 16, 224 x 224, flex): the run-time module (`OnnxModel` read from
//! `mobilenetv2.onnx`, cut before its classifier) against the build-time one
//! (`flint_pretrained::mobilenetv2::Model`, burn-onnx code generated from the same file and cut
//! at the same place), in the same run.
//!
//! - `train_step`: forward in training mode (batch statistics), backward of
//!   `sum(features * probe)`, one SGD step;
//! - `eval_forward`: forward in inference mode on a device without autodiff.
//!
//! Needs flint-onnx's `build-time-reference` feature (flint-pretrained's code generation) and
//! the model file (`FLINT_MODELS`); without the generated module it says so and measures
//! nothing.
//!
//! ```text
//! FLINT_MODELS=../shared/models cargo bench -p flint-onnx --features build-time-reference
//! ```

use criterion::{Criterion, criterion_group, criterion_main};

#[cfg(flint_model_mobilenetv2)]
fn bench(c: &mut Criterion) {
    use std::hint::black_box;
    use std::path::PathBuf;

    use burn::module::Module;
    use burn::optim::{GradientsParams, SgdConfig};
    use burn::tensor::{Device, Distribution, Tensor};
    use flint_onnx::{CutPoint, OnnxModel};
    use flint_pretrained::mobilenetv2::Model;

    let path = std::env::var_os("FLINT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"))
        .join("mobilenetv2.onnx");
    if !path.is_file() {
        eprintln!("SKIPPED: {} is missing", path.display());
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load average at start: {}", load.trim());

    let train = Device::flex().autodiff();
    train.seed(7);
    let images = Tensor::<4>::random([16, 3, 224, 224], Distribution::Normal(0.0, 1.0), &train);
    let probe = Tensor::<2>::random([16, 1280], Distribution::Normal(0.0, 1.0), &train);
    let run_time = OnnxModel::load(&path, &train)
        .expect("mobilenetv2.onnx loads")
        .cut(CutPoint::Auto)
        .expect("classifier found")
        .features
        .with_training(true);
    let build_time = Model::from_embedded(&train);

    let mut group = c.benchmark_group("mobilenetv2_batch16");
    group.sample_size(10);
    group.bench_function("train_step/run_time", |b| {
        let mut optim = SgdConfig::new().init();
        b.iter(|| {
            let features: Tensor<2> = run_time.forward(images.clone());
            let grads = (features * probe.clone()).sum().backward();
            let grads = GradientsParams::from_grads(grads, &run_time);
            black_box(optim.step(0.01, run_time.clone(), grads))
        })
    });
    group.bench_function("train_step/build_time", |b| {
        let mut optim = SgdConfig::new().init();
        b.iter(|| {
            let features = build_time.forward(images.clone());
            let grads = (features * probe.clone()).sum().backward();
            let grads = GradientsParams::from_grads(grads, &build_time);
            black_box(optim.step(0.01, build_time.clone(), grads))
        })
    });

    let images = images.inner();
    let run_time = run_time.valid();
    let build_time = build_time.valid();
    group.bench_function("eval_forward/run_time", |b| {
        b.iter(|| black_box(run_time.forward::<4, 2>(images.clone())))
    });
    group.bench_function("eval_forward/build_time", |b| {
        b.iter(|| black_box(build_time.forward(images.clone())))
    });
    group.finish();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load average at end: {}", load.trim());
}

#[cfg(not(flint_model_mobilenetv2))]
fn bench(_: &mut Criterion) {
    eprintln!(
        "SKIPPED: flint-pretrained was built without mobilenetv2 (set FLINT_MODELS to the folder holding mobilenetv2.onnx)"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
