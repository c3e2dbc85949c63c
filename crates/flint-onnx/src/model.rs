//! [`OnnxModel`]: the graph, its parameters as burn `Param`s, and burn's `Module` trait.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use burn::module::{Module, Param, RunningState};
use burn::tensor::{Device, Tensor, TensorData};
use flint_layers::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
use onnx_ir::ModelProto;

use crate::error::OnnxError;
use crate::ops::{self, Ctx, Node, Op};
use crate::proto::{HostTensor, take_tensor};
use crate::value::{FloatValue, OnnxValue};

/// A trainable weight at its ONNX rank.
#[derive(Clone, Debug)]
pub(crate) enum Weight {
    R1(Param<Tensor<1>>),
    R2(Param<Tensor<2>>),
    R3(Param<Tensor<3>>),
    R4(Param<Tensor<4>>),
    R5(Param<Tensor<5>>),
}

macro_rules! each_weight {
    ($w:expr, $p:ident => $e:expr) => {
        match $w {
            Weight::R1($p) => $e,
            Weight::R2($p) => $e,
            Weight::R3($p) => $e,
            Weight::R4($p) => $e,
            Weight::R5($p) => $e,
        }
    };
}
macro_rules! map_weight {
    ($w:expr, $p:ident => $e:expr) => {
        match $w {
            Weight::R1($p) => Weight::R1($e),
            Weight::R2($p) => Weight::R2($e),
            Weight::R3($p) => Weight::R3($e),
            Weight::R4($p) => Weight::R4($e),
            Weight::R5($p) => Weight::R5($e),
        }
    };
}

mod cut;
mod module_impl;

impl Weight {
    fn new(data: Vec<f32>, dims: &[usize], device: &Device) -> Option<Self> {
        let d = TensorData::new(data, dims.to_vec());
        Some(match dims.len() {
            1 => Self::R1(Param::from_data(d, device)),
            2 => Self::R2(Param::from_data(d, device)),
            3 => Self::R3(Param::from_data(d, device)),
            4 => Self::R4(Param::from_data(d, device)),
            5 => Self::R5(Param::from_data(d, device)),
            _ => return None,
        })
    }

    fn value(&self) -> FloatValue {
        each_weight!(self, p => FloatValue::new(p.val()))
    }

    fn numel(&self) -> usize {
        each_weight!(self, p => p.shape().num_elements())
    }
}

/// A `BatchNormalization` node as flint's [`BatchNorm`], with the ONNX names of its tensors.
#[derive(Clone, Debug)]
struct BnSlot {
    node: String,
    /// scale, bias, mean, var, and the prefix for the count and the training flag.
    names: [String; 4],
    prefix: String,
    layer: BatchNorm,
}

#[derive(Clone, Debug)]
struct DropoutSlot {
    node: String,
    layer: Dropout,
}

/// The immutable part: the nodes and the constants.
#[derive(Debug)]
struct Graph {
    nodes: Vec<Node>,
    inputs: Vec<String>,
    outputs: Vec<String>,
    constants: HashMap<String, HostTensor>,
    /// Tensors no later node reads, dropped after each node.
    drops: Vec<Vec<String>>,
    opset: i64,
}

/// An ONNX network as a burn module.
///
/// Every float initializer the graph uses as data (convolution and `Gemm`/`MatMul` weights,
/// biases, normalisation scales, layer-scale factors) is a `Param`, visited under its ONNX name
/// split at the dots (`layer1.0.conv1.weight` is parameter `weight` of module
/// `layer1` / `0` / `conv1`), so `ParamGroup::from_path`, `freeze_group` and burn's records
/// see torchvision's state-dict keys. `BatchNormalization` runs as flint's [`BatchNorm`]
/// (batch statistics and PyTorch's running-statistic update while training, running
/// statistics in inference and when frozen); its running mean and variance are `RunningState`s
/// under their initializer names. `Dropout` is flint's [`Dropout`]. Integer initializers and
/// float ones used only as settings (`Clip` bounds, `Reshape` shapes) stay constants.
#[derive(Clone, Debug)]
pub struct OnnxModel {
    params: Vec<(String, Weight)>,
    bns: Vec<BnSlot>,
    dropouts: Vec<DropoutSlot>,
    graph: Arc<Graph>,
    param_index: Arc<HashMap<String, usize>>,
    /// Whether a `Conv` followed by its only reader, a `Relu` or a `Clip` with constant bounds,
    /// runs as one fused step (see [`OnnxModel::with_fusion`]).
    fuse: bool,
}

