//! Hostile runs through the real binary: data and configurations that used to panic, abort or
//! be silently ignored, run folders that used to be overwritten, and runs killed half-way.
//! Everything here trains on small synthetic IDX files in a temporary folder, so it needs no
//! downloaded data and takes seconds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;
use flint_data::idx::encode_idx;
use predicates::prelude::*;

fn flint() -> Command {
    let mut cmd = Command::cargo_bin("flint").unwrap();
    cmd.env("FLINT_OFFLINE", "1")
        .timeout(Duration::from_secs(120));
    cmd
}

/// An MNIST-layout folder of `n` training and `n` test images of `train_side` and `test_side`
/// pixels, ten classes in turn.
fn synthetic_mnist(dir: &Path, n: usize, train_side: usize, test_side: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    for (prefix, side) in [("train", train_side), ("t10k", test_side)] {
        // Each class a brighter band, so a model can learn something.
        let pixels: Vec<u8> = (0..n * side * side)
            .map(|i| {
                let (image, pixel) = (i / (side * side), i % (side * side));
                if pixel / side == labels[image] as usize * side / 10 {
                    250
                } else {
                    (i * 7 % 50) as u8
                }
            })
            .collect();
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx(&[n, side, side], &pixels),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx(&[n], &labels),
        )
        .unwrap();
    }
    dir.to_path_buf()
}

/// `flint train` on a synthetic MNIST folder, quietly, with `extra` flags.
fn train(data: &Path, extra: &[&str]) -> Command {
    let mut cmd = flint();
    cmd.args(["train", "--dataset", "mnist", "--quiet", "--data-dir"])
        .arg(data)
        .args(extra);
    cmd
}

fn stderr_of(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "expected a clear error (exit 1), got {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn trained_run(dir: &Path) -> (PathBuf, PathBuf) {
    let data = synthetic_mnist(&dir.join("data"), 200, 28, 28);
    let run = dir.join("run");
    train(&data, &["--model", "mlp", "--epochs", "1", "--output"])
        .arg(&run)
        .assert()
        .success()
        .stdout(predicate::str::starts_with("test accuracy: "));
    (data, run)
}

#[test]
fn a_test_split_of_other_images_is_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let bad = synthetic_mnist(&dir.path().join("bad"), 100, 28, 32);
    for model in ["mlp", "cnn"] {
        let msg = stderr_of(
            train(&bad, &["--model", model, "--epochs", "1", "--output"])
                .arg(dir.path().join(model)),
        );
        assert!(msg.contains("test split: the model expects"), "{msg}");
        assert!(msg.contains("[1, 32, 32]"), "{msg}");
    }
    // `flint eval --data-dir` of a run trained on good data.
    let (_, run) = trained_run(dir.path());
    let msg = stderr_of(
        flint()
            .args(["eval", "--checkpoint"])
            .arg(&run)
            .arg("--data-dir")
            .arg(&bad),
    );
    assert!(
        msg.contains("test split: the model expects 784 input features"),
        "{msg}"
    );
}

#[test]
fn absurd_batch_sizes_train_one_batch_of_everything() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("data"), 60, 28, 28);
    for (i, size) in ["18446744073709551615", "1000000000000"].iter().enumerate() {
        train(
            &data,
            &["--model", "mlp", "--epochs", "1", "--batch-size", size],
        )
        .arg("--output")
        .arg(dir.path().join(format!("run{i}")))
        .assert()
        .success()
        .stdout(predicate::str::starts_with("test accuracy: "));
    }
}

#[test]
fn models_too_big_to_count_or_to_fit_are_refused_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    use flint_models::{CnnConfig, MlpConfig, ModelConfig};
    let write = |name: &str, model: ModelConfig| {
        let path = dir.path().join(name);
        let config = flint_train::TrainConfig::new(model).with_dataset("mnist".into());
        std::fs::write(&path, serde_json::to_string(&config).unwrap()).unwrap();
        path
    };
    let mlp = |hidden: usize| ModelConfig::Mlp(MlpConfig::new().with_hidden(vec![hidden]));
    let uncountable = write("huge.json", mlp(4_611_686_018_427_387_904));
    let wide = write("wide.json", mlp(100_000_000));
    let deep = write(
        "deep.json",
        ModelConfig::Cnn(CnnConfig::new().with_channels(vec![100_000, 100_000])),
    );
    let data = synthetic_mnist(&dir.path().join("data"), 20, 28, 28);
    for (config, expected) in [
        (
            &uncountable,
            "more parameters or activations than a 64-bit count holds",
        ),
        (&wide, "the mlp has 79500000010 parameters"),
        (&deep, "the cnn has 90628701418 parameters"),
    ] {
        for cmd in [
            flint().args(["info", "--config"]).arg(config),
            train(&data, &["--config"]).arg(config),
        ] {
            let msg = stderr_of(cmd);
            assert!(msg.contains(expected), "{msg}");
        }
        let msg = stderr_of(flint().args(["info", "--config"]).arg(config));
        if !expected.contains("64-bit") {
            assert!(msg.contains("more than this machine's"), "{msg}");
        }
    }
}

