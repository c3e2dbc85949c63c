//! Transfer learning end to end: freezing, frozen batch norm, per-group learning rates, weight
//! loading errors, burn's MNIST CNN from PyTorch and safetensors files, and a short real
//! fine-tune on hymenoptera with the feature cache.

mod common;

use burn::module::{Module, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use flint_data::{LabelledSet, Locator, Split};
use flint_layers::visit::{ParamPath, ParamVisitor, visit_params};
use flint_models::{MnistCnnBn, MnistCnnBnConfig};
use flint_train::engine::group_rates;
use flint_transfer::{
    Backbone, Head, LoadOptions, TransferError, TransferModel, freeze, load_weights,
};

use common::{data_dir, file_or_skip, models_dir, skip};

fn device() -> Device {
    Device::flex().autodiff()
}

fn model(device: &Device) -> TransferModel {
    TransferModel {
        backbone: Backbone::MnistCnnBn(MnistCnnBnConfig::new().init(device)),
        head: Head::new(32, 3, 0.0, device).unwrap(),
    }
}

fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone().into_data().try_to_vec::<f32>().unwrap()
}

/// Every float parameter's values, by path.
fn snapshot<M: Module>(m: &M) -> Vec<(String, Vec<f32>)> {
    struct Collect(Vec<(String, Vec<f32>)>);
    impl ParamVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, path: ParamPath<'_>, p: &Param<Tensor<D>>) {
            self.0.push((path.to_string(), values(&p.val())));
        }
    }
    let mut c = Collect(Vec::new());
    visit_params(m, &mut c);
    c.0
}

fn cnn(m: &TransferModel) -> &MnistCnnBn {
    match &m.backbone {
        Backbone::MnistCnnBn(b) => b,
        _ => unreachable!(),
    }
}

fn train_steps(mut m: TransferModel, steps: usize, device: &Device) -> TransferModel {
    let mut optim = SgdConfig::new().init();
    let ce = CrossEntropyLossConfig::new().init(device);
    for _ in 0..steps {
        let x = Tensor::<4>::random([8, 1, 28, 28], Distribution::Normal(0.0, 1.0), device);
        let y = Tensor::<1, Int>::from_data(
            TensorData::new(vec![0i64, 1, 2, 0, 1, 2, 0, 1], [8]),
            device,
        );
        let loss = ce.forward(m.forward(x), y);
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        m = optim.step(0.1, m, grads);
    }
    m
}

/// The catalogue's ONNX networks load at run time in every build: each is available wherever
/// its file is (CI sets `FLINT_REQUIRE_DATA=1`, so a missing one fails there).
#[test]
fn catalogue_onnx_networks_are_available() {
    for m in flint_transfer::available() {
        if !["mobilenetv2", "efficientnet-lite0"].contains(&m.name) {
            continue;
        }
        match &m.status {
            Ok(place) => assert!(place.ends_with(".onnx"), "{}: {place}", m.name),
            Err(why) => skip(&format!("{}: {why}", m.name)),
        }
    }
}

#[test]
fn parameter_paths_name_backbone_and_head() {
    let device = device();
    let paths: Vec<String> = freeze::parameters(&model(&device))
        .into_iter()
        .map(|p| p.path)
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("backbone.") && p.ends_with("conv1.weight")),
        "{paths:?}"
    );
    assert!(
        paths.contains(&"head.linear.weight".to_string()),
        "{paths:?}"
    );
    let err = freeze::freeze(model(&device), "no_such_layer").unwrap_err();
    assert!(
        err.to_string()
            .contains("no parameter matches `no_such_layer`"),
        "{err}"
    );
    assert!(freeze::freeze(model(&device), "(").is_err());
}

#[test]
fn frozen_backbone_is_bit_identical_after_steps_while_the_head_trains() {
    let device = device();
    let m = freeze::freeze(model(&device), r"^backbone\.").unwrap();
    assert!(
        freeze::parameters(&m)
            .iter()
            .all(|p| p.trainable == p.path.starts_with("head.")),
        "only the head trains"
    );
    let before = snapshot(&m);
    let running_before = values(&cnn(&m).norm1.running_mean.as_ref().unwrap().value_sync());
    let m = train_steps(m, 3, &device);
    let after = snapshot(&m);
    for ((path, a), (_, b)) in before.iter().zip(&after) {
        if path.starts_with("backbone.") {
            assert_eq!(a, b, "{path} moved although frozen");
        } else {
            assert_ne!(a, b, "{path} did not train");
        }
    }
    // A frozen batch norm is in inference mode: its running statistics do not move.
    let running_after = values(&cnn(&m).norm1.running_mean.as_ref().unwrap().value_sync());
    assert_eq!(running_before, running_after);
}

