//! flint's reproducible experiments: each one a configuration (`#[derive(Config)]`, saved with
//! its results), a function that runs it into an output directory, and the tables, plots and raw
//! JSON it writes there. `flint experiment <name>` and `cargo xtask experiment <name>` run them.
//!
//! - [`transfer`]: protocol T2 of `reference.md`, Fashion-MNIST classes 0-4 to 5-9 with 10, 50 or
//!   100 labelled images per class: from scratch, frozen backbone and full fine-tuning, each with
//!   and without dropout in the head.
//! - [`batchnorm`]: convergence with and without batch normalisation (Ioffe & Szegedy 2015,
//!   Figure 1).
//! - [`dropout_rate`]: the dropout rate chosen by k-fold cross-validation.
//! - [`mc_dropout`]: MC-dropout against weight scaling, with calibration (Srivastava et al.
//!   2014, Figure 11).
//! - [`regularizers`]: dropout against L1, L2 and max-norm (Srivastava et al. 2014, Table 9).
//! - [`small_data`]: dropout as the training set shrinks (Srivastava et al. 2014, Figure 10).
//!
//! Each experiment reports its repeated runs through [`stats::MeanStd`]: mean, sample standard
//! deviation (n - 1, as PyTorch's and NumPy's `ddof=1`), minimum and maximum.
//!
//! ```
//! use flint_experiments::stats::MeanStd;
//!
//! let accuracies = [0.912, 0.918, 0.915];
//! let summary = MeanStd::of(&accuracies).unwrap();
//! assert!((summary.mean - 0.915).abs() < 1e-12);
//! assert!((summary.std - 0.003).abs() < 1e-12);
//! assert_eq!((summary.min, summary.max), (0.912, 0.918));
//! assert!(MeanStd::of(&[]).is_none());
//! ```

pub mod batchnorm;
pub mod dropout_rate;
pub mod error;
pub mod fit;
pub mod mc_dropout;
pub mod output;
pub mod plot;
pub mod regularizers;
pub mod small_data;
pub mod stats;
pub mod transfer;

pub use batchnorm::{BatchNormExperimentConfig, BatchNormResults, run_batchnorm};
pub use dropout_rate::{CvModel, DropoutRateConfig, DropoutRateResults, run_dropout_rate};
pub use error::ExperimentError;
pub use mc_dropout::{McDropoutConfig, McDropoutResults, run_mc_dropout};
pub use regularizers::{RegularizersConfig, RegularizersResults, run_regularizers};
pub use small_data::{SmallDataConfig, SmallDataResults, run_small_data};
pub use transfer::{
    Approach, Method, RunResult, SourceResult, TransferExperimentConfig, TransferResults,
    run_transfer_experiment, run_transfer_experiment_on,
};

use std::path::Path;

use burn::tensor::Device;
use flint_data::Locator;

/// What the command line needs of an experiment (all but T2, which has its own flags): a name,
/// a quick mode, a seed count and a run into an output folder.
pub trait Experiment: burn::config::Config + Clone {
    /// The command name (`flint experiment <NAME>`) and default output folder `runs/<NAME>`.
    const NAME: &'static str;
    /// The full configuration of the README's results.
    fn full() -> Self;
    /// A seconds-long smoke version (tests, `--quick`): checks the pipeline, not a result.
    fn quick() -> Self;
    /// Sets the number of seeds (an error where the experiment has no such number).
    fn set_seeds(&mut self, seeds: usize) -> Result<(), ExperimentError>;
    /// Checks the configuration.
    fn check(&self) -> Result<(), ExperimentError>;
    /// Runs into `out_dir`, reporting a line per finished run.
    fn run_into(
        &self,
        locator: &Locator,
        out_dir: &Path,
        device: &Device,
        progress: &mut dyn FnMut(&str),
    ) -> Result<output::Written, ExperimentError>;
}

/// Implements [`Experiment`] for a configuration with `new()` (full), `quick()` and
/// `validate()`, run by `$run`; `$seeds` is how `--seeds` applies.
macro_rules! experiment {
    ($config:ty, $name:literal, $run:path, |$c:ident, $n:ident| $seeds:expr) => {
        impl Experiment for $config {
            const NAME: &'static str = $name;
            fn full() -> Self {
                Self::new()
            }
            fn quick() -> Self {
                <$config>::quick()
            }
            fn set_seeds(&mut self, $n: usize) -> Result<(), ExperimentError> {
                let $c = self;
                $seeds
            }
            fn check(&self) -> Result<(), ExperimentError> {
                self.validate()
            }
            fn run_into(
                &self,
                locator: &Locator,
                out_dir: &Path,
                device: &Device,
                progress: &mut dyn FnMut(&str),
            ) -> Result<output::Written, ExperimentError> {
                $run(self, locator, out_dir, device, progress)?
                    .written
                    .ok_or_else(|| {
                        ExperimentError::Invalid("the experiment wrote no results".into())
                    })
            }
        }
    };
}

experiment!(SmallDataConfig, "small-data", run_small_data, |c, n| {
    c.seeds = n;
    Ok(())
});
experiment!(
    RegularizersConfig,
    "regularizers",
    run_regularizers,
    |c, n| {
        c.seeds = n;
        Ok(())
    }
);
// One trained network per data set; the seeds are the MC repeats.
experiment!(McDropoutConfig, "mc-dropout", run_mc_dropout, |c, n| {
    c.repeats = n;
    Ok(())
});
experiment!(
    BatchNormExperimentConfig,
    "batchnorm",
    run_batchnorm,
    |c, n| {
        c.seeds = n;
        Ok(())
    }
);
// One seed; the folds give the spread.
experiment!(
    DropoutRateConfig,
    "dropout-rate",
    run_dropout_rate,
    |c, n| {
        let _ = (c, n);
        Err(ExperimentError::Invalid(
            "dropout-rate has no --seeds: the spread comes from its folds (set `folds` or `seed` \
         in a --config file)"
                .into(),
        ))
    }
);
