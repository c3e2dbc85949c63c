//! The operators: each node of the file becomes an [`Op`] with its attributes checked at load,
//! then runs with burn tensor operations in `forward`.

mod conv;
mod math;
mod shape;

use burn::tensor::Device;
use onnx_ir::NodeProto;

use crate::error::OnnxError;
use crate::model::OnnxModel;
use crate::proto::{Attrs, HostTensor};
use crate::value::{FloatValue, IntValue, OnnxValue};

pub(crate) use conv::{ConvSpec, PoolSpec};
pub(crate) use math::{GemmSpec, Unary};

/// One node of the graph, ready to run.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// The node's name, or its first output when the file leaves it unnamed.
    pub name: String,
    pub op_type: String,
    /// Input tensor names; empty for an omitted optional input.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub op: Op,
}

/// What a node computes, with its attributes.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    Conv(ConvSpec),
    BatchNorm,
    Dropout,
    MaxPool(PoolSpec),
    AveragePool(PoolSpec),
    GlobalAveragePool,
    GlobalMaxPool,
    Gemm(GemmSpec),
    MatMul,
    LayerNorm {
        axis: i64,
        epsilon: f64,
    },
    Softmax {
        axis: i64,
        log: bool,
        coerce_2d: bool,
    },
    Unary(Unary),
    Binary(math::Binary),
    Clip {
        min: Option<f32>,
        max: Option<f32>,
    },
    Reduce {
        kind: math::Reduce,
        axes: Option<Vec<i64>>,
        keepdims: bool,
        noop_with_empty_axes: bool,
    },
    Flatten {
        axis: i64,
    },
    Reshape {
        allowzero: bool,
    },
    Transpose {
        perm: Option<Vec<i64>>,
    },
    Squeeze {
        axes: Option<Vec<i64>>,
    },
    Unsqueeze {
        axes: Option<Vec<i64>>,
    },
    Concat {
        axis: i64,
    },
    Split {
        axis: i64,
        split: Option<Vec<i64>>,
    },
    Slice,
    Gather {
        axis: i64,
    },
    Shape {
        start: i64,
        end: Option<i64>,
    },
    Cast {
        to_float: bool,
    },
    Constant(HostTensor),
    ConstantOfShape(HostTensor),
    Expand,
    Identity,
}

/// The name shown in messages: the node's name, else its first output.
pub(crate) fn display_name(node: &NodeProto) -> String {
    if !node.name.is_empty() {
        node.name.clone()
    } else {
        node.output.first().cloned().unwrap_or_default()
    }
}

