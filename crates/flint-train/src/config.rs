//! Everything a training run is made of, as `#[derive(Config)]` structs saved in the run
//! directory (`config.json`) and accepted back with `flint train --config`.

use std::path::Path;

use burn::config::Config;
use flint_models::ModelConfig;
use serde_json::Value;

use crate::error::TrainError;
use crate::step::RegularizationConfig;

/// Which optimiser.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Stochastic gradient descent with (optionally Nesterov) momentum.
    Sgd,
    /// Adam (Kingma & Ba 2015); weight decay is L2 added to the gradient, as in PyTorch.
    Adam,
    /// AdamW (Loshchilov & Hutter 2019): decoupled weight decay.
    AdamW,
}

/// The optimiser and its hyper-parameters (PyTorch's defaults and names).
#[derive(Config, Debug)]
pub struct OptimizerConfig {
    /// Which optimiser.
    #[config(default = "OptimizerKind::Adam")]
    pub kind: OptimizerKind,
    /// Peak learning rate (after warm-up).
    #[config(default = 1e-3)]
    pub lr: f64,
    /// SGD momentum (0 for plain SGD).
    #[config(default = 0.9)]
    pub momentum: f64,
    /// Nesterov momentum for SGD.
    #[config(default = false)]
    pub nesterov: bool,
    /// Adam/AdamW `beta1`.
    #[config(default = 0.9)]
    pub beta1: f64,
    /// Adam/AdamW `beta2`.
    #[config(default = 0.999)]
    pub beta2: f64,
    /// Adam/AdamW `eps` (PyTorch's 1e-8; burn's default is 1e-5).
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Weight decay (L2 for SGD and Adam, decoupled for AdamW).
    #[config(default = 0.0)]
    pub weight_decay: f64,
    /// Clip the global gradient norm to this value before each step
    /// (`torch.nn.utils.clip_grad_norm_`); `None` does not clip.
    #[config(default = "None")]
    pub clip_grad_norm: Option<f64>,
}

impl OptimizerConfig {
    /// Checks every value, naming the field and the allowed range (the one check `flint train`,
    /// fine-tuning and the experiments share).
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |msg: String| Err(TrainError::Config(msg));
        let o = self;
        if !(o.lr.is_finite() && o.lr > 0.0) {
            return bad(format!("learning rate must be positive, got {}", o.lr));
        }
        if !(0.0..1.0).contains(&o.momentum) {
            return bad(format!("momentum must be in [0, 1), got {}", o.momentum));
        }
        if o.nesterov && o.momentum == 0.0 {
            return bad("Nesterov momentum needs a momentum above 0".into());
        }
        for (name, b) in [("beta1", o.beta1), ("beta2", o.beta2)] {
            if !(0.0..1.0).contains(&b) {
                return bad(format!("{name} must be in [0, 1), got {b}"));
            }
        }
        if o.eps.is_nan() || o.eps <= 0.0 {
            return bad(format!("eps must be positive, got {}", o.eps));
        }
        if !(o.weight_decay >= 0.0 && o.weight_decay.is_finite()) {
            return bad(format!("weight decay must be >= 0, got {}", o.weight_decay));
        }
        if let Some(c) = o.clip_grad_norm
            && !(c > 0.0 && c.is_finite())
        {
            return bad(format!("gradient clipping norm must be positive, got {c}"));
        }
        Ok(())
    }
}

/// The shape of the learning-rate schedule.
#[derive(Config, Debug, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// The peak rate throughout.
    Constant,
    /// Cosine annealing from the peak rate to `min_lr` over the run, step by step.
    Cosine,
    /// The rate times `gamma` every `step_size` epochs.
    Step,
}

/// Learning-rate schedule, with an optional linear warm-up.
#[derive(Config, Debug)]
pub struct ScheduleConfig {
    /// Which schedule.
    #[config(default = "ScheduleKind::Constant")]
    pub kind: ScheduleKind,
    /// Epochs of linear warm-up from 0 to the peak rate (fractional epochs allowed).
    #[config(default = 0.0)]
    pub warmup_epochs: f64,
    /// Step schedule: epochs between decays.
    #[config(default = 10)]
    pub step_size: usize,
    /// Step schedule: decay factor.
    #[config(default = 0.1)]
    pub gamma: f64,
    /// Cosine schedule: the final rate.
    #[config(default = 0.0)]
    pub min_lr: f64,
}

