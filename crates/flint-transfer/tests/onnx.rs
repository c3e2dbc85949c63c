//! ONNX files as backbones through the run-time path: a small two-block CNN written here (conv,
//! batch norm, ReLU twice, pooling, a `Gemm` classifier, torchvision-style names) is cut, its
//! classifier kept as a linear layer, and fine-tuned with all three strategies through the
//! engine; the run is read back from the same file, and a changed or missing file is refused.
//! The catalogue's MobileNetV2 gives the same logits by name and by path.

mod common;

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Distribution, Tensor};
use common::{file_or_skip, models_dir};
use flint_transfer::finetune::backbone_groups;
use flint_transfer::freeze::{self, parameters};
use flint_transfer::{
    Backbone, FinetuneConfig, FinetuneOptions, Head, PretrainedOptions, Strategy, TransferData,
    TransferModel, finetune_on, load_finetuned, load_pretrained, load_pretrained_with,
};
use onnx_ir::{
    AttributeProto, AttributeType, GraphProto, Message, ModelProto, NodeProto, TensorProto,
    TypeProto, ValueInfoProto,
};

fn node(
    name: &str,
    op: &str,
    inputs: &[&str],
    output: &str,
    attrs: Vec<AttributeProto>,
) -> NodeProto {
    let mut n = NodeProto::new();
    n.name = name.into();
    n.op_type = op.into();
    n.input = inputs.iter().map(|s| s.to_string()).collect();
    n.output = vec![output.into()];
    n.attribute = attrs;
    n
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INTS.into();
    a.ints = v.to_vec();
    a
}

fn int(name: &str, v: i64) -> AttributeProto {
    let mut a = AttributeProto::new();
    a.name = name.into();
    a.type_ = AttributeType::INT.into();
    a.i = v;
    a
}

fn weight(name: &str, dims: &[i64], seed: f32) -> TensorProto {
    let count: i64 = dims.iter().product();
    let mut t = TensorProto::new();
    t.name = name.into();
    t.dims = dims.to_vec();
    t.data_type = 1;
    t.float_data = (0..count)
        .map(|i| 0.3 * (i as f32 * 0.7 + seed).sin())
        .collect();
    t
}

fn value_info(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
    let mut v = ValueInfoProto::new();
    v.name = name.into();
    // The nested protobuf types are not exported: reach them through their parents.
    let mut shape = onnx_ir::TensorShapeProto::new();
    for d in dims {
        shape.dim.push(Default::default());
        let dim = shape.dim.last_mut().unwrap();
        match d {
            Some(n) => dim.set_dim_value(*n),
            None => dim.set_dim_param("batch".into()),
        }
    }
    let mut ty = TypeProto::new();
    let tensor = ty.mut_tensor_type();
    tensor.elem_type = 1;
    tensor.shape = Some(shape).into();
    v.type_ = Some(ty).into();
    v
}

/// Two conv + batch norm + ReLU blocks on `[batch, 3, 8, 8]`, pooling, a 6-to-5 classifier.
fn small_cnn() -> ModelProto {
    let pads = || vec![ints("pads", &[1, 1, 1, 1])];
    let bn = |i: &str, x: &str, y: &str| {
        let names: Vec<String> = ["weight", "bias", "running_mean", "running_var"]
            .iter()
            .map(|n| format!("features.{i}.{n}"))
            .collect();
        let inputs: Vec<&str> = std::iter::once(x)
            .chain(names.iter().map(String::as_str))
            .collect();
        node(&format!("bn{i}"), "BatchNormalization", &inputs, y, vec![])
    };
    let nodes = vec![
        node(
            "conv0",
            "Conv",
            &["x", "features.0.weight", "features.0.bias"],
            "c0",
            pads(),
        ),
        bn("1", "c0", "b1"),
        node("relu2", "Relu", &["b1"], "r2", vec![]),
        node(
            "conv3",
            "Conv",
            &["r2", "features.3.weight", "features.3.bias"],
            "c3",
            pads(),
        ),
        bn("4", "c3", "b4"),
        node("relu5", "Relu", &["b4"], "r5", vec![]),
        node("pool", "GlobalAveragePool", &["r5"], "p", vec![]),
        node("flatten", "Flatten", &["p"], "f", vec![]),
        node(
            "fc",
            "Gemm",
            &["f", "fc.weight", "fc.bias"],
            "y",
            vec![int("transB", 1)],
        ),
    ];
    let mut inits = vec![
        weight("features.0.weight", &[4, 3, 3, 3], 0.0),
        weight("features.0.bias", &[4], 1.0),
        weight("features.3.weight", &[6, 4, 3, 3], 8.0),
        weight("features.3.bias", &[6], 9.0),
        weight("fc.weight", &[5, 6], 6.0),
        weight("fc.bias", &[5], 7.0),
    ];
    for (i, c) in [("1", 4), ("4", 6)] {
        inits.push(weight(&format!("features.{i}.weight"), &[c], 2.0));
        inits.push(weight(&format!("features.{i}.bias"), &[c], 4.0));
        inits.push(weight(&format!("features.{i}.running_mean"), &[c], 5.0));
        let mut var = weight(&format!("features.{i}.running_var"), &[c], 3.0);
        var.float_data.iter_mut().for_each(|v| *v = v.abs() + 0.5);
        inits.push(var);
    }
    let mut g = GraphProto::new();
    g.name = "small".into();
    g.node = nodes;
    g.initializer = inits;
    g.input = vec![value_info("x", &[None, Some(3), Some(8), Some(8)])];
    g.output = vec![value_info("y", &[None, Some(5)])];
    let mut m = ModelProto::new();
    m.ir_version = 8;
    m.graph = Some(g).into();
    m.opset_import.push(Default::default());
    m.opset_import[0].version = 13;
    m
}

