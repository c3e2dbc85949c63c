//! The one training loop: every flint run (`flint train`, fine-tuning, the experiments) and any
//! burn model a user brings goes through [`Engine::fit`].
//!
//! The model says how it turns a batch into logits and a loss ([`TrainStep`]; image classifiers
//! get it from [`Classify`]); the data says how it makes one epoch's batches from a seed
//! ([`Batches`]; [`DatasetBatches`] wraps any burn `Dataset` + `Batcher`). The engine does the
//! rest, the same way for every caller: optimiser and schedule, per-group learning rates,
//! penalties, global-norm clipping, max-norm, the stop on a diverged loss naming epoch and
//! batch, per-epoch evaluation, early stopping, atomic checkpoints, exact resume and progress.

mod batches;
mod model;

pub use batches::{Batches, DatasetBatches};
pub use model::{Classify, Forward, TrainStep};

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::config::Config;
use burn::module::ParamGroup;
use burn::optim::GradientsParams;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::prelude::*;
use flint_io::seed::derive_seed;

use crate::checkpoint::{self, RunState};
use crate::config::{EarlyStoppingConfig, OptimizerConfig, ScheduleConfig};
use crate::error::TrainError;
use crate::kernel_profile::{Phase, PhaseProfiler};
use crate::metrics::{EpochMetrics, EpochTally, EvalAccumulator, EvalReport, metrics_csv};
use crate::optim::{build_optimizer, clip_grad_norm};
use crate::parallel;
use crate::progress::{Progress, ProgressMode};
use crate::step::{RegularizationConfig, loss_diverged, uniform_loss};

/// How a run trains: everything of a run's configuration the loop itself reads.
#[derive(Config, Debug)]
pub struct LoopConfig {
    /// Epochs (passes over the training data).
    #[config(default = 10)]
    pub epochs: usize,
    /// Samples per batch.
    #[config(default = 128)]
    pub batch_size: usize,
    /// Optimiser, its learning rate and gradient clipping.
    #[config(default = "OptimizerConfig::new()")]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[config(default = "ScheduleConfig::new()")]
    pub schedule: ScheduleConfig,
    /// Seed of initialisation-independent randomness: every epoch's order, dropout masks and
    /// augmentation derive from `(seed, epoch)`.
    #[config(default = 0)]
    pub seed: u64,
    /// Early stopping on the evaluation set.
    #[config(default = "None")]
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// Weight penalties and max-norm.
    #[config(default = "None")]
    pub regularization: Option<RegularizationConfig>,
}

impl LoopConfig {
    /// Checks every value, naming the field.
    pub fn validate(&self) -> Result<(), TrainError> {
        if self.epochs == 0 {
            return Err(TrainError::Config("epochs must be at least 1".into()));
        }
        if self.batch_size == 0 {
            return Err(TrainError::Config("batch size must be at least 1".into()));
        }
        self.optimizer.validate()?;
        self.schedule.validate(self.epochs, self.optimizer.lr)?;
        if let Some(es) = &self.early_stopping
            && es.patience == 0
        {
            return Err(TrainError::Config(
                "early-stopping patience must be at least 1".into(),
            ));
        }
        if let Some(r) = &self.regularization {
            r.validate()?;
        }
        Ok(())
    }
}

/// An error from a caller's hook, passed through the engine unchanged.
pub type HookError = Box<dyn std::error::Error + Send + Sync>;

type EpochHook<'a, M> = Box<dyn FnMut(usize, M, &Progress) -> Result<M, HookError> + 'a>;
type StepHook<'a, M> = Box<dyn FnMut(usize, &M) -> Result<(), HookError> + 'a>;

/// The data a run evaluates on after every epoch.
pub struct EvalSet<'a, B> {
    /// The samples.
    pub data: &'a dyn Batches<B>,
    /// How reports name it: `val` or `test`.
    pub name: &'static str,
    /// Samples per evaluation batch.
    pub batch_size: usize,
}

