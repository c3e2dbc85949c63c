use burn::tensor::Tensor;

/// `input.clamp(min, max)`: the same values and gradients, computed by flint's kernel where that
/// is faster.
///
/// On burn-flex, for f32 tensors, the forward step is one pass over the activation and the
/// backward step one pass over the input and the output gradient; burn clamps in two masked
/// fills and masks the gradient twice (about eight passes with four temporaries). Every other
/// case (other backends, other float types, NaN bounds or `min > max`) is
/// `input.clamp(min, max)`.
///
/// # Shapes
/// - input: any
/// - output: the input's
pub fn clamp<const D: usize>(input: Tensor<D>, min: f32, max: f32) -> Tensor<D> {
    match flint_kernels::clamp(&input, min, max) {
        Some(output) => output,
        None => input.clamp(min, max),
    }
}

/// ReLU6, `min(max(x, 0), 6)` (MobileNetV2's activation, PyTorch's `nn.ReLU6`), through
/// [`clamp`].
///
/// # Shapes
/// - input: any
/// - output: the input's
pub fn relu6<const D: usize>(input: Tensor<D>) -> Tensor<D> {
    clamp(input, 0.0, 6.0)
}

#[cfg(test)]
mod tests {
    use crate::test_util::{close, values};
    use burn::tensor::{Device, Distribution, Tensor};

    /// flint's ReLU6 gives burn's `clamp(0, 6)` values and gradients, on autodiff and plain
    /// tensors.
    #[test]
    fn relu6_matches_burns_clamp() {
        let device = Device::flex().autodiff();
        device.seed(4);
        let x = Tensor::<4>::random([2, 3, 5, 7], Distribution::Normal(2.0, 5.0), &device);
        let x = x.require_grad();
        let run = |flint: bool| {
            let y = if flint {
                super::relu6(x.clone())
            } else {
                x.clone().clamp(0.0, 6.0)
            };
            let grads = (y.clone() * y.clone()).sum().backward();
            (values(y), values(x.grad(&grads).unwrap()))
        };
        let (ours, theirs) = (run(true), run(false));
        assert!(close(&ours.0, &theirs.0), "output");
        assert!(close(&ours.1, &theirs.1), "gradient");
        let plain = x.inner();
        let ours = values(super::clamp(plain.clone(), -1.0, 1.0));
        assert!(close(&ours, &values(plain.clamp(-1.0, 1.0))), "plain");
    }
}
