//! burn's module machinery on an ONNX network: parameter paths are the ONNX names, freezing
//! switches batch norm to running statistics, records round-trip, and a cut splits the network
//! into parts whose composition is the whole.

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Device, Distribution, Tensor};
use common::{small_cnn, write};
use flint_onnx::parity::{relative_error, values};
use flint_onnx::{CutPoint, OnnxModel};

struct Paths(Vec<String>, Vec<String>);

impl ModuleVisitor for Paths {
    fn enter_module(&mut self, name: &str, _: &str) {
        self.0.push(name.into());
    }
    fn exit_module(&mut self, _: &str, _: &str) {
        self.0.pop();
    }
    fn visit_float<const D: usize>(&mut self, _: &Param<Tensor<D>>) {
        self.1.push(self.0.join("."));
    }
}

fn load(device: &Device) -> (tempfile::TempDir, OnnxModel) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "cnn.onnx", &small_cnn());
    let model = OnnxModel::load(&path, device).unwrap();
    (dir, model)
}

#[test]
fn parameters_are_visited_under_their_onnx_names() {
    let (_dir, model) = load(&Device::flex());
    let mut paths = Paths(Vec::new(), Vec::new());
    model.visit(&mut paths);
    let mut found = paths.1;
    found.sort();
    let expected = [
        "fc.bias",
        "fc.weight",
        "features.0.bias",
        "features.0.weight",
        "features.1.bias",
        "features.1.num_batches_tracked",
        "features.1.running_mean",
        "features.1.running_var",
        "features.1.weight",
    ];
    assert_eq!(found, expected);
    assert_eq!(model.num_weights(), 4 * 27 + 4 + 4 + 4 + 5 * 4 + 5);
}

#[test]
fn frozen_batch_norm_uses_running_statistics() {
    let device = Device::flex().autodiff();
    let (_dir, model) = load(&device);
    let x = Tensor::<4>::random([3, 3, 6, 6], Distribution::Default, &device);
    let train: Tensor<2> = model.clone().forward(x.clone());
    let frozen: Tensor<2> = model.clone().freeze().forward(x.clone());
    let eval: Tensor<2> = model.valid().forward(x.inner());
    assert!(relative_error(&values(frozen.clone()), &values(eval)) < 1e-6);
    assert!(relative_error(&values(train), &values(frozen)) > 1e-3);
}

#[test]
fn records_round_trip() {
    let device = Device::flex();
    let (dir, model) = load(&device);
    let file = dir.path().join("weights.bpk");
    // Change the weights so the reloaded ones cannot be the file's.
    let changed = model.map(&mut Scale(2.0));
    let x = Tensor::<4>::random([2, 3, 5, 5], Distribution::Default, &device);
    let expected: Tensor<2> = changed.forward(x.clone());
    changed.save_file(&file).unwrap();
    let (_d, fresh) = load(&device);
    let before: Tensor<2> = fresh.forward(x.clone());
    let reloaded = fresh.load_file(&file);
    let after: Tensor<2> = reloaded.forward(x);
    assert!(relative_error(&values(after), &values(expected.clone())) < 1e-6);
    assert!(relative_error(&values(before), &values(expected)) > 1e-3);
}

/// Records and burn-store snapshots see a module through its visitor: a freshly loaded model
/// must show them the file's running statistics, not batch norm's initial zeros and ones.
#[test]
fn visitors_see_the_files_running_statistics() {
    struct Values(Vec<String>, Vec<(String, Vec<f32>)>);
    impl ModuleVisitor for Values {
        fn enter_module(&mut self, name: &str, _: &str) {
            self.0.push(name.into());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.0.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.1.push((self.0.join("."), values(p.val())));
        }
    }
    let (_dir, model) = load(&Device::flex());
    let mut seen = Values(Vec::new(), Vec::new());
    model.visit(&mut seen);
    let stats = model.running_stats();
    let initial = |v: &f32| *v == 0.0 || *v == 1.0;
    assert!(
        stats
            .iter()
            .all(|(_, t)| !values(t.clone()).iter().all(initial)),
        "the test file's statistics must differ from batch norm's initial ones"
    );
    for (name, tensor) in stats {
        let visited = &seen
            .1
            .iter()
            .find(|(path, _)| *path == name)
            .expect(&name)
            .1;
        assert_eq!(visited, &values(tensor), "{name}");
    }
}

struct Scale(f32);

impl burn::module::ModuleMapper for Scale {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        p.map(|t| t.mul_scalar(self.0))
    }
}

#[test]
fn cut_parts_compose_to_the_whole() {
    let device = Device::flex();
    let (_dir, model) = load(&device);
    let x = Tensor::<4>::random([2, 3, 5, 5], Distribution::Default, &device);
    let whole: Tensor<2> = model.forward(x.clone());
    let cut = model.clone().cut(CutPoint::Auto).unwrap();
    assert_eq!(cut.feature_size, Some(4));
    assert_eq!(cut.feature_tensor, "f");
    let features: Tensor<2> = cut.features.forward(x.clone());
    assert_eq!(features.dims(), [2, 4]);
    let composed: Tensor<2> = cut.head.forward(features);
    assert!(relative_error(&values(composed), &values(whole)) < 1e-6);
    assert_eq!(cut.head.param_names(), ["fc.weight", "fc.bias"]);

    let at = model.clone().cut(CutPoint::At("relu".into())).unwrap();
    let relu: Tensor<4> = at.features.forward(x);
    assert_eq!(relu.dims(), [2, 4, 5, 5]);
    let err = model.cut(CutPoint::At("nowhere".into())).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot cut at \"nowhere\": no node or tensor of that name"
    );
}