fn write_cnn(dir: &Path) -> PathBuf {
    let path = dir.join("small.onnx");
    std::fs::write(&path, small_cnn().write_to_bytes().unwrap()).unwrap();
    path
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn an_onnx_file_is_cut_before_its_classifier_which_stays_a_linear_layer() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_cnn(dir.path());
    let device = Device::flex();
    let p = load_pretrained(path.to_str().unwrap(), &device).unwrap();
    assert!(matches!(p.backbone, Backbone::Onnx(_)));
    assert_eq!(p.feature_dim, 6);
    // The declared input gives the size; RGB gets ImageNet statistics and torchvision's resize.
    assert_eq!((p.input.channels, p.input.size, p.input.resize), (3, 8, 9));
    assert_eq!(p.input.normalize.mean(), [0.485, 0.456, 0.406]);
    let source = p.source.as_ref().unwrap();
    assert_eq!(source.cut.as_deref(), Some("f"));
    assert_eq!(source.sha256.len(), 64);
    assert!(p.weights_id.contains(&source.sha256) && p.weights_id.contains("cut f"));

    // Features then the kept classifier are the whole file's network.
    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let whole = flint_onnx::OnnxModel::load(&path, &device).unwrap();
    let expected: Tensor<2> = whole.forward(x.clone());
    let classifier = p.classifier.as_ref().expect("the Gemm as a Linear");
    assert_eq!(classifier.weight.dims(), [6, 5]);
    let ours = classifier.forward(p.backbone.features(x));
    assert!(max_diff(&values(ours), &values(expected)) < 1e-5);
}

#[test]
fn a_cut_at_a_feature_map_is_flattened_and_options_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_cnn(dir.path());
    let device = Device::flex();
    let options = PretrainedOptions {
        cut: Some("relu2".into()),
        input_size: Some(6),
        normalize: Some("inception".parse().unwrap()),
        arch: None,
    };
    let p = load_pretrained_with(path.to_str().unwrap(), &options, &device).unwrap();
    // relu2's output is [batch, 4, 6, 6].
    assert_eq!(p.feature_dim, 4 * 6 * 6);
    assert_eq!(p.input.size, 6);
    assert_eq!(p.input.normalize.std(), [0.5, 0.5, 0.5]);
    // What follows the cut is not a linear map of the features.
    assert!(p.classifier.is_none());
    let f = p.backbone.features(Tensor::zeros([3, 3, 6, 6], &device));
    assert_eq!(f.dims(), [3, 144]);
}

