//! **regularizers**: Srivastava et al. 2014, Table 9: dropout against (and with) the classical
//! weight regularisers on an MLP, on MNIST and Fashion-MNIST.
//!
//! Seven methods train the same network with the same optimiser, schedule and budget:
//! no regularisation, L2, L1, max-norm, dropout, dropout + L2, dropout + max-norm. Dropout is
//! the paper's (0.2 on the input, 0.5 on the hidden units); the penalties and the constraint go
//! through [`flint_train::RegularizationConfig`]. The test error of the final model is the
//! result; the training error of the same model (inference mode, whole training set) gives
//! the train/test gap, over-fitting's signature. Test error is also recorded after every epoch
//! for the curves.
//!
//! The paper's network (784-1024-1024-2048-10) trained for hours on a GPU; the default here is
//! smaller (784-512-512-10) and shorter so the whole table runs on a 2-core CPU in half an
//! hour; the configuration takes the paper's sizes as they are.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use burn::config::Config;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use flint_data::Locator;
use flint_models::{MlpConfig, ModelConfig};
use flint_train::{
    OptimizerConfig, OptimizerKind, RegularizationConfig, ScheduleConfig, ScheduleKind,
};
use serde::{Deserialize, Serialize};

use crate::error::ExperimentError;
use crate::fit::{FitConfig, Monitor, fit, load_sets, steps_for};
use crate::output::{Written, cached_run, claim_output, write_results};
use crate::plot::{Legend, PlotSpec, Series, line_plot_png};
use crate::stats::MeanStd;

/// The methods of Table 9, in its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RegMethod {
    /// Plain network.
    None,
    /// L2 penalty.
    L2,
    /// L1 penalty.
    L1,
    /// Max-norm constraint.
    MaxNorm,
    /// Dropout.
    Dropout,
    /// Dropout and L2.
    DropoutL2,
    /// Dropout and max-norm.
    DropoutMaxNorm,
}

impl RegMethod {
    /// All, in the table's order.
    pub const ALL: [RegMethod; 7] = [
        RegMethod::None,
        RegMethod::L2,
        RegMethod::L1,
        RegMethod::MaxNorm,
        RegMethod::Dropout,
        RegMethod::DropoutL2,
        RegMethod::DropoutMaxNorm,
    ];

    /// A file-name key.
    pub fn key(self) -> &'static str {
        match self {
            RegMethod::None => "none",
            RegMethod::L2 => "l2",
            RegMethod::L1 => "l1",
            RegMethod::MaxNorm => "max-norm",
            RegMethod::Dropout => "dropout",
            RegMethod::DropoutL2 => "dropout-l2",
            RegMethod::DropoutMaxNorm => "dropout-max-norm",
        }
    }

    fn dropout(self) -> bool {
        matches!(
            self,
            RegMethod::Dropout | RegMethod::DropoutL2 | RegMethod::DropoutMaxNorm
        )
    }

    fn regularization(self, c: &RegularizersConfig) -> Option<RegularizationConfig> {
        let r = RegularizationConfig::new();
        match self {
            RegMethod::None | RegMethod::Dropout => None,
            RegMethod::L2 | RegMethod::DropoutL2 => Some(r.with_l2(c.l2)),
            RegMethod::L1 => Some(r.with_l1(c.l1)),
            RegMethod::MaxNorm | RegMethod::DropoutMaxNorm => {
                Some(r.with_max_norm(Some(c.max_norm)))
            }
        }
    }

    /// The row label with its hyper-parameters.
    pub fn label(self, c: &RegularizersConfig) -> String {
        let dropout = format!(
            "dropout ({} input, {} hidden)",
            c.input_dropout, c.hidden_dropout
        );
        match self {
            RegMethod::None => "no regularisation".into(),
            RegMethod::L2 => format!("L2 ({:e})", c.l2),
            RegMethod::L1 => format!("L1 ({:e})", c.l1),
            RegMethod::MaxNorm => format!("max-norm (c = {})", c.max_norm),
            RegMethod::Dropout => dropout,
            RegMethod::DropoutL2 => format!("{dropout} + L2"),
            RegMethod::DropoutMaxNorm => format!("{dropout} + max-norm"),
        }
    }

    fn color(self) -> (u8, u8, u8) {
        match self {
            RegMethod::None => (0, 0, 0),
            RegMethod::L2 => (230, 120, 0),
            RegMethod::L1 => (150, 100, 40),
            RegMethod::MaxNorm => (200, 30, 30),
            RegMethod::Dropout => (30, 90, 200),
            RegMethod::DropoutL2 => (0, 150, 150),
            RegMethod::DropoutMaxNorm => (130, 40, 180),
        }
    }

    /// Anchor test error on MNIST from Table 9 (784-1024-1024-2048-10), where it gives one.
    pub fn anchor(self) -> Option<f64> {
        match self {
            RegMethod::L2 => Some(1.62),
            RegMethod::MaxNorm => Some(1.35),
            RegMethod::DropoutL2 => Some(1.25),
            RegMethod::DropoutMaxNorm => Some(1.05),
            _ => None,
        }
    }
}

