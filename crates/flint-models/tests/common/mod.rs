//! Where the shared models are, skipping honestly when they are missing, and PyTorch
//! checkpoints written by hand.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use burn::tensor::{DType, TensorData};

/// Whether missing data must fail the test (CI sets `FLINT_REQUIRE_DATA=1`) instead of skipping.
pub fn data_required() -> bool {
    std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips the calling test with a printed reason, or fails it when data is required.
pub fn skip(reason: &str) {
    if data_required() {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// The model folder: `$FLINT_MODELS`, else `../shared/models` beside the checkout.
pub fn models_dir() -> PathBuf {
    std::env::var_os("FLINT_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models"))
}

/// The file, or a skip (returning `None`) naming it.
pub fn file_or_skip(path: PathBuf) -> Option<PathBuf> {
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!(
            "{} is missing; set FLINT_MODELS to the folder holding it",
            path.display()
        ));
        None
    }
}

/// One tensor of a checkpoint, in PyTorch's layout and naming.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Entry {
    pub fn new(name: String, data: TensorData) -> Self {
        Self {
            name,
            dtype: data.dtype(),
            shape: data.shape().to_vec(),
            bytes: data.as_bytes().to_vec(),
        }
    }
}

fn storage_class(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "FloatStorage",
        DType::I64 => "LongStorage",
        other => panic!("no PyTorch storage written for {other:?}"),
    }
}

/// Protocol-2 pickle opcodes used by `torch.save`.
struct Pickle(Vec<u8>);

impl Pickle {
    fn global(&mut self, module: &str, name: &str) {
        self.0.push(b'c');
        self.0
            .extend_from_slice(format!("{module}\n{name}\n").as_bytes());
    }
    fn string(&mut self, s: &str) {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.0.extend_from_slice(s.as_bytes());
    }
    fn int(&mut self, i: usize) {
        self.0.push(b'J');
        self.0.extend_from_slice(&(i as i32).to_le_bytes());
    }
    fn tuple_of(&mut self, values: &[usize]) {
        self.0.push(b'(');
        for &v in values {
            self.int(v);
        }
        self.0.push(b't');
    }
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.0.extend_from_slice(b")R");
    }
}

/// The `data.pkl` of a state dict whose tensor `i` lives in storage `"i"`.
fn state_dict_pickle(entries: &[Entry]) -> Vec<u8> {
    let mut p = Pickle(vec![0x80, 2]);
    p.ordered_dict();
    p.0.push(b'(');
    for (i, e) in entries.iter().enumerate() {
        p.string(&e.name);
        p.global("torch._utils", "_rebuild_tensor_v2");
        p.0.push(b'(');
        // Persistent id: ('storage', torch.<Type>Storage, key, location, numel).
        p.0.push(b'(');
        p.string("storage");
        p.global("torch", storage_class(e.dtype));
        p.string(&i.to_string());
        p.string("cpu");
        p.int(e.shape.iter().product());
        p.0.extend_from_slice(b"tQ");
        p.int(0);
        p.tuple_of(&e.shape);
        let mut stride = vec![1; e.shape.len()];
        for d in (0..e.shape.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * e.shape[d + 1];
        }
        p.tuple_of(&stride);
        p.0.push(0x89); // requires_grad = False
        p.ordered_dict(); // backward hooks
        p.0.extend_from_slice(b"tR");
    }
    p.0.extend_from_slice(b"u.");
    p.0
}

/// CRC-32 (IEEE), as ZIP stores it.
fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: OnceLock<[u32; 256]> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, v) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *v = c;
        }
        t
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

/// A ZIP archive of stored (uncompressed) entries.
fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    let (time, date) = (0u16, ((2024 - 1980) << 9 | 1 << 5 | 1) as u16);
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // stored
            v.extend_from_slice(&time.to_le_bytes());
            v.extend_from_slice(&date.to_le_bytes());
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(data.len() as u32).to_le_bytes());
            v.extend_from_slice(&(name.len() as u16).to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // made by
        common(&mut central);
        central.extend_from_slice(&[0; 10]); // comment length, disk, attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let cd_offset = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// What `torch.save(state_dict, path)` writes (without its alignment padding): a ZIP of
/// `data.pkl`, `byteorder`, one stored entry per tensor and `version`.
pub fn pytorch_zip(entries: &[Entry]) -> Vec<u8> {
    let mut files = vec![
        ("archive/data.pkl".to_string(), state_dict_pickle(entries)),
        ("archive/byteorder".to_string(), b"little".to_vec()),
    ];
    for (i, e) in entries.iter().enumerate() {
        files.push((format!("archive/data/{i}"), e.bytes.clone()));
    }
    files.push(("archive/version".to_string(), b"3\n".to_vec()));
    zip_stored(&files)
}
