//! Pretrained networks by name or file: `flint finetune --pretrained <name|file|run dir>`.
//!
//! A model file found by name in the model folders is used only if its SHA-256 is the
//! catalogue's ([`find_model_file`]); a file given by its path is the caller's choice and is
//! loaded as it is.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use burn::nn::Linear;
use burn::tensor::Device;
use flint_data::Normalize;
use flint_models::{MnistCnnBnConfig, ResNetArch, ResNetConfig};
use flint_pretrained::catalog::{self, FileKind};
use serde::{Deserialize, Serialize};

use crate::backbone::{Backbone, InputSpec, NormalizeSpec};
use crate::error::TransferError;
use crate::load::{LoadOptions, LoadReport, load_weights};
use crate::onnx::{OnnxOptions, load_onnx};

/// A backbone ready for a new head.
#[derive(Debug)]
pub struct Pretrained {
    /// The name it was asked by (`mobilenetv2`, a file, a run directory).
    pub name: String,
    /// The network without its classifier.
    pub backbone: Backbone,
    /// What inputs it expects.
    pub input: InputSpec,
    /// Width of its features.
    pub feature_dim: usize,
    /// Its original classifier, when it has one (ImageNet's 1000 classes).
    pub classifier: Option<Linear>,
    /// Names of the original classes, when known.
    pub class_names: Option<Vec<String>>,
    /// Identifies the weights (checksum), for the feature cache.
    pub weights_id: String,
    /// How the weights were loaded, for files.
    pub load_report: Option<LoadReport>,
    /// The weight file and how it was read, recorded in a run so `flint predict` and
    /// `flint eval` rebuild the same network (`None` for a `flint train` run directory).
    pub source: Option<SourceRecord>,
}

/// How `--pretrained` is read beyond its name: `--cut`, `--input-size` and `--normalize` for
/// ONNX files, `--arch` for PyTorch state dicts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PretrainedOptions {
    /// ONNX: where to cut (`None` or `auto`: before the final `Gemm`/`MatMul`).
    pub cut: Option<String>,
    /// ONNX: square input side (default: the file's, else 224).
    pub input_size: Option<u32>,
    /// ONNX: normalisation (default: ImageNet's for RGB inputs).
    pub normalize: Option<NormalizeSpec>,
    /// `.pth`/`.safetensors`: the architecture whose torchvision names the file uses.
    pub arch: Option<String>,
}

impl PretrainedOptions {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    fn onnx(&self) -> OnnxOptions {
        OnnxOptions {
            cut: self.cut.clone(),
            input_size: self.input_size,
            normalize: self.normalize.clone(),
        }
    }

    /// Refuses the ONNX options for a network that is not an ONNX file.
    fn no_onnx_options(&self, spec: &str) -> Result<(), TransferError> {
        let given: Vec<&str> = [
            ("--cut", self.cut.is_some()),
            ("--input-size", self.input_size.is_some()),
            ("--normalize", self.normalize.is_some()),
        ]
        .iter()
        .filter(|(_, g)| *g)
        .map(|(n, _)| *n)
        .collect();
        if given.is_empty() {
            Ok(())
        } else {
            Err(TransferError::Invalid(format!(
                "{} appl{} to ONNX networks only; `{spec}` is not one",
                given.join(", "),
                if given.len() == 1 { "ies" } else { "y" }
            )))
        }
    }
}

/// The weight file a run was made from and how it was read: written into a fine-tuning run's
/// `config.json`, checked when the run is read back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceRecord {
    /// The file, as an absolute path.
    pub file: PathBuf,
    /// Its SHA-256.
    pub sha256: String,
    /// ONNX: the tensor the features are read from.
    pub cut: Option<String>,
    /// State dicts: the architecture the weights were loaded into.
    pub arch: Option<String>,
    /// Input channels.
    pub channels: usize,
    /// Input side.
    pub size: u32,
    /// Resize before the centre crop.
    pub resize: u32,
    /// Normalisation means.
    pub mean: Vec<f32>,
    /// Normalisation standard deviations.
    pub std: Vec<f32>,
}