/// What [`OnnxModel::inspect`] reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Operators used, with their node counts, sorted by name.
    pub operators: Vec<(String, usize)>,
    /// Trainable parameters (running statistics excluded).
    pub parameters: usize,
    pub opset: i64,
    /// The node an automatic cut removes (the last `Gemm`/`MatMul`) and the feature size before it.
    pub auto_cut: Option<(String, Option<usize>)>,
    /// Initializers kept as constants (not trainable), with their shapes.
    pub constants: Vec<(String, Vec<usize>)>,
}

/// Where [`OnnxModel::cut`] splits the graph.
#[derive(Clone, Debug)]
pub enum CutPoint {
    /// Before the final classifier: the last `Gemm` or `MatMul` and everything after it.
    Auto,
    /// At a tensor (its value is the features) or a node (its output is the features).
    At(String),
}

/// The two halves of a cut network.
#[derive(Clone, Debug)]
pub struct Cut {
    /// Input to features.
    pub features: OnnxModel,
    /// Features to the original output (the cut-off classifier).
    pub head: OnnxModel,
    /// The name of the feature tensor.
    pub feature_tensor: String,
    /// Features per example, when the classifier's weight tells it.
    pub feature_size: Option<usize>,
}

pub(crate) fn is_training_bn(bn: &BatchNorm, device: &Device) -> bool {
    flint_layers::is_training(&bn.training, device)
}

impl OnnxModel {
    /// Reads an ONNX file into a module on `device`.
    pub fn load(path: impl AsRef<Path>, device: &Device) -> Result<Self, OnnxError> {
        let path = path.as_ref();
        let model = crate::proto::read_model(path)?;
        // protobuf cannot tell a file cut at a field boundary from a whole one: an inconsistent
        // graph read from a file is reported as the damaged file it most likely is.
        Self::from_proto(model, device).map_err(|e| match e {
            OnnxError::Invalid(reason) => OnnxError::NotOnnx {
                path: path.to_path_buf(),
                reason,
            },
            other => other,
        })
    }

