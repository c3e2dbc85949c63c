//! Training and evaluating one network inside an experiment.
//!
//! Experiments train many small runs, some on a hundred images for thousands of steps, so they
//! do not write run directories or checkpoints: [`fit`] runs flint-train's one training loop
//! ([`flint_train::Engine`]: cross-entropy, L1/L2 penalties, clipping, the optimiser,
//! max-norm) for a fixed number of optimisation steps (the same budget for every data-set size),
//! and can watch the model every few steps.

use burn::config::Config;
use burn::module::Module;
use burn::tensor::Device;
use flint_data::{ImageSet, Locator, Split, random_subset};
use flint_io::seed::derive_seed;
use flint_models::{Classifier, ModelConfig};
use flint_train::{
    Engine, ImageBatches, LoopConfig, OptimizerConfig, RegularizationConfig, ScheduleConfig,
    TrainError,
};

use crate::error::ExperimentError;

/// How a network is trained (everything but the model, the data and the length).
#[derive(Config, Debug)]
pub struct FitConfig {
    /// Optimiser (reference: Adam, lr 1e-3).
    #[config(default = "OptimizerConfig::new()")]
    pub optimizer: OptimizerConfig,
    /// Learning-rate schedule over the run's steps.
    #[config(default = "ScheduleConfig::new()")]
    pub schedule: ScheduleConfig,
    /// Samples per batch.
    #[config(default = 128)]
    pub batch_size: usize,
    /// L1/L2 penalties and max-norm.
    #[config(default = "None")]
    pub regularization: Option<RegularizationConfig>,
}

/// Called with the step count and the model in inference mode, at step 0, every `every`
/// steps and after the last step.
pub struct Monitor<'a> {
    /// Steps between calls.
    pub every: usize,
    /// What to do with the model.
    pub on_step: &'a mut dyn FnMut(usize, &Classifier) -> Result<(), ExperimentError>,
}

/// A trained network.
pub struct Fitted {
    /// The model in inference mode, on the plain (not autodiff) device.
    pub model: Classifier,
    /// The same trained model still on the autodiff device, its dropout layers active (what
    /// MC-dropout samples from).
    pub training_model: Classifier,
    /// Optimisation steps taken.
    pub steps: usize,
    /// Passes over the training set (`steps · batch / n`).
    pub epochs: f64,
    /// Mean training loss (cross-entropy without penalties) over the last epoch's worth of
    /// steps.
    pub final_train_loss: f64,
    /// Seconds spent training (monitor calls excluded).
    pub train_secs: f64,
}

/// Steps in `epochs` passes over `n` images at `batch` per step (the last batch may be short).
pub fn steps_for(n: usize, batch: usize, epochs: usize) -> usize {
    n.div_ceil(batch.max(1)) * epochs
}

/// Trains a freshly initialised `model` (seeded with `seed`) on `train` for `steps` steps,
/// through flint-train's [`Engine`] without a run directory.
pub fn fit(
    model: &ModelConfig,
    config: &FitConfig,
    train: &ImageSet,
    steps: usize,
    seed: u64,
    device: &Device,
    monitor: Option<Monitor<'_>>,
) -> Result<Fitted, ExperimentError> {
    if steps == 0 || config.batch_size == 0 {
        return Err(ExperimentError::Invalid(
            "a run needs at least one step and a batch size of at least 1".into(),
        ));
    }
    let train_device = device.clone().autodiff();
    device.seed(seed);
    train_device.seed(seed);
    let network = model
        .try_init(&train_device)
        .map_err(|e| ExperimentError::Invalid(e.to_string()))?;
    let loop_config = LoopConfig::new()
        .with_epochs(steps.div_ceil(train.len().div_ceil(config.batch_size)))
        .with_batch_size(config.batch_size)
        .with_optimizer(config.optimizer.clone())
        .with_schedule(config.schedule.clone())
        .with_seed(seed)
        .with_regularization(config.regularization.clone());
    let data = ImageBatches::new(train.clone());
    let mut engine = Engine::new(loop_config, &data)
        .devices(vec![device.clone()])
        .max_steps(steps);
    // The monitor's own error comes back through the engine as a hook error.
    if let Some(m) = monitor {
        let on_step = m.on_step;
        engine = engine.on_step(m.every, move |step, network: &Classifier| {
            on_step(step, network).map_err(|e| Box::new(e) as flint_train::engine::HookError)
        });
    }
    let trained = engine.fit(network, false).map_err(|e| match e {
        TrainError::Hook(inner) => match inner.downcast::<ExperimentError>() {
            Ok(e) => *e,
            Err(other) => ExperimentError::Train(TrainError::Hook(other)),
        },
        other => ExperimentError::Train(other),
    })?;
    Ok(Fitted {
        model: trained.model.valid(),
        training_model: trained.model,
        steps,
        epochs: (steps * config.batch_size) as f64 / train.len() as f64,
        final_train_loss: trained.recent_train_loss,
        train_secs: trained.train_secs,
    })
}

