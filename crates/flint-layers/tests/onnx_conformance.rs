//! The ONNX backend node tests for `BatchNormalization` and `Dropout` (Debian/Ubuntu package
//! `libonnx-testdata`), run against flint's layers.
//!
//! Each case directory holds `model.onnx` (one node) and `test_data_set_0/{input,output}_*.pb`.
//! Node attributes (epsilon, momentum) are read from `model.onnx`, with the ONNX defaults
//! (epsilon 1e-5, momentum 0.9) when absent. A missing directory skips the test with a message.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use common::tensor_proto::{DecodedTensor, node_float_attribute, read_tensor};
use common::{plain_device, train_device, values};
use flint_layers::{BatchNormConfig, DropoutConfig};

const NODE_DIR: &str = "/usr/share/libonnx-testdata/data/node";

fn case_dir(name: &str) -> Option<PathBuf> {
    let dir = Path::new(NODE_DIR).join(name);
    if dir.join("test_data_set_0").is_dir() {
        Some(dir)
    } else {
        let reason = format!(
            "{} not found (install the libonnx-testdata package)",
            dir.display()
        );
        // CI installs the package and sets FLINT_REQUIRE_DATA=1: there a missing case is a failure.
        if std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| v == "1") {
            panic!("{name}: {reason}");
        }
        eprintln!("SKIPPED {name}: {reason}");
        None
    }
}

fn inputs(dir: &Path) -> Vec<DecodedTensor> {
    numbered(dir, "input")
}

fn outputs(dir: &Path) -> Vec<DecodedTensor> {
    numbered(dir, "output")
}

fn numbered(dir: &Path, kind: &str) -> Vec<DecodedTensor> {
    (0..)
        .map(|i| dir.join("test_data_set_0").join(format!("{kind}_{i}.pb")))
        .take_while(|path| path.exists())
        .map(|path| read_tensor(&path))
        .collect()
}

fn attribute(dir: &Path, name: &str) -> Option<f64> {
    let model = std::fs::read(dir.join("model.onnx")).unwrap();
    node_float_attribute(&model, name).map(f64::from)
}

fn tensor4(decoded: &DecodedTensor, device: &Device) -> Tensor<4> {
    let dims: [usize; 4] = decoded.dims.clone().try_into().expect("a rank-4 tensor");
    let data: Vec<f32> = decoded.values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, dims), device)
}

fn tensor1(decoded: &DecodedTensor, device: &Device) -> Tensor<1> {
    let data: Vec<f32> = decoded.values.iter().map(|&v| v as f32).collect();
    Tensor::from_data(TensorData::new(data, [decoded.values.len()]), device)
}

fn assert_close(actual: &[f32], expected: &[f64], tolerance: f64, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            (f64::from(a) - e).abs() <= tolerance * (1.0 + e.abs()),
            "{what}[{i}]: got {a}, expected {e}"
        );
    }
}

/// Builds flint's BatchNorm from the ONNX inputs `X, scale, B, input_mean, input_var`.
fn load_batch_norm(dir: &Path, device: &Device) -> (flint_layers::BatchNorm, Tensor<4>) {
    let inputs = inputs(dir);
    let x = tensor4(&inputs[0], device);
    let eps = attribute(dir, "epsilon").unwrap_or(1e-5);
    // ONNX's momentum weighs the old running value (0.9 keeps 90 %); flint's (PyTorch's) weighs
    // the new batch.
    let momentum = 1.0 - attribute(dir, "momentum").unwrap_or(0.9);
    let bn = BatchNormConfig::new(inputs[1].values.len())
        .with_eps(eps)
        .with_momentum(Some(momentum))
        // The ONNX reference updates the running variance with the biased batch variance.
        .with_unbiased_running_var(false)
        .init(device);
    let mut bn = bn;
    bn.gamma = Some(burn::module::Param::from_tensor(tensor1(
        &inputs[1], device,
    )));
    bn.beta = Some(burn::module::Param::from_tensor(tensor1(
        &inputs[2], device,
    )));
    bn.running_mean
        .as_ref()
        .unwrap()
        .update(tensor1(&inputs[3], device));
    bn.running_var
        .as_ref()
        .unwrap()
        .update(tensor1(&inputs[4], device));
    (bn, x)
}

fn batchnorm_inference_case(name: &str) {
    let Some(dir) = case_dir(name) else { return };
    let device = plain_device();
    let (bn, x) = load_batch_norm(&dir, &device);
    let expected = outputs(&dir);
    assert_close(&values(&bn.forward(x)), &expected[0].values, 1e-5, name);
}

