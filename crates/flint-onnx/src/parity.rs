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
    /// The gradients above [`TOLERANCE`] in f32, rechecked in f64 (see [`recheck`]); filled by
    /// the caller, since f64 needs a device configured for it.
    pub rechecks: Vec<Recheck>,
}

/// A gradient that disagreed with the reference in f32, computed again by flint in f64.
///
/// A network of ReLUs and max pooling is not differentiable where a ReLU input is 0 or a
/// window's maximum is shared. When one such decision lies within f32 rounding of the kink,
/// flint and PyTorch can take opposite sides in f32 and every gradient upstream of it differs
/// by that one element's contribution, though both are exact for their own forward pass. In f64
/// the decision is no longer in doubt: flint's f64 gradient agreeing with the reference shows
/// the difference is rounding, not a wrong operator.
///
/// When the f64 gradient still disagrees, a central difference of flint's f64 loss along the
/// difference of the two gradients says which one is the derivative.
#[derive(Clone, Debug)]
pub struct Recheck {
    /// The gradient's name (`input` or an initializer).
    pub name: String,
    /// flint's f64 gradient against the reference.
    pub error: f32,
    /// The central difference, when the f64 gradient disagrees.
    pub slopes: Option<Slopes>,
}

/// Slopes of the loss along `d = flint's gradient - reference`, normalised.
#[derive(Clone, Copy, Debug)]
pub struct Slopes {
    /// Central difference of flint's f64 loss.
    pub difference: f64,
    /// `<flint's gradient, d>`.
    pub flint: f64,
    /// `<reference gradient, d>`.
    pub reference: f64,
}

impl Slopes {
    /// Whether the central difference is the flint gradient's slope and not the reference's
    /// (a hundred times closer to it).
    pub fn sides_with_flint(&self) -> bool {
        (self.difference - self.flint).abs() * 100.0 < (self.difference - self.reference).abs()
    }
}

impl Recheck {
    /// Whether the recheck clears flint: its f64 gradient is within [`TOLERANCE`] of the
    /// reference, or the central difference shows the reference is not the derivative.
    pub fn clears_flint(&self) -> bool {
        self.error <= TOLERANCE || self.slopes.is_some_and(|s| s.sides_with_flint())
    }
}

impl ParityRow {
    /// The largest error of the row.
    pub fn worst(&self) -> f32 {
        self.grads
            .iter()
            .map(|g| g.1)
            .fold(self.eval.max(self.train).max(self.running), f32::max)
    }

    /// Whether every figure is within [`TOLERANCE`] (NaN fails), a gradient above it passing
    /// only when its f64 [`Recheck`] clears flint.
    pub fn passes(&self) -> bool {
        let within = |e: f32| e <= TOLERANCE && !e.is_nan();
        within(self.eval.max(self.train).max(self.running))
            && !self.eval.is_nan()
            && !self.train.is_nan()
            && !self.running.is_nan()
            && self.grads.iter().all(|(name, e)| {
                within(*e)
                    || self
                        .rechecks
                        .iter()
                        .any(|r| &r.name == name && r.clears_flint())
            })
    }

    /// The gradients above [`TOLERANCE`] in f32.
    pub fn failing_grads(&self) -> Vec<String> {
        self.grads
            .iter()
            .filter(|(_, e)| e.is_nan() || *e > TOLERANCE)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

impl fmt::Display for ParityRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let grads: Vec<String> = self
            .grads
            .iter()
            .map(|(n, e)| match self.rechecks.iter().find(|r| &r.name == n) {
                None => format!("{n} {e:.1e}"),
                Some(r) => match r.slopes {
                    None => format!("{n} {e:.1e} (f64: {:.1e})", r.error),
                    Some(s) => format!(
                        "{n} {e:.1e} (f64: {:.1e}; central difference {:.4e}, flint {:.4e}, reference {:.4e}: {})",
                        r.error,
                        s.difference,
                        s.flint,
                        s.reference,
                        if s.sides_with_flint() {
                            "the reference is wrong"
                        } else {
                            "flint is wrong"
                        }
                    ),
                },
            })
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
            match (self.passes(), self.rechecks.is_empty()) {
                (false, _) => "FAIL",
                (true, true) => "ok",
                (true, false) => "ok after the f64 recheck",
            }
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
        rechecks: Vec::new(),
    })
}

