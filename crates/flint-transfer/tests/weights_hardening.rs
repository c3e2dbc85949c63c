//! Unusual and hostile weight files (issue #18): half and double precision converted to float32
//! and reported, integer tensors refused by name, FIFOs and devices refused without being read,
//! and the safetensors and PyTorch readers fuzzed with proptest (arbitrary and mutated bytes,
//! mutated headers and pickles): a load ends in `Ok` or a clear error, never a panic.
//!
//! The fixtures are written here, small and by hand: safetensors (8-byte header length, JSON
//! header, data) and PyTorch's ZIP checkpoint (`data.pkl`, a protocol-2 pickle of an
//! `OrderedDict` of `_rebuild_tensor_v2` calls, and one stored entry per storage). The fuzz
//! targets start from `../shared/models/mnist-cnn-bn.{safetensors,pt}` when they are there;
//! `PROPTEST_CASES=5000 cargo test -p flint-transfer --test weights_hardening fuzz` runs them
//! longer than CI's 32 cases.

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use burn::module::Module;
use burn::tensor::{DType, Device, Tensor};
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, bridge};
use flint_models::{MnistCnnBn, MnistCnnBnConfig};
use flint_transfer::{LoadOptions, LoadReport, TransferError, load_weights};
use proptest::prelude::*;

use common::models_dir;
use common::pytorch_file::{Entry, pt_from_parts, pytorch_zip, state_dict_pickle};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

fn device() -> Device {
    Device::flex()
}

/// A model's tensors as PyTorch would save them (Linear weights `[out, in]`, batch norm
/// `weight`/`bias`), float32.
fn pytorch_entries(model: &MnistCnnBn) -> Vec<Entry> {
    model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .map(|t| {
            let name = t.name.clone();
            let data = bridge::into_data(t).unwrap().convert_dtype(DType::F32);
            Entry {
                name,
                dtype: DType::F32,
                shape: data.shape().to_vec(),
                bytes: data.as_bytes().to_vec(),
            }
        })
        .collect()
}

/// The entries of a freshly initialised `MnistCnnBn` (computed once).
fn mnist_entries() -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| pytorch_entries(&MnistCnnBnConfig::new().init(&device())))
}

fn safetensors_dtype(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "F64",
        DType::F32 => "F32",
        DType::F16 => "F16",
        DType::BF16 => "BF16",
        DType::I64 => "I64",
        DType::I32 => "I32",
        DType::U8 => "U8",
        DType::Bool(_) => "BOOL",
        other => panic!("no safetensors name for {other:?}"),
    }
}

/// A safetensors file: little-endian u64 header length, JSON header, tensor data.
fn safetensors_bytes(entries: &[Entry]) -> Vec<u8> {
    let mut sorted: Vec<&Entry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for e in sorted {
        let start = data.len();
        data.extend_from_slice(&e.bytes);
        header.insert(
            e.name.clone(),
            serde_json::json!({
                "dtype": safetensors_dtype(e.dtype),
                "shape": e.shape,
                "data_offsets": [start, data.len()],
            }),
        );
    }
    safetensors_from_parts(&serde_json::Value::Object(header).to_string(), &data)
}

fn safetensors_from_parts(header: &str, data: &[u8]) -> Vec<u8> {
    let mut header = header.as_bytes().to_vec();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&header);
    out.extend_from_slice(data);
    out
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn load(path: &Path) -> Result<(MnistCnnBn, LoadReport), TransferError> {
    load_weights(
        MnistCnnBnConfig::new().init(&device()),
        path,
        &LoadOptions::new(),
    )
}

// ---------------------------------------------------------------------------------------------
// Half and double precision, integers
// ---------------------------------------------------------------------------------------------

