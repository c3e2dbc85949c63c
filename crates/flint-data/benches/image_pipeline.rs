//! The 224x224 image pipeline of protocol F1 alone: JPEG decoding, torchvision's train transform
//! (`RandomResizedCrop(224)` + flip) and val transform (`Resize(256)` + `CenterCrop(224)`),
//! normalisation, on the hymenoptera training images, on a pool of 1 and of 2 threads. Each
//! iteration prepares the same 64 images (a batch of 16 is a quarter of that), spread over the
//! pool as a loader spreads a batch. Also the parts alone: decoding, and each transform on images
//! decoded beforehand.
//!
//! Run with `cargo bench -p flint-data --bench image_pipeline`; prints why and does nothing when
//! the hymenoptera folder is absent (`cargo xtask data check`).

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use flint_data::image_folder::load_rgb;
use flint_data::{
    HYMENOPTERA, ImageFolder, ImageFolderDataset, ImageTransform, Locator, Normalize,
};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rayon::prelude::*;

/// Images per iteration.
const IMAGES: usize = 64;

fn pipeline(c: &mut Criterion) {
    let root = match Locator::new().offline().find(&HYMENOPTERA) {
        Ok(l) => l.dir,
        Err(e) => {
            eprintln!("SKIPPED image pipeline benches: {e}");
            return;
        }
    };
    let folder = ImageFolder::open(root.join("train")).expect("hymenoptera/train opens");
    let n = IMAGES.min(folder.len());
    let paths: Vec<_> = (0..n).map(|i| folder.path(i).to_path_buf()).collect();
    let decoded: Vec<_> = paths.iter().map(|p| load_rgb(p).unwrap()).collect();
    let mean_pixels = decoded
        .iter()
        .map(|i| (i.width() * i.height()) as f64)
        .sum::<f64>()
        / n as f64;
    eprintln!("{n} hymenoptera train images, {mean_pixels:.0} pixels on average");

    let mut group = c.benchmark_group("image pipeline");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1))
        .throughput(Throughput::Elements(n as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for (name, transform) in [
            ("train", ImageTransform::imagenet_train()),
            ("val", ImageTransform::imagenet_eval()),
        ] {
            let set = ImageFolderDataset::new(
                folder.clone(),
                transform.clone(),
                Normalize::imagenet(),
                0,
            );
            group.bench_function(
                format!("{name} transform, decode included, {threads} thread(s)"),
                |b| {
                    b.iter(|| {
                        pool.install(|| {
                            (0..n)
                                .into_par_iter()
                                .map(|i| set.load(i).unwrap().data.len())
                                .sum::<usize>()
                        })
                    })
                },
            );
            if threads == 1 {
                group.bench_function(format!("{name} transform alone, 1 thread"), |b| {
                    let mut rng = StdRng::seed_from_u64(0);
                    b.iter(|| {
                        decoded
                            .iter()
                            .map(|img| transform.apply(img, &mut rng).len())
                            .sum::<usize>()
                    })
                });
            }
        }
        if threads == 1 {
            group.bench_function("JPEG decode alone, 1 thread", |b| {
                b.iter(|| {
                    paths
                        .iter()
                        .map(|p| load_rgb(p).unwrap().len())
                        .sum::<usize>()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
