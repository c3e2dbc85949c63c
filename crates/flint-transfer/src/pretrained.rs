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
use flint_models::MnistCnnBnConfig;
use flint_pretrained::catalog::{self, FileKind};

use crate::backbone::{Backbone, InputSpec, linear_from_pytorch};
use crate::error::TransferError;
use crate::load::{LoadOptions, LoadReport, load_weights};

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

/// Why a pretrained network cannot be used in this build.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    /// Its ONNX model was not compiled in (the build script's reason: file not found, checksum).
    #[error("{0}")]
    NotCompiled(&'static str),
    /// The file is not in flint-pretrained's catalogue.
    #[error("{0} is not in the catalogue")]
    NotInCatalogue(String),
    /// Its weight file is missing, unreadable or not the catalogued one (shared, so entries can
    /// be cloned).
    #[error(transparent)]
    Weights(Arc<TransferError>),
}

/// The ONNX networks, with their compiled-in status.
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
            status: compiled_status(file).map(|p| format!("compiled in from {p}")),
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

fn compiled_status(file: &str) -> Result<String, Unavailable> {
    flint_pretrained::BUILD_STATUS
        .iter()
        .find(|(f, _)| *f == file)
        .map(|(_, s)| s.map(str::to_string).map_err(Unavailable::NotCompiled))
        .unwrap_or_else(|| Err(Unavailable::NotInCatalogue(file.to_string())))
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
        "unknown pretrained model `{spec}`: not a known name ({}), a weight file or a run directory",
        available()
            .iter()
            .map(|m| m.name)
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// Loads a backbone: a name from [`available`], a `.pt`/`.pth`/`.safetensors` file of a known
/// architecture (`mnist-cnn-bn`), or the run directory of a `flint train` run.
pub fn load_pretrained(spec: &str, device: &Device) -> Result<Pretrained, TransferError> {
    let path = Path::new(spec);
    if path.join("config.json").is_file() {
        return from_run(path, device);
    }
    match spec {
        "mobilenetv2" => onnx_mobilenetv2(device),
        "efficientnet-lite0" => onnx_efficientnet(device),
        "efficientnet-lite0-torch" => {
            let file = find_model_file(&["efficientnet-lite0.pth"])?;
            efficientnet_torch(spec, &file, device)
        }
        "mnist-cnn-bn" => {
            let file = find_model_file(&["mnist-cnn-bn.safetensors", "mnist-cnn-bn.pt"])?;
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
                    "{spec}: cannot tell which architecture this weight file is for; flint \
                     loads PyTorch/safetensors weights of mnist-cnn-bn (mnist-cnn-bn.*) and \
                     efficientnet-lite0 (efficientnet-lite0.*)"
                )))
            }
        }
        _ => Err(unknown(spec)),
    }
}

#[cfg_attr(
    all(flint_model_mobilenetv2, flint_model_efficientnet_lite0),
    allow(dead_code)
)]
fn unavailable(name: &str, file: &str) -> TransferError {
    let why = compiled_status(file)
        .err()
        .map_or_else(String::new, |e| e.to_string());
    TransferError::Unavailable(format!(
        "pretrained model `{name}` is not compiled into this build: {why}"
    ))
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

#[cfg_attr(
    not(any(flint_model_mobilenetv2, flint_model_efficientnet_lite0)),
    allow(dead_code)
)]
fn classifier_from_bytes(bytes: &[u8], shape: [usize; 2], device: &Device) -> Linear {
    let values: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let (w, b) = values.split_at(shape[0] * shape[1]);
    linear_from_pytorch(w, b, shape, device)
}

#[cfg(flint_model_mobilenetv2)]
fn onnx_mobilenetv2(device: &Device) -> Result<Pretrained, TransferError> {
    use flint_pretrained::mobilenetv2 as m;
    Ok(Pretrained {
        name: "mobilenetv2".into(),
        backbone: Backbone::MobileNetV2(m::Model::from_embedded(device)),
        input: InputSpec::imagenet(),
        feature_dim: m::CLASSIFIER_SHAPE[1],
        classifier: Some(classifier_from_bytes(
            m::CLASSIFIER,
            m::CLASSIFIER_SHAPE,
            device,
        )),
        class_names: imagenet_labels(),
        weights_id: catalog::catalog_file("mobilenetv2.onnx")
            .map(|f| f.sha256.to_string())
            .unwrap_or_default(),
        load_report: None,
    })
}

#[cfg(not(flint_model_mobilenetv2))]
fn onnx_mobilenetv2(_device: &Device) -> Result<Pretrained, TransferError> {
    Err(unavailable("mobilenetv2", "mobilenetv2.onnx"))
}

#[cfg(flint_model_efficientnet_lite0)]
fn onnx_efficientnet(device: &Device) -> Result<Pretrained, TransferError> {
    use flint_pretrained::efficientnet_lite0 as m;
    // (x * 255 - 127) / 128 on [0, 1] pixels.
    let normalize = Normalize::new(vec![127.0 / 255.0; 3], vec![128.0 / 255.0; 3])?;
    Ok(Pretrained {
        name: "efficientnet-lite0".into(),
        backbone: Backbone::EfficientNetLite0Onnx(m::Model::from_embedded(device)),
        input: InputSpec {
            normalize,
            ..InputSpec::imagenet()
        },
        feature_dim: m::CLASSIFIER_SHAPE[1],
        classifier: Some(classifier_from_bytes(
            m::CLASSIFIER,
            m::CLASSIFIER_SHAPE,
            device,
        )),
        class_names: imagenet_labels(),
        weights_id: catalog::catalog_file("efficientnet-lite0.onnx")
            .map(|f| f.sha256.to_string())
            .unwrap_or_default(),
        load_report: None,
    })
}

#[cfg(not(flint_model_efficientnet_lite0))]
fn onnx_efficientnet(_device: &Device) -> Result<Pretrained, TransferError> {
    Err(unavailable("efficientnet-lite0", "efficientnet-lite0.onnx"))
}

fn mnist_cnn_bn(name: &str, file: &Path, device: &Device) -> Result<Pretrained, TransferError> {
    let model = MnistCnnBnConfig::new()
        .try_init(device)
        .map_err(|e| TransferError::Invalid(e.to_string()))?;
    let (model, report) = load_weights(model, file, &LoadOptions::new())?;
    let classifier = model.fc2.clone();
    Ok(Pretrained {
        name: name.into(),
        feature_dim: 32,
        input: InputSpec {
            channels: 1,
            size: 28,
            resize: 28,
            normalize: Normalize::new(vec![0.1307], vec![0.3081])?,
        },
        classifier: Some(classifier),
        class_names: Some((0..10).map(|d| d.to_string()).collect()),
        weights_id: file_sha256(file)?,
        backbone: Backbone::MnistCnnBn(model),
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
    Ok(Pretrained {
        name: name.into(),
        feature_dim: 1280,
        input: InputSpec {
            normalize: Normalize::new(vec![127.0 / 255.0; 3], vec![128.0 / 255.0; 3])?,
            ..InputSpec::imagenet()
        },
        classifier: Some(classifier),
        class_names: imagenet_labels(),
        weights_id: file_sha256(file)?,
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
    })
}

/// The kinds of catalogue files, for `flint models`.
pub fn catalog_rows() -> Vec<(&'static str, FileKind, Result<PathBuf, TransferError>)> {
    catalog::CATALOG
        .iter()
        .map(|f| (f.file, f.kind, find_model_file(&[f.file])))
        .collect()
}
