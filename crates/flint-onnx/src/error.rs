//! What can go wrong reading or running an ONNX file.

use std::path::PathBuf;

/// An ONNX file that cannot be read, or a graph flint cannot run as it is written.
///
/// Every unsupported construct is reported, never approximated: a network that loads computes
/// what its file says.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file is larger than the reader accepts.
    #[error("{path} is {size} bytes, more than the {limit} bytes an ONNX file may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The bytes are not an ONNX model (truncated, or another format).
    #[error("{path} is not a readable ONNX model (truncated or not ONNX): {reason}")]
    NotOnnx {
        /// The file.
        path: PathBuf,
        /// The protobuf decoder's message.
        reason: String,
    },
    /// The model is ONNX but its graph is malformed.
    #[error("invalid ONNX graph: {0}")]
    Invalid(String),
    /// A node whose operator flint does not implement.
    #[error("node {node:?}: operator {op} is not supported")]
    UnsupportedOp {
        /// The node's name (or its first output when unnamed).
        node: String,
        /// The operator, with its domain when not the default one.
        op: String,
    },
    /// A node whose operator is supported but not with this attribute or value.
    #[error("node {node:?}: operator {op}: attribute {attribute} {detail} is not supported")]
    UnsupportedAttribute {
        /// The node.
        node: String,
        /// The operator.
        op: String,
        /// The attribute (or input) name.
        attribute: String,
        /// Its value, or why it cannot be used.
        detail: String,
    },
    /// A tensor type flint cannot hold (strings, complex numbers, external data).
    #[error("tensor {name:?}: {detail}")]
    UnsupportedTensor {
        /// The tensor.
        name: String,
        /// What is wrong with it.
        detail: String,
    },
    /// A node's inputs do not have the shapes or types its operator needs.
    #[error("node {node:?} ({op}): {detail}")]
    Shape {
        /// The node.
        node: String,
        /// The operator.
        op: String,
        /// What did not fit.
        detail: String,
    },
    /// A cut point that names neither a node nor a tensor of the graph.
    #[error("cannot cut at {0:?}: no node or tensor of that name")]
    UnknownCut(String),
    /// A cut point the graph's later nodes do not depend on alone: they also read tensors
    /// computed before it (inside a residual block, say).
    #[error(
        "cannot cut at {0:?}: the nodes after it also read tensors computed before it (a skip connection); cut at a tensor every path goes through"
    )]
    CutNotSeparating(String),
    /// `cut(auto)` found no `Gemm` or `MatMul` classifier.
    #[error("cannot find the classifier to cut: {0}")]
    NoClassifier(String),
    /// The forward pass was given inputs that do not fit the graph.
    #[error("input: {0}")]
    Input(String),
}
