//! **small-data**: does dropout help as the training set shrinks? (Srivastava et al. 2014,
//! section 7.4 and Figure 10: no gain on the smallest sets, a clear one in between.)
//!
//! A network (default: the reference MLP of `reference.md`) is trained with and without its
//! dropout on stratified random subsets of the training set of growing size, for the same
//! optimisation budget: `max(epochs passes, min_steps)` steps, so a 100-image set is not
//! starved of updates. Each subset, initialisation and batch order comes from the seed; the
//! with- and without-dropout runs of one seed share the subset and the initial weights, so the
//! gain is paired. Reported: the final model's test accuracy and its training accuracy on the
//! subset (the gap measures over-fitting).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::tensor::Device;
use flint_data::{Locator, random_subset};
use flint_io::seed::derive_seed;
use flint_models::{MlpConfig, ModelConfig};
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::fit::{FitConfig, describe_model, fit, load_sets, steps_for};
use crate::output::{Written, cached_run, claim_output, write_results};
use crate::plot::{Series, accuracy_plot_png};
use crate::stats::MeanStd;

/// Configuration of the small-data experiment. The defaults are the full run of flint's
/// README; [`SmallDataConfig::quick`] is a seconds-long smoke version.
#[derive(Config, Debug)]
pub struct SmallDataConfig {
    /// Data set (`mnist`, as in the paper, or `fashion-mnist`).
    #[config(default = "String::from(\"mnist\")")]
    pub dataset: String,
    /// Training-set sizes (stratified random subsets of the training set).
    #[config(default = "vec![100, 300, 1000, 3000, 10000, 30000, 60000]")]
    pub sizes: Vec<usize>,
    /// The network; its dropout rate is the "with dropout" arm, 0 the other.
    #[config(default = "ModelConfig::Mlp(MlpConfig::reference())")]
    pub model: ModelConfig,
    /// Dropout rate of the "with dropout" arm.
    #[config(default = 0.5)]
    pub dropout: f64,
    /// Passes over the training subset...
    #[config(default = 20)]
    pub epochs: usize,
    /// ...but at least this many steps (small subsets).
    #[config(default = 2000)]
    pub min_steps: usize,
    /// Optimiser, batch size, schedule.
    #[config(default = "FitConfig::new()")]
    pub fit: FitConfig,
    /// Number of seeds.
    #[config(default = 3)]
    pub seeds: usize,
    /// The first seed.
    #[config(default = 0)]
    pub first_seed: u64,
    /// Evaluate on a stratified subset of this many test images (`None`: all).
    #[config(default = "None")]
    pub test_limit: Option<usize>,
}

impl SmallDataConfig {
    /// A smoke version: two small sizes, one seed, 30 steps, 500 test images.
    pub fn quick() -> Self {
        Self::new()
            .with_sizes(vec![100, 500])
            .with_epochs(1)
            .with_min_steps(30)
            .with_seeds(1)
            .with_test_limit(Some(500))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |m: String| Err(ExperimentError::Invalid(m));
        if self.sizes.is_empty() || self.sizes.contains(&0) {
            return bad(format!("sizes must be positive, got {:?}", self.sizes));
        }
        if self.seeds == 0 || self.epochs == 0 {
            return bad("seeds and epochs must be at least 1".into());
        }
        if !(self.dropout > 0.0 && self.dropout < 1.0) {
            return bad(format!("dropout must be in (0, 1), got {}", self.dropout));
        }
        self.model
            .validate()
            .map_err(|e| ExperimentError::Invalid(e.to_string()))
    }

    fn steps(&self, n: usize) -> usize {
        steps_for(n, self.fit.batch_size, self.epochs).max(self.min_steps)
    }
}

/// One trained network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmallDataRun {
    /// Training images.
    pub size: usize,
    /// With dropout.
    pub dropout: bool,
    /// Seed.
    pub seed: u64,
    /// Steps trained.
    pub steps: usize,
    /// Passes over the subset.
    pub epochs: f64,
    /// Accuracy on the training subset (inference mode).
    pub train_accuracy: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Test cross-entropy.
    pub test_loss: f64,
    /// Training seconds.
    pub train_secs: f64,
}

