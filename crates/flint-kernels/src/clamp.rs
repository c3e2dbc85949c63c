//! Clamping (ReLU6 is `clamp(x, 0, 6)`) on flex's host buffers.
//!
//! burn computes `clamp` as `clamp_max` then `clamp_min`, each a comparison into a boolean mask
//! and a masked fill, and its backward step masks the gradient twice the same way: about eight
//! passes over the activation with four temporaries. Here the forward step is one pass, and the
//! backward step one pass over the input and the output gradient (the input is kept, not
//! copied: the graph holds a reference to its buffer).

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::{AutodiffFlex, OnFlex, contiguous, dims, flex_tensor, on_flex, values, written};

/// Elements per parallel task: below this, waking another thread costs more than it saves.
const MIN_TASK: usize = 1 << 15;

/// `input` clamped to `[min, max]`, as `input.clamp(min, max)` computes it: the same values
/// (a NaN stays NaN) and the same gradient (the output's gradient where
/// `min <= input <= max`, NaN included, zero elsewhere). `None` where the input is not an f32
/// tensor on flex or the bounds are NaN or `min > max` (the caller then uses burn's op).
///
/// # Shapes
/// - input: any
/// - output: the input's
pub fn clamp<const D: usize>(input: &Tensor<D>, min: f32, max: f32) -> Option<Tensor<D>> {
    if min.is_nan() || max.is_nan() || min > max {
        return None;
    }
    let bounds = Bounds { min, max };
    Some(match on_flex(input)? {
        OnFlex::Plain(x) => Tensor::from_primitive::<Flex>(bounds.forward(&contiguous(&x))),
        OnFlex::Autodiff(x) => Tensor::from_primitive::<AutodiffFlex>(tracked(x, bounds)),
    })
}

/// Clamping bounds, `min < max`; also those of a clamp fused into a convolution
/// ([`crate::conv2d_clamp`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) min: f32,
    pub(crate) max: f32,
}

impl Bounds {
    /// burn's order: `clamp_max` first, then `clamp_min` (comparisons are false for NaN).
    #[inline(always)]
    pub(crate) fn apply(self, x: f32) -> f32 {
        let y = if x > self.max { self.max } else { x };
        if y < self.min { self.min } else { y }
    }

    /// Whether the gradient flows through `x` (burn's masks zero it only outside the bounds).
    #[inline(always)]
    fn passes(self, x: f32) -> bool {
        !(x < self.min || x > self.max)
    }

    /// Whether the gradient flows through the clamped *output* `y` (when the input is not
    /// kept): strictly inside the bounds (or NaN). A `y` on a finite bound was clamped, or
    /// (rarely) equals the bound before clamping, where burn's clamp would let the gradient
    /// through. An infinite bound clamps nothing (`max = inf`: ReLU), so a `y` on it passes, as
    /// in burn.
    #[inline(always)]
    pub(crate) fn passes_output(self, y: f32) -> bool {
        !((y <= self.min && self.min != f32::NEG_INFINITY)
            || (y >= self.max && self.max != f32::INFINITY))
    }

    /// The bounds `[min, max]`, or `None` where either is NaN or `min >= max` (a fused clamp
    /// needs an interval to tell clamped outputs from the others).
    pub(crate) fn fused(min: f32, max: f32) -> Option<Self> {
        (min < max).then_some(Self { min, max })
    }

    /// What a fused clamp's backward step masks the output gradient by: the forward step's
    /// (clamped) output and these bounds, or `None` for an op without bounds.
    ///
    /// # Panics
    /// Where the op has bounds but was not given its output (`WeightedOp::reads_output` makes
    /// the graph keep it).
    pub(crate) fn mask(bounds: Option<Self>, output: Option<&[f32]>) -> Option<(&[f32], Self)> {
        let bounds = bounds?;
        let output = output.expect("a fused clamp's backward step needs its output");
        Some((output, bounds))
    }

    fn forward(self, x: &FlexTensor) -> FlexTensor {
        let input = values(x);
        // SAFETY: the chunks cover the output and every element of each is written.
        let output = unsafe {
            written(input.len(), |output| {
                output
                    .par_chunks_mut(MIN_TASK)
                    .zip(input.par_chunks(MIN_TASK))
                    .for_each(|(out, src)| {
                        for (o, &v) in out.iter_mut().zip(src) {
                            o.write(self.apply(v));
                        }
                    })
            })
        };
        flex_tensor(output, &dims(x))
    }