/// What a run produced.
pub struct Trained<M> {
    /// The model after its last step, still on the training device (training mode); `valid()`
    /// gives the inference model.
    pub model: M,
    /// Metrics of every epoch, including those before a resume.
    pub history: Vec<EpochMetrics>,
    /// The epoch whose model is `checkpoints/best` (best monitored value).
    pub best_epoch: Option<usize>,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Whether the run stopped at `stop_after` and can be resumed.
    pub interrupted: bool,
    /// Optimisation steps taken in this call.
    pub steps: usize,
    /// Mean training loss over the last epoch's worth of steps.
    pub recent_train_loss: f64,
    /// Seconds spent training in this call (hooks excluded).
    pub train_secs: f64,
}

/// The training loop, set up step by step:
///
/// ```text
/// Engine::new(config, &train).eval(..).run_dir(..).progress(..).fit(model, resume)
/// ```
pub struct Engine<'a, M, B> {
    config: LoopConfig,
    devices: Vec<Device>,
    train: &'a dyn Batches<B>,
    eval: Option<EvalSet<'a, B>>,
    run_dir: Option<PathBuf>,
    progress: ProgressMode,
    stop_after: Option<usize>,
    max_steps: Option<usize>,
    lr_groups: Vec<(ParamGroup, f64)>,
    on_epoch: Option<EpochHook<'a, M>>,
    on_step: Option<(usize, StepHook<'a, M>)>,
}

