use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;

use flint_kernels::ConvOptions;

/// Applies burn's [`Conv2d`] to `input`: the same values and gradients as `conv.forward(input)`,
/// computed by flint's own kernels where that is faster.
///
/// On burn-flex, for f32 tensors, each image is unfolded into a buffer that stays in cache and
/// the forward step, the weight gradient and the input gradient are one matrix product each per
/// image and group; depthwise convolutions (MobileNet, EfficientNet) run a direct loop per
/// channel plane. burn-flex computes the weight gradient as a convolution by the whole output
/// gradient (one per group), several times slower. Every other case (other backends, other
/// float types) is `conv.forward(input)`.
/// The module and its record are burn's, so checkpoints and pretrained weights load unchanged.
///
/// # Shapes
/// - input: `[batch, channels_in, height, width]`
/// - output: `[batch, channels_out, height_out, width_out]`, as for [`Conv2d::forward`]
pub fn conv2d(conv: &Conv2d, input: Tensor<4>) -> Tensor<4> {
    let options = options(conv, &input);
    let bias = conv.bias.as_ref().map(|bias| bias.val());
    match flint_kernels::conv2d(&input, &conv.weight.val(), bias.as_ref(), options) {
        Some(output) => output,
        None => conv.forward(input),
    }
}

/// [`conv2d`] followed by [`crate::clamp`]`(min, max)` in one step, as MobileNetV2 follows its
/// convolutions with ReLU6 (`min = 0, max = 6`) and ResNet with ReLU (`min = 0, max =
/// f32::INFINITY`): the same values, and the same gradients except where the unclamped output
/// equals a finite bound exactly (there burn's clamp lets the gradient through, the fused step
/// does not; for ReLU this is burn's `relu` gradient).
///
/// On flex, for f32 tensors, every convolution [`conv2d`] computes runs fused
/// ([`flint_kernels::conv2d_clamp`]): the clamp is applied to each block of the output while it
/// is in cache, and the backward step keeps only the clamped output and masks the output
/// gradient block by block inside the convolution's own products, so the clamp costs no pass
/// of its own over the activation (one forward, one backward). Every other case is
/// [`conv2d`] then [`crate::clamp`].
///
/// # Shapes
/// - input: `[batch, channels_in, height, width]`
/// - output: `[batch, channels_out, height_out, width_out]`, as for [`Conv2d::forward`]
pub fn conv2d_clamp(conv: &Conv2d, input: Tensor<4>, min: f32, max: f32) -> Tensor<4> {
    let options = options(conv, &input);
    let bias = conv.bias.as_ref().map(|bias| bias.val());
    let weight = conv.weight.val();
    match flint_kernels::conv2d_clamp(&input, &weight, bias.as_ref(), options, min, max) {
        Some(output) => output,
        None => crate::clamp(conv2d(conv, input), min, max),
    }
}

/// The kernel's options for `conv` on `input` (`Same` padding resolved for the input's size).
fn options(conv: &Conv2d, input: &Tensor<4>) -> ConvOptions {
    let [_, _, height, width] = input.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [[0, 0], [0, 0]],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [[top, bottom], [left, right]],
        PaddingConfig2d::Same => [
            same_padding(conv.kernel_size[0], conv.stride[0], height),
            same_padding(conv.kernel_size[1], conv.stride[1], width),
        ],
    };
    ConvOptions {
        stride: conv.stride,
        dilation: conv.dilation,
        padding,
        groups: conv.groups,
    }
}

/// `[before, after]` padding that gives `ceil(size / stride)` outputs, the extra one after, as
/// burn's `PaddingConfig2d::Same` computes it (from the undilated kernel, like burn).
fn same_padding(kernel: usize, stride: usize, size: usize) -> [usize; 2] {
    let outputs = size.div_ceil(stride);
    let total = match outputs {
        0 => 0,
        _ => ((outputs - 1) * stride + kernel).saturating_sub(size),
    };
    [total / 2, total - total / 2]
}

#[cfg(test)]
mod tests {
    use crate::test_util::{close, values};
    use burn::nn::PaddingConfig2d;
    use burn::nn::conv::Conv2dConfig;
    use burn::tensor::{Device, Distribution, Tensor};

