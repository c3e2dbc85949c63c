//! The loaders on the real data sets: Fashion-MNIST (Debian's `dataset-fashion-mnist`), MNIST
//! and hymenoptera (`../shared/data`, or `$FLINT_DATA`).

mod common;

use burn::prelude::*;
use flint::data::*;

fn mnist_locator() -> Locator {
    Locator::only(common::shared_data().join("mnist"))
}

/// Fashion-MNIST from wherever the standard discovery finds it, without downloading.
fn fashion_locator() -> Locator {
    Locator::new().offline()
}

fn pixel_sum(set: &ImageSet, index: usize) -> u64 {
    set.image(index).iter().map(|&p| p as u64).sum()
}

#[test]
fn mnist_counts_histograms_and_known_pixels() {
    let train = or_skip!(mnist(Split::Train, &mnist_locator()));
    let test = mnist(Split::Test, &mnist_locator()).unwrap();
    assert_eq!(train.len(), 60_000);
    assert_eq!(test.len(), 10_000);
    assert_eq!(train.shape(), [1, 28, 28]);
    assert_eq!(
        train.class_counts(),
        vec![5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    );
    assert_eq!(
        test.class_counts(),
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
    // Values read independently with Python's gzip module.
    assert_eq!(&train.labels()[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&test.labels()[..5], &[7, 2, 1, 0, 4]);
    assert_eq!(train.image(0)[14 * 28 + 14], 240);
    assert_eq!(pixel_sum(&train, 0), 27525);
    assert_eq!(pixel_sum(&train, 59_999), 20920);
    assert_eq!(pixel_sum(&test, 9_999), 41833);
}

#[test]
fn mnist_files_match_the_official_checksums() {
    let located = or_skip!(mnist_locator().find(&MNIST));
    assert_eq!(located.verify(&MNIST).unwrap(), Vec::<String>::new());
}

#[test]
fn fashion_mnist_counts_histograms_and_known_pixels() {
    let train = or_skip!(fashion_mnist(Split::Train, &fashion_locator()));
    let test = fashion_mnist(Split::Test, &fashion_locator()).unwrap();
    assert_eq!((train.len(), test.len()), (60_000, 10_000));
    assert_eq!(train.class_counts(), vec![6000; 10]);
    assert_eq!(test.class_counts(), vec![1000; 10]);
    assert_eq!(&train.labels()[..5], &[9, 0, 0, 3, 0]);
    assert_eq!(&test.labels()[..5], &[9, 2, 1, 1, 6]);
    assert_eq!(train.image(0)[14 * 28 + 14], 217);
    assert_eq!(pixel_sum(&train, 0), 76247);
    assert_eq!(pixel_sum(&test, 0), 33456);
    assert_eq!(train.class_names()[9], "Ankle boot");
    let located = fashion_locator().find(&FASHION_MNIST).unwrap();
    assert_eq!(
        located.verify(&FASHION_MNIST).unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn fashion_mnist_transfer_split_and_few_shot() {
    let train = or_skip!(fashion_mnist(Split::Train, &fashion_locator()));
    // Protocol T2 of reference.md: source classes 0-4, target classes 5-9 relabelled 0-4.
    let target = filter_classes(&train, &[5, 6, 7, 8, 9]).unwrap();
    assert_eq!(target.len(), 30_000);
    assert_eq!(target.class_names()[0], "Sandal");
    let shots = few_shot(&target, 10, 3).unwrap();
    assert_eq!(shots.class_counts(), vec![10; 5]);
    let (fit, val) = train_val_split(&train, 0.1, 1).unwrap();
    assert_eq!((fit.len(), val.len()), (54_000, 6_000));
    assert_eq!(val.class_counts(), vec![600; 10]);
}

#[test]
fn real_batches_through_a_shuffled_threaded_loader() {
    let test = or_skip!(fashion_mnist(Split::Test, &fashion_locator()));
    let device = Device::flex();
    let augmented = AugmentedImages::new(
        test,
        Augment {
            pad_crop: 2,
            hflip: true,
        },
        1,
    )
    .unwrap();
    let dl = loader(
        augmented,
        ImageBatcher::new(),
        &LoaderOptions::new(1000).shuffled(1).workers(2),
        &device,
    )
    .unwrap();
    let mut seen = 0;
    let mut per_class = [0usize; 10];
    for batch in dl.iter() {
        let batch = batch.unwrap();
        let [n, c, h, w] = batch.images.dims();
        assert_eq!((c, h, w), (1, 28, 28));
        seen += n;
        let max: f32 = batch.images.clone().max().into_scalar();
        let min: f32 = batch.images.min().into_scalar();
        assert!(min >= 0.0 && max <= 1.0 && max > 0.9);
        let targets: Vec<i64> = batch
            .targets
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap();
        for t in targets {
            per_class[t as usize] += 1;
        }
    }
    assert_eq!(seen, 10_000);
    assert_eq!(per_class, [1000; 10]);
}

#[test]
fn hymenoptera_image_folders() {
    let root = common::shared_data().join("hymenoptera");
    let locator = Locator::only(&root);
    let train = or_skip!(hymenoptera("train", &locator));
    let val = hymenoptera("val", &locator).unwrap();
    assert_eq!(
        train.class_names(),
        &["ants".to_string(), "bees".to_string()]
    );
    assert_eq!((train.len(), val.len()), (245, 153));
    assert_eq!(train.class_counts(), vec![124, 121]);
    assert_eq!(val.class_counts(), vec![70, 83]);
    assert!(train.skipped().is_empty(), "{:?}", train.skipped());

    // The file with a space in its name and the GIF both decode.
    let find = |name: &str| {
        (0..train.len())
            .find(|&i| train.path(i).ends_with(name))
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    let eval = train.dataset(ImageTransform::imagenet_eval(), Normalize::imagenet());
    for name in ["ant photos.jpg", "imageNotFound.gif"] {
        let item = eval.load(find(name)).unwrap();
        assert_eq!(item.shape, [3, 224, 224]);
        assert!(item.data.iter().all(|v| v.is_finite()));
    }

    // A batch of real photos through the training transform and the tensor batcher.
    let device = Device::flex();
    let train_ds = ImageFolderDataset::new(
        train.select(&[0, 1, 130, 131]),
        ImageTransform::imagenet_train(),
        Normalize::imagenet(),
        7,
    );
    let dl = loader(train_ds, TensorBatcher, &LoaderOptions::new(4), &device).unwrap();
    let batch = dl.iter().next().unwrap().unwrap();
    assert_eq!(batch.images.dims(), [4, 3, 224, 224]);
    let mean: f32 = batch.images.mean().into_scalar();
    // ImageNet-normalised photos have a mean near 0 (|mean| well under 1).
    assert!(mean.abs() < 1.0, "mean {mean}");
}

#[test]
fn the_catalog_finds_the_development_data() {
    let locator = Locator::new()
        .offline()
        .env_root(Some(common::shared_data()));
    for dataset in [KnownDataset::Mnist, KnownDataset::Hymenoptera] {
        let check = dataset.check(&locator);
        if !check.is_ok() {
            common::skip(&check.to_string());
            continue;
        }
        let splits = check.splits.unwrap();
        let totals: Vec<usize> = splits.iter().map(|s| s.total).collect();
        match dataset {
            KnownDataset::Mnist => assert_eq!(totals, vec![60_000, 10_000]),
            _ => assert_eq!(totals, vec![245, 153]),
        }
    }
}