impl<'a, M, B> Engine<'a, M, B>
where
    M: TrainStep<B>,
    B: Send + 'static,
{
    /// A run of `config` on `train`, on flex, silent, without files.
    pub fn new(config: LoopConfig, train: &'a dyn Batches<B>) -> Self {
        Self {
            config,
            devices: vec![Device::flex()],
            train,
            eval: None,
            run_dir: None,
            progress: ProgressMode::Silent,
            stop_after: None,
            max_steps: None,
            lr_groups: Vec::new(),
            on_epoch: None,
            on_step: None,
        }
    }

    /// The devices to train on (plain devices: the engine makes them autodiff). The model
    /// lives on the first; with several, training is data parallel (see the crate docs) and
    /// the batch size is per device.
    pub fn devices(mut self, devices: Vec<Device>) -> Self {
        self.devices = devices;
        self
    }

    /// Evaluate after every epoch (for the best checkpoint, early stopping and the metrics).
    pub fn eval(mut self, eval: EvalSet<'a, B>) -> Self {
        self.eval = Some(eval);
        self
    }

    /// Write `metrics.csv` and `checkpoints/{best,last}` into `dir`, which must already hold
    /// the run's `config.json` (checkpoints record its checksum).
    pub fn run_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_dir = Some(dir.into());
        self
    }

    /// How progress is shown.
    pub fn progress(mut self, mode: ProgressMode) -> Self {
        self.progress = mode;
        self
    }

    /// Stop after this epoch as if interrupted (a run directory's `--resume` continues it).
    pub fn stop_after(mut self, epoch: Option<usize>) -> Self {
        self.stop_after = epoch;
        self
    }

    /// Stop after this many optimisation steps; the schedule spans them (experiments give
    /// every data-set size the same budget).
    pub fn max_steps(mut self, steps: usize) -> Self {
        self.max_steps = Some(steps);
        self
    }

    /// The parameters of `group` learn at `factor` times the scheduled rate (later groups win
    /// where groups overlap).
    pub fn lr_group(mut self, group: ParamGroup, factor: f64) -> Self {
        self.lr_groups.push((group, factor));
        self
    }

    /// Called at the start of every epoch (1-based) with the model, which it may change:
    /// freezing and unfreezing for gradual unfreezing. It must depend on the epoch alone, so a
    /// resumed run makes the same changes.
    pub fn on_epoch(
        mut self,
        hook: impl FnMut(usize, M, &Progress) -> Result<M, HookError> + 'a,
    ) -> Self {
        self.on_epoch = Some(Box::new(hook));
        self
    }

    /// Called with the step count and the inference-mode model at step 0, every `every` steps
    /// and after the last step (its time is not counted as training time).
    pub fn on_step(
        mut self,
        every: usize,
        hook: impl FnMut(usize, &M) -> Result<(), HookError> + 'a,
    ) -> Self {
        self.on_step = Some((every.max(1), Box::new(hook)));
        self
    }

    /// Trains `model` (initialised on the first device made autodiff). With `resume`, the run
    /// directory's last checkpoint is loaded first and training continues after it, exactly as
    /// the uninterrupted run would have; a run directory without any checkpoint starts again.
    pub fn fit(mut self, model: M, resume: bool) -> Result<Trained<M>, TrainError> {
        self.config.validate()?;
        if self.devices.is_empty() {
            return Err(TrainError::Config("no device to train on".into()));
        }
        if self.train.is_empty() {
            return Err(TrainError::Config("the training set is empty".into()));
        }
        let config = &self.config;
        let device = self.devices[0].clone();
        let train_device = device.clone().autodiff();
        // Data-parallel over several devices: each takes a share of every epoch's batches;
        // the first holds the model and takes the optimiser step (see `parallel`).
        let train_devices: Vec<Device> =
            self.devices.iter().map(|d| d.clone().autodiff()).collect();
        let mut progress = Progress::new(self.progress);
        let mut model = model;
        let mut optimizer = build_optimizer(&config.optimizer);
        let dirs = self.run_dir.as_ref().map(|d| {
            let ckpt = d.join("checkpoints");
            (d.clone(), ckpt.join("last"), ckpt.join("best"))
        });
        let mut state = RunState::new(config.seed, String::new());
        if let Some((run_dir, last, best)) = &dirs {
            state.config_sha256 = checkpoint::file_sha256(&run_dir.join("config.json"))?;
            if resume {
                checkpoint::tidy_run_dir(run_dir)?;
            }
            // No checkpoint at all: killed during the first epoch, so the run starts again. One
            // that only lost `last` (with `best` still there) is refused by `load_state`.
            if resume && (checkpoint::exists(last) || checkpoint::exists(best)) {
                let (dir, saved) = checkpoint::load_state(last)?;
                checkpoint::check_config_unchanged(&run_dir.join("config.json"), &saved)?;
                model = checkpoint::load_model(&dir, model)?;
                optimizer = checkpoint::load_optimizer(&dir, optimizer)?;
                progress.info(&format!(
                    "resuming {} after epoch {}",
                    run_dir.display(),
                    saved.epoch
                ));
                state = saved;
            } else if resume {
                progress.info(&format!(
                    "{} has no checkpoint yet (stopped during its first epoch): starting it again",
                    run_dir.display()
                ));
            }
        }

        // With several devices a step takes one batch from each device's share.
        let largest_share = parallel::shard_sizes(self.train.len(), train_devices.len())[0];
        let steps_per_epoch = largest_share.div_ceil(config.batch_size);
        let (epochs, total_steps) = match self.max_steps {
            Some(steps) => (steps.div_ceil(steps_per_epoch), steps),
            None => (config.epochs, steps_per_epoch * config.epochs),
        };
        let penalty = config
            .regularization
            .as_ref()
            .and_then(RegularizationConfig::penalty);
        let constraint = config
            .regularization
            .as_ref()
            .and_then(RegularizationConfig::constraint);
        if constraint.is_some() && TrainStep::max_norm_layers(&mut model).is_none() {
            return Err(TrainError::Config(
                "max-norm needs a model that names its constrained layers (MaxNormLayers)".into(),
            ));
        }
        let classes = self.train.class_names().len();
        let monitor_loss = config
            .early_stopping
            .as_ref()
            .is_some_and(|e| e.monitor_loss);
        let min_delta = config.early_stopping.as_ref().map_or(0.0, |e| e.min_delta);
        let window = steps_per_epoch.min(total_steps);
        let mut recent = std::collections::VecDeque::with_capacity(window);
        let mut hook_secs = 0.0;
        let mut step = state.epoch * steps_per_epoch;
        let first_step = step;
        let start = Instant::now();
        let mut stopped_early = false;
        let mut interrupted = false;

        if let Some((_, hook)) = self.on_step.as_mut()
            && step == 0
        {
            let t = Instant::now();
            hook(0, &model.valid()).map_err(TrainError::Hook)?;
            hook_secs += t.elapsed().as_secs_f64();
        }
        let mut kernels = PhaseProfiler::from_env();
        'epochs: for epoch in state.epoch + 1..=epochs {
            if let Some(hook) = self.on_epoch.as_mut() {
                model = hook(epoch, model, &progress).map_err(TrainError::Hook)?;
            }
            // Every epoch's randomness derives from (seed, epoch): a resumed run replays exactly
            // what the uninterrupted one would have done.
            let epoch_seed = derive_seed(config.seed, epoch as u64);
            train_device.seed(epoch_seed);
            let batches = self
                .train
                .epoch(config.batch_size, Some(epoch_seed), &train_device)?;
            let epoch_steps = match self.max_steps {
                Some(max) => steps_per_epoch.min(max - step),
                None => steps_per_epoch,
            };
            progress.start_epoch(epoch, epochs, epoch_steps);
            let mut tally = EpochTally::start();
            kernels.start();
            let mut lr = config.optimizer.lr;
            let shards = parallel::shard_epoch(batches, &train_devices);
            let mut iterators: Vec<_> = shards.iter().map(|(d, l)| (d.clone(), l.iter())).collect();
            let mut b = 0;
            while let Some(step_batches) = parallel::next_batches(&mut iterators) {
                let step_batches = step_batches
                    .map_err(|e| TrainError::Report(format!("loading a batch: {e}")))?;
                lr = config.schedule.lr_at(
                    config.optimizer.lr,
                    (epoch - 1) * steps_per_epoch + b,
                    steps_per_epoch,
                    total_steps,
                );
                b += 1;
                let diverged = |loss: f32| TrainError::Diverged {
                    epoch,
                    batch: b,
                    loss,
                    uniform: uniform_loss(classes),
                    checkpoint: dirs
                        .as_ref()
                        .map(|(_, last, _)| last.clone())
                        .filter(|last| last.join("state.json").exists()),
                };
                let (mut grads, loss_value, outputs) = if step_batches.len() == 1 {
                    let Some((_, batch)) = step_batches.into_iter().next() else {
                        unreachable!("one batch");
                    };
                    let out = model.forward_batch(batch);
                    // The one device sync of a step: a non-finite weight makes the data loss
                    // non-finite too, so the penalty needs no check of its own.
                    let loss_value: f32 = out.loss.clone().into_scalar();
                    if loss_diverged(loss_value, out.logits.dims()[1]) {
                        return Err(diverged(loss_value));
                    }
                    let loss = match &penalty {
                        Some(p) => out.loss + p.penalty(&model, &train_device),
                        None => out.loss,
                    };
                    let grads = GradientsParams::from_grads(loss.backward(), &model);
                    (
                        grads,
                        loss_value,
                        vec![(loss_value, out.logits, out.targets)],
                    )
                } else {
                    let step = parallel::parallel_step(
                        &model,
                        &train_device,
                        step_batches,
                        penalty.as_ref(),
                    )?;
                    let classes_out = step.shards[0].1.dims()[1];
                    // Checked before the update, as on one device (the gradients are dropped).
                    if loss_diverged(step.loss, classes_out) {
                        return Err(diverged(step.loss));
                    }
                    (step.grads, step.loss, step.shards)
                };
                if let Some(max_norm) = config.optimizer.clip_grad_norm {
                    clip_grad_norm(&model, &mut grads, max_norm);
                }
                model = if self.lr_groups.is_empty() {
                    optimizer.step(lr, model, grads)
                } else {
                    optimizer.step(group_rates(lr, &self.lr_groups), model, grads)
                };
                if let Some(c) = &constraint
                    && let Some(layers) = TrainStep::max_norm_layers(&mut model)
                {
                    c.apply(model::Layers(layers));
                }
                for (shard_loss, logits, targets) in outputs {
                    kernels.samples(logits.dims()[0]);
                    tally.add(shard_loss, logits, targets);
                }
                progress.batch(tally.loss(), tally.accuracy(), tally.samples_per_sec());
                if recent.len() == window {
                    recent.pop_front();
                }
                recent.push_back(loss_value as f64);
                step += 1;
                let last_step = self.max_steps == Some(step);
                if let Some((every, hook)) = self.on_step.as_mut()
                    && (step.is_multiple_of(*every) || last_step)
                {
                    let t = Instant::now();
                    hook(step, &model.valid()).map_err(TrainError::Hook)?;
                    hook_secs += t.elapsed().as_secs_f64();
                }
                if last_step {
                    break;
                }
            }
            let train_secs = tally.secs();
            kernels.end(Phase::Train);
            let eval = match &self.eval {
                Some(set) => evaluate_model(&model.valid(), set.data, set.batch_size, &device)?,
                None => EvalReport::empty(),
            };
            kernels.end(Phase::Eval);
            let metrics = tally.metrics(epoch, lr, train_secs, &eval);
            let eval_name = self.eval.as_ref().map_or("val", |e| e.name);
            progress.end_epoch(&metrics, epochs, eval_name);
            state.history.push(metrics.clone());
            state.epoch = epoch;

            let value = if monitor_loss {
                metrics.val_loss
            } else {
                metrics.val_accuracy
            };
            let improved = self.eval.is_some()
                && match state.best_monitor {
                    None => true,
                    Some(best) if monitor_loss => value < best - min_delta,
                    Some(best) => value > best + min_delta,
                };
            if improved {
                state.best_monitor = Some(value);
                state.best_epoch = Some(epoch);
                state.epochs_without_improvement = 0;
            } else {
                state.epochs_without_improvement += 1;
            }
            if let Some((run_dir, last, best)) = &dirs {
                checkpoint::write_atomic(
                    &run_dir.join("metrics.csv"),
                    metrics_csv(&state.history).as_bytes(),
                )?;
                if improved {
                    checkpoint::save(best, &model, &optimizer, &state)?;
                }
                checkpoint::save(last, &model, &optimizer, &state)?;
            }
            if self.max_steps == Some(step) {
                break;
            }
            if let Some(es) = &config.early_stopping
                && self.eval.is_some()
                && state.epochs_without_improvement >= es.patience
                && epoch < epochs
            {
                progress.info(&format!(
                    "early stopping: no improvement for {} epochs (best epoch {})",
                    es.patience,
                    state.best_epoch.unwrap_or(0)
                ));
                stopped_early = true;
                break 'epochs;
            }
            if self.stop_after == Some(epoch) && epoch < epochs {
                let how = match &dirs {
                    Some((run_dir, ..)) => {
                        format!("; continue with --resume {}", run_dir.display())
                    }
                    None => String::new(),
                };
                progress.info(&format!("stopped after epoch {epoch} as asked{how}"));
                interrupted = true;
                break 'epochs;
            }
        }
        kernels.finish(dirs.as_ref().map(|(run_dir, ..)| run_dir.as_path()))?;
        Ok(Trained {
            model,
            history: state.history,
            best_epoch: state.best_epoch,
            stopped_early,
            interrupted,
            steps: step - first_step,
            recent_train_loss: recent.iter().sum::<f64>() / recent.len().max(1) as f64,
            train_secs: start.elapsed().as_secs_f64() - hook_secs,
        })
    }
}