impl SourceRecord {
    fn new(file: &Path, sha256: String, input: &InputSpec) -> Self {
        Self {
            file: std::path::absolute(file).unwrap_or_else(|_| file.to_path_buf()),
            sha256,
            cut: None,
            arch: None,
            channels: input.channels,
            size: input.size,
            resize: input.resize,
            mean: input.normalize.mean().to_vec(),
            std: input.normalize.std().to_vec(),
        }
    }

    /// Checks that the file is still there with the same contents, before it is read again.
    ///
    /// # Errors
    /// [`TransferError::Unavailable`] naming the file and both checksums.
    pub fn check_file(&self, found: &Path) -> Result<(), TransferError> {
        if std::fs::symlink_metadata(found).is_err() {
            return Err(TransferError::Unavailable(format!(
                "the run was made from {} (SHA-256 {}), which is missing; put that file back \
                 to rebuild the network",
                found.display(),
                self.sha256
            )));
        }
        let now = file_sha256(found)?;
        if !now.eq_ignore_ascii_case(&self.sha256) {
            return Err(TransferError::Unavailable(format!(
                "{} has changed since the run was made from it (SHA-256 now {now}, the run's \
                 {}): the network cannot be rebuilt as it was trained; restore the original \
                 file",
                found.display(),
                self.sha256
            )));
        }
        Ok(())
    }

    /// Checks that the network rebuilt from the file reads the same inputs and features.
    ///
    /// # Errors
    /// [`TransferError::Invalid`] saying what differs.
    pub fn check_same(&self, rebuilt: &SourceRecord) -> Result<(), TransferError> {
        let a = (&self.cut, &self.arch, self.channels, self.size, self.resize);
        let b = (
            &rebuilt.cut,
            &rebuilt.arch,
            rebuilt.channels,
            rebuilt.size,
            rebuilt.resize,
        );
        if a != b || self.mean != rebuilt.mean || self.std != rebuilt.std {
            return Err(TransferError::Invalid(format!(
                "{}: the network rebuilt now differs from the run's (run: cut {:?}, arch {:?}, \
                 input {}x{}x{} resize {} mean {:?} std {:?}; now: cut {:?}, arch {:?}, input \
                 {}x{}x{} resize {} mean {:?} std {:?})",
                self.file.display(),
                self.cut,
                self.arch,
                self.channels,
                self.size,
                self.size,
                self.resize,
                self.mean,
                self.std,
                rebuilt.cut,
                rebuilt.arch,
                rebuilt.channels,
                rebuilt.size,
                rebuilt.size,
                rebuilt.resize,
                rebuilt.mean,
                rebuilt.std
            )));
        }
        Ok(())
    }
}

/// One row of `flint models`.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// Name to pass to `--pretrained`.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Where its weights were found, or why it is unavailable.
    pub status: Result<String, Unavailable>,
}

/// Why a pretrained network cannot be used on this machine.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// Its weight file is missing, unreadable or not the catalogued one (shared, so entries can
    /// be cloned).
    #[error(transparent)]
    Weights(Arc<TransferError>),
}

/// The catalogue's ONNX networks: name, file, description.
const ONNX: &[(&str, &str, &str)] = &[
    (
        "mobilenetv2",
        "mobilenetv2.onnx",
        "ImageNet MobileNetV2 (ONNX), 3x224x224, 1280 features",
    ),
    (
        "efficientnet-lite0",
        "efficientnet-lite0.onnx",
        "ImageNet EfficientNet-Lite0 (ONNX), 3x224x224, 1280 features",
    ),
];

