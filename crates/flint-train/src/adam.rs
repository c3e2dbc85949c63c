//! Adam's step over each parameter in one parallel pass, on burn-flex's host buffers.
//!
//! burn's `Adam` computes a step as about a dozen tensor operations (scale and add each moment,
//! square the gradient, square root, bias corrections, divide, scale by the rate, subtract),
//! each a pass over the parameter that allocates its result, all on the calling thread: on the
//! reference CNN (422 k parameters) about 4 % of a training step's time at two threads, while
//! the other thread waits. [`FusedAdam`] computes the same arithmetic, in the same order (so
//! the same bits), in one pass that reads the parameter, gradient and both moments once and
//! writes the three results once, split over the compute threads. It keeps burn's state type
//! ([`AdamState`]), so checkpoints are the same, and hands anything else (another backend,
//! another float type) to burn's `Adam`.

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, Optimizer};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;
use std::mem::MaybeUninit;

/// Elements per parallel task: below this, waking another thread costs more than it saves.
const MIN_TASK: usize = 1 << 14;

/// Adam (Kingma and Ba, 2015) with L2 weight decay added to the gradient, as burn's `Adam`
/// computes it (PyTorch's `torch.optim.Adam`, AMSGrad aside), one fused pass per parameter.
#[derive(Clone)]
pub struct FusedAdam {
    beta_1: f32,
    beta_2: f32,
    epsilon: f32,
    weight_decay: Option<f32>,
    /// burn's optimiser for what the fused pass does not handle.
    burn: Adam,
}

impl FusedAdam {
    /// Adam with these moment decays, `epsilon` and L2 weight decay (added to the gradient).
    pub fn new(beta_1: f32, beta_2: f32, epsilon: f32, weight_decay: Option<f32>) -> Self {
        let burn = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(weight_decay.map(WeightDecayConfig::new))
            .build();
        Self {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            burn,
        }
    }

    /// The fused step, or `None` where it does not apply.
    fn fused<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: &Tensor<D>,
        grad: &Tensor<D>,
        state: Option<&AdamState<D>>,
    ) -> Option<(Tensor<D>, AdamState<D>)> {
        if tensor.dtype() != DType::F32 || grad.dtype() != DType::F32 {
            return None;
        }
        let shape = tensor.dims();
        if grad.dims() != shape {
            return None;
        }
        let host = |t: &Tensor<D>| -> Option<FlexTensor> {
            let t = t.clone().try_into_primitive::<Flex>().ok()?;
            t.as_slice::<f32>().is_some().then_some(t)
        };
        let (param, gradient) = (host(tensor)?, host(grad)?);
        let moments = match state {
            Some(state) => {
                let m = &state.momentum;
                if m.max_moment_2.is_some()
                    || m.moment_1.dims() != shape
                    || m.moment_2.dims() != shape
                {
                    return None;
                }
                Some((host(&m.moment_1)?, host(&m.moment_2)?, m.time))
            }
            None => None,
        };
        fn slice(t: &FlexTensor) -> &[f32] {
            t.as_slice::<f32>().expect("checked contiguous f32")
        }
        let (p, g) = (slice(&param), slice(&gradient));
        let time = moments.as_ref().map_or(0, |m| m.2) + 1;
        let step = Step {
            beta_1: self.beta_1,
            beta_2: self.beta_2,
            weight_decay: self.weight_decay,
            lr: lr as f32,
            time,
            epsilon: self.epsilon,
        };
        let [new_p, m1, m2] = match &moments {
            Some((m1, m2, _)) => step.run(p, g, Some((slice(m1), slice(m2)))),
            None => step.run(p, g, None),
        };
        let device = tensor.device();
        let make = |values: Vec<f32>| to_tensor::<D>(values, &shape, &device);
        let momentum = AdaptiveMomentumState::new(time, make(m1), make(m2));
        Some((make(new_p), AdamState::new(momentum)))
    }
}

