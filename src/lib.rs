pub use flint_data as data;
