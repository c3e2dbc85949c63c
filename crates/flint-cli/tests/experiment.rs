//! `flint experiment`, run as a user would.

use assert_cmd::Command;

mod common;
use common::available;

fn flint() -> Command {
    let mut cmd = Command::cargo_bin("flint").unwrap();
    cmd.env("FLINT_OFFLINE", "1");
    cmd
}

#[test]
fn bad_experiment_arguments_are_clear_errors() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["experiment", "transfer", "--shots", "0"],
            "shots must be a non-empty list of positive numbers",
        ),
        (
            &["experiment", "transfer", "--head-dropout", "1"],
            "head dropout must be in (0, 1)",
        ),
        (
            &["experiment", "transfer", "--seeds", "0"],
            "at least one seed is needed",
        ),
        (
            &["experiment", "small-data", "--seeds", "0"],
            "seeds and epochs must be at least 1",
        ),
        (
            &[
                "experiment",
                "regularizers",
                "--config",
                "/nonexistent/experiment.json",
            ],
            "/nonexistent/experiment.json",
        ),
        (
            &["experiment", "batchnorm", "--quick", "--config", "x.json"],
            "cannot be used with",
        ),
        (
            &["experiment", "dropout-rate", "--seeds", "2"],
            "dropout-rate has no --seeds",
        ),
        (
            &["experiment", "mc-dropout", "--seeds", "0"],
            "repeats and bins must not be empty or 0",
        ),
    ];
    for (args, message) in cases {
        let assert = flint().args(*args).assert().failure();
        let stderr = String::from_utf8_lossy(&assert.get_output().stderr).to_string();
        assert!(stderr.contains(message), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    }
}

#[test]
fn quick_transfer_prints_the_results_path_last() {
    if !available(&flint_data::FASHION_MNIST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("t2");
    let assert = flint()
        .args(["experiment", "transfer", "--quick", "--output"])
        .arg(&out)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(last, out.join("results.md").display().to_string());
    assert!(out.join("results.json").is_file() && out.join("transfer.png").is_file());
}

#[test]
fn quick_mc_dropout_from_a_config_file_prints_the_results_path_last() {
    if !available(&flint_data::MNIST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mc");
    flint()
        .args(["experiment", "mc-dropout", "--quick", "--output"])
        .arg(&out)
        .assert()
        .success();
    // The written configuration runs again from --config (into a new folder), with --seeds
    // overriding its repeats.
    let again = dir.path().join("mc-again");
    let assert = flint()
        .args(["experiment", "mc-dropout", "--seeds", "3", "--config"])
        .arg(out.join("experiment.json"))
        .arg("--output")
        .arg(&again)
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert_eq!(
        stdout.lines().last().unwrap_or_default(),
        again.join("results.md").display().to_string()
    );
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(again.join("experiment.json")).unwrap()).unwrap();
    assert_eq!(written["repeats"], 3);
    assert!(again.join("reliability-mnist.png").is_file());
}