/// A tensor of `shape` holding `values`, on `device`.
fn to_tensor<const D: usize>(values: Vec<f32>, shape: &[usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape.to_vec()), device)
}

/// One step's constants.
struct Step {
    beta_1: f32,
    beta_2: f32,
    weight_decay: Option<f32>,
    lr: f32,
    /// The step number, from 1.
    time: usize,
    epsilon: f32,
}

impl Step {
    /// The new parameter and moments, element by element in burn's order of operations:
    /// `g += decay * p`; `m1 = m1 b1 + g (1 - b1)`; `m2 = m2 b2 + g² (1 - b2)` (from zero on the
    /// first step: `m1 = g (1 - b1)`, `m2 = g² (1 - b2)`); `p -= (m1 c) / (√m2 + ε √(1 - b2^t))
    /// lr` with `c = √(1 - b2^t) / (1 - b1^t)`.
    fn run(&self, p: &[f32], g: &[f32], moments: Option<(&[f32], &[f32])>) -> [Vec<f32>; 3] {
        let (b1, b2) = (self.beta_1, self.beta_2);
        let time = self.time as i32;
        let correction_2 = (1.0 - b2.powi(time)).sqrt();
        let constants = Constants {
            b1,
            b2,
            f1: 1.0 - b1,
            f2: 1.0 - b2,
            combined: correction_2 / (1.0 - b1.powi(time)),
            shift: self.epsilon * correction_2,
            lr: self.lr,
            penalty: self.weight_decay.unwrap_or(0.0),
        };
        let decay = self.weight_decay.is_some();
        let len = p.len();
        let [mut new_p, mut new_m1, mut new_m2] = [0; 3].map(|_| Vec::<f32>::with_capacity(len));
        let outputs = new_p.spare_capacity_mut()[..len]
            .par_chunks_mut(MIN_TASK)
            .zip(new_m1.spare_capacity_mut()[..len].par_chunks_mut(MIN_TASK))
            .zip(new_m2.spare_capacity_mut()[..len].par_chunks_mut(MIN_TASK))
            .enumerate();
        outputs.for_each(|(task, ((out_p, out_m1), out_m2))| {
            let range = task * MIN_TASK..task * MIN_TASK + out_p.len();
            let inputs = Inputs {
                p: &p[range.clone()],
                g: &g[range.clone()],
                moments: moments.map(|(m1, m2)| (&m1[range.clone()], &m2[range])),
            };
            let outputs = [out_p, out_m1, out_m2];
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU has AVX2.
                unsafe { chunk_avx2(&constants, decay, inputs, outputs) };
                return;
            }
            chunk(&constants, decay, inputs, outputs);
        });
        // SAFETY: the chunks cover `0..len` of each output, and `chunk` wrote every index of
        // each.
        unsafe {
            new_p.set_len(len);
            new_m1.set_len(len);
            new_m2.set_len(len);
        }
        [new_p, new_m1, new_m2]
    }
}

/// One step's constants, per element.
struct Constants {
    b1: f32,
    b2: f32,
    /// `1 - b1`
    f1: f32,
    /// `1 - b2`
    f2: f32,
    /// `√(1 - b2^t) / (1 - b1^t)`
    combined: f32,
    /// `ε √(1 - b2^t)`
    shift: f32,
    lr: f32,
    /// The weight decay, where there is one.
    penalty: f32,
}

/// One task's inputs: the parameter, gradient and (after the first step) both moments.
struct Inputs<'a> {
    p: &'a [f32],
    g: &'a [f32],
    moments: Option<(&'a [f32], &'a [f32])>,
}

/// [`chunk`] compiled for AVX2 (8 lanes instead of SSE2's 4; the same operations in the same
/// order, so the same bits).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn chunk_avx2(
    constants: &Constants,
    decay: bool,
    inputs: Inputs<'_>,
    outputs: [&mut [MaybeUninit<f32>]; 3],
) {
    chunk(constants, decay, inputs, outputs);
}

