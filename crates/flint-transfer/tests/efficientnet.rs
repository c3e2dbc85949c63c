//! EfficientNet-Lite0 from its PyTorch state dict (`efficientnet-lite0.pth`) into flint's own
//! definition, checked against the ONNX export of the same network read at run time
//! (`--pretrained efficientnet-lite0`: cut before its classifier, the classifier kept as a
//! linear layer): the pooled features and the logits must agree within 1e-4 on real images.
//!
//! Missing files skip with a printed reason, or fail when `FLINT_REQUIRE_DATA=1`.

mod common;

use std::path::{Path, PathBuf};

use common::{data_dir, models_dir, skip};

use burn::tensor::{Device, Tensor, TensorData};
use flint_data::Normalize;
use flint_data::image_folder::load_rgb;
use flint_data::transform::{center_crop, resize_shorter_side, to_chw};
use flint_models::{EfficientNetLite0, EfficientNetLite0Config};
use flint_transfer::{LoadOptions, load_weights};

const SAMPLES: [&str; 4] = ["coffee.png", "flamingo.jpg", "cat.jpg", "dog.jpg"];

/// The reference preprocessing: shorter side 256, centre crop 224, `(255 x - 127) / 128`.
fn preprocess(paths: &[PathBuf], device: &Device) -> Tensor<4> {
    let normalize = Normalize::new(vec![127.0 / 255.0; 3], vec![128.0 / 255.0; 3]).unwrap();
    let mut values = Vec::with_capacity(paths.len() * 3 * 224 * 224);
    for path in paths {
        let image = load_rgb(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut chw = to_chw(&center_crop(&resize_shorter_side(&image, 256), 224));
        normalize.apply(&mut chw, 3);
        values.extend(chw);
    }
    Tensor::from_data(TensorData::new(values, [paths.len(), 3, 224, 224]), device)
}

/// ImageNet class names, one `wnid name, synonyms` line per class.
fn labels(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, name)| name).to_string())
        .collect()
}

fn argmax(row: &[f32]) -> usize {
    row.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i)
        .unwrap()
}

/// Everything the test needs, or the reason it cannot run.
struct Setup {
    model: EfficientNetLite0,
    images: Tensor<4>,
    names: Vec<String>,
    labels: Vec<String>,
}

/// A file the test needs is not there: the test is skipped (or fails when data is required).
#[derive(Debug, thiserror::Error)]
#[error("{} not found; set FLINT_MODELS and FLINT_DATA to the folders holding it", .0.display())]
struct Missing(PathBuf);

fn setup() -> Result<Setup, Missing> {
    let pth = models_dir().join("efficientnet-lite0.pth");
    if !pth.is_file() {
        return Err(Missing(pth));
    }
    let labels_path = models_dir().join("imagenet_labels.txt");
    let samples = data_dir().join("samples");
    let paths: Vec<PathBuf> = SAMPLES.iter().map(|s| samples.join(s)).collect();
    if let Some(missing) = paths.iter().chain([&labels_path]).find(|p| !p.is_file()) {
        return Err(Missing(missing.clone()));
    }

    // A plain (non-autodiff) device: batch norm uses its running statistics, dropout is off.
    let device = Device::flex();
    let model = EfficientNetLite0Config::new().init(&device);
    let (model, report) = load_weights(model, &pth, &LoadOptions::new())
        .unwrap_or_else(|e| panic!("loading {}: {e}", pth.display()));
    eprint!("{report}");
    assert!(report.missing.is_empty(), "missing: {:?}", report.missing);
    assert!(report.unused.is_empty(), "unused: {:?}", report.unused);
    // 296 keys: 247 float tensors loaded by name; the 49 `num_batches_tracked` counters are
    // filtered out by `load_weights`.
    assert_eq!(report.loaded.len(), 247, "{:?}", report.loaded);

    Ok(Setup {
        model,
        images: preprocess(&paths, &device),
        names: SAMPLES.iter().map(|s| s.to_string()).collect(),
        labels: labels(&labels_path),
    })
}

#[test]
fn efficientnet_lite0_from_pth_classifies_samples() {
    let setup = match setup() {
        Ok(s) => s,
        Err(missing) => return skip(&missing.to_string()),
    };
    let logits = setup.model.forward(setup.images.clone());
    assert_eq!(logits.dims(), [SAMPLES.len(), 1000]);
    let values = logits.into_data().try_to_vec::<f32>().unwrap();
    let top1: Vec<&str> = values
        .chunks(1000)
        .map(|row| setup.labels[argmax(row)].as_str())
        .collect();
    for (name, class) in setup.names.iter().zip(&top1) {
        eprintln!("{name}: {class}");
    }
    assert!(top1[0].starts_with("espresso"), "coffee.png: {}", top1[0]);
    assert!(top1[1].starts_with("flamingo"), "flamingo.jpg: {}", top1[1]);
}

#[test]
fn efficientnet_lite0_matches_onnx() {
    if !models_dir().join("efficientnet-lite0.onnx").is_file() {
        return skip("efficientnet-lite0.onnx not found; set FLINT_MODELS");
    }
    let setup = match setup() {
        Ok(s) => s,
        Err(missing) => return skip(&missing.to_string()),
    };
    const TOLERANCE: f32 = 1e-4;
    let max_abs_diff = |a: Tensor<2>, b: Tensor<2>| -> f32 {
        assert_eq!(a.dims(), b.dims());
        (a - b).abs().max().into_scalar()
    };
    let device = &setup.images.device();
    let onnx = flint_transfer::load_pretrained("efficientnet-lite0", device).unwrap();
    assert_eq!(onnx.feature_dim, 1280);
    assert_eq!(onnx.input.normalize.mean(), [127.0 / 255.0; 3]);
    // The catalogued file given by its path reads its inputs the same way.
    let path = models_dir().join("efficientnet-lite0.onnx");
    let by_path = flint_transfer::load_pretrained(path.to_str().unwrap(), device).unwrap();
    assert_eq!(by_path.input, onnx.input);
    assert_eq!(by_path.weights_id, onnx.weights_id);

    // ONNX: pooled features, then the classifier kept beside the cut graph.
    let onnx_features: Tensor<2> = onnx.backbone.features(setup.images.clone());
    let classifier = onnx.classifier.expect("the cut-off Gemm as a linear layer");
    let onnx_logits = classifier.forward(onnx_features.clone());

    // flint: the .pth in flint's definition.
    let features = setup.model.features(setup.images.clone());
    let logits = setup.model.forward(setup.images.clone());

    let feature_diff = max_abs_diff(features, onnx_features);
    let logit_diff = max_abs_diff(logits.clone(), onnx_logits.clone());
    eprintln!("max |features - onnx| = {feature_diff:e}");
    eprintln!("max |logits - onnx|   = {logit_diff:e}");

    let ours = logits.into_data().try_to_vec::<f32>().unwrap();
    let theirs = onnx_logits.into_data().try_to_vec::<f32>().unwrap();
    for ((name, a), b) in setup
        .names
        .iter()
        .zip(ours.chunks(1000))
        .zip(theirs.chunks(1000))
    {
        let (i, j) = (argmax(a), argmax(b));
        eprintln!(
            "{name}: flint {} / onnx {}",
            setup.labels[i], setup.labels[j]
        );
        assert_eq!(i, j, "{name}: top-1 differs");
    }
    assert!(
        feature_diff <= TOLERANCE,
        "features differ by {feature_diff}"
    );
    assert!(logit_diff <= TOLERANCE, "logits differ by {logit_diff}");
}