/// A one-line description for reports: `MLP 784-256-256-10 (ReLU, dropout [0.5])`, `CNN ...`.
pub fn describe_model(model: &ModelConfig) -> String {
    match model {
        ModelConfig::Mlp(m) => {
            let widths: Vec<String> = std::iter::once(m.input_size)
                .chain(m.hidden.iter().copied())
                .chain(std::iter::once(m.num_classes))
                .map(|w| w.to_string())
                .collect();
            format!(
                "MLP {} ({}, dropout {:?}{}{})",
                widths.join("-"),
                m.activation.name(),
                m.dropout,
                if m.input_dropout > 0.0 {
                    format!(", input dropout {}", m.input_dropout)
                } else {
                    String::new()
                },
                if m.batch_norm { ", batch norm" } else { "" }
            )
        }
        ModelConfig::Cnn(c) => format!(
            "CNN conv {:?} ({}x{}{}), hidden {}, dropout {}",
            c.channels,
            c.kernel_size,
            c.kernel_size,
            if c.batch_norm { ", batch norm" } else { "" },
            c.hidden,
            c.dropout
        ),
    }
}

/// A data set's training and test sets, each cut to a stratified random subset when a limit is
/// given (seeded from `seed`, so every run of an experiment sees the same subsets).
pub fn load_sets(
    name: &str,
    locator: &Locator,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
    seed: u64,
) -> Result<(ImageSet, ImageSet), ExperimentError> {
    let mut train = load_dataset(name, Split::Train, locator)?;
    let mut test = load_dataset(name, Split::Test, locator)?;
    if let Some(n) = train_limit {
        train = random_subset(&train, n.min(train.len()), derive_seed(seed, 5))?;
    }
    if let Some(n) = test_limit {
        test = random_subset(&test, n.min(test.len()), derive_seed(seed, 7))?;
    }
    Ok((train, test))
}

/// Loads a data set by name (`mnist`, `fashion-mnist`, `cifar-10`).
pub fn load_dataset(
    name: &str,
    split: Split,
    locator: &Locator,
) -> Result<ImageSet, ExperimentError> {
    let known: flint_data::KnownDataset = name.parse()?;
    Ok(match known {
        flint_data::KnownDataset::Mnist => flint_data::mnist(split, locator)?,
        flint_data::KnownDataset::FashionMnist => flint_data::fashion_mnist(split, locator)?,
        flint_data::KnownDataset::Cifar10 => flint_data::cifar10(split, locator)?,
        flint_data::KnownDataset::Hymenoptera => {
            return Err(ExperimentError::Invalid(
                "hymenoptera is an image folder, not a data set for these experiments".into(),
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flint_models::MlpConfig;

    /// burn's random generator is process-wide: seeded runs in parallel tests would interleave.
    static ONE_RUN_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn toy(n: usize) -> ImageSet {
        // Two classes told apart by the brightness of the top half.
        let mut pixels = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i % 2) as u8;
            for p in 0..784 {
                let bright = (p < 392) == (class == 1);
                pixels.push(if bright {
                    200 + (i * 7 + p) as u8 % 50
                } else {
                    (i + p) as u8 % 40
                });
            }
            labels.push(class);
        }
        ImageSet::new(
            "toy",
            [1, 28, 28],
            pixels,
            labels,
            vec!["a".into(), "b".into()],
        )
        .unwrap()
    }

    #[test]
    fn fits_a_separable_toy_set_and_watches_on_schedule() {
        let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let set = toy(64);
        let model = ModelConfig::Mlp(
            MlpConfig::new()
                .with_hidden(vec![16])
                .with_num_classes(2)
                .with_dropout(vec![0.0]),
        );
        let mut seen = Vec::new();
        let mut on_step = |step: usize, _: &Classifier| {
            seen.push(step);
            Ok(())
        };
        let fitted = fit(
            &model,
            &FitConfig::new().with_batch_size(16),
            &set,
            10,
            1,
            &Device::flex(),
            Some(Monitor {
                every: 4,
                on_step: &mut on_step,
            }),
        )
        .unwrap();
        assert_eq!(seen, vec![0, 4, 8, 10]);
        assert_eq!(fitted.steps, 10);
        assert!((fitted.epochs - 2.5).abs() < 1e-9);
        let report = flint_train::evaluate(&fitted.model, &set, &Device::flex()).unwrap();
        assert!(report.accuracy > 0.9, "{}", report.accuracy);
        assert_eq!(steps_for(64, 16, 3), 12);
        assert_eq!(steps_for(65, 16, 1), 5);
    }

    #[test]
    fn descriptions() {
        assert_eq!(
            describe_model(&ModelConfig::reference("mlp").unwrap()),
            "MLP 784-256-256-10 (ReLU, dropout [0.5])"
        );
        assert_eq!(
            describe_model(
                &ModelConfig::reference("cnn")
                    .unwrap()
                    .with_dropout_rate(0.3)
            ),
            "CNN conv [32, 64] (3x3, batch norm), hidden 128, dropout 0.3"
        );
    }

    #[test]
    fn same_seed_same_model() {
        let _one = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let set = toy(32);
        let model = ModelConfig::Mlp(MlpConfig::new().with_hidden(vec![8]).with_num_classes(2));
        let run = || {
            let f = fit(
                &model,
                &FitConfig::new().with_batch_size(8),
                &set,
                6,
                5,
                &Device::flex(),
                None,
            )
            .unwrap();
            flint_train::evaluate(&f.model, &set, &Device::flex())
                .unwrap()
                .loss
        };
        assert_eq!(run(), run());
    }
}
