//! ONNX's own node tests (Debian's `libonnx-testdata`: `node/test_*/model.onnx` with
//! `test_data_set_0/{input,output}_*.pb`) for every operator flint-onnx supports.
//!
//! A test whose model uses an operator, attribute or tensor type flint-onnx reports as
//! unsupported is skipped (counted); every other one must load, run and match its expected
//! outputs within 1e-4 of their largest magnitude. A list of tests that must have run keeps
//! the suite from passing by skipping everything.

mod common;

use std::path::{Path, PathBuf};

use burn::tensor::Device;
use flint_onnx::parity::{relative_error, values};
use flint_onnx::{OnnxError, OnnxModel, OnnxValue, read_tensor_file};

/// Where Debian's package installs the node tests.
const NODE_TESTS: &str = "/usr/share/libonnx-testdata/data/node";

/// Tests that must run and pass: at least one per supported operator family. (The batch-norm
/// and layer-norm node tests pass scale and statistics as graph inputs or request extra
/// outputs, which flint-onnx reports as unsupported.)
const MUST_RUN: &[&str] = &[
    "test_conv_with_strides_padding",
    "test_conv_with_autopad_same",
    "test_basic_conv_with_padding",
    "test_relu",
    "test_sigmoid",
    "test_maxpool_2d_default",
    "test_maxpool_2d_pads",
    "test_maxpool_2d_ceil",
    "test_averagepool_2d_pads_count_include_pad",
    "test_averagepool_2d_ceil",
    "test_globalaveragepool",
    "test_gemm_default_no_bias",
    "test_gemm_all_attributes",
    "test_gemm_transposeA",
    "test_gemm_alpha",
    "test_matmul_2d",
    "test_matmul_4d",
    "test_concat_2d_axis_1",
    "test_reshape_negative_dim",
    "test_transpose_default",
    "test_flatten_axis1",
    "test_softmax_axis_1",
    "test_erf",
    "test_hardswish",
    "test_hardsigmoid",
    "test_add_bcast",
    "test_mul",
    "test_clip",
    "test_unsqueeze_axis_0",
    "test_squeeze",
    "test_slice",
    "test_gather_0",
    "test_shape",
    "test_reduce_mean_keepdims_example",
];

/// Every operator flint-onnx supports (checked against its node tests below).
const SUPPORTED: &[&str] = &[
    "Abs",
    "Add",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Concat",
    "Constant",
    "ConstantOfShape",
    "Conv",
    "Div",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Expand",
    "Flatten",
    "Floor",
    "Gather",
    "Gelu",
    "Gemm",
    "GlobalAveragePool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "MatMul",
    "MaxPool",
    "Mish",
    "Mul",
    "Neg",
    "Pow",
    "Reciprocal",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceSum",
    "Relu",
    "Reshape",
    "Shape",
    "Sigmoid",
    "Slice",
    "Softmax",
    "Softplus",
    "Split",
    "Sqrt",
    "Squeeze",
    "Sub",
    "Tanh",
    "Transpose",
    "Unsqueeze",
];

/// Supported operators whose node tests all use something flint-onnx reports as unsupported,
/// with the reason.
const NO_RUNNABLE_TEST: &[(&str, &str)] = &[];

fn sorted_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| {
        p.file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
    });
    // input_10 after input_9.
    files.sort_by_key(|p| {
        let n = p.file_stem().unwrap().to_string_lossy().into_owned();
        n[prefix.len()..].parse::<usize>().unwrap_or(usize::MAX)
    });
    files
}

fn is_unsupported(e: &OnnxError) -> bool {
    matches!(
        e,
        OnnxError::UnsupportedOp { .. }
            | OnnxError::UnsupportedAttribute { .. }
            | OnnxError::UnsupportedTensor { .. }
    )
}

enum Outcome {
    Passed,
    Unsupported,
    Failed(String),
}

