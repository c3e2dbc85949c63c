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

mod alpha_dropout;
mod batch_norm;
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
pub mod visit;
#[cfg(test)]
mod test_util;

pub use alpha_dropout::{AlphaDropout, AlphaDropoutConfig, SELU_ALPHA_PRIME};
pub use batch_norm::{BatchNorm, BatchNormConfig};
pub use conv::conv2d;
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