#[test]
fn unfreezing_by_pattern_trains_only_that_layer() {
    let device = device();
    let m = freeze::freeze(model(&device), r"^backbone\.").unwrap();
    let m = freeze::unfreeze(m, r"fc1\.").unwrap();
    let before = snapshot(&m);
    let m = train_steps(m, 2, &device);
    for ((path, a), (_, b)) in before.iter().zip(&snapshot(&m)) {
        let trains = path.starts_with("head.") || path.contains("fc1.");
        assert_eq!(a != b, trains, "{path}");
    }
}

#[test]
fn unfrozen_batch_norm_updates_its_running_statistics() {
    let device = device();
    let m = model(&device);
    let before = values(&cnn(&m).norm1.running_mean.as_ref().unwrap().value_sync());
    let m = train_steps(m, 1, &device);
    let after = values(&cnn(&m).norm1.running_mean.as_ref().unwrap().value_sync());
    assert_ne!(before, after, "a training batch norm tracks statistics");
}

#[test]
fn per_group_learning_rates_apply() {
    // Plain SGD: each parameter moves by exactly -lr * grad, with the backbone's lr scaled.
    let device = device();
    let m = model(&device);
    let backbone = freeze::group(&m, r"^backbone\.").unwrap();
    let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let y = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 2, 0], [4]), &device);
    let ce = CrossEntropyLossConfig::new().init(&device);
    let loss = ce.forward(m.forward(x), y);
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let head_w = m.head.linear.weight.clone();
    let fc1_w = cnn(&m).fc1.weight.clone();
    let g_head: Tensor<2> = grads.get(head_w.id).unwrap();
    let g_fc1: Tensor<2> = grads.get(fc1_w.id).unwrap();
    let (lr, factor) = (0.5, 0.1);
    let mut optim = SgdConfig::new().init();
    let m2 = optim.step(
        group_rates(lr, &[(backbone.clone(), factor)]),
        m.clone(),
        grads,
    );
    let moved = |a: &Tensor<2>, b: &Tensor<2>| a.clone().inner().sub(b.clone().inner());
    let d_head = moved(&head_w.val(), &m2.head.linear.weight.val());
    let d_fc1 = moved(&fc1_w.val(), &cnn(&m2).fc1.weight.val());
    let err_head: f32 = d_head
        .sub(g_head.inner().mul_scalar(lr))
        .abs()
        .max()
        .into_scalar();
    let err_fc1: f32 = d_fc1
        .sub(g_fc1.inner().mul_scalar(lr * factor))
        .abs()
        .max()
        .into_scalar();
    assert!(err_head < 1e-6, "head step off by {err_head}");
    assert!(err_fc1 < 1e-7, "backbone step off by {err_fc1}");
}

#[test]
fn weight_loading_errors_are_clear() {
    let Some(file) = file_or_skip(models_dir().join("mnist-cnn-bn.safetensors")) else {
        return;
    };
    let device = Device::flex();
    // Missing: a key renamed away from the model's names.
    let err = load_weights(
        MnistCnnBnConfig::new().init(&device),
        &file,
        &LoadOptions::new().with_remap(r"^fc2\.", "classifier."),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TransferError::Missing { .. }), "{msg}");
    assert!(
        msg.contains("fc2.weight") && msg.contains("missing"),
        "{msg}"
    );
    // Allowed missing: loads the rest, reports both sides.
    let (_, report) = load_weights(
        MnistCnnBnConfig::new().init(&device),
        &file,
        &LoadOptions::new()
            .with_remap(r"^fc2\.", "classifier.")
            .allow_missing(true),
    )
    .unwrap();
    assert!(
        report.missing.iter().any(|m| m.contains("fc2.weight")),
        "{report}"
    );
    assert!(
        report
            .unused
            .iter()
            .any(|u| u.contains("classifier.weight")),
        "{report}"
    );
    // Wrong shape: a 5-class model; the message names the tensor and both shapes.
    let err = load_weights(
        MnistCnnBnConfig::new().with_num_classes(5).init(&device),
        &file,
        &LoadOptions::new(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("`fc2.weight` has shape [10, 32] in the file but the model expects [5, 32]"),
        "{msg}"
    );
    // Wrong file type and unreadable files.
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("weights.pt");
    std::fs::write(&junk, b"not a pickle").unwrap();
    let err = load_weights(
        MnistCnnBnConfig::new().init(&device),
        &junk,
        &LoadOptions::new(),
    )
    .unwrap_err();
    assert!(matches!(err, TransferError::BadFile { .. }), "{err}");
    let txt = dir.path().join("weights.txt");
    std::fs::write(&txt, b"x").unwrap();
    let err = load_weights(
        MnistCnnBnConfig::new().init(&device),
        &txt,
        &LoadOptions::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("unknown weight file type"),
        "{err}"
    );
    let onnx = models_dir().join("mnist-cnn-bn.onnx");
    let err = load_weights(
        MnistCnnBnConfig::new().init(&device),
        &onnx,
        &LoadOptions::new(),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("an ONNX file is a whole network"),
        "{err}"
    );
}

