//! Data parallelism over several devices, with burn's own multi-device primitives.
//!
//! One step: the batch is split into one shard per device; on each device, in its own thread,
//! a fork of the model (burn's [`Module::fork`], same parameter ids) computes that shard's loss
//! and its gradients; the gradients are brought to the main device
//! ([`GradientsParams::to_device`]) and summed there ([`GradientsAccumulator`]); one optimiser
//! step on the main device follows, and the next step forks the updated model again. This is
//! what burn-train's `MultiDeviceOptim::OptimMainDevice` strategy does, and what PyTorch's
//! `nn.DataParallel` does.
//!
//! Each shard's loss is scaled by its share of the batch before the backward pass, so for a
//! loss that is a mean over examples the summed gradient is the gradient of the whole batch:
//! with layers that treat examples independently, a step on two devices equals the step on
//! one (tested below). Batch norm sees each shard's own statistics, as in `nn.DataParallel`.
//!
//! burn's collective all-reduce (`ExecutionStrategy::ddp`) needs CUDA's collective
//! communication and one process-wide group per device; it is not used here, so the same code
//! runs on every backend, the CPU included.

use std::any::Any;
use std::sync::Barrier;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;

use std::sync::Arc;

use burn::data::dataloader::{DataLoader, DataLoaderIterator};
use burn::data::dataset::DatasetError;
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Int, Tensor};
use flint_layers::WeightPenalty;

use crate::engine::TrainStep;

/// Why a multi-device step could not run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParallelError {
    /// No shard was given.
    #[error("a data-parallel step needs at least one shard")]
    NoShards,
    /// Every shard was empty.
    #[error("a data-parallel step needs at least one example")]
    NoExamples,
    /// The step panicked on one device: burn backends report some failures (out of device
    /// memory, a lost device) by panicking.
    #[error("the training step failed on device {device}: {message}")]
    Worker {
        /// The device, as burn prints it.
        device: String,
        /// The panic message.
        message: String,
    },
}

/// One shard of a batch: the device that computes it and its input, already on that device.
#[derive(Debug)]
pub struct Shard<I> {
    /// Where this shard's forward and backward passes run (an autodiff device).
    pub device: Device,
    /// The shard's input.
    pub input: I,
}

/// What one device's forward pass gives back.
#[derive(Debug)]
pub struct ShardLoss<O> {
    /// The shard's mean loss, a one-element tensor.
    pub loss: Tensor<1>,
    /// Examples in the shard: its weight in the batch's mean loss.
    pub examples: usize,
    /// Anything else the caller wants back (the logits for its metrics, say).
    pub output: O,
}

/// What one device computed, returned in shard order.
#[derive(Debug)]
pub struct ShardOutput<O> {
    /// The device that computed it.
    pub device: Device,
    /// The shard's loss value (unscaled).
    pub loss: Tensor<1>,
    /// Examples in the shard.
    pub examples: usize,
    /// The step's output.
    pub output: O,
}

