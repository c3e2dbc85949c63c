//! `--pretrained FILE.safetensors --arch resnet18`: a torchvision ResNet state dict into flint's
//! definition, with the load report. The state dict is the `resnet18` ONNX fixture's
//! initializers (torchvision's keys, seeded random weights) written as safetensors; the
//! features must be the fixture's own, read at run time through its automatic cut.
//! Missing fixtures skip with a printed reason, or fail when `FLINT_REQUIRE_DATA=1`.

mod common;

use std::collections::HashMap;

use burn::module::Param;
use burn::tensor::{Device, Distribution, Tensor};
use common::{file_or_skip, models_dir};
use flint_layers::visit::{ParamPath, ParamVisitor, visit_params};
use flint_transfer::{Backbone, PretrainedOptions, load_pretrained, load_pretrained_with};
use safetensors::tensor::{Dtype, TensorView};

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

/// Every float tensor of the ONNX module by its (ONNX = torchvision) name, with its shape.
fn initializers(model: &flint_onnx::OnnxModel) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Collect(Vec<(String, Vec<usize>, Vec<f32>)>);
    impl ParamVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, path: ParamPath<'_>, p: &Param<Tensor<D>>) {
            let t = p.val();
            self.0
                .push((path.to_string(), t.dims().to_vec(), values(t)));
        }
    }
    let mut c = Collect(Vec::new());
    visit_params(model, &mut c);
    c.0.retain(|(name, _, _)| !name.ends_with("num_batches_tracked"));
    // A running statistic read through the visitor can be one update stale: take the synced
    // values.
    let stats: HashMap<String, Vec<f32>> = model
        .running_stats()
        .into_iter()
        .map(|(n, t)| (n, values(t)))
        .collect();
    for (name, _, v) in &mut c.0 {
        if let Some(s) = stats.get(name.as_str()) {
            v.clone_from(s);
        }
    }
    c.0
}

#[test]
fn a_torchvision_resnet18_state_dict_loads_with_arch() {
    let Some(onnx) = file_or_skip(models_dir().join("onnx-fixtures/resnet18.onnx")) else {
        return;
    };
    let device = Device::flex();
    let whole = flint_onnx::OnnxModel::load(&onnx, &device).unwrap();
    let tensors = initializers(&whole);
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, dims, _), b)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, dims.clone(), b).unwrap(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("resnet18-fixture.safetensors");
    std::fs::write(&file, safetensors::serialize(views, None).unwrap()).unwrap();
    let spec = file.to_str().unwrap();

    // Without --arch the file's architecture is unknown: the message says what to give.
    let e = load_pretrained(spec, &device)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("--arch"), "{e}");
    let options = |arch: &str| PretrainedOptions {
        arch: Some(arch.into()),
        ..Default::default()
    };
    let e = load_pretrained_with(spec, &options("resnet19"), &device)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("resnet19") && e.contains("resnet18"), "{e}");
    // The wrong depth: resnet34's extra blocks are missing from the file.
    let e = load_pretrained_with(spec, &options("resnet34"), &device)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("missing") && e.contains("layer"), "{e}");

    let p = load_pretrained_with(spec, &options("resnet18"), &device).unwrap();
    assert!(matches!(p.backbone, Backbone::ResNet(_)));
    assert_eq!(p.feature_dim, 512);
    let report = p.load_report.as_ref().unwrap();
    assert!(report.missing.is_empty(), "{report}");
    assert!(report.unused.is_empty(), "{report}");
    assert_eq!(p.source.as_ref().unwrap().arch.as_deref(), Some("resnet18"));

    // The same features and logits as the ONNX fixture.
    device.seed(1);
    let x = Tensor::<4>::random([2, 3, 64, 64], Distribution::Normal(0.0, 1.0), &device);
    let onnx_features = flint_onnx::OnnxModel::load(&onnx, &device)
        .unwrap()
        .cut(flint_onnx::CutPoint::Auto)
        .unwrap()
        .features;
    let expected: Tensor<2> = onnx_features.forward(x.clone());
    let ours = p.backbone.features(x.clone());
    let (a, b) = (values(ours.clone()), values(expected));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        err / scale < 1e-4,
        "features differ by {err} (scale {scale})"
    );
    let logits: Tensor<2> = whole.forward(x);
    let ours = p.classifier.unwrap().forward(ours);
    let (a, b) = (values(ours), values(logits));
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(err / scale < 1e-4, "logits differ by {err} (scale {scale})");
}