/// Reads one node's operator and attributes; anything not supported is an error here, at load.
pub(crate) fn parse(node: &NodeProto, opset: i64) -> Result<Op, OnnxError> {
    let name = display_name(node);
    if !(node.domain.is_empty() || node.domain == "ai.onnx") {
        return Err(OnnxError::UnsupportedOp {
            node: name,
            op: format!("{}::{}", node.domain, node.op_type),
        });
    }
    let mut a = Attrs::new(node, name.clone());
    let op = match node.op_type.as_str() {
        "Conv" => Op::Conv(conv::parse_conv(&mut a)?),
        "BatchNormalization" => conv::parse_batch_norm(&mut a, node)?,
        "MaxPool" => Op::MaxPool(conv::parse_pool(&mut a, true, node)?),
        "AveragePool" => Op::AveragePool(conv::parse_pool(&mut a, false, node)?),
        "GlobalAveragePool" => Op::GlobalAveragePool,
        "GlobalMaxPool" => Op::GlobalMaxPool,
        "Dropout" => {
            // Opset < 12 carries the ratio as an attribute; `seed` changes no expectation.
            a.float("ratio", 0.5);
            a.int("seed", 0);
            if node.output.get(1).is_some_and(|o| !o.is_empty()) {
                return Err(a.unsupported("output mask", "(a second output) is requested"));
            }
            Op::Dropout
        }
        "Gemm" => Op::Gemm(math::parse_gemm(&mut a)?),
        "MatMul" => Op::MatMul,
        "LayerNormalization" => {
            let stash = a.int("stash_type", 1);
            if stash != 1 {
                return Err(a.unsupported("stash_type", format!("= {stash}")));
            }
            Op::LayerNorm {
                axis: a.int("axis", -1),
                epsilon: a.float("epsilon", 1e-5) as f64,
            }
        }
        op @ ("Softmax" | "LogSoftmax") => Op::Softmax {
            axis: a.int("axis", if opset >= 13 { -1 } else { 1 }),
            log: op == "LogSoftmax",
            coerce_2d: opset < 13,
        },
        "Clip" => Op::Clip {
            min: a.has("min").then(|| a.float("min", f32::MIN)),
            max: a.has("max").then(|| a.float("max", f32::MAX)),
        },
        "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
            let kind = match node.op_type.as_str() {
                "ReduceMean" => math::Reduce::Mean,
                "ReduceSum" => math::Reduce::Sum,
                "ReduceMax" => math::Reduce::Max,
                _ => math::Reduce::Min,
            };
            Op::Reduce {
                kind,
                axes: a.ints("axes"),
                keepdims: a.int("keepdims", 1) != 0,
                noop_with_empty_axes: a.int("noop_with_empty_axes", 0) != 0,
            }
        }
        "Flatten" => Op::Flatten {
            axis: a.int("axis", 1),
        },
        "Reshape" => Op::Reshape {
            allowzero: a.int("allowzero", 0) != 0,
        },
        "Transpose" => Op::Transpose {
            perm: a.ints("perm"),
        },
        "Squeeze" => Op::Squeeze {
            axes: a.ints("axes"),
        },
        "Unsqueeze" => Op::Unsqueeze {
            axes: a.ints("axes"),
        },
        "Concat" => Op::Concat {
            axis: a.int("axis", 0),
        },
        "Split" => {
            if a.has("num_outputs") {
                let n = a.int("num_outputs", 0);
                if n as usize != node.output.len() {
                    return Err(a.unsupported(
                        "num_outputs",
                        format!("= {n} for {} outputs", node.output.len()),
                    ));
                }
            }
            Op::Split {
                axis: a.int("axis", 0),
                split: a.ints("split"),
            }
        }
        "Slice" => Op::Slice,
        "Gather" => Op::Gather {
            axis: a.int("axis", 0),
        },
        "Shape" => Op::Shape {
            start: a.int("start", 0),
            end: a.has("end").then(|| a.int("end", 0)),
        },
        "Cast" => {
            let to = a.int("to", 0);
            a.int("saturate", 1);
            let to_float = match to {
                // float and double; half types would need rounding flint does not emulate.
                1 | 11 => true,
                2..=7 | 9 | 12 | 13 => false,
                other => return Err(a.unsupported("to", format!("= {other}"))),
            };
            Op::Cast { to_float }
        }
        "Constant" => {
            let value = if let Some(t) = a.tensor("value")? {
                t
            } else if a.has("value_float") {
                HostTensor::Float {
                    dims: vec![],
                    data: vec![a.float("value_float", 0.0)],
                }
            } else if let Some(v) = a.ints("value_ints") {
                HostTensor::Int(IntValue::vector(v))
            } else if a.has("value_int") {
                HostTensor::Int(IntValue::scalar(a.int("value_int", 0)))
            } else if let Some(attr) = node.attribute.iter().find(|x| x.name == "value_floats") {
                a.ints("value_floats");
                HostTensor::Float {
                    dims: vec![attr.floats.len()],
                    data: attr.floats.clone(),
                }
            } else {
                return Err(match node.attribute.first() {
                    Some(x) => a.unsupported(&x.name, "(only numeric values are supported)"),
                    None => a.unsupported("value", "is missing"),
                });
            };
            Op::Constant(value)
        }
        "ConstantOfShape" => Op::ConstantOfShape(a.tensor("value")?.unwrap_or(HostTensor::Float {
            dims: vec![1],
            data: vec![0.0],
        })),
        "Expand" => Op::Expand,
        "Identity" => Op::Identity,
        other => match math::unary(other, &mut a)? {
            Some(u) => Op::Unary(u),
            None => match math::binary(other) {
                Some(b) => Op::Binary(b),
                None => {
                    return Err(OnnxError::UnsupportedOp {
                        node: name,
                        op: other.to_string(),
                    });
                }
            },
        },
    };
    a.finish()?;
    Ok(op)
}

/// Which inputs of an operator are settings rather than data: a float initializer that feeds
/// only such inputs stays a constant instead of becoming a trainable parameter.
pub(crate) fn is_setting_input(op_type: &str, index: usize) -> bool {
    match op_type {
        "Clip" | "Dropout" | "Pad" => index >= 1,
        "Reshape" | "Expand" | "Tile" | "Split" | "Squeeze" | "Unsqueeze" | "Slice" | "TopK"
        | "Resize" | "Upsample" | "ReduceMean" | "ReduceSum" | "ReduceMax" | "ReduceMin" => {
            index >= 1
        }
        "ConstantOfShape" | "Shape" => true,
        _ => false,
    }
}

/// What a node sees while it runs: its inputs, the model's parameters, the device.
pub(crate) struct Ctx<'a> {
    pub model: &'a OnnxModel,
    pub node: &'a Node,
    pub inputs: Vec<Option<OnnxValue>>,
    pub device: &'a Device,
}