/// The gradients of the mean loss over all shards, on `main` (the device of `model`'s
/// parameters), and each shard's output.
///
/// `step` gets the model forked to the shard's device and the shard's input, and returns the
/// shard's mean loss, its number of examples and whatever the caller wants back. Each shard runs
/// on its own thread; the threads meet once after their forward passes, so that each loss is
/// scaled by its exact share of the batch before its backward pass.
///
/// # Errors
///
/// [`ParallelError`] when there is no shard or no example, or a step panicked on a device
/// (named in the error).
pub fn data_parallel_gradients<M, I, O, F>(
    model: &M,
    main: &Device,
    shards: Vec<Shard<I>>,
    step: F,
) -> Result<(GradientsParams, Vec<ShardOutput<O>>), ParallelError>
where
    M: Module,
    I: Send,
    O: Send,
    F: Fn(&M, I) -> ShardLoss<O> + Sync,
{
    if shards.is_empty() {
        return Err(ParallelError::NoShards);
    }
    // Gradients live on the device without autodiff (burn keeps them as plain tensors).
    let main_plain = main.clone().inner();
    let parts = shards.len();
    let meeting = Barrier::new(parts);
    let examples_seen = AtomicUsize::new(0);
    // A worker that panics before the meeting would leave the others waiting forever: it
    // still arrives (the guard), and says so, and the others skip their backward pass.
    let failed = AtomicBool::new(false);

    type WorkerResult<O> = Option<(GradientsParams, ShardLoss<O>)>;
    let results: Vec<(Device, thread::Result<WorkerResult<O>>)> = thread::scope(|scope| {
        let handles: Vec<_> = shards
            .into_iter()
            .map(|shard| {
                let (step, main_plain) = (&step, &main_plain);
                let (meeting, examples_seen, failed) = (&meeting, &examples_seen, &failed);
                let device = shard.device.clone();
                // Modules are `Send`, not `Sync`: each thread gets its own clone to fork.
                let copy = model.clone();
                let handle = scope.spawn(move || {
                    let mut guard = Arrival {
                        meeting,
                        failed,
                        arrived: false,
                    };
                    let replica = copy.fork(&shard.device);
                    let out = step(&replica, shard.input);
                    examples_seen.fetch_add(out.examples, Ordering::SeqCst);
                    guard.arrive(false);
                    let total = examples_seen.load(Ordering::SeqCst);
                    if failed.load(Ordering::SeqCst) || total == 0 {
                        return None;
                    }
                    let share = out.examples as f64 / total as f64;
                    let loss = out.loss.clone().mul_scalar(share);
                    let grads = GradientsParams::from_grads(loss.backward(), &replica);
                    Some((grads.to_device(main_plain, &replica), out))
                });
                (device, handle)
            })
            .collect();
        handles
            .into_iter()
            .map(|(device, handle)| (device, handle.join()))
            .collect()
    });

    let mut accumulator = GradientsAccumulator::<M>::new();
    let mut outputs = Vec::with_capacity(results.len());
    let mut panicked = None;
    for (device, result) in results {
        match result {
            Ok(Some((grads, out))) => {
                accumulator.accumulate(model, grads);
                outputs.push(ShardOutput {
                    device,
                    loss: out.loss,
                    examples: out.examples,
                    output: out.output,
                });
            }
            Ok(None) => {}
            Err(payload) => {
                panicked.get_or_insert(ParallelError::Worker {
                    device: format!("{device:?}"),
                    message: panic_message(payload.as_ref()),
                });
            }
        }
    }
    if let Some(error) = panicked {
        return Err(error);
    }
    if outputs.is_empty() {
        return Err(ParallelError::NoExamples);
    }
    Ok((accumulator.grads(), outputs))
}

/// A worker's place at the meeting after the forward passes: arriving twice is harmless, and a
/// worker that unwinds before arriving arrives on the way out, marked failed.
struct Arrival<'a> {
    meeting: &'a Barrier,
    failed: &'a AtomicBool,
    arrived: bool,
}

impl Arrival<'_> {
    fn arrive(&mut self, failed: bool) {
        if !self.arrived {
            if failed {
                self.failed.store(true, Ordering::SeqCst);
            }
            self.arrived = true;
            self.meeting.wait();
        }
    }
}

impl Drop for Arrival<'_> {
    fn drop(&mut self) {
        self.arrive(true);
    }
}

/// One epoch's data split over the devices: each device gets a contiguous share of the
/// epoch's items (as burn-train's sharder and PyTorch's `DistributedSampler` do), moved to it
/// by burn's loader, in batches of the run's batch size. With one device the epoch's loader is
/// used as it is, so a single-device run is unchanged.
pub fn shard_epoch<B: Send + 'static>(
    epoch: Arc<dyn DataLoader<B>>,
    devices: &[Device],
) -> Vec<(Device, Arc<dyn DataLoader<B>>)> {
    if devices.len() <= 1 {
        return devices.iter().map(|d| (d.clone(), epoch.clone())).collect();
    }
    let mut start = 0;
    shard_sizes(epoch.num_items(), devices.len())
        .into_iter()
        .zip(devices)
        .filter(|(size, _)| *size > 0)
        .map(|(size, device)| {
            let shard = epoch.slice(start, start + size).to_device(device);
            start += size;
            (device.clone(), shard)
        })
        .collect()
}

