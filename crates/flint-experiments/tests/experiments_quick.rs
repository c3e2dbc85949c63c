//! Each experiment of issue #7 end to end in its quick mode on the real data sets (MNIST from
//! `$FLINT_DATA`, Fashion-MNIST wherever the standard discovery finds it), checking the files it
//! writes and the shape of its results. Skipped with a reason when the data is missing, unless
//! `FLINT_REQUIRE_DATA=1`.

use std::path::Path;

use burn::tensor::Device;
use flint_data::{Locator, Split};
use flint_experiments::{
    BatchNormExperimentConfig, DropoutRateConfig, McDropoutConfig, RegularizersConfig,
    SmallDataConfig, run_batchnorm, run_dropout_rate, run_mc_dropout, run_regularizers,
    run_small_data,
};

/// The data sets a test needs, or the reason to skip (a failure when data is required).
fn data(names: &[&str]) -> Option<Locator> {
    let locator = Locator::new().offline();
    for name in names {
        let found = match *name {
            "mnist" => flint_data::mnist(Split::Test, &locator).map(|_| ()),
            _ => flint_data::fashion_mnist(Split::Test, &locator).map(|_| ()),
        };
        if let Err(e) = found {
            let reason = format!("{name}: {e}");
            if std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0") {
                panic!("required data is missing: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return None;
        }
    }
    Some(locator)
}

fn assert_written(out: &Path, pngs: &[&str], table_header: &str) {
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains(table_header), "{md}");
    for png in pngs {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png}");
        assert!(md.contains(png), "results.md links {png}");
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap();
    assert!(json.get("config").is_some());
    assert!(out.join("experiment.json").is_file());
}

#[test]
fn small_data_quick() {
    let Some(locator) = data(&["mnist"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("small-data");
    let config = SmallDataConfig::quick();
    let r = run_small_data(&config, &locator, &out, &Device::flex(), &mut |_| {}).unwrap();
    assert_eq!(r.runs.len(), config.sizes.len() * 2);
    assert_eq!(r.rows.len(), config.sizes.len());
    for run in &r.runs {
        // Ten classes: well above chance after 30 steps, and the training subset is learnt
        // at least as well as the test set.
        assert!(run.test_accuracy > 0.3, "{run:?}");
        assert!(run.steps >= config.min_steps);
    }
    assert_written(&out, &["small-data.png"], "| training images | steps |");
    // A rerun reuses every finished run; a different configuration is refused.
    let mut lines = Vec::new();
    run_small_data(&config, &locator, &out, &Device::flex(), &mut |l| {
        lines.push(l.to_string())
    })
    .unwrap();
    assert!(lines.iter().all(|l| l.ends_with("reused)")), "{lines:?}");
    let other = config.clone().with_seeds(2);
    let err = run_small_data(&other, &locator, &out, &Device::flex(), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("different configuration"), "{err}");
}

#[test]
fn regularizers_quick() {
    let Some(locator) = data(&["mnist"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("regularizers");
    let config = RegularizersConfig::quick();
    let r = run_regularizers(&config, &locator, &out, &Device::flex(), &mut |_| {}).unwrap();
    assert_eq!(r.runs.len(), 7);
    assert_eq!(r.rows.len(), 7);
    for run in &r.runs {
        assert!(run.test_error < 0.7, "{run:?}");
        // One point before training and one per epoch.
        assert_eq!(run.test_error_curve.len(), config.epochs + 1);
    }
    assert_written(
        &out,
        &["regularizers-mnist.png"],
        "| method | test error (%) |",
    );
}

#[test]
fn mc_dropout_quick() {
    let Some(locator) = data(&["mnist"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mc-dropout");
    let config = McDropoutConfig::quick();
    let r = run_mc_dropout(&config, &locator, &out, &Device::flex(), &mut |_| {}).unwrap();
    assert_eq!(r.runs.len(), 1);
    let run = &r.runs[0];
    assert_eq!(run.mc.len(), config.repeats);
    assert!(run.mc.iter().all(|rep| rep.len() == config.samples.len()));
    // Different masks per repeat: single-sample predictions differ between repeats.
    assert_ne!(run.mc[0][0], run.mc[1][0]);
    let w = &run.weight_scaling;
    assert!(
        w.accuracy > 0.3 && w.nll > 0.0 && (0.0..=1.0).contains(&w.ece),
        "{w:?}"
    );
    assert_eq!(w.bins.iter().map(|b| b.2).sum::<usize>(), 500);
    assert_written(
        &out,
        &["mc-dropout-mnist.png", "reliability-mnist.png"],
        "| weight scaling (dropout off) |",
    );
}

#[test]
fn batchnorm_quick() {
    let Some(locator) = data(&["mnist", "fashion-mnist"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("batchnorm");
    let config = BatchNormExperimentConfig::quick();
    let r = run_batchnorm(&config, &locator, &out, &Device::flex(), &mut |_| {}).unwrap();
    assert_eq!(r.runs.len(), 5);
    let mlp = &r.runs[0];
    // Step 0, then every 20 steps up to 60.
    assert_eq!(
        mlp.curve.iter().map(|c| c.0).collect::<Vec<_>>(),
        vec![0, 20, 40, 60]
    );
    assert!((r.runs[2].lr - 5.0 * r.runs[1].lr).abs() < 1e-12);
    assert_written(
        &out,
        &["batchnorm-mlp.png", "batchnorm-cnn.png"],
        "| variant | lr | steps to 95 % |",
    );
}

#[test]
fn dropout_rate_quick() {
    let Some(locator) = data(&["fashion-mnist"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("dropout-rate");
    let config = DropoutRateConfig::quick();
    let r = run_dropout_rate(&config, &locator, &out, &Device::flex(), &mut |_| {}).unwrap();
    assert_eq!(r.folds.len(), config.rates.len() * config.folds);
    let o = &r.outcomes[0];
    assert!(config.rates.contains(&o.selected));
    // The selected rate has the best mean validation accuracy.
    let best = o
        .per_rate
        .iter()
        .map(|(_, s)| s.mean)
        .fold(f64::MIN, f64::max);
    assert_eq!(
        o.per_rate
            .iter()
            .find(|(p, _)| *p == o.selected)
            .unwrap()
            .1
            .mean,
        best
    );
    assert_eq!(o.pool, 600);
    assert_written(
        &out,
        &["dropout-rate.png"],
        "| model | training pool | selected p |",
    );
}
