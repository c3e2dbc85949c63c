//! flint's pretrained networks, turned from ONNX into burn modules at build time.

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