    /// flint's output and gradients equal `Conv2d::forward`'s for every padding mode, strides
    /// with odd and even sizes, grouped convolutions and depthwise ones (channel multiplier 1
    /// and 2, with and without bias).
    #[test]
    fn matches_conv2d_forward_for_every_padding_and_groups() {
        let device = Device::flex().autodiff();
        let paddings = [
            PaddingConfig2d::Valid,
            PaddingConfig2d::Same,
            PaddingConfig2d::Explicit(1, 0, 2, 1),
        ];
        let mut cases = Vec::new();
        for padding in paddings {
            for (stride, size, groups) in [(1, 7, 1), (2, 7, 1), (2, 8, 1), (1, 6, 2)] {
                cases.push((padding.clone(), stride, size, [4, 6], groups, true));
            }
            for (stride, size, channels) in [(1, 7, [4, 4]), (2, 8, [4, 4]), (2, 7, [4, 8])] {
                cases.push((padding.clone(), stride, size, channels, 4, false));
            }
        }
        // Every random tensor drawn at once: other tests draw from burn's generator too.
        device.seed(21);
        let inputs: Vec<_> = cases
            .iter()
            .map(|&(_, _, size, _, _, _)| {
                let x = Tensor::<4>::random([2, 4, size, size + 1], Distribution::Default, &device);
                x.require_grad()
            })
            .collect();
        let convs: Vec<_> = cases
            .iter()
            .map(|(padding, stride, _, channels, groups, bias)| {
                Conv2dConfig::new(*channels, [3, 3])
                    .with_stride([*stride, *stride])
                    .with_padding(padding.clone())
                    .with_groups(*groups)
                    .with_bias(*bias)
                    .init(&device)
            })
            .collect();
        for ((case, x), conv) in cases.iter().zip(inputs).zip(convs) {
            let run = |flint: bool| {
                let output = if flint {
                    super::conv2d(&conv, x.clone())
                } else {
                    conv.forward(x.clone())
                };
                let dims = output.dims();
                let grads = (output.clone() * output.clone()).sum().backward();
                let weight_grad = conv.weight.grad(&grads).map(values).unwrap();
                (
                    dims,
                    values(output),
                    values(x.grad(&grads).unwrap()),
                    weight_grad,
                )
            };
            let (ours, theirs) = (run(true), run(false));
            assert_eq!(ours.0, theirs.0, "output shape for {case:?}");
            assert!(close(&ours.1, &theirs.1), "output for {case:?}");
            assert!(close(&ours.2, &theirs.2), "input gradient for {case:?}");
            assert!(close(&ours.3, &theirs.3), "weight gradient for {case:?}");
        }
    }

    /// `conv2d_clamp` equals `Conv2d::forward` then `clamp`, values and gradients: depthwise
    /// (stride 1 and 2), grouped, plain 3x3 and 1x1, with ReLU6 and with ReLU (an infinite max),
    /// on `Same` padding.
    #[test]
    fn conv2d_clamp_matches_forward_then_clamp() {
        let device = Device::flex().autodiff();
        device.seed(5);
        let x = Tensor::<4>::random([2, 4, 9, 8], Distribution::Normal(0.0, 3.0), &device);
        let x = x.require_grad();
        let convs = [(4, 1, 3), (4, 2, 3), (2, 1, 3), (1, 2, 3), (1, 1, 1)].map(
            |(groups, stride, kernel)| {
                Conv2dConfig::new([4, 8], [kernel, kernel])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Same)
                    .with_groups(groups)
                    .init(&device)
            },
        );
        for conv in &convs {
            for max in [6.0, f32::INFINITY] {
                let run = |fused: bool| {
                    let output = if fused {
                        super::conv2d_clamp(conv, x.clone(), 0.0, max)
                    } else {
                        conv.forward(x.clone()).clamp(0.0, max)
                    };
                    let grads = (output.clone() * output.clone()).sum().backward();
                    [
                        values(output),
                        values(x.grad(&grads).unwrap()),
                        values(conv.weight.grad(&grads).unwrap()),
                        values(conv.bias.as_ref().unwrap().grad(&grads).unwrap()),
                    ]
                };
                let (ours, theirs) = (run(true), run(false));
                for (what, (ours, theirs)) in ["output", "input", "weight", "bias"]
                    .iter()
                    .zip(ours.iter().zip(&theirs))
                {
                    assert!(close(ours, theirs), "{what} for {conv:?}, max {max}");
                }
            }
        }
        // Plain tensors, and bounds the kernel declines (`min == max`) through burn's clamp.
        let plain = x.inner();
        let conv = burn::module::Module::valid(&convs[4]);
        for (min, max) in [(0.0, 6.0), (1.0, 1.0)] {
            let ours = super::conv2d_clamp(&conv, plain.clone(), min, max);
            let theirs = conv.forward(plain.clone()).clamp(min, max);
            assert!(
                close(&values(ours), &values(theirs)),
                "plain, [{min}, {max}]"
            );
        }
    }
}
