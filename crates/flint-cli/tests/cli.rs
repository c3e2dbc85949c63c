//! The `flint` binary, run as a user would: every subcommand, and bad arguments.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;

mod common;
use common::{available, skip};

fn flint() -> Command {
    let mut cmd = Command::cargo_bin("flint").unwrap();
    cmd.env("FLINT_OFFLINE", "1");
    cmd
}

fn last_line(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn info_shows_the_summary_and_backends() {
    flint()
        .args(["info", "--model", "cnn"])
        .assert()
        .success()
        .stdout(predicate::str::contains("total params:          421,834"))
        .stdout(predicate::str::contains("Conv2d(32, 64, 3x3)"))
        .stdout(predicate::str::contains("backends compiled in"))
        .stdout(predicate::str::contains("flex"))
        .stdout(predicate::str::contains("- cpu: "));
    flint()
        .args(["info", "--model", "mlp"])
        .assert()
        .success()
        .stdout(predicate::str::contains("269,322"));
}

#[test]
fn bad_arguments_are_clear_errors_not_panics() {
    let cases: &[(&[&str], &str)] = &[
        (&["train", "--epochs", "0"], "epochs must be at least 1"),
        (
            &["train", "--devices", "0,1"],
            "the flex backend has one device, the CPU",
        ),
        (
            &["train", "--devices", "1,1"],
            "--devices lists device 1 twice",
        ),
        (&["train", "--lr", "-0.1"], "learning rate must be positive"),
        (
            &["train", "--max-norm", "0"],
            "max-norm must be finite and positive, got 0",
        ),
        (
            &["train", "--l2", "-0.0001"],
            "L2 penalty must be finite and >= 0, got -0.0001",
        ),
        (
            &["train", "--lr", "abc"],
            "invalid value 'abc' for '--lr <LR>'",
        ),
        (
            &["train", "--model", "resnet"],
            "unknown model `resnet`; known: mlp, cnn",
        ),
        (
            &["train", "--dataset", "imagenet"],
            "unknown data set `imagenet`",
        ),
        (
            &["train", "--optimizer", "rmsprop"],
            "invalid value 'rmsprop' for '--optimizer",
        ),
        (
            &["train", "--dropout", "1.5"],
            "dropout rate 1.5 at `dropout` must be in [0, 1)",
        ),
        (
            &["train", "--threads", "0"],
            "invalid value '0' for '--threads",
        ),
        (
            &["train", "--val-fraction", "2"],
            "validation fraction must be in [0, 1)",
        ),
        (&["train", "--quiet", "--json"], "cannot be used with"),
        (
            &["eval", "--checkpoint", "/nonexistent/run"],
            "no config.json found",
        ),
        (
            &["predict", "--checkpoint", "/nonexistent/run"],
            "required arguments were not provided",
        ),
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (
            &[
                "finetune",
                "--pretrained",
                "mobilenetv2",
                "--data",
                "x",
                "--strategy",
                "magic",
            ],
            "unknown strategy `magic`",
        ),
        (
            &[
                "finetune",
                "--pretrained",
                "resnet50",
                "--data",
                "/nonexistent",
            ],
            "unknown pretrained model `resnet50`",
        ),
        (
            &[
                "finetune",
                "--pretrained",
                "mobilenetv2",
                "--data",
                "/nonexistent/images",
            ],
            "/nonexistent/images",
        ),
        (
            &[
                "finetune",
                "--pretrained",
                "mobilenetv2",
                "--data",
                "x",
                "--epochs",
                "0",
            ],
            "epochs must be at least 1",
        ),
        (
            &[
                "finetune",
                "--pretrained",
                "mobilenetv2",
                "--data",
                "x",
                "--backbone-lr-factor",
                "2",
            ],
            "backbone learning-rate factor must be in (0, 1]",
        ),
        (
            &[
                "finetune",
                "--pretrained",
                "mobilenetv2",
                "--data",
                "x",
                "--head-dropout",
                "1",
            ],
            "head dropout must be in [0, 1)",
        ),
        (
            &[
                "finetune",
                "--pretrained",
                "mobilenetv2",
                "--data",
                "x",
                "--freeze",
                "(",
            ],
            "bad freeze pattern `(`",
        ),
        (
            &["finetune", "--pretrained", "weights.onnx", "--data", "x"],
            "unknown pretrained model `weights.onnx`",
        ),
    ];
    for (args, message) in cases {
        let assert = flint().args(*args).assert().failure();
        let output = assert.get_output();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    }
    let backend = flint()
        .args(["train", "--backend", "wgpu"])
        .assert()
        .failure();
    let stderr = String::from_utf8_lossy(&backend.get_output().stderr).to_string();
    if !cfg!(feature = "wgpu") {
        assert!(
            stderr.contains("backend `wgpu` is not compiled into this binary"),
            "{stderr}"
        );
    }
}

#[test]
fn train_eval_predict_and_resume_through_the_binary() {
    if !available(&flint_data::FASHION_MNIST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = flint()
        .args([
            "train", "--model", "mlp", "--epochs", "2", "--limit", "2000",
        ])
        .args([
            "--test-limit",
            "1000",
            "--quiet",
            "--stop-after",
            "1",
            "--output",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !run.join("result.json").exists(),
        "stopped runs are not finished"
    );

    // Resume, in JSON-lines mode: one object per epoch left, then the test result.
    let output = flint()
        .args(["train", "--json", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l}: {e}")))
        .collect();
    assert_eq!(events.len(), 2, "{stdout}");
    assert_eq!(events[0]["event"], "epoch");
    assert_eq!(events[0]["epoch"], 2);
    assert_eq!(events[1]["event"], "test");
    let accuracy = events[1]["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.5, "{accuracy}");

    let eval = flint()
        .args(["eval", "--checkpoint"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        eval.status.success(),
        "{}",
        String::from_utf8_lossy(&eval.stderr)
    );
    let line = last_line(&eval.stdout);
    assert!(line.starts_with("test accuracy: 0."), "{line}");

    // predict: a real PNG and a file that is not an image.
    let png = dir.path().join("shirt.png");
    image::GrayImage::from_fn(40, 40, |x, _| image::Luma([(x * 6) as u8]))
        .save(&png)
        .unwrap();
    let junk = dir.path().join("notes.png");
    std::fs::write(&junk, "not an image").unwrap();
    flint()
        .args(["predict", "--top-k", "2", "--checkpoint"])
        .arg(&run)
        .arg(&png)
        .assert()
        .success()
        .stdout(
            predicate::str::is_match(r"shirt\.png: [A-Za-z/ -]+ \d+\.\d%, [A-Za-z/ -]+ \d+\.\d%")
                .unwrap(),
        );
    flint()
        .args(["predict", "--checkpoint"])
        .arg(&run)
        .arg(&png)
        .arg(&junk)
        .assert()
        .failure()
        .stderr(predicate::str::contains("notes.png"))
        .stderr(predicate::str::contains("1 of 2 images could not be read"));
}

#[test]
fn a_full_short_run_ends_with_the_test_accuracy_line() {
    if !available(&flint_data::FASHION_MNIST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = flint()
        .args([
            "train", "--model", "mlp", "--epochs", "1", "--limit", "1000",
        ])
        .args([
            "--test-limit",
            "500",
            "--seed",
            "3",
            "--optimizer",
            "sgd",
            "--lr",
            "0.05",
        ])
        .args([
            "--nesterov",
            "--schedule",
            "cosine",
            "--warmup",
            "0.5",
            "--threads",
            "1",
            "--l2",
            "1e-4",
            "--max-norm",
            "3",
        ])
        .arg("--output")
        .arg(&run)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let line = last_line(&output.stdout);
    let value: f64 = line
        .strip_prefix("test accuracy: ")
        .unwrap_or_else(|| panic!("last line is {line:?}"))
        .parse()
        .unwrap();
    assert!((0.0..=1.0).contains(&value));
    let config = std::fs::read_to_string(run.join("config.json")).unwrap();
    assert!(
        config.contains("\"Sgd\"") && config.contains("\"nesterov\": true"),
        "{config}"
    );
    assert!(
        config.contains("\"l2\": 0.0001") && config.contains("\"max_norm\": 3.0"),
        "{config}"
    );
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("regularisation: L2 1e-4 + max-norm 3"),
        "{report}"
    );
    // The run's config.json trains the same run again through --config.
    let again = dir.path().join("again");
    let output = flint()
        .args(["train", "--quiet", "--config"])
        .arg(run.join("config.json"))
        .arg("--output")
        .arg(&again)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        last_line(&output.stdout),
        line,
        "same config and seed, same result"
    );
    // Training into an existing run directory is refused.
    flint()
        .args(["train", "--model", "mlp", "--epochs", "1", "--output"])
        .arg(&run)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already holds a run"));
    assert!(Path::new(&run.join("result.json")).exists());
}

#[test]
fn models_lists_the_pretrained_networks() {
    flint()
        .args(["models"])
        .assert()
        .success()
        .stdout(predicate::str::contains("mobilenetv2"))
        .stdout(predicate::str::contains("efficientnet-lite0"))
        .stdout(predicate::str::contains("mnist-cnn-bn"))
        .stdout(predicate::str::contains("model files searched in:"))
        .stdout(predicate::str::contains("compiled").not());
}

/// `flint finetune` on a small copy of hymenoptera, then `flint predict` on its run.
#[test]
fn finetune_and_predict_through_the_binary() {
    let data = std::env::var_os("FLINT_DATA")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"))
        .join("hymenoptera");
    if !data.join("train").is_dir() {
        skip(&format!("{} is missing", data.display()));
        return;
    }
    if common::model_file("mobilenetv2.onnx").is_none() {
        return;
    }
    // Four images per class and split: enough to run everything, quick to extract.
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("images");
    for split in ["train", "val"] {
        for class in ["ants", "bees"] {
            let from = data.join(split).join(class);
            let to = small.join(split).join(class);
            std::fs::create_dir_all(&to).unwrap();
            let mut files: Vec<_> = std::fs::read_dir(&from)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            for f in files.iter().take(4) {
                std::fs::copy(f, to.join(f.file_name().unwrap())).unwrap();
            }
        }
    }
    let run = dir.path().join("run");
    let out = flint()
        .args([
            "finetune",
            "--pretrained",
            "mobilenetv2",
            "--strategy",
            "feature-extract",
        ])
        .args(["--epochs", "3", "--data"])
        .arg(&small)
        .arg("--output")
        .arg(&run)
        .arg("--cache-dir")
        .arg(dir.path().join("cache"))
        .assert()
        .success();
    let last = last_line(&out.get_output().stdout);
    assert!(last.starts_with("val accuracy: "), "{last}");
    for f in ["config.json", "metrics.csv", "report.md", "result.json"] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let image = small.join("val/bees");
    let image = std::fs::read_dir(&image)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    flint()
        .args(["predict", "--checkpoint"])
        .arg(&run)
        .arg(&image)
        .assert()
        .success()
        .stdout(predicate::str::contains("bees").and(predicate::str::contains("ants")));
    // A run directory already holding a run is refused, not overwritten.
    flint()
        .args([
            "finetune",
            "--pretrained",
            "mobilenetv2",
            "--epochs",
            "1",
            "--data",
        ])
        .arg(&small)
        .arg("--output")
        .arg(&run)
        .assert()
        .failure()
        .stderr(predicate::str::contains("already"));
}
