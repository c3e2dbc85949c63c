//! Where the shared models are, and skipping honestly when they are missing.

#![allow(dead_code)]

use std::path::PathBuf;

/// Whether missing data must fail the test (CI sets `FLINT_REQUIRE_DATA=1`) instead of skipping.
pub fn data_required() -> bool {
    std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips the calling test with a printed reason, or fails it when data is required.
pub fn skip(reason: &str) {
    if data_required() {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The model folder: `$FLINT_MODELS`, else `../shared/models` beside the checkout.
pub fn models_dir() -> PathBuf {
    std::env::var_os("FLINT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"))
}

/// The file, or a skip (returning `None`) naming it.
pub fn file_or_skip(path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!(
            "{} is missing; set FLINT_MODELS to the folder holding it",
            path.display()
        ));
        None
    }
}

use onnx_ir::{
    AttributeProto, AttributeType, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto,
};

/// A node of the default domain.
pub fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    outputs: &[&str],
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = name.into();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = outputs.iter().map(|s| s.to_string()).collect();
    n.attribute = attrs;
    n
}

pub fn int_attr(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

pub fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

pub fn string_attr(name: &str, v: &str) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::STRING.into();
    a.s = v.as_bytes().to_vec().into();
    a
}

/// A float initializer whose values are `0.1 * sin(i + seed)`.
pub fn weight(name: &str, dims: &[i64], seed: f32) -> TensorProto {
    let count: i64 = dims.iter().product();
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.float_data = (0..count).map(|i| 0.1 * (i as f32 + seed).sin()).collect();
    t
}

/// A model of one graph with input `x` and output `y`.
pub fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>) -> ModelProto {
    let info = |n: &str| {
        let mut v = ValueInfoProto::new();
        v.name = n.into();
        v
    };
    let mut g = GraphProto::new();
    g.name = "test".into();
    g.node = nodes;
    g.initializer = initializers;
    g.input = vec![info("x")];
    g.output = vec![info("y")];
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.graph = Some(g).into();
    m
}

/// A small CNN with torchvision-style names: conv, batch norm, ReLU, pooling, classifier.
pub fn small_cnn() -> ModelProto {
    let nodes = vec![
        node(
            "conv",
            "Conv",
            &["x", "features.0.weight", "features.0.bias"],
            &["c"],
            vec![ints_attr("pads", &[1, 1, 1, 1])],
        ),
        node(
            "bn",
            "BatchNormalization",
            &[
                "c",
                "features.1.weight",
                "features.1.bias",
                "features.1.running_mean",
                "features.1.running_var",
            ],
            &["b"],
            vec![],
        ),
        node("relu", "Relu", &["b"], &["r"], vec![]),
        node("pool", "GlobalAveragePool", &["r"], &["p"], vec![]),
        node("flatten", "Flatten", &["p"], &["f"], vec![]),
        node(
            "fc",
            "Gemm",
            &["f", "fc.weight", "fc.bias"],
            &["y"],
            vec![int_attr("transB", 1)],
        ),
    ];
    let mut var = weight("features.1.running_var", &[4], 3.0);
    var.float_data.iter_mut().for_each(|v| *v = v.abs() + 0.5);
    let inits = vec![
        weight("features.0.weight", &[4, 3, 3, 3], 0.0),
        weight("features.0.bias", &[4], 1.0),
        weight("features.1.weight", &[4], 2.0),
        weight("features.1.bias", &[4], 4.0),
        weight("features.1.running_mean", &[4], 5.0),
        var,
        weight("fc.weight", &[5, 4], 6.0),
        weight("fc.bias", &[5], 7.0),
    ];
    model(nodes, inits)
}

/// Writes `model` into `dir` as `name`.
pub fn write(dir: &std::path::Path, name: &str, model: &ModelProto) -> PathBuf {
    use onnx_ir::Message;
    let path = dir.join(name);
    std::fs::write(&path, model.write_to_bytes().unwrap()).unwrap();
    path
}
