//! flint-layers: the regularisation and normalisation toolbox PyTorch, torchvision and timm users
//! expect, on burn.
//!
//! Every stochastic layer follows burn's training rule ([`is_training`]): it acts as in training
//! only on an autodiff device with its `training` flag on, so `freeze()`, `freeze_group(..)` and
//! `valid()` behave the same for flint's layers as for burn's. Every dropout is inverted (scaled at
//! train time, the identity at inference).
//!
//! | flint | paper | PyTorch / Keras |
//! |---|---|---|
//! | [`Dropout`] | Srivastava et al. 2014 | `nn.Dropout` / `Dropout` |
//! | [`SpatialDropout`] | Tompson et al. 2015 | `nn.Dropout1d/2d/3d` / `SpatialDropout1D/2D` |
//! | [`AlphaDropout`], [`FeatureAlphaDropout`] | Klambauer et al. 2017 | `nn.AlphaDropout`, `nn.FeatureAlphaDropout` / `AlphaDropout` |
//! | [`GaussianDropout`] | Srivastava et al. 2014 §10 | — / `GaussianDropout` |
//! | [`DropConnect`] | Wan et al. 2013 | — |
//! | [`DropPath`], [`drop_path_rates`] | Huang et al. 2016 | `timm.layers.DropPath`, `torchvision.ops.StochasticDepth` |
//! | [`DropBlock2d`], [`LinearSchedule`] | Ghiasi et al. 2018 | `torchvision.ops.DropBlock2d` |
//! | [`mc_dropout_mode`], [`mc_dropout_predict`] | Gal & Ghahramani 2016 | — |
//! | [`BatchNorm`] | Ioffe & Szegedy 2015 | `nn.BatchNorm1d/2d/3d` / `BatchNormalization` |
//! | [`fuse_conv_bn`], [`fuse_linear_bn`] | — | `torch.ao.quantization.fuse_modules` |
//! | [`recalibrate_bn`] | Izmailov et al. 2018 | `torch.optim.swa_utils.update_bn` |
//! | [`MaxNorm`] | Srivastava et al. 2014 §5.1 | — / `constraints.MaxNorm` |
//! | [`WeightPenalty`] | — | `weight_decay` / `regularizers.L1L2` |
//!
//! The layers go into a model of your own like burn's: build each from its config, call
//! `forward`. On an autodiff device they train; `valid()` gives the inference model.
//!
//! ```
//! use burn::module::Module;
//! use burn::tensor::{Device, Distribution, Tensor};
//! use flint_layers::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig};
//!
//! #[derive(Module, Debug)]
//! struct Block {
//!     norm: BatchNorm,
//!     dropout: Dropout,
//! }
//!
//! let device = Device::flex().autodiff();
//! let block = Block {
//!     norm: BatchNormConfig::new(4).with_momentum(Some(0.1)).init(&device),
//!     dropout: DropoutConfig::new(0.5).init(),
//! };
//! let x = Tensor::<2>::random([64, 4], Distribution::Normal(3.0, 2.0), &device);
//!
//! // Training: batch statistics (mean 0 per feature), then inverted dropout (about half of
//! // the values zeroed, the rest doubled).
//! let y = block.dropout.forward(block.norm.forward(x.clone()));
//! let zeros: f32 = y.clone().equal_elem(0.0).float().mean().into_scalar();
//! assert!((0.3..0.7).contains(&zeros), "{zeros}");
//!
//! // Inference: dropout is the identity and batch norm uses its running statistics, which
//! // moved 10 % of the way towards the batch's mean (about 3) in that one training pass.
//! let eval = block.valid();
//! let x = x.inner();
//! let same = eval.dropout.forward(x.clone());
//! assert_eq!(same.into_data(), x.into_data());
//! let mean = eval.norm.running_mean.unwrap().value_sync().into_data().iter::<f32>().sum::<f32>() / 4.0;
//! assert!((0.2..0.4).contains(&mean), "{mean}");
//! ```

mod alpha_dropout;
mod batch_norm;
mod clamp;
mod conv;
mod drop_block;
mod drop_connect;
mod drop_path;
mod dropout;
mod error;
mod feature_alpha_dropout;
mod fuse;
mod gaussian_dropout;
mod linear;
mod max_norm;
mod max_pool;
mod mc_dropout;
mod mode;
mod penalty;
mod random;
mod recalibrate;
mod spatial_dropout;
#[cfg(test)]
mod test_util;
pub mod visit;

pub use alpha_dropout::{AlphaDropout, AlphaDropoutConfig, SELU_ALPHA_PRIME};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use clamp::{clamp, relu6};
pub use conv::{conv2d, conv2d_clamp};
/// burn's element-wise dropout is already the inverted dropout PyTorch users expect.
pub use drop_block::{DropBlock2d, DropBlock2dConfig, LinearSchedule};
pub use drop_connect::{DropConnect, DropConnectConfig};
pub use drop_path::{DropPath, DropPathConfig, drop_path_rates};
pub use dropout::{Dropout, DropoutConfig};
pub use error::LayerConfigError;
pub use feature_alpha_dropout::{FeatureAlphaDropout, FeatureAlphaDropoutConfig};
pub use fuse::{InferenceAffine, fuse_conv_bn, fuse_linear_bn};
pub use gaussian_dropout::{GaussianDropout, GaussianDropoutConfig};
pub use linear::linear;
pub use max_norm::{MaxNorm, MaxNormConfig, MaxNormLayers, UnitWeights};
pub use max_pool::{MaxPool2d, MaxPool2dConfig};
pub use mc_dropout::{McDropoutPrediction, mc_dropout_mode, mc_dropout_predict};
pub use mode::is_training;
pub use penalty::WeightPenalty;
pub use recalibrate::{BatchNormLayers, recalibrate_bn};
pub use spatial_dropout::{SpatialDropout, SpatialDropoutConfig};
