//! Every reference gradient of the fixtures, computed by flint in f64: within 1e-4 of the
//! reference, or shown by a central difference of the f64 loss to be the derivative where the
//! reference is not (`flint_onnx::parity::recheck`). In f64 no ReLU or max-pooling decision is
//! within rounding of its kink, so the f32 differences that such a decision causes (see
//! `fixtures.rs`) disappear while a wrong operator would not.
//!
//! flex's float type is set once per process before any tensor exists: this file is a test
//! binary of its own, and every test goes through [`f64_device`] first.

mod common;

use std::sync::OnceLock;

use burn::tensor::{Device, FloatDType};
use common::{file_or_skip, models_dir};
use flint_onnx::parity::{self, TOLERANCE};

fn f64_device() -> Device {
    static CONFIGURED: OnceLock<()> = OnceLock::new();
    CONFIGURED.get_or_init(|| {
        Device::flex()
            .configure(FloatDType::F64)
            .expect("flex computes in f64");
    });
    Device::flex()
}

fn fixture(name: &str) {
    let device = f64_device();
    let dir = models_dir().join("onnx-fixtures");
    let (Some(onnx), Some(reference)) = (
        file_or_skip(dir.join(format!("{name}.onnx"))),
        file_or_skip(dir.join(format!("{name}.reference.safetensors"))),
    ) else {
        return;
    };
    let names: Vec<String> = parity::Reference::read(&reference)
        .unwrap()
        .keys("grad.")
        .iter()
        .map(|k| k["grad.".len()..].to_string())
        .collect();
    assert!(names.len() >= 5, "{name}: {} gradients", names.len());
    let rechecks = parity::recheck(&onnx, &reference, &names, &device).unwrap();
    assert_eq!(
        rechecks.len(),
        names.len(),
        "{name}: every gradient rechecked"
    );
    for r in &rechecks {
        println!("{name} {}: f64 {:e} {:?}", r.name, r.error, r.slopes);
        assert!(
            r.clears_flint(),
            "{name}: gradient of {}: {:e} > {TOLERANCE:e} in f64, central difference {:?}",
            r.name,
            r.error,
            r.slopes
        );
    }
}

#[test]
fn resnet18() {
    fixture("resnet18");
}

#[test]
fn squeezenet1_1() {
    fixture("squeezenet1_1");
}

#[test]
fn mobilenet_v3_small() {
    fixture("mobilenet_v3_small");
}