    /// Builds the module from a decoded model (consumed: its weight bytes are freed as read).
    pub fn from_proto(mut model: ModelProto, device: &Device) -> Result<Self, OnnxError> {
        let opset = model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map_or(1, |o| o.version);
        let graph = model
            .graph
            .as_mut()
            .ok_or_else(|| OnnxError::Invalid("no graph".into()))?;
        let mut nodes = Vec::with_capacity(graph.node.len());
        for n in &graph.node {
            nodes.push(Node {
                name: ops::display_name(n),
                op_type: n.op_type.clone(),
                inputs: n.input.clone(),
                outputs: n.output.clone(),
                op: ops::parse(n, opset)?,
            });
        }
        let init_names: HashSet<String> =
            graph.initializer.iter().map(|t| t.name.clone()).collect();
        let inputs: Vec<String> = graph
            .input
            .iter()
            .map(|i| i.name.clone())
            .filter(|n| !init_names.contains(n))
            .collect();
        let outputs: Vec<String> = graph.output.iter().map(|o| o.name.clone()).collect();
        // Half-precision and other types are held as f32 here: refuse inputs declared so.
        for i in graph.input.iter().filter(|i| inputs.contains(&i.name)) {
            if let Some(t) = i.type_.as_ref().filter(|t| t.has_tensor_type()) {
                let elem = t.tensor_type().elem_type;
                if !matches!(elem, 0..=7 | 9 | 11..=13) {
                    return Err(OnnxError::UnsupportedTensor {
                        name: i.name.clone(),
                        detail: format!("graph input of element type {elem} is not supported"),
                    });
                }
            }
        }

        // How each initializer is used decides what it becomes.
        let mut data_use: HashSet<&str> = HashSet::new();
        let mut bn_use: HashMap<&str, &Node> = HashMap::new();
        for n in &nodes {
            for (i, input) in n.inputs.iter().enumerate() {
                if matches!(n.op, Op::BatchNorm) && i >= 1 {
                    bn_use.insert(input, n);
                } else if !ops::is_setting_input(&n.op_type, i) {
                    data_use.insert(input);
                }
            }
        }
        let mut tensors: HashMap<String, HostTensor> = HashMap::new();
        let mut params = Vec::new();
        for t in graph.initializer.iter_mut() {
            let name = t.name.clone();
            let host = take_tensor(t)?;
            if bn_use.contains_key(name.as_str()) {
                if data_use.contains(name.as_str()) {
                    return Err(OnnxError::UnsupportedTensor {
                        name,
                        detail: "is used both by a BatchNormalization and by another node".into(),
                    });
                }
                tensors.insert(name, host);
                continue;
            }
            match host {
                HostTensor::Float { dims, data }
                    if !dims.is_empty() && data_use.contains(name.as_str()) =>
                {
                    let w = Weight::new(data, &dims, device).ok_or_else(|| {
                        OnnxError::UnsupportedTensor {
                            name: name.clone(),
                            detail: format!("rank {} weights are not supported", dims.len()),
                        }
                    })?;
                    params.push((name, w));
                }
                other => {
                    tensors.insert(name, other);
                }
            }
        }

        let mut bns = Vec::new();
        let mut dropouts = Vec::new();
        for (index, n) in nodes.iter().enumerate() {
            match n.op {
                Op::BatchNorm => bns.push(batch_norm_slot(
                    &graph.node[index],
                    n,
                    &mut tensors,
                    device,
                )?),
                Op::Dropout => {
                    let proto = &graph.node[index];
                    let attr = proto
                        .attribute
                        .iter()
                        .find(|a| a.name == "ratio")
                        .map(|a| a.f);
                    let input = match n.inputs.get(1).filter(|s| !s.is_empty()) {
                        None => None,
                        Some(name) => match tensors.get(name) {
                            Some(HostTensor::Float { data, .. }) if data.len() == 1 => {
                                Some(data[0])
                            }
                            _ => return Err(unsupported(n, "ratio", "must be a constant")),
                        },
                    };
                    let ratio = input.or(attr).unwrap_or(0.5);
                    let layer = DropoutConfig::new(ratio as f64)
                        .try_init()
                        .map_err(|e| unsupported(n, "ratio", e.to_string()))?;
                    dropouts.push(DropoutSlot {
                        node: n.name.clone(),
                        layer,
                    });
                }
                _ => {}
            }
        }
        // Clip bounds given as constant inputs (opset 11 and later) become settings, so the
        // forward pass neither builds nor reads back a tensor for them.
        for n in nodes.iter_mut() {
            if let Op::Clip { min, max } = &mut n.op {
                for (slot, bound) in [(1, min), (2, max)] {
                    let Some(name) = n.inputs.get(slot).filter(|s| !s.is_empty()) else {
                        continue;
                    };
                    if let Some(HostTensor::Float { data, .. }) = tensors.get(name)
                        && data.len() == 1
                    {
                        *bound = Some(data[0]);
                        n.inputs[slot] = String::new();
                    }
                }
            }
        }
        // Constant nodes are values too.
        let param_index: HashMap<String, usize> = params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        Self::assemble(
            params,
            bns,
            dropouts,
            nodes,
            inputs,
            outputs,
            tensors,
            opset,
            param_index,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        params: Vec<(String, Weight)>,
        bns: Vec<BnSlot>,
        dropouts: Vec<DropoutSlot>,
        nodes: Vec<Node>,
        inputs: Vec<String>,
        outputs: Vec<String>,
        constants: HashMap<String, HostTensor>,
        opset: i64,
        param_index: HashMap<String, usize>,
    ) -> Result<Self, OnnxError> {
        // Check the order (ONNX graphs are topologically sorted) and find each tensor's last use.
        let mut known: HashSet<&str> = inputs.iter().map(String::as_str).collect();
        known.extend(constants.keys().map(String::as_str));
        known.extend(param_index.keys().map(String::as_str));
        let mut last: HashMap<&str, usize> = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            for input in n.inputs.iter().filter(|s| !s.is_empty()) {
                if !known.contains(input.as_str()) && !matches!(n.op, Op::BatchNorm) {
                    return Err(OnnxError::Invalid(format!(
                        "node {:?} reads {input:?} before any node writes it",
                        n.name
                    )));
                }
                last.insert(input, i);
            }
            known.extend(n.outputs.iter().map(String::as_str));
        }
        for o in &outputs {
            if !known.contains(o.as_str()) {
                return Err(OnnxError::Invalid(format!(
                    "output {o:?} is never computed"
                )));
            }
        }
        let mut drops = vec![Vec::new(); nodes.len()];
        for (name, i) in last {
            if !outputs.iter().any(|o| o == name)
                && !constants.contains_key(name)
                && !param_index.contains_key(name)
            {
                drops[i].push(name.to_string());
            }
        }
        Ok(Self {
            params,
            bns,
            dropouts,
            graph: Arc::new(Graph {
                nodes,
                inputs,
                outputs,
                constants,
                drops,
                opset,
            }),
            param_index: Arc::new(param_index),
            fuse: true,
        })
    }

