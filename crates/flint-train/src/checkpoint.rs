//! Checkpoints: model, optimiser state and run state, written atomically and checked on load.
//!
//! A checkpoint is a folder (`checkpoints/last/`, `checkpoints/best/`) holding `model.bpk`,
//! `optimizer.bpk` and `state.json`. It is written under a temporary name and swapped in with
//! renames, so a crash leaves the previous checkpoint intact. `state.json` records the SHA-256
//! of the two weight files: a truncated or altered file is refused with a clear message instead
//! of loading garbage.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use crate::error::TrainError;
use crate::metrics::EpochMetrics;

/// Version of the checkpoint layout.
const FORMAT: u32 = 1;

/// The run's progress, saved with each checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Layout version.
    pub format: u32,
    /// Epochs completed.
    pub epoch: usize,
    /// The run's seed.
    pub seed: u64,
    /// Metrics of every completed epoch.
    pub history: Vec<EpochMetrics>,
    /// Epoch (1-based) of the best validation accuracy so far.
    pub best_epoch: Option<usize>,
    /// Best value of the early-stopping metric so far (accuracy, or loss when monitoring loss).
    pub best_monitor: Option<f64>,
    /// Epochs since the monitored metric last improved.
    pub epochs_without_improvement: usize,
    /// SHA-256 of `config.json` of the run that wrote it.
    pub config_sha256: String,
    /// SHA-256 of `model.bpk`.
    pub model_sha256: String,
    /// SHA-256 of `optimizer.bpk`.
    pub optimizer_sha256: String,
}

impl RunState {
    /// A run with nothing done yet.
    pub fn new(seed: u64, config_sha256: String) -> Self {
        Self {
            format: FORMAT,
            epoch: 0,
            seed,
            history: Vec::new(),
            best_epoch: None,
            best_monitor: None,
            epochs_without_improvement: 0,
            config_sha256,
            model_sha256: String::new(),
            optimizer_sha256: String::new(),
        }
    }
}

/// Hex SHA-256 of a file (flint-data's streamed [`sha256_file`](flint_data::download::sha256_file)).
pub fn file_sha256(path: &Path) -> Result<String, TrainError> {
    Ok(flint_data::download::sha256_file(path)?)
}

/// Writes `bytes` to `path` through a synced temporary file and a rename (flint-data's
/// [`write_atomic`](flint_data::download::write_atomic)): a crash leaves the old file or the new
/// one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    Ok(flint_data::download::write_atomic(path, bytes)?)
}

/// Saves a checkpoint into `dir` (e.g. `run/checkpoints/last`), replacing it atomically.
pub fn save<M: Module>(
    dir: &Path,
    model: &M,
    optimizer: &ModuleOptimizer,
    state: &RunState,
) -> Result<(), TrainError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| TrainError::io(parent, e))?;
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let old = parent.join(format!(".old-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;

    let fail = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    model
        .clone()
        .save_file(tmp.join("model.bpk"))
        .map_err(|e| fail(format!("cannot write the model: {e}")))?;
    optimizer
        .save(tmp.join("optimizer.bpk"))
        .map_err(|e| fail(format!("cannot write the optimiser state: {e}")))?;
    let mut state = state.clone();
    state.model_sha256 = file_sha256(&tmp.join("model.bpk"))?;
    state.optimizer_sha256 = file_sha256(&tmp.join("optimizer.bpk"))?;
    let json = serde_json::to_vec_pretty(&state).map_err(|e| fail(e.to_string()))?;
    std::fs::write(tmp.join("state.json"), json).map_err(|e| TrainError::io(&tmp, e))?;

    // Swap: the old checkpoint stays until the new one is in place.
    if dir.exists() {
        std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
    }
    std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// Where a checkpoint folder really is: `dir`, or the previous copy left by a crash between the
/// two renames of [`save`].
fn resolve(dir: &Path) -> Option<PathBuf> {
    if dir.join("state.json").exists() {
        return Some(dir.to_path_buf());
    }
    let parent = dir.parent()?;
    let name = dir.file_name()?.to_string_lossy().into_owned();
    std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&format!(".old-{name}-")))
                && p.join("state.json").exists()
        })
}

/// Reads and checks a checkpoint's state, verifying the weight files' checksums.
pub fn load_state(dir: &Path) -> Result<(PathBuf, RunState), TrainError> {
    let fail = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let dir =
        resolve(dir).ok_or_else(|| fail("no checkpoint here (state.json is missing)".into()))?;
    let text = std::fs::read_to_string(dir.join("state.json"))
        .map_err(|e| fail(format!("cannot read state.json: {e}")))?;
    let state: RunState =
        serde_json::from_str(&text).map_err(|e| fail(format!("state.json is corrupt ({e})")))?;
    if state.format != FORMAT {
        return Err(fail(format!(
            "layout version {} is not the {FORMAT} this flint writes",
            state.format
        )));
    }
    for (file, expected) in [
        ("model.bpk", &state.model_sha256),
        ("optimizer.bpk", &state.optimizer_sha256),
    ] {
        let path = dir.join(file);
        if !path.exists() {
            return Err(fail(format!("{file} is missing")));
        }
        if &file_sha256(&path)? != expected {
            return Err(fail(format!(
                "{file} is corrupt (its SHA-256 differs from the one recorded when it was saved)"
            )));
        }
    }
    Ok((dir, state))
}

/// Loads a checkpoint's model weights into `model` (which must have the same architecture).
pub fn load_model<M: Module>(dir: &Path, model: M) -> Result<M, TrainError> {
    let path = dir.join("model.bpk");
    model
        .try_load_file(&path)
        .map_err(|e| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("model.bpk does not fit this model: {e}"),
        })
}

/// Loads a checkpoint's optimiser state into `optimizer`.
pub fn load_optimizer(
    dir: &Path,
    optimizer: ModuleOptimizer,
) -> Result<ModuleOptimizer, TrainError> {
    optimizer
        .load(dir.join("optimizer.bpk"))
        .map_err(|e| TrainError::Checkpoint {
            path: dir.to_path_buf(),
            reason: format!("optimizer.bpk cannot be read: {e}"),
        })
}
