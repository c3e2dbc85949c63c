//! ONNX files read at run time as backbones: the network is cut before its classifier
//! (flint-onnx's [`OnnxModel::cut`]), its features flattened to `[batch, F]`, and its
//! parameters trained, frozen and checkpointed under their ONNX initializer names
//! (`backbone.Onnx.<initializer>`), batch norm nodes as flint's `BatchNorm`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::module::{
    Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper, ModuleVisitor,
};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};
use flint_onnx::{CutPoint, FloatValue, OnnxError, OnnxModel, OnnxValue};

use crate::backbone::{InputSpec, NormalizeSpec};
use crate::error::TransferError;

/// The feature half of a cut ONNX network, as a backbone.
///
/// A burn module whose parameters are the ONNX model's, under the same names (no path element
/// of its own): in a [`crate::TransferModel`] they are `backbone.Onnx.<initializer name>`.
#[derive(Clone, Debug)]
pub struct OnnxBackbone {
    model: OnnxModel,
    /// Where each initializer is first used in the graph (input to output).
    order: Arc<HashMap<String, usize>>,
    feature_tensor: String,
    feature_dim: usize,
}

impl OnnxBackbone {
    /// The cut network.
    pub fn model(&self) -> &OnnxModel {
        &self.model
    }

    /// The tensor of the original graph the features are read from.
    pub fn feature_tensor(&self) -> &str {
        &self.feature_tensor
    }

    /// Features per image.
    pub fn feature_dim(&self) -> usize {
        self.feature_dim
    }

    /// Features, flattened to `[batch, F]` when the cut tensor has more axes.
    ///
    /// # Shapes
    /// - images: `[batch, channels, size, size]`
    /// - output: `[batch, features]`
    pub fn try_features(&self, images: Tensor<4>) -> Result<Tensor<2>, OnnxError> {
        let batch = images.dims()[0];
        let out = self
            .model
            .run(vec![OnnxValue::Float(FloatValue::new(images))])?;
        let Some(OnnxValue::Float(f)) = out.into_iter().next() else {
            return Err(OnnxError::Input(format!(
                "the features at {} are not a float tensor",
                self.feature_tensor
            )));
        };
        flatten(f, batch, &self.feature_tensor)
    }

    /// [`try_features`](Self::try_features), panicking with its message (burn's `forward`
    /// convention; loading checks the network runs on the input it is given).
    ///
    /// # Shapes
    /// - images: `[batch, channels, size, size]`
    /// - output: `[batch, features]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        self.try_features(images).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The position of parameter `name` (an ONNX name, or a batch norm's running statistic or
    /// counter) from the input to the output, for grouping the backbone into stages.
    pub(crate) fn order_of(&self, name: &str) -> usize {
        if let Some(&i) = self.order.get(name) {
            return i;
        }
        // `bn1.num_batches_tracked` goes with `bn1.weight`.
        let parent = name.rsplit_once('.').map_or("", |(p, _)| p);
        self.order
            .iter()
            .filter(|(n, _)| !parent.is_empty() && n.starts_with(&format!("{parent}.")))
            .map(|(_, &i)| i)
            .min()
            .unwrap_or(usize::MAX)
    }
}

/// `[batch, ...]` to `[batch, product of the rest]`.
fn flatten(f: FloatValue, batch: usize, tensor: &str) -> Result<Tensor<2>, OnnxError> {
    let dims = f.dims();
    if dims.len() < 2 || dims[0] != batch {
        return Err(OnnxError::Input(format!(
            "the features at {tensor} have shape {dims:?}: not [batch = {batch}, ...]; cut at a \
             tensor that keeps the batch axis first"
        )));
    }
    let width: usize = dims[1..].iter().product();
    Ok(f.tensor.reshape([batch, width]))
}

impl Module for OnnxBackbone {
    fn collect_devices(&self, devices: Devices) -> Devices {
        self.model.collect_devices(devices)
    }

    fn fork(self, device: &Device) -> Self {
        Self {
            model: self.model.fork(device),
            ..self
        }
    }

    fn to_device(self, device: &Device) -> Self {
        Self {
            model: self.model.to_device(device),
            ..self
        }
    }

    fn train(self) -> Self {
        Self {
            model: self.model.train(),
            ..self
        }
    }

    fn valid(&self) -> Self {
        Self {
            model: self.model.valid(),
            ..self.clone()
        }
    }

    fn materialize(self) -> Self {
        Self {
            model: self.model.materialize(),
            ..self
        }
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.model.visit(visitor);
    }