    /// Turns the fusion of each `Conv` with the activation after it on (the default) or off.
    ///
    /// A `Conv` whose output is read only by the next node, a `Relu` or a `Clip` with constant
    /// bounds (ReLU6), runs with it as one step ([`flint_layers::conv2d_clamp`]): the
    /// activation costs no pass of its own over the tensor, and the convolution's output before
    /// the activation is never stored. Values are the same; gradients too, except where the
    /// convolution's output equals a `Clip` bound exactly (there the fused step passes no
    /// gradient, burn's clamp does; for `Relu` both pass none). Off, every node runs on its own,
    /// as the file lists them.
    pub fn with_fusion(self, fuse: bool) -> Self {
        Self { fuse, ..self }
    }

    pub(crate) fn batch_norm(&self, node: &str) -> &BatchNorm {
        &self
            .bns
            .iter()
            .find(|b| b.node == node)
            .expect("batch norm slot")
            .layer
    }

    pub(crate) fn dropout(&self, node: &str) -> &Dropout {
        &self
            .dropouts
            .iter()
            .find(|d| d.node == node)
            .expect("dropout slot")
            .layer
    }

    /// The graph's input names (initializers excluded).
    pub fn input_names(&self) -> &[String] {
        &self.graph.inputs
    }

    /// The graph's output names.
    pub fn output_names(&self) -> &[String] {
        &self.graph.outputs
    }

