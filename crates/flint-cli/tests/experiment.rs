//! `flint experiment`, run as a user would.

use assert_cmd::Command;

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
    if let Err(e) = flint_data::Locator::new()
        .offline()
        .find(&flint_data::FASHION_MNIST)
    {
        if std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0") {
            panic!("required data is missing: {e}");
        }
        eprintln!("SKIPPED: {e}");
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