    fn map<M: ModuleMapper>(self, mapper: &mut M) -> Self {
        Self {
            model: self.model.map(mapper),
            ..self
        }
    }
}

impl ModuleDisplayDefault for OnnxBackbone {
    fn content(&self, content: Content) -> Option<Content> {
        let s = self.model.inspect();
        content
            .set_top_level_type("OnnxBackbone")
            .add_formatted(&format!(
                "{} nodes, {} parameters, features {} ({})",
                s.operators.iter().map(|(_, n)| n).sum::<usize>(),
                s.parameters,
                self.feature_tensor,
                self.feature_dim
            ))
            .optional()
    }
}

impl ModuleDisplay for OnnxBackbone {}

/// How an ONNX file becomes a backbone.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnnxOptions {
    /// Where to cut: `None` for the automatic cut before the final `Gemm`/`MatMul`.
    pub cut: Option<String>,
    /// Square input side (default: the file's declared input when static, else 224).
    pub input_size: Option<u32>,
    /// Normalisation (default: ImageNet's for 3-channel inputs, none otherwise).
    pub normalize: Option<NormalizeSpec>,
}

/// An ONNX file as a backbone, ready for a new head.
pub struct OnnxLoaded {
    /// The features half.
    pub backbone: OnnxBackbone,
    /// What the network takes.
    pub input: InputSpec,
    /// The cut-off classifier as a linear layer, when it is one (a `Gemm` or `MatMul` and
    /// `Add`, possibly with a `Flatten` or `Reshape`): `None` when it computes anything else.
    pub classifier: Option<Linear>,
    /// The cut-off classifier as an ONNX module (features to the original outputs).
    pub head: OnnxModel,
}

/// Loads `path`, cuts it and checks that the features can be computed on the input it will be
/// given.
///
/// # Errors
/// An unreadable file or an unsupported node (flint-onnx's message), a cut point that is not
/// in the graph, an input size the network cannot take, a normalisation for another number of
/// channels.
pub fn load_onnx(
    path: &Path,
    options: &OnnxOptions,
    device: &Device,
) -> Result<OnnxLoaded, TransferError> {
    let (model, info) = flint_onnx::load_with_info(path, device)?;
    let file = path.display();
    let [input] = &info.inputs[..] else {
        return Err(TransferError::Invalid(format!(
            "{file}: the network takes {} inputs; a backbone takes one image tensor",
            info.inputs.len()
        )));
    };
    let declared = input.dims.clone().unwrap_or_default();
    if !declared.is_empty() && declared.len() != 4 {
        return Err(TransferError::Invalid(format!(
            "{file}: input {} has shape {}; a backbone takes [batch, channels, height, width]",
            input.name,
            input.shape_text()
        )));
    }
    let at = |i: usize| declared.get(i).copied().flatten();
    let channels = at(1).unwrap_or(3);
    let size = match options.input_size {
        Some(0) => {
            return Err(TransferError::Invalid(
                "--input-size must be at least 1".into(),
            ));
        }
        Some(n) => n,
        None => match (at(2), at(3)) {
            (Some(h), Some(w)) if h == w => h as u32,
            (Some(h), Some(w)) => {
                return Err(TransferError::Invalid(format!(
                    "{file}: input {} is {h}x{w}, not square; give the side with --input-size",
                    input.name
                )));
            }
            _ => 224,
        },
    };
    let normalize = match &options.normalize {
        Some(spec) => spec.for_channels(channels)?,
        None if channels == 3 => NormalizeSpec::ImageNet.for_channels(3)?,
        None => NormalizeSpec::None.for_channels(channels)?,
    };
    let input = InputSpec::new(channels, size, normalize)?;

    let point = match options.cut.as_deref() {
        None | Some("auto") => CutPoint::Auto,
        Some(name) => CutPoint::At(name.to_string()),
    };
    let cut = model.cut(point).map_err(|e| match e {
        OnnxError::NoClassifier(why) => TransferError::Invalid(format!(
            "{file}: cannot find the classifier to cut off ({why}); name the tensor or node \
             to read the features from with --cut NAME (`flint models inspect {file}`)"
        )),
        OnnxError::UnknownCut(name) => TransferError::Invalid(format!(
            "{file}: --cut {name}: no node or tensor of that name in the graph (`flint models \
             inspect {file}` lists the automatic cut point)"
        )),
        other => other.into(),
    })?;

    // One image through the features: the size they have, and a clear error now rather than a
    // panic in the middle of a run.
    let order = info
        .initializer_order
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), i))
        .collect();
    let mut backbone = OnnxBackbone {
        model: cut.features,
        order: Arc::new(order),
        feature_tensor: cut.feature_tensor.clone(),
        feature_dim: 0,
    };
    let probe = Tensor::<4>::zeros([1, channels, size as usize, size as usize], device);
    let features = backbone.valid().try_features(probe.inner()).map_err(|e| {
        TransferError::Invalid(format!(
            "{file}: the features at {} cannot be computed for {channels}x{size}x{size} images: \
             {e}",
            cut.feature_tensor
        ))
    })?;
    let feature_dim = features.dims()[1];
    if let Some(expected) = cut.feature_size.filter(|&n| n != feature_dim) {
        return Err(TransferError::Invalid(format!(
            "{file}: {size}x{size} images give {feature_dim} features at {} but the classifier \
             reads {expected}; use the input size the network was trained at (--input-size)",
            cut.feature_tensor
        )));
    }
    backbone.feature_dim = feature_dim;
    let classifier = linear_head(&cut.head, feature_dim, device);
    Ok(OnnxLoaded {
        backbone,
        input,
        classifier,
        head: cut.head,
    })
}