/// burn's MNIST CNN, loaded from its PyTorch and safetensors weights into flint's definition,
/// reproduces the ONNX model's 99.16 % on the MNIST test set.
#[test]
fn mnist_cnn_bn_from_pytorch_and_safetensors_reproduces_its_accuracy() {
    let mut locator = Locator::new().offline();
    locator = locator.data_dir(data_dir().join("mnist"));
    let test = match flint_data::mnist(Split::Test, &locator) {
        Ok(t) => t,
        Err(e) => return skip(&format!("MNIST: {e}")),
    };
    let device = Device::flex();
    let normalize = flint_data::Normalize::new(vec![0.1307], vec![0.3081]).unwrap();
    for file in ["mnist-cnn-bn.pt", "mnist-cnn-bn.safetensors"] {
        let Some(path) = file_or_skip(models_dir().join(file)) else {
            return;
        };
        let (model, report) = load_weights(
            MnistCnnBnConfig::new().init(&device),
            &path,
            &LoadOptions::new(),
        )
        .unwrap();
        assert_eq!(report.loaded.len(), 18, "{report}");
        assert!(
            report.missing.is_empty() && report.unused.is_empty(),
            "{report}"
        );
        let model = model.valid();
        let mut correct = 0usize;
        for start in (0..test.len()).step_by(1000) {
            let n = 1000.min(test.len() - start);
            let mut x = Vec::with_capacity(n * 784);
            let mut y = Vec::with_capacity(n);
            for i in start..start + n {
                let mut img: Vec<f32> = test.image(i).iter().map(|&p| p as f32 / 255.0).collect();
                normalize.apply(&mut img, 1);
                x.extend(img);
                y.push(test.label(i) as i64);
            }
            let logits = model.forward(Tensor::from_data(
                TensorData::new(x, [n, 1, 28, 28]),
                &device,
            ));
            let pred: Vec<i64> = logits
                .argmax(1)
                .reshape([n])
                .into_data()
                .convert::<i64>()
                .try_to_vec::<i64>()
                .unwrap();
            correct += pred.iter().zip(&y).filter(|(p, t)| p == t).count();
        }
        let accuracy = correct as f64 / test.len() as f64;
        println!("{file}: MNIST test accuracy {:.2} %", accuracy * 100.0);
        assert!((accuracy - 0.9916).abs() < 0.0005, "{file}: {accuracy}");
    }
}

