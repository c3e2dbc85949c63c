//! Transfer learning for flint: take a network pretrained elsewhere and reuse it on a small
//! new data set.
//!
//! - Weights in: any ONNX file read at run time into a trainable burn module (flint-onnx) and
//!   cut before its classifier ([`onnx`]; the catalogue's `mobilenetv2` and
//!   `efficientnet-lite0` are such files), and PyTorch / safetensors files loaded into flint's
//!   own definitions ([`load_weights`], with a report of what was loaded, missing and unused).
//! - Reuse: a [`Backbone`] with a new [`Head`] ([`TransferModel`]), freezing and unfreezing by
//!   name pattern ([`freeze`]), per-group learning rates and gradual unfreezing
//!   ([`finetune`]), cached feature extraction ([`cache`]).
//!
//! ```no_run
//! use flint_transfer::{FinetuneConfig, FinetuneOptions, Strategy, finetune};
//!
//! let config = FinetuneConfig::new("mobilenetv2".into(), "hymenoptera_data".into())
//!     .with_strategy(Strategy::FeatureExtract);
//! let outcome = finetune(&config, &FinetuneOptions::default())?;
//! println!("val accuracy: {:.4}", outcome.best.0);
//! # Ok::<(), flint_transfer::TransferError>(())
//! ```
//!
//! Freezing works by parameter name on any burn module, as `requires_grad_(False)` does in
//! PyTorch:
//!
//! ```
//! use burn::module::Module;
//! use burn::nn::{Linear, LinearConfig};
//! use burn::tensor::Device;
//! use flint_transfer::freeze::{freeze, parameters};
//!
//! #[derive(Module, Debug)]
//! struct Net {
//!     backbone: Linear,
//!     head: Linear,
//! }
//!
//! let device = Device::flex().autodiff();
//! let net = Net {
//!     backbone: LinearConfig::new(8, 4).init(&device),
//!     head: LinearConfig::new(4, 2).init(&device),
//! };
//! let net = freeze(net, r"^backbone\.")?;
//! for p in parameters(&net) {
//!     assert_eq!(p.trainable, p.path.starts_with("head."), "{}", p.path);
//! }
//! // A pattern that matches nothing is an error, not a silent no-op.
//! assert!(freeze(net, "^encoder").is_err());
//! # Ok::<(), flint_transfer::TransferError>(())
//! ```

pub mod backbone;
pub mod cache;
pub mod error;
pub mod finetune;
pub mod freeze;
pub mod load;
pub mod model;
pub mod onnx;
pub mod pretrained;

pub use backbone::{Backbone, InputSpec, NormalizeSpec};
pub use cache::{CacheKey, CacheStatus, FeatureCache, Features, Stale};
pub use error::TransferError;
pub use finetune::{
    FinetuneConfig, FinetuneOptions, FinetuneOutcome, RunConfig, Strategy, TransferData, finetune,
    finetune_on, is_finetune_run, load_finetuned, load_image, load_image_checked,
};
pub use load::{LoadOptions, LoadReport, load_weights};
pub use model::{Head, TransferModel};
pub use onnx::{OnnxBackbone, OnnxOptions};
pub use pretrained::{
    ModelEntry, Pretrained, PretrainedOptions, SourceRecord, Unavailable, available,
    load_pretrained, load_pretrained_with,
};
