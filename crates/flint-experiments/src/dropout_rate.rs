//! **dropout-rate**: is a dropout rate between 0.2 and 0.5, chosen by cross-validation, the best?
//! (Srivastava et al. 2014, section 7.3 and appendix A.4: `p` of dropping a hidden unit around
//! 0.5, tuned on validation data.)
//!
//! For each network (default: the reference MLP and CNN of `reference.md`) and each rate `p`,
//! stratified `k`-fold cross-validation on the training pool gives a mean validation accuracy
//! (± std over folds). The rate with the best mean is selected; the network is then trained on
//! the whole pool at that rate, and at `p = 0` for comparison, and both are tested once on the
//! test set. The test set plays no part in the choice.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::tensor::Device;
use flint_data::{Locator, k_fold, random_subset};
use flint_io::seed::derive_seed;
use flint_models::ModelConfig;
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::fit::{FitConfig, fit, load_sets, steps_for};
use crate::output::{Written, cached_run, claim_output, write_results};
use crate::plot::{Legend, PlotSpec, Series, line_plot_png};
use crate::stats::MeanStd;

/// One network of the experiment.
#[derive(Config, Debug)]
pub struct CvModel {
    /// A reference model of `reference.md` (`mlp`, `cnn`); its dropout rate is what varies.
    pub model: String,
    /// Training epochs of every run.
    pub epochs: usize,
    /// Cross-validate on a stratified subset of this many training images (`None`: all).
    #[config(default = "None")]
    pub pool: Option<usize>,
}

/// Configuration of the dropout-rate experiment. The defaults are the full run of flint's
/// README; [`DropoutRateConfig::quick`] is a seconds-long smoke version.
#[derive(Config, Debug)]
pub struct DropoutRateConfig {
    /// Data set.
    #[config(default = "String::from(\"fashion-mnist\")")]
    pub dataset: String,
    /// The networks (default: the MLP for 10 epochs on all 60,000 images, the CNN for 4 epochs
    /// on a pool of 5,000, which keeps the 2 x 21 + 4 runs under an hour on a 2-core CPU).
    #[config(
        default = "vec![CvModel::new(String::from(\"mlp\"), 10), CvModel::new(String::from(\"cnn\"), 4).with_pool(Some(5_000))]"
    )]
    pub models: Vec<CvModel>,
    /// Dropout rates to compare.
    #[config(default = "vec![0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]")]
    pub rates: Vec<f64>,
    /// Number of folds.
    #[config(default = 3)]
    pub folds: usize,
    /// Optimiser, schedule, batch size (reference: Adam, lr 1e-3, batch 128).
    #[config(default = "FitConfig::new()")]
    pub fit: FitConfig,
    /// Seed of the pool, the folds and every run.
    #[config(default = 0)]
    pub seed: u64,
    /// Test on a stratified subset of this many test images (`None`: all).
    #[config(default = "None")]
    pub test_limit: Option<usize>,
}

impl DropoutRateConfig {
    /// A smoke version: the MLP on 600 images, rates 0 and 0.5, 2 folds, 1 epoch.
    pub fn quick() -> Self {
        Self::new()
            .with_models(vec![CvModel::new("mlp".into(), 1).with_pool(Some(600))])
            .with_rates(vec![0.0, 0.5])
            .with_folds(2)
            .with_test_limit(Some(500))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |m: String| Err(ExperimentError::Invalid(m));
        if self.models.is_empty() || self.rates.is_empty() {
            return bad("models and rates must not be empty".into());
        }
        if let Some(p) = self.rates.iter().find(|p| !(**p >= 0.0 && **p < 1.0)) {
            return bad(format!("dropout rates must be in [0, 1), got {p}"));
        }
        if self.folds < 2 {
            return bad(format!(
                "cross-validation needs at least 2 folds, got {}",
                self.folds
            ));
        }
        for m in &self.models {
            ModelConfig::reference(&m.model)
                .map_err(|e| ExperimentError::Invalid(e.to_string()))?;
            if m.epochs == 0 || m.pool == Some(0) {
                return bad(format!("{}: epochs and pool must be at least 1", m.model));
            }
        }
        Ok(())
    }
}

/// One cross-validation run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FoldRun {
    /// Model name.
    pub model: String,
    /// Dropout rate.
    pub rate: f64,
    /// Fold index.
    pub fold: usize,
    /// Validation accuracy on the held-out fold.
    pub val_accuracy: f64,
    /// Training seconds.
    pub train_secs: f64,
}

/// A network trained on the whole pool and tested.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestRun {
    /// Dropout rate.
    pub rate: f64,
    /// Test accuracy.
    pub test_accuracy: f64,
    /// Training seconds.
    pub train_secs: f64,
}

