//! `flint experiment`: flint's reproducible experiments (crate `flint-experiments`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use flint_experiments::{
    BatchNormExperimentConfig, DropoutRateConfig, Experiment, McDropoutConfig, RegularizersConfig,
    SmallDataConfig, TransferExperimentConfig,
};

use crate::ComputeArgs;

/// `flint experiment`.
#[derive(Args, Debug)]
pub struct ExperimentArgs {
    /// Which experiment.
    #[command(subcommand)]
    pub experiment: ExperimentCommand,
}

/// The experiments.
#[derive(Subcommand, Debug)]
pub enum ExperimentCommand {
    /// Protocol T2 of reference.md: Fashion-MNIST classes 0-4 -> 5-9 with N labelled images per
    /// class; from scratch, frozen backbone and fine-tuning, with and without head dropout.
    /// Writes results.md, results.json and transfer.png; the last line is results.md's path.
    Transfer(Box<TransferArgs>),
    /// Test accuracy with and without dropout as the training set shrinks (100 ... 60,000
    /// MNIST images; Srivastava et al. 2014, Figure 10). Writes results.md, results.json and
    /// small-data.png.
    SmallData(CommonArgs),
    /// Srivastava et al. 2014, Table 9: an MLP with no regularisation, L2, L1, max-norm,
    /// dropout, dropout + L2, dropout + max-norm on MNIST and Fashion-MNIST; test error and
    /// train/test gap. Writes results.md, results.json and a test-error plot per data set.
    Regularizers(CommonArgs),
    /// MC-dropout with k = 1 ... 100 samples against weight scaling: accuracy, NLL, expected
    /// calibration error and a reliability diagram (Srivastava et al. 2014, Figure 11).
    /// --seeds sets the number of MC repeats.
    McDropout(CommonArgs),
    /// Ioffe & Szegedy 2015, Figure 1: a sigmoid MLP 784-100-100-100-10 on MNIST (batch 60)
    /// without BN, with BN, and with BN at 5x the learning rate; steps to 95 % / 97 % test
    /// accuracy and the curves; also the reference CNN with and without BN.
    Batchnorm(CommonArgs),
    /// k-fold cross-validation over dropout rates p = 0 ... 0.6 for the reference MLP and CNN
    /// on Fashion-MNIST: validation accuracy against p with error bars, the selected p and its
    /// test accuracy. (One seed; the folds give the spread, so it takes no --seeds.)
    DropoutRate(CommonArgs),
}

