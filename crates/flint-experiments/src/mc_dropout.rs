//! **mc-dropout**: is averaging `k` stochastic forward passes (dropout left on at test time,
//! Gal & Ghahramani 2016) a model average that matches the weight-scaling rule (dropout off,
//! weights implicitly scaled), and how many samples does it take? Srivastava et al. 2014,
//! Figure 11: on MNIST about 50 samples match weight scaling.
//!
//! A network with dropout (default: the reference MLP, dropout 0.5) is trained once per data
//! set. The test set is then classified by weight scaling and by MC-dropout with `k` = 1 ...
//! `max k` samples, several times with fresh masks (the repeats give the error bars). For each
//! we report accuracy, negative log-likelihood and the expected calibration error (15 equal-width
//! confidence bins, Guo et al. 2017), and draw a reliability diagram.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};
use flint_data::{ImageBatcher, ImageSet, LabelledSet, LoaderOptions, Locator, loader};
use flint_io::seed::derive_seed;
use flint_layers::mc_dropout_mode;
use flint_models::{Classifier, MlpConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::fit::{FitConfig, describe_model, fit, load_sets, steps_for};
use crate::output::{Written, cached_run, claim_output, write_results};
use crate::plot::{Legend, PlotSpec, Series, accuracy_plot_png, line_plot_png};
use crate::stats::MeanStd;

/// Configuration of the mc-dropout experiment. The defaults are the full run of flint's
/// README; [`McDropoutConfig::quick`] is a seconds-long smoke version.
#[derive(Config, Debug)]
pub struct McDropoutConfig {
    /// Data sets.
    #[config(default = "vec![String::from(\"mnist\"), String::from(\"fashion-mnist\")]")]
    pub datasets: Vec<String>,
    /// The network (it needs dropout).
    #[config(default = "ModelConfig::Mlp(MlpConfig::reference())")]
    pub model: ModelConfig,
    /// Training epochs (reference protocol for the MLP: 20).
    #[config(default = 20)]
    pub epochs: usize,
    /// Optimiser, schedule, batch size.
    #[config(default = "FitConfig::new()")]
    pub fit: FitConfig,
    /// Numbers of MC samples to evaluate (all computed from one run of `max` samples per
    /// repeat, as running means).
    #[config(default = "vec![1, 2, 3, 5, 10, 20, 30, 50, 75, 100]")]
    pub samples: Vec<usize>,
    /// Independent repeats of the MC evaluation (fresh masks), for the error bars.
    #[config(default = 5)]
    pub repeats: usize,
    /// Confidence bins of the ECE and the reliability diagram.
    #[config(default = 15)]
    pub bins: usize,
    /// Training seed.
    #[config(default = 0)]
    pub seed: u64,
    /// Train on a stratified subset of this many images (`None`: all).
    #[config(default = "None")]
    pub train_limit: Option<usize>,
    /// Evaluate on a stratified subset of this many test images (`None`: all).
    #[config(default = "None")]
    pub test_limit: Option<usize>,
}

impl McDropoutConfig {
    /// A smoke version: MNIST, 1,000 training and 500 test images, 2 epochs, up to 5 samples.
    pub fn quick() -> Self {
        Self::new()
            .with_datasets(vec!["mnist".into()])
            .with_epochs(2)
            .with_samples(vec![1, 2, 5])
            .with_repeats(2)
            .with_train_limit(Some(1000))
            .with_test_limit(Some(500))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |m: String| Err(ExperimentError::Invalid(m));
        if self.datasets.is_empty() || self.epochs == 0 || self.repeats == 0 || self.bins == 0 {
            return bad("datasets, epochs, repeats and bins must not be empty or 0".into());
        }
        if self.samples.is_empty() || self.samples.contains(&0) {
            return bad(format!("samples must be positive, got {:?}", self.samples));
        }
        let has_dropout = match &self.model {
            ModelConfig::Mlp(m) => m.input_dropout > 0.0 || m.dropout.iter().any(|&p| p > 0.0),
            ModelConfig::Cnn(c) => c.dropout > 0.0 || c.spatial_dropout > 0.0,
        };
        if !has_dropout {
            return bad("MC-dropout needs a model with dropout".into());
        }
        self.model
            .validate()
            .map_err(|e| ExperimentError::Invalid(e.to_string()))
    }

    fn max_samples(&self) -> usize {
        self.samples.iter().copied().max().unwrap_or(1)
    }
}

/// Accuracy, NLL, ECE and the reliability bins of one set of predictions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Calibration {
    /// Fraction correct.
    pub accuracy: f64,
    /// Mean negative log-likelihood of the true class.
    pub nll: f64,
    /// Expected calibration error.
    pub ece: f64,
    /// Per confidence bin: (mean confidence, accuracy, count).
    pub bins: Vec<(f64, f64, usize)>,
}