/// Every pretrained network flint knows and whether it can be used here.
pub fn available() -> Vec<ModelEntry> {
    let mut rows: Vec<ModelEntry> = ONNX
        .iter()
        .map(|(name, file, description)| ModelEntry {
            name,
            description,
            status: find_model_file(&[file])
                .map(|p| p.display().to_string())
                .map_err(|e| Unavailable::Weights(Arc::new(e))),
        })
        .collect();
    rows.push(ModelEntry {
        name: "efficientnet-lite0-torch",
        description: "EfficientNet-Lite0 as a flint network, PyTorch weights (trainable batch norm)",
        status: find_model_file(&["efficientnet-lite0.pth"])
            .map(|p| p.display().to_string())
            .map_err(|e| Unavailable::Weights(Arc::new(e))),
    });
    rows.push(ModelEntry {
        name: "mnist-cnn-bn",
        description: "burn's PyTorch-trained MNIST CNN with batch norm, 1x28x28, 32 features",
        status: find_model_file(&["mnist-cnn-bn.safetensors", "mnist-cnn-bn.pt"])
            .map(|p| p.display().to_string())
            .map_err(|e| Unavailable::Weights(Arc::new(e))),
    });
    rows
}

/// The folders searched at run time: `$FLINT_MODELS`, `./models`, `~/.cache/flint/models`.
pub fn model_dirs() -> Vec<(PathBuf, &'static str)> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let cache = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache"));
    catalog::model_dirs(std::env::var_os("FLINT_MODELS").as_deref(), &cwd, cache)
}

/// The first of `files` in the model folders (folder by folder, in the order of `files` within
/// a folder) that is a regular file and, when the catalogue names it, has the catalogue's
/// SHA-256, as the build does for the ONNX files. A copy of another checksum is passed over; if
/// no other copy is found, the error names it with both checksums. To use such a file anyway,
/// give its path instead of the model's name.
///
/// # Errors
/// [`TransferError::Unavailable`], saying where each file was looked for and what was wrong.
pub fn find_model_file(files: &[&str]) -> Result<PathBuf, TransferError> {
    let dirs = model_dirs();
    let mut refused = Vec::new();
    for (dir, _) in &dirs {
        for f in files {
            let p = dir.join(f);
            if std::fs::symlink_metadata(&p).is_err() {
                continue; // nothing by that name
            }
            let Some(expected) = catalog::catalog_file(f).map(|e| e.sha256) else {
                match flint_io::fs::open_regular(&p) {
                    Ok(_) => return Ok(p),
                    Err(e) => {
                        refused.push(e.to_string());
                        continue;
                    }
                }
            };
            // A FIFO or a device under the name is refused here, not read.
            match file_sha256(&p) {
                Ok(actual) if actual.eq_ignore_ascii_case(expected) => return Ok(p),
                Ok(actual) => refused.push(format!(
                    "{} has SHA-256 {actual}, expected {expected} (modified or corrupt)",
                    p.display()
                )),
                Err(e) => refused.push(e.to_string()),
            }
        }
    }
    let searched = dirs
        .iter()
        .map(|(d, why)| format!("{} ({why})", d.display()))
        .collect::<Vec<_>>()
        .join(", ");
    Err(TransferError::Unavailable(if refused.is_empty() {
        format!(
            "{} not found in {searched}; set FLINT_MODELS to the folder holding it or run \
             `cargo xtask models fetch`",
            files.join(" or ")
        )
    } else {
        format!(
            "{}; no verified copy of {} in {searched}; run `cargo xtask models fetch` or set \
             FLINT_MODELS to a folder holding the catalogued file (a modified file is used \
             only when its path is given instead of the model's name)",
            refused.join("; "),
            files.join(" or ")
        )
    }))
}

/// The SHA-256 of a regular file, in lowercase hex. Each file is hashed once per process while
/// its size and modification time stay the same (`flint models` and loading the model then
/// read it once).
///
/// # Errors
/// A path that is not a regular file, or a read error.
pub fn file_sha256(path: &Path) -> Result<String, TransferError> {
    type Seen = HashMap<PathBuf, (u64, Option<SystemTime>, String)>;
    static SEEN: OnceLock<Mutex<Seen>> = OnceLock::new();
    let (file, len) = flint_io::fs::open_regular(path)?;
    let modified = file.metadata().ok().and_then(|m| m.modified().ok());
    let stamp = (len, modified);
    let seen = SEEN.get_or_init(Default::default);
    if let Some((len, time, sha)) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(path)
        && (*len, *time) == stamp
    {
        return Ok(sha.clone());
    }
    let sha = flint_io::fs::sha256_opened(file, stamp.0, path)?;
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(path.to_path_buf(), (stamp.0, stamp.1, sha.clone()));
    Ok(sha)
}

