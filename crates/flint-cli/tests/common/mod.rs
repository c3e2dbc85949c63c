//! Helpers shared by the CLI test binaries (each uses some of them).

#![allow(dead_code)]

/// Whether CI asked for every data set to be present (`FLINT_REQUIRE_DATA=1`).
pub fn data_required() -> bool {
    std::env::var_os("FLINT_REQUIRE_DATA").is_some_and(|v| !v.is_empty() && v != "0")
}

/// Skips with a printed reason, or fails when data is required.
pub fn skip(reason: &str) {
    if data_required() {
        panic!("required data is missing: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

/// Whether the data set is on the machine (offline discovery); skips or fails otherwise.
pub fn available(spec: &flint_data::DatasetSpec) -> bool {
    match flint_data::Locator::new().offline().find(spec) {
        Ok(_) => true,
        Err(e) => {
            skip(&e.to_string());
            false
        }
    }
}

/// `name` in the model folder (`$FLINT_MODELS`, else `../shared/models`), or `None` after a
/// skip naming it.
pub fn model_file(name: &str) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("FLINT_MODELS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/models")
        });
    let path = dir.join(name);
    if path.is_file() {
        Some(path)
    } else {
        skip(&format!("{} is missing; set FLINT_MODELS", path.display()));
        None
    }
}
