//! Fine-tuning run directories through the binary: `--stop-after` then `--resume` ends where
//! the uninterrupted run ends, and `flint eval` and `flint predict` read the run.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

mod common;
use common::skip;

fn flint() -> Command {
    let mut cmd = Command::cargo_bin("flint").unwrap();
    cmd.env("FLINT_OFFLINE", "1");
    cmd
}

/// A small copy of hymenoptera (four images per class and split), or `None` to skip.
fn small_hymenoptera(dir: &Path) -> Option<PathBuf> {
    let data = std::env::var_os("FLINT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
        .join("hymenoptera");
    if !data.join("train").is_dir() {
        skip(&format!("{} is missing", data.display()));
        return None;
    }
    common::model_file("mobilenetv2.onnx")?;
    let small = dir.join("images");
    for split in ["train", "val"] {
        for class in ["ants", "bees"] {
            let to = small.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(data.join(split).join(class))
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files.iter().take(4) {
                std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    Some(small)
}

/// metrics.csv without the timing and memory columns.
fn learning_curves(run: &Path) -> Vec<String> {
    std::fs::read_to_string(run.join("metrics.csv"))
        .unwrap()
        .lines()
        .map(|l| l.split(',').take(6).collect::<Vec<_>>().join(","))
        .collect()
}

#[test]
fn finetune_resume_eval_and_predict_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let Some(images) = small_hymenoptera(dir.path()) else {
        return;
    };
    let finetune = |run: &Path, extra: &[&str]| {
        let out = flint()
            .args(["finetune", "--pretrained", "mobilenetv2", "--quiet"])
            .args(["--epochs", "3", "--batch-size", "4", "--workers", "0"])
            .args(["--clip-grad-norm", "0.5", "--data"])
            .arg(&images)
            .arg("--cache-dir")
            .arg(dir.path().join("cache"))
            .arg("--output")
            .arg(run)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let whole = dir.path().join("whole");
    finetune(&whole, &[]);
    let split = dir.path().join("split");
    finetune(&split, &["--stop-after", "1"]);
    assert!(
        !split.join("result.json").exists(),
        "a stopped run is not finished"
    );
    assert_eq!(learning_curves(&split).len(), 2);

    let out = flint()
        .args(["finetune", "--quiet", "--resume"])
        .arg(&split)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("val accuracy: "));
    assert_eq!(learning_curves(&split), learning_curves(&whole));
    assert_eq!(learning_curves(&whole).len(), 4);

    // flint eval reads a fine-tuning run (its validation images).
    let eval = flint()
        .args(["eval", "--checkpoint"])
        .arg(&split)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let stdout = String::from_utf8_lossy(&eval.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert!(last.starts_with("val accuracy: "), "{stdout}");

    let image = std::fs::read_dir(images.join("val/ants"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    flint()
        .args(["predict", "--checkpoint"])
        .arg(&split)
        .arg(&image)
        .assert()
        .success()
        .stdout(predicate::str::contains("ants").and(predicate::str::contains("bees")));

    // A finished run has nothing left to resume; flags that would change it are refused.
    flint()
        .args(["finetune", "--resume"])
        .arg(&split)
        .args(["--epochs", "5"])
        .assert()
        .failure()
        .stderr(predicate::str::contains("--epochs"));
}