/// Running sums from which a [`Calibration`] is read.
#[derive(Debug, Clone)]
pub struct CalibrationTally {
    n: usize,
    correct: usize,
    nll: f64,
    bin_conf: Vec<f64>,
    bin_correct: Vec<usize>,
    bin_count: Vec<usize>,
}

impl CalibrationTally {
    /// Empty, with `bins` equal-width confidence bins over [0, 1].
    pub fn new(bins: usize) -> Self {
        Self {
            n: 0,
            correct: 0,
            nll: 0.0,
            bin_conf: vec![0.0; bins],
            bin_correct: vec![0; bins],
            bin_count: vec![0; bins],
        }
    }

    /// Adds predictions: `probs` row-major `[n, classes]`, `targets` `[n]`.
    pub fn add(&mut self, probs: &[f32], classes: usize, targets: &[i64]) {
        let bins = self.bin_count.len();
        for (row, &t) in probs.chunks(classes).zip(targets) {
            let (pred, conf) =
                row.iter().enumerate().fold(
                    (0, f32::MIN),
                    |best, (i, &p)| if p > best.1 { (i, p) } else { best },
                );
            let hit = pred as i64 == t;
            self.n += 1;
            self.correct += usize::from(hit);
            self.nll -= f64::from(row[t as usize].max(1e-12)).ln();
            let b = ((conf as f64 * bins as f64) as usize).min(bins - 1);
            self.bin_conf[b] += conf as f64;
            self.bin_correct[b] += usize::from(hit);
            self.bin_count[b] += 1;
        }
    }

    /// The metrics so far.
    pub fn finish(&self) -> Calibration {
        let n = self.n.max(1) as f64;
        let mut ece = 0.0;
        let mut bins = Vec::new();
        for b in 0..self.bin_count.len() {
            let count = self.bin_count[b];
            if count == 0 {
                continue;
            }
            let conf = self.bin_conf[b] / count as f64;
            let acc = self.bin_correct[b] as f64 / count as f64;
            ece += count as f64 / n * (acc - conf).abs();
            bins.push((conf, acc, count));
        }
        Calibration {
            accuracy: self.correct as f64 / n,
            nll: self.nll / n,
            ece,
            bins,
        }
    }
}

/// One data set's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McDropoutRun {
    /// Data set.
    pub dataset: String,
    /// Weight-scaling inference.
    pub weight_scaling: Calibration,
    /// Per repeat, per entry of `samples`.
    pub mc: Vec<Vec<Calibration>>,
    /// Training seconds.
    pub train_secs: f64,
    /// Seconds of the whole MC evaluation (all repeats).
    pub mc_secs: f64,
    /// Test images.
    pub test_images: usize,
}

/// Everything the experiment produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct McDropoutResults {
    /// The configuration.
    pub config: McDropoutConfig,
    /// Per data set.
    pub runs: Vec<McDropoutRun>,
    /// What was written.
    pub written: Option<Written>,
}

