//! flint: regularisation layers, reference models, offline-first data and transfer learning on
//! burn. This facade re-exports the member crates; depend on them one by one if you prefer.

pub use flint_data as data;
pub use flint_layers as layers;
pub use flint_models as models;
pub use flint_train as train;
pub use flint_transfer as transfer;