    fn backward(self, x: &FlexTensor, grad: &FlexTensor) -> FlexTensor {
        // Timed for `flint_kernels::profile` (issue #17): one relaxed load when profiling is off.
        let _span = super::profile::span(super::profile::KernelKind::ClampBackward, 0);
        let grad = contiguous(grad);
        let (input, grad_values) = (values(x), values(&grad));
        // SAFETY: as in `forward`.
        let output = unsafe {
            written(input.len(), |output| {
                output
                    .par_chunks_mut(MIN_TASK)
                    .zip(
                        input
                            .par_chunks(MIN_TASK)
                            .zip(grad_values.par_chunks(MIN_TASK)),
                    )
                    .for_each(|(out, (src, grad))| {
                        for ((o, &v), &g) in out.iter_mut().zip(src).zip(grad) {
                            o.write(if self.passes(v) { g } else { 0.0 });
                        }
                    })
            })
        };
        flex_tensor(output, &dims(x))
    }
}

/// What backward needs: the bounds and the contiguous input.
#[derive(Clone, Debug)]
struct State {
    bounds: Bounds,
    input: FlexTensor,
}

#[derive(Debug)]
struct ClampBackward;

impl Backward<Flex, 1> for ClampBackward {
    type State = State;

    fn backward(self, ops: Ops<State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let State { bounds, input } = ops.state;
        unary::<Flex, _>(ops.parents, ops.node, grads, |grad| {
            bounds.backward(&input, &grad)
        });
    }
}

fn tracked(x: FloatTensor<AutodiffFlex>, bounds: Bounds) -> FloatTensor<AutodiffFlex> {
    let input = contiguous(x.primitive());
    let output = bounds.forward(&input);
    match ClampBackward
        .prepare::<NoCheckpointing>([x.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(State { bounds, input }, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[cfg(test)]
mod tests {
    use crate::test_util::values;
    use burn::tensor::{Device, Distribution, Tensor};
    use proptest::prelude::*;

    /// Output and input gradient from flint's clamp and burn's on the same tensor.
    fn both(shape: [usize; 3], min: f32, max: f32, seed: u64) -> [[Vec<f32>; 2]; 2] {
        let device = Device::flex().autodiff();
        device.seed(seed);
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 4.0), &device);
        // Values exactly on the bounds and a NaN, where the two ops must agree too.
        let mut data = values(x.clone());
        data[0] = min;
        if data.len() > 2 {
            data[1] = max;
            data[2] = f32::NAN;
        }
        let x =
            Tensor::<3>::from_data(burn::tensor::TensorData::new(data, shape.to_vec()), &device)
                .require_grad();
        let upstream = Tensor::<3>::random(shape, Distribution::Default, &device);
        let run = |flint: bool| {
            let y = if flint {
                super::clamp(&x, min, max).expect("f32 on flex")
            } else {
                x.clone().clamp(min, max)
            };
            let grads = (y.clone() * upstream.clone()).sum().backward();
            [values(y), values(x.grad(&grads).unwrap())]
        };
        [run(true), run(false)]
    }

    /// Equal as bit patterns, except that any NaN equals any NaN.
    fn same(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x == y || (x.is_nan() && y.is_nan()))
    }

    #[test]
    fn relu6_matches_burn_with_bounds_and_nan() {
        let [ours, theirs] = both([2, 3, 17], 0.0, 6.0, 1);
        assert!(same(&ours[0], &theirs[0]), "output");
        assert!(same(&ours[1], &theirs[1]), "gradient");
    }

    #[test]
    fn plain_tensors_and_declined_bounds() {
        let device = Device::flex();
        let x = Tensor::<2>::random([4, 5], Distribution::Normal(0.0, 3.0), &device);
        let ours = super::clamp(&x, -1.0, 2.0).unwrap();
        assert!(same(&values(ours), &values(x.clone().clamp(-1.0, 2.0))));
        assert!(super::clamp(&x, 2.0, 1.0).is_none());
        assert!(super::clamp(&x, f32::NAN, 1.0).is_none());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn matches_burn(
            a in 1usize..4, b in 1usize..5, c in 1usize..40,
            min in -3.0f32..1.0, width in 0.0f32..8.0, seed in 0u64..1000,
        ) {
            let [ours, theirs] = both([a, b, c], min, min + width, seed);
            prop_assert!(same(&ours[0], &theirs[0]), "output");
            prop_assert!(same(&ours[1], &theirs[1]), "gradient");
        }
    }
}