impl ScheduleConfig {
    /// Checks every value for a run of `epochs` epochs at peak rate `lr`, naming the field and
    /// the allowed range.
    pub fn validate(&self, epochs: usize, lr: f64) -> Result<(), TrainError> {
        let bad = |msg: String| Err(TrainError::Config(msg));
        let s = self;
        if !(s.warmup_epochs >= 0.0 && s.warmup_epochs <= epochs as f64) {
            return bad(format!(
                "warm-up must be between 0 and the {} epochs, got {}",
                epochs, s.warmup_epochs
            ));
        }
        // step_size is refused at 0 whatever the schedule: it is never meaningful, and a
        // configuration switched to the step schedule later must not start with it.
        if s.step_size == 0 || (s.kind == ScheduleKind::Step && !(s.gamma > 0.0 && s.gamma <= 1.0))
        {
            return bad(format!(
                "step schedule needs step_size >= 1 and gamma in (0, 1], got {} and {}",
                s.step_size, s.gamma
            ));
        }
        if s.kind == ScheduleKind::Cosine && !(s.min_lr >= 0.0 && s.min_lr <= lr) {
            return bad(format!(
                "cosine min_lr must be in [0, lr = {}], got {}",
                lr, s.min_lr
            ));
        }
        Ok(())
    }

