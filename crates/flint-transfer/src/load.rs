//! Pretrained weights from PyTorch (`.pt`/`.pth`) and safetensors files into flint's own
//! module definitions, through burn-store, with a report of what was loaded.
//!
//! PyTorch's conventions are translated on the way in (Linear weights transposed, batch norm's
//! `weight`/`bias` as `gamma`/`beta`). Keys can be renamed with regular expressions, like
//! `load_state_dict` after a `re.sub`. Every tensor the model has must come from the file unless
//! missing ones are allowed (then they keep their initial values); tensors of the file the model
//! does not use are listed, not an error (a classifier being replaced, an optimiser's extras).
//!
//! Half-precision (`float16`, `bfloat16`) and double (`float64`) tensors are converted to
//! `float32`, the precision of flint's models, and listed in the report; a tensor of integers or
//! booleans where the model has floats is an error naming it. Only regular files are read (a
//! symbolic link is followed to one), so a FIFO or a device named like a weight file is refused
//! instead of read without end.

use std::fmt;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use burn::module::Module;
use burn::tensor::DType;
use burn_store::burn_pack::{Error as PackError, Tensor as PackTensor};
use burn_store::{
    ApplyError, ModuleAdapter, ModuleContext, ModuleSnapshot, ModuleStore, PathFilter,
    PyTorchToBurnAdapter, PytorchStore, SafetensorsStore, bridge,
};
use flint_io::FsError;

use crate::error::TransferError;

/// How a weight file is matched to a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `(regex, replacement)` pairs applied to the file's keys, in order (`$1` refers to
    /// groups).
    pub remap: Vec<(String, String)>,
    /// Leave model tensors the file lacks at their initial values instead of failing.
    pub allow_missing: bool,
    /// For PyTorch checkpoints that nest the state dict (`{"state_dict": {...}}`).
    pub top_level_key: Option<String>,
}

impl LoadOptions {
    /// Strict loading, no renaming.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key renaming rule.
    pub fn with_remap(
        mut self,
        pattern: impl Into<String>,
        replacement: impl Into<String>,
    ) -> Self {
        self.remap.push((pattern.into(), replacement.into()));
        self
    }

    /// Allows model tensors the file lacks.
    pub fn allow_missing(mut self, allow: bool) -> Self {
        self.allow_missing = allow;
        self
    }
}