    /// The names of the trainable parameters, in file order, batch-norm scales and biases last.
    pub fn param_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.params.iter().map(|(n, _)| n.clone()).collect();
        for b in &self.bns {
            names.extend(b.names[..2].iter().cloned());
        }
        names
    }

    /// Runs the graph on named inputs (in [`input_names`](Self::input_names) order) and returns
    /// its outputs.
    pub fn run(&self, inputs: Vec<OnnxValue>) -> Result<Vec<OnnxValue>, OnnxError> {
        let g = &self.graph;
        if inputs.len() != g.inputs.len() {
            return Err(OnnxError::Input(format!(
                "{} inputs given, the graph has {}",
                inputs.len(),
                g.inputs.len()
            )));
        }
        let device = match inputs.iter().find_map(|v| match v {
            OnnxValue::Float(f) => Some(f.tensor.device()),
            OnnxValue::Int(_) => None,
        }) {
            Some(d) => d,
            None => self.devices().first().cloned().unwrap_or_default(),
        };
        let mut values: HashMap<&str, OnnxValue> =
            g.inputs.iter().map(String::as_str).zip(inputs).collect();
        // The activation node computed with the Conv before it (see `ops::fused_activation`).
        let mut fused = None;
        for (i, node) in g.nodes.iter().enumerate() {
            if fused == Some(i) {
                // Its only input, the Conv's output, was never stored.
                continue;
            }
            // Values read for the last time are moved into the node, not cloned: a tensor with
            // one owner can be updated in place by the backend, and it is freed as soon as the
            // node is done with it.
            let mut last: HashMap<&str, OnnxValue> = g.drops[i]
                .iter()
                .filter_map(|d| values.remove_entry(d.as_str()))
                .collect();
            let args = node
                .inputs
                .iter()
                .enumerate()
                .map(|(k, name)| {
                    if name.is_empty() {
                        return None;
                    }
                    if last.contains_key(name.as_str()) {
                        // The same tensor may feed a node twice (`Mul(x, x)`).
                        let again = node.inputs[k + 1..].contains(name);
                        return if again {
                            last.get(name.as_str()).cloned()
                        } else {
                            last.remove(name.as_str())
                        };
                    }
                    if let Some(v) = values.get(name.as_str()) {
                        return Some(v.clone());
                    }
                    if let Some(&p) = self.param_index.get(name) {
                        return Some(OnnxValue::Float(self.params[p].1.value()));
                    }
                    match g.constants.get(name)? {
                        HostTensor::Int(v) => Some(OnnxValue::Int(v.clone())),
                        HostTensor::Float { dims, data } => {
                            FloatValue::from_values(data.clone(), dims, &device)
                                .map(OnnxValue::Float)
                        }
                    }
                })
                .collect();
            let ctx = Ctx {
                model: self,
                node,
                inputs: args,
                device: &device,
            };
            let activation = match g.drops.get(i + 1) {
                Some(last_read) if self.fuse => ops::fused_activation(&g.nodes, last_read, i),
                _ => None,
            };
            let (outs, names) = match activation {
                Some((min, max)) => {
                    fused = Some(i + 1);
                    let out = ops::eval_conv_clamp(&ctx, min, max)?;
                    (vec![out], &g.nodes[i + 1].outputs)
                }
                None => (ops::eval(&ctx)?, &node.outputs),
            };
            for (name, v) in names.iter().zip(outs) {
                if !name.is_empty() {
                    values.insert(name, v);
                }
            }
        }
        g.outputs
            .iter()
            .map(|o| {
                values
                    .remove(o.as_str())
                    .ok_or_else(|| OnnxError::Invalid(format!("output {o:?} was not computed")))
            })
            .collect()
    }

    /// Runs a one-input, one-output graph on a float tensor.
    ///
    /// # Shapes
    ///
    /// - input: the graph's input, e.g. `[batch, 3, 224, 224]`
    /// - output: the graph's output at rank `DO`, e.g. `[batch, classes]`
    pub fn try_forward<const DI: usize, const DO: usize>(
        &self,
        input: Tensor<DI>,
    ) -> Result<Tensor<DO>, OnnxError> {
        let out = self.run(vec![OnnxValue::Float(FloatValue::new(input))])?;
        match out.into_iter().next() {
            Some(OnnxValue::Float(f)) => {
                let rank = f.rank;
                f.to_rank::<DO>().ok_or_else(|| {
                    OnnxError::Input(format!("the output has rank {rank}, not {DO}"))
                })
            }
            _ => Err(OnnxError::Input("the output is not a float tensor".into())),
        }
    }

    /// [`try_forward`](Self::try_forward), panicking with its message on error (burn's
    /// `forward` convention).
    ///
    /// # Shapes
    ///
    /// - input: the graph's input, e.g. `[batch, 3, 224, 224]`
    /// - output: the graph's output at rank `DO`, e.g. `[batch, classes]`
    pub fn forward<const DI: usize, const DO: usize>(&self, input: Tensor<DI>) -> Tensor<DO> {
        self.try_forward(input).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn unsupported(n: &Node, attribute: &str, detail: impl Into<String>) -> OnnxError {
    OnnxError::UnsupportedAttribute {
        node: n.name.clone(),
        op: n.op_type.clone(),
        attribute: attribute.into(),
        detail: detail.into(),
    }
}

/// flint's [`BatchNorm`] from the node's initializers: PyTorch's momentum is `1 - ONNX's`.
fn batch_norm_slot(
    proto: &onnx_ir::NodeProto,
    n: &Node,
    tensors: &mut HashMap<String, HostTensor>,
    device: &Device,
) -> Result<BnSlot, OnnxError> {
    let attr = |key: &str, default: f32| {
        proto
            .attribute
            .iter()
            .find(|a| a.name == key)
            .map_or(default, |a| a.f)
    };
    let (eps, momentum) = (attr("epsilon", 1e-5), attr("momentum", 0.9));
    let mut vectors = Vec::new();
    for (i, what) in ["scale", "B", "input_mean", "input_var"].iter().enumerate() {
        let name = n.inputs.get(i + 1).cloned().unwrap_or_default();
        match tensors.remove(&name) {
            Some(HostTensor::Float { dims, data }) if dims.len() == 1 => vectors.push((name, data)),
            _ => {
                return Err(unsupported(
                    n,
                    what,
                    "must be a one-dimensional float initializer",
                ));
            }
        }
    }
    let c = vectors[0].1.len();
    if vectors.iter().any(|(_, v)| v.len() != c) {
        return Err(unsupported(n, "scale", "and B, mean, var differ in length"));
    }
    let layer = BatchNormConfig::new(c)
        .with_eps(eps as f64)
        .with_momentum(Some(1.0 - momentum as f64))
        .try_init(device)
        .map_err(|e| unsupported(n, "epsilon", e.to_string()))?;
    let t = |v: &[f32]| Tensor::<1>::from_data(TensorData::new(v.to_vec(), [c]), device);
    // `RunningState::new`, not `update`: an update is only seen by module visitors (records,
    // burn-store snapshots) after a sync, so a checkpoint would hold the initial 0 and 1.
    let layer = BatchNorm {
        gamma: Some(Param::from_tensor(t(&vectors[0].1))),
        beta: Some(Param::from_tensor(t(&vectors[1].1))),
        running_mean: Some(RunningState::new(t(&vectors[2].1))),
        running_var: Some(RunningState::new(t(&vectors[3].1))),
        ..layer
    };
    let names: [String; 4] = std::array::from_fn(|i| vectors[i].0.clone());
    // torchvision names: `bn1.running_mean` gives the prefix `bn1.` for the count and the flag.
    let prefix = names[2]
        .strip_suffix("running_mean")
        .map_or_else(|| format!("{}.", n.name), str::to_string);
    Ok(BnSlot {
        node: n.name.clone(),
        names,
        prefix,
        layer,
    })
}