/// Per-parameter learning rates: `lr` for everything, `lr * factor` for the parameters of each
/// group (later groups win where they overlap), as `optimizer.step` takes them.
pub fn group_rates(lr: f64, groups: &[(ParamGroup, f64)]) -> ModuleLearningRate {
    let mut rates = ModuleLrScheduler::new(lr);
    for (group, factor) in groups {
        rates = rates.with_group(group.clone(), lr * factor);
    }
    rates.step()
}

/// Evaluates an inference-mode model on `data`, in order, in batches of `batch_size`.
pub fn evaluate_model<M, B>(
    model: &M,
    data: &dyn Batches<B>,
    batch_size: usize,
    device: &Device,
) -> Result<EvalReport, TrainError>
where
    M: TrainStep<B>,
{
    let names = data.class_names();
    let dl = data.epoch(batch_size, None, device)?;
    let mut eval = EvalAccumulator::new(names.len(), device);
    for batch in dl.iter() {
        let batch = batch.map_err(|e| TrainError::Report(format!("loading a batch: {e}")))?;
        let out = model.forward_batch(batch);
        eval.add(out.logits, out.targets);
    }
    Ok(eval.finish(names))
}

/// Writes a finished run's `curves.png`, `report.md` (from `report`, told whether the plot was
/// written) and `result.json` (`result` plus the peak resident memory); returns that peak.
pub fn write_run_files(
    run_dir: &Path,
    history: &[EpochMetrics],
    eval_name: &str,
    report: impl FnOnce(bool) -> String,
    mut result: serde_json::Value,
) -> Result<Option<f64>, TrainError> {
    let plotted = !history.is_empty()
        && crate::report::plot_curves(&run_dir.join("curves.png"), history, eval_name).is_ok();
    checkpoint::write_atomic(&run_dir.join("report.md"), report(plotted).as_bytes())?;
    // Peak of this process: after a --resume, of the resumed part only.
    let peak_rss_mib = crate::memory::resident_memory().map(|m| m.peak_mib);
    result["peak_rss_mib"] = serde_json::json!(peak_rss_mib);
    let json =
        serde_json::to_string_pretty(&result).map_err(|e| TrainError::Report(e.to_string()))?;
    checkpoint::write_atomic(&run_dir.join("result.json"), json.as_bytes())?;
    Ok(peak_rss_mib)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use flint_data::ImageSet;

    use crate::config::OptimizerKind;
    use crate::trainer::ImageBatches;

    /// A model of a user's own: one linear layer over the pixels.
    #[derive(Module, Debug)]
    struct Tiny {
        linear: Linear,
    }

    impl Classify for Tiny {
        fn logits(&self, images: Tensor<4>) -> Tensor<2> {
            let [n, c, h, w] = images.dims();
            self.linear.forward(images.reshape([n, c * h * w]))
        }
    }

    fn images() -> ImageSet {
        let pixels = (0..8 * 16).map(|i| (i * 53 % 255) as u8).collect();
        let labels = (0..8).map(|i| (i % 2) as u8).collect();
        ImageSet::new("t", [1, 4, 4], pixels, labels, vec!["a".into(), "b".into()]).unwrap()
    }

    fn weights(model: &Tiny) -> Vec<f32> {
        let mut w: Vec<f32> = model
            .linear
            .weight
            .val()
            .into_data()
            .iter::<f32>()
            .collect();
        if let Some(b) = &model.linear.bias {
            w.extend(b.val().into_data().iter::<f32>());
        }
        w
    }

    /// The norm of the update one plain-SGD step at a huge rate makes, with `clip`.
    fn update_norm(clip: Option<f64>) -> f64 {
        let model = Tiny {
            linear: LinearConfig::new(16, 2).init(&Device::flex().autodiff()),
        };
        let before = weights(&model);
        let optim = OptimizerConfig::new()
            .with_kind(OptimizerKind::Sgd)
            .with_momentum(0.0)
            .with_lr(1e4)
            .with_clip_grad_norm(clip);
        let config = LoopConfig::new()
            .with_epochs(1)
            .with_batch_size(8)
            .with_optimizer(optim);
        let data = ImageBatches::new(images());
        let trained = Engine::new(config, &data).fit(model, false).unwrap();
        let after = weights(&trained.model);
        let sq: f64 = before
            .iter()
            .zip(&after)
            .map(|(a, b)| f64::from(a - b).powi(2))
            .sum();
        sq.sqrt()
    }

    #[test]
    fn clipping_bounds_a_huge_step_by_lr_times_the_norm() {
        // lr 1e4 and a global gradient norm clipped to 1e-3: the step is at most 10 long.
        let clipped = update_norm(Some(1e-3));
        assert!(clipped <= 10.0 * (1.0 + 1e-3), "{clipped}");
        assert!(clipped > 9.0, "{clipped}");
        let free = update_norm(None);
        assert!(free > 100.0, "{free}");
    }

    #[test]
    fn stop_after_then_resume_replays_the_uninterrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let run = |name: &str, stop: Option<usize>, resume: bool| {
            let run_dir = dir.path().join(name);
            std::fs::create_dir_all(&run_dir).unwrap();
            if !resume {
                std::fs::write(run_dir.join("config.json"), "{}").unwrap();
            }
            Device::flex().autodiff().seed(3);
            let model = Tiny {
                linear: LinearConfig::new(16, 2).init(&Device::flex().autodiff()),
            };
            let data = ImageBatches::new(images());
            let config = LoopConfig::new()
                .with_epochs(3)
                .with_batch_size(3)
                .with_seed(3);
            Engine::new(config, &data)
                .eval(EvalSet {
                    data: &data,
                    name: "val",
                    batch_size: 8,
                })
                .run_dir(&run_dir)
                .stop_after(stop)
                .fit(model, resume)
                .unwrap()
        };
        let whole = run("whole", None, false);
        let first = run("split", Some(1), false);
        assert!(first.interrupted && first.history.len() == 1);
        let rest = run("split", None, true);
        assert_eq!(rest.history.len(), 3);
        assert_eq!(weights(&whole.model), weights(&rest.model));
        for (a, b) in whole.history.iter().zip(&rest.history) {
            assert_eq!((a.train_loss, a.val_loss), (b.train_loss, b.val_loss));
        }
    }

    /// Two devices at batch 4 against one at batch 8, plain SGD, 3 epochs: every step of the
    /// two-device run takes one half of the 8 images on each device, so it makes the same
    /// update as the one-device step on all 8 (up to the order of the float sums). On the CPU
    /// both devices are flex, each shard computed in its own thread.
    #[test]
    fn two_devices_make_the_same_steps_as_one_with_their_batches_together() {
        let data = ImageBatches::new(images());
        let init = Tiny {
            linear: LinearConfig::new(16, 2).init(&Device::flex().autodiff()),
        };
        let run = |devices: Vec<Device>, batch_size: usize| {
            let optim = OptimizerConfig::new()
                .with_kind(OptimizerKind::Sgd)
                .with_momentum(0.0)
                .with_lr(0.5);
            let config = LoopConfig::new()
                .with_epochs(3)
                .with_batch_size(batch_size)
                .with_optimizer(optim);
            Engine::new(config, &data)
                .devices(devices)
                .fit(init.clone(), false)
                .unwrap()
        };
        let one = run(vec![Device::flex()], 8);
        let two = run(vec![Device::flex(), Device::flex()], 4);
        assert_eq!((one.steps, two.steps), (3, 3));
        let moved: f32 = weights(&one.model)
            .iter()
            .zip(weights(&init))
            .map(|(a, b)| (a - b).abs())
            .sum();
        assert!(moved > 1e-3, "the weights did not move");
        for (a, b) in weights(&one.model).iter().zip(weights(&two.model)) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
        for (a, b) in one.history.iter().zip(&two.history) {
            assert!((a.train_loss - b.train_loss).abs() < 1e-5);
            assert_eq!(a.train_accuracy, b.train_accuracy);
        }
    }

    #[test]
    fn max_norm_without_layers_is_refused() {
        let data = ImageBatches::new(images());
        let model = || Tiny {
            linear: LinearConfig::new(16, 2).init(&Device::flex().autodiff()),
        };
        let config = LoopConfig::new()
            .with_regularization(Some(RegularizationConfig::new().with_max_norm(Some(1.0))));
        let err = Engine::new(config, &data)
            .fit(model(), false)
            .err()
            .unwrap();
        assert!(err.to_string().contains("MaxNormLayers"), "{err}");
    }
}