/// The operators of a test's model.
fn operators(model: &Path) -> Vec<String> {
    use onnx_ir::Message;
    let Ok(bytes) = std::fs::read(model) else {
        return Vec::new();
    };
    let Ok(proto) = onnx_ir::ModelProto::parse_from_bytes(&bytes) else {
        return Vec::new();
    };
    let mut ops: Vec<String> = proto.graph.node.iter().map(|n| n.op_type.clone()).collect();
    ops.sort();
    ops.dedup();
    ops
}

/// ONNX's batch-norm node tests feed scale, bias, mean and variance as graph inputs; flint-onnx
/// takes them from initializers (they become parameters and running statistics). The test data
/// for those inputs is moved into the model as initializers, so the operator is still checked
/// against its expected outputs. Returns the rewritten model and the graph inputs it took.
fn fold_batch_norm_inputs(dir: &Path) -> Option<(tempfile::TempDir, PathBuf, Vec<usize>)> {
    use onnx_ir::Message;
    let bytes = std::fs::read(dir.join("model.onnx")).ok()?;
    let mut proto = onnx_ir::ModelProto::parse_from_bytes(&bytes).ok()?;
    let graph = proto.graph.as_mut()?;
    let settings: Vec<String> = graph
        .node
        .iter()
        .filter(|n| n.op_type == "BatchNormalization")
        .flat_map(|n| n.input.iter().skip(1).cloned())
        .collect();
    let inputs: Vec<String> = graph.input.iter().map(|i| i.name.clone()).collect();
    let files = sorted_files(&dir.join("test_data_set_0"), "input_");
    let mut taken = Vec::new();
    for (index, name) in inputs.iter().enumerate() {
        if settings.contains(name) {
            let mut t =
                onnx_ir::TensorProto::parse_from_bytes(&std::fs::read(files.get(index)?).ok()?)
                    .ok()?;
            t.name = name.clone();
            graph.initializer.push(t);
            taken.push(index);
        }
    }
    if taken.is_empty() {
        return None;
    }
    graph.input.retain(|i| !settings.contains(&i.name));
    let tmp = tempfile::tempdir().ok()?;
    let path = tmp.path().join("model.onnx");
    std::fs::write(&path, proto.write_to_bytes().ok()?).ok()?;
    Some((tmp, path, taken))
}

fn run_one(dir: &Path, device: &Device) -> Outcome {
    let folded = fold_batch_norm_inputs(dir);
    let (model_path, taken) = match &folded {
        Some((_, path, taken)) => (path.clone(), taken.clone()),
        None => (dir.join("model.onnx"), Vec::new()),
    };
    let model = match OnnxModel::load(&model_path, device) {
        Ok(m) => m,
        Err(e) if is_unsupported(&e) => return Outcome::Unsupported,
        Err(e) => return Outcome::Failed(format!("load: {e}")),
    };
    let data = dir.join("test_data_set_0");
    let read = |p: &PathBuf| read_tensor_file(p, device);
    let inputs: Result<Vec<OnnxValue>, _> = sorted_files(&data, "input_")
        .iter()
        .enumerate()
        .filter(|(i, _)| !taken.contains(i))
        .map(|(_, p)| read(p))
        .collect();
    let expected: Result<Vec<OnnxValue>, _> =
        sorted_files(&data, "output_").iter().map(read).collect();
    let (inputs, expected) = match (inputs, expected) {
        (Ok(i), Ok(e)) => (i, e),
        (Err(e), _) | (_, Err(e)) => {
            // Optional and sequence values (test_identity_opt, ...) are not tensors.
            if is_unsupported(&e) || matches!(e, OnnxError::Invalid(_)) {
                return Outcome::Unsupported;
            }
            return Outcome::Failed(format!("test data: {e}"));
        }
    };
    if inputs.len() != model.input_names().len() {
        return Outcome::Unsupported;
    }
    let outputs = match model.run(inputs) {
        Ok(o) => o,
        Err(e) if is_unsupported(&e) => return Outcome::Unsupported,
        Err(e) => return Outcome::Failed(format!("run: {e}")),
    };
    for (i, (got, want)) in outputs.iter().zip(&expected).enumerate() {
        if got.dims() != want.dims() {
            return Outcome::Failed(format!(
                "output {i}: shape {:?}, expected {:?}",
                got.dims(),
                want.dims()
            ));
        }
        let as_f32 = |v: &OnnxValue| match v {
            OnnxValue::Float(f) => values(f.tensor.clone()),
            OnnxValue::Int(i) => i.data.iter().map(|&x| x as f32).collect(),
        };
        // NaN and infinities in the expected output must be reproduced exactly.
        let (got, want) = (as_f32(got), as_f32(want));
        if got
            .iter()
            .zip(&want)
            .any(|(a, b)| !(b.is_finite() || a == b || (a.is_nan() && b.is_nan())))
        {
            return Outcome::Failed(format!("output {i}: non-finite values differ"));
        }
        let finite = |v: &[f32], w: &[f32]| -> Vec<f32> {
            v.iter()
                .zip(w)
                .map(|(x, y)| if y.is_finite() { *x } else { 0.0 })
                .collect()
        };
        let err = relative_error(&finite(&got, &want), &finite(&want, &want));
        if err.is_nan() || err > 1e-4 {
            return Outcome::Failed(format!("output {i}: relative error {err:e}"));
        }
    }
    Outcome::Passed
}

