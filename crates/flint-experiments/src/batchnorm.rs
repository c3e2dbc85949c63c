//! **batchnorm**: does batch normalisation speed up convergence? Ioffe & Szegedy 2015,
//! Figure 1: a 784-100-100-100-10 sigmoid MLP on MNIST, batch 60, with and without batch
//! normalisation; with it the network reaches a given test accuracy in far fewer steps, and
//! it tolerates a much larger learning rate (section 3.3; here BN at 5x the rate). The same
//! question is asked of the reference CNN on Fashion-MNIST, with its BN layers and without.
//!
//! Each variant is trained for a fixed number of steps and evaluated on the test set every few
//! steps; the table gives the first evaluated step at which the test accuracy reaches each
//! threshold (`-`: never), and the final accuracy on the whole test set.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::tensor::Device;
use flint_data::{ImageSet, Locator, random_subset};
use flint_io::seed::derive_seed;
use flint_models::{Activation, Classifier, CnnConfig, MlpConfig, ModelConfig};
use flint_train::{OptimizerConfig, OptimizerKind};
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::fit::{FitConfig, Monitor, fit, load_sets, steps_for};
use crate::output::{Written, cached_run, claim_output, write_results};
use crate::plot::{Legend, PlotSpec, Series, line_plot_png};
use crate::stats::MeanStd;

/// Configuration of the batchnorm experiment. The defaults are the full run of flint's README;
/// [`BatchNormExperimentConfig::quick`] is a seconds-long smoke version.
#[derive(Config, Debug)]
pub struct BatchNormExperimentConfig {
    /// Part 1 data set (paper: MNIST).
    #[config(default = "String::from(\"mnist\")")]
    pub mlp_dataset: String,
    /// Part 1 hidden widths (paper: 100, 100, 100, sigmoid).
    #[config(default = "vec![100, 100, 100]")]
    pub mlp_hidden: Vec<usize>,
    /// Part 1 steps (paper: 50,000).
    #[config(default = 50_000)]
    pub mlp_steps: usize,
    /// Part 1 batch size (paper: 60).
    #[config(default = 60)]
    pub mlp_batch_size: usize,
    /// Part 1 learning rate of plain SGD without and with BN.
    #[config(default = 0.1)]
    pub mlp_lr: f64,
    /// The learning-rate multiple of the third variant, BN at a higher rate.
    #[config(default = 5.0)]
    pub bn_lr_factor: f64,
    /// Part 1 steps between evaluations.
    #[config(default = 500)]
    pub mlp_eval_every: usize,
    /// Part 1 accuracy thresholds (paper's figure: 95 % and 97 % region).
    #[config(default = "vec![0.95, 0.97]")]
    pub mlp_thresholds: Vec<f64>,
    /// Run part 2, the reference CNN with and without BN.
    #[config(default = true)]
    pub cnn: bool,
    /// Part 2 data set.
    #[config(default = "String::from(\"fashion-mnist\")")]
    pub cnn_dataset: String,
    /// Part 2 epochs (Adam, lr 1e-3, batch 128: the reference protocol).
    #[config(default = 3)]
    pub cnn_epochs: usize,
    /// Part 2 steps between evaluations.
    #[config(default = 50)]
    pub cnn_eval_every: usize,
    /// Part 2 accuracy thresholds.
    #[config(default = "vec![0.85, 0.90]")]
    pub cnn_thresholds: Vec<f64>,
    /// Evaluations during training use a stratified subset of this many test images (`None`:
    /// all); the final accuracy always uses the whole (or `test_limit`) test set.
    #[config(default = "Some(2000)")]
    pub curve_images: Option<usize>,
    /// Number of seeds.
    #[config(default = 1)]
    pub seeds: usize,
    /// The first seed.
    #[config(default = 0)]
    pub first_seed: u64,
    /// Train on a stratified subset of this many images (`None`: all).
    #[config(default = "None")]
    pub train_limit: Option<usize>,
    /// Evaluate on a stratified subset of this many test images (`None`: all).
    #[config(default = "None")]
    pub test_limit: Option<usize>,
}

