//! Reading the ONNX protobuf: the file, its tensors and node attributes.

use std::collections::HashSet;
use std::io::Read;
use std::path::Path;

use onnx_ir::{AttributeProto, Message, ModelProto, NodeProto, TensorProto};

use crate::error::OnnxError;
use crate::value::IntValue;

/// protobuf's own ceiling for one message; larger models keep weights as external data.
pub const MAX_FILE_BYTES: u64 = 2 << 30;

/// Parses the model, streaming from the file so the raw bytes are never held beside the
/// decoded message (peak memory stays near one copy of the weights).
pub(crate) fn read_model(path: &Path) -> Result<ModelProto, OnnxError> {
    let io = |source| OnnxError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(OnnxError::NotOnnx {
            path: path.to_path_buf(),
            reason: "not a regular file".into(),
        });
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(OnnxError::TooLarge {
            path: path.to_path_buf(),
            size: meta.len(),
            limit: MAX_FILE_BYTES,
        });
    }
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file.take(MAX_FILE_BYTES));
    let model = ModelProto::parse_from_reader(&mut reader).map_err(|e| OnnxError::NotOnnx {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if model.graph.is_none() || model.graph.node.is_empty() {
        return Err(OnnxError::NotOnnx {
            path: path.to_path_buf(),
            reason: "the file holds no graph nodes".into(),
        });
    }
    Ok(model)
}

/// A tensor of the file, decoded.
#[derive(Clone, Debug)]
pub(crate) enum HostTensor {
    /// Float, double and half tensors, as f32.
    Float { dims: Vec<usize>, data: Vec<f32> },
    /// Integer and boolean tensors, as i64.
    Int(IntValue),
}

impl HostTensor {
    pub(crate) fn dims(&self) -> &[usize] {
        match self {
            Self::Float { dims, .. } => dims,
            Self::Int(i) => &i.dims,
        }
    }
}

// TensorProto.DataType values.
const FLOAT: i32 = 1;
const UINT8: i32 = 2;
const INT8: i32 = 3;
const UINT16: i32 = 4;
const INT16: i32 = 5;
const INT32: i32 = 6;
const INT64: i32 = 7;
const BOOL: i32 = 9;
const DOUBLE: i32 = 11;
const UINT32: i32 = 12;

/// Decodes a tensor, taking its raw bytes out of `t` so they are freed as soon as decoded.
pub(crate) fn take_tensor(t: &mut TensorProto) -> Result<HostTensor, OnnxError> {
    let bad = |detail: String| OnnxError::UnsupportedTensor {
        name: t.name.clone(),
        detail,
    };
    if !t.external_data.is_empty() || t.data_location.value() == 1 {
        return Err(bad(
            "its data is stored outside the file (external data is not supported)".into(),
        ));
    }
    let dims = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| bad(format!("shape {dims:?} overflows")))?;
    let raw = std::mem::take(&mut t.raw_data);
    let width = match t.data_type {
        FLOAT | INT32 | UINT32 => 4,
        DOUBLE | INT64 => 8,
        UINT8 | INT8 | BOOL => 1,
        UINT16 | INT16 => 2,
        other => return Err(bad(format!("element type {other} is not supported"))),
    };
    if !raw.is_empty() && raw.len() != count * width {
        return Err(OnnxError::Invalid(format!(
            "tensor {:?} has {} raw bytes for shape {dims:?} ({} expected)",
            t.name,
            raw.len(),
            count * width
        )));
    }
    let chunks = |w: usize| raw.chunks_exact(w);
    let tensor = match t.data_type {
        FLOAT | DOUBLE => {
            let data: Vec<f32> = if !raw.is_empty() {
                if t.data_type == FLOAT {
                    chunks(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                        .collect()
                } else {
                    chunks(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
                        .collect()
                }
            } else if t.data_type == FLOAT {
                std::mem::take(&mut t.float_data)
            } else {
                t.double_data.iter().map(|&v| v as f32).collect()
            };
            HostTensor::Float { dims, data }
        }
        _ => {
            let data: Vec<i64> = if !raw.is_empty() {
                match t.data_type {
                    INT64 => chunks(8)
                        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                    INT32 => chunks(4)
                        .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                    UINT32 => chunks(4)
                        .map(|c| u32::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                    INT16 => chunks(2)
                        .map(|c| i16::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                    UINT16 => chunks(2)
                        .map(|c| u16::from_le_bytes(c.try_into().unwrap()) as i64)
                        .collect(),
                    INT8 => raw.iter().map(|&b| b as i8 as i64).collect(),
                    _ => raw.iter().map(|&b| b as i64).collect(),
                }
            } else if t.data_type == INT64 {
                std::mem::take(&mut t.int64_data)
            } else {
                t.int32_data.iter().map(|&v| v as i64).collect()
            };
            HostTensor::Int(IntValue { dims, data })
        }
    };
    let len = match &tensor {
        HostTensor::Float { data, .. } => data.len(),
        HostTensor::Int(i) => i.data.len(),
    };
    if len != count {
        return Err(OnnxError::Invalid(format!(
            "tensor {:?} holds {len} values for shape {:?}",
            t.name,
            tensor.dims()
        )));
    }
    Ok(tensor)
}

/// A node's attributes, read by name; attributes left unread are reported as unsupported, so
/// an attribute this crate does not know can never be ignored silently.
pub(crate) struct Attrs<'a> {
    node: &'a NodeProto,
    name: String,
    read: HashSet<&'a str>,
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(node: &'a NodeProto, name: String) -> Self {
        Self {
            node,
            name,
            read: HashSet::new(),
        }
    }

    fn get(&mut self, key: &'static str) -> Option<&'a AttributeProto> {
        let attr = self.node.attribute.iter().find(|a| a.name == key)?;
        self.read.insert(key);
        Some(attr)
    }

    /// An error naming this node, its operator and `attribute`.
    pub(crate) fn unsupported(&self, attribute: &str, detail: impl Into<String>) -> OnnxError {
        OnnxError::UnsupportedAttribute {
            node: self.name.clone(),
            op: self.node.op_type.clone(),
            attribute: attribute.to_string(),
            detail: detail.into(),
        }
    }

    pub(crate) fn int(&mut self, key: &'static str, default: i64) -> i64 {
        self.get(key).map_or(default, |a| a.i)
    }

    pub(crate) fn float(&mut self, key: &'static str, default: f32) -> f32 {
        self.get(key).map_or(default, |a| a.f)
    }

    pub(crate) fn ints(&mut self, key: &'static str) -> Option<Vec<i64>> {
        self.get(key).map(|a| a.ints.clone())
    }

    pub(crate) fn string(&mut self, key: &'static str, default: &str) -> String {
        self.get(key).map_or(default.to_string(), |a| {
            String::from_utf8_lossy(&a.s).into_owned()
        })
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.node.attribute.iter().any(|a| a.name == key)
    }

    /// Takes a tensor attribute (`Constant`'s `value`).
    pub(crate) fn tensor(&mut self, key: &'static str) -> Result<Option<HostTensor>, OnnxError> {
        match self.get(key) {
            Some(a) => match a.t.as_ref() {
                Some(t) => take_tensor(&mut t.clone()).map(Some),
                None => Err(self.unsupported(key, "without a tensor")),
            },
            None => Ok(None),
        }
    }

    /// Checks that every attribute was read: the first unread one is an error.
    pub(crate) fn finish(self) -> Result<(), OnnxError> {
        match self
            .node
            .attribute
            .iter()
            .find(|a| !self.read.contains(a.name.as_str()))
        {
            Some(a) => Err(self.unsupported(&a.name, "(unknown to flint)")),
            None => Ok(()),
        }
    }
}
