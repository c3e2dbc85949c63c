//! flint's reproducible experiments: each one a configuration (`#[derive(Config)]`, saved with
//! its results), a function that runs it into an output directory, and the tables, plots and raw
//! JSON it writes there. `flint experiment <name>` and `cargo xtask experiment <name>` run them.
//!
//! - [`transfer`]: protocol T2 of `reference.md`, Fashion-MNIST classes 0-4 to 5-9 with 10, 50 or
//!   100 labelled images per class: from scratch, frozen backbone and full fine-tuning, each with
//!   and without dropout in the head.

pub mod error;
pub mod fit;
pub mod output;
pub mod plot;
pub mod stats;
pub mod transfer;

pub use error::ExperimentError;
pub use transfer::{
    Approach, Method, RunResult, SourceResult, TransferExperimentConfig, TransferResults,
    run_transfer_experiment, run_transfer_experiment_on,
};