#[test]
fn bad_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_cnn(dir.path());
    let spec = path.to_str().unwrap();
    let device = Device::flex();
    let err = |options: PretrainedOptions| {
        load_pretrained_with(spec, &options, &device)
            .expect_err("refused")
            .to_string()
    };
    let e = err(PretrainedOptions {
        cut: Some("nosuchnode".into()),
        ..Default::default()
    });
    assert!(
        e.contains("--cut nosuchnode") && e.contains("no node or tensor of that name"),
        "{e}"
    );
    let e = err(PretrainedOptions {
        input_size: Some(0),
        ..Default::default()
    });
    assert!(e.contains("--input-size must be at least 1"), "{e}");
    let e = err(PretrainedOptions {
        normalize: Some("0.5/0.5".parse().unwrap()),
        ..Default::default()
    });
    assert!(e.contains("1 channel(s)") && e.contains("3-channel"), "{e}");
    let e = err(PretrainedOptions {
        arch: Some("resnet18".into()),
        ..Default::default()
    });
    assert!(e.contains("--arch resnet18") && e.contains("ONNX"), "{e}");
    let e = "1,2"
        .parse::<flint_transfer::NormalizeSpec>()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bad normalisation `1,2`") && e.contains("MEANS/STDS"),
        "{e}"
    );
    let e = "1,2,3/1,0,1"
        .parse::<flint_transfer::NormalizeSpec>()
        .unwrap_err()
        .to_string();
    assert!(e.contains("standard deviation 0 is not positive"), "{e}");
    // ONNX options on a network that is not ONNX.
    let e = FinetuneConfig::new("mnist-cnn-bn".into(), "x".into())
        .with_input_size(Some(0))
        .validate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("input size must be at least 1"), "{e}");
}

fn transfer_model(spec: &str, device: &Device) -> TransferModel {
    let p = load_pretrained(spec, device).unwrap();
    TransferModel {
        head: Head::new(p.feature_dim, 2, 0.0, device).unwrap(),
        backbone: p.backbone,
    }
}

#[test]
fn parameters_are_named_by_onnx_names_and_grouped_input_to_output() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_cnn(dir.path());
    let model = transfer_model(path.to_str().unwrap(), &Device::flex());
    let paths: Vec<String> = parameters(&model).into_iter().map(|p| p.path).collect();
    for p in [
        "backbone.Onnx.features.0.weight",
        "backbone.Onnx.features.4.bias",
        "head.linear.weight",
    ] {
        assert!(paths.iter().any(|q| q == p), "{p} not in {paths:?}");
    }
    assert!(
        !paths.iter().any(|p| p.contains("fc.")),
        "the classifier is cut off: {paths:?}"
    );
    // Two groups: the first block (conv 0, batch norm 1) then the second (conv 3, norm 4).
    let groups = backbone_groups(&model, 2);
    assert_eq!(groups.len(), 2);
    let first = regex::Regex::new(&groups[0]).unwrap();
    for p in &paths {
        if let Some(name) = p.strip_prefix("backbone.Onnx.") {
            let early = name.starts_with("features.0.") || name.starts_with("features.1.");
            assert_eq!(first.is_match(p), early, "{p} in {}", groups[0]);
        }
    }
}