impl Ctx<'_> {
    /// An error about this node's inputs.
    pub(crate) fn shape_error(&self, detail: impl Into<String>) -> OnnxError {
        OnnxError::Shape {
            node: self.node.name.clone(),
            op: self.node.op_type.clone(),
            detail: detail.into(),
        }
    }

    /// An error about an attribute or setting found only at run time.
    pub(crate) fn unsupported(&self, attribute: &str, detail: impl Into<String>) -> OnnxError {
        OnnxError::UnsupportedAttribute {
            node: self.node.name.clone(),
            op: self.node.op_type.clone(),
            attribute: attribute.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn value(&self, i: usize) -> Result<&OnnxValue, OnnxError> {
        self.inputs
            .get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| self.shape_error(format!("input {i} is missing")))
    }

    pub(crate) fn has(&self, i: usize) -> bool {
        self.inputs.get(i).is_some_and(Option::is_some)
    }

    /// Input `i` as a float tensor (an integer one is converted, as ONNX's float inputs may
    /// come from shape arithmetic only in `Cast`ed form).
    pub(crate) fn float(&self, i: usize) -> Result<FloatValue, OnnxError> {
        match self.value(i)? {
            OnnxValue::Float(f) => Ok(f.clone()),
            OnnxValue::Int(v) => self.int_to_float(v),
        }
    }

    pub(crate) fn int_to_float(&self, v: &IntValue) -> Result<FloatValue, OnnxError> {
        FloatValue::from_values(
            v.data.iter().map(|&x| x as f32).collect(),
            &v.dims,
            self.device,
        )
        .ok_or_else(|| {
            self.shape_error(format!(
                "rank {} is above {}",
                v.dims.len(),
                crate::value::MAX_RANK
            ))
        })
    }

    /// Input `i` as host integers: shape arithmetic and indices.
    pub(crate) fn ints(&self, i: usize) -> Result<IntValue, OnnxError> {
        match self.value(i)? {
            OnnxValue::Int(v) => Ok(v.clone()),
            OnnxValue::Float(_) => {
                Err(self.shape_error(format!("input {i} must be an integer tensor")))
            }
        }
    }

    /// An optional input holding one float setting (`Clip`'s bounds, `Dropout`'s ratio).
    pub(crate) fn scalar(&self, i: usize) -> Result<Option<f32>, OnnxError> {
        if !self.has(i) {
            return Ok(None);
        }
        let values: Vec<f32> = match self.value(i)? {
            OnnxValue::Int(v) => v.data.iter().map(|&x| x as f32).collect(),
            OnnxValue::Float(f) => f
                .tensor
                .clone()
                .into_data()
                .convert::<f32>()
                .try_to_vec::<f32>()
                .unwrap_or_default(),
        };
        match values.as_slice() {
            [v] => Ok(Some(*v)),
            _ => Err(self.shape_error(format!(
                "input {i} must hold one value, got {}",
                values.len()
            ))),
        }
    }
}

/// Runs a `Conv` node together with the activation that reads only its output (found by
/// [`fused_activation`]): the activation's output, computed in one step.
pub(crate) fn eval_conv_clamp(ctx: &Ctx, min: f32, max: f32) -> Result<OnnxValue, OnnxError> {
    match &ctx.node.op {
        Op::Conv(spec) => Ok(OnnxValue::Float(conv::conv_clamp(ctx, spec, min, max)?)),
        _ => Err(OnnxError::Invalid(format!(
            "node {:?} is not a Conv to fuse with an activation",
            ctx.node.name
        ))),
    }
}

/// The clamping bounds of the activation that runs fused with the `Conv` node `nodes[i]`, if
/// any: the next node, a `Relu` (`[0, inf]`) or a `Clip` whose bounds are constant (a missing
/// one is infinite), whose only input is the Conv's output and which is that output's only
/// reader (`last_read` lists the values node `i + 1` reads for the last time; graph outputs are
/// never listed). The fused step gives the activation's output and the Conv's output is never
/// stored, so nothing else may need it.
pub(crate) fn fused_activation(
    nodes: &[Node],
    last_read: &[String],
    i: usize,
) -> Option<(f32, f32)> {
    let (conv, next) = (&nodes[i], nodes.get(i + 1)?);
    let Op::Conv(_) = conv.op else { return None };
    let bounds = match next.op {
        Op::Unary(Unary::Relu) => (0.0, f32::INFINITY),
        Op::Clip {
            min: None,
            max: None,
        } => return None,
        Op::Clip { min, max } => (
            min.unwrap_or(f32::NEG_INFINITY),
            max.unwrap_or(f32::INFINITY),
        ),
        _ => return None,
    };
    let [output] = conv.outputs.as_slice() else {
        return None;
    };
    // A Clip's bounds read from tensors at run time stay inputs (constant ones became settings).
    let (first, rest) = next.inputs.split_first()?;
    let only_reader =
        first == output && rest.iter().all(String::is_empty) && last_read.contains(output);
    only_reader.then_some(bounds)
}