/// Every mix of precisions loads as float32 equal to the file's values rounded to float32, the
/// report lists each converted tensor with its type, and the model runs.
#[test]
fn half_and_double_tensors_load_as_float32_and_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let some: &[(&str, DType)] = &[
        ("conv1.weight", DType::F16),
        ("fc1.weight", DType::BF16),
        ("norm1.running_var", DType::F64),
        ("norm2.weight", DType::F16),
    ];
    let mixes: Vec<(&str, Vec<(String, DType)>)> = vec![
        (
            "some",
            some.iter().map(|(n, d)| (n.to_string(), *d)).collect(),
        ),
        (
            "all-f16",
            mnist_entries()
                .iter()
                .map(|e| (e.name.clone(), DType::F16))
                .collect(),
        ),
        (
            "all-bf16",
            mnist_entries()
                .iter()
                .map(|e| (e.name.clone(), DType::BF16))
                .collect(),
        ),
        (
            "all-f64",
            mnist_entries()
                .iter()
                .map(|e| (e.name.clone(), DType::F64))
                .collect(),
        ),
    ];
    for (mix, dtypes) in &mixes {
        let entries: Vec<Entry> = mnist_entries()
            .iter()
            .map(|e| match dtypes.iter().find(|(n, _)| *n == e.name) {
                Some((_, d)) => e.cast(*d),
                None => e.clone(),
            })
            .collect();
        for (ext, bytes) in [
            ("safetensors", safetensors_bytes(&entries)),
            ("pt", pytorch_zip(&entries)),
        ] {
            let path = write(dir.path(), &format!("{mix}.{ext}"), &bytes);
            let (model, report) = load(&path).unwrap_or_else(|e| panic!("{mix}.{ext}: {e}"));
            assert_eq!(report.loaded.len(), 18, "{report}");
            // The report names the model's tensors (burn's `gamma`, not PyTorch's `weight`).
            let model_name = |n: &str| {
                n.replace("norm1.weight", "norm1.gamma")
                    .replace("norm2.weight", "norm2.gamma")
                    .replace("norm1.bias", "norm1.beta")
                    .replace("norm2.bias", "norm2.beta")
            };
            // flint's batch norm keeps its own `num_batches_tracked`, never loaded.
            let mut expected: Vec<(String, DType)> = dtypes
                .iter()
                .filter(|(n, _)| !n.ends_with("num_batches_tracked"))
                .map(|(n, d)| (model_name(n), *d))
                .collect();
            let mut converted = report.converted.clone();
            expected.sort_by(|a, b| a.0.cmp(&b.0));
            converted.sort_by(|a, b| a.0.cmp(&b.0));
            assert_eq!(converted, expected, "{mix}.{ext}: {report}");
            // Loaded values are the file's, rounded to float32 (exact for f16/bf16).
            for (loaded, file) in pytorch_entries(&model).iter().zip(&entries) {
                assert_eq!(loaded.name, file.name);
                assert_eq!(loaded.dtype, DType::F32);
                let (got, want) = (loaded.values(), file.values());
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{mix}.{ext}: {} differs from the file",
                    file.name
                );
            }
            assert_eq!(model.conv1.weight.val().dtype(), DType::F32);
            // The forward pass that panicked with `dtype mismatch (expected F16, got F32)`.
            let x = Tensor::<4>::zeros([2, 1, 28, 28], &device());
            let y = model.valid().forward(x);
            assert_eq!(y.dims(), [2, 10]);
            let y: Vec<f32> = y.into_data().try_to_vec().unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{mix}.{ext}: {y:?}");
        }
    }
    // The report says so, one line per source type.
    let entries: Vec<Entry> = mnist_entries()
        .iter()
        .map(|e| match e.name.as_str() {
            "conv1.weight" | "conv2.weight" => e.cast(DType::F16),
            "fc2.bias" => e.cast(DType::F64),
            _ => e.clone(),
        })
        .collect();
    let path = write(
        dir.path(),
        "mixed.safetensors",
        &safetensors_bytes(&entries),
    );
    let (_, report) = load(&path).unwrap();
    let text = report.to_string();
    assert!(text.contains("18 tensors loaded"), "{text}");
    assert!(
        text.contains("2 tensors converted from float16 to float32: conv1.weight, conv2.weight"),
        "{text}"
    );
    assert!(
        text.contains("1 tensor converted from float64 to float32: fc2.bias"),
        "{text}"
    );
    // A float32 file converts nothing and says nothing about it.
    let path = write(dir.path(), "f32.pt", &pytorch_zip(mnist_entries()));
    let (_, report) = load(&path).unwrap();
    assert!(report.converted.is_empty(), "{report}");
    assert!(!report.to_string().contains("converted"), "{report}");
}

/// The real burn MNIST weights in half precision give the same predictions as in float32.
#[test]
fn real_weights_in_half_precision_still_classify() {
    let Some(file) = common::file_or_skip(models_dir().join("mnist-cnn-bn.safetensors")) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (full, _) = load(&file).unwrap();
    let entries: Vec<Entry> = pytorch_entries(&full)
        .iter()
        .map(|e| e.cast(DType::F16))
        .collect();
    let half = write(
        dir.path(),
        "mnist-cnn-bn.safetensors",
        &safetensors_bytes(&entries),
    );
    let (model, report) = load(&half).unwrap();
    assert_eq!(report.converted.len(), 18, "{report}");
    let x = Tensor::<4>::random(
        [16, 1, 28, 28],
        burn::tensor::Distribution::Normal(0.0, 1.0),
        &device(),
    );
    let a = full.valid().forward(x.clone()).argmax(1);
    let b = model.valid().forward(x).argmax(1);
    let agree: i64 = a.equal(b).int().sum().into_scalar();
    assert!(agree >= 15, "{agree}/16 predictions agree");
}

