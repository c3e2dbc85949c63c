//! flint's ResNet-18 definition against torchvision's (issue #15), through the resnet18 ONNX
//! fixture (`onnx-fixtures/resnet18.onnx`, seeded random torchvision weights whose initializer
//! names are the state-dict keys, and `resnet18.reference.safetensors`, PyTorch's outputs and
//! gradients on them; see the fixtures' README).
//!
//! The fixture's initializers are written as the PyTorch checkpoint torchvision would save
//! (`torch.save(model.state_dict())`: a ZIP of a pickled `OrderedDict`, `fc.weight` as
//! `[out, in]`, batch norm `weight`/`bias`, an int64 `num_batches_tracked` per batch norm) and
//! loaded with `flint_transfer::load_weights`, the path `flint finetune --pretrained
//! resnet18.pth --arch resnet18` takes. The loaded model must reproduce PyTorch's eval output,
//! gradients, train-mode output and running statistics.
//!
//! Missing files skip with a printed reason, or fail when `FLINT_REQUIRE_DATA=1`.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::module::{Flag, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_store::{BurnToPyTorchAdapter, ModuleSnapshot, bridge};
use common::{file_or_skip, models_dir, pytorch_zip};
use flint_layers::{BatchNorm, conv2d, linear};
use flint_models::{ParamCounts, ResNet, ResNetArch, ResNetConfig};
use flint_onnx::OnnxModel;
use flint_onnx::parity::{Reference, TOLERANCE, relative_error, values};
use flint_transfer::{LoadOptions, LoadReport, TransferError, load_weights};

use common::Entry;

/// The fixture's two files, or a skip.
fn fixture() -> Option<(PathBuf, PathBuf)> {
    let dir = models_dir().join("onnx-fixtures");
    Some((
        file_or_skip(dir.join("resnet18.onnx"))?,
        file_or_skip(dir.join("resnet18.reference.safetensors"))?,
    ))
}

/// The fixture's float initializers under their ONNX names (the torchvision keys), read once.
/// flint-onnx's own batch-norm counters are left out: torchvision's are added as int64
/// scalars by [`torchvision_entries`].
///
/// The running statistics come from `OnnxModel::running_stats`: a burn-store snapshot of an
/// `OnnxModel` visits them through `RunningState`'s unsynchronised value, which still holds the
/// initial mean 0 and variance 1 after the file's values were loaded.
fn initializers(onnx: &Path) -> &'static [Entry] {
    static ENTRIES: OnceLock<Vec<Entry>> = OnceLock::new();
    ENTRIES.get_or_init(|| {
        let model = OnnxModel::load(onnx, &Device::flex()).unwrap();
        let running: HashMap<String, Tensor<1>> = model.running_stats().into_iter().collect();
        model
            .collect(None, None, false)
            .into_iter()
            .filter(|t| !t.name.ends_with("num_batches_tracked"))
            .map(|t| {
                let name = t.name.clone();
                let data = match running.get(&name) {
                    Some(stat) => stat.to_data(),
                    None => bridge::into_data(t).unwrap(),
                };
                Entry::new(name, data.convert_dtype(DType::F32))
            })
            .collect()
    })
}

/// What torchvision's `state_dict()` holds for these weights: the initializers and one int64
/// `num_batches_tracked` scalar per batch norm.
fn torchvision_entries(onnx: &Path) -> Vec<Entry> {
    let mut entries = initializers(onnx).to_vec();
    let norms: Vec<String> = entries
        .iter()
        .filter_map(|e| e.name.strip_suffix(".running_var").map(str::to_string))
        .collect();
    for norm in norms {
        let count = TensorData::new(vec![1i64], Vec::<usize>::new());
        entries.push(Entry::new(format!("{norm}.num_batches_tracked"), count));
    }
    entries
}

fn write_pth(dir: &Path, name: &str, entries: &[Entry]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pytorch_zip(entries)).unwrap();
    path
}

