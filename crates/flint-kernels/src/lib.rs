//! flint-kernels: 2-D convolution (grouped and depthwise included), linear layers, max pooling,
//! batch norm and clamping (ReLU6) computed by flint on burn-flex's host buffers, forward and
//! backward.
//!
//! burn-flex runs these layers through general paths that cost far more than their arithmetic:
//! a convolution's weight gradient as another convolution whose "kernel" is the whole output
//! gradient, every matrix product of a step split over all threads, max pooling through a 3-D
//! kernel with 8-byte indices, batch norm through transposed copies of the whole activation.
//! For f32 tensors on flex, with or without autodiff, these kernels compute them in one or two
//! passes over contiguous buffers (matrix products through `gemm`, the crate burn-flex uses) and
//! record their own backward step in burn's autodiff graph, computing only the gradients of
//! tracked parents.
//!
//! # Why a crate of its own
//! The kernels reach into burn's backend internals (flex's tensor primitive, the autodiff
//! graph's `Backward` trait and node bookkeeping), which move between burn releases. Kept here,
//! a burn upgrade touches one crate, and `flint-layers` stays about regularisation: its
//! `conv2d`, `linear`, `MaxPool2d` and `BatchNorm` call these kernels and fall back to burn.
//!
//! # Contract
//! Each function returns `None` where it does not apply: another backend, another float type,
//! gradient checkpointing, or shapes it does not handle (channels that do not split into the
//! convolution's groups, overlapping pooling windows). The caller then uses burn's op, so a model computes the same on every
//! backend. Where it applies, the values and gradients are burn's up to f32 rounding (1e-5
//! relative): the tests compare each kernel with burn's op on random shapes (proptest), and
//! `cargo bench -p flint-kernels` times each beside burn's op on the same shapes.
//!
//! | kernel | burn's op | declines |
//! |---|---|---|
//! | [`conv2d`] (any groups, depthwise included) | `burn::tensor::module::conv2d` | channels not divisible by groups, a kernel larger than the padded input |
//! | [`linear`] | `burn::tensor::module::linear` (`x.matmul(w) + b`) | mismatched shapes |
//! | [`max_pool2d`] | `max_pool2d` with stride = kernel, no padding | windows over 256 elements |
//! | [`max_pool2d_relu`] (max pooling fused with ReLU) | `max_pool2d` then `relu` | windows over 255 elements |
//! | [`batch_norm_train`] | `burn::tensor::module::batch_norm_train` | rank below 2, mismatched gamma/beta |
//! | [`clamp`] (ReLU6: `clamp(x, 0, 6)`) | `Tensor::clamp` | NaN bounds, `min > max` |
//! | [`conv2d_clamp`] (a convolution fused with ReLU6 or ReLU) | `conv2d` then `Tensor::clamp` | as `conv2d`; NaN bounds, `min >= max` |
//!
//! [`profile`] counts each kernel's calls, wall time and floating-point operations per kind of
//! layer and pass, when turned on (`profile::enable(true)`), to see where a training step's
//! time goes.
//!
//! # Example
//! ```
//! use burn::tensor::module::conv2d as burn_conv2d;
//! use burn::tensor::ops::ConvOptions as BurnOptions;
//! use burn::tensor::{Device, Distribution, Tensor};
//! use flint_kernels::{ConvOptions, conv2d};
//!
//! let device = Device::flex().autodiff();
//! let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Default, &device).require_grad();
//! let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Default, &device).require_grad();
//! let options = ConvOptions { stride: [1, 1], dilation: [1, 1], padding: [[1, 1], [1, 1]], groups: 1 };
//!
//! let y = conv2d(&x, &w, None, options).expect("f32 on flex: the kernel applies");
//! let burn_options = BurnOptions::new([1, 1], [1, 1], [1, 1], 1);
//! let expected = burn_conv2d(x.clone(), w.clone(), None, burn_options);
//! assert_eq!(y.dims(), [2, 4, 8, 8]);
//! assert!((y.clone() - expected).abs().max().into_scalar::<f32>() < 1e-4);
//!
//! // The backward step is in burn's graph: gradients come from `backward()` as usual.
//! let grads = y.sum().backward();
//! assert_eq!(w.grad(&grads).expect("w is tracked").dims(), [4, 3, 3, 3]);
//!
//! // A depthwise convolution: one group per input channel, two output channels each.
//! let depthwise = ConvOptions { groups: 3, ..options };
//! let w = Tensor::<4>::random([6, 1, 3, 3], Distribution::Default, &device).require_grad();
//! let y = conv2d(&x, &w, None, depthwise).expect("the kernel applies");
//! let burn_options = BurnOptions::new([1, 1], [1, 1], [1, 1], 3);
//! let expected = burn_conv2d(x.clone(), w.clone(), None, burn_options);
//! assert!((y.clone() - expected).abs().max().into_scalar::<f32>() < 1e-4);
//! assert_eq!(w.grad(&y.sum().backward()).expect("w is tracked").dims(), [6, 1, 3, 3]);
//!
//! // Channels that do not split into the groups are left to burn (which reports the error).
//! assert!(conv2d(&x, &w, None, ConvOptions { groups: 2, ..options }).is_none());
//! ```

mod simd;

mod batch_norm;
mod clamp;
mod conv;
mod depthwise;
mod gemm;
mod linear;
mod max_pool;
pub mod profile;
#[cfg(test)]
mod test_util;
mod weighted;

pub use batch_norm::batch_norm_train;
pub use conv::{ConvOptions, conv2d, conv2d_clamp};
pub use linear::linear;
pub use max_pool::{max_pool2d, max_pool2d_relu};

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor, TensorData};
use std::mem::MaybeUninit;

/// `input` clamped to `[min, max]`, as `input.clamp(min, max)` computes it: the same values
/// (a NaN stays NaN) and the same gradient (the output's gradient where
/// `min <= input <= max`, NaN included, zero elsewhere). `None` where the input is not an f32
/// tensor on flex or the bounds are NaN or `min > max` (the caller then uses burn's op).
///
/// Its forward calls are recorded by [`profile`] as [`profile::KernelKind::ClampForward`].
///
/// # Shapes
/// - input: any
/// - output: the input's
pub fn clamp<const D: usize>(input: &Tensor<D>, min: f32, max: f32) -> Option<Tensor<D>> {
    let span = profile::span(profile::KernelKind::ClampForward, 0);
    let output = clamp::clamp(input, min, max);
    if output.is_none() {
        span.cancel();
    }
    output
}

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