    /// The learning rate at `step` (0-based) of a run of `total_steps`, with `steps_per_epoch`.
    pub fn lr_at(&self, peak: f64, step: usize, steps_per_epoch: usize, total_steps: usize) -> f64 {
        let warmup = (self.warmup_epochs * steps_per_epoch as f64).round() as usize;
        if step < warmup {
            return peak * (step + 1) as f64 / warmup as f64;
        }
        match self.kind {
            ScheduleKind::Constant => peak,
            ScheduleKind::Step => {
                let epoch = step / steps_per_epoch.max(1);
                peak * self.gamma.powi((epoch / self.step_size.max(1)) as i32)
            }
            ScheduleKind::Cosine => {
                let span = total_steps.saturating_sub(warmup).max(1) as f64;
                let t = (step - warmup) as f64 / span;
                self.min_lr + 0.5 * (peak - self.min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
        }
    }
}

/// Stop when a validation metric has not improved for `patience` epochs.
#[derive(Config, Debug)]
pub struct EarlyStoppingConfig {
    /// Epochs without improvement before stopping.
    pub patience: usize,
    /// Smallest change that counts as an improvement.
    #[config(default = 0.0)]
    pub min_delta: f64,
    /// Watch validation loss (lower is better) instead of validation accuracy.
    #[config(default = false)]
    pub monitor_loss: bool,
}

/// A whole training run.
#[derive(Config, Debug)]
pub struct TrainConfig {
    /// The model.
    pub model: ModelConfig,
    /// Data set name: `fashion-mnist`, `mnist` or `cifar-10`.
    #[config(default = "String::from(\"fashion-mnist\")")]
    pub dataset: String,
    /// Epochs to train.
    #[config(default = 10)]
    pub epochs: usize,
    /// Samples per batch.
    #[config(default = 128)]
    pub batch_size: usize,
    /// Optimiser.
    #[config(default = "OptimizerConfig::new()")]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule.
    #[config(default = "ScheduleConfig::new()")]
    pub schedule: ScheduleConfig,
    /// Seed of everything random: initialisation, shuffling, dropout masks, augmentation.
    #[config(default = 0)]
    pub seed: u64,
    /// Fraction of the training set held out for validation (stratified). 0 trains on the
    /// whole training set and reports the test set as the per-epoch evaluation set, as the
    /// reference protocol does.
    #[config(default = 0.0)]
    pub val_fraction: f64,
    /// Train on a stratified random subset of this many training images.
    #[config(default = "None")]
    pub train_limit: Option<usize>,
    /// Evaluate on a stratified random subset of this many test images.
    #[config(default = "None")]
    pub test_limit: Option<usize>,
    /// Random crop with this much zero padding (0: off).
    #[config(default = 0)]
    pub augment_pad: usize,
    /// Random horizontal flips.
    #[config(default = false)]
    pub augment_flip: bool,
    /// Background data-loading threads (0: load on the training thread). With 0 or 1 the run is
    /// fully reproducible from its seed.
    #[config(default = 1)]
    pub workers: usize,
    /// Early stopping; `None` trains every epoch.
    #[config(default = "None")]
    pub early_stopping: Option<EarlyStoppingConfig>,
    /// L1/L2 weight penalties and the max-norm constraint; `None`: none (configs written before
    /// this field existed load as `None`).
    #[config(default = "None")]
    pub regularization: Option<RegularizationConfig>,
}

impl TrainConfig {
    /// What the training loop reads of this configuration.
    pub fn loop_config(&self) -> crate::engine::LoopConfig {
        crate::engine::LoopConfig::new()
            .with_epochs(self.epochs)
            .with_batch_size(self.batch_size)
            .with_optimizer(self.optimizer.clone())
            .with_schedule(self.schedule.clone())
            .with_seed(self.seed)
            .with_early_stopping(self.early_stopping.clone())
            .with_regularization(self.regularization.clone())
    }

    /// Checks every value, naming the field and the allowed range.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |msg: String| Err(TrainError::Config(msg));
        self.model
            .validate()
            .map_err(|e| TrainError::Config(e.to_string()))?;
        // Epochs, batch size, optimiser, schedule, early stopping and regularisation: the
        // loop's own checks, so a run and a program driving the engine refuse the same values.
        self.loop_config().validate()?;
        crate::memory::check_model_memory(
            &self.model,
            crate::memory::MemoryUse::Training { batch: 1 },
        )?;
        if !(0.0..1.0).contains(&self.val_fraction) {
            return bad(format!(
                "validation fraction must be in [0, 1), got {}",
                self.val_fraction
            ));
        }
        if self.train_limit == Some(0) || self.test_limit == Some(0) {
            return bad("train/test limits must be at least 1".into());
        }
        self.dataset
            .parse::<flint_data::KnownDataset>()
            .map_err(|e| TrainError::Config(e.to_string()))
            .and_then(|d| match d {
                flint_data::KnownDataset::Hymenoptera => Err(TrainError::Config(
                    "hymenoptera is an image folder for fine-tuning, not a `flint train` data set"
                        .into(),
                )),
                _ => Ok(()),
            })
    }
}

/// Largest configuration file read (a real one is a few kB): a path to something endless, such
/// as `/dev/zero`, is refused instead of read.
const MAX_CONFIG_BYTES: u64 = 4 << 20;

/// Reads a configuration JSON file (a `TrainConfig`, an experiment's or a fine-tuning run's)
/// strictly: only a regular file of at most 4 MiB is read, and a key the configuration does not
/// have (a misspelt `"dropuot"`) is refused, naming it, rather than silently ignored as burn's
/// `Config::load` does.
pub fn load_strict<C>(path: impl AsRef<Path>) -> Result<C, TrainError>
where
    C: serde::de::DeserializeOwned + serde::Serialize,
{
    let path = path.as_ref();
    let fail = |reason: String| TrainError::ConfigFile {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = flint_io::fs::read_regular(path, MAX_CONFIG_BYTES).map_err(|e| fail(e.reason()))?;
    let given: Value =
        serde_json::from_slice(&bytes).map_err(|e| fail(format!("not valid JSON ({e})")))?;
    let config: C = serde_json::from_value(given.clone()).map_err(|e| fail(e.to_string()))?;
    let known = serde_json::to_value(&config).map_err(|e| fail(e.to_string()))?;
    if let Some(key) = unknown_key(&given, &known, "") {
        return Err(fail(format!(
            "unknown key `{key}` (misspelt, or from another program?); remove it or correct its name"
        )));
    }
    Ok(config)
}

/// The first key path of `given` that `known` (the same value as the configuration writes it)
/// lacks.
fn unknown_key(given: &Value, known: &Value, at: &str) -> Option<String> {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, value)| {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            match k.get(key) {
                None => Some(path),
                Some(known_value) => unknown_key(value, known_value, &path),
            }
        }),
        (Value::Array(g), Value::Array(k)) => g
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (g, k))| unknown_key(g, k, &format!("{at}[{i}]"))),
        _ => None,
    }
}

