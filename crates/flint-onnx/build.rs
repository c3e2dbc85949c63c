//! With the `build-time-reference` feature, sets `flint_model_<name>` when flint-pretrained's
//! build (its `codegen` feature) compiles that ImageNet network in, so the benchmark and tests
//! compare the run-time module with the build-time one when it exists. Without the feature it
//! reads no file and sets nothing.
//!
//! flint-pretrained is only a dev-dependency here and cargo passes `links` metadata
//! (`DEP_FLINT_PRETRAINED_MODELS`) to normal dependents only, so the same search is repeated:
//! flint-pretrained's catalogue, folders and checksums (`catalog.rs`, shared by path as its own
//! build script does).

const MODELS: &[(&str, &str)] = &[
    ("mobilenetv2.onnx", "mobilenetv2"),
    ("efficientnet-lite0.onnx", "efficientnet_lite0"),
];

#[cfg(not(feature = "build-time-reference"))]
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for (_, module) in MODELS {
        println!("cargo::rustc-check-cfg=cfg(flint_model_{module})");
    }
}

#[cfg(feature = "build-time-reference")]
#[path = "../flint-pretrained/src/catalog.rs"]
#[allow(dead_code)]
mod catalog;

#[cfg(feature = "build-time-reference")]
fn main() {
    use sha2::{Digest, Sha256};
    use std::path::PathBuf;

    println!("cargo:rerun-if-env-changed=FLINT_MODELS");
    println!("cargo:rerun-if-changed=../flint-pretrained/src/catalog.rs");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest.join("../..").canonicalize().unwrap_or(manifest);
    let dirs = catalog::model_dirs(
        std::env::var_os("FLINT_MODELS").as_deref(),
        &workspace,
        dirs::cache_dir(),
    );
    for (file, module) in MODELS {
        println!("cargo::rustc-check-cfg=cfg(flint_model_{module})");
        let Some(entry) = catalog::catalog_file(file) else {
            continue;
        };
        // The first folder holding the file decides. flint-pretrained looks further past a file
        // with another checksum: that case skips the tests here, never compiles a missing module.
        let found = dirs
            .iter()
            .find_map(|(dir, _)| std::fs::read(dir.join(file)).ok());
        if found.is_some_and(|bytes| format!("{:x}", Sha256::digest(&bytes)) == entry.sha256) {
            println!("cargo:rustc-cfg=flint_model_{module}");
        }
    }
}