/// The next step's batches, one per device that still has data (`None` when every device's
/// share is used up).
pub fn next_batches<B>(
    shards: &mut [(Device, Box<dyn DataLoaderIterator<B> + '_>)],
) -> Option<Result<Vec<(Device, B)>, DatasetError>> {
    let mut step = Vec::with_capacity(shards.len());
    for (device, iterator) in shards.iter_mut() {
        match iterator.next() {
            Some(Ok(batch)) => step.push((device.clone(), batch)),
            Some(Err(error)) => return Some(Err(error)),
            None => {}
        }
    }
    (!step.is_empty()).then_some(Ok(step))
}

/// What a data-parallel step computed, for the engine's checks and metrics.
pub struct ParallelStep {
    /// The gradients of the whole step, on the main device.
    pub grads: GradientsParams,
    /// The step's mean data loss, each shard weighted by its examples.
    pub loss: f32,
    /// Each shard's mean data loss, logits and targets, moved to the main device.
    pub shards: Vec<(f32, Tensor<2>, Tensor<1, Int>)>,
}

/// One data-parallel step of a [`TrainStep`] model over `batches` (one per device): the data
/// loss plus `penalty` on each shard, differentiated by [`data_parallel_gradients`].
pub fn parallel_step<M, B>(
    model: &M,
    main: &Device,
    batches: Vec<(Device, B)>,
    penalty: Option<&WeightPenalty>,
) -> Result<ParallelStep, ParallelError>
where
    M: TrainStep<B>,
    B: Send,
{
    let shards = batches
        .into_iter()
        .map(|(device, input)| Shard { device, input })
        .collect();
    let (grads, outputs) = data_parallel_gradients(model, main, shards, |replica: &M, batch| {
        let out = replica.forward_batch(batch);
        let examples = out.targets.dims()[0];
        let loss = match penalty {
            Some(p) => out.loss.clone() + p.penalty(replica, &out.loss.device()),
            None => out.loss.clone(),
        };
        ShardLoss {
            loss,
            examples,
            output: (out.loss, out.logits.detach(), out.targets),
        }
    })?;
    let mut total = 0.0f64;
    let mut examples = 0usize;
    let mut shards = Vec::with_capacity(outputs.len());
    for out in outputs {
        let (data_loss, logits, targets) = out.output;
        let value: f32 = data_loss.into_scalar();
        total += f64::from(value) * out.examples as f64;
        examples += out.examples;
        shards.push((value, logits.to_device(main), targets.to_device(main)));
    }
    Ok(ParallelStep {
        grads,
        loss: (total / examples.max(1) as f64) as f32,
        shards,
    })
}

/// Sizes of `parts` shards of `examples` examples, as equal as possible, larger ones first
/// (PyTorch's `DataParallel` scatters the same way).
pub fn shard_sizes(examples: usize, parts: usize) -> Vec<usize> {
    if parts == 0 {
        return Vec::new();
    }
    let (base, extra) = (examples / parts, examples % parts);
    (0..parts).map(|i| base + usize::from(i < extra)).collect()
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::Param;
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::nn::{Linear, LinearConfig, Relu};
    use burn::tensor::{Distribution, Int, TensorData};

    #[derive(Module, Debug)]
    struct Net {
        fc1: Linear,
        fc2: Linear,
        relu: Relu,
    }

    impl Net {
        fn forward(&self, x: Tensor<2>) -> Tensor<2> {
            self.fc2.forward(self.relu.forward(self.fc1.forward(x)))
        }
    }

    fn setup(device: &Device) -> (Net, Tensor<2>, Tensor<1, Int>) {
        device.seed(7);
        let net = Net {
            fc1: LinearConfig::new(6, 16).init(device),
            fc2: LinearConfig::new(16, 3).init(device),
            relu: Relu::new(),
        };
        let x = Tensor::<2>::random([10, 6], Distribution::Normal(0.0, 1.0), device);
        let labels = vec![0i64, 1, 2, 0, 1, 2, 0, 1, 2, 0];
        let y = Tensor::<1, Int>::from_data(TensorData::new(labels, [10]), device);
        (net, x, y)
    }

    fn cross_entropy(model: &Net, (x, y): (Tensor<2>, Tensor<1, Int>)) -> ShardLoss<f32> {
        let examples = y.dims()[0];
        let loss = CrossEntropyLossConfig::new()
            .init(&x.device())
            .forward(model.forward(x), y);
        let value: f32 = loss.clone().into_scalar();
        ShardLoss {
            loss,
            examples,
            output: value,
        }
    }

    fn grad_values(grads: &GradientsParams, param: &Param<Tensor<2>>) -> Vec<f32> {
        grads
            .get::<2>(param.id)
            .expect("a gradient for every weight")
            .into_data()
            .iter::<f32>()
            .collect()
    }

    fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Shards of 7 and 3 examples on two devices give the gradient of all 10 on one: the CPU
    /// has one flex device, so both shards run on it, each in its own thread, through the same
    /// fork / move / accumulate path a machine with two GPUs takes.
    #[test]
    fn two_shards_give_the_whole_batch_gradient() {
        let device = Device::flex().autodiff();
        let (net, x, y) = setup(&device);
        let whole = cross_entropy(&net, (x.clone(), y.clone())).loss;
        let reference = GradientsParams::from_grads(whole.backward(), &net);

        let shards = vec![
            Shard {
                device: device.clone(),
                input: (x.clone().narrow(0, 0, 7), y.clone().narrow(0, 0, 7)),
            },
            Shard {
                device: device.clone(),
                input: (x.narrow(0, 7, 3), y.narrow(0, 7, 3)),
            },
        ];
        let (grads, outputs) =
            data_parallel_gradients(&net, &device, shards, cross_entropy).unwrap();
        assert_eq!(
            outputs.iter().map(|o| o.examples).collect::<Vec<_>>(),
            vec![7, 3]
        );
        for param in [&net.fc1.weight, &net.fc2.weight] {
            let diff = max_abs_diff(&grad_values(&grads, param), &grad_values(&reference, param));
            assert!(diff < 1e-6, "gradients differ by {diff}");
        }
    }

    /// One device failing (burn panics on a lost device or exhausted memory) fails the step
    /// with its message, without leaving the other devices waiting at the meeting.
    #[test]
    fn a_panicking_step_is_an_error_naming_the_device() {
        let device = Device::flex().autodiff();
        let (net, x, y) = setup(&device);
        let shard = |fail: bool| Shard {
            device: device.clone(),
            input: (x.clone(), y.clone(), fail),
        };
        let shards = vec![shard(false), shard(true)];
        type Input = (Tensor<2>, Tensor<1, Int>, bool);
        let err =
            data_parallel_gradients(&net, &device, shards, |model: &Net, (x, y, fail): Input| {
                if fail {
                    panic!("out of device memory");
                }
                cross_entropy(model, (x, y))
            })
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("out of device memory") && message.contains("failed on device"),
            "{message}"
        );
    }

    #[test]
    fn no_shards_is_refused() {
        let device = Device::flex().autodiff();
        let (net, _, _) = setup(&device);
        let none: Vec<Shard<(Tensor<2>, Tensor<1, Int>)>> = Vec::new();
        assert_eq!(
            data_parallel_gradients(&net, &device, none, cross_entropy).unwrap_err(),
            ParallelError::NoShards
        );
    }

    #[test]
    fn shards_are_as_equal_as_possible() {
        assert_eq!(shard_sizes(10, 3), vec![4, 3, 3]);
        assert_eq!(shard_sizes(2, 4), vec![1, 1, 0, 0]);
        assert_eq!(shard_sizes(7, 0), Vec::<usize>::new());
    }
}