/// The ONNX export of the same network (read at run time by flint-onnx) scores the same on
/// MNIST as the flint definition loaded from PyTorch weights, and they agree image by image.
#[test]
fn mnist_cnn_bn_agrees_with_its_onnx_export() {
    let Some(path) = file_or_skip(models_dir().join("mnist-cnn-bn.safetensors")) else {
        return;
    };
    let Some(onnx_file) = file_or_skip(models_dir().join("mnist-cnn-bn.onnx")) else {
        return;
    };
    let locator = Locator::new().offline().data_dir(data_dir().join("mnist"));
    let test = match flint_data::mnist(Split::Test, &locator) {
        Ok(t) => t,
        Err(e) => return skip(&format!("MNIST: {e}")),
    };
    let device = Device::flex();
    let (model, _) = load_weights(
        MnistCnnBnConfig::new().init(&device),
        &path,
        &LoadOptions::new(),
    )
    .unwrap();
    let model = model.valid();
    let onnx = flint_onnx::OnnxModel::load(&onnx_file, &device).unwrap();
    let (mut ours_right, mut onnx_right, mut agree, mut max_diff) = (0i64, 0i64, 0i64, 0f32);
    for start in (0..test.len()).step_by(1000) {
        let n = 1000.min(test.len() - start);
        let mut x = Vec::with_capacity(n * 784);
        let mut y = Vec::with_capacity(n);
        for i in start..start + n {
            x.extend(
                test.image(i)
                    .iter()
                    .map(|&p| (p as f32 / 255.0 - 0.1307) / 0.3081),
            );
            y.push(test.label(i) as i64);
        }
        let x = Tensor::<4>::from_data(TensorData::new(x, [n, 1, 28, 28]), &device);
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [n]), &device);
        let ours = burn::tensor::activation::log_softmax(model.forward(x.clone()), 1);
        let theirs: Tensor<2> = onnx.forward(x);
        let (a, b) = (
            ours.clone().argmax(1).reshape([n]),
            theirs.clone().argmax(1).reshape([n]),
        );
        ours_right += a.clone().equal(y.clone()).int().sum().into_scalar::<i64>();
        onnx_right += b.clone().equal(y).int().sum().into_scalar::<i64>();
        agree += a.equal(b).int().sum().into_scalar::<i64>();
        max_diff = max_diff.max(ours.sub(theirs).abs().max().into_scalar());
    }
    println!(
        "MNIST test: flint {ours_right}, ONNX {onnx_right} of {} right; same class on {agree}; \
         max |log-prob difference| {max_diff}",
        test.len()
    );
    assert!((onnx_right - 9916).abs() <= 5, "ONNX: {onnx_right}");
    assert!(
        (ours_right - onnx_right).abs() <= 10,
        "{ours_right} vs {onnx_right}"
    );
    assert!(agree >= 9900, "{agree}");
}

/// The PyTorch tutorial's task: a short real feature-extraction run on hymenoptera beats a
/// floor, writes a run directory `flint predict` can use, and a second run reads its features
/// from the cache.
#[test]
fn hymenoptera_feature_extraction_beats_floor_and_reuses_the_cache() {
    use flint_transfer::{CacheStatus, FinetuneConfig, FinetuneOptions, Strategy};

    if file_or_skip(models_dir().join("mobilenetv2.onnx")).is_none() {
        return;
    }
    let data = data_dir().join("hymenoptera");
    if !data.join("train").is_dir() {
        return skip(&format!("{} is missing", data.display()));
    }
    let dir = tempfile::tempdir().unwrap();
    let config = FinetuneConfig::new("mobilenetv2".into(), data)
        .with_strategy(Strategy::FeatureExtract)
        .with_epochs(5);
    let options = FinetuneOptions {
        output: Some(dir.path().join("run1")),
        progress: flint_train::ProgressMode::Quiet,
        cache_dir: Some(dir.path().join("cache")),
        ..FinetuneOptions::default()
    };
    let first = flint_transfer::finetune(&config, &options).unwrap();
    assert_eq!(first.cache, Some(CacheStatus::Miss));
    // Floor well below the 95-96 % measured, above what an untrained head gets (~50 %).
    assert!(first.best.0 >= 0.90, "val accuracy {}", first.best.0);
    for f in [
        "config.json",
        "metrics.csv",
        "report.md",
        "curves.png",
        "result.json",
    ] {
        assert!(first.run_dir.join(f).is_file(), "{f} missing");
    }
    let second = flint_transfer::finetune(
        &config,
        &FinetuneOptions {
            output: Some(dir.path().join("run2")),
            ..options.clone()
        },
    )
    .unwrap();
    assert_eq!(second.cache, Some(CacheStatus::Hit));
    assert_eq!(second.history.len(), 5);
    // The saved network classifies images like the run measured.
    let (run, model, input) =
        flint_transfer::load_finetuned(&first.run_dir, &Device::flex()).unwrap();
    assert_eq!(run.classes, ["ants", "bees"]);
    let val = flint_data::ImageFolder::open(data_dir().join("hymenoptera/val")).unwrap();
    let mut correct = 0;
    for i in 0..20 {
        let x = flint_transfer::load_image(val.path(i), &input).unwrap();
        let logits = model.forward(Tensor::from_data(
            TensorData::new(x, [1, 3, 224, 224]),
            &Device::flex(),
        ));
        let pred: i64 = logits
            .argmax(1)
            .into_data()
            .convert::<i64>()
            .try_to_vec::<i64>()
            .unwrap()[0];
        correct += (pred as usize == val.label(i)) as usize;
    }
    assert!(correct >= 16, "{correct} of 20 val images right");
}

