//! Operations that flint computes itself on burn-flex's host buffers, forward and backward.
//!
//! burn-flex runs some layers through general paths that cost far more than the layer's
//! arithmetic: max pooling through a 3-D kernel with `i64` indices, batch norm through
//! transposed copies of the whole activation. For the common cases (f32, flex, with or without
//! autodiff) flint computes them in one or two passes over the data and records its own backward
//! step in burn's autodiff graph ([`Backward`]); every other backend and case goes through burn.

pub(crate) mod batch_norm;
pub(crate) mod conv;
pub(crate) mod gemm;
pub(crate) mod linear;
pub(crate) mod max_pool;
pub(crate) mod weighted;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorData};
use std::mem::MaybeUninit;

/// An autodiff tensor on flex, without gradient checkpointing.
pub(crate) type AutodiffFlex = Autodiff<Flex, NoCheckpointing>;

/// A tensor's flex primitive: tracked by autodiff or plain.
pub(crate) enum OnFlex {
    Autodiff(FloatTensor<AutodiffFlex>),
    Plain(FlexTensor),
}

/// The flex primitive of an f32 tensor, or `None` where the tensor lives on another backend,
/// is not f32 or uses gradient checkpointing (the caller then goes through burn).
pub(crate) fn on_flex<const D: usize>(tensor: &Tensor<D>) -> Option<OnFlex> {
    if tensor.dtype() != DType::F32 {
        return None;
    }
    if let Ok(tracked) = tensor.clone().try_into_primitive::<AutodiffFlex>() {
        return Some(OnFlex::Autodiff(tracked));
    }
    tensor
        .clone()
        .try_into_primitive::<Flex>()
        .ok()
        .map(OnFlex::Plain)
}

/// A contiguous f32 tensor of `shape` holding `values`.
pub(crate) fn flex_tensor(values: Vec<f32>, shape: &[usize]) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape.to_vec()))
}

/// The values of a flex tensor in row-major order (copied only when not contiguous).
pub(crate) fn contiguous(tensor: &FlexTensor) -> FlexTensor {
    if tensor.layout().contiguous_offsets().is_some() {
        tensor.clone()
    } else {
        tensor.to_contiguous()
    }
}

/// The f32 values of a tensor returned by [`contiguous`].
pub(crate) fn values(tensor: &FlexTensor) -> &[f32] {
    tensor
        .as_slice::<f32>()
        .expect("a contiguous f32 flex tensor")
}

/// The dimensions of a flex tensor.
pub(crate) fn dims(tensor: &FlexTensor) -> Vec<usize> {
    tensor.layout().shape().to_vec()
}

/// Rows of `row_len` elements per parallel task so that each task has at least `min_elements`
/// to do: small tensors stay on one thread, where waking others costs more than it saves.
pub(crate) fn rows_per_task(row_len: usize, min_elements: usize) -> usize {
    min_elements.div_ceil(row_len.max(1)).max(1)
}

/// A vector of `len` values all set by `write`, without the zero-filling pass of `vec![0; len]`
/// first (on the reference CNN, about 80 MB of writes per training step).
///
/// # Safety
/// `write` must initialise every element of the slice it is given.
pub(crate) unsafe fn written<T>(len: usize, write: impl FnOnce(&mut [MaybeUninit<T>])) -> Vec<T> {
    let mut values = Vec::with_capacity(len);
    write(&mut values.spare_capacity_mut()[..len]);
    // SAFETY: the caller's `write` initialised the first `len` elements.
    unsafe { values.set_len(len) };
    values
}