/// What a load did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// The file.
    pub path: PathBuf,
    /// `pytorch` or `safetensors`.
    pub format: &'static str,
    /// Model tensors set from the file.
    pub loaded: Vec<String>,
    /// Model tensors the file lacked (kept at their initial values).
    pub missing: Vec<String>,
    /// File tensors the model did not use. PyTorch's integer `num_batches_tracked` counters
    /// are never loaded (flint's batch norm keeps its own) and not listed.
    pub unused: Vec<String>,
    /// Loaded model tensors that the file holds in another floating-point type (`F16`, `BF16`,
    /// `F64`), each with that type; they were converted to `float32` (rounded to nearest).
    pub converted: Vec<(String, DType)>,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} ({}): {} tensors loaded, {} missing, {} unused",
            self.path.display(),
            self.format,
            self.loaded.len(),
            self.missing.len(),
            self.unused.len()
        )?;
        for (what, list) in [("missing", &self.missing), ("unused", &self.unused)] {
            if !list.is_empty() {
                writeln!(f, "  {what}: {}", list.join(", "))?;
            }
        }
        // One line per source type: "12 tensors converted from float16 to float32: ...".
        let mut from: Vec<DType> = Vec::new();
        for (_, dtype) in &self.converted {
            if !from.contains(dtype) {
                from.push(*dtype);
            }
        }
        for dtype in from {
            let names: Vec<&str> = self
                .converted
                .iter()
                .filter(|(_, d)| *d == dtype)
                .map(|(n, _)| n.as_str())
                .collect();
            writeln!(
                f,
                "  {} tensor{} converted from {} to float32: {}",
                names.len(),
                if names.len() == 1 { "" } else { "s" },
                dtype_name(dtype),
                names.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Loads `path` into `model`. The format follows the extension: `.pt`, `.pth`, `.bin`
/// (PyTorch pickles) or `.safetensors`.
///
/// Floating-point tensors of another precision than `float32` are converted and listed in
/// [`LoadReport::converted`].
///
/// # Errors
/// A path that is not a regular file (after following symbolic links), a file of another type
/// or that cannot be read, a tensor whose shape does not fit (naming the tensor and both
/// shapes), a tensor of integers or booleans where the model has floats (naming it), and, unless
/// allowed, model tensors the file lacks.
pub fn load_weights<M: Module>(
    mut model: M,
    path: &Path,
    options: &LoadOptions,
) -> Result<(M, LoadReport), TransferError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let format = match ext.as_str() {
        "pt" | "pth" | "bin" => "PyTorch",
        "safetensors" => "safetensors",
        "onnx" => {
            return Err(TransferError::Invalid(format!(
                "{}: an ONNX file is a whole network, not weights for a flint definition; \
                 load it with `load_pretrained` (`flint finetune --pretrained FILE.onnx`)",
                path.display()
            )));
        }
        other => {
            return Err(TransferError::Invalid(format!(
                "{}: unknown weight file type `.{other}`; expected .pt, .pth, .bin or .safetensors",
                path.display()
            )));
        }
    };
    let bad = |reason: String| TransferError::BadFile {
        path: path.to_path_buf(),
        format,
        reason,
    };
    // The same regular-file check as every data file flint reads.
    let len = match flint_io::fs::open_regular(path) {
        Ok((_, len)) => len,
        Err(FsError::Io { source, .. }) if source.kind() == ErrorKind::NotFound => {
            return Err(bad("no such file".into()));
        }
        Err(e @ FsError::Io { .. }) => return Err(e.into()),
        Err(e) => return Err(bad(e.reason())),
    };
    // The stores only index the file here (safetensors: its header, through a memory map;
    // PyTorch: the pickle, with every tensor's extent checked against the file); tensor bytes
    // are read when the model takes them.
    let (tensors, skip_enum_variants): (Vec<PackTensor>, bool) = if format == "PyTorch" {
        let mut store = PytorchStore::from_file(path);
        if let Some(key) = &options.top_level_key {
            store = store.with_top_level_key(key.clone());
        }
        for (pattern, replacement) in &options.remap {
            store = store.with_key_remapping(pattern, replacement);
        }
        let tensors = store.get_all_tensors().map_err(|e| bad(e.to_string()))?;
        // PyTorch files name no enum variants; burn's own PytorchStore skips them too.
        (tensors.values().cloned().collect(), true)
    } else {
        check_safetensors_header(path, len).map_err(|e| bad(e.to_string()))?;
        let mut store = SafetensorsStore::from_file(path);
        for (pattern, replacement) in &options.remap {
            store = store.with_key_remapping(pattern, replacement);
        }
        let tensors = store.get_all_tensors().map_err(|e| bad(e.to_string()))?;
        (tensors.values().cloned().collect(), false)
    };
    let skip_counters =
        PathFilter::new().with_predicate(|p, _| !p.ends_with("num_batches_tracked"));
    let to_f32 = ToF32::default();
    let adapter = to_f32.clone().chain(PyTorchToBurnAdapter);
    let result = model.apply(
        tensors,
        Some(skip_counters),
        Some(Box::new(adapter)),
        skip_enum_variants,
    );
    if let Some(e) = result.errors.first() {
        return Err(match e {
            ApplyError::ShapeMismatch {
                path: tensor,
                expected,
                found,
            } => {
                let (mut expected, mut found) = (expected.to_vec(), found.to_vec());
                // burn keeps Linear weights as `[in, out]` and compares after transposing the
                // file's; report both in the file's own `[out, in]` layout.
                if tensor.ends_with("weight") && expected.len() == 2 && found.len() == 2 {
                    expected.reverse();
                    found.reverse();
                }
                TransferError::ShapeMismatch {
                    path: path.to_path_buf(),
                    tensor: tensor.clone(),
                    expected,
                    found,
                }
            }
            ApplyError::DTypeMismatch {
                path: tensor,
                expected,
                found,
            } => TransferError::DType {
                path: path.to_path_buf(),
                tensor: tensor.clone(),
                found: dtype_name(*found),
                expected: if expected.is_float() {
                    "floating-point values (float16, bfloat16, float32 or float64)".into()
                } else {
                    format!("{} values", dtype_name(*expected))
                },
            },
            other => TransferError::Apply {
                path: path.to_path_buf(),
                reason: other.to_string(),
            },
        });
    }
    let unused: Vec<String> = result
        .unused
        .into_iter()
        .filter(|k| !k.ends_with("num_batches_tracked"))
        .collect();
    let missing: Vec<String> = result
        .missing
        .into_iter()
        .map(|(p, _)| p)
        .filter(|p| !p.ends_with("num_batches_tracked"))
        .collect();
    if !missing.is_empty() && !options.allow_missing {
        return Err(TransferError::Missing {
            path: path.to_path_buf(),
            missing,
        });
    }
    // The adapter sees every matched tensor, also those filtered out afterwards: keep the
    // conversions of tensors that were loaded.
    let converted = to_f32
        .take()
        .into_iter()
        .filter(|(name, _)| result.applied.contains(name))
        .collect();
    let report = LoadReport {
        path: path.to_path_buf(),
        format: if format == "PyTorch" {
            "pytorch"
        } else {
            "safetensors"
        },
        loaded: result.applied,
        missing,
        unused,
        converted,
    };
    Ok((model, report))
}

/// The most a safetensors JSON header may take. The format allows 100 MB; a real header names
/// a few hundred bytes per tensor, and burn-store parses it again for every tensor it reads.
const MAX_SAFETENSORS_HEADER: u64 = 16 << 20;

/// What is wrong with a safetensors file's header length.
#[derive(Debug, thiserror::Error)]
enum HeaderProblem {
    #[error("{0} bytes, shorter than the 8-byte header length")]
    Short(u64),
    #[error("{0}")]
    Read(std::io::Error),
    #[error("the header claims {header} bytes but the file has {rest} after the length")]
    PastEnd { header: u64, rest: u64 },
    #[error("the header claims {0} bytes, more than the {MAX_SAFETENSORS_HEADER} flint reads")]
    TooLarge(u64),
}

/// Checks the 8-byte header length of a safetensors file against the file's size before the
/// file is memory-mapped and parsed.
fn check_safetensors_header(path: &Path, len: u64) -> Result<(), HeaderProblem> {
    use std::io::Read;
    if len < 8 {
        return Err(HeaderProblem::Short(len));
    }
    let mut prefix = [0u8; 8];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut prefix))
        .map_err(HeaderProblem::Read)?;
    let header = u64::from_le_bytes(prefix);
    if header > len - 8 {
        return Err(HeaderProblem::PastEnd {
            header,
            rest: len - 8,
        });
    }
    if header > MAX_SAFETENSORS_HEADER {
        return Err(HeaderProblem::TooLarge(header));
    }
    Ok(())
}

