//! Weight and model files through the `flint` binary (issue #18): catalogued model files are
//! used only with the catalogue's SHA-256 (a modified one is listed unavailable with both
//! checksums, and used only when its path is given), half-precision weights load, and a FIFO or
//! a device named like a weight file is refused at once.
//!
//! Each run gets its own model folder (`FLINT_MODELS`), working directory and `HOME`, so only
//! the files written here are found.

use std::path::{Path, PathBuf};
use std::time::Duration;

use assert_cmd::Command;

mod common;
use common::skip;

/// The catalogue's SHA-256 of `efficientnet-lite0.pth` and `mnist-cnn-bn.safetensors`
/// (crates/flint-pretrained/src/catalog.rs).
const EFFICIENTNET_PTH_SHA: &str =
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db";
const MNIST_SAFETENSORS_SHA: &str =
    "f23a34cfa782d2a61cf65d70d7813c7f4d4e9a1e79d81ee7bb0695dda1606fe4";

/// A sandbox: `models/` as `FLINT_MODELS`, an empty working directory and home.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    models: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let models = root.join("models-here");
        for d in [&models, &root.join("cwd"), &root.join("home")] {
            std::fs::create_dir_all(d).unwrap();
        }
        Self {
            _dir: dir,
            root,
            models,
        }
    }

    fn flint(&self) -> Command {
        let mut cmd = Command::cargo_bin("flint").unwrap();
        cmd.env("FLINT_OFFLINE", "1")
            .env("FLINT_MODELS", &self.models)
            .env("HOME", self.root.join("home"))
            .current_dir(self.root.join("cwd"))
            .timeout(Duration::from_secs(120));
        cmd
    }

    fn run(&self, args: &[&str]) -> (bool, String) {
        let out = self.flint().args(args).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !text.contains("panicked"),
            "flint {}: panicked:\n{text}",
            args.join(" ")
        );
        (out.status.success(), text)
    }
}

fn sha256(path: &Path) -> String {
    flint_io::fs::sha256_file(path).unwrap()
}

/// The line under a model's name in `flint models`.
fn status_of<'a>(listing: &'a str, name: &str) -> &'a str {
    let mut lines = listing.lines();
    lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{listing}"));
    lines.next().unwrap_or_default().trim()
}

/// A safetensors file of mnist-cnn-bn's shapes (PyTorch names), every value 0.5 in float16:
/// loadable, and not the catalogued file.
fn half_precision_mnist_cnn_bn() -> Vec<u8> {
    let shapes: &[(&str, &[usize])] = &[
        ("conv1.weight", &[8, 1, 3, 3]),
        ("conv1.bias", &[8]),
        ("conv2.weight", &[16, 8, 3, 3]),
        ("conv2.bias", &[16]),
        ("conv3.weight", &[24, 16, 3, 3]),
        ("conv3.bias", &[24]),
        ("norm1.weight", &[24]),
        ("norm1.bias", &[24]),
        ("norm1.running_mean", &[24]),
        ("norm1.running_var", &[24]),
        ("fc1.weight", &[32, 11616]),
        ("fc1.bias", &[32]),
        ("fc2.weight", &[10, 32]),
        ("fc2.bias", &[10]),
        ("norm2.weight", &[10]),
        ("norm2.bias", &[10]),
        ("norm2.running_mean", &[10]),
        ("norm2.running_var", &[10]),
    ];
    let half_one_half = 0x3800u16.to_le_bytes(); // 0.5 in IEEE binary16
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape) in shapes {
        let start = data.len();
        for _ in 0..shape.iter().product::<usize>() {
            data.extend_from_slice(&half_one_half);
        }
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": "F16", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::Value::Object(header).to_string().into_bytes();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(&data);
    out
}

