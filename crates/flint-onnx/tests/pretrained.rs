//! The two ImageNet networks through the run-time path against the build-time module
//! flint-pretrained generates with burn-onnx from the same files: the automatic cut finds the
//! same classifier, and features and logits agree within 1e-4 of the largest magnitude.
//!
//! The build-time modules exist only when flint-pretrained's build found the files
//! (`FLINT_MODELS`); this crate's build script turns that into `flint_model_<name>` cfgs.
//! Missing files skip with a printed reason, or fail when `FLINT_REQUIRE_DATA=1`.

mod common;

use burn::tensor::{Device, Distribution, Tensor, TensorData};
use common::{file_or_skip, models_dir};
use flint_onnx::parity::{relative_error, values};
use flint_onnx::{CutPoint, OnnxModel};

/// Runs the ONNX file through flint-onnx (full network and its automatic cut) and compares with
/// the build-time features and classifier.
#[allow(dead_code)]
fn compare(
    file: &str,
    build_time: impl Fn(Tensor<4>) -> Tensor<2>,
    classifier: &[u8],
    shape: [usize; 2],
) {
    let Some(path) = file_or_skip(models_dir().join(file)) else {
        return;
    };
    let device = Device::flex();
    device.seed(3);
    let images = Tensor::<4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let model = OnnxModel::load(&path, &device).unwrap();
    let logits: Tensor<2> = model.forward(images.clone());

    let [classes, width] = shape;
    let floats: Vec<f32> = classifier
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (weight, bias) = floats.split_at(classes * width);
    let weight =
        Tensor::<2>::from_data(TensorData::new(weight.to_vec(), [classes, width]), &device);
    let bias = Tensor::<1>::from_data(TensorData::new(bias.to_vec(), [classes]), &device);
    let features = build_time(images.clone());
    let expected = features.clone().matmul(weight.transpose()) + bias.unsqueeze::<2>();
    let err = relative_error(&values(logits), &values(expected));
    assert!(err <= 1e-4, "{file}: logits differ by {err:e}");

    let cut = model.cut(CutPoint::Auto).unwrap();
    assert_eq!(cut.feature_size, Some(width), "{file}: feature size");
    let ours: Tensor<2> = cut.features.forward(images);
    let err = relative_error(&values(ours.clone()), &values(features));
    assert!(err <= 1e-4, "{file}: features differ by {err:e}");
    let head: Tensor<2> = cut.head.forward(ours);
    assert_eq!(head.dims(), [2, classes]);
}

#[test]
#[cfg(flint_model_mobilenetv2)]
fn mobilenetv2_matches_the_build_time_module() {
    use flint_pretrained::mobilenetv2::{CLASSIFIER, CLASSIFIER_SHAPE, Model};
    let device = Device::flex();
    let built = Model::from_embedded(&device);
    compare(
        "mobilenetv2.onnx",
        |x| built.forward(x),
        CLASSIFIER,
        CLASSIFIER_SHAPE,
    );
}

#[test]
#[cfg(flint_model_efficientnet_lite0)]
fn efficientnet_lite0_matches_the_build_time_module() {
    use flint_pretrained::efficientnet_lite0::{CLASSIFIER, CLASSIFIER_SHAPE, Model};
    let device = Device::flex();
    let built = Model::from_embedded(&device);
    compare(
        "efficientnet-lite0.onnx",
        |x| built.forward(x),
        CLASSIFIER,
        CLASSIFIER_SHAPE,
    );
}

/// Without the build-time modules there is nothing to compare with: say so.
#[test]
#[cfg(not(all(flint_model_mobilenetv2, flint_model_efficientnet_lite0)))]
fn build_time_modules_are_missing() {
    common::skip(
        "flint-pretrained was built without mobilenetv2/efficientnet-lite0 (set FLINT_MODELS and rebuild)",
    );
}
