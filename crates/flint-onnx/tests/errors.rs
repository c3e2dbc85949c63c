//! Unsupported operators and attributes, bad files and shape mismatches: each a typed error
//! whose message names what is wrong.

mod common;

use burn::tensor::{Device, Distribution, Tensor};
use common::*;
use flint_onnx::{OnnxError, OnnxModel};

fn load_err(model: onnx_ir::ModelProto) -> OnnxError {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.onnx", &model);
    OnnxModel::load(&path, &Device::flex()).unwrap_err()
}

#[test]
fn unsupported_operator_names_node_and_operator() {
    let m = model(
        vec![node("nms", "NonMaxSuppression", &["x"], &["y"], vec![])],
        vec![],
    );
    assert_eq!(
        load_err(m).to_string(),
        "node \"nms\": operator NonMaxSuppression is not supported"
    );
    let mut custom = node("c", "Fancy", &["x"], &["y"], vec![]);
    custom.domain = "com.example".into();
    let err = load_err(model(vec![custom], vec![]));
    assert_eq!(
        err.to_string(),
        "node \"c\": operator com.example::Fancy is not supported"
    );
}

#[test]
fn unsupported_attribute_values_name_node_operator_and_attribute() {
    let m = model(
        vec![node(
            "pool",
            "MaxPool",
            &["x"],
            &["y"],
            vec![
                ints_attr("kernel_shape", &[2, 2]),
                int_attr("storage_order", 1),
            ],
        )],
        vec![],
    );
    assert_eq!(
        load_err(m).to_string(),
        "node \"pool\": operator MaxPool: attribute storage_order = 1 is not supported"
    );
    let m = model(
        vec![node(
            "g",
            "Gelu",
            &["x"],
            &["y"],
            vec![string_attr("approximate", "fast")],
        )],
        vec![],
    );
    assert_eq!(
        load_err(m).to_string(),
        "node \"g\": operator Gelu: attribute approximate = fast is not supported"
    );
    let m = model(
        vec![node(
            "k",
            "Conv",
            &["x", "w"],
            &["y"],
            vec![ints_attr("kernel_shape", &[1, 2, 3])],
        )],
        vec![weight("w", &[1, 1, 1, 2, 3], 0.0)],
    );
    assert_eq!(
        load_err(m).to_string(),
        "node \"k\": operator Conv: attribute kernel_shape = [1, 2, 3] (1-D and 2-D only) is not supported"
    );
}

#[test]
fn unknown_attribute_is_an_error_not_ignored() {
    let m = model(
        vec![node(
            "r",
            "Relu",
            &["x"],
            &["y"],
            vec![int_attr("bogus", 1)],
        )],
        vec![],
    );
    assert_eq!(
        load_err(m).to_string(),
        "node \"r\": operator Relu: attribute bogus (unknown to flint) is not supported"
    );
}

#[test]
fn graph_reading_a_tensor_nobody_writes_is_invalid() {
    let m = model(
        vec![node("a", "Add", &["x", "ghost"], &["y"], vec![])],
        vec![],
    );
    let err = load_err(m).to_string();
    assert!(
        err.ends_with("is not a readable ONNX model (truncated or not ONNX): node \"a\" reads \"ghost\" before any node writes it"),
        "{err}"
    );
}

#[test]
fn truncated_and_foreign_files_are_clear_errors() {
    use onnx_ir::Message;
    let dir = tempfile::tempdir().unwrap();
    let bytes = small_cnn().write_to_bytes().unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let err = OnnxModel::load(&truncated, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!(
            "{} is not a readable ONNX model (truncated or not ONNX)",
            truncated.display()
        )),
        "{err}"
    );

    let text = dir.path().join("notes.onnx");
    std::fs::write(&text, "these are my notes, not a network\n").unwrap();
    let err = OnnxModel::load(&text, &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(&format!("{} is not a readable ONNX model", text.display())),
        "{err}"
    );

    let missing = dir.path().join("missing.onnx");
    let err = OnnxModel::load(&missing, &Device::flex()).unwrap_err();
    assert!(matches!(err, OnnxError::Io { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {}", missing.display()))
    );

    let err = OnnxModel::load(dir.path(), &Device::flex())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("not a regular file") || err.starts_with("cannot read"),
        "{err}"
    );
}

#[test]
fn shape_mismatch_is_an_error_naming_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cnn.onnx", &small_cnn());
    let device = Device::flex();
    let model = OnnxModel::load(&path, &device).unwrap();
    let x = Tensor::<4>::random([1, 2, 8, 8], Distribution::Default, &device);
    let err = model.try_forward::<4, 2>(x).unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"conv\" (Conv): input has 2 channels, weight [4, 3, 3, 3] with 1 groups"
    );
    let x = Tensor::<4>::random([1, 3, 8, 8], Distribution::Default, &device);
    let err = model.try_forward::<4, 3>(x).unwrap_err();
    assert_eq!(err.to_string(), "input: the output has rank 2, not 3");
}