/// Random bytes under a catalogued name: listed unavailable with the file's and the
/// catalogue's SHA-256, and not loaded by name.
#[test]
fn models_lists_a_modified_catalogued_file_as_unavailable_with_both_checksums() {
    let sb = Sandbox::new();
    let pth = sb.models.join("efficientnet-lite0.pth");
    std::fs::write(&pth, b"PK\x03\x04 not EfficientNet's weights").unwrap();
    let st = sb.models.join("mnist-cnn-bn.safetensors");
    std::fs::write(
        &st,
        (0..4096u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let (ok, out) = sb.run(&["models"]);
    assert!(ok, "{out}");
    for (name, path, expected) in [
        ("efficientnet-lite0-torch", &pth, EFFICIENTNET_PTH_SHA),
        ("mnist-cnn-bn", &st, MNIST_SAFETENSORS_SHA),
    ] {
        let status = status_of(&out, name);
        let want = format!(
            "unavailable: {} has SHA-256 {}, expected {expected} (modified or corrupt)",
            path.display(),
            sha256(path)
        );
        assert!(
            status.starts_with(&want),
            "{name}: {status}\nwanted: {want}"
        );
        assert!(status.contains("cargo xtask models fetch"), "{status}");
    }
    // Asking for it by name is refused with the same reason, before anything is loaded.
    let (ok, out) = sb.run(&["models", "--params", "mnist-cnn-bn"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains(&format!("has SHA-256 {}", sha256(&st)))
            && out.contains(MNIST_SAFETENSORS_SHA),
        "{out}"
    );
}

/// A loadable file that is not the catalogued one (float16 weights) is refused by name and
/// used when its path is given.
#[test]
fn a_modified_file_is_used_only_when_given_by_path() {
    let sb = Sandbox::new();
    let st = sb.models.join("mnist-cnn-bn.safetensors");
    std::fs::write(&st, half_precision_mnist_cnn_bn()).unwrap();
    let (_, out) = sb.run(&["models"]);
    assert!(
        status_of(&out, "mnist-cnn-bn").starts_with("unavailable:"),
        "{out}"
    );
    let (ok, out) = sb.run(&["models", "--params", "mnist-cnn-bn"]);
    assert!(!ok && out.contains("modified or corrupt"), "{out}");
    let (ok, out) = sb.run(&["models", "--params", st.to_str().unwrap()]);
    assert!(ok, "{out}");
    assert!(out.contains("fc1.weight"), "{out}");
}

/// The catalogued file itself is available from the model folder.
#[test]
fn the_catalogued_file_is_available() {
    let shared = std::env::var_os("FLINT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"));
    let real = shared.join("mnist-cnn-bn.safetensors");
    if !real.is_file() {
        return skip(&format!("{} is missing", real.display()));
    }
    let sb = Sandbox::new();
    let copy = sb.models.join("mnist-cnn-bn.safetensors");
    std::fs::copy(&real, &copy).unwrap();
    let (ok, out) = sb.run(&["models"]);
    assert!(ok, "{out}");
    assert_eq!(
        status_of(&out, "mnist-cnn-bn"),
        format!("available: {}", copy.display()),
        "{out}"
    );
}

/// A FIFO and a link to /dev/zero named like weight files: refused at once, not read.
#[cfg(unix)]
#[test]
fn fifos_and_devices_named_like_weight_files_are_refused() {
    let sb = Sandbox::new();
    let fifo = sb.root.join("mnist-cnn-bn.safetensors");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .is_ok_and(|s| s.success());
    let zero = sb.root.join("mnist-cnn-bn.pt");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let mut cases = vec![(zero, "a character device")];
    if made {
        cases.push((fifo, "a named pipe (FIFO)"));
    } else {
        eprintln!("mkfifo is not available: FIFO case not run");
    }
    for (path, what) in &cases {
        let (ok, out) = sb.run(&["models", "--params", path.to_str().unwrap()]);
        assert!(!ok, "{out}");
        assert!(
            out.contains(&format!("{what}, not a regular file")),
            "{}: {out}",
            path.display()
        );
    }
    // The same names in the model folder: listed unavailable, with the reason.
    std::os::unix::fs::symlink("/dev/zero", sb.models.join("mnist-cnn-bn.safetensors")).unwrap();
    let (ok, out) = sb.run(&["models"]);
    assert!(ok, "{out}");
    let status = status_of(&out, "mnist-cnn-bn");
    assert!(
        status.contains("a character device, not a regular file"),
        "{status}"
    );
}
