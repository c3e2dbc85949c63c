//! The values that flow along the graph's edges.
//!
//! burn's tensors have their rank in the type; an ONNX graph's ranks are only known when it
//! runs. Every float tensor is therefore held as a rank-[`MAX_RANK`] tensor whose leading axes
//! are 1, with its ONNX rank beside it: ONNX broadcasting aligns shapes on the right, so
//! element-wise operators broadcast correctly on the padded tensors, and the operators that
//! need a fixed rank (convolution, pooling, matrix products) reshape, which costs no copy.
//! Integer and boolean tensors are shape arithmetic in the networks this crate reads
//! (`Shape`, `Gather`, `Concat` feeding a `Reshape`) and stay on the host.

use burn::tensor::{Device, Tensor, TensorData};

/// The highest rank a float tensor may have.
pub const MAX_RANK: usize = 6;

/// A tensor of the graph: float on the device, integer on the host.
// Float tensors are nearly every edge: boxing them would allocate once per edge for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum OnnxValue {
    /// A float tensor; see [`FloatValue`].
    Float(FloatValue),
    /// An integer (or boolean, as 0/1) tensor kept on the host.
    Int(IntValue),
}

/// A float tensor of ONNX rank `rank`, padded on the left to [`MAX_RANK`] axes.
#[derive(Clone, Debug)]
pub struct FloatValue {
    /// The padded tensor.
    pub tensor: Tensor<MAX_RANK>,
    /// The ONNX rank (0 for a scalar).
    pub rank: usize,
}

/// An integer tensor on the host, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntValue {
    /// The shape.
    pub dims: Vec<usize>,
    /// The values.
    pub data: Vec<i64>,
}

/// `dims` padded on the left with ones to [`MAX_RANK`] axes; `None` above that rank.
pub(crate) fn padded(dims: &[usize]) -> Option<[usize; MAX_RANK]> {
    let offset = MAX_RANK.checked_sub(dims.len())?;
    let mut out = [1; MAX_RANK];
    out[offset..].copy_from_slice(dims);
    Some(out)
}

impl FloatValue {
    /// Wraps a tensor of any rank up to [`MAX_RANK`].
    ///
    /// # Panics
    ///
    /// If `D` is above [`MAX_RANK`].
    pub fn new<const D: usize>(tensor: Tensor<D>) -> Self {
        let dims = padded(&tensor.dims()).expect("rank above MAX_RANK");
        Self {
            tensor: tensor.reshape(dims),
            rank: D,
        }
    }

    /// The tensor from `dims` and row-major `values`, on `device`.
    pub(crate) fn from_values(values: Vec<f32>, dims: &[usize], device: &Device) -> Option<Self> {
        let shape = padded(dims)?;
        Some(Self {
            tensor: Tensor::from_data(TensorData::new(values, shape), device),
            rank: dims.len(),
        })
    }

    /// The ONNX shape.
    pub fn dims(&self) -> Vec<usize> {
        self.tensor.dims()[MAX_RANK - self.rank..].to_vec()
    }

    /// The tensor at its ONNX rank `D`, or `None` when the rank differs.
    pub fn to_rank<const D: usize>(&self) -> Option<Tensor<D>> {
        if D != self.rank {
            return None;
        }
        let dims: [usize; D] = self.dims().try_into().ok()?;
        Some(self.tensor.clone().reshape(dims))
    }

    /// The same values with ONNX shape `dims` (as many elements).
    pub(crate) fn reshaped(&self, dims: &[usize]) -> Option<Self> {
        Some(Self {
            tensor: self.tensor.clone().reshape(padded(dims)?),
            rank: dims.len(),
        })
    }

    /// The padded axis of ONNX axis `axis` (negative counts from the end), if in range.
    pub(crate) fn axis(&self, axis: i64) -> Option<usize> {
        normalize_axis(axis, self.rank).map(|a| a + MAX_RANK - self.rank)
    }
}

impl IntValue {
    /// A rank-1 tensor.
    pub fn vector(data: Vec<i64>) -> Self {
        Self {
            dims: vec![data.len()],
            data,
        }
    }

    /// A scalar.
    pub fn scalar(value: i64) -> Self {
        Self {
            dims: Vec::new(),
            data: vec![value],
        }
    }
}

impl OnnxValue {
    /// The ONNX shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Self::Float(f) => f.dims(),
            Self::Int(i) => i.dims.clone(),
        }
    }
}

/// `axis` in `0..rank` (negative counts from the end), or `None` when out of range.
pub(crate) fn normalize_axis(axis: i64, rank: usize) -> Option<usize> {
    let rank = rank as i64;
    let a = if axis < 0 { axis + rank } else { axis };
    (0..rank).contains(&a).then_some(a as usize)
}