#[test]
fn too_many_threads_for_the_address_space_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("data"), 20, 28, 28);
    let bin = assert_cmd::cargo::cargo_bin("flint");
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4000000; exec \"$0\" train --dataset mnist --model mlp --epochs 1 --quiet --threads 6000 --data-dir \"$1\" --output \"$2\"")
        .arg(&bin)
        .arg(&data)
        .arg(dir.path().join("run"))
        .env("FLINT_OFFLINE", "1")
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(
        msg.contains("cannot start 6000 compute threads") && msg.contains("--threads"),
        "{msg}"
    );
}

#[test]
fn resume_refuses_every_flag_that_would_change_the_run() {
    let cases: &[&[&str]] = &[
        &["--lr", "0.1"],
        &["--batch-size", "7"],
        &["--dropout", "0.1"],
        &["--seed", "3"],
        &["--optimizer", "sgd"],
        &["--limit", "10"],
        &["--early-stopping", "2"],
        &["--weight-decay", "0.1"],
        &["--augment-flip"],
    ];
    for flags in cases {
        let msg = stderr_of_usage(
            flint()
                .args(["train", "--resume", "somewhere"])
                .args(*flags),
        );
        assert!(
            msg.contains("'--resume <RESUME>' cannot be used with") && msg.contains(flags[0]),
            "{flags:?}: {msg}"
        );
    }
}

/// clap's usage errors exit with 2.
fn stderr_of_usage(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn finetune_refuses_what_train_refuses() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--weight-decay", "NaN"],
            "weight decay must be >= 0, got NaN",
        ),
        (&["--weight-decay=-5"], "weight decay must be >= 0, got -5"),
        (&["--momentum", "2"], "momentum must be in [0, 1), got 2"),
        (&["--step-size", "0"], "step schedule needs step_size >= 1"),
    ];
    for (flags, expected) in cases {
        let msg = stderr_of(
            flint()
                .args([
                    "finetune",
                    "--pretrained",
                    "mnist-cnn-bn",
                    "--data",
                    "nowhere",
                ])
                .args(*flags),
        );
        assert!(msg.contains(expected), "{flags:?}: {msg}");
        let msg = stderr_of(flint().args(["train"]).args(*flags));
        assert!(msg.contains(expected), "train {flags:?}: {msg}");
    }
}

#[test]
fn unknown_config_keys_and_edited_configs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = trained_run(dir.path());
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("config.json")).unwrap()).unwrap();
    config["dropuot"] = 0.9.into();
    let typo = dir.path().join("typo.json");
    std::fs::write(&typo, config.to_string()).unwrap();
    let msg = stderr_of(train(&data, &["--config"]).arg(&typo));
    assert!(msg.contains("unknown key `dropuot`"), "{msg}");
    assert!(msg.contains("typo.json"), "{msg}");

    // config.json edited after training: eval and predict refuse it, as --resume does.
    let path = run.join("config.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("\"seed\": 0", "\"seed\": 1")).unwrap();
    for cmd in [
        flint()
            .args(["eval", "--checkpoint"])
            .arg(&run)
            .arg("--data-dir")
            .arg(&data),
        flint()
            .args(["train", "--resume"])
            .arg(&run)
            .arg("--data-dir")
            .arg(&data),
    ] {
        let msg = stderr_of(cmd);
        assert!(msg.contains("config.json has changed"), "{msg}");
    }
}

#[test]
fn an_exploding_loss_stops_the_run_like_nan() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("data"), 400, 28, 28);
    let msg = stderr_of(
        train(
            &data,
            &[
                "--model",
                "mlp",
                "--epochs",
                "3",
                "--optimizer",
                "adam",
                "--lr",
                "1e6",
            ],
        )
        .args(["--batch-size", "32", "--output"])
        .arg(dir.path().join("run")),
    );
    assert!(msg.contains("training stopped"), "{msg}");
    assert!(
        msg.contains("exploded to") || msg.contains("became NaN") || msg.contains("became inf"),
        "{msg}"
    );
}

