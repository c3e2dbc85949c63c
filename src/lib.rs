pub use flint_data as data;
pub use flint_layers as layers;