fn load(path: &Path, device: &Device) -> Result<(ResNet, LoadReport), TransferError> {
    load_weights(
        ResNetConfig::new(ResNetArch::ResNet18).init(device),
        path,
        &LoadOptions::new(),
    )
}

/// Sets every training flag (batch norm, dropout) without touching gradients: `false` is
/// PyTorch's `model.eval()` with gradients still flowing.
struct TrainingFlags(bool);

impl ModuleMapper for TrainingFlags {
    fn map_flag(&mut self, flag: Param<Flag>) -> Param<Flag> {
        flag.with_value(self.0)
    }
}

/// Every float parameter's gradient by its path.
struct Grads<'a> {
    path: Vec<String>,
    grads: &'a burn::tensor::Gradients,
    found: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.grad(self.grads) {
            self.found
                .insert(self.path.join("."), (g.dims().to_vec(), values(g)));
        }
    }
}

/// flint's path for a torchvision key: batch norm's `weight`/`bias` are `gamma`/`beta`.
fn flint_path(key: &str) -> String {
    let (module, field) = key.rsplit_once('.').unwrap();
    let leaf = module.rsplit('.').next().unwrap();
    let is_norm = leaf.starts_with("bn") || module.ends_with("downsample.1");
    match (is_norm, field) {
        (true, "weight") => format!("{module}.gamma"),
        (true, "bias") => format!("{module}.beta"),
        _ => key.to_string(),
    }
}

