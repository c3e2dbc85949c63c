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

#[test]
fn a_file_above_the_size_limit_is_refused_before_reading() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.onnx");
    // Sparse: no disk space is used.
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(flint_onnx::MAX_FILE_BYTES + 1).unwrap();
    let err = OnnxModel::load(&path, &Device::flex()).unwrap_err();
    assert!(matches!(err, OnnxError::TooLarge { .. }), "{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "{} is {} bytes, more than the {} bytes an ONNX file may have",
            path.display(),
            flint_onnx::MAX_FILE_BYTES + 1,
            flint_onnx::MAX_FILE_BYTES
        )
    );
}

#[test]
fn unsupported_tensors_name_the_tensor_and_what_is_wrong() {
    // An initializer of strings (element type 8).
    let mut strings = weight("names", &[2], 0.0);
    strings.float_data.clear();
    strings.data_type = 8;
    let m = model(
        vec![node("id", "Identity", &["x"], &["y"], vec![])],
        vec![strings],
    );
    assert_eq!(
        load_err(m).to_string(),
        "tensor \"names\": element type 8 is not supported"
    );

    // Weights kept in a file beside the model: `data_location = EXTERNAL` (field 14, value
    // 1), appended to the encoded tensor (onnx-ir does not export the enum).
    use onnx_ir::Message;
    let mut bytes = weight("w", &[2], 0.0).write_to_bytes().unwrap();
    bytes.extend_from_slice(&[14 << 3, 1]);
    let external = onnx_ir::TensorProto::parse_from_bytes(&bytes).unwrap();
    let m = model(
        vec![node("add", "Add", &["x", "w"], &["y"], vec![])],
        vec![external],
    );
    assert_eq!(
        load_err(m).to_string(),
        "tensor \"w\": its data is stored outside the file (external data is not supported)"
    );

    // A float16 graph input.
    let mut m = model(vec![node("r", "Relu", &["x"], &["y"], vec![])], vec![]);
    let graph = m.graph.as_mut().unwrap();
    let mut ty = onnx_ir::TypeProto::new();
    ty.mut_tensor_type().elem_type = 10;
    graph.input[0].type_ = Some(ty).into();
    assert_eq!(
        load_err(m).to_string(),
        "tensor \"x\": graph input of element type 10 is not supported"
    );
}

#[test]
fn unsupported_settings_found_at_run_time_name_node_and_setting() {
    // Dropout asked by the graph itself to draw masks (training_mode = true).
    let mut on = onnx_ir::TensorProto::new();
    on.name = "train".into();
    on.data_type = 9;
    on.int32_data = vec![1];
    let m = model(
        vec![node("drop", "Dropout", &["x", "", "train"], &["y"], vec![])],
        vec![on],
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "m.onnx", &m);
    let device = Device::flex();
    let model = OnnxModel::load(&path, &device).unwrap();
    let x = Tensor::<2>::ones([2, 3], &device);
    assert_eq!(
        model.try_forward::<2, 2>(x).unwrap_err().to_string(),
        "node \"drop\": operator Dropout: attribute training_mode = true is not supported"
    );
}

#[test]
fn shapes_that_do_not_fit_are_errors_naming_node_and_shapes() {
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    // Element-wise shapes that do not broadcast.
    let m = model(
        vec![node("add", "Add", &["x", "b"], &["y"], vec![])],
        vec![weight("b", &[4], 0.0)],
    );
    let model_ = OnnxModel::load(write(dir.path(), "add.onnx", &m), &device).unwrap();
    let err = model_
        .try_forward::<2, 2>(Tensor::<2>::ones([2, 3], &device))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node \"add\" (Add): shapes [2, 3] and [4] do not broadcast"
    );
    // A fully connected layer whose weight does not match the features.
    let m = model(
        vec![node(
            "fc",
            "Gemm",
            &["x", "w", "b"],
            &["y"],
            vec![int_attr("transB", 1)],
        )],
        vec![weight("w", &[5, 4], 0.0), weight("b", &[5], 1.0)],
    );
    let model_ = OnnxModel::load(write(dir.path(), "fc.onnx", &m), &device).unwrap();
    let err = model_
        .try_forward::<2, 2>(Tensor::<2>::ones([2, 3], &device))
        .unwrap_err();
    assert_eq!(err.to_string(), "node \"fc\" (Gemm): A is 2x3, B is 4x5");
    // The wrong number of inputs.
    let err = model_
        .run(vec![
            flint_onnx::OnnxValue::Int(flint_onnx::IntValue::scalar(1)),
            flint_onnx::OnnxValue::Int(flint_onnx::IntValue::scalar(2)),
        ])
        .unwrap_err();
    assert_eq!(err.to_string(), "input: 2 inputs given, the graph has 1");
}

#[test]
fn cuts_that_cannot_be_made_say_why() {
    use flint_onnx::CutPoint;
    let device = Device::flex();
    let dir = tempfile::tempdir().unwrap();
    // No classifier to find.
    let m = model(vec![node("r", "Relu", &["x"], &["y"], vec![])], vec![]);
    let model_ = OnnxModel::load(write(dir.path(), "relu.onnx", &m), &device).unwrap();
    assert_eq!(
        model_.cut(CutPoint::Auto).unwrap_err().to_string(),
        "cannot find the classifier to cut: the graph has no Gemm or MatMul node"
    );
    // Inside a skip connection: y = relu(x) + x needs x after the cut at the ReLU.
    let m = model(
        vec![
            node("r", "Relu", &["x"], &["h"], vec![]),
            node("add", "Add", &["h", "x"], &["y"], vec![]),
        ],
        vec![],
    );
    let model_ = OnnxModel::load(write(dir.path(), "skip.onnx", &m), &device).unwrap();
    let err = model_.cut(CutPoint::At("h".into())).unwrap_err();
    assert!(matches!(err, OnnxError::CutNotSeparating(_)), "{err}");
    assert_eq!(
        err.to_string(),
        "cannot cut at \"h\": the nodes after it also read tensors computed before it (a skip connection); cut at a tensor every path goes through"
    );
}