#[test]
fn freezing_switches_batch_norm_nodes_to_running_statistics() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_cnn(dir.path());
    let device = Device::flex().autodiff();
    let model = transfer_model(path.to_str().unwrap(), &device);
    let x = Tensor::<4>::random([4, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    let eval = values(model.valid().forward(x.clone().inner()));
    let frozen = freeze::freeze(model.clone(), r"^backbone\.").unwrap();
    assert!(
        parameters(&frozen)
            .iter()
            .all(|p| p.trainable == p.path.starts_with("head."))
    );
    let frozen_out = values(frozen.forward(x.clone()));
    assert!(
        max_diff(&frozen_out, &eval) < 1e-5,
        "a frozen backbone normalises as in inference"
    );
    let training = values(model.forward(x));
    assert!(
        max_diff(&training, &eval) > 1e-3,
        "a training backbone uses batch statistics"
    );
}

/// A 3x8x8 two-class image set whose classes differ in brightness.
fn images() -> TransferData {
    let set = |n: usize, seed: u8| {
        let mut pixels = Vec::new();
        let mut labels = Vec::new();
        for i in 0..n {
            let label = (i % 2) as u8;
            labels.push(label);
            pixels.extend((0..192).map(|k| {
                let noise = ((k as u8).wrapping_mul(31).wrapping_add(seed + i as u8)) % 40;
                if label == 0 { 40 + noise } else { 170 + noise }
            }));
        }
        flint_data::ImageSet::new(
            "toy",
            [3, 8, 8],
            pixels,
            labels,
            vec!["dark".into(), "light".into()],
        )
        .unwrap()
    };
    TransferData::Images {
        train: set(16, 0),
        val: set(8, 7),
    }
}

#[test]
fn all_three_strategies_train_an_onnx_backbone_and_the_run_is_read_back_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_cnn(dir.path());
    let data = images();
    let options = |name: &str| FinetuneOptions {
        output: Some(dir.path().join(name)),
        progress: flint_train::ProgressMode::Silent,
        cache_dir: Some(dir.path().join("cache")),
        ..FinetuneOptions::default()
    };
    let device = Device::flex();
    let x = Tensor::<4>::random([2, 3, 8, 8], Distribution::Normal(0.0, 1.0), &device);
    for (name, strategy) in [
        ("fe", Strategy::FeatureExtract),
        ("ft", Strategy::Finetune),
        ("gr", Strategy::Gradual),
    ] {
        let config = FinetuneConfig::new(path.display().to_string(), dir.path().into())
            .with_strategy(strategy)
            .with_epochs(3)
            .with_batch_size(4)
            .with_unfreeze_every(1)
            .with_groups(2)
            .with_workers(0)
            .with_augment(false);
        let outcome = finetune_on(&config, &data, &options(name)).unwrap();
        assert_eq!(outcome.history.len(), 3, "{name}");
        // The last checkpoint: the best epoch may be one before the backbone trained.
        let last = outcome.run_dir.join("checkpoints/last");
        let (run, model, input) = load_finetuned(&last, &device).unwrap();
        assert_eq!(run.source.as_ref().unwrap().cut.as_deref(), Some("f"));
        assert_eq!(input.size, 8);
        // The backbone trained (or not) as the strategy says.
        let fresh = transfer_model(path.to_str().unwrap(), &device);
        let moved = max_diff(
            &values(model.backbone.features(x.clone())),
            &values(fresh.backbone.features(x.clone())),
        );
        let stats = |m: &TransferModel| match &m.backbone {
            Backbone::Onnx(b) => b
                .model()
                .running_stats()
                .into_iter()
                .flat_map(|(_, t)| values(t))
                .collect::<Vec<f32>>(),
            _ => unreachable!(),
        };
        let stats_moved = max_diff(&stats(&model), &stats(&fresh));
        if strategy == Strategy::FeatureExtract {
            assert_eq!(moved, 0.0, "{name}: a frozen backbone stays the file's");
            assert_eq!(
                stats_moved, 0.0,
                "{name}: frozen batch norms keep their statistics"
            );
        } else {
            assert!(moved > 0.0, "{name}: the backbone did not train");
            // The checkpoint holds the trained running statistics, not the file's.
            assert!(stats_moved > 0.0, "{name}: running statistics not restored");
        }
    }
    // A changed file is refused, naming both checksums; a missing one says where it was.
    let run = dir.path().join("ft");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let e = load_finetuned(&run, &device)
        .expect_err("refused")
        .to_string();
    assert!(e.contains("has changed since the run was made"), "{e}");
    std::fs::remove_file(&path).unwrap();
    let e = load_finetuned(&run, &device)
        .expect_err("refused")
        .to_string();
    assert!(
        e.contains("which is missing") && e.contains("small.onnx"),
        "{e}"
    );
}

#[test]
fn mobilenetv2_by_name_is_the_file_by_path() {
    let Some(file) = file_or_skip(models_dir().join("mobilenetv2.onnx")) else {
        return;
    };
    let device = Device::flex();
    let by_name = load_pretrained("mobilenetv2", &device).unwrap();
    let by_path = load_pretrained(file.to_str().unwrap(), &device).unwrap();
    assert_eq!(by_name.feature_dim, 1280);
    assert_eq!(by_name.input, by_path.input);
    assert_eq!(
        by_name.weights_id, by_path.weights_id,
        "one feature cache entry for both"
    );
    device.seed(5);
    let x = Tensor::<4>::random([2, 3, 224, 224], Distribution::Normal(0.0, 1.0), &device);
    let logits = |p: &flint_transfer::Pretrained| {
        let c = p
            .classifier
            .as_ref()
            .expect("the classifier Gemm as a Linear");
        values(c.forward(p.backbone.features(x.clone())))
    };
    let whole = flint_onnx::OnnxModel::load(&file, &device).unwrap();
    let expected = values::<2>(whole.forward(x.clone()));
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(max_diff(&logits(&by_name), &expected) / scale < 1e-4);
    assert_eq!(logits(&by_name), logits(&by_path));
    assert_eq!(by_name.class_names.as_ref().map(Vec::len), Some(1000));
}