impl BatchNormExperimentConfig {
    /// A smoke version: 60 MLP steps and a few CNN steps on 600 images, 300 test images.
    pub fn quick() -> Self {
        Self::new()
            .with_mlp_steps(60)
            .with_mlp_eval_every(20)
            .with_cnn_epochs(1)
            .with_cnn_eval_every(2)
            .with_train_limit(Some(600))
            .with_test_limit(Some(300))
            .with_curve_images(Some(200))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |m: String| Err(ExperimentError::Invalid(m));
        if self.seeds == 0 || self.mlp_steps == 0 || self.cnn_epochs == 0 {
            return bad("seeds, steps and epochs must be at least 1".into());
        }
        if self.mlp_eval_every == 0 || self.cnn_eval_every == 0 || self.mlp_batch_size == 0 {
            return bad("evaluation intervals and the batch size must be at least 1".into());
        }
        if !(self.mlp_lr > 0.0 && self.bn_lr_factor > 0.0) {
            return bad("learning rate and its factor must be positive".into());
        }
        let thresholds = self.mlp_thresholds.iter().chain(&self.cnn_thresholds);
        if let Some(t) = thresholds.clone().find(|t| !(**t > 0.0 && **t <= 1.0)) {
            return bad(format!("thresholds are accuracies in (0, 1], got {t}"));
        }
        Ok(())
    }

    fn variants(&self) -> Vec<Variant> {
        let mlp = |bn: bool| {
            ModelConfig::Mlp(
                MlpConfig::new()
                    .with_hidden(self.mlp_hidden.clone())
                    .with_activation(Activation::Sigmoid)
                    .with_dropout(vec![0.0])
                    .with_batch_norm(bn),
            )
        };
        let sgd = |lr: f64| {
            FitConfig::new()
                .with_batch_size(self.mlp_batch_size)
                .with_optimizer(
                    OptimizerConfig::new()
                        .with_kind(OptimizerKind::Sgd)
                        .with_momentum(0.0)
                        .with_lr(lr),
                )
        };
        let fast = self.mlp_lr * self.bn_lr_factor;
        let mut v = vec![
            Variant::mlp("mlp", "sigmoid MLP", mlp(false), sgd(self.mlp_lr)),
            Variant::mlp("mlp-bn", "sigmoid MLP + BN", mlp(true), sgd(self.mlp_lr)),
            Variant::mlp(
                "mlp-bn-fast",
                &format!("sigmoid MLP + BN, lr x{}", self.bn_lr_factor),
                mlp(true),
                sgd(fast),
            ),
        ];
        if self.cnn {
            for (key, label, bn) in [
                ("cnn-no-bn", "reference CNN without BN", false),
                ("cnn", "reference CNN (BN)", true),
            ] {
                v.push(Variant {
                    key: key.into(),
                    label: label.into(),
                    part: Part::Cnn,
                    model: ModelConfig::Cnn(CnnConfig::reference().with_batch_norm(bn)),
                    fit: FitConfig::new(),
                });
            }
        }
        v
    }

    fn dataset(&self, part: Part) -> &str {
        match part {
            Part::Mlp => &self.mlp_dataset,
            Part::Cnn => &self.cnn_dataset,
        }
    }

    fn thresholds(&self, part: Part) -> &[f64] {
        match part {
            Part::Mlp => &self.mlp_thresholds,
            Part::Cnn => &self.cnn_thresholds,
        }
    }
}

/// The two halves of the experiment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Part {
    /// Ioffe & Szegedy's sigmoid MLP.
    Mlp,
    /// The reference CNN.
    Cnn,
}

struct Variant {
    key: String,
    label: String,
    part: Part,
    model: ModelConfig,
    fit: FitConfig,
}

impl Variant {
    fn mlp(key: &str, label: &str, model: ModelConfig, fit: FitConfig) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            part: Part::Mlp,
            model,
            fit,
        }
    }
}

/// One trained network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BnRun {
    /// Variant key.
    pub key: String,
    /// Variant label.
    pub label: String,
    /// Which part.
    pub part: Part,
    /// Seed.
    pub seed: u64,
    /// Learning rate.
    pub lr: f64,
    /// `(step, test accuracy)` during training (on the curve subset).
    pub curve: Vec<(usize, f64)>,
    /// First evaluated step reaching each threshold.
    pub steps_to: Vec<Option<usize>>,
    /// Final test accuracy (whole test set).
    pub final_accuracy: f64,
    /// Training seconds.
    pub train_secs: f64,
}

/// Everything the experiment produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchNormResults {
    /// The configuration.
    pub config: BatchNormExperimentConfig,
    /// Every run.
    pub runs: Vec<BnRun>,
    /// What was written.
    pub written: Option<Written>,
}

struct PartData {
    train: ImageSet,
    test: ImageSet,
    curve: ImageSet,
}

fn part_data(
    config: &BatchNormExperimentConfig,
    dataset: &str,
    locator: &Locator,
) -> Result<PartData, ExperimentError> {
    let seed = config.first_seed;
    let (train, test) = load_sets(
        dataset,
        locator,
        config.train_limit,
        config.test_limit,
        seed,
    )?;
    let curve = match config.curve_images {
        Some(n) if n < test.len() => random_subset(&test, n, derive_seed(seed, 9))?,
        _ => test.clone(),
    };
    Ok(PartData { train, test, curve })
}