/// One network's outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CvOutcome {
    /// Model name.
    pub model: String,
    /// Training pool size.
    pub pool: usize,
    /// Mean ± std validation accuracy over folds, per rate (in `rates` order).
    pub per_rate: Vec<(f64, MeanStd)>,
    /// The selected rate.
    pub selected: f64,
    /// The selected rate trained on the pool, tested.
    pub selected_test: TestRun,
    /// `p = 0` trained on the pool, tested.
    pub no_dropout_test: TestRun,
}

/// Everything the experiment produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DropoutRateResults {
    /// The configuration.
    pub config: DropoutRateConfig,
    /// Every fold run.
    pub folds: Vec<FoldRun>,
    /// Per network.
    pub outcomes: Vec<CvOutcome>,
    /// Test images.
    pub test_images: usize,
    /// What was written.
    pub written: Option<Written>,
}

/// Runs the experiment into `out_dir` (reusing finished runs there).
pub fn run_dropout_rate(
    config: &DropoutRateConfig,
    locator: &Locator,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<DropoutRateResults, ExperimentError> {
    let start = Instant::now();
    config.validate()?;
    claim_output(config, &DropoutRateConfig::new(), out_dir)?;
    let (train, test) = load_sets(
        &config.dataset,
        locator,
        None,
        config.test_limit,
        config.seed,
    )?;
    let total: usize = config.models.len() * config.rates.len() * config.folds;
    let mut folds = Vec::new();
    let mut outcomes = Vec::new();
    for m in &config.models {
        let model = ModelConfig::reference(&m.model)
            .map_err(|e| ExperimentError::Invalid(e.to_string()))?;
        let pool = match m.pool {
            Some(n) if n < train.len() => random_subset(&train, n, derive_seed(config.seed, 3))?,
            _ => train.clone(),
        };
        let splits = k_fold(&pool, config.folds, derive_seed(config.seed, 4))?;
        let mut per_rate = Vec::new();
        for &rate in &config.rates {
            let mut accs = Vec::new();
            for (fold, (fit_set, val_set)) in splits.iter().enumerate() {
                let key = format!("{}-p{rate}-fold{fold}", m.model);
                let (run, reused) = cached_run(out_dir, &key, || {
                    let steps = steps_for(fit_set.len(), config.fit.batch_size, m.epochs);
                    let seed = derive_seed(config.seed, 100 + fold as u64);
                    let fitted = fit(
                        &model.clone().with_dropout_rate(rate),
                        &config.fit,
                        fit_set,
                        steps,
                        seed,
                        device,
                        None,
                    )?;
                    Ok(FoldRun {
                        model: m.model.clone(),
                        rate,
                        fold,
                        val_accuracy: flint_train::evaluate(&fitted.model, val_set, device)?
                            .accuracy,
                        train_secs: fitted.train_secs,
                    })
                })?;
                progress(&format!(
                    "[{}/{total}] {} p={rate} fold {fold}: val {:.2} % ({:.0} s{})",
                    folds.len() + 1,
                    m.model,
                    run.val_accuracy * 100.0,
                    run.train_secs,
                    if reused { ", reused" } else { "" }
                ));
                accs.push(run.val_accuracy);
                folds.push(run);
            }
            let summary = MeanStd::of(&accs).expect("at least two folds");
            per_rate.push((rate, summary));
        }
        let selected = per_rate
            .iter()
            .fold(None::<(f64, MeanStd)>, |best, &(p, s)| match best {
                Some((_, b)) if b.mean >= s.mean => best,
                _ => Some((p, s)),
            })
            .map(|(p, _)| p)
            .expect("at least one rate");
        let mut test_at = |rate: f64| -> Result<TestRun, ExperimentError> {
            let key = format!("{}-p{rate}-test", m.model);
            let (run, _) = cached_run(out_dir, &key, || {
                let steps = steps_for(pool.len(), config.fit.batch_size, m.epochs);
                let fitted = fit(
                    &model.clone().with_dropout_rate(rate),
                    &config.fit,
                    &pool,
                    steps,
                    derive_seed(config.seed, 200),
                    device,
                    None,
                )?;
                Ok(TestRun {
                    rate,
                    test_accuracy: flint_train::evaluate(&fitted.model, &test, device)?.accuracy,
                    train_secs: fitted.train_secs,
                })
            })?;
            progress(&format!(
                "{} p={rate} on the whole pool: test {:.2} %",
                m.model,
                run.test_accuracy * 100.0
            ));
            Ok(run)
        };
        let selected_test = test_at(selected)?;
        let no_dropout_test = if selected == 0.0 {
            selected_test.clone()
        } else {
            test_at(0.0)?
        };
        outcomes.push(CvOutcome {
            model: m.model.clone(),
            pool: pool.len(),
            per_rate,
            selected,
            selected_test,
            no_dropout_test,
        });
    }
    let png = plot(config, &outcomes)?;
    let mut results = DropoutRateResults {
        config: config.clone(),
        folds,
        outcomes,
        test_images: test.len(),
        written: None,
    };
    let md = markdown(&results, start.elapsed().as_secs_f64());
    results.written = Some(write_results(
        out_dir,
        &md,
        &results,
        &[("dropout-rate.png", png)],
        start.elapsed().as_secs_f64(),
    )?);
    Ok(results)
}

/// Validation accuracy per rate and model.
pub fn cv_table(config: &DropoutRateConfig, outcomes: &[CvOutcome]) -> String {
    let mut md = String::from("| p |");
    for o in outcomes {
        let _ = write!(md, " {} val acc (%) |", o.model);
    }
    md.push_str("\n| ---: |");
    md.push_str(&" ---: |".repeat(outcomes.len()));
    md.push('\n');
    for (i, p) in config.rates.iter().enumerate() {
        let _ = write!(md, "| {p} |");
        for o in outcomes {
            let (_, s) = o.per_rate[i];
            let mark = if *p == o.selected {
                " **(selected)**"
            } else {
                ""
            };
            let _ = write!(md, " {}{mark} |", s.percent());
        }
        md.push('\n');
    }
    md
}

/// The selected rates and their test accuracy.
pub fn selection_table(outcomes: &[CvOutcome]) -> String {
    let mut md = String::from(
        "| model | training pool | selected p | test acc at selected p (%) | test acc at p = 0 (%) |\n| --- | ---: | ---: | ---: | ---: |\n",
    );
    for o in outcomes {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {:.2} | {:.2} |",
            o.model,
            o.pool,
            o.selected,
            o.selected_test.test_accuracy * 100.0,
            o.no_dropout_test.test_accuracy * 100.0
        );
    }
    md
}

