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

/// Largest `state.json` read: the run's history at a few hundred bytes an epoch.
const MAX_STATE_BYTES: u64 = 16 << 20;

/// Hex SHA-256 of a file ([`flint_io::fs::sha256_file`], as a [`TrainError`]).
pub fn file_sha256(path: &Path) -> Result<String, TrainError> {
    Ok(flint_io::fs::sha256_file(path).map_err(flint_data::DataError::from)?)
}

/// [`flint_io::fs::write_atomic`] (a synced temporary file and a rename: a crash leaves the old
/// file or the new one), as a [`TrainError`].
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TrainError> {
    Ok(flint_io::fs::write_atomic(path, bytes).map_err(flint_data::DataError::from)?)
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

/// Whether `name` is one of flint's temporary names: `.tmp-<checkpoint>-<pid>` or
/// `.old-<checkpoint>-<pid>` of [`save`] (in `checkpoints/`), `.<file>.part-<pid>` of an atomic
/// write (in the run directory); never a name a user would give a file.
fn is_leftover(name: &str, in_checkpoints: bool) -> bool {
    let pid_after = |separator: &str| {
        name.rsplit_once(separator)
            .is_some_and(|(_, pid)| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
    };
    if in_checkpoints {
        (name.starts_with(".tmp-") || name.starts_with(".old-")) && pid_after("-")
    } else {
        name.starts_with('.') && pid_after(".part-")
    }
}

/// Tidies a run directory before it is continued: a checkpoint that a crash between the two
/// renames of [`save`] left only under its `.old-` name is put back, then the temporary copies
/// of killed runs (`checkpoints/.tmp-*`, `checkpoints/.old-*`, `.<file>.part-<pid>`) are
/// removed: each is a whole checkpoint or file that nothing will read again. Returns what was
/// removed.
pub fn tidy_run_dir(run_dir: &Path) -> Result<Vec<PathBuf>, TrainError> {
    let checkpoints = run_dir.join("checkpoints");
    for name in ["last", "best"] {
        let dir = checkpoints.join(name);
        if !dir.join("state.json").exists()
            && let Some(old) = resolve(&dir)
        {
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
            }
            std::fs::rename(&old, &dir).map_err(|e| TrainError::io(&old, e))?;
        }
    }
    let mut removed = Vec::new();
    let mut sweep = |folder: &Path, in_checkpoints: bool| -> Result<(), TrainError> {
        let Ok(entries) = std::fs::read_dir(folder) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_leftover(&name, in_checkpoints) {
                continue;
            }
            let path = entry.path();
            // symlink_metadata: a link is removed itself, never what it points to.
            let is_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
            let result = if is_dir {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            result.map_err(|e| TrainError::io(&path, e))?;
            removed.push(path);
        }
        Ok(())
    };
    sweep(&checkpoints, true)?;
    sweep(run_dir, false)?;
    Ok(removed)
}

/// Whether a checkpoint was ever saved at `dir` (under its name, or as the `.old-` copy a crash
/// left).
pub fn exists(dir: &Path) -> bool {
    resolve(dir).is_some()
}

/// Reads and checks a checkpoint's state, verifying the weight files' checksums.
pub fn load_state(dir: &Path) -> Result<(PathBuf, RunState), TrainError> {
    let fail = |reason: String| TrainError::Checkpoint {
        path: dir.to_path_buf(),
        reason,
    };
    let dir =
        resolve(dir).ok_or_else(|| fail("no checkpoint here (state.json is missing)".into()))?;
    let bytes = flint_io::fs::read_regular(&dir.join("state.json"), MAX_STATE_BYTES)
        .map_err(|e| fail(format!("cannot read state.json: {}", e.reason())))?;
    let state: RunState =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("state.json is corrupt ({e})")))?;
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
        // sha256_file hashes only a regular file (a FIFO would block, /dev/zero never end).
        let sha = flint_io::fs::sha256_file(&path)
            .map_err(|e| fail(format!("{file}: {}", e.reason())))?;
        if &sha != expected {
            return Err(fail(format!(
                "{file} is corrupt (its SHA-256 differs from the one recorded when it was saved)"
            )));
        }
    }
    Ok((dir, state))
}

