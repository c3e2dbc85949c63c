//! What the host convolution and linear layers share: a product of an input and a weight plus
//! an optional bias, dispatched on plain or autodiff flex tensors, with a backward step that
//! computes only the gradients of its tracked parents.

use burn::backend::Flex;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::tensor::Tensor;
use std::fmt::Debug;
use std::marker::PhantomData;

use super::gemm::Wanted;
use super::{AutodiffFlex, OnFlex, contiguous, on_flex, values};

/// A layer computed as products of its input and weight, given as contiguous f32 values.
pub(crate) trait WeightedOp: Clone + Copy + Debug + Send + Sync + 'static {
    /// The output for `input` and `weight`, plus `bias` where given.
    fn forward(&self, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor;

    /// Whether backward reads the op's own output (a fused clamp's gradient mask): the graph
    /// then keeps a reference to it (the next layer keeps it anyway: no copy is made).
    fn reads_output(&self) -> bool {
        false
    }

    /// The gradients of the input, weight and bias (those `wanted`) from the output's gradient;
    /// `output` is the forward step's output where [`WeightedOp::reads_output`].
    fn backward(
        &self,
        input: &[f32],
        weight: &[f32],
        output: Option<&[f32]>,
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3];
}

/// `op` on the three tensors, or `None` where they are not all f32 on flex (the caller then goes
/// through burn). The caller has checked that the shapes fit `op`.
pub(crate) fn apply<Op: WeightedOp, const D: usize, const W: usize>(
    op: Op,
    input: &Tensor<D>,
    weight: &Tensor<W>,
    bias: Option<&Tensor<1>>,
) -> Option<Tensor<D>> {
    let bias = match bias {
        Some(bias) => Some(on_flex(bias)?),
        None => None,
    };
    match (on_flex(input)?, on_flex(weight)?, bias) {
        (OnFlex::Plain(x), OnFlex::Plain(w), bias) => {
            let bias = match bias {
                None => None,
                Some(OnFlex::Plain(bias)) => Some(contiguous(&bias)),
                Some(OnFlex::Autodiff(_)) => return None,
            };
            let (x, w) = (contiguous(&x), contiguous(&w));
            let output = op.forward(values(&x), values(&w), bias.as_ref().map(values));
            Some(Tensor::from_primitive::<Flex>(output))
        }
        (OnFlex::Autodiff(x), OnFlex::Autodiff(w), None) => {
            Some(Tensor::from_primitive::<AutodiffFlex>(tracked::<Op, 2>(
                op,
                [x, w],
                None,
            )))
        }
        (OnFlex::Autodiff(x), OnFlex::Autodiff(w), Some(OnFlex::Autodiff(b))) => Some(
            Tensor::from_primitive::<AutodiffFlex>(tracked::<Op, 3>(op, [x, w], Some(b))),
        ),
        _ => None,
    }
}

/// What backward needs: the op, the contiguous input and weight, and the output where the op
/// reads it.
#[derive(Clone, Debug)]
struct State<Op> {
    op: Op,
    input: FlexTensor,
    weight: FlexTensor,
    output: Option<FlexTensor>,
}

/// The backward step of an op with `N` parents: input, weight and, when `N == 3`, bias.
#[derive(Debug)]
struct WeightedBackward<Op, const N: usize>(PhantomData<Op>);

impl<Op: WeightedOp, const N: usize> Backward<Flex, N> for WeightedBackward<Op, N> {
    type State = State<Op>;

    fn backward(self, ops: Ops<State<Op>, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let grad = contiguous(&grads.consume::<Flex>(&ops.node));
        let state = ops.state;
        let wanted = Wanted {
            input: ops.parents[0].is_some(),
            weight: ops.parents[1].is_some(),
            bias: N == 3 && ops.parents[2].is_some(),
        };
        let computed = state.op.backward(
            values(&state.input),
            values(&state.weight),
            state.output.as_ref().map(values),
            values(&grad),
            wanted,
        );
        for (parent, grad) in ops.parents.into_iter().zip(computed) {
            if let (Some(parent), Some(grad)) = (parent, grad) {
                grads.register::<Flex>(parent.id, grad);
            }
        }
    }
}

/// The forward step on autodiff tensors, recording [`WeightedBackward`] when any parent is
/// tracked. `N` is 3 with a bias, 2 without.
fn tracked<Op: WeightedOp, const N: usize>(
    op: Op,
    [x, w]: [FloatTensor<AutodiffFlex>; 2],
    bias: Option<FloatTensor<AutodiffFlex>>,
) -> FloatTensor<AutodiffFlex> {
    let mut nodes = vec![x.node(), w.node()];
    nodes.extend(bias.as_ref().map(|b| b.node()));
    let nodes: [_; N] = nodes.try_into().expect("a node per parent");
    let input = contiguous(x.primitive());
    let weight = contiguous(w.primitive());
    let bias = bias.map(|b| contiguous(b.primitive()));
    let output = op.forward(values(&input), values(&weight), bias.as_ref().map(values));
    match WeightedBackward::<Op, N>(PhantomData)
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let kept = op.reads_output().then(|| output.clone());
            let state = State {
                op,
                input,
                weight,
                output: kept,
            };
            prep.finish(state, output)
        }
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}
