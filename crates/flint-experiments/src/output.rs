//! An experiment's output folder: its configuration (`experiment.json`), per-run result files
//! that let a rerun skip finished runs, and atomic JSON/PNG/markdown writes.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ExperimentError;

/// Writes `experiment.json` into `out_dir` (creating it), or checks that the one there is this
/// configuration, so a rerun reuses the finished runs and never mixes two configurations.
/// Compared over `defaults`, so a field added since (at its default) compares equal.
pub fn claim_output<C: Serialize>(
    config: &C,
    defaults: &C,
    out_dir: &Path,
) -> Result<(), ExperimentError> {
    std::fs::create_dir_all(out_dir).map_err(|e| ExperimentError::io(out_dir, e))?;
    let path = out_dir.join("experiment.json");
    let json = serde_json::to_value(config).expect("config serialises");
    if path.exists() {
        let mut old = serde_json::to_value(defaults).expect("config serialises");
        match std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        {
            Some(serde_json::Value::Object(fields)) => match old.as_object_mut() {
                Some(merged) => merged.extend(fields),
                None => old = serde_json::Value::Null,
            },
            _ => old = serde_json::Value::Null,
        }
        if old != json {
            return Err(ExperimentError::OtherExperiment { path });
        }
        return Ok(());
    }
    write_json(&path, &json)
}

/// Reads a JSON file; `None` when it is missing or unreadable (a run to redo).
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes pretty JSON atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), ExperimentError> {
    let bytes = serde_json::to_vec_pretty(value).expect("json");
    write_bytes(path, &bytes)
}

/// Writes bytes atomically (write, sync, rename), creating the parent folder.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), ExperimentError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| ExperimentError::io(parent, e))?;
    }
    flint_io::fs::write_atomic(path, bytes).map_err(flint_data::DataError::from)?;
    Ok(())
}

/// The result stored at `out_dir/runs/<key>.json`, or `compute`'s, stored there for the next
/// time. A rerun of an interrupted experiment so redoes only the runs that had not finished.
pub fn cached_run<T, F>(out_dir: &Path, key: &str, compute: F) -> Result<(T, bool), ExperimentError>
where
    T: Serialize + DeserializeOwned,
    F: FnOnce() -> Result<T, ExperimentError>,
{
    let path = out_dir.join("runs").join(format!("{key}.json"));
    if let Some(done) = read_json(&path) {
        return Ok((done, true));
    }
    let value = compute()?;
    write_json(&path, &value)?;
    Ok((value, false))
}

/// Removes an unfinished run directory (a run interrupted before writing its result).
pub fn remove_stale(dir: &Path) -> Result<(), ExperimentError> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| ExperimentError::io(dir, e))?;
    }
    Ok(())
}

/// `path` relative to `base` for display in reports.
pub fn relative(path: &Path, base: &Path) -> String {
    path.strip_prefix(base)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// What an experiment wrote.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Written {
    /// The markdown report with the tables.
    pub results_md: PathBuf,
    /// The raw results.
    pub results_json: PathBuf,
    /// The plots.
    pub plots: Vec<PathBuf>,
    /// Wall time of this invocation, in seconds (finished runs reused from an earlier one take
    /// none).
    pub wall_secs: f64,
}

/// Writes an experiment's plots, `results.json` and `results.md` (in that order, so the
/// markdown, the last thing written, only exists when the rest does).
pub fn write_results<T: Serialize>(
    out_dir: &Path,
    markdown: &str,
    results: &T,
    plots: &[(&str, Vec<u8>)],
    wall_secs: f64,
) -> Result<Written, ExperimentError> {
    let mut paths = Vec::new();
    for (name, png) in plots {
        let path = out_dir.join(name);
        write_bytes(&path, png)?;
        paths.push(path);
    }
    let results_json = out_dir.join("results.json");
    write_json(&results_json, results)?;
    let results_md = out_dir.join("results.md");
    write_bytes(&results_md, markdown.as_bytes())?;
    Ok(Written {
        results_md,
        results_json,
        plots: paths,
        wall_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Conf {
        a: u32,
        b: u32,
    }

    #[test]
    fn claims_reuses_and_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("exp");
        let defaults = Conf { a: 0, b: 0 };
        claim_output(&Conf { a: 1, b: 2 }, &defaults, &out).unwrap();
        claim_output(&Conf { a: 1, b: 2 }, &defaults, &out).unwrap();
        // An older file without `b` compares equal when `b` is at its default.
        std::fs::write(out.join("experiment.json"), r#"{"a": 1}"#).unwrap();
        claim_output(&Conf { a: 1, b: 0 }, &defaults, &out).unwrap();
        let err = claim_output(&Conf { a: 2, b: 0 }, &defaults, &out).unwrap_err();
        assert!(err.to_string().contains("different configuration"), "{err}");
    }

    #[test]
    fn cached_runs_are_computed_once() {
        let dir = tempfile::tempdir().unwrap();
        let (v, reused) = cached_run(dir.path(), "x", || Ok(7u32)).unwrap();
        assert_eq!((v, reused), (7, false));
        let (v, reused) =
            cached_run(dir.path(), "x", || -> Result<u32, _> { unreachable!() }).unwrap();
        assert_eq!((v, reused), (7, true));
        // A corrupt file is recomputed.
        std::fs::write(dir.path().join("runs/x.json"), b"{").unwrap();
        let (v, reused) = cached_run(dir.path(), "x", || Ok(8u32)).unwrap();
        assert_eq!((v, reused), (8, false));
    }
}
