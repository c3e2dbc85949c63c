//! The T2 experiment end to end in its quick mode, on the real Fashion-MNIST (skipped with a
//! reason when it is not on the machine, unless `FLINT_REQUIRE_DATA=1`).

use burn::tensor::Device;
use flint_data::{Locator, Split, fashion_mnist};
use flint_experiments::{Method, TransferExperimentConfig, run_transfer_experiment_on};

/// Skips the test with a printed reason, or fails it when `FLINT_REQUIRE_DATA` is set.
fn skip(reason: &str) {
    if std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

#[test]
fn quick_transfer_experiment_writes_table_json_and_plot() {
    // Wherever the standard discovery finds it (Debian's dataset-fashion-mnist installs it in
    // /usr/share/datasets/fashion-mnist), without downloading.
    let locator = Locator::new().offline();
    let (train, test) = match (
        fashion_mnist(Split::Train, &locator),
        fashion_mnist(Split::Test, &locator),
    ) {
        (Ok(train), Ok(test)) => (train, test),
        (Err(e), _) | (_, Err(e)) => return skip(&format!("Fashion-MNIST: {e}")),
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("transfer");
    let config = TransferExperimentConfig::quick();
    let mut lines = Vec::new();
    let start = std::time::Instant::now();
    let results =
        run_transfer_experiment_on(&config, &train, &test, &out, &Device::flex(), &mut |l| {
            lines.push(l.to_string())
        })
        .unwrap();
    eprintln!("quick experiment: {:.1} s", start.elapsed().as_secs_f64());

    let expected = config.shots.len() * config.seeds * Method::ALL.len();
    assert_eq!(results.runs.len(), expected);
    assert_eq!(
        lines.iter().filter(|l| l.starts_with('[')).count(),
        expected
    );
    for r in &results.runs {
        assert!((0.0..=1.0).contains(&r.test_accuracy), "{r:?}");
        assert_eq!(r.test_images, 500);
        assert!(out.join(&r.run_dir).join("test.json").is_file());
        assert!(out.join(&r.run_dir).join("report.md").is_file());
        // Deleted after the evaluation unless asked to keep them.
        assert!(!out.join(&r.run_dir).join("checkpoints").exists());
    }
    assert!(
        out.join("source/seed0/checkpoints/last/model.bpk")
            .is_file()
    );
    // Five balanced-ish classes: better than chance after one source epoch and two target epochs.
    let finetuned = results
        .runs
        .iter()
        .find(|r| r.method == "finetune")
        .unwrap();
    assert!(finetuned.test_accuracy > 0.3, "{finetuned:?}");

    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| method | N = 10 |\n| --- | ---: |\n"), "{md}");
    for method in Method::ALL {
        let label = method.label(config.head_dropout);
        assert!(
            md.lines().any(|l| l.starts_with(&format!("| {label} | "))),
            "no row for {label}:\n{md}"
        );
    }
    assert!(md.contains("![test accuracy against N](transfer.png)"));

    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), expected);
    assert_eq!(json["source"].as_array().unwrap().len(), 1);
    assert_eq!(json["summary"].as_array().unwrap().len(), 6);
    assert_eq!(json["config"]["shots"], serde_json::json!([10]));

    let png = std::fs::read(out.join("transfer.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    // A rerun reuses every finished run; another configuration is refused.
    let again =
        run_transfer_experiment_on(&config, &train, &test, &out, &Device::flex(), &mut |_| {})
            .unwrap();
    let accuracies = |r: &flint_experiments::TransferResults| {
        r.runs.iter().map(|r| r.test_accuracy).collect::<Vec<_>>()
    };
    assert_eq!(accuracies(&again), accuracies(&results));
    let other = config.clone().with_target_epochs(3);
    let err = run_transfer_experiment_on(&other, &train, &test, &out, &Device::flex(), &mut |_| {})
        .unwrap_err();
    assert!(err.to_string().contains("different configuration"), "{err}");
}