/// Transposes a `[rows, cols]` row-major matrix (burn's `[in, out]` Linear weight to
/// PyTorch's `[out, in]`).
fn transpose(dims: &[usize], v: &[f32]) -> Vec<f32> {
    let (rows, cols) = (dims[0], dims[1]);
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

/// Every batch norm of the model under its torchvision module name.
fn norms(model: &ResNet) -> Vec<(String, &BatchNorm)> {
    let mut out = vec![("bn1".to_string(), &model.bn1)];
    let stages = [&model.layer1, &model.layer2, &model.layer3, &model.layer4];
    for (s, stage) in stages.into_iter().enumerate() {
        for (b, block) in stage.iter().enumerate() {
            let prefix = format!("layer{}.{b}", s + 1);
            out.push((format!("{prefix}.bn1"), &block.bn1));
            out.push((format!("{prefix}.bn2"), &block.bn2));
            if let Some(bn3) = &block.bn3 {
                out.push((format!("{prefix}.bn3"), bn3));
            }
            if let Some((_, bn)) = &block.downsample {
                out.push((format!("{prefix}.downsample.1"), bn));
            }
        }
    }
    out
}

/// The ResNet-18 definition's PyTorch keys (as `BurnToPyTorchAdapter` writes them) are the
/// fixture's initializer names, with the same shapes.
#[test]
fn resnet18_keys_and_shapes_are_the_fixtures_initializers() {
    let Some((onnx, _)) = fixture() else { return };
    let model = ResNetConfig::new(ResNetArch::ResNet18).init(&Device::flex());
    let ours: BTreeSet<(String, Vec<usize>)> = model
        .collect(None, Some(Box::new(BurnToPyTorchAdapter)), false)
        .into_iter()
        .filter(|t| !t.name.ends_with("num_batches_tracked"))
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let theirs: BTreeSet<(String, Vec<usize>)> = initializers(&onnx)
        .iter()
        .map(|e| (e.name.clone(), e.shape.clone()))
        .collect();
    let only_ours: Vec<_> = ours.difference(&theirs).collect();
    let only_theirs: Vec<_> = theirs.difference(&ours).collect();
    assert!(
        only_ours.is_empty() && only_theirs.is_empty(),
        "only in flint: {only_ours:?}\nonly in the fixture: {only_theirs:?}"
    );
    // 62 weights and 40 running statistics.
    assert_eq!(ours.len(), 102);
    // The fixture README's parameter count, from the file's own tensors.
    let learnable: usize = initializers(&onnx)
        .iter()
        .filter(|e| !e.name.contains("running_"))
        .map(|e| e.shape.iter().product::<usize>())
        .sum();
    assert_eq!(learnable, 11_689_512);
    assert_eq!(ParamCounts::of(&model).trainable, learnable);
}

/// The fixture's weights as a torchvision `.pth`, loaded with `load_weights` on `device`.
fn loaded_resnet18(onnx: &Path, device: &Device) -> ResNet {
    let dir = tempfile::tempdir().unwrap();
    let pth = write_pth(dir.path(), "resnet18.pth", &torchvision_entries(onnx));
    let (model, report) = load(&pth, device).unwrap();
    println!("{report}");
    assert_eq!(report.format, "pytorch");
    assert_eq!(report.loaded.len(), 102, "{report}");
    assert!(report.missing.is_empty(), "{report}");
    // The int64 counters are skipped silently, as documented; nothing else is left over.
    assert!(report.unused.is_empty(), "{report}");
    assert!(report.converted.is_empty(), "{report}");
    model
}

/// The fixture's weights as a torchvision `.pth`, loaded with `load_weights`, reproduce
/// PyTorch's eval output, its train-mode output and the running statistics after that one
/// train-mode pass.
#[test]
fn resnet18_from_torchvision_pth_matches_pytorch_outputs() {
    let Some((onnx, reference)) = fixture() else {
        return;
    };
    let reference = Reference::read(&reference).unwrap();
    let device = Device::flex().autodiff();
    let model = loaded_resnet18(&onnx, &device);
    let input: Tensor<4> = reference.tensor("input", &device).unwrap();

    // Eval mode: running statistics.
    let output = model.valid().forward(input.clone().inner());
    let eval_err = relative_error(&values(output), reference.values("output").unwrap());
    println!("eval output: {eval_err:.2e}");
    assert!(eval_err <= TOLERANCE, "eval output {eval_err:e}");

    // Train mode: batch statistics and PyTorch's running-statistic update.
    let output = model.forward(input);
    let train_err = relative_error(&values(output), reference.values("train.output").unwrap());
    println!("train output: {train_err:.2e}");
    assert!(train_err <= TOLERANCE, "train output {train_err:e}");
    let stats: HashMap<String, Vec<f32>> = norms(&model)
        .into_iter()
        .flat_map(|(name, bn)| {
            let mean = bn.running_mean.as_ref().unwrap().value_sync();
            let var = bn.running_var.as_ref().unwrap().value_sync();
            [
                (format!("{name}.running_mean"), values(mean)),
                (format!("{name}.running_var"), values(var)),
            ]
        })
        .collect();
    let stat_keys: Vec<String> = reference
        .keys("train.")
        .into_iter()
        .filter(|k| k != "train.output")
        .collect();
    assert_eq!(stat_keys.len(), stats.len(), "{stat_keys:?}");
    let mut worst = 0f32;
    for key in &stat_keys {
        let ours = stats
            .get(&key["train.".len()..])
            .unwrap_or_else(|| panic!("no running statistic for {key}"));
        let err = relative_error(ours, reference.values(key).unwrap());
        assert!(err <= TOLERANCE, "{key}: {err:e}");
        worst = worst.max(err);
    }
    println!(
        "running statistics ({} tensors): {worst:.2e}",
        stat_keys.len()
    );
}

/// A ReLU input this close to zero, relative to the largest input of its layer, is within
/// float rounding of the kink: PyTorch and flint may put it on different sides.
const KINK: f32 = 1e-6;

/// The most near-zero ReLU inputs tried, smallest first.
const MAX_KINK_CANDIDATES: usize = 64;

/// The gradients of `sum(output * probe)` in eval mode agree with PyTorch's within 1e-4 of
/// their largest magnitude, or do once a single ReLU input within rounding of zero (at most
/// [`KINK`] of its layer's largest input) is put on the other side of zero.
///
/// Measured (flex, this fixture): `fc.weight` and `fc.bias` agree within 2e-7; `input`,
/// `conv1.weight`, `bn1.weight` and `layer3.0.bn1.weight` differ by 3.0e-2, 5.4e-3, 2.1e-3 and
/// 1.1e-3, the differences the ONNX import shows too. All four come from one unit: layer3.0's
/// output ReLU (`/layer3/layer3.0/relu_1`), image 1, channel 176, row 3, column 1, whose input
/// flint computes as +2.3e-6 (2.3e-7 of the layer's largest) and PyTorch evidently as at most
/// 0: with that one unit moved below zero every gradient agrees within 1.3e-6. The network is
/// not differentiable there; each side's gradient is a correct one-sided derivative, and which
/// side a framework lands on is decided by the order of its float sums.
#[test]
fn resnet18_gradients_match_pytorch_up_to_one_relu_kink() {
    let Some((onnx, reference)) = fixture() else {
        return;
    };
    let reference = Reference::read(&reference).unwrap();
    let device = Device::flex().autodiff();
    let model = loaded_resnet18(&onnx, &device).map(&mut TrainingFlags(false));

    let base = grad_errors(&reference, &device, &model, |x| model.forward(x));
    for (name, err) in &base {
        println!("grad {name}: {err:.2e}");
    }
    // The classifier's gradients come before any ReLU: no kink can touch them.
    for name in ["fc.weight", "fc.bias"] {
        let err = base.iter().find(|(n, _)| n == name).unwrap().1;
        assert!(err <= TOLERANCE, "grad {name}: {err:e}");
    }
    if base.iter().all(|(_, err)| *err <= TOLERANCE) {
        return;
    }

    // The same forward with a hook on every ReLU input; unchanged, it must give the same
    // gradients as `forward`.
    let mut inputs: Vec<Vec<f32>> = Vec::new();
    let hooked = grad_errors(&reference, &device, &model, |x| {
        forward_hooked(&model, x, &mut |_, pre| {
            inputs.push(values(pre.clone()));
            pre
        })
    });
    assert_eq!(hooked, base, "the hooked forward is not the model's");

    let mut candidates: Vec<(f32, usize, usize)> = Vec::new();
    for (relu, v) in inputs.iter().enumerate() {
        let scale = v.iter().fold(0f32, |m, x| m.max(x.abs()));
        candidates.extend(
            v.iter()
                .enumerate()
                .filter(|(_, x)| x.abs() <= KINK * scale)
                .map(|(i, x)| (x.abs() / scale, relu, i)),
        );
    }
    candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
    println!(
        "{} ReLU inputs within {KINK:e} of their layer's largest",
        candidates.len()
    );
    for &(rel, relu, unit) in candidates.iter().take(MAX_KINK_CANDIDATES) {
        let x = inputs[relu][unit];
        let flipped = grad_errors(&reference, &device, &model, |input| {
            forward_hooked(&model, input, &mut |k, pre| {
                if k != relu {
                    return pre;
                }
                let dims = pre.dims();
                let mut delta = vec![0f32; dims.iter().product()];
                delta[unit] = -2.0 * x;
                let delta = Tensor::from_data(TensorData::new(delta, dims.to_vec()), &pre.device());
                pre + delta
            })
        });
        if flipped.iter().all(|(_, err)| *err <= TOLERANCE) {
            println!(
                "ReLU {relu} unit {unit}: input {x:e} ({rel:.1e} of the layer's largest) on \
                 the other side of zero gives {flipped:?}"
            );
            return;
        }
    }
    panic!("gradients off {base:?}, and no single near-zero ReLU input explains it");
}

/// The relative error of every reference gradient (`grad.input` and `grad.<key>`) for the
/// eval-mode `forward`.
fn grad_errors(
    reference: &Reference,
    device: &Device,
    model: &ResNet,
    forward: impl FnOnce(Tensor<4>) -> Tensor<2>,
) -> Vec<(String, f32)> {
    let x: Tensor<4> = reference.tensor("input", device).unwrap().require_grad();
    let probe: Tensor<2> = reference.tensor("probe", device).unwrap();
    let output = forward(x.clone());
    let grads = (output * probe).sum().backward();
    let mut collector = Grads {
        path: Vec::new(),
        grads: &grads,
        found: HashMap::new(),
    };
    model.visit(&mut collector);
    let mut found = collector.found;
    let input_grad = x.grad(&grads).unwrap();
    found.insert(
        "input".into(),
        (input_grad.dims().to_vec(), values(input_grad)),
    );
    let keys = reference.keys("grad.");
    assert!(keys.len() >= 6, "{keys:?}");
    keys.iter()
        .map(|key| {
            let name = &key["grad.".len()..];
            let path = if name == "input" {
                name.to_string()
            } else {
                flint_path(name)
            };
            let (dims, v) = found
                .get(&path)
                .unwrap_or_else(|| panic!("no gradient for {name} (flint path {path})"));
            let v = if dims.len() == 2 {
                transpose(dims, v)
            } else {
                v.clone()
            };
            (
                name.to_string(),
                relative_error(&v, reference.values(key).unwrap()),
            )
        })
        .collect()
}

/// `ResNet::forward` step by step, with `hook(k, input)` replacing the input of the `k`-th
/// ReLU (the stem's, then each block's two).
fn forward_hooked(
    model: &ResNet,
    images: Tensor<4>,
    hook: &mut dyn FnMut(usize, Tensor<4>) -> Tensor<4>,
) -> Tensor<2> {
    let mut k = 0;
    let mut relu = |x: Tensor<4>| {
        let x = hook(k, x);
        k += 1;
        burn::tensor::activation::relu(x)
    };
    let x = relu(model.bn1.forward(conv2d(&model.conv1, images)));
    let mut x = model.maxpool.forward(x);
    for block in model.blocks() {
        let y = relu(block.bn1.forward(conv2d(&block.conv1, x.clone())));
        let y = block.bn2.forward(conv2d(&block.conv2, y));
        let shortcut = match &block.downsample {
            Some((conv, bn)) => bn.forward(conv2d(conv, x)),
            None => x,
        };
        x = relu(y + shortcut);
    }
    let [batch, channels, _, _] = x.dims();
    let features = x.flatten::<3>(2, 3).mean_dim(2).reshape([batch, channels]);
    linear(&model.fc, model.dropout.forward(features))
}

/// A checkpoint with one tensor of the wrong shape is refused with the tensor's name and both
/// shapes, in PyTorch's layout (`fc.weight` as `[out, in]`).
#[test]
fn wrong_shapes_are_refused_naming_the_tensor_and_both_shapes() {
    let Some((onnx, _)) = fixture() else { return };
    let dir = tempfile::tempdir().unwrap();
    let device = Device::flex();
    let cases = [
        (
            "layer2.0.conv1.weight",
            vec![128, 64, 1, 1],
            "[128, 64, 1, 1]",
            "[128, 64, 3, 3]",
        ),
        ("fc.weight", vec![10, 512], "[10, 512]", "[1000, 512]"),
    ];
    for (name, shape, found, expected) in cases {
        let mut entries = torchvision_entries(&onnx);
        let entry = entries.iter_mut().find(|e| e.name == name).unwrap();
        let n: usize = shape.iter().product();
        *entry = Entry::new(name.into(), TensorData::new(vec![0.5f32; n], shape));
        let pth = write_pth(dir.path(), "bad.pth", &entries);
        let err = load(&pth, &device).expect_err("refused");
        let msg = err.to_string();
        assert!(
            matches!(err, TransferError::ShapeMismatch { .. }),
            "{name}: {msg}"
        );
        assert!(msg.contains(name), "{msg}");
        assert!(msg.contains(found) && msg.contains(expected), "{msg}");
    }
}