/// Checks that the run's `config.json` at `config_path` is still the one `state` was saved
/// with (its SHA-256 as recorded): an edited configuration would rebuild another model, or use
/// other data, than the one these weights were trained as. `--resume`, `eval` and `predict`
/// all check it.
pub fn check_config_unchanged(config_path: &Path, state: &RunState) -> Result<(), TrainError> {
    if file_sha256(config_path)? == state.config_sha256 {
        return Ok(());
    }
    Err(TrainError::Checkpoint {
        path: config_path.to_path_buf(),
        reason: "config.json has changed since this checkpoint was written; restore it (the \
                 run's weights belong to the configuration they were trained with)"
            .into(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Device;
    use flint_models::{Classifier, MlpConfig, ModelConfig};
    use proptest::prelude::*;

    use crate::config::OptimizerConfig;
    use crate::optim::build_optimizer;

    fn model() -> Classifier {
        ModelConfig::Mlp(MlpConfig::new().with_input_size(6).with_hidden(vec![4]))
            .init(&Device::flex())
    }

    /// A real checkpoint of a tiny MLP in `dir/last`.
    fn saved(dir: &Path) -> PathBuf {
        let last = dir.join("last");
        let optimizer = build_optimizer(&OptimizerConfig::new());
        save(
            &last,
            &model(),
            &optimizer,
            &RunState::new(7, "c0nf1g".into()),
        )
        .unwrap();
        last
    }

    #[test]
    fn a_saved_checkpoint_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let last = saved(dir.path());
        let (found, state) = load_state(&last).unwrap();
        assert_eq!((found, state.seed), (last.clone(), 7));
        load_model(&last, model()).unwrap();
    }

    #[test]
    fn tidying_restores_a_lone_old_copy_and_removes_only_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        let checkpoints = run.join("checkpoints");
        let last = saved(&checkpoints);
        // A crash between the two renames: only `.old-last-<pid>` holds the checkpoint.
        std::fs::rename(&last, checkpoints.join(".old-last-12")).unwrap();
        std::fs::create_dir_all(checkpoints.join(".tmp-best-13")).unwrap();
        std::fs::write(run.join(".result.json.part-14"), "{").unwrap();
        std::fs::write(run.join(".result.json.part-x"), "a user's").unwrap();
        std::fs::write(run.join("notes-15"), "a user's").unwrap();
        assert!(exists(&last));
        let removed = tidy_run_dir(run).unwrap();
        assert_eq!(removed.len(), 2, "{removed:?}");
        assert!(last.join("state.json").exists());
        assert!(!checkpoints.join(".old-last-12").exists());
        assert!(run.join(".result.json.part-x").exists() && run.join("notes-15").exists());
        load_state(&last).unwrap();
    }

    /// Writes `state` back with the weight files' real checksums, as a forger would.
    fn forge(last: &Path, state: &mut RunState) {
        state.model_sha256 = file_sha256(&last.join("model.bpk")).unwrap();
        state.optimizer_sha256 = file_sha256(&last.join("optimizer.bpk")).unwrap();
        std::fs::write(last.join("state.json"), serde_json::to_vec(state).unwrap()).unwrap();
    }

    fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
        for &(at, value) in edits {
            if !bytes.is_empty() {
                let i = at % bytes.len();
                bytes[i] = value;
            }
        }
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        bytes
    }

    proptest! {
        // Fuzz targets for checkpoint loading: a few dozen cases in the ordinary test run,
        // `PROPTEST_CASES=20000` for a long one.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
        ))]

        #[test]
        fn corrupt_state_files_are_errors_not_panics(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
            cut in proptest::option::of(any::<usize>()),
            random in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..256)),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let last = saved(dir.path());
            let original = std::fs::read(last.join("state.json")).unwrap();
            let bytes = random.unwrap_or_else(|| mutate(original, &edits, cut));
            std::fs::write(last.join("state.json"), &bytes).unwrap();
            if let Ok((found, _)) = load_state(&last) {
                let _ = load_model(&found, model());
            }
        }

        #[test]
        fn corrupt_weight_files_with_forged_checksums_are_errors_not_panics(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in proptest::option::of(any::<usize>()),
            optimizer_file in any::<bool>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let last = saved(dir.path());
            let name = if optimizer_file { "optimizer.bpk" } else { "model.bpk" };
            let original = std::fs::read(last.join(name)).unwrap();
            std::fs::write(last.join(name), mutate(original, &edits, cut)).unwrap();
            let mut state: RunState =
                serde_json::from_slice(&std::fs::read(last.join("state.json")).unwrap()).unwrap();
            forge(&last, &mut state);
            let (found, _) = load_state(&last).unwrap();
            let _ = load_model(&found, model());
            let _ = load_optimizer(&found, build_optimizer(&OptimizerConfig::new()));
        }
    }
}
