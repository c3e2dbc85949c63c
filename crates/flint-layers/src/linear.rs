use burn::nn::Linear;
use burn::tensor::Tensor;

/// Applies burn's [`Linear`] to `input`: the same values and gradients as
/// `linear.forward(input)`, computed by flint's own kernels where that is faster.
///
/// On burn-flex, for f32 tensors, the leading dimensions are flattened into rows and the rows are
/// split into at most one run per thread; the forward step and the input and weight gradients
/// are one matrix product per run, each on its own thread. burn-flex lets every product of a
/// step spread over all threads, which made the reference MLP train slower on two threads than
/// on one. Other backends use `linear.forward(input)`. The module and its record are burn's, so
/// checkpoints and pretrained weights load unchanged.
///
/// # Shapes
/// - input: `[..., d_input]`
/// - output: `[..., d_output]`
pub fn linear<const D: usize>(linear: &Linear, input: Tensor<D>) -> Tensor<D> {
    let dims = input.dims();
    let weight = linear.weight.val();
    let [d_input, d_output] = weight.dims();
    if D >= 1 && dims[D - 1] == d_input {
        let rows = dims[..D - 1].iter().product::<usize>();
        let bias = linear.bias.as_ref().map(|bias| bias.val());
        let flat: Tensor<2> = input.clone().reshape([rows, d_input]);
        if let Some(output) = flint_kernels::linear(&flat, &weight, bias.as_ref()) {
            let mut out_dims = dims;
            out_dims[D - 1] = d_output;
            return output.reshape(out_dims);
        }
    }
    linear.forward(input)
}

#[cfg(test)]
mod tests {
    use crate::test_util::{close, values};
    use burn::nn::{LinearConfig, LinearLayout};
    use burn::tensor::{Device, Distribution, Tensor};
    use proptest::prelude::*;

    /// Checks flint's output and gradients (input, weight, bias; empty where not tracked)
    /// against burn's.
    fn assert_matches(
        dims: &[usize],
        d_out: usize,
        bias: bool,
        layout: LinearLayout,
        tracked: [bool; 2],
        seed: u64,
    ) {
        let device = Device::flex().autodiff();
        // Every random tensor drawn at once: other tests draw from burn's generator too.
        device.seed(seed);
        let d_in = *dims.last().unwrap();
        let mut layer = LinearConfig::new(d_in, d_out)
            .with_bias(bias)
            .with_layout(layout)
            .init(&device);
        let x = Tensor::<3>::random(
            [dims[0], dims[1], d_in],
            Distribution::Normal(0.0, 1.0),
            &device,
        );
        let weights =
            Tensor::<3>::random([dims[0], dims[1], d_out], Distribution::Default, &device);
        let x = if tracked[0] { x.require_grad() } else { x };
        if !tracked[1] {
            layer = burn::module::Module::no_grad(layer);
        }
        let run = |flint: bool| {
            let output = if flint {
                super::linear(&layer, x.clone())
            } else {
                layer.forward(x.clone())
            };
            let grads = (output.clone() * weights.clone()).sum().backward();
            let grad = |t: Option<Vec<f32>>| t.unwrap_or_default();
            [
                values(output),
                grad(x.grad(&grads).map(values)),
                grad(layer.weight.grad(&grads).map(values)),
                grad(layer.bias.as_ref().and_then(|b| b.grad(&grads)).map(values)),
            ]
        };
        let [flint, burn] = [run(true), run(false)];
        for (name, (ours, theirs)) in ["output", "input grad", "weight grad", "bias grad"]
            .iter()
            .zip(flint.iter().zip(&burn))
        {
            let case = format!(
                "{name} of {dims:?} -> {d_out}, bias {bias}, {layout:?}, tracked {tracked:?}"
            );
            assert_eq!(ours.len(), theirs.len(), "{case}");
            assert!(close(ours, theirs), "{case}");
        }
    }

    #[test]
    fn matches_burn_with_and_without_bias_layouts_and_tracking() {
        // The reference MLP's first layer at batch 128, split across threads.
        assert_matches(
            &[128, 1, 784],
            256,
            true,
            LinearLayout::Row,
            [false, true],
            1,
        );
        assert_matches(&[4, 3, 5], 7, false, LinearLayout::Row, [true, true], 2);
        assert_matches(&[2, 9, 6], 3, true, LinearLayout::Col, [true, true], 3);
        assert_matches(&[3, 1, 4], 2, true, LinearLayout::Row, [true, false], 4);
    }

    #[test]
    fn plain_tensors_and_other_ranks_give_burns_output() {
        let device = Device::flex();
        device.seed(9);
        let layer = LinearConfig::new(6, 4).init(&device);
        let x1 = Tensor::<1>::random([6], Distribution::Default, &device);
        let x4 = Tensor::<4>::random([2, 3, 5, 6], Distribution::Default, &device);
        assert!(close(
            &values(super::linear(&layer, x1.clone())),
            &values(layer.forward(x1))
        ));
        let ours = super::linear(&layer, x4.clone());
        assert_eq!(ours.dims(), [2, 3, 5, 4]);
        assert!(close(&values(ours), &values(layer.forward(x4))));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_burn(
            batch in 1usize..70, d_in in 1usize..40, d_out in 1usize..40, bias: bool,
            input_tracked: bool, seed in 0u64..1000,
        ) {
            assert_matches(&[batch, 1, d_in], d_out, bias, LinearLayout::Row, [input_tracked, true], seed);
        }
    }
}