/// Configuration of the regularizers experiment. The defaults are the full run of flint's
/// README; [`RegularizersConfig::quick`] is a seconds-long smoke version.
#[derive(Config, Debug)]
pub struct RegularizersConfig {
    /// Data sets.
    #[config(default = "vec![String::from(\"mnist\"), String::from(\"fashion-mnist\")]")]
    pub datasets: Vec<String>,
    /// Hidden layer widths of the ReLU MLP (paper: 1024, 1024, 2048).
    #[config(default = "vec![512, 512]")]
    pub hidden: Vec<usize>,
    /// Dropout rate on the input (paper: 0.2).
    #[config(default = 0.2)]
    pub input_dropout: f64,
    /// Dropout rate on the hidden units (paper: 0.5).
    #[config(default = 0.5)]
    pub hidden_dropout: f64,
    /// L2 factor (`l2 · Σw²` added to the loss; PyTorch weight decay 5e-4).
    #[config(default = 2.5e-4)]
    pub l2: f64,
    /// L1 factor (`l1 · Σ|w|`).
    #[config(default = 2e-5)]
    pub l1: f64,
    /// Max-norm radius `c` (paper: 3 to 4).
    #[config(default = 3.0)]
    pub max_norm: f64,
    /// Epochs over the training set.
    #[config(default = 12)]
    pub epochs: usize,
    /// Optimiser and schedule: SGD with momentum 0.9, lr 0.05, cosine decay, batch 128.
    #[config(
        default = "FitConfig::new().with_optimizer(OptimizerConfig::new().with_kind(OptimizerKind::Sgd).with_lr(0.05).with_momentum(0.9)).with_schedule(ScheduleConfig::new().with_kind(ScheduleKind::Cosine))"
    )]
    pub fit: FitConfig,
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

impl RegularizersConfig {
    /// A smoke version: MNIST only, 1,000 training and 500 test images, 2 epochs, a small net.
    pub fn quick() -> Self {
        Self::new()
            .with_datasets(vec!["mnist".into()])
            .with_hidden(vec![64])
            .with_epochs(2)
            .with_train_limit(Some(1000))
            .with_test_limit(Some(500))
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ExperimentError> {
        let bad = |m: String| Err(ExperimentError::Invalid(m));
        if self.datasets.is_empty() || self.seeds == 0 || self.epochs == 0 {
            return bad("datasets, seeds and epochs must not be empty or 0".into());
        }
        for r in RegMethod::ALL.iter().filter_map(|m| m.regularization(self)) {
            r.validate()?;
        }
        self.model(true)
            .validate()
            .map_err(|e| ExperimentError::Invalid(e.to_string()))
    }

    fn model(&self, dropout: bool) -> ModelConfig {
        let (input, hidden) = if dropout {
            (self.input_dropout, self.hidden_dropout)
        } else {
            (0.0, 0.0)
        };
        ModelConfig::Mlp(
            MlpConfig::new()
                .with_hidden(self.hidden.clone())
                .with_input_dropout(input)
                .with_dropout(vec![hidden]),
        )
    }
}

/// One trained network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegRun {
    /// Data set.
    pub dataset: String,
    /// Method.
    pub method: RegMethod,
    /// Seed.
    pub seed: u64,
    /// Test error of the final model.
    pub test_error: f64,
    /// Training error of the final model (inference mode).
    pub train_error: f64,
    /// Test error after each epoch (index 0: before training).
    pub test_error_curve: Vec<f64>,
    /// The largest L2 norm of a unit's incoming weight vector in the final model (shows whether
    /// a max-norm constraint was ever binding).
    pub max_unit_norm: f64,
    /// Training seconds.
    pub train_secs: f64,
}

/// One method on one data set over the seeds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegRow {
    /// Data set.
    pub dataset: String,
    /// Method.
    pub method: RegMethod,
    /// Test error.
    pub test_error: MeanStd,
    /// Training error.
    pub train_error: MeanStd,
    /// Test minus training error.
    pub gap: MeanStd,
    /// Largest unit norm over the seeds' final models.
    pub max_unit_norm: f64,
}

