//! flint's pretrained files: the catalogue, and (opt-in) burn modules generated from the ONNX
//! ones at build time.
//!
//! [`catalog::CATALOG`] lists every file flint knows, with the SHA-256 it was checked against;
//! flint-transfer finds files through it, and a file of that name with other contents is
//! refused. The catalogue is always available and needs no model file to build.
//!
//! # What is generated, and when
//!
//! flint reads ONNX networks at run time with flint-onnx, so a normal build of this crate reads
//! no model file and generates nothing: [`BUILD_STATUS`] then says, for each ONNX network, that
//! it was not compiled in.
//!
//! With the `codegen` cargo feature (off by default; flint-onnx's `build-time-reference`
//! feature turns it on for the benchmark and tests that compare the run-time module with the
//! generated one), the build script looks for `mobilenetv2.onnx`, `efficientnet-lite0.onnx` and
//! `mnist-cnn-bn.onnx` in `$FLINT_MODELS`, `<workspace>/models` and `~/.cache/flint/models`,
//! checks each against its SHA-256 and turns it into Rust with burn-onnx's `ModelGen`: modules
//! `mobilenetv2`, `efficientnet_lite0` (each cut before its final `Gemm`, with the classifier's
//! weights in `CLASSIFIER`) and `mnist_cnn_bn`, each compiled only when its file was found
//! (the `flint_model_<name>` cfgs, also passed to dependents as `DEP_FLINT_PRETRAINED_MODELS`).
//! That build takes minutes and reruns whenever `FLINT_MODELS` changes.
//!
//! ```
//! use flint_pretrained::catalog::{CATALOG, catalog_file};
//!
//! let entry = catalog_file("mobilenetv2.onnx").expect("catalogued");
//! assert_eq!(entry.sha256.len(), 64);
//! assert!(CATALOG.iter().all(|f| f.sha256.chars().all(|c| c.is_ascii_hexdigit())));
//! ```

pub mod catalog;

include!(concat!(env!("OUT_DIR"), "/build_status.rs"));

#[cfg(flint_model_mobilenetv2)]
#[allow(clippy::all, unused)]
pub mod mobilenetv2 {
    include!(concat!(env!("OUT_DIR"), "/models/mobilenetv2.rs"));
    include!(concat!(
        env!("OUT_DIR"),
        "/models/mobilenetv2_classifier.rs"
    ));
}
#[cfg(flint_model_efficientnet_lite0)]
#[allow(clippy::all, unused)]
pub mod efficientnet_lite0 {
    include!(concat!(env!("OUT_DIR"), "/models/efficientnet_lite0.rs"));
    include!(concat!(
        env!("OUT_DIR"),
        "/models/efficientnet_lite0_classifier.rs"
    ));
}
#[cfg(flint_model_mnist_cnn_bn)]
#[allow(clippy::all, unused)]
pub mod mnist_cnn_bn {
    include!(concat!(env!("OUT_DIR"), "/models/mnist_cnn_bn.rs"));
}