/// Runs the experiment into `out_dir` (reusing finished data sets there).
pub fn run_mc_dropout(
    config: &McDropoutConfig,
    locator: &Locator,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<McDropoutResults, ExperimentError> {
    let start = Instant::now();
    config.validate()?;
    claim_output(config, &McDropoutConfig::new(), out_dir)?;
    let mut runs = Vec::new();
    let mut plots = Vec::new();
    for dataset in &config.datasets {
        let (run, reused) = cached_run(out_dir, dataset, || {
            let (train, test) = load_sets(
                dataset,
                locator,
                config.train_limit,
                config.test_limit,
                config.seed,
            )?;
            let steps = steps_for(train.len(), config.fit.batch_size, config.epochs);
            let fitted = fit(
                &config.model,
                &config.fit,
                &train,
                steps,
                config.seed,
                device,
                None,
            )?;
            progress(&format!(
                "{dataset}: trained {} epochs in {:.0} s; evaluating",
                config.epochs, fitted.train_secs
            ));
            let t = Instant::now();
            let weight_scaling = weight_scaling(&fitted.model, &test, config.bins, device)?;
            // No gradients: on the autodiff device every pass would otherwise record its graph,
            // which nothing frees without a backward (500 passes over 10,000 images ran a
            // 24 GB machine out of memory).
            let sampler = mc_dropout_mode(fitted.training_model).no_grad();
            let mut mc = Vec::new();
            for r in 0..config.repeats {
                device
                    .clone()
                    .autodiff()
                    .seed(derive_seed(config.seed, 1000 + r as u64));
                mc.push(mc_samples(&sampler, &test, config, device)?);
            }
            Ok(McDropoutRun {
                dataset: dataset.clone(),
                weight_scaling,
                mc,
                train_secs: fitted.train_secs,
                mc_secs: t.elapsed().as_secs_f64(),
                test_images: test.len(),
            })
        })?;
        let last = summary(&run, config.samples.len() - 1);
        progress(&format!(
            "{dataset}: weight scaling {:.2} % (NLL {:.4}, ECE {:.4}); MC k={} {:.2} % (NLL {:.4}, ECE {:.4}){}",
            run.weight_scaling.accuracy * 100.0,
            run.weight_scaling.nll,
            run.weight_scaling.ece,
            config.max_samples(),
            last.0.mean * 100.0,
            last.1.mean,
            last.2.mean,
            if reused { " (reused)" } else { "" }
        ));
        plots.push((
            format!("mc-dropout-{dataset}.png"),
            samples_plot(config, &run)?,
        ));
        plots.push((
            format!("reliability-{dataset}.png"),
            reliability_plot(config, &run)?,
        ));
        runs.push(run);
    }
    let mut results = McDropoutResults {
        config: config.clone(),
        runs,
        written: None,
    };
    let md = markdown(&results, start.elapsed().as_secs_f64());
    let plots: Vec<(&str, Vec<u8>)> = plots.iter().map(|(n, p)| (n.as_str(), p.clone())).collect();
    results.written = Some(write_results(
        out_dir,
        &md,
        &results,
        &plots,
        start.elapsed().as_secs_f64(),
    )?);
    Ok(results)
}

fn test_batches(
    test: &ImageSet,
    device: &Device,
) -> Result<
    std::sync::Arc<dyn burn::data::dataloader::DataLoader<flint_data::ClassificationBatch>>,
    ExperimentError,
> {
    Ok(loader(
        test.clone(),
        ImageBatcher::new(),
        &LoaderOptions::new(1000),
        device,
    )?)
}

fn to_host(probs: Tensor<2>, targets: Tensor<1, burn::tensor::Int>) -> (Vec<f32>, Vec<i64>) {
    (
        probs.into_data().iter::<f32>().collect(),
        targets.into_data().iter::<i64>().collect(),
    )
}

/// The standard inference-mode prediction (dropout off: Srivastava's weight scaling).
fn weight_scaling(
    model: &Classifier,
    test: &ImageSet,
    bins: usize,
    device: &Device,
) -> Result<Calibration, ExperimentError> {
    let mut tally = CalibrationTally::new(bins);
    let classes = test.num_classes();
    for batch in test_batches(test, device)?.iter() {
        let batch = batch.map_err(|e| ExperimentError::Invalid(format!("loading: {e}")))?;
        let probs = softmax(model.forward(batch.images), 1);
        let (p, t) = to_host(probs, batch.targets);
        tally.add(&p, classes, &t);
    }
    Ok(tally.finish())
}

/// One repeat: running means of up to `max` dropout samples, read at each `samples` count.
fn mc_samples(
    sampler: &Classifier,
    test: &ImageSet,
    config: &McDropoutConfig,
    device: &Device,
) -> Result<Vec<Calibration>, ExperimentError> {
    let train_device = device.clone().autodiff();
    let classes = test.num_classes();
    let mut tallies: Vec<CalibrationTally> = config
        .samples
        .iter()
        .map(|_| CalibrationTally::new(config.bins))
        .collect();
    for batch in test_batches(test, &train_device)?.iter() {
        let batch = batch.map_err(|e| ExperimentError::Invalid(format!("loading: {e}")))?;
        let targets: Vec<i64> = batch.targets.into_data().iter::<i64>().collect();
        let mut sum: Option<Tensor<2>> = None;
        for k in 1..=config.max_samples() {
            let probs = softmax(sampler.forward(batch.images.clone()).detach(), 1);
            let s = match sum.take() {
                Some(s) => s + probs,
                None => probs,
            };
            for (i, _) in config.samples.iter().enumerate().filter(|(_, n)| **n == k) {
                let mean: Vec<f32> = s
                    .clone()
                    .div_scalar(k as f64)
                    .into_data()
                    .iter::<f32>()
                    .collect();
                tallies[i].add(&mean, classes, &targets);
            }
            sum = Some(s);
        }
    }
    Ok(tallies.iter().map(CalibrationTally::finish).collect())
}

/// Mean ± std over repeats of (accuracy, NLL, ECE) at the `i`-th sample count.
fn summary(run: &McDropoutRun, i: usize) -> (MeanStd, MeanStd, MeanStd) {
    let of = |f: &dyn Fn(&Calibration) -> f64| {
        MeanStd::of(&run.mc.iter().map(|r| f(&r[i])).collect::<Vec<_>>()).unwrap_or(MeanStd {
            n: 0,
            mean: f64::NAN,
            std: 0.0,
            min: f64::NAN,
            max: f64::NAN,
        })
    };
    (of(&|c| c.accuracy), of(&|c| c.nll), of(&|c| c.ece))
}

/// The table of one data set.
pub fn table(config: &McDropoutConfig, run: &McDropoutRun) -> String {
    let w = &run.weight_scaling;
    let mut md = String::from(
        "| inference | test accuracy (%) | NLL | ECE (%) |\n| --- | ---: | ---: | ---: |\n",
    );
    let _ = writeln!(
        md,
        "| weight scaling (dropout off) | {:.2} | {:.4} | {:.2} |",
        w.accuracy * 100.0,
        w.nll,
        w.ece * 100.0
    );
    for (i, k) in config.samples.iter().enumerate() {
        let (acc, nll, ece) = summary(run, i);
        let _ = writeln!(
            md,
            "| MC-dropout, k = {k} | {} | {:.4} ± {:.4} | {} |",
            acc.percent(),
            nll.mean,
            nll.std,
            ece.percent()
        );
    }
    md
}

/// The smallest `k` whose mean MC accuracy reaches weight scaling's, if any.
pub fn matching_samples(config: &McDropoutConfig, run: &McDropoutRun) -> Option<usize> {
    config
        .samples
        .iter()
        .enumerate()
        .find(|(i, _)| summary(run, *i).0.mean >= run.weight_scaling.accuracy)
        .map(|(_, &k)| k)
}

fn samples_plot(config: &McDropoutConfig, run: &McDropoutRun) -> Result<Vec<u8>, ExperimentError> {
    let xs: Vec<f64> = config.samples.iter().map(|&k| k as f64).collect();
    let flat = |v: f64| MeanStd {
        n: 1,
        mean: v,
        std: 0.0,
        min: v,
        max: v,
    };
    let series = vec![
        Series {
            label: "MC-dropout (mean ± std over repeats)".into(),
            color: (30, 90, 200),
            dashed: false,
            points: (0..config.samples.len())
                .map(|i| (xs[i], summary(run, i).0))
                .collect(),
        },
        Series {
            label: "weight scaling".into(),
            color: (200, 40, 40),
            dashed: true,
            points: xs
                .iter()
                .map(|&x| (x, flat(run.weight_scaling.accuracy)))
                .collect(),
        },
    ];
    accuracy_plot_png(
        &format!("{}: MC-dropout against weight scaling", run.dataset),
        "MC samples k",
        &xs,
        &series,
        (900, 560),
    )
}

fn reliability_plot(
    config: &McDropoutConfig,
    run: &McDropoutRun,
) -> Result<Vec<u8>, ExperimentError> {
    let point = |v: f64| MeanStd {
        n: 1,
        mean: v,
        std: 0.0,
        min: v,
        max: v,
    };
    let bins = |c: &Calibration| -> Vec<(f64, MeanStd)> {
        c.bins
            .iter()
            .map(|&(conf, acc, _)| (conf * 100.0, point(acc)))
            .collect()
    };
    let mut series = vec![Series {
        label: "perfect calibration".into(),
        color: (120, 120, 120),
        dashed: true,
        points: vec![(0.0, point(0.0)), (100.0, point(1.0))],
    }];
    series.push(Series {
        label: format!(
            "weight scaling (ECE {:.2} %)",
            run.weight_scaling.ece * 100.0
        ),
        color: (200, 40, 40),
        dashed: false,
        points: bins(&run.weight_scaling),
    });
    if let Some(first) = run.mc.first().and_then(|r| r.last()) {
        series.push(Series {
            label: format!(
                "MC-dropout k = {} (ECE {:.2} %)",
                config.max_samples(),
                first.ece * 100.0
            ),
            color: (30, 90, 200),
            dashed: false,
            points: bins(first),
        });
    }
    line_plot_png(
        &PlotSpec {
            title: &format!("{}: reliability diagram", run.dataset),
            x_desc: "confidence (%)",
            y_desc: "accuracy (%)",
            log_x: false,
            x_ticks: None,
            percent: true,
            markers: true,
            legend: Legend::UpperLeft,
            size: (700, 640),
        },
        &series,
    )
}

fn markdown(results: &McDropoutResults, wall_secs: f64) -> String {
    let c = &results.config;
    let mut md = String::new();
    let _ = writeln!(md, "# mc-dropout: MC-dropout against weight scaling\n");
    let _ = writeln!(
        md,
        "{} trained {} epochs ({:?}, lr {}, batch {}, seed {}); MC-dropout averages the \
         softmax of k forward passes with dropout on (batch-norm layers, if any, in inference \
         mode); {} repeats with fresh masks give mean ± std. ECE over {} equal-width confidence \
         bins. Wall time of this invocation {:.0} s.\n",
        describe_model(&c.model),
        c.epochs,
        c.fit.optimizer.kind,
        c.fit.optimizer.lr,
        c.fit.batch_size,
        c.seed,
        c.repeats,
        c.bins,
        wall_secs
    );
    for run in &results.runs {
        let _ = writeln!(
            md,
            "## {}\n\n{} test images; training {:.0} s, MC evaluation {:.0} s.\n",
            run.dataset, run.test_images, run.train_secs, run.mc_secs
        );
        let _ = writeln!(md, "{}", table(c, run));
        let _ = match matching_samples(c, run) {
            Some(k) => writeln!(
                md,
                "MC-dropout reaches weight scaling's accuracy from k = {k} samples.\n"
            ),
            None => writeln!(
                md,
                "MC-dropout does not reach weight scaling's accuracy within k = {} samples.\n",
                c.max_samples()
            ),
        };
        let _ = writeln!(
            md,
            "![accuracy against samples](mc-dropout-{0}.png)\n![reliability diagram](reliability-{0}.png)\n",
            run.dataset
        );
    }
    let _ = writeln!(
        md,
        "Paper: Srivastava et al. 2014, Figure 11 (MNIST): the MC average approaches the \
         weight-scaling error as k grows and matches it at about k = 50."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_by_hand() {
        let mut t = CalibrationTally::new(10);
        // Two confident hits, one confident miss, one unsure hit.
        // (0.9 itself would sit on a bin edge, 0.8999999 in f32.)
        let probs = [0.92, 0.08, 0.95, 0.05, 0.92, 0.08, 0.55, 0.45];
        t.add(&probs, 2, &[0, 0, 1, 0]);
        let c = t.finish();
        assert!((c.accuracy - 0.75).abs() < 1e-12);
        let nll = -(0.92f64.ln() + 0.95f64.ln() + 0.08f64.ln() + 0.55f64.ln()) / 4.0;
        assert!((c.nll - nll).abs() < 1e-6, "{} vs {nll}", c.nll);
        // Bins: [0.5, 0.6): conf 0.55 acc 1; [0.9, 1.0]: conf (0.92+0.95+0.92)/3, acc 2/3.
        let high = (0.92 + 0.95 + 0.92) / 3.0;
        let ece = 0.25 * (1.0 - 0.55) + 0.75 * (high - 2.0 / 3.0);
        assert!((c.ece - ece).abs() < 1e-6, "{} vs {ece}", c.ece);
        assert_eq!(c.bins.len(), 2);
    }

    #[test]
    fn a_model_without_dropout_is_refused() {
        let c = McDropoutConfig::new()
            .with_model(ModelConfig::Mlp(MlpConfig::new().with_dropout(vec![0.0])));
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("needs a model with dropout")
        );
    }
}