/// The widest features whose classifier [`linear_head`] reads off (ResNet-50's 2048 and
/// EfficientNet-B7's 2560 are below).
pub const MAX_PROBED_FEATURES: usize = 4096;

/// Unit vectors per run of the head in [`linear_head`].
const PROBE_BLOCK: usize = 512;

/// Operators an affine classifier is made of.
const AFFINE_OPS: &[&str] = &[
    "Gemm", "MatMul", "Add", "Flatten", "Reshape", "Identity", "Dropout",
];

/// The cut-off classifier as a `Linear(features, classes)`, read off the head by running it on
/// the unit vectors (an affine map is its values there), when its operators are affine and the
/// result reproduces the head on a random input.
pub fn linear_head(head: &OnnxModel, features: usize, device: &Device) -> Option<Linear> {
    let summary = head.inspect();
    // Reading the map off costs F x F x classes multiply-adds: wider features keep the head as
    // the ONNX module only.
    if features == 0 || features > MAX_PROBED_FEATURES {
        return None;
    }
    if summary
        .operators
        .iter()
        .any(|(op, _)| !AFFINE_OPS.contains(&op.as_str()))
        || head.input_names().len() != 1
        || head.output_names().len() != 1
    {
        return None;
    }
    let head = head.valid();
    let run = |x: Tensor<2>| head.try_forward::<2, 2>(x.inner()).ok();
    // The head's value at zero is the bias; at each unit vector, the bias plus a row of the
    // weight. Unit vectors go through in blocks, so the probe never holds an F x F matrix.
    let bias = run(Tensor::zeros([1, features], device))?;
    let [one, classes] = bias.dims();
    if one != 1 {
        return None;
    }
    let mut rows = Vec::new();
    for start in (0..features).step_by(PROBE_BLOCK) {
        let n = PROBE_BLOCK.min(features - start);
        let mut unit = vec![0.0f32; n * features];
        for r in 0..n {
            unit[r * features + start + r] = 1.0;
        }
        let out = run(Tensor::from_data(
            TensorData::new(unit, [n, features]),
            device,
        ))?;
        if out.dims() != [n, classes] {
            return None;
        }
        rows.push(out - bias.clone());
    }
    let weight = Tensor::cat(rows, 0);
    let x = Tensor::<2>::random([3, features], Distribution::Normal(0.0, 1.0), device).inner();
    let expected = run(x.clone())?;
    let affine = x.matmul(weight.clone()) + bias.clone();
    let scale = expected.clone().abs().max().into_scalar::<f32>().max(1e-12);
    let err = (affine - expected).abs().max().into_scalar::<f32>() / scale;
    if err.is_nan() || err > 1e-4 {
        return None;
    }
    let mut linear = LinearConfig::new(features, classes).init(device);
    let w: Vec<f32> = weight
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .ok()?;
    let b: Vec<f32> = bias.into_data().convert::<f32>().try_to_vec::<f32>().ok()?;
    linear.weight = linear
        .weight
        .map(|_| Tensor::from_data(TensorData::new(w, [features, classes]), device));
    linear.bias = linear
        .bias
        .map(|p| p.map(|_| Tensor::from_data(TensorData::new(b, [classes]), device)));
    Some(linear)
}
