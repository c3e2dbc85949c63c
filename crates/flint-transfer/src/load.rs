//! Pretrained weights from PyTorch (`.pt`/`.pth`) and safetensors files into flint's own
//! module definitions, through burn-store, with a report of what was loaded.
//!
//! PyTorch's conventions are translated on the way in (Linear weights transposed, batch norm's
//! `weight`/`bias` as `gamma`/`beta`). Keys can be renamed with regular expressions, like
//! `load_state_dict` after a `re.sub`. Every tensor the model has must come from the file unless
//! missing ones are allowed (then they keep their initial values); tensors of the file the model
//! does not use are listed, not an error (a classifier being replaced, an optimiser's extras).

use std::fmt;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn_store::{
    ApplyError, ModuleSnapshot, PathFilter, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore,
};

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
        Ok(())
    }
}

/// Loads `path` into `model`. The format follows the extension: `.pt`, `.pth`, `.bin`
/// (PyTorch pickles) or `.safetensors`.
///
/// # Errors
/// A file of another type or that cannot be read, a tensor whose shape does not fit (naming
/// the tensor and both shapes), and, unless allowed, model tensors the file lacks.
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
    if !path.is_file() {
        return Err(TransferError::BadFile {
            path: path.to_path_buf(),
            format: "weight",
            reason: "no such file".into(),
        });
    }
    let skip_counters =
        PathFilter::new().with_predicate(|p, _| !p.ends_with("num_batches_tracked"));
    let bad = |format: &'static str, reason: String| TransferError::BadFile {
        path: path.to_path_buf(),
        format,
        reason,
    };
    let (format, result) = match ext.as_str() {
        "pt" | "pth" | "bin" => {
            let mut store = PytorchStore::from_file(path)
                .filter(skip_counters)
                .allow_partial(true)
                .validate(false);
            if let Some(key) = &options.top_level_key {
                store = store.with_top_level_key(key.clone());
            }
            for (pattern, replacement) in &options.remap {
                store = store.with_key_remapping(pattern, replacement);
            }
            let result = model
                .load_from(&mut store)
                .map_err(|e| bad("PyTorch", e.to_string()))?;
            ("pytorch", result)
        }
        "safetensors" => {
            let mut store = SafetensorsStore::from_file(path)
                .with_from_adapter(PyTorchToBurnAdapter)
                .filter(skip_counters)
                .allow_partial(true)
                .validate(false);
            for (pattern, replacement) in &options.remap {
                store = store.with_key_remapping(pattern, replacement);
            }
            let result = model
                .load_from(&mut store)
                .map_err(|e| bad("safetensors", e.to_string()))?;
            ("safetensors", result)
        }
        "onnx" => {
            return Err(TransferError::Invalid(format!(
                "{}: ONNX models are compiled into flint at build time (crate flint-pretrained), \
                 not loaded at run time; use a pretrained model's name (`flint models` lists them)",
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
    let report = LoadReport {
        path: path.to_path_buf(),
        format,
        loaded: result.applied,
        missing,
        unused,
    };
    Ok((model, report))
}