/// The flags every experiment but `transfer` takes; everything else is in its configuration
/// (write one with `--quick` or a full run, edit `experiment.json`, pass it with `--config`).
#[derive(Args, Debug)]
pub struct CommonArgs {
    /// A seconds-long smoke run on small subsets: checks the pipeline, not a result.
    #[arg(long)]
    pub quick: bool,
    /// Output folder (default runs/<experiment>, or runs/<experiment>-quick). Rerunning with
    /// the same configuration reuses the finished runs in it.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// A configuration JSON (e.g. a previous experiment.json); --seeds overrides its value.
    #[arg(long, conflicts_with = "quick")]
    pub config: Option<PathBuf>,
    /// Number of seeds.
    #[arg(long)]
    pub seeds: Option<usize>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// `flint experiment transfer`.
#[derive(Args, Debug)]
pub struct TransferArgs {
    /// A seconds-long smoke run (N = 10, one seed, tiny subsets): checks the pipeline, not a
    /// result. Other flags override its values.
    #[arg(long)]
    pub quick: bool,
    /// Output folder (default runs/transfer, or runs/transfer-quick). Rerunning with the same
    /// configuration reuses the finished runs in it.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// A configuration JSON (e.g. a previous experiment.json); flags override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of seeds.
    #[arg(long)]
    pub seeds: Option<usize>,
    /// First seed.
    #[arg(long)]
    pub first_seed: Option<u64>,
    /// Labelled target images per class (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub shots: Option<Vec<usize>>,
    /// Source training epochs.
    #[arg(long)]
    pub source_epochs: Option<usize>,
    /// Train the source model on this many images only.
    #[arg(long)]
    pub source_limit: Option<usize>,
    /// One source model for all seeds (default: one per seed).
    #[arg(long)]
    pub shared_source: bool,
    /// Target training epochs (every method).
    #[arg(long)]
    pub target_epochs: Option<usize>,
    /// Target batch size.
    #[arg(long)]
    pub target_batch_size: Option<usize>,
    /// Learning rate (the head's; Adam).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Fine-tuning: the backbone's learning rate as a fraction of the head's.
    #[arg(long)]
    pub backbone_lr_factor: Option<f64>,
    /// Dropout rate of the heads with dropout.
    #[arg(long)]
    pub head_dropout: Option<f64>,
    /// Evaluate on this many test images only.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Keep every target run's checkpoints (about 8 MB each).
    #[arg(long)]
    pub keep_checkpoints: bool,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

impl TransferArgs {
    /// The configuration these flags describe.
    pub fn to_config(&self) -> Result<TransferExperimentConfig, String> {
        let mut c = match &self.config {
            Some(path) => flint_train::config::load_strict(path).map_err(|e| e.to_string())?,
            None if self.quick => TransferExperimentConfig::quick(),
            None => TransferExperimentConfig::new(),
        };
        if let Some(v) = self.seeds {
            c.seeds = v;
        }
        if let Some(v) = self.first_seed {
            c.first_seed = v;
        }
        if let Some(v) = &self.shots {
            c.shots = v.clone();
        }
        if let Some(v) = self.source_epochs {
            c.source_epochs = v;
        }
        if let Some(v) = self.source_limit {
            c.source_limit = Some(v);
        }
        if self.shared_source {
            c.shared_source = true;
        }
        if let Some(v) = self.target_epochs {
            c.target_epochs = v;
        }
        if let Some(v) = self.target_batch_size {
            c.target_batch_size = v;
        }
        if let Some(v) = self.lr {
            c.optimizer.lr = v;
        }
        if let Some(v) = self.backbone_lr_factor {
            c.backbone_lr_factor = v;
        }
        if let Some(v) = self.head_dropout {
            c.head_dropout = v;
        }
        if let Some(v) = self.test_limit {
            c.test_limit = Some(v);
        }
        if self.keep_checkpoints {
            c.keep_checkpoints = true;
        }
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// Runs `flint experiment`.
pub fn run_experiment(args: &ExperimentArgs) -> Result<(), String> {
    match &args.experiment {
        ExperimentCommand::Transfer(args) => run_transfer(args),
        ExperimentCommand::SmallData(args) => run_common::<SmallDataConfig>(args),
        ExperimentCommand::Regularizers(args) => run_common::<RegularizersConfig>(args),
        ExperimentCommand::McDropout(args) => run_common::<McDropoutConfig>(args),
        ExperimentCommand::Batchnorm(args) => run_common::<BatchNormExperimentConfig>(args),
        ExperimentCommand::DropoutRate(args) => run_common::<DropoutRateConfig>(args),
    }
}

/// Runs one of the experiments that take [`CommonArgs`].
fn run_common<C: Experiment>(args: &CommonArgs) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => flint_train::config::load_strict(path).map_err(|e| e.to_string())?,
        None if args.quick => C::quick(),
        None => C::full(),
    };
    if let Some(seeds) = args.seeds {
        config.set_seeds(seeds).map_err(|e| e.to_string())?;
    }
    config.check().map_err(|e| e.to_string())?;
    let device = args.compute.setup()?;
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(if args.quick {
            format!("{}-quick", C::NAME)
        } else {
            C::NAME.to_string()
        })
    });
    eprintln!("experiment {} -> {}", C::NAME, output.display());
    let written = config
        .run_into(&args.compute.locator(), &output, &device, &mut |line| {
            eprintln!("{line}")
        })
        .map_err(|e| e.to_string())?;
    eprintln!(
        "done in {:.0} s; plots {}; raw results {}",
        written.wall_secs,
        written
            .plots
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        written.results_json.display()
    );
    println!("{}", written.results_md.display());
    Ok(())
}

fn run_transfer(args: &TransferArgs) -> Result<(), String> {
    let config = args.to_config()?;
    let device = args.compute.setup()?;
    let output = args.output.clone().unwrap_or_else(|| {
        PathBuf::from("runs").join(if args.quick {
            "transfer-quick"
        } else {
            "transfer"
        })
    });
    let locator = args.compute.locator();
    let train =
        flint_data::fashion_mnist(flint_data::Split::Train, &locator).map_err(|e| e.to_string())?;
    let test =
        flint_data::fashion_mnist(flint_data::Split::Test, &locator).map_err(|e| e.to_string())?;
    eprintln!(
        "experiment transfer: {} seed(s), N = {:?}, {} source / {} target epochs -> {}",
        config.seeds,
        config.shots,
        config.source_epochs,
        config.target_epochs,
        output.display()
    );
    let results = flint_experiments::run_transfer_experiment_on(
        &config,
        &train,
        &test,
        &output,
        &device,
        &mut |line| eprintln!("{line}"),
    )
    .map_err(|e| e.to_string())?;
    eprintln!(
        "done in {:.0} s; plot {}, raw results {}",
        results.wall_secs,
        results.plot_png.display(),
        results.results_json.display()
    );
    println!("{}", results.results_md.display());
    Ok(())
}