/// How flint names an element type to people.
pub(crate) fn dtype_name(dtype: DType) -> String {
    match dtype {
        DType::F64 => "float64".into(),
        DType::F32 | DType::Flex32 => "float32".into(),
        DType::F16 => "float16".into(),
        DType::BF16 => "bfloat16".into(),
        DType::I64 => "int64".into(),
        DType::I32 => "int32".into(),
        DType::I16 => "int16".into(),
        DType::I8 => "int8".into(),
        DType::U64 => "uint64".into(),
        DType::U32 => "uint32".into(),
        DType::U16 => "uint16".into(),
        DType::U8 => "uint8".into(),
        DType::Bool(_) => "bool".into(),
        other => format!("{other:?}"),
    }
}

/// Converts `float16`, `bfloat16` and `float64` tensors to `float32` on their way into the
/// model, noting each by its model path. Without it burn-store keeps the file's precision and
/// the first forward pass fails on a `float32` input.
#[derive(Clone, Default)]
struct ToF32 {
    converted: Arc<Mutex<Vec<(String, DType)>>>,
}

impl ToF32 {
    fn take(&self) -> Vec<(String, DType)> {
        std::mem::take(&mut *self.converted.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ModuleAdapter for ToF32 {
    fn adapt(&self, tensor: PackTensor, _ctx: ModuleContext<'_>) -> PackTensor {
        let from = tensor.dtype;
        if !matches!(from, DType::F16 | DType::BF16 | DType::F64) {
            return tensor;
        }
        self.converted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((tensor.name.clone(), from));
        let (name, shape, id) = (tensor.name.clone(), tensor.shape.clone(), tensor.param_id);
        // Deferred like the file's own tensor: converted when the model takes it.
        bridge::deferred(name, DType::F32, shape, id, move || {
            bridge::to_data(&tensor)?
                .try_cast(DType::F32)
                .map_err(|e| PackError::ValidationError(format!("{from:?} to F32: {e}")))
        })
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}
