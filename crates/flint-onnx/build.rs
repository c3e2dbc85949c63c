//! Turns the list of ONNX models flint-pretrained compiled in into `flint_model_<name>` cfgs, so
//! the tests can compare the run-time module with the build-time one when it exists.

fn main() {
    const KNOWN: &[&str] = &["mobilenetv2", "efficientnet_lite0"];
    for m in KNOWN {
        println!("cargo::rustc-check-cfg=cfg(flint_model_{m})");
    }
    let compiled = std::env::var("DEP_FLINT_PRETRAINED_MODELS").unwrap_or_default();
    for m in compiled.split(',').filter(|m| KNOWN.contains(m)) {
        println!("cargo:rustc-cfg=flint_model_{m}");
    }
}
