//! What a file declares besides the module: the shapes of its inputs and outputs, every node
//! flint cannot run (not only the first), and the order in which the graph uses its
//! initializers. Transfer learning needs them to pick a default input size, to list what a
//! file lacks before refusing it, and to group parameters from the input to the output.

use std::collections::HashSet;
use std::path::Path;

use burn::tensor::Device;
use onnx_ir::{ModelProto, ValueInfoProto};

use crate::error::OnnxError;
use crate::model::OnnxModel;
use crate::ops;
use crate::proto::read_model;

/// A graph input or output as the file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Declared {
    /// Its name.
    pub name: String,
    /// Each axis's size, `None` for a symbolic or unknown one (`batch`); `None` as a whole when
    /// the file declares no shape.
    pub dims: Option<Vec<Option<usize>>>,
}

impl Declared {
    /// The shape as text: `[batch, 3, 224, 224]` style, `?` for an unknown axis.
    pub fn shape_text(&self) -> String {
        match &self.dims {
            None => "shape not declared".into(),
            Some(dims) => format!(
                "[{}]",
                dims.iter()
                    .map(|d| d.map_or("?".to_string(), |n| n.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What [`read_file_info`] and [`load_with_info`] report about a file.
#[derive(Debug)]
pub struct FileInfo {
    /// The graph inputs (initializers excluded), with their declared shapes.
    pub inputs: Vec<Declared>,
    /// The graph outputs, with their declared shapes.
    pub outputs: Vec<Declared>,
    /// Operators used, with their node counts, sorted by name (unsupported ones included).
    pub operators: Vec<(String, usize)>,
    /// One error per node whose operator or attributes flint cannot run, in graph order.
    pub unsupported: Vec<OnnxError>,
    /// Initializer names in the order the graph's nodes first read them (input to output).
    pub initializer_order: Vec<String>,
    /// The program that wrote the file (`pytorch 2.1`), when it says.
    pub producer: String,
}

fn declared(v: &ValueInfoProto) -> Declared {
    let dims = v
        .type_
        .as_ref()
        .filter(|t| t.has_tensor_type() && t.tensor_type().shape.is_some())
        .map(|t| {
            t.tensor_type()
                .shape
                .dim
                .iter()
                .map(|d| (d.has_dim_value() && d.dim_value() > 0).then(|| d.dim_value() as usize))
                .collect()
        });
    Declared {
        name: v.name.clone(),
        dims,
    }
}

impl FileInfo {
    fn from_proto(model: &ModelProto) -> Self {
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(1, |o| o.version);
        let graph = model.graph.as_ref().expect("read_model checks the graph");
        let init: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
        let mut seen = HashSet::new();
        let mut initializer_order = Vec::new();
        let mut unsupported = Vec::new();
        let mut operators: std::collections::BTreeMap<String, usize> = Default::default();
        for node in &graph.node {
            let op = if node.domain.is_empty() || node.domain == "ai.onnx" {
                node.op_type.clone()
            } else {
                format!("{}::{}", node.domain, node.op_type)
            };
            *operators.entry(op).or_default() += 1;
            if let Err(e) = ops::parse(node, opset) {
                unsupported.push(e);
            }
            for input in &node.input {
                if init.contains(input.as_str()) && seen.insert(input.clone()) {
                    initializer_order.push(input.clone());
                }
            }
        }
        let producer = [
            model.producer_name.as_str(),
            model.producer_version.as_str(),
        ]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
        Self {
            inputs: graph
                .input
                .iter()
                .filter(|i| !init.contains(i.name.as_str()))
                .map(declared)
                .collect(),
            outputs: graph.output.iter().map(declared).collect(),
            operators: operators.into_iter().collect(),
            unsupported,
            initializer_order,
            producer,
        }
    }
}

/// Reads a file's declarations and checks every node, without building the module.
///
/// # Errors
/// A file that cannot be read or is not ONNX (as [`OnnxModel::load`]); unsupported nodes are
/// listed in [`FileInfo::unsupported`], not returned as an error.
pub fn read_file_info(path: impl AsRef<Path>) -> Result<FileInfo, OnnxError> {
    Ok(FileInfo::from_proto(&read_model(path.as_ref())?))
}

/// [`OnnxModel::load`] that also returns the file's [`FileInfo`], reading the file once.
///
/// # Errors
/// As [`OnnxModel::load`].
pub fn load_with_info(
    path: impl AsRef<Path>,
    device: &Device,
) -> Result<(OnnxModel, FileInfo), OnnxError> {
    let path = path.as_ref();
    let model = read_model(path)?;
    let info = FileInfo::from_proto(&model);
    let module = OnnxModel::from_proto(model, device).map_err(|e| match e {
        // As `OnnxModel::load`: an inconsistent graph read from a file is a damaged file.
        OnnxError::Invalid(reason) => OnnxError::NotOnnx {
            path: path.to_path_buf(),
            reason,
        },
        other => other,
    })?;
    Ok((module, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_print_unknown_axes_as_question_marks() {
        let d = Declared {
            name: "input".into(),
            dims: Some(vec![None, Some(3), Some(224), Some(224)]),
        };
        assert_eq!(d.shape_text(), "[?, 3, 224, 224]");
        let none = Declared {
            name: "x".into(),
            dims: None,
        };
        assert_eq!(none.shape_text(), "shape not declared");
    }

    fn node(name: &str, op: &str, inputs: &[&str], output: &str) -> onnx_ir::NodeProto {
        let mut n = onnx_ir::NodeProto::new();
        n.name = name.into();
        n.op_type = op.into();
        n.input = inputs.iter().map(|s| s.to_string()).collect();
        n.output = vec![output.into()];
        n
    }

    #[test]
    fn every_unsupported_node_is_listed_and_shapes_are_read() {
        use onnx_ir::{GraphProto, Message, TensorProto, TypeProto};
        let mut w = TensorProto::new();
        w.name = "w".into();
        w.dims = vec![2, 2];
        w.data_type = 1;
        w.float_data = vec![1.0; 4];
        let mut input = ValueInfoProto::new();
        input.name = "x".into();
        let mut shape = onnx_ir::TensorShapeProto::new();
        for (param, value) in [("batch", 0), ("", 2)] {
            shape.dim.push(Default::default());
            let d = shape.dim.last_mut().unwrap();
            if param.is_empty() {
                d.set_dim_value(value);
            } else {
                d.set_dim_param(param.into());
            }
        }
        let mut ty = TypeProto::new();
        let tensor = ty.mut_tensor_type();
        tensor.elem_type = 1;
        tensor.shape = Some(shape).into();
        input.type_ = Some(ty).into();
        let mut output = ValueInfoProto::new();
        output.name = "y".into();
        let mut g = GraphProto::new();
        g.node = vec![
            node("a", "FancyOp", &["x"], "h"),
            node("b", "MatMul", &["h", "w"], "m"),
            node("c", "OtherOp", &["m"], "y"),
        ];
        g.initializer = vec![w];
        g.input = vec![input];
        g.output = vec![output];
        let mut m = ModelProto::new();
        m.ir_version = 8;
        m.graph = Some(g).into();
        let dir = std::env::temp_dir().join(format!("flint-onnx-info-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("two.onnx");
        std::fs::write(&path, m.write_to_bytes().unwrap()).unwrap();
        let info = read_file_info(&path).unwrap();
        let names: Vec<String> = info.unsupported.iter().map(|e| e.to_string()).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(
            names[0].contains("FancyOp") && names[1].contains("OtherOp"),
            "{names:?}"
        );
        assert_eq!(info.initializer_order, ["w"]);
        assert_eq!(info.operators.len(), 3);
        assert_eq!(info.inputs[0].dims, Some(vec![None, Some(2)]));
        assert!(load_with_info(&path, &Device::flex()).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_onnx_is_an_error_naming_it() {
        let dir = std::env::temp_dir().join(format!("flint-onnx-info-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.onnx");
        std::fs::write(&path, b"not a protobuf at all").unwrap();
        let err = read_file_info(&path).unwrap_err();
        assert!(err.to_string().contains("bad.onnx"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
