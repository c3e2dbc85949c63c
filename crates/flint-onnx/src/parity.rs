//! Parity with PyTorch: a network run against the reference tensors PyTorch computed for it
//! (`NAME.reference.safetensors` beside `NAME.onnx`; see the fixtures' README for the keys).
//!
//! Shared by the integration tests and `cargo xtask onnx-parity`, so both check the same thing.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use burn::module::{ModuleVisitor, Param};
use burn::tensor::{Device, Tensor, TensorData};

use crate::{CutPoint, OnnxError, OnnxModel};

/// The largest relative error a parity check accepts, relative to the reference's largest
/// magnitude.
pub const TOLERANCE: f32 = 1e-4;

/// Reference files above this size are refused (the fixtures are a few MB).
const MAX_REFERENCE_BYTES: u64 = 1 << 30;

/// Why a parity check could not run.
#[derive(Debug, thiserror::Error)]
pub enum ParityError {
    /// The network did not load or run.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    /// The reference file is missing, too large or not safetensors.
    #[error("reference {path}: {detail}")]
    Reference {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// One network's parity figures.
#[derive(Clone, Debug)]
pub struct ParityRow {
    /// The file's stem.
    pub name: String,
    /// Operators used.
    pub operators: Vec<String>,
    /// Trainable parameters.
    pub parameters: usize,
    /// Time to read the file into a module.
    pub load_time: Duration,
    /// Relative error of the eval-mode output.
    pub eval: f32,
    /// Relative error of each reference gradient (`input` and initializer names).
    pub grads: Vec<(String, f32)>,
    /// Relative error of the train-mode output.
    pub train: f32,
    /// Largest relative error over the running statistics after one train-mode pass.
    pub running: f32,
    /// Number of running statistics compared.
    pub running_count: usize,
    /// Features per example before the automatic cut, if found.
    pub feature_size: Option<usize>,
}

impl ParityRow {
    /// The largest error of the row.
    pub fn worst(&self) -> f32 {
        self.grads
            .iter()
            .map(|g| g.1)
            .fold(self.eval.max(self.train).max(self.running), f32::max)
    }

    /// Whether every figure is within [`TOLERANCE`] (NaN fails).
    pub fn passes(&self) -> bool {
        let worst = self.worst();
        worst <= TOLERANCE && !worst.is_nan()
    }
}

impl fmt::Display for ParityRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grads: Vec<String> = self
            .grads
            .iter()
            .map(|(n, e)| format!("{n} {e:.1e}"))
            .collect();
        write!(
            f,
            "{} | {} | {} | {:.0} ms | {:.1e} | {} | {:.1e} | {:.1e} ({} tensors) | {}",
            self.name,
            self.operators.join(", "),
            self.parameters,
            self.load_time.as_secs_f64() * 1e3,
            self.eval,
            grads.join("; "),
            self.train,
            self.running,
            self.running_count,
            if self.passes() { "ok" } else { "FAIL" }
        )
    }
}

/// The reference tensors by key.
pub struct Reference(HashMap<String, (Vec<usize>, Vec<f32>)>);

impl Reference {
    /// Reads a safetensors file of float32 tensors.
    pub fn read(path: &Path) -> Result<Self, ParityError> {
        let bad = |detail: String| ParityError::Reference {
            path: path.to_path_buf(),
            detail,
        };
        let size = std::fs::metadata(path)
            .map_err(|e| bad(e.to_string()))?
            .len();
        if size > MAX_REFERENCE_BYTES {
            return Err(bad(format!(
                "{size} bytes is more than {MAX_REFERENCE_BYTES}"
            )));
        }
        let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let file = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let mut map = HashMap::new();
        for (name, view) in file.tensors() {
            if view.dtype() != safetensors::Dtype::F32 {
                return Err(bad(format!("{name} is {:?}, not F32", view.dtype())));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            map.insert(name, (view.shape().to_vec(), values));
        }
        Ok(Self(map))
    }

    /// The tensor `key` on `device`.
    pub fn tensor<const D: usize>(&self, key: &str, device: &Device) -> Option<Tensor<D>> {
        let (dims, values) = self.0.get(key)?;
        (dims.len() == D)
            .then(|| Tensor::from_data(TensorData::new(values.clone(), dims.clone()), device))
    }

    /// The values of `key`.
    pub fn values(&self, key: &str) -> Option<&[f32]> {
        self.0.get(key).map(|(_, v)| v.as_slice())
    }

    /// The keys starting with `prefix`, sorted.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        let mut k: Vec<String> = self
            .0
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        k.sort();
        k
    }
}