/// Everything the experiment produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegularizersResults {
    /// The configuration.
    pub config: RegularizersConfig,
    /// Every run.
    pub runs: Vec<RegRun>,
    /// Per data set and method.
    pub rows: Vec<RegRow>,
    /// What was written.
    pub written: Option<Written>,
}

/// Runs the experiment into `out_dir` (reusing finished runs there).
pub fn run_regularizers(
    config: &RegularizersConfig,
    locator: &Locator,
    out_dir: &Path,
    device: &Device,
    progress: &mut dyn FnMut(&str),
) -> Result<RegularizersResults, ExperimentError> {
    let start = Instant::now();
    config.validate()?;
    claim_output(config, &RegularizersConfig::new(), out_dir)?;
    let total = config.datasets.len() * config.seeds * RegMethod::ALL.len();
    let mut runs = Vec::new();
    let mut plots = Vec::new();
    for dataset in &config.datasets {
        let (train, test) = load_sets(
            dataset,
            locator,
            config.train_limit,
            config.test_limit,
            config.first_seed,
        )?;
        let steps_per_epoch = steps_for(train.len(), config.fit.batch_size, 1);
        for seed in config.first_seed..config.first_seed + config.seeds as u64 {
            for method in RegMethod::ALL {
                let key = format!("{dataset}-{}-seed{seed}", method.key());
                let (run, reused) = cached_run(out_dir, &key, || {
                    let fit_config = FitConfig {
                        regularization: method.regularization(config),
                        ..config.fit.clone()
                    };
                    let mut curve = Vec::new();
                    let mut on_step = |_: usize, model: &flint_models::Classifier| {
                        curve.push(1.0 - flint_train::evaluate(model, &test, device)?.accuracy);
                        Ok(())
                    };
                    let fitted = fit(
                        &config.model(method.dropout()),
                        &fit_config,
                        &train,
                        steps_per_epoch * config.epochs,
                        seed,
                        device,
                        Some(Monitor {
                            every: steps_per_epoch,
                            on_step: &mut on_step,
                        }),
                    )?;
                    let on_train = flint_train::evaluate(&fitted.model, &train, device)?;
                    let max_unit_norm = max_unit_norm(&fitted.model);
                    Ok(RegRun {
                        dataset: dataset.clone(),
                        method,
                        seed,
                        test_error: *curve.last().unwrap_or(&f64::NAN),
                        train_error: 1.0 - on_train.accuracy,
                        test_error_curve: curve,
                        max_unit_norm,
                        train_secs: fitted.train_secs,
                    })
                })?;
                progress(&format!(
                    "[{}/{total}] {dataset} {} seed {seed}: test error {:.2} %, train error {:.2} % ({:.0} s{})",
                    runs.len() + 1,
                    method.label(config),
                    run.test_error * 100.0,
                    run.train_error * 100.0,
                    run.train_secs,
                    if reused { ", reused" } else { "" }
                ));
                runs.push(run);
            }
        }
        let these: Vec<&RegRun> = runs.iter().filter(|r| &r.dataset == dataset).collect();
        plots.push((
            format!("regularizers-{dataset}.png"),
            plot(config, dataset, &these)?,
        ));
    }
    let rows = summarize(config, &runs);
    let mut results = RegularizersResults {
        config: config.clone(),
        runs,
        rows,
        written: None,
    };
    let md = markdown(&results, &plots, start.elapsed().as_secs_f64());
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

/// The largest norm of any linear unit's incoming weight vector (a column of burn's
/// `[in, out]` weight matrix).
pub fn max_unit_norm<M: Module>(model: &M) -> f64 {
    struct Norms(f64);
    impl ModuleVisitor for Norms {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 2 {
                let norms = param.val().powi_scalar(2).sum_dim(0).sqrt().max();
                self.0 = self.0.max(norms.into_scalar::<f32>() as f64);
            }
        }
    }
    let mut v = Norms(0.0);
    model.visit(&mut v);
    v.0
}