/// Runs one node.
pub(crate) fn eval(ctx: &Ctx) -> Result<Vec<OnnxValue>, OnnxError> {
    let one = |v: FloatValue| Ok(vec![OnnxValue::Float(v)]);
    match &ctx.node.op {
        Op::Conv(spec) => one(conv::conv(ctx, spec)?),
        Op::BatchNorm => one(conv::batch_norm(ctx)?),
        Op::Dropout => one(conv::dropout(ctx)?),
        Op::MaxPool(spec) => one(conv::pool(ctx, spec, true)?),
        Op::AveragePool(spec) => one(conv::pool(ctx, spec, false)?),
        Op::GlobalAveragePool => one(conv::global_pool(ctx, false)?),
        Op::GlobalMaxPool => one(conv::global_pool(ctx, true)?),
        Op::Gemm(spec) => one(math::gemm(ctx, spec)?),
        Op::MatMul => one(math::matmul(ctx)?),
        Op::LayerNorm { axis, epsilon } => math::layer_norm(ctx, *axis, *epsilon),
        Op::Softmax {
            axis,
            log,
            coerce_2d,
        } => one(math::softmax(ctx, *axis, *log, *coerce_2d)?),
        Op::Unary(u) => one(math::apply_unary(ctx, u)?),
        Op::Binary(b) => math::apply_binary(ctx, *b).map(|v| vec![v]),
        Op::Clip { min, max } => one(math::clip(ctx, *min, *max)?),
        Op::Reduce {
            kind,
            axes,
            keepdims,
            noop_with_empty_axes,
        } => one(math::reduce(
            ctx,
            *kind,
            axes.as_deref(),
            *keepdims,
            *noop_with_empty_axes,
        )?),
        _ => shape::eval(ctx),
    }
}

#[cfg(test)]
mod tests {
    use super::conv::{ConvSpec, Padding};
    use super::{Node, Op, Unary, fused_activation};

    fn node(op: Op, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: outputs[0].into(),
            op_type: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            op,
        }
    }

    fn conv(output: &str) -> Node {
        let spec = ConvSpec {
            strides: [1, 1],
            dilations: [1, 1],
            groups: 1,
            padding: Padding::Explicit([0; 4]),
        };
        node(Op::Conv(spec), &["x", "w"], &[output])
    }

    fn clip(min: Option<f32>, max: Option<f32>, inputs: &[&str]) -> Node {
        node(Op::Clip { min, max }, inputs, &["y"])
    }

    /// A Conv fuses with the next node where that is a Relu or a Clip with constant bounds and
    /// the Conv's output's only reader; never otherwise.
    #[test]
    fn finds_the_activations_to_fuse() {
        let last = ["c".to_string()];
        let fused = |next: Node, last: &[String]| fused_activation(&[conv("c"), next], last, 0);
        let relu = || node(Op::Unary(Unary::Relu), &["c"], &["y"]);
        assert_eq!(fused(relu(), &last), Some((0.0, f32::INFINITY)));
        let relu6 = clip(Some(0.0), Some(6.0), &["c", "", ""]);
        assert_eq!(fused(relu6, &last), Some((0.0, 6.0)));
        let lower = clip(Some(-1.0), None, &["c"]);
        assert_eq!(fused(lower, &last), Some((-1.0, f32::INFINITY)));
        // Not the only reader (a later node reads the Conv's output too, or it is a graph
        // output): the Conv's output must be stored.
        assert_eq!(fused(relu(), &[]), None);
        // A bound read from a tensor at run time, a Clip without bounds, another op, another
        // input.
        assert_eq!(fused(clip(Some(0.0), None, &["c", "", "m"]), &last), None);
        assert_eq!(fused(clip(None, None, &["c"]), &last), None);
        let sigmoid = node(Op::Unary(Unary::Sigmoid), &["c"], &["y"]);
        assert_eq!(fused(sigmoid, &last), None);
        assert_eq!(
            fused(node(Op::Unary(Unary::Relu), &["z"], &["y"]), &last),
            None
        );
        // Not a Conv first; no next node.
        let gemm = node(Op::MatMul, &["x", "w"], &["c"]);
        assert_eq!(fused_activation(&[gemm, relu()], &last, 0), None);
        assert_eq!(fused_activation(&[conv("c")], &last, 0), None);
    }
}