impl TrainConfig {
    /// Reads a `TrainConfig` JSON file strictly ([`load_strict`]).
    pub fn load_checked(path: impl AsRef<Path>) -> Result<Self, TrainError> {
        load_strict(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let s = ScheduleConfig::new();
        assert_eq!(s.lr_at(0.1, 5, 10, 100), 0.1);
        let warm = ScheduleConfig::new().with_warmup_epochs(1.0);
        assert!((warm.lr_at(0.1, 0, 10, 100) - 0.01).abs() < 1e-12);
        assert!((warm.lr_at(0.1, 9, 10, 100) - 0.1).abs() < 1e-12);
        let step = ScheduleConfig::new()
            .with_kind(ScheduleKind::Step)
            .with_step_size(2)
            .with_gamma(0.5);
        assert_eq!(step.lr_at(1.0, 19, 10, 100), 1.0);
        assert_eq!(step.lr_at(1.0, 20, 10, 100), 0.5);
        assert_eq!(step.lr_at(1.0, 45, 10, 100), 0.25);
        let cos = ScheduleConfig::new()
            .with_kind(ScheduleKind::Cosine)
            .with_min_lr(0.0);
        assert!((cos.lr_at(1.0, 0, 10, 100) - 1.0).abs() < 1e-12);
        assert!((cos.lr_at(1.0, 50, 10, 100) - 0.5).abs() < 1e-12);
        assert!(cos.lr_at(1.0, 99, 10, 100) < 0.001);
    }

    #[test]
    fn config_files_with_unknown_keys_are_refused_naming_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let mut value =
            serde_json::to_value(TrainConfig::new(ModelConfig::reference("mlp").unwrap())).unwrap();
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        assert!(TrainConfig::load_checked(&path).is_ok());

        value["dropuot"] = 0.9.into();
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        let msg = TrainConfig::load_checked(&path).unwrap_err().to_string();
        assert!(msg.contains("unknown key `dropuot`"), "{msg}");

        value.as_object_mut().unwrap().remove("dropuot");
        value["model"]["Mlp"]["hiden"] = serde_json::json!([5]);
        std::fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
        let msg = TrainConfig::load_checked(&path).unwrap_err().to_string();
        assert!(msg.contains("unknown key `model.Mlp.hiden`"), "{msg}");
    }

    #[test]
    fn validation_messages() {
        let base = || TrainConfig::new(ModelConfig::reference("mlp").unwrap());
        let msg = |c: TrainConfig| c.validate().unwrap_err().to_string();
        assert!(base().validate().is_ok());
        assert_eq!(
            msg(base().with_epochs(0)),
            "invalid configuration: epochs must be at least 1"
        );
        assert_eq!(
            msg(base().with_optimizer(OptimizerConfig::new().with_lr(-1.0))),
            "invalid configuration: learning rate must be positive, got -1"
        );
        assert_eq!(
            msg(base().with_dataset("imagenet".into())),
            "invalid configuration: unknown data set `imagenet`; known: fashion-mnist, mnist, cifar-10, hymenoptera"
        );
        assert!(msg(base().with_val_fraction(1.0)).contains("validation fraction"));
        assert!(
            msg(base().with_schedule(ScheduleConfig::new().with_warmup_epochs(20.0)))
                .contains("warm-up")
        );
        assert!(
            msg(base().with_optimizer(
                OptimizerConfig::new()
                    .with_kind(OptimizerKind::Sgd)
                    .with_momentum(0.0)
                    .with_nesterov(true)
            ))
            .contains("Nesterov")
        );
    }
}
