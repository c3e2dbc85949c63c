//! PyTorch checkpoints written by hand for tests: `torch.save(state_dict)`'s ZIP of a protocol-2
//! pickle and one storage per tensor, in any element type, so tests can build weight files (and
//! corrupt ones) without Python. Shared by flint-transfer's tests and, through `#[path]`,
//! flint-models' tests.

#![allow(dead_code)]

use std::sync::OnceLock;

use burn::tensor::{DType, TensorData};

/// One tensor of a fixture file, in PyTorch's layout and naming.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: String,
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Entry {
    /// An entry holding `data` under `name`.
    pub fn new(name: String, data: TensorData) -> Self {
        Self {
            name,
            dtype: data.dtype(),
            shape: data.shape().to_vec(),
            bytes: data.as_bytes().to_vec(),
        }
    }

    /// The same values in another element type (rounded to nearest).
    pub fn cast(&self, dtype: DType) -> Entry {
        let data = TensorData::from_bytes_vec(self.bytes.clone(), self.shape.clone(), self.dtype)
            .convert_dtype(dtype);
        Entry {
            dtype,
            bytes: data.as_bytes().to_vec(),
            ..self.clone()
        }
    }

    /// The values as float32.
    pub fn values(&self) -> Vec<f32> {
        TensorData::from_bytes_vec(self.bytes.clone(), self.shape.clone(), self.dtype)
            .convert_dtype(DType::F32)
            .try_to_vec::<f32>()
            .unwrap()
    }
}

pub fn storage_class(dtype: DType) -> &'static str {
    match dtype {
        DType::F64 => "DoubleStorage",
        DType::F32 => "FloatStorage",
        DType::F16 => "HalfStorage",
        DType::BF16 => "BFloat16Storage",
        DType::I64 => "LongStorage",
        DType::I32 => "IntStorage",
        DType::U8 => "ByteStorage",
        DType::Bool(_) => "BoolStorage",
        other => panic!("no PyTorch storage for {other:?}"),
    }
}

/// Protocol-2 pickle opcodes used by `torch.save`.
pub struct Pickle(Vec<u8>);

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
pub fn state_dict_pickle(entries: &[Entry]) -> Vec<u8> {
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
pub fn crc32(bytes: &[u8]) -> u32 {
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
pub fn zip_stored(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
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
        central.extend_from_slice(&[0; 10]); // comment length, disk, internal and external attributes
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

/// A PyTorch ZIP checkpoint from its pickle and storages.
pub fn pt_from_parts(pickle: Vec<u8>, storages: &[Vec<u8>]) -> Vec<u8> {
    let mut files = vec![
        ("archive/data.pkl".to_string(), pickle),
        ("archive/byteorder".to_string(), b"little".to_vec()),
    ];
    for (i, s) in storages.iter().enumerate() {
        files.push((format!("archive/data/{i}"), s.clone()));
    }
    files.push(("archive/version".to_string(), b"3\n".to_vec()));
    zip_stored(&files)
}

/// What `torch.save(state_dict, path)` writes (without its alignment padding).
pub fn pytorch_zip(entries: &[Entry]) -> Vec<u8> {
    let storages: Vec<Vec<u8>> = entries.iter().map(|e| e.bytes.clone()).collect();
    pt_from_parts(state_dict_pickle(entries), &storages)
}
