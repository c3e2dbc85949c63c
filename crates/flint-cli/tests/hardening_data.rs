//! Issue #18's data cases through the real `flint` binary: hostile images and image folders
//! give a clear error, quickly, within a memory limit.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use assert_cmd::Command;

mod common;
use common::available;

fn flint() -> Command {
    let mut cmd = Command::cargo_bin("flint").unwrap();
    cmd.env("FLINT_OFFLINE", "1")
        .timeout(Duration::from_secs(120));
    cmd
}

/// `flint ARGS` under `ulimit -v` (KiB of address space), through `sh -c`.
fn flint_limited(kib: u64, args: &[&std::ffi::OsStr]) -> Output {
    let bin = assert_cmd::cargo::cargo_bin("flint");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {kib} && exec \"$0\" \"$@\""))
        .arg(bin)
        .args(args)
        .env("FLINT_OFFLINE", "1")
        .timeout(Duration::from_secs(120));
    cmd.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_clean_failure(output: &Output) {
    let err = stderr(output);
    assert!(!output.status.success(), "expected a failure: {err}");
    assert_eq!(output.status.code(), Some(1), "exit status: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("memory allocation"), "{err}");
}

/// Case 6: a 1 x 2,000,000 PNG (8 kB) given to `flint predict` is refused from its header, with
/// its size in the message, inside a 4 GB address space (it used to allocate 8 GB).
#[test]
fn predict_refuses_a_thin_png_within_a_memory_limit() {
    if !available(&flint_data::MNIST) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let output = flint()
        .args([
            "train",
            "--dataset",
            "mnist",
            "--model",
            "mlp",
            "--epochs",
            "1",
        ])
        .args([
            "--limit",
            "200",
            "--test-limit",
            "100",
            "--quiet",
            "--output",
        ])
        .arg(&run)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));

    let thin = dir.path().join("thin.png");
    image::GrayImage::new(1, 2_000_000).save(&thin).unwrap();
    let output = flint_limited(
        4_000_000,
        &[
            "predict".as_ref(),
            "--checkpoint".as_ref(),
            run.as_os_str(),
            thin.as_os_str(),
        ],
    );
    assert_clean_failure(&output);
    let err = stderr(&output);
    assert!(
        err.contains(&format!(
            "error: {}: image is 1x2000000 pixels, an aspect ratio of 2000000:1; flint accepts at most 100:1",
            thin.display()
        )),
        "{err}"
    );
    assert!(err.contains("1 of 1 images could not be read"), "{err}");
}

/// A folder whose only class holds a loop back to the root, a FIFO, a link to a device, an
/// empty JPEG and a text file named `.png`.
#[cfg(unix)]
fn hostile_folder(root: &Path) {
    use std::os::unix::fs::symlink;
    let ants = root.join("ants");
    std::fs::create_dir_all(ants.join("task/1")).unwrap();
    symlink("..", ants.join("loop")).unwrap();
    symlink("/", ants.join("task/1/root")).unwrap();
    symlink("/dev/zero", ants.join("zero.jpg")).unwrap();
    std::fs::write(ants.join("empty.jpg"), b"").unwrap();
    std::fs::write(ants.join("notes.png"), b"not a picture").unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(ants.join("pipe.jpg"))
        .status()
        .unwrap();
    assert!(status.success());
}

/// Cases 8 and 9: `flint finetune` on a folder with a symlink loop (and a `/proc/self`-like
/// link to `/`, a FIFO, a device) ends at once; nothing special is opened, the links are not
/// followed, and the error lists the files with their reasons.
#[cfg(unix)]
#[test]
fn finetune_does_not_follow_links_or_open_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    hostile_folder(&images);
    let started = std::time::Instant::now();
    let output = flint()
        .args([
            "finetune",
            "--pretrained",
            "mobilenetv2",
            "--epochs",
            "1",
            "--data",
        ])
        .arg(&images)
        .arg("--output")
        .arg(dir.path().join("run"))
        .output()
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_clean_failure(&output);
    let err = stderr(&output);
    let ants = images.join("ants");
    assert!(
        err.contains(&format!(
            "{}: no usable images (all 6 files failed, e.g. {}: empty file (0 bytes); {}: symbolic link to a folder, not followed",
            images.display(),
            ants.join("empty.jpg").display(),
            ants.join("loop").display()
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}: not an image: the content is not PNG, JPEG or GIF",
            ants.join("notes.png").display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("run").exists());
}