/// One size: both arms over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmallDataRow {
    /// Training images.
    pub size: usize,
    /// Steps per run.
    pub steps: usize,
    /// Test accuracy without dropout.
    pub plain: MeanStd,
    /// Test accuracy with dropout.
    pub dropout: MeanStd,
    /// Dropout minus plain, paired by seed.
    pub gain: MeanStd,
    /// Train minus test accuracy without dropout.
    pub plain_gap: MeanStd,
    /// Train minus test accuracy with dropout.
    pub dropout_gap: MeanStd,
}

/// Everything the experiment produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SmallDataResults {
    /// The configuration.
    pub config: SmallDataConfig,
    /// Every run.
    pub runs: Vec<SmallDataRun>,
    /// Per size.
    pub rows: Vec<SmallDataRow>,
    /// Test images.
    pub test_images: usize,
    /// What was written.
    pub written: Option<Written>,
}

/// Runs the experiment into `out_dir` (reusing finished runs there).
pub fn run_small_data(
    config: &SmallDataConfig,
    locator: &Locator,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<SmallDataResults, ExperimentError> {
    let start = Instant::now();
    config.validate()?;
    claim_output(config, &SmallDataConfig::new(), out_dir)?;
    let (train, test) = load_sets(
        &config.dataset,
        locator,
        None,
        config.test_limit,
        config.first_seed,
    )?;
    if let Some(&n) = config.sizes.iter().find(|&&n| n > train.len()) {
        return Err(ExperimentError::Invalid(format!(
            "size {n} is larger than the {} training images of {}",
            train.len(),
            config.dataset
        )));
    }
    let total = config.sizes.len() * config.seeds * 2;
    let mut runs = Vec::new();
    for &size in &config.sizes {
        for seed in config.first_seed..config.first_seed + config.seeds as u64 {
            let subset = random_subset(&train, size, derive_seed(seed, 11))?;
            for dropout in [false, true] {
                let key = format!("n{size}-{}-seed{seed}", arm(dropout));
                let (run, reused) = cached_run(out_dir, &key, || {
                    let rate = if dropout { config.dropout } else { 0.0 };
                    let model = config.model.clone().with_dropout_rate(rate);
                    let steps = config.steps(size);
                    let fitted = fit(&model, &config.fit, &subset, steps, seed, device, None)?;
                    let on_train = flint_train::evaluate(&fitted.model, &subset, device)?;
                    let on_test = flint_train::evaluate(&fitted.model, &test, device)?;
                    Ok(SmallDataRun {
                        size,
                        dropout,
                        seed,
                        steps,
                        epochs: fitted.epochs,
                        train_accuracy: on_train.accuracy,
                        test_accuracy: on_test.accuracy,
                        test_loss: on_test.loss,
                        train_secs: fitted.train_secs,
                    })
                })?;
                progress(&format!(
                    "[{}/{total}] n={size} {} seed {seed}: test {:.2} %, train {:.2} % ({:.1} s{})",
                    runs.len() + 1,
                    arm(dropout),
                    run.test_accuracy * 100.0,
                    run.train_accuracy * 100.0,
                    run.train_secs,
                    if reused { ", reused" } else { "" }
                ));
                runs.push(run);
            }
        }
    }
    let rows = summarize(config, &runs);
    let mut results = SmallDataResults {
        config: config.clone(),
        runs,
        rows,
        test_images: test.len(),
        written: None,
    };
    let png = plot(&results)?;
    let md = markdown(&results, start.elapsed().as_secs_f64());
    results.written = Some(write_results(
        out_dir,
        &md,
        &results,
        &[("small-data.png", png)],
        start.elapsed().as_secs_f64(),
    )?);
    Ok(results)
}

fn arm(dropout: bool) -> &'static str {
    if dropout { "dropout" } else { "plain" }
}