fn plot(config: &DropoutRateConfig, outcomes: &[CvOutcome]) -> Result<Vec<u8>, ExperimentError> {
    const COLORS: [(u8, u8, u8); 4] = [(30, 90, 200), (200, 40, 40), (0, 150, 90), (130, 40, 180)];
    let series: Vec<Series> = outcomes
        .iter()
        .enumerate()
        .map(|(i, o)| Series {
            label: format!("{} (selected p = {})", o.model, o.selected),
            color: COLORS[i % COLORS.len()],
            dashed: false,
            points: o.per_rate.clone(),
        })
        .collect();
    line_plot_png(
        &PlotSpec {
            title: &format!(
                "{}: {}-fold validation accuracy against dropout rate",
                config.dataset, config.folds
            ),
            x_desc: "dropout rate p",
            y_desc: "validation accuracy (%)",
            log_x: false,
            x_ticks: None,
            percent: true,
            markers: true,
            legend: Legend::LowerLeft,
            size: (900, 560),
        },
        &series,
    )
}

fn markdown(results: &DropoutRateResults, wall_secs: f64) -> String {
    let c = &results.config;
    let mut md = String::new();
    let _ = writeln!(md, "# dropout-rate: choosing p by cross-validation\n");
    let _ = writeln!(
        md,
        "{} with stratified {}-fold cross-validation (seed {}); {:?} lr {}, batch {}. Networks: {}. \
         The rate with the best mean validation accuracy is selected, then trained on the whole \
         pool and tested once on {} test images (with `p = 0` beside it). Wall time {:.0} s \
         (training {:.0} s).\n",
        c.dataset,
        c.folds,
        c.seed,
        c.fit.optimizer.kind,
        c.fit.optimizer.lr,
        c.fit.batch_size,
        c.models
            .iter()
            .map(|m| format!(
                "reference `{}`, {} epochs{}",
                m.model,
                m.epochs,
                m.pool
                    .map_or(String::new(), |n| format!(", pool of {n} images"))
            ))
            .collect::<Vec<_>>()
            .join("; "),
        results.test_images,
        wall_secs,
        results.folds.iter().map(|f| f.train_secs).sum::<f64>()
    );
    let _ = writeln!(md, "{}", cv_table(c, &results.outcomes));
    let _ = writeln!(md, "{}", selection_table(&results.outcomes));
    let _ = writeln!(md, "![validation accuracy against p](dropout-rate.png)\n");
    let _ = writeln!(
        md,
        "Paper: Srivastava et al. 2014 recommend p = 0.5 for hidden units (0.2 for inputs), \
         chosen on validation data; rates between 0.4 and 0.8 of *retaining* units (p = 0.2 to \
         0.6 of dropping them) were close in their Figure 9a."
    );
    md
}
