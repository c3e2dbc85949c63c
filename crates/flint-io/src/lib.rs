//! flint-io: the few file and seed primitives every flint crate needs, written once.
//!
//! - [`fs`]: reading only regular files and never more bytes than they have
//!   ([`fs::open_regular`], [`fs::read_regular`]), atomic writes ([`fs::write_atomic`]) and
//!   streamed SHA-256 ([`fs::sha256_file`]).
//! - [`seed`]: independent seeds derived from a run's seed ([`seed::derive_seed`]).
//! - [`stamp`]: the name of a new run folder ([`stamp::run_dir`]), from the UTC time.
//!
//! It sits below every other flint crate and depends on nothing of burn, so data loading,
//! checkpoints, fine-tuning and the experiments share one implementation of each (and one error
//! message for each failure) instead of a copy per crate.

pub mod fs;
pub mod seed;
pub mod stamp;

pub use fs::FsError;
