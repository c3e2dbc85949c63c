//! flint-onnx: ONNX files read at run time into trainable burn modules.
//!
//! [`OnnxModel::load`] reads a file with onnx-ir's protobuf bindings and returns a burn
//! `Module` whose parameters are the file's weights under their ONNX names, and whose
//! `forward` runs the graph with burn tensor operations, so autodiff, optimisers, parameter
//! groups, `freeze` and records work on it as on any burn module. burn-onnx compiles a file into
//! Rust at build time; this crate needs no rebuild for a new network.
//!
//! Why an interpreter and not onnx-ir's typed graph: onnx-ir folds and renames while it
//! simplifies, and skips attributes it cannot represent with a warning. Reading the protobuf
//! here keeps the initializer names (torchvision's state-dict keys) and lets every attribute be
//! checked: one that is not understood is an [`OnnxError`], never a silently different network.
//!
//! Convolutions and fully connected layers go through flint-layers' `conv2d` and `linear`
//! (flint's CPU kernels where they apply), `BatchNormalization` is flint's `BatchNorm` with
//! PyTorch's running-statistic update, and `Dropout` is flint's `Dropout`. A `Conv` whose only
//! reader is the next node, a `Relu` or a `Clip` with constant bounds (ReLU6), runs with it as
//! one step (flint-layers' `conv2d_clamp`; [`OnnxModel::with_fusion`] turns this off).
//!
//! A file that is not a usable ONNX network is an error that says why, never a panic:
//!
//! ```
//! use burn::tensor::Device;
//! use flint_onnx::OnnxModel;
//!
//! let path = std::env::temp_dir().join(format!("not-onnx-{}.onnx", std::process::id()));
//! std::fs::write(&path, b"this is not a protobuf")?;
//! let err = OnnxModel::load(&path, &Device::flex()).err().expect("refused");
//! println!("{err}");
//! assert!(err.to_string().contains(&path.display().to_string()), "{err}");
//! std::fs::remove_file(&path)?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod error;
mod file_info;
mod model;
mod ops;
pub mod parity;
mod proto;
mod value;

pub use error::OnnxError;
pub use file_info::{Declared, FileInfo, load_with_info, read_file_info};
pub use model::{Cut, CutPoint, OnnxModel, Summary};
pub use proto::MAX_FILE_BYTES;
pub use value::{FloatValue, IntValue, MAX_RANK, OnnxValue};

/// Decodes one ONNX `TensorProto` file (the conformance tests' `input_0.pb`) into a value.
pub fn read_tensor_file(
    path: &std::path::Path,
    device: &burn::tensor::Device,
) -> Result<OnnxValue, OnnxError> {
    use onnx_ir::Message;
    let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut t = onnx_ir::TensorProto::parse_from_bytes(&bytes).map_err(|e| OnnxError::NotOnnx {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    Ok(match proto::take_tensor(&mut t)? {
        proto::HostTensor::Int(i) => OnnxValue::Int(i),
        proto::HostTensor::Float { dims, data } => {
            OnnxValue::Float(FloatValue::from_values(data, &dims, device).ok_or_else(|| {
                OnnxError::Input(format!("rank {} is above {MAX_RANK}", dims.len()))
            })?)
        }
    })
}