fn batchnorm_training_case(name: &str) {
    let Some(dir) = case_dir(name) else { return };
    let device = train_device();
    let (bn, x) = load_batch_norm(&dir, &device);
    let expected = outputs(&dir);
    let y = bn.forward(x);
    assert_close(&values(&y), &expected[0].values, 1e-4, &format!("{name} Y"));
    let running_mean = bn.running_mean.as_ref().unwrap().value_sync();
    let running_var = bn.running_var.as_ref().unwrap().value_sync();
    assert_close(
        &values(&running_mean),
        &expected[1].values,
        1e-5,
        &format!("{name} running_mean"),
    );
    assert_close(
        &values(&running_var),
        &expected[2].values,
        1e-5,
        &format!("{name} running_var"),
    );
}

#[test]
fn onnx_batchnorm_example() {
    batchnorm_inference_case("test_batchnorm_example");
}

#[test]
fn onnx_batchnorm_epsilon() {
    batchnorm_inference_case("test_batchnorm_epsilon");
}

#[test]
fn onnx_batchnorm_example_training_mode() {
    batchnorm_training_case("test_batchnorm_example_training_mode");
}

#[test]
fn onnx_batchnorm_epsilon_training_mode() {
    batchnorm_training_case("test_batchnorm_epsilon_training_mode");
}

/// Inference-mode Dropout (no `training_mode` input, or the opset-7 `is_test` form): the identity,
/// and an all-true mask output where the case has one.
fn dropout_inference_case(name: &str) {
    let Some(dir) = case_dir(name) else { return };
    let inputs = inputs(&dir);
    let expected = outputs(&dir);
    let x = tensor_any(&inputs[0], &plain_device());
    // The ratio (input 1 or attribute) is irrelevant in inference; 0.5 stands for any of them.
    let y = DropoutConfig::new(0.5).init().forward(x);
    assert_close(&values(&y), &expected[0].values, 0.0, name);
    if let Some(mask) = expected.get(1) {
        assert!(
            mask.values.iter().all(|&m| m == 1.0),
            "{name}: inference mask must be all true"
        );
    }
}

/// Training-mode Dropout: the expected output comes from numpy's random mask, which no other
/// generator reproduces. Checked: flint's output and ONNX's are both `x · {0, 1/(1-r)}`, the mask
/// output (where present) marks exactly the kept elements, and ratio 0 is the identity.
fn dropout_training_case(name: &str) {
    let Some(dir) = case_dir(name) else { return };
    let inputs = inputs(&dir);
    let expected = outputs(&dir);
    let ratio = inputs.get(1).map_or(0.5, |r| r.values[0]);
    let x_values: Vec<f32> = inputs[0].values.iter().map(|&v| v as f32).collect();
    let y = DropoutConfig::new(ratio)
        .init()
        .forward(tensor_any(&inputs[0], &train_device()));
    let scale = if ratio == 0.0 {
        1.0
    } else {
        1.0 / (1.0 - ratio)
    };
    for (source, output) in [("flint", values(&y)), ("onnx", f32s(&expected[0].values))] {
        for (i, (&x, &out)) in x_values.iter().zip(&output).enumerate() {
            let kept = f64::from(x) * scale;
            assert!(
                out == 0.0 || (f64::from(out) - kept).abs() <= 1e-5 * (1.0 + kept.abs()),
                "{name} ({source})[{i}]: {out} is neither 0 nor x/(1-r) = {kept}"
            );
            if ratio == 0.0 {
                assert_eq!(
                    out, x,
                    "{name} ({source})[{i}]: ratio 0 must be the identity"
                );
            }
        }
    }
    if let Some(mask) = expected.get(1) {
        for (i, (&m, &out)) in mask.values.iter().zip(&expected[0].values).enumerate() {
            assert_eq!(
                m == 1.0,
                out != 0.0,
                "{name}: mask[{i}] disagrees with the output"
            );
        }
    }
}

fn f32s(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

/// The dropout cases use rank 3 or 4 inputs; flattening keeps element-wise dropout's meaning.
fn tensor_any(decoded: &DecodedTensor, device: &Device) -> Tensor<1> {
    tensor1(decoded, device)
}

#[test]
fn onnx_dropout_inference() {
    for name in [
        "test_dropout_default",
        "test_dropout_default_ratio",
        "test_dropout_default_mask",
        "test_dropout_default_mask_ratio",
        "test_dropout_default_old",
        "test_dropout_random_old",
    ] {
        dropout_inference_case(name);
    }
}

#[test]
fn onnx_dropout_training() {
    for name in [
        "test_training_dropout",
        "test_training_dropout_default",
        "test_training_dropout_default_mask",
        "test_training_dropout_mask",
        "test_training_dropout_zero_ratio",
        "test_training_dropout_zero_ratio_mask",
    ] {
        dropout_training_case(name);
    }
}