/// Mean ± std per data set and method.
pub fn summarize(config: &RegularizersConfig, runs: &[RegRun]) -> Vec<RegRow> {
    let mut rows = Vec::new();
    for dataset in &config.datasets {
        for method in RegMethod::ALL {
            let these: Vec<&RegRun> = runs
                .iter()
                .filter(|r| &r.dataset == dataset && r.method == method)
                .collect();
            let of = |f: &dyn Fn(&RegRun) -> f64| {
                MeanStd::of(&these.iter().map(|r| f(r)).collect::<Vec<_>>())
            };
            let (Some(test_error), Some(train_error), Some(gap)) = (
                of(&|r| r.test_error),
                of(&|r| r.train_error),
                of(&|r| r.test_error - r.train_error),
            ) else {
                continue;
            };
            rows.push(RegRow {
                dataset: dataset.clone(),
                method,
                test_error,
                train_error,
                gap,
                max_unit_norm: these.iter().map(|r| r.max_unit_norm).fold(0.0, f64::max),
            });
        }
    }
    rows
}

/// The table of one data set.
pub fn table(config: &RegularizersConfig, rows: &[RegRow], dataset: &str) -> String {
    let anchors = dataset == "mnist";
    let mut md = String::from(
        "| method | test error (%) | train error (%) | gap (points) | largest unit norm |",
    );
    md.push_str(if anchors {
        " paper, MNIST (%) |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
    } else {
        "\n| --- | ---: | ---: | ---: | ---: |\n"
    });
    for r in rows.iter().filter(|r| r.dataset == dataset) {
        let _ = write!(
            md,
            "| {} | {} | {} | {} | {:.2} |",
            r.method.label(config),
            r.test_error.percent(),
            r.train_error.percent(),
            r.gap.points(),
            r.max_unit_norm
        );
        if anchors {
            let a = r.method.anchor().map_or("-".into(), |a| format!("{a:.2}"));
            let _ = write!(md, " {a} |");
        }
        md.push('\n');
    }
    md
}

fn plot(
    config: &RegularizersConfig,
    dataset: &str,
    runs: &[&RegRun],
) -> Result<Vec<u8>, ExperimentError> {
    let series: Vec<Series> = RegMethod::ALL
        .iter()
        .filter_map(|&method| {
            let these: Vec<&&RegRun> = runs.iter().filter(|r| r.method == method).collect();
            let len = these.iter().map(|r| r.test_error_curve.len()).min()?;
            let points = (1..len)
                .filter_map(|e| {
                    let v: Vec<f64> = these.iter().map(|r| r.test_error_curve[e]).collect();
                    MeanStd::of(&v).map(|m| (e as f64, m))
                })
                .collect();
            Some(Series {
                label: method.label(config),
                color: method.color(),
                dashed: !method.dropout(),
                points,
            })
        })
        .collect();
    line_plot_png(
        &PlotSpec {
            title: &format!("{dataset}: test error during training"),
            x_desc: "epoch",
            y_desc: "test error (%)",
            log_x: false,
            x_ticks: None,
            percent: true,
            markers: false,
            legend: Legend::UpperRight,
            size: (900, 560),
        },
        &series,
    )
}

fn markdown(results: &RegularizersResults, plots: &[(String, Vec<u8>)], wall_secs: f64) -> String {
    let c = &results.config;
    let o = &c.fit.optimizer;
    let mut md = String::new();
    let _ = writeln!(md, "# regularizers: dropout against L1, L2 and max-norm\n");
    let _ = writeln!(
        md,
        "ReLU MLP 784-{}-10; {:?} lr {} (momentum {}), {:?} schedule, batch {}, {} epochs; {} \
         seed(s) from {}. Error of the final model; the training error is measured in inference \
         mode on the whole training set. Penalties are added to the loss (`l1·Σ|w|`, `l2·Σw²`, \
         weights only); max-norm projects each unit's incoming weights after every step (the \
         last column shows the largest incoming-weight norm of any unit at the end). Wall \
         time {:.0} s (training {:.0} s).\n",
        c.hidden
            .iter()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join("-"),
        o.kind,
        o.lr,
        o.momentum,
        c.fit.schedule.kind,
        c.fit.batch_size,
        c.epochs,
        c.seeds,
        c.first_seed,
        wall_secs,
        results.runs.iter().map(|r| r.train_secs).sum::<f64>()
    );
    for (dataset, (png, _)) in c.datasets.iter().zip(plots) {
        let _ = writeln!(md, "## {dataset}\n\n{}", table(c, &results.rows, dataset));
        let _ = writeln!(md, "![{dataset} test error during training]({png})\n");
    }
    let _ = writeln!(
        md,
        "Paper: Srivastava et al. 2014, Table 9, MNIST with 784-1024-1024-2048-10 (SGD, long \
         training, hyper-parameters chosen on validation data)."
    );
    md
}