/// Checks that `spec` names a known model, an existing file or a directory, without loading.
pub fn check_spec(spec: &str) -> Result<(), TransferError> {
    let path = Path::new(spec);
    if path.exists() || available().iter().any(|m| m.name == spec) {
        Ok(())
    } else {
        Err(unknown(spec))
    }
}

fn unknown(spec: &str) -> TransferError {
    TransferError::Invalid(format!(
        "unknown pretrained model `{spec}`: not a known name ({}), an existing .onnx or weight \
         file, or a run directory",
        available()
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The files a catalogue name is read from, in order of preference.
pub fn catalogue_files(name: &str) -> Option<&'static [&'static str]> {
    match name {
        "mobilenetv2" => Some(&["mobilenetv2.onnx"]),
        "efficientnet-lite0" => Some(&["efficientnet-lite0.onnx"]),
        "efficientnet-lite0-torch" => Some(&["efficientnet-lite0.pth"]),
        "mnist-cnn-bn" => Some(&["mnist-cnn-bn.safetensors", "mnist-cnn-bn.pt"]),
        _ => None,
    }
}

/// Loads a backbone: a name from [`available`], an `.onnx` file, a `.pt`/`.pth`/`.safetensors`
/// file of a known architecture (`mnist-cnn-bn`), or the run directory of a `flint train` run.
pub fn load_pretrained(spec: &str, device: &Device) -> Result<Pretrained, TransferError> {
    load_pretrained_with(spec, &PretrainedOptions::default(), device)
}

/// [`load_pretrained`] with `--cut`, `--input-size`, `--normalize` (ONNX) and `--arch` (state
/// dicts). An option that does not apply to the network named is an error.
pub fn load_pretrained_with(
    spec: &str,
    options: &PretrainedOptions,
    device: &Device,
) -> Result<Pretrained, TransferError> {
    let path = Path::new(spec);
    if path.join("config.json").is_file() {
        if !options.is_default() {
            return Err(TransferError::Invalid(format!(
                "--cut, --input-size, --normalize and --arch do not apply to a flint train run \
                 directory ({spec})"
            )));
        }
        return from_run(path, device);
    }
    let is_onnx = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"));
    if let Some(arch) = &options.arch
        && (is_onnx || ONNX.iter().any(|(n, _, _)| *n == spec))
    {
        return Err(TransferError::Invalid(format!(
            "--arch {arch} applies to .pth/.safetensors state dicts; `{spec}` is an ONNX network, \
             which carries its own architecture"
        )));
    }
    if let Some((name, file, _)) = ONNX.iter().find(|(n, _, _)| *n == spec) {
        let found = find_model_file(&[*file])?;
        return onnx_pretrained(name, &found, &options.onnx(), device);
    }
    if is_onnx && path.exists() {
        return onnx_pretrained(spec, path, &options.onnx(), device);
    }
    options.no_onnx_options(spec)?;
    if let Some(arch) = &options.arch {
        let arch: ResNetArch = arch
            .parse()
            .map_err(|e: flint_models::ModelConfigError| TransferError::Invalid(e.to_string()))?;
        if catalogue_files(spec).is_some() {
            return Err(TransferError::Invalid(format!(
                "--arch {arch} applies to a state-dict file given by its path; `{spec}` names \
                 a network of its own"
            )));
        }
        if !path.exists() {
            return Err(unknown(spec));
        }
        return resnet(spec, path, arch, device);
    }
    match spec {
        "efficientnet-lite0-torch" => {
            let file = find_model_file(catalogue_files(spec).unwrap_or_default())?;
            efficientnet_torch(spec, &file, device)
        }
        "mnist-cnn-bn" => {
            let file = find_model_file(catalogue_files(spec).unwrap_or_default())?;
            mnist_cnn_bn(spec, &file, device)
        }
        // Any existing path but a directory: a FIFO or a device named like a weight file gets
        // load_weights' "not a regular file" rather than "unknown model".
        _ if path.exists() && !path.is_dir() => {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            if stem.starts_with("mnist-cnn-bn") || stem == "mnist" {
                mnist_cnn_bn(spec, path, device)
            } else if stem.starts_with("efficientnet-lite0") {
                efficientnet_torch(spec, path, device)
            } else {
                Err(TransferError::Invalid(format!(
                    "{spec}: cannot tell which architecture this weight file is for; give \
                     --arch resnet18, resnet34 or resnet50 for a torchvision ResNet state dict \
                     (flint also reads any .onnx network, and PyTorch/safetensors weights of \
                     mnist-cnn-bn (mnist-cnn-bn.*) and efficientnet-lite0 (efficientnet-lite0.*))"
                )))
            }
        }
        _ => Err(unknown(spec)),
    }
}

/// An ONNX file, cut before its classifier.
fn onnx_pretrained(
    name: &str,
    file: &Path,
    options: &OnnxOptions,
    device: &Device,
) -> Result<Pretrained, TransferError> {
    let sha = file_sha256(file)?;
    // The catalogue's EfficientNet-Lite0, by name or by path, reads `(x * 255 - 127) / 128`.
    let lite0 = catalog::catalog_file("efficientnet-lite0.onnx")
        .is_some_and(|f| f.sha256.eq_ignore_ascii_case(&sha));
    let mut options = options.clone();
    if lite0 && options.normalize.is_none() {
        options.normalize = Some(NormalizeSpec::Custom {
            mean: vec![127.0 / 255.0; 3],
            std: vec![128.0 / 255.0; 3],
        });
    }
    let loaded = load_onnx(file, &options, device)?;
    let feature_dim = loaded.backbone.feature_dim();
    let cut = loaded.backbone.feature_tensor().to_string();
    let classes = loaded.classifier.as_ref().map(|l| l.weight.dims()[1]);
    let mut source = SourceRecord::new(file, sha.clone(), &loaded.input);
    source.cut = Some(cut.clone());
    Ok(Pretrained {
        name: name.into(),
        backbone: Backbone::Onnx(loaded.backbone),
        input: loaded.input,
        feature_dim,
        classifier: loaded.classifier,
        class_names: (classes == Some(1000)).then(imagenet_labels).flatten(),
        weights_id: format!("onnx {sha} cut {cut}"),
        load_report: None,
        source: Some(source),
    })
}

fn imagenet_labels() -> Option<Vec<String>> {
    let p = find_model_file(&["imagenet_labels.txt"]).ok()?;
    let text = std::fs::read_to_string(p).ok()?;
    // `n02123045 tabby, tabby cat`: the WordNet id, then the names.
    let names: Vec<String> = text
        .lines()
        .map(|l| l.split_once(' ').map_or(l, |(_, n)| n).to_string())
        .collect();
    (names.len() == 1000).then_some(names)
}

fn mnist_cnn_bn(name: &str, file: &Path, device: &Device) -> Result<Pretrained, TransferError> {
    let model = MnistCnnBnConfig::new()
        .try_init(device)
        .map_err(|e| TransferError::Invalid(e.to_string()))?;
    let (model, report) = load_weights(model, file, &LoadOptions::new())?;
    let classifier = model.fc2.clone();
    let input = InputSpec {
        channels: 1,
        size: 28,
        resize: 28,
        normalize: Normalize::new(vec![0.1307], vec![0.3081])?,
    };
    let sha = file_sha256(file)?;
    Ok(Pretrained {
        name: name.into(),
        feature_dim: 32,
        source: Some(SourceRecord::new(file, sha.clone(), &input)),
        input,
        classifier: Some(classifier),
        class_names: Some((0..10).map(|d| d.to_string()).collect()),
        weights_id: sha,
        backbone: Backbone::MnistCnnBn(model),
        load_report: Some(report),
    })
}

/// A torchvision ResNet state dict (`resnet18-f37072fd.pth`) in flint's definition.
fn resnet(
    name: &str,
    file: &Path,
    arch: ResNetArch,
    device: &Device,
) -> Result<Pretrained, TransferError> {
    let model = ResNetConfig::new(arch)
        .try_init(device)
        .map_err(|e| TransferError::Invalid(e.to_string()))?;
    let (model, report) = load_weights(model, file, &LoadOptions::new())?;
    let classifier = model.fc.clone();
    let classes = model.num_classes();
    let input = InputSpec::imagenet();
    let sha = file_sha256(file)?;
    let mut source = SourceRecord::new(file, sha.clone(), &input);
    source.arch = Some(arch.to_string());
    Ok(Pretrained {
        name: name.into(),
        feature_dim: model.feature_dim(),
        source: Some(source),
        input,
        classifier: Some(classifier),
        class_names: (classes == 1000).then(imagenet_labels).flatten(),
        weights_id: format!("{arch} {sha}"),
        backbone: Backbone::ResNet(model),
        load_report: Some(report),
    })
}

fn efficientnet_torch(
    name: &str,
    file: &Path,
    device: &Device,
) -> Result<Pretrained, TransferError> {
    let model = flint_models::EfficientNetLite0Config::new()
        .try_init(device)
        .map_err(|e| TransferError::Invalid(e.to_string()))?;
    let (model, report) = load_weights(model, file, &LoadOptions::new())?;
    let classifier = model._fc.clone();
    let input = InputSpec {
        normalize: Normalize::new(vec![127.0 / 255.0; 3], vec![128.0 / 255.0; 3])?,
        ..InputSpec::imagenet()
    };
    let sha = file_sha256(file)?;
    Ok(Pretrained {
        name: name.into(),
        feature_dim: 1280,
        source: Some(SourceRecord::new(file, sha.clone(), &input)),
        input,
        classifier: Some(classifier),
        class_names: imagenet_labels(),
        weights_id: sha,
        backbone: Backbone::EfficientNetLite0(model),
        load_report: Some(report),
    })
}

fn from_run(dir: &Path, device: &Device) -> Result<Pretrained, TransferError> {
    let (config, model) = flint_train::load_trained(dir, device)?;
    let feature_dim = crate::freeze::parameters(&model)
        .iter()
        .rev()
        .find(|p| p.path.ends_with("output.weight"))
        .map(|p| p.shape[0])
        .ok_or_else(|| TransferError::Invalid(format!("{}: no output layer", dir.display())))?;
    let dataset: flint_data::KnownDataset = config
        .dataset
        .parse()
        .map_err(|e: flint_data::DataError| TransferError::Invalid(e.to_string()))?;
    let shape = match dataset {
        flint_data::KnownDataset::Mnist | flint_data::KnownDataset::FashionMnist => [1, 28, 28],
        flint_data::KnownDataset::Cifar10 => [3, 32, 32],
        flint_data::KnownDataset::Hymenoptera => {
            return Err(TransferError::Invalid(format!(
                "{}: not a small-image run",
                dir.display()
            )));
        }
    };
    // The configuration and the final result identify a finished run's weights.
    let sha = flint_io::fs::sha256_file;
    let weights_id =
        sha(&dir.join("config.json"))? + &sha(&dir.join("result.json")).unwrap_or_default();
    Ok(Pretrained {
        name: dir.display().to_string(),
        backbone: Backbone::Flint(model),
        input: InputSpec {
            channels: shape[0],
            size: shape[1] as u32,
            resize: shape[1] as u32,
            normalize: Normalize::new(vec![0.0; shape[0]], vec![1.0; shape[0]])?,
        },
        feature_dim,
        classifier: None,
        class_names: None,
        weights_id,
        load_report: None,
        source: None,
    })
}

/// The kinds of catalogue files, for `flint models`.
pub fn catalog_rows() -> Vec<(&'static str, FileKind, Result<PathBuf, TransferError>)> {
    catalog::CATALOG
        .iter()
        .map(|f| (f.file, f.kind, find_model_file(&[f.file])))
        .collect()
}
