//! Data pipeline throughput: IDX decoding, batching, and a loader epoch over real data.
//!
//! Run with `cargo bench --bench data`. Uses Fashion-MNIST from the standard discovery
//! (Debian's `dataset-fashion-mnist`); prints why and does nothing when it is absent.

use std::time::Duration;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::Dataset;
use burn::prelude::*;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use flint::data::*;

fn data(c: &mut Criterion) {
    let locator = Locator::new().offline();
    let located = match locator.find(&FASHION_MNIST) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("SKIPPED data benches: {e}");
            return;
        }
    };
    let images = located
        .file(&FASHION_MNIST, "t10k-images-idx3-ubyte")
        .to_path_buf();
    let device = Device::flex();

    let mut group = c.benchmark_group("data");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1));

    group.throughput(Throughput::Elements(10_000));
    group.bench_function("idx decode fashion-mnist test (gz)", |b| {
        b.iter(|| idx::read_idx_images(&images).unwrap())
    });

    let test = fashion_mnist(Split::Test, &locator).unwrap();
    let items: Vec<ImageItem> = (0..128).map(|i| test.get(i).unwrap()).collect();
    group.throughput(Throughput::Elements(128));
    group.bench_function("batch 128 images", |b| {
        b.iter(|| ImageBatcher::new().batch(items.clone(), &device))
    });

    group.throughput(Throughput::Elements(10_000));
    for workers in [0usize, 2] {
        for augment in [
            Augment::none(),
            Augment {
                pad_crop: 2,
                hflip: true,
            },
        ] {
            let label = format!(
                "workers={workers}{}",
                if augment.is_identity() {
                    ""
                } else {
                    ",augmented"
                }
            );
            group.bench_with_input(
                BenchmarkId::new("epoch of 10k, batch 128", label),
                &workers,
                |b, &workers| {
                    let ds = AugmentedImages::new(test.clone(), augment, 0).unwrap();
                    let dl = loader(
                        ds,
                        ImageBatcher::new(),
                        &LoaderOptions::new(128).shuffled(0).workers(workers),
                        &device,
                    )
                    .unwrap();
                    b.iter(|| {
                        dl.iter()
                            .map(|b| b.unwrap().targets.dims()[0])
                            .sum::<usize>()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // criterion's plotters backend panics (FontUnavailable) on machines without fonts.
    config = Criterion::default().without_plots();
    targets = data
}
criterion_main!(benches);