/// `max |a - b| / max |b|`; a length mismatch is infinite.
pub fn relative_error(actual: &[f32], expected: &[f32]) -> f32 {
    if actual.len() != expected.len() {
        return f32::INFINITY;
    }
    let scale = expected
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    let diff = actual.iter().zip(expected).fold(0f32, |m, (a, b)| {
        if (a - b).abs().is_nan() {
            f32::NAN
        } else {
            m.max((a - b).abs())
        }
    });
    diff / scale
}

/// A tensor's values as f32.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default()
}

/// Collects the gradients of the parameters whose path is one of `names`.
struct GradCollector<'a> {
    path: Vec<String>,
    names: &'a [String],
    grads: &'a burn::tensor::Gradients,
    found: HashMap<String, Vec<f32>>,
}

impl ModuleVisitor for GradCollector<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let path = self.path.join(".");
        if self.names.contains(&path)
            && let Some(g) = param.grad(self.grads)
        {
            self.found.insert(path, values(g));
        }
    }
}

/// The gradients of the parameters of `model` whose ONNX names are in `names`.
pub fn param_grads(
    model: &OnnxModel,
    grads: &burn::tensor::Gradients,
    names: &[String],
) -> HashMap<String, Vec<f32>> {
    let mut collector = GradCollector {
        path: Vec::new(),
        names,
        grads,
        found: HashMap::new(),
    };
    burn::module::Module::visit(model, &mut collector);
    collector.found
}

/// Runs `onnx` against `reference` on `device` (an autodiff device is made from it).
pub fn check(onnx: &Path, reference: &Path, device: &Device) -> Result<ParityRow, ParityError> {
    let device = device.clone().autodiff();
    let reference = Reference::read(reference)?;
    let start = Instant::now();
    let model = OnnxModel::load(onnx, &device)?;
    let load_time = start.elapsed();
    let summary = model.inspect();
    let missing = |key: &str| ParityError::Reference {
        path: onnx.with_extension("reference.safetensors"),
        detail: format!("no tensor {key}"),
    };
    let input: Tensor<4> = reference
        .tensor("input", &device)
        .ok_or_else(|| missing("input"))?;
    let probe: Tensor<2> = reference
        .tensor("probe", &device)
        .ok_or_else(|| missing("probe"))?;

    // Eval mode: running statistics, gradients on.
    let eval_model = model.clone().with_training(false);
    let x = input.clone().require_grad();
    let output: Tensor<2> = eval_model.try_forward(x.clone())?;
    let eval = relative_error(
        &values(output.clone()),
        reference
            .values("output")
            .ok_or_else(|| missing("output"))?,
    );
    let grads = (output * probe).sum().backward();
    let grad_keys = reference.keys("grad.");
    let names: Vec<String> = grad_keys
        .iter()
        .map(|k| k["grad.".len()..].to_string())
        .collect();
    let mut found = param_grads(&eval_model, &grads, &names);
    if let Some(g) = x.grad(&grads) {
        found.insert("input".into(), values(g));
    }
    let grads = grad_keys
        .iter()
        .zip(&names)
        .map(|(key, name)| {
            let err = match found.get(name) {
                Some(v) => relative_error(v, reference.values(key).unwrap()),
                None => f32::INFINITY,
            };
            (name.clone(), err)
        })
        .collect();

    // Train mode: batch statistics and one running-statistic update.
    let train_model = model.with_training(true);
    let output: Tensor<2> = train_model.try_forward(input)?;
    let train = relative_error(
        &values(output),
        reference
            .values("train.output")
            .ok_or_else(|| missing("train.output"))?,
    );
    let stats: HashMap<String, Vec<f32>> = train_model
        .running_stats()
        .into_iter()
        .map(|(n, t)| (n, values(t)))
        .collect();
    let stat_keys: Vec<String> = reference
        .keys("train.")
        .into_iter()
        .filter(|k| k != "train.output")
        .collect();
    let running = stat_keys
        .iter()
        .map(|k| match stats.get(&k["train.".len()..]) {
            Some(v) => relative_error(v, reference.values(k).unwrap()),
            None => f32::INFINITY,
        })
        .fold(0f32, |m, e| if e.is_nan() { f32::NAN } else { m.max(e) });
    let feature_size = train_model
        .cut(CutPoint::Auto)
        .ok()
        .and_then(|c| c.feature_size);
    Ok(ParityRow {
        name: onnx
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        operators: summary.operators.into_iter().map(|(o, _)| o).collect(),
        parameters: summary.parameters,
        load_time,
        eval,
        grads,
        train,
        running,
        running_count: stat_keys.len(),
        feature_size,
    })
}

/// Every `NAME.onnx` with a `NAME.reference.safetensors` in `dir`, sorted.
pub fn networks(dir: &Path) -> std::io::Result<Vec<(PathBuf, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "onnx") {
            let reference = path.with_extension("reference.safetensors");
            if reference.is_file() {
                out.push((path, reference));
            }
        }
    }
    out.sort();
    Ok(out)
}
