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
    let [_, _, height, width] = input.dims();
    let padding = match conv.padding {
        PaddingConfig2d::Valid => [[0, 0], [0, 0]],
        PaddingConfig2d::Explicit(top, left, bottom, right) => [[top, bottom], [left, right]],
        PaddingConfig2d::Same => [
            same_padding(conv.kernel_size[0], conv.stride[0], height),
            same_padding(conv.kernel_size[1], conv.stride[1], width),
        ],
    };
    let options = ConvOptions {
        stride: conv.stride,
        dilation: conv.dilation,
        padding,
        groups: conv.groups,
    };
    let bias = conv.bias.as_ref().map(|bias| bias.val());
    match flint_kernels::conv2d(&input, &conv.weight.val(), bias.as_ref(), options) {
        Some(output) => output,
        None => conv.forward(input),
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
}