/// Mean ± std per size and arm, and the paired gain.
pub fn summarize(config: &SmallDataConfig, runs: &[SmallDataRun]) -> Vec<SmallDataRow> {
    let mut rows = Vec::new();
    for &size in &config.sizes {
        let of = |dropout: bool| -> Vec<&SmallDataRun> {
            runs.iter()
                .filter(|r| r.size == size && r.dropout == dropout)
                .collect()
        };
        let (plain, drop) = (of(false), of(true));
        let acc = |v: &[&SmallDataRun]| v.iter().map(|r| r.test_accuracy).collect::<Vec<_>>();
        let gap = |v: &[&SmallDataRun]| {
            v.iter()
                .map(|r| r.train_accuracy - r.test_accuracy)
                .collect::<Vec<_>>()
        };
        let gains: Vec<f64> = drop
            .iter()
            .filter_map(|d| {
                plain
                    .iter()
                    .find(|p| p.seed == d.seed)
                    .map(|p| d.test_accuracy - p.test_accuracy)
            })
            .collect();
        let (Some(p), Some(d), Some(g), Some(pg), Some(dg)) = (
            MeanStd::of(&acc(&plain)),
            MeanStd::of(&acc(&drop)),
            MeanStd::of(&gains),
            MeanStd::of(&gap(&plain)),
            MeanStd::of(&gap(&drop)),
        ) else {
            continue;
        };
        rows.push(SmallDataRow {
            size,
            steps: config.steps(size),
            plain: p,
            dropout: d,
            gain: g,
            plain_gap: pg,
            dropout_gap: dg,
        });
    }
    rows
}

/// The results table.
pub fn table(rows: &[SmallDataRow]) -> String {
    let mut md = String::from(
        "| training images | steps | test acc, no dropout | test acc, dropout | dropout gain (points) | train-test gap, no dropout | gap, dropout |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n",
    );
    for r in rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} |",
            r.size,
            r.steps,
            r.plain.percent(),
            r.dropout.percent(),
            r.gain.points(),
            r.plain_gap.points(),
            r.dropout_gap.points()
        );
    }
    md
}

fn plot(results: &SmallDataResults) -> Result<Vec<u8>, ExperimentError> {
    let xs: Vec<f64> = results.rows.iter().map(|r| r.size as f64).collect();
    let series = vec![
        Series {
            label: "no dropout".into(),
            color: (200, 60, 40),
            dashed: true,
            points: results
                .rows
                .iter()
                .map(|r| (r.size as f64, r.plain))
                .collect(),
        },
        Series {
            label: format!("dropout {}", results.config.dropout),
            color: (30, 90, 200),
            dashed: false,
            points: results
                .rows
                .iter()
                .map(|r| (r.size as f64, r.dropout))
                .collect(),
        },
    ];
    accuracy_plot_png(
        &format!(
            "{}: test accuracy against training-set size",
            results.config.dataset
        ),
        "training images",
        &xs,
        &series,
        (900, 560),
    )
}

fn markdown(results: &SmallDataResults, wall_secs: f64) -> String {
    let c = &results.config;
    let mut md = String::new();
    let _ = writeln!(md, "# small-data: dropout as the training set shrinks\n");
    let _ = writeln!(
        md,
        "{} on {}, with dropout {} and without (0), trained for max({} epochs, {} steps) \
         with {:?} lr {} at batch {}; {} seed(s) from {}; test accuracy of the final model on {} \
         test images (mean ± std over seeds). The two arms of a seed share the subset and the \
         initial weights; the gain is paired by seed. Wall time of this invocation {:.0} s; \
         training time of all {} runs {:.0} s.\n",
        describe_model(&c.model.clone().with_dropout_rate(c.dropout)),
        c.dataset,
        c.dropout,
        c.epochs,
        c.min_steps,
        c.fit.optimizer.kind,
        c.fit.optimizer.lr,
        c.fit.batch_size,
        c.seeds,
        c.first_seed,
        results.test_images,
        wall_secs,
        results.runs.len(),
        results.runs.iter().map(|r| r.train_secs).sum::<f64>()
    );
    let _ = writeln!(md, "{}", table(&results.rows));
    let _ = writeln!(
        md,
        "![test accuracy against training-set size](small-data.png)\n"
    );
    let _ = writeln!(
        md,
        "Srivastava et al. 2014 (Figure 10, MNIST): dropout gives no improvement at the smallest \
         sizes (100, 500 images), then a gain that shrinks again as the data set grows."
    );
    md
}