/// Integers or booleans where the model has floats: an error naming the tensor and both kinds.
#[test]
fn integer_tensors_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, name) in [
        (DType::I64, "int64"),
        (DType::I32, "int32"),
        (DType::U8, "uint8"),
    ] {
        let entries: Vec<Entry> = mnist_entries()
            .iter()
            .map(|e| {
                if e.name == "conv2.bias" {
                    e.cast(dtype)
                } else {
                    e.clone()
                }
            })
            .collect();
        for (ext, bytes) in [
            ("safetensors", safetensors_bytes(&entries)),
            ("pt", pytorch_zip(&entries)),
        ] {
            let path = write(dir.path(), &format!("int.{ext}"), &bytes);
            let err = load(&path).unwrap_err();
            let msg = err.to_string();
            assert!(matches!(err, TransferError::DType { .. }), "{msg}");
            assert!(
                msg.contains(&format!(
                    "tensor `conv2.bias` holds {name} values but the model expects \
                     floating-point values"
                )),
                "{msg}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Only regular files
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a thread and fails the test if it takes longer than `limit` (instead of hanging).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        tx.send(f()).ok();
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("still running after {limit:?}: it hangs"))
}

#[cfg(unix)]
#[test]
fn fifos_devices_and_directories_are_refused_without_reading() {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["safetensors", "pt", "pth"] {
        let fifo = dir.path().join(format!("fifo.{ext}"));
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .is_ok_and(|s| s.success());
        let zero = dir.path().join(format!("zero.{ext}"));
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let folder = dir.path().join(format!("folder.{ext}"));
        std::fs::create_dir(&folder).unwrap();
        let mut cases = vec![(zero, "a character device"), (folder, "a folder")];
        if made {
            cases.push((fifo, "a named pipe (FIFO)"));
        } else {
            eprintln!("mkfifo is not available: FIFO case not run");
        }
        for (path, what) in cases {
            let p = path.clone();
            let err = within(Duration::from_secs(20), move || load(&p).map(|_| ()))
                .expect_err("a non-regular file loaded");
            let msg = err.to_string();
            assert!(matches!(err, TransferError::BadFile { .. }), "{msg}");
            assert!(
                msg.contains(&format!("{what}, not a regular file")),
                "{}: {msg}",
                path.display()
            );
        }
    }
    // A symbolic link to a regular file is fine.
    let real = write(
        dir.path(),
        "real.safetensors",
        &safetensors_bytes(mnist_entries()),
    );
    let link = dir.path().join("link.safetensors");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    load(&link).unwrap();
}

/// A safetensors header length past the end of the file, or beyond what flint reads.
#[test]
fn safetensors_header_lengths_are_checked_against_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let good = safetensors_bytes(mnist_entries());
    for (claim, expect) in [
        (
            u64::MAX,
            "header claims 18446744073709551615 bytes but the file has",
        ),
        (good.len() as u64, "but the file has"),
    ] {
        let mut bytes = good.clone();
        bytes[..8].copy_from_slice(&claim.to_le_bytes());
        let path = write(dir.path(), "long.safetensors", &bytes);
        let msg = load(&path).unwrap_err().to_string();
        assert!(msg.contains(expect), "{msg}");
    }
    let path = write(dir.path(), "short.safetensors", b"\x10\0\0");
    let msg = load(&path).unwrap_err().to_string();
    assert!(
        msg.contains("3 bytes, shorter than the 8-byte header length"),
        "{msg}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing
// ---------------------------------------------------------------------------------------------

/// Cases per fuzz target: `PROPTEST_CASES`, else a few dozen (CI).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(32),
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// The starting file: the real one when it is there, else one written here.
fn seed(ext: &str) -> &'static [u8] {
    static SAFETENSORS: OnceLock<Vec<u8>> = OnceLock::new();
    static PT: OnceLock<Vec<u8>> = OnceLock::new();
    let (cell, file, make): (_, _, fn() -> Vec<u8>) = if ext == "safetensors" {
        (&SAFETENSORS, "mnist-cnn-bn.safetensors", || {
            safetensors_bytes(mnist_entries())
        })
    } else {
        (&PT, "mnist-cnn-bn.pt", || pytorch_zip(mnist_entries()))
    };
    cell.get_or_init(|| std::fs::read(models_dir().join(file)).unwrap_or_else(|_| make()))
}

/// Where a mutation lands: near the start (headers, pickles), near the end (ZIP directory), or
/// anywhere.
#[derive(Debug, Clone)]
enum At {
    Head(usize),
    Tail(usize),
    Anywhere(f64),
}

impl At {
    fn index(&self, len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        match self {
            At::Head(i) => i % len.min(4096),
            At::Tail(i) => len - 1 - i % len.min(4096),
            At::Anywhere(f) => ((len as f64 * f) as usize).min(len - 1),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Flip(At, u8),
    Overwrite(At, Vec<u8>),
    Insert(At, Vec<u8>),
    Remove(At, usize),
    Truncate(At),
    Extend(Vec<u8>),
    /// A little-endian u64 written over 8 bytes (a length or an offset).
    Number(At, u64),
}

fn at() -> impl Strategy<Value = At> {
    prop_oneof![
        4 => (0usize..4096).prop_map(At::Head),
        2 => (0usize..4096).prop_map(At::Tail),
        2 => (0.0f64..1.0).prop_map(At::Anywhere),
    ]
}

fn number() -> impl Strategy<Value = u64> {
    prop_oneof![
        Just(0u64),
        Just(u64::MAX),
        Just(i64::MAX as u64),
        Just(u32::MAX as u64),
        0u64..1 << 32,
        any::<u64>(),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let bytes = prop::collection::vec(any::<u8>(), 1..64);
    prop_oneof![
        4 => (at(), 1u8..=255).prop_map(|(a, x)| Op::Flip(a, x)),
        2 => (at(), bytes.clone()).prop_map(|(a, b)| Op::Overwrite(a, b)),
        1 => (at(), bytes.clone()).prop_map(|(a, b)| Op::Insert(a, b)),
        1 => (at(), 1usize..256).prop_map(|(a, n)| Op::Remove(a, n)),
        1 => at().prop_map(Op::Truncate),
        1 => bytes.prop_map(Op::Extend),
        2 => (at(), number()).prop_map(|(a, n)| Op::Number(a, n)),
    ]
}

fn mutate(mut bytes: Vec<u8>, ops: &[Op]) -> Vec<u8> {
    for op in ops {
        let len = bytes.len();
        match op {
            Op::Flip(a, x) if len > 0 => bytes[a.index(len)] ^= x,
            Op::Overwrite(a, b) if len > 0 => {
                let i = a.index(len);
                let n = b.len().min(len - i);
                bytes[i..i + n].copy_from_slice(&b[..n]);
            }
            Op::Insert(a, b) => {
                let i = a.index(len);
                bytes.splice(i..i, b.iter().copied());
            }
            Op::Remove(a, n) if len > 0 => {
                let i = a.index(len);
                bytes.drain(i..(i + n).min(len));
            }
            Op::Truncate(a) => bytes.truncate(a.index(len)),
            Op::Extend(b) => bytes.extend_from_slice(b),
            Op::Number(a, n) if len >= 8 => {
                let i = a.index(len).min(len - 8);
                bytes[i..i + 8].copy_from_slice(&n.to_le_bytes());
            }
            _ => {}
        }
    }
    bytes
}

/// Whole files: the seed mutated, or bytes from nowhere.
fn file_bytes(ext: &'static str) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => prop::collection::vec(op(), 1..8).prop_map(move |ops| mutate(seed(ext).to_vec(), &ops)),
        1 => prop::collection::vec(any::<u8>(), 0..2048),
    ]
}

/// Loads `bytes` as `name`; a successful load must give a model that runs.
fn load_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), TestCaseError> {
    let path = write(dir, name, bytes);
    match load(&path) {
        Ok((model, report)) => {
            prop_assert_eq!(report.loaded.len(), 18);
            let y = model
                .valid()
                .forward(Tensor::<4>::zeros([1, 1, 28, 28], &device()));
            prop_assert_eq!(y.dims(), [1, 10]);
        }
        Err(e) => {
            // A clear error names the file, and no panic was caught on the way (burn-store turns
            // a panic while reading a tensor into "panic while producing tensor data").
            let msg = e.to_string();
            prop_assert!(msg.contains(&path.display().to_string()), "{}", msg);
            prop_assert!(!msg.contains("panic"), "{}", msg);
        }
    }
    Ok(())
}

/// Kilobytes of peak resident memory of this process, where the system says.
fn peak_rss_kb() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Memory stays bounded: the process never held more than 2 GB at a time (the seed files are
/// 1.5 MB; a reader trusting a length from the file would allocate up to exabytes).
fn assert_memory_bounded() {
    if let Some(kb) = peak_rss_kb() {
        assert!(kb < 2 << 20, "peak resident memory {kb} kB");
    }
}

proptest! {
    #![proptest_config(config())]

    /// Arbitrary and mutated safetensors files.
    #[test]
    fn fuzz_safetensors_bytes(bytes in file_bytes("safetensors")) {
        let dir = tempfile::tempdir().unwrap();
        load_bytes(dir.path(), "fuzz.safetensors", &bytes)?;
        assert_memory_bounded();
    }

    /// Arbitrary and mutated PyTorch checkpoints.
    #[test]
    fn fuzz_pytorch_bytes(bytes in file_bytes("pt")) {
        let dir = tempfile::tempdir().unwrap();
        load_bytes(dir.path(), "fuzz.pt", &bytes)?;
        assert_memory_bounded();
    }

    /// safetensors files whose JSON header is well-formed but says anything: unknown or
    /// mismatched dtypes, huge or empty shapes, offsets out of order or past the data.
    #[test]
    fn fuzz_safetensors_header(
        tensors in prop::collection::vec(
            (
                prop_oneof![
                    Just("conv1.weight".to_string()),
                    Just("fc2.weight".to_string()),
                    Just("norm2.running_var".to_string()),
                    "[a-z.]{0,12}",
                ],
                prop::sample::select(vec![
                    "F32", "F16", "BF16", "F64", "I64", "BOOL", "U8", "F8_E4M3", "C64", "Q4",
                ]),
                prop::collection::vec(
                    prop::sample::select(vec![0u64, 1, 3, 8, 10, 32, 1 << 31, 1 << 62, u64::MAX]),
                    0..5,
                ),
                (number(), number()),
                any::<bool>(),
            ),
            0..6,
        ),
        data_len in prop_oneof![Just(0usize), 0usize..4096],
        metadata in prop::option::of("[ -~]{0,40}"),
    ) {
        let mut header = serde_json::Map::new();
        let mut offset = 0u64;
        for (name, dtype, shape, (begin, end), consistent) in &tensors {
            let size = shape
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .and_then(|n| n.checked_mul(if dtype.contains("64") { 8 } else { 4 }));
            let offsets = match (consistent, size) {
                (true, Some(n)) => {
                    let o = [offset, offset.saturating_add(n)];
                    offset = o[1];
                    o
                }
                _ => [*begin, *end],
            };
            header.insert(
                name.clone(),
                serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": offsets}),
            );
        }
        if let Some(m) = metadata {
            header.insert("__metadata__".into(), serde_json::json!({ "format": m }));
        }
        let data: Vec<u8> = (0..data_len).map(|i| (i * 31 % 251) as u8).collect();
        let bytes = safetensors_from_parts(&serde_json::Value::Object(header).to_string(), &data);
        let dir = tempfile::tempdir().unwrap();
        load_bytes(dir.path(), "header.safetensors", &bytes)?;
        assert_memory_bounded();
    }

    /// PyTorch checkpoints whose pickle is mutated inside a ZIP that is otherwise correct
    /// (checksums recomputed), so the mutations reach the unpickler, and whose storages may be
    /// cut short, grown or missing.
    #[test]
    fn fuzz_pytorch_pickle(
        ops in prop::collection::vec(op(), 0..6),
        storage in prop::option::of((0usize..18, prop_oneof![Just(None), (0usize..64).prop_map(Some)])),
        dtype_swap in prop::option::of((0usize..18, 0usize..6)),
    ) {
        let mut entries = mnist_entries().to_vec();
        if let Some((i, d)) = dtype_swap {
            let dtype = [DType::F16, DType::BF16, DType::F64, DType::I64, DType::U8,
                         DType::Bool(burn::tensor::BoolStore::Native)][d];
            // The pickle declares the new type; the storage keeps float32's bytes.
            entries[i].dtype = dtype;
        }
        let pickle = mutate(state_dict_pickle(&entries), &ops);
        let mut storages: Vec<Vec<u8>> = mnist_entries().iter().map(|e| e.bytes.clone()).collect();
        if let Some((i, len)) = storage {
            match len {
                None => storages[i].clear(),
                Some(n) => {
                    let len = storages[i].len();
                    storages[i].truncate(len.saturating_sub(n * 7));
                }
            }
        }
        let bytes = pt_from_parts(pickle, &storages);
        let dir = tempfile::tempdir().unwrap();
        load_bytes(dir.path(), "pickle.pt", &bytes)?;
        assert_memory_bounded();
    }
}
