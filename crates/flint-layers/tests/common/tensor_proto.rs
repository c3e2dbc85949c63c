//! A minimal decoder of ONNX `TensorProto` files (`input_*.pb`, `output_*.pb` of the ONNX backend
//! node tests), enough for float, int64 and bool tensors; and of node attributes in `model.onnx`.
//!
//! Protobuf wire format: each field is a varint key `(number << 3) | wire_type`; wire type 0 is a
//! varint, 1 a fixed 64-bit, 2 length-delimited bytes, 5 a fixed 32-bit.

use std::path::Path;

/// A decoded tensor: its shape and values widened to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedTensor {
    pub name: String,
    pub dims: Vec<usize>,
    pub data_type: i32,
    pub values: Vec<f64>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn varint(&mut self) -> u64 {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let byte = self.bytes[self.pos];
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }

    fn take(&mut self, len: usize) -> &'a [u8] {
        let slice = &self.bytes[self.pos..self.pos + len];
        self.pos += len;
        slice
    }

    /// Next field: `(number, wire type, payload)`; varints come back as their value's bytes.
    fn field(&mut self) -> (u64, u64, Field<'a>) {
        let key = self.varint();
        let (number, wire) = (key >> 3, key & 7);
        let payload = match wire {
            0 => Field::Varint(self.varint()),
            1 => Field::Bytes(self.take(8)),
            2 => {
                let len = self.varint() as usize;
                Field::Bytes(self.take(len))
            }
            5 => Field::Bytes(self.take(4)),
            other => panic!("unsupported protobuf wire type {other}"),
        };
        (number, wire, payload)
    }
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
}

fn packed_varints(bytes: &[u8]) -> Vec<u64> {
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    while !reader.done() {
        out.push(reader.varint());
    }
    out
}

/// Decodes a serialized `TensorProto`.
pub fn decode_tensor(bytes: &[u8]) -> DecodedTensor {
    let mut reader = Reader::new(bytes);
    let mut tensor = DecodedTensor {
        name: String::new(),
        dims: Vec::new(),
        data_type: 0,
        values: Vec::new(),
    };
    let mut raw: Option<&[u8]> = None;
    while !reader.done() {
        match reader.field() {
            (1, _, Field::Varint(v)) => tensor.dims.push(v as usize),
            (1, _, Field::Bytes(b)) => tensor
                .dims
                .extend(packed_varints(b).iter().map(|&v| v as usize)),
            (2, _, Field::Varint(v)) => tensor.data_type = v as i32,
            (4, 5, Field::Bytes(b)) => tensor
                .values
                .push(f64::from(f32::from_le_bytes(b.try_into().unwrap()))),
            (4, _, Field::Bytes(b)) => tensor.values.extend(
                b.chunks_exact(4)
                    .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap()))),
            ),
            (7, _, Field::Varint(v)) => tensor.values.push(v as i64 as f64),
            (7, _, Field::Bytes(b)) => tensor
                .values
                .extend(packed_varints(b).iter().map(|&v| v as i64 as f64)),
            // int32_data (field 5) also carries bool and small int types.
            (5, _, Field::Varint(v)) => tensor.values.push(v as i32 as f64),
            (5, _, Field::Bytes(b)) => tensor
                .values
                .extend(packed_varints(b).iter().map(|&v| v as i32 as f64)),
            (8, _, Field::Bytes(b)) => tensor.name = String::from_utf8_lossy(b).into_owned(),
            (9, _, Field::Bytes(b)) => raw = Some(b),
            _ => {}
        }
    }
    if let Some(raw) = raw {
        tensor.values = match tensor.data_type {
            1 => raw
                .chunks_exact(4)
                .map(|c| f64::from(f32::from_le_bytes(c.try_into().unwrap())))
                .collect(),
            7 => raw
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            9 => raw.iter().map(|&b| f64::from(b)).collect(),
            other => panic!("unsupported TensorProto data_type {other}"),
        };
    }
    let expected: usize = tensor.dims.iter().product();
    assert_eq!(
        tensor.values.len(),
        expected,
        "TensorProto {}: {} values for dims {:?}",
        tensor.name,
        tensor.values.len(),
        tensor.dims
    );
    tensor
}

/// Reads and decodes a `.pb` file.
pub fn read_tensor(path: &Path) -> DecodedTensor {
    decode_tensor(&std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
}

/// A float attribute (`AttributeProto.f`, field 2) of the first node of a `model.onnx`, if set.
///
/// ModelProto.graph = 7, GraphProto.node = 1, NodeProto.attribute = 5, AttributeProto.name = 1.
pub fn node_float_attribute(model: &[u8], name: &str) -> Option<f32> {
    let graph = submessages(model, 7).into_iter().next()?;
    let node = submessages(graph, 1).into_iter().next()?;
    for attribute in submessages(node, 5) {
        let mut reader = Reader::new(attribute);
        let (mut attr_name, mut value) = (None, None);
        while !reader.done() {
            match reader.field() {
                (1, _, Field::Bytes(b)) => attr_name = Some(b),
                (2, 5, Field::Bytes(b)) => value = Some(f32::from_le_bytes(b.try_into().unwrap())),
                _ => {}
            }
        }
        if attr_name == Some(name.as_bytes()) {
            return value;
        }
    }
    None
}

fn submessages(bytes: &[u8], number: u64) -> Vec<&[u8]> {
    let mut reader = Reader::new(bytes);
    let mut out = Vec::new();
    while !reader.done() {
        if let (n, 2, Field::Bytes(b)) = reader.field()
            && n == number
        {
            out.push(b);
        }
    }
    out
}
