//! ONNX files through the `flint` binary: `flint models inspect`, `flint finetune --pretrained
//! FILE.onnx` on a small copy of hymenoptera, then `flint predict` and `flint eval` rebuilding
//! the network from the same file, refused once the file changed or is gone; and the messages of
//! bad `--cut`, `--normalize` and `--input-size` values.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;

mod common;
use common::{model_file, skip};

fn flint() -> Command {
    let mut cmd = Command::cargo_bin("flint").unwrap();
    cmd.env("FLINT_OFFLINE", "1");
    cmd
}

/// Two images per class and split of hymenoptera, or `None` after a skip.
fn tiny_hymenoptera(dir: &Path) -> Option<PathBuf> {
    let data = std::env::var_os("FLINT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
        .join("hymenoptera");
    if !data.join("train").is_dir() {
        skip(&format!("{} is missing", data.display()));
        return None;
    }
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
            for f in files.iter().take(2) {
                std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    Some(small)
}

#[test]
fn models_inspect_shows_what_an_onnx_file_holds() {
    let Some(file) = model_file("mobilenetv2.onnx") else {
        return;
    };
    let out = flint()
        .args(["models", "inspect"])
        .arg(&file)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    for expected in [
        "inputs:",
        "outputs:",
        "Conv x52",
        "Gemm x1",
        "unsupported: none",
        "parameters: 3487816",
        "automatic cut: before node classifier_gemm",
        "features: 1280 per image",
        "classifier cut off: linear 1280 -> 1000",
        "input for fine-tuning: 3x224x224, resize 256",
    ] {
        assert!(stdout.contains(expected), "{expected:?} not in:\n{stdout}");
    }
    // A file that is not ONNX is named in the error.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("broken.onnx");
    std::fs::write(&bad, b"not a model").unwrap();
    flint()
        .args(["models", "inspect"])
        .arg(&bad)
        .assert()
        .failure()
        .stderr(predicate::str::contains("broken.onnx").and(predicate::str::contains("ONNX")));
}

#[test]
fn bad_onnx_options_are_clear_errors() {
    let Some(file) = model_file("mobilenetv2.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(images) = tiny_hymenoptera(dir.path()) else {
        return;
    };
    let cases: &[(&[&str], &str)] = &[
        (
            &["--cut", "nosuchnode"],
            "--cut nosuchnode: no node or tensor of that name",
        ),
        (&["--normalize", "1,2"], "bad normalisation `1,2`"),
        (
            &["--normalize", "0.5/0.5"],
            "the network takes 3-channel images",
        ),
        (&["--input-size", "0"], "input size must be at least 1"),
        (
            &["--arch", "resnet18"],
            "--arch resnet18 applies to .pth/.safetensors state dicts",
        ),
    ];
    for (extra, message) in cases {
        let out = flint()
            .args(["finetune", "--pretrained"])
            .arg(&file)
            .arg("--data")
            .arg(&images)
            .arg("--output")
            .arg(dir.path().join("never"))
            .args(*extra)
            .assert()
            .failure();
        let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
        assert!(stderr.contains(message), "{extra:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{extra:?}: {stderr}");
        assert!(!dir.path().join("never").exists(), "{extra:?} left a run");
    }
    // ONNX options on a network that is not ONNX.
    flint()
        .args(["finetune", "--pretrained", "mnist-cnn-bn", "--cut", "fc1"])
        .arg("--data")
        .arg(&images)
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "--cut applies to ONNX networks only",
        ));
}

#[test]
fn finetune_from_an_onnx_file_then_predict_and_eval_from_the_same_file() {
    let Some(original) = model_file("mobilenetv2.onnx") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let Some(images) = tiny_hymenoptera(dir.path()) else {
        return;
    };
    // A copy, so the test can change and remove it.
    let file = dir.path().join("my-mobilenet.onnx");
    std::fs::copy(&original, &file).unwrap();
    let run = dir.path().join("run");
    let out = flint()
        .args(["finetune", "--pretrained"])
        .arg(&file)
        .args(["--epochs", "1", "--batch-size", "4", "--workers", "0"])
        .args([
            "--input-size",
            "224",
            "--normalize",
            "imagenet",
            "--cut",
            "auto",
        ])
        .arg("--data")
        .arg(&images)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .arg("--output")
        .arg(&run)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("val accuracy: "),
        "{stdout}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    let source = &config["source"];
    assert_eq!(source["cut"], "472_f", "{config}");
    assert_eq!(source["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(source["size"], 224);

    let image = images.join("val/bees");
    let image = std::fs::read_dir(&image)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let predict = || {
        let mut cmd = flint();
        cmd.args(["predict", "--checkpoint"]).arg(&run).arg(&image);
        cmd
    };
    let eval = || {
        let mut cmd = flint();
        cmd.args(["eval", "--checkpoint"]).arg(&run);
        cmd
    };
    // From another working directory too: the run records the file's absolute path.
    predict()
        .current_dir(dir.path().join("images"))
        .assert()
        .success()
        .stdout(predicate::str::contains("bees").and(predicate::str::contains("ants")));
    let out = eval().assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout
            .lines()
            .last()
            .unwrap_or_default()
            .starts_with("val accuracy: "),
        "{stdout}"
    );

    // The file changed: refused, with both checksums.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&file, &bytes).unwrap();
    for mut cmd in [predict(), eval()] {
        cmd.assert().failure().stderr(predicate::str::contains(
            "has changed since the run was made",
        ));
    }
    // The file is gone: refused, saying which file.
    std::fs::remove_file(&file).unwrap();
    for mut cmd in [predict(), eval()] {
        cmd.assert().failure().stderr(
            predicate::str::contains("which is missing")
                .and(predicate::str::contains("my-mobilenet.onnx")),
        );
    }
}