/// Files of the image folder that cannot be used are named, with why, on stderr, in
/// `report.md` and in `result.json`; the run goes on with the others.
#[test]
fn unusable_images_are_reported_in_the_run() {
    use flint_transfer::{FinetuneConfig, FinetuneOptions, Strategy};

    if file_or_skip(models_dir().join("mobilenetv2.onnx")).is_none() {
        return;
    }
    let source = data_dir().join("hymenoptera");
    if !source.join("train").is_dir() {
        return skip(&format!("{} is missing", source.display()));
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for split in ["train", "val"] {
        for class in ["ants", "bees"] {
            let to = data.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let from = flint_data::ImageFolder::open(source.join(split)).unwrap();
            let label = usize::from(class == "bees");
            for i in (0..from.len()).filter(|&i| from.label(i) == label).take(3) {
                let path = from.path(i);
                std::fs::copy(path, to.join(path.file_name().unwrap())).unwrap();
            }
        }
    }
    std::fs::write(data.join("train/ants/empty.jpg"), b"").unwrap();
    std::fs::write(data.join("train/bees/notes.png"), b"not an image").unwrap();
    let config = FinetuneConfig::new("mobilenetv2".into(), data)
        .with_strategy(Strategy::FeatureExtract)
        .with_epochs(1);
    let options = FinetuneOptions {
        output: Some(dir.path().join("run")),
        progress: flint_train::ProgressMode::Quiet,
        cache_dir: Some(dir.path().join("cache")),
        ..FinetuneOptions::default()
    };
    let run = flint_transfer::finetune(&config, &options).unwrap();
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.run_dir.join("result.json")).unwrap()).unwrap();
    let skipped = result["skipped_files"].as_array().unwrap();
    let kinds: Vec<&str> = skipped
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["empty", "not-an-image"], "{skipped:?}");
    let report = std::fs::read_to_string(run.run_dir.join("report.md")).unwrap();
    assert!(report.contains("## Skipped files"), "{report}");
    assert!(
        report.contains("empty.jpg`: empty file (0 bytes)"),
        "{report}"
    );
    assert!(report.contains("notes.png`: not an image"), "{report}");
}

/// Freezing a backbone puts its dropout in inference mode; unfreezing it all turns it back on,
/// parameter-less layers included.
#[test]
fn unfreezing_the_backbone_reactivates_its_dropout() {
    let device = device();
    let cnn =
        flint_models::ModelConfig::Cnn(flint_models::CnnConfig::reference().with_dropout(0.5))
            .init(&device);
    let m = TransferModel {
        backbone: Backbone::Flint(cnn),
        head: Head::new(128, 3, 0.0, &device).unwrap(),
    };
    let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Normal(0.0, 1.0), &device);
    let varies = |m: &TransferModel| values(&m.forward(x.clone())) != values(&m.forward(x.clone()));
    assert!(varies(&m), "dropout active while training");
    let m = freeze::freeze(m, r"^backbone\.").unwrap();
    assert!(!varies(&m), "a frozen backbone is deterministic");
    let m = freeze::unfreeze(m, r"^backbone\.").unwrap();
    assert!(varies(&m), "unfrozen dropout is active again");
}

/// A run that cannot start (a grey-image backbone for an RGB folder) fails before writing its
/// run directory, so the corrected command can use the same --output.
#[test]
fn a_run_that_cannot_start_leaves_no_run_directory() {
    let data = data_dir().join("hymenoptera");
    if !data.join("train").is_dir() {
        return skip(&format!("{} is missing", data.display()));
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let config = flint_transfer::FinetuneConfig::new("mnist-cnn-bn".into(), data);
    let options = flint_transfer::FinetuneOptions {
        output: Some(out.clone()),
        progress: flint_train::ProgressMode::Silent,
        ..Default::default()
    };
    let err = flint_transfer::finetune(&config, &options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image folders need an RGB backbone") || err.contains("not found"),
        "{err}"
    );
    assert!(!out.join("config.json").exists());
}