/// Runs the experiment into `out_dir` (reusing finished runs there).
pub fn run_batchnorm(
    config: &BatchNormExperimentConfig,
    locator: &Locator,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<BatchNormResults, ExperimentError> {
    let start = Instant::now();
    config.validate()?;
    claim_output(config, &BatchNormExperimentConfig::new(), out_dir)?;
    let variants = config.variants();
    let total = variants.len() * config.seeds;
    let mut runs = Vec::new();
    let mut data: Vec<(Part, PartData)> = Vec::new();
    for variant in &variants {
        if !data.iter().any(|(p, _)| *p == variant.part) {
            data.push((
                variant.part,
                part_data(config, config.dataset(variant.part), locator)?,
            ));
        }
        let d = &data
            .iter()
            .find(|(p, _)| *p == variant.part)
            .expect("just loaded")
            .1;
        let (steps, every) = match variant.part {
            Part::Mlp => (config.mlp_steps, config.mlp_eval_every),
            Part::Cnn => (
                steps_for(d.train.len(), variant.fit.batch_size, config.cnn_epochs),
                config.cnn_eval_every,
            ),
        };
        let thresholds = config.thresholds(variant.part);
        for seed in config.first_seed..config.first_seed + config.seeds as u64 {
            let key = format!("{}-seed{seed}", variant.key);
            let (run, reused) = cached_run(out_dir, &key, || {
                let mut curve = Vec::new();
                let mut on_step = |step: usize, model: &Classifier| {
                    curve.push((
                        step,
                        flint_train::evaluate(model, &d.curve, device)?.accuracy,
                    ));
                    Ok(())
                };
                let fitted = fit(
                    &variant.model,
                    &variant.fit,
                    &d.train,
                    steps,
                    seed,
                    device,
                    Some(Monitor {
                        every,
                        on_step: &mut on_step,
                    }),
                )?;
                let final_accuracy =
                    flint_train::evaluate(&fitted.model, &d.test, device)?.accuracy;
                let steps_to = thresholds
                    .iter()
                    .map(|&t| curve.iter().find(|(_, a)| *a >= t).map(|(s, _)| *s))
                    .collect();
                Ok(BnRun {
                    key: variant.key.clone(),
                    label: variant.label.clone(),
                    part: variant.part,
                    seed,
                    lr: variant.fit.optimizer.lr,
                    curve,
                    steps_to,
                    final_accuracy,
                    train_secs: fitted.train_secs,
                })
            })?;
            progress(&format!(
                "[{}/{total}] {} seed {seed}: final {:.2} %, steps to {:?}: {:?} ({:.0} s{})",
                runs.len() + 1,
                run.label,
                run.final_accuracy * 100.0,
                thresholds,
                run.steps_to,
                run.train_secs,
                if reused { ", reused" } else { "" }
            ));
            runs.push(run);
        }
    }
    let mut plots = Vec::new();
    for part in [Part::Mlp, Part::Cnn] {
        if runs.iter().any(|r| r.part == part) {
            let name = match part {
                Part::Mlp => "batchnorm-mlp.png",
                Part::Cnn => "batchnorm-cnn.png",
            };
            plots.push((name, plot(config, part, &runs)?));
        }
    }
    let mut results = BatchNormResults {
        config: config.clone(),
        runs,
        written: None,
    };
    let md = markdown(&results, start.elapsed().as_secs_f64());
    results.written = Some(write_results(
        out_dir,
        &md,
        &results,
        &plots,
        start.elapsed().as_secs_f64(),
    )?);
    Ok(results)
}

/// The table of one part: per variant, steps to each threshold and the final accuracy.
pub fn table(config: &BatchNormExperimentConfig, part: Part, runs: &[BnRun]) -> String {
    let thresholds = config.thresholds(part);
    let mut md = String::from("| variant | lr |");
    for t in thresholds {
        let _ = write!(md, " steps to {:.0} % |", t * 100.0);
    }
    md.push_str(" final test accuracy (%) | training time (s) |\n| --- | ---: |");
    md.push_str(&" ---: |".repeat(thresholds.len() + 2));
    md.push('\n');
    let mut keys: Vec<&str> = Vec::new();
    for r in runs.iter().filter(|r| r.part == part) {
        if !keys.contains(&r.key.as_str()) {
            keys.push(&r.key);
        }
    }
    for key in keys {
        let these: Vec<&BnRun> = runs.iter().filter(|r| r.key == key).collect();
        let _ = write!(md, "| {} | {} |", these[0].label, these[0].lr);
        for i in 0..thresholds.len() {
            let reached: Vec<f64> = these
                .iter()
                .filter_map(|r| r.steps_to.get(i).copied().flatten())
                .map(|s| s as f64)
                .collect();
            let cell = match MeanStd::of(&reached) {
                None => "-".to_string(),
                Some(m) if these.len() == 1 => format!("{:.0}", m.mean),
                Some(m) => format!("{:.0} ± {:.0} ({}/{})", m.mean, m.std, m.n, these.len()),
            };
            let _ = write!(md, " {cell} |");
        }
        let acc = MeanStd::of(&these.iter().map(|r| r.final_accuracy).collect::<Vec<_>>());
        let secs = these.iter().map(|r| r.train_secs).sum::<f64>() / these.len() as f64;
        let _ = writeln!(
            md,
            " {} | {secs:.0} |",
            acc.map_or("-".into(), |a| a.percent())
        );
    }
    md
}

fn plot(
    config: &BatchNormExperimentConfig,
    part: Part,
    runs: &[BnRun],
) -> Result<Vec<u8>, ExperimentError> {
    const COLORS: [(u8, u8, u8); 3] = [(200, 40, 40), (30, 90, 200), (0, 150, 90)];
    let mut series = Vec::new();
    let mut keys: Vec<&str> = Vec::new();
    for r in runs.iter().filter(|r| r.part == part) {
        if !keys.contains(&r.key.as_str()) {
            keys.push(&r.key);
        }
    }
    for (i, key) in keys.iter().enumerate() {
        let these: Vec<&BnRun> = runs.iter().filter(|r| r.key == *key).collect();
        let len = these.iter().map(|r| r.curve.len()).min().unwrap_or(0);
        let points = (0..len)
            .filter_map(|j| {
                let accs: Vec<f64> = these.iter().map(|r| r.curve[j].1).collect();
                MeanStd::of(&accs).map(|m| (these[0].curve[j].0 as f64, m))
            })
            .collect();
        series.push(Series {
            label: format!("{} (lr {})", these[0].label, these[0].lr),
            color: COLORS[i % COLORS.len()],
            dashed: !key.contains("bn") && *key != "cnn",
            points,
        });
    }
    let dataset = config.dataset(part);
    line_plot_png(
        &PlotSpec {
            title: &format!("{dataset}: test accuracy during training"),
            x_desc: "training steps",
            y_desc: "test accuracy (%)",
            log_x: false,
            x_ticks: None,
            percent: true,
            markers: false,
            legend: Legend::LowerRight,
            size: (900, 560),
        },
        &series,
    )
}

fn markdown(results: &BatchNormResults, wall_secs: f64) -> String {
    let c = &results.config;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# batchnorm: does batch normalisation speed up training?\n"
    );
    let _ = writeln!(
        md,
        "## Ioffe & Szegedy 2015, Figure 1: sigmoid MLP on {}\n\n784-{}-10, sigmoid, plain SGD \
         (no momentum) at batch {}, {} steps; test accuracy every {} steps on {} test images; \
         {} seed(s) from {}.\n",
        c.mlp_dataset,
        c.mlp_hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        c.mlp_batch_size,
        c.mlp_steps,
        c.mlp_eval_every,
        c.curve_images
            .map_or("all".to_string(), |n| format!("a stratified subset of {n}")),
        c.seeds,
        c.first_seed
    );
    let _ = writeln!(md, "{}", table(c, Part::Mlp, &results.runs));
    let _ = writeln!(
        md,
        "![MLP test accuracy during training](batchnorm-mlp.png)\n"
    );
    if c.cnn {
        let _ = writeln!(
            md,
            "## The reference CNN on {} with and without its BN layers\n\nAdam lr 1e-3, batch \
             128, {} epochs; test accuracy every {} steps.\n",
            c.cnn_dataset, c.cnn_epochs, c.cnn_eval_every
        );
        let _ = writeln!(md, "{}", table(c, Part::Cnn, &results.runs));
        let _ = writeln!(
            md,
            "![CNN test accuracy during training](batchnorm-cnn.png)\n"
        );
    }
    let _ = writeln!(
        md,
        "Final accuracies are on the whole test set{}; steps to a threshold are the first \
         evaluation at or above it (`-`: not reached). Wall time {wall_secs:.0} s.\n\nPaper: with \
         BN the MLP reaches higher test accuracy faster; BN also allows larger learning rates.",
        c.test_limit
            .map_or(String::new(), |n| format!(" (a subset of {n})"))
    );
    md
}