/// Writes the new parameter and moments of one task, every element of each output; one loop
/// per case (decay or not, first step or not) so that each vectorises.
#[inline(always)]
fn chunk(
    constants: &Constants,
    decay: bool,
    inputs: Inputs<'_>,
    outputs: [&mut [MaybeUninit<f32>]; 3],
) {
    let Inputs { p, g, moments } = inputs;
    match (decay, moments) {
        (false, Some((m1, m2))) => elements::<false, true>(constants, p, g, m1, m2, outputs),
        (true, Some((m1, m2))) => elements::<true, true>(constants, p, g, m1, m2, outputs),
        (false, None) => elements::<false, false>(constants, p, g, &[], &[], outputs),
        (true, None) => elements::<true, false>(constants, p, g, &[], &[], outputs),
    }
}

/// The element loop, in burn's order of operations: `g += decay * p`; `m1 = m1 b1 + g (1 - b1)`;
/// `m2 = m2 b2 + g² (1 - b2)` (`g (1 - b1)` and `g² (1 - b2)` on the first step);
/// `p - (m1 c) / (√m2 + ε √(1 - b2^t)) lr`.
#[inline(always)]
fn elements<const DECAY: bool, const MOMENTS: bool>(
    c: &Constants,
    p: &[f32],
    g: &[f32],
    m1: &[f32],
    m2: &[f32],
    [out_p, out_m1, out_m2]: [&mut [MaybeUninit<f32>]; 3],
) {
    let n = out_p.len();
    let (p, g, out_m1, out_m2) = (&p[..n], &g[..n], &mut out_m1[..n], &mut out_m2[..n]);
    let (m1, m2) = if MOMENTS {
        (&m1[..n], &m2[..n])
    } else {
        (m1, m2)
    };
    for i in 0..n {
        let grad = if DECAY { p[i] * c.penalty + g[i] } else { g[i] };
        let (first, second) = if MOMENTS {
            (
                m1[i] * c.b1 + grad * c.f1,
                m2[i] * c.b2 + (grad * grad) * c.f2,
            )
        } else {
            (grad * c.f1, (grad * grad) * c.f2)
        };
        let update = (first * c.combined) / (second.sqrt() + c.shift);
        out_p[i].write(p[i] - update * c.lr);
        out_m1[i].write(first);
        out_m2[i].write(second);
    }
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        match self.fused(lr, &tensor, &grad, state.as_ref()) {
            Some((tensor, state)) => (tensor, Some(state)),
            None => self.burn.step(lr, tensor, grad, state),
        }
    }

    fn to_device<const D: usize>(state: Self::State<D>, device: &Device) -> Self::State<D> {
        Adam::to_device(state, device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Module;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::{GradientsParams, ModuleOptimizer};
    use burn::tensor::Distribution;
    use proptest::prelude::*;

    fn bits<const D: usize>(t: &Tensor<D>) -> Vec<u32> {
        let values = t.clone().into_data().try_to_vec::<f32>().unwrap();
        values.iter().map(|v| v.to_bits()).collect()
    }

    /// `steps` steps of flint's fused Adam and of burn's on the same parameter and gradients:
    /// the parameter and both moments after each step, as bits.
    fn both(
        len: usize,
        [beta_1, beta_2, epsilon]: [f32; 3],
        decay: Option<f32>,
        lr: f64,
        steps: usize,
        seed: u64,
    ) -> [Vec<[Vec<u32>; 3]>; 2] {
        let device = Device::flex();
        device.seed(seed);
        let start = Tensor::<1>::random([len], Distribution::Normal(0.0, 1.0), &device);
        let grads: Vec<Tensor<1>> = (0..steps)
            .map(|_| Tensor::random([len], Distribution::Normal(0.0, 0.1), &device))
            .collect();
        let fused = FusedAdam::new(beta_1, beta_2, epsilon, decay);
        let burn = AdamConfig::new()
            .with_beta_1(beta_1)
            .with_beta_2(beta_2)
            .with_epsilon(epsilon)
            .with_weight_decay(decay.map(WeightDecayConfig::new))
            .build();
        fn run<O: Optimizer<State<1> = AdamState<1>>>(
            optim: &O,
            start: &Tensor<1>,
            grads: &[Tensor<1>],
            lr: f64,
        ) -> Vec<[Vec<u32>; 3]> {
            let (mut param, mut state) = (start.clone(), None);
            let mut seen = Vec::new();
            for grad in grads {
                (param, state) = optim.step(lr, param, grad.clone(), state);
                let m = &state.as_ref().expect("Adam keeps a state").momentum;
                seen.push([bits(&param), bits(&m.moment_1), bits(&m.moment_2)]);
            }
            seen
        }
        [
            run(&fused, &start, &grads, lr),
            run(&burn, &start, &grads, lr),
        ]
    }

    #[test]
    fn matches_burns_adam_bit_for_bit() {
        // The fused pass applies to f32 tensors on flex (the comparisons below would also pass
        // if every step fell back to burn's).
        let device = Device::flex();
        let t = Tensor::<1>::ones([4], &device);
        let fused = FusedAdam::new(0.9, 0.999, 1e-8, None);
        assert!(fused.fused(1e-3, &t, &t, None).is_some());
        // Longer than one parallel task, with and without weight decay.
        let [fused, burn] = both(3 * MIN_TASK + 5, [0.9, 0.999, 1e-8], None, 1e-3, 3, 1);
        assert_eq!(fused, burn);
        let [fused, burn] = both(100, [0.8, 0.99, 1e-5], Some(0.01), 0.1, 4, 2);
        assert_eq!(fused, burn);
    }

    /// A model's optimiser state from burn's Adam continues under flint's (a checkpoint written
    /// before the switch) and the other way round, with the same steps as burn alone.
    #[test]
    fn takes_over_burns_state_in_a_module_optimiser() {
        let device = Device::flex().autodiff();
        device.seed(3);
        let layer: Linear = LinearConfig::new(6, 4).init(&device);
        let x = Tensor::<2>::random([5, 6], Distribution::Default, &device);
        let step = |optim: &mut ModuleOptimizer, layer: Linear| {
            let grads = layer.forward(x.clone()).powi_scalar(2).sum().backward();
            let grads = GradientsParams::from_grads(grads, &layer);
            optim.step(1e-2, layer, grads)
        };
        let burn = || ModuleOptimizer::from(AdamConfig::new().with_epsilon(1e-8).build());
        let fused = || ModuleOptimizer::from(FusedAdam::new(0.9, 0.999, 1e-8, None));
        let weights = |layer: &Linear| bits(&layer.weight.val());
        let (mut a, mut b) = (burn(), burn());
        let (mut alone, mut mixed) = (layer.clone(), layer);
        for _ in 0..2 {
            alone = step(&mut a, alone);
            mixed = step(&mut b, mixed);
        }
        let mut handed = fused().load_record(b.to_record());
        for _ in 0..2 {
            alone = step(&mut a, alone);
            mixed = step(&mut handed, mixed);
        }
        assert_eq!(weights(&alone), weights(&mixed));
        let mut back = burn().load_record(handed.to_record());
        alone = step(&mut a, alone);
        mixed = step(&mut back, mixed);
        assert_eq!(weights(&alone), weights(&mixed));
        assert_eq!(alone.num_params(), mixed.num_params());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn matches_burn_on_random_settings(
            len in 1usize..200, beta_1 in 0.0f32..0.99, beta_2 in 0.5f32..0.9999,
            epsilon in 1e-9f32..1e-3, decay in proptest::option::of(0.0f32..0.1),
            lr in 1e-5f64..1.0, steps in 1usize..4, seed in 0u64..1000,
        ) {
            let [fused, burn] = both(len, [beta_1, beta_2, epsilon], decay, lr, steps, seed);
            prop_assert_eq!(fused, burn);
        }
    }
}
