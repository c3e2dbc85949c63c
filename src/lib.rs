//! flint: regularisation layers, reference models, offline-first data and transfer learning on
//! burn. This facade re-exports the member crates; depend on them one by one if you prefer.
//!
//! ```
//! use flint::layers::DropoutConfig;
//! use flint::models::{CnnConfig, ModelConfig};
//! use burn::tensor::{Device, Tensor};
//!
//! let device = Device::flex();
//! let model = ModelConfig::Cnn(CnnConfig::reference()).init(&device);
//! let logits = DropoutConfig::new(0.5).init().forward(model.forward(Tensor::zeros([1, 1, 28, 28], &device)));
//! assert_eq!(logits.dims(), [1, 10]);
//! ```

pub use flint_data as data;
pub use flint_layers as layers;
pub use flint_models as models;
pub use flint_train as train;
pub use flint_transfer as transfer;