#[test]
fn onnx_node_tests_of_supported_operators() {
    let root = Path::new(NODE_TESTS);
    if !root.is_dir() {
        common::skip(&format!(
            "{NODE_TESTS} is missing (Debian package libonnx-testdata)"
        ));
        return;
    }
    let device = Device::flex();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    dirs.sort();
    let (mut passed, mut unsupported, mut failed) = (Vec::new(), 0, Vec::new());
    // Per supported operator: node tests using it, and how many of those passed.
    let mut coverage: std::collections::BTreeMap<&str, (usize, usize)> =
        SUPPORTED.iter().map(|op| (*op, (0, 0))).collect();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !dir.join("model.onnx").is_file() {
            continue;
        }
        let ops = operators(&dir.join("model.onnx"));
        // A panic is a failure of that test, reported with the others.
        let outcome = std::panic::catch_unwind(|| run_one(dir, &device))
            .unwrap_or_else(|_| Outcome::Failed("panicked".into()));
        for op in &ops {
            if let Some(c) = coverage.get_mut(op.as_str()) {
                c.0 += 1;
                c.1 += usize::from(matches!(outcome, Outcome::Passed));
            }
        }
        match outcome {
            Outcome::Passed => passed.push(name),
            Outcome::Unsupported => unsupported += 1,
            Outcome::Failed(why) => failed.push(format!("{name}: {why}")),
        }
    }
    println!(
        "{} passed, {unsupported} unsupported, {} failed",
        passed.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
    println!("operator | node tests using it | passed");
    for (op, (tests, ok)) in &coverage {
        println!("{op} | {tests} | {ok}");
    }
    // Every supported operator that has node tests passes at least one of them, unless listed
    // with the reason its tests cannot run.
    let uncovered: Vec<&&str> = coverage
        .iter()
        .filter(|(op, (tests, ok))| {
            *tests > 0 && *ok == 0 && !NO_RUNNABLE_TEST.iter().any(|(o, _)| o == *op)
        })
        .map(|(op, _)| op)
        .collect();
    assert!(
        uncovered.is_empty(),
        "supported operators none of whose node tests ran: {uncovered:?}"
    );
    let missing: Vec<&&str> = MUST_RUN
        .iter()
        .filter(|t| !passed.iter().any(|p| p == *t))
        .collect();
    assert!(missing.is_empty(), "did not run: {missing:?}");
}