#[test]
fn output_folders_with_other_files_are_never_written_into() {
    let dir = tempfile::tempdir().unwrap();
    let data = synthetic_mnist(&dir.path().join("data"), 20, 28, 28);
    let mine = dir.path().join("mine");
    std::fs::create_dir_all(&mine).unwrap();
    for name in ["report.md", "metrics.csv", "result.json"] {
        std::fs::write(mine.join(name), "the user's own").unwrap();
    }
    let msg = stderr_of(train(&data, &["--model", "mlp", "--epochs", "1", "--output"]).arg(&mine));
    assert!(
        msg.contains("is not empty (it holds metrics.csv, report.md, result.json)"),
        "{msg}"
    );
    for name in ["report.md", "metrics.csv", "result.json"] {
        assert_eq!(
            std::fs::read_to_string(mine.join(name)).unwrap(),
            "the user's own"
        );
    }
    let msg = stderr_of(&mut train(
        &data,
        &["--model", "mlp", "--epochs", "1", "--output", "/"],
    ));
    assert!(msg.contains("/ is not empty"), "{msg}");
    // An empty folder is fine.
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    train(&data, &["--model", "mlp", "--epochs", "1", "--output"])
        .arg(&empty)
        .assert()
        .success();
}

#[test]
fn a_run_killed_in_its_first_epoch_resumes_and_leftovers_go() {
    let dir = tempfile::tempdir().unwrap();
    let (data, finished) = trained_run(dir.path());
    // What a kill during epoch 1 leaves: config.json, a half-written file and half a checkpoint.
    let killed = dir.path().join("killed");
    std::fs::create_dir_all(killed.join("checkpoints/.tmp-last-4242")).unwrap();
    std::fs::copy(finished.join("config.json"), killed.join("config.json")).unwrap();
    std::fs::write(killed.join(".metrics.csv.part-4242"), "epoch,").unwrap();
    std::fs::write(
        killed.join("checkpoints/.tmp-last-4242/model.bpk"),
        [0u8; 64],
    )
    .unwrap();
    std::fs::create_dir_all(killed.join("checkpoints/.old-best-77")).unwrap();
    // A user's own dotfile that only looks similar stays.
    std::fs::write(killed.join(".notes-2024"), "mine").unwrap();

    // --output sends the user to --resume ...
    let msg = stderr_of(train(&data, &["--model", "mlp", "--output"]).arg(&killed));
    assert!(msg.contains("--resume"), "{msg}");
    // ... which now continues it, from the start, to the same result as the finished run.
    let out = flint()
        .args(["train", "--quiet", "--resume"])
        .arg(&killed)
        .arg("--data-dir")
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result = |run: &Path| -> f64 {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(run.join("result.json")).unwrap()).unwrap();
        v["test_accuracy"].as_f64().unwrap()
    };
    assert_eq!(result(&killed), result(&finished));
    assert!(!killed.join(".metrics.csv.part-4242").exists());
    assert!(!killed.join("checkpoints/.tmp-last-4242").exists());
    assert!(!killed.join("checkpoints/.old-best-77").exists());
    assert!(killed.join(".notes-2024").exists());
    assert!(killed.join("checkpoints/last/state.json").exists());
}

#[cfg(unix)]
#[test]
fn checkpoint_files_that_are_devices_or_fifos_are_refused_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let (data, run) = trained_run(dir.path());
    let best = run.join("checkpoints/best");
    std::fs::remove_file(best.join("model.bpk")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", best.join("model.bpk")).unwrap();
    let eval = || {
        let mut cmd = flint();
        cmd.args(["eval", "--checkpoint"])
            .arg(&run)
            .arg("--data-dir")
            .arg(&data)
            .timeout(Duration::from_secs(30));
        cmd
    };
    let msg = stderr_of(&mut eval());
    assert!(
        msg.contains("model.bpk: a character device, not a regular file"),
        "{msg}"
    );

    std::fs::remove_file(best.join("state.json")).unwrap();
    let made = std::process::Command::new("mkfifo")
        .arg(best.join("state.json"))
        .status()
        .unwrap();
    assert!(made.success());
    let msg = stderr_of(&mut eval());
    assert!(
        msg.contains("cannot read state.json: a named pipe (FIFO), not a regular file"),
        "{msg}"
    );
}

#[test]
fn a_truncated_jpeg_is_classified_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let (_, run) = trained_run(dir.path());
    let whole = dir.path().join("whole.jpg");
    image::GrayImage::from_fn(64, 64, |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]))
        .save(&whole)
        .unwrap();
    let bytes = std::fs::read(&whole).unwrap();
    let cut = dir.path().join("cut.jpg");
    std::fs::write(&cut, &bytes[..bytes.len() * 7 / 10]).unwrap();
    let out = flint()
        .args(["predict", "--checkpoint"])
        .arg(&run)
        .arg(&whole)
        .arg(&cut)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("whole.jpg: ") && stdout.contains("cut.jpg: "),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: ") && stderr.contains("cut.jpg: the JPEG file is truncated"),
        "{stderr}"
    );
    assert!(!stderr.contains("whole.jpg"), "{stderr}");
}