/// Eval-mode output and gradients of `sum(output * probe)` for the reference's `grad.` keys.
fn eval_gradients(
    model: &OnnxModel,
    reference: &Reference,
    device: &Device,
    missing: impl Fn(&str) -> ParityError,
) -> Result<(Tensor<2>, HashMap<String, Vec<f32>>), ParityError> {
    let input: Tensor<4> = reference
        .tensor("input", device)
        .ok_or_else(|| missing("input"))?;
    let probe: Tensor<2> = reference
        .tensor("probe", device)
        .ok_or_else(|| missing("probe"))?;
    let x = input.require_grad();
    let output: Tensor<2> = model.try_forward(x.clone())?;
    let grads = (output.clone() * probe).sum().backward();
    let names: Vec<String> = reference
        .keys("grad.")
        .iter()
        .map(|k| k["grad.".len()..].to_string())
        .collect();
    let mut found = param_grads(model, &grads, &names);
    if let Some(g) = x.grad(&grads) {
        found.insert("input".into(), values(g));
    }
    Ok((output, found))
}

/// Adds `delta` (flat, f64) to the parameter at `name`.
struct Nudge<'a> {
    path: Vec<String>,
    name: &'a str,
    delta: &'a [f64],
    device: &'a Device,
}

impl burn::module::ModuleMapper for Nudge<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        if self.path.join(".") != self.name {
            return param;
        }
        let (delta, device) = (self.delta, self.device);
        param.map(|t| {
            let dims = t.dims();
            let d = Tensor::<D>::from_data(TensorData::new(delta.to_vec(), dims), device);
            t + d
        })
    }
}

/// Recomputes the gradients `names` with flint in f64 and, where they still disagree with the
/// reference, takes a central difference of the f64 loss along the disagreement.
///
/// `device` must create f64 tensors (flex configured with `FloatDType::F64` before any tensor
/// exists on it), so this runs in a process of its own (`onnx_parity --f64`).
pub fn recheck(
    onnx: &Path,
    reference_path: &Path,
    names: &[String],
    device: &Device,
) -> Result<Vec<Recheck>, ParityError> {
    let reference = Reference::read(reference_path)?;
    let missing = |key: &str| ParityError::Reference {
        path: reference_path.to_path_buf(),
        detail: format!("no tensor {key}"),
    };
    let plain = device.clone();
    let device = device.clone().autodiff();
    let model = OnnxModel::load(onnx, &device)?.with_training(false);
    let (_, found) = eval_gradients(&model, &reference, &device, missing)?;
    let flat = OnnxModel::load(onnx, &plain)?.with_training(false);
    let input: Tensor<4> = reference
        .tensor("input", &plain)
        .ok_or_else(|| missing("input"))?;
    let probe: Tensor<2> = reference
        .tensor("probe", &plain)
        .ok_or_else(|| missing("probe"))?;
    let loss = |model: &OnnxModel, input: Tensor<4>| -> Result<f64, ParityError> {
        let out: Tensor<2> = model.try_forward(input)?;
        Ok((out * probe.clone())
            .sum()
            .into_data()
            .convert::<f64>()
            .try_to_vec::<f64>()
            .unwrap_or_default()
            .first()
            .copied()
            .unwrap_or(f64::NAN))
    };
    let mut out = Vec::new();
    for name in names {
        let (Some(ours), Some(theirs)) =
            (found.get(name), reference.values(&format!("grad.{name}")))
        else {
            continue;
        };
        let error = relative_error(ours, theirs);
        let slopes = if error <= TOLERANCE {
            None
        } else {
            // The unit direction from the reference to flint.
            let d: Vec<f64> = ours
                .iter()
                .zip(theirs)
                .map(|(a, b)| *a as f64 - *b as f64)
                .collect();
            let norm = d.iter().map(|v| v * v).sum::<f64>().sqrt();
            let d: Vec<f64> = d.iter().map(|v| v / norm).collect();
            let dot = |g: &[f32]| g.iter().zip(&d).map(|(a, b)| *a as f64 * b).sum::<f64>();
            // f64 leaves ~1e-13 of noise in the loss: a step of 1e-6 resolves slopes to ~1e-7
            // and crosses few ReLU or pooling decisions.
            let h = 1e-6;
            let at = |sign: f64| -> Result<f64, ParityError> {
                let step: Vec<f64> = d.iter().map(|v| v * h * sign).collect();
                if name == "input" {
                    let dims = input.dims();
                    let x =
                        input.clone() + Tensor::<4>::from_data(TensorData::new(step, dims), &plain);
                    loss(&flat, x)
                } else {
                    let nudged = burn::module::Module::map(
                        flat.clone(),
                        &mut Nudge {
                            path: Vec::new(),
                            name,
                            delta: &step,
                            device: &plain,
                        },
                    );
                    loss(&nudged, input.clone())
                }
            };
            Some(Slopes {
                difference: (at(1.0)? - at(-1.0)?) / (2.0 * h),
                flint: dot(ours),
                reference: dot(theirs),
            })
        };
        out.push(Recheck {
            name: name.clone(),
            error,
            slopes,
        });
    }
    Ok(out)
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
