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
//!
//! ```
//! use flint_io::fs::{read_regular, sha256_file, write_atomic};
//!
//! let dir = std::env::temp_dir().join(format!("flint-io-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("weights.bin");
//! // Written under a temporary name, then renamed: a reader never sees half a file.
//! write_atomic(&path, b"abc")?;
//! assert_eq!(read_regular(&path, 1024)?, b"abc");
//! assert_eq!(
//!     sha256_file(&path)?,
//!     "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
//! );
//! // A directory, a FIFO or a device is refused by name, not read.
//! let err = read_regular(&dir, 1024).unwrap_err();
//! assert!(err.to_string().contains("not a regular file"), "{err}");
//! std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod fs;
pub mod seed;
pub mod stamp;

pub use fs::FsError;
