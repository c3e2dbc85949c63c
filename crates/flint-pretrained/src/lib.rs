//! flint's pretrained networks, turned from ONNX into burn modules at build time.
//!
//! [`catalog::CATALOG`] lists every file flint knows, with the SHA-256 it was checked against;
//! a file of that name with other contents is refused rather than compiled in.
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
