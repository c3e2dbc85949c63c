//! Shared helpers of the integration tests: where the real data is, and skipping honestly.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

/// burn's random generator is one per process (burn-flex seeds it globally): tests that draw
/// at the same time take each other's numbers, and a seeded run stops being reproducible.
/// Tests that seed or compare runs hold this guard, so they run one at a time.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static GENERATOR: Mutex<()> = Mutex::new(());
    GENERATOR
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The development data folder: `$FLINT_DATA`, else `../shared/data` beside the checkout.
pub fn shared_data() -> PathBuf {
    std::env::var_os("FLINT_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data"))
}

/// Skips the calling test with a printed reason, or fails it when `FLINT_REQUIRE_DATA` is set
/// (CI sets it: there, missing data is a broken setup, not a reason to skip).
pub fn skip(reason: &str) {
    if std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Returns the value, or skips the test (returns from it) with the error as the reason.
#[macro_export]
macro_rules! or_skip {
    ($result:expr) => {
        match $result {
            Ok(value) => value,
            Err(e) => {
                common::skip(&e.to_string());
                return;
            }
        }
    };
}
