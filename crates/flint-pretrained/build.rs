//! Writes `BUILD_STATUS`, and with the `codegen` feature finds the pretrained ONNX files and
//! turns each into a burn module with burn-onnx.
//!
//! Without `codegen` (the default) no model file is read: every ONNX network's status says it
//! was not generated, and flint reads the files at run time with flint-onnx.
//!
//! With `codegen`, a file that is missing or fails its checksum is skipped with a warning: the
//! crate still builds, and asking for that model at run time gives a message saying what to
//! do. The ImageNet backbones are cut before their final `Gemm`, so the generated module
//! returns the pooled features; the classifier's weights are kept beside it, so the full
//! network is still available (`backbone + classifier`), and a new head can replace the
//! classifier.

use std::fmt::Write as _;
#[cfg(feature = "codegen")]
use std::path::Path;
use std::path::PathBuf;

#[cfg(feature = "codegen")]
use burn_onnx::ModelGen;
#[cfg(feature = "codegen")]
use onnx_ir::{Message, ModelProto};
#[cfg(feature = "codegen")]
use sha2::{Digest, Sha256};

#[path = "src/catalog.rs"]
#[allow(dead_code)]
mod catalog;

/// The ONNX networks compiled in: (catalogue file, module name, cut before the classifier).
const ONNX_MODELS: &[(&str, &str, bool)] = &[
    ("mobilenetv2.onnx", "mobilenetv2", true),
    ("efficientnet-lite0.onnx", "efficientnet_lite0", true),
    ("mnist-cnn-bn.onnx", "mnist_cnn_bn", false),
];

#[cfg(not(feature = "codegen"))]
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/catalog.rs");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mut generated = String::new();
    for (_, module, _) in ONNX_MODELS {
        println!("cargo::rustc-check-cfg=cfg(flint_model_{module})");
    }
    writeln!(generated, "/// What the build found for each ONNX network.").unwrap();
    writeln!(
        generated,
        "pub const BUILD_STATUS: &[(&str, Result<&str, &str>)] = &["
    )
    .unwrap();
    for (file, _, _) in ONNX_MODELS {
        assert!(
            catalog::catalog_file(file).is_some(),
            "ONNX model missing from the catalogue"
        );
        let why = format!(
            "{file} was not compiled in: flint-pretrained's `codegen` feature is off (flint reads ONNX files at run time with flint-onnx)"
        );
        writeln!(generated, "    ({file:?}, Err({why:?})),").unwrap();
    }
    writeln!(generated, "];").unwrap();
    // Read by dependents' build scripts as DEP_FLINT_PRETRAINED_MODELS: none.
    println!("cargo:models=");
    std::fs::write(out.join("build_status.rs"), generated).unwrap();
}

#[cfg(feature = "codegen")]
fn main() {
    println!("cargo:rerun-if-env-changed=FLINT_MODELS");
    println!("cargo:rerun-if-changed=src/catalog.rs");
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let workspace = manifest
        .join("../..")
        .canonicalize()
        .unwrap_or(manifest.clone());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let dirs = catalog::model_dirs(
        std::env::var_os("FLINT_MODELS").as_deref(),
        &workspace,
        dirs::cache_dir(),
    );
    for (d, _) in &dirs {
        println!("cargo:rerun-if-changed={}", d.display());
    }

    let mut generated = String::new();
    let mut compiled = Vec::new();
    for (_, module, _) in ONNX_MODELS {
        println!("cargo::rustc-check-cfg=cfg(flint_model_{module})");
    }
    writeln!(generated, "/// What the build found for each ONNX network.").unwrap();
    writeln!(
        generated,
        "pub const BUILD_STATUS: &[(&str, Result<&str, &str>)] = &["
    )
    .unwrap();
    for (file, module, cut) in ONNX_MODELS {
        let entry = catalog::catalog_file(file).expect("ONNX model missing from the catalogue");
        let status = match find(file, entry.sha256, &dirs) {
            Ok(path) => {
                println!("cargo:rerun-if-changed={}", path.display());
                match convert(&path, module, *cut, &out) {
                    Ok(()) => {
                        println!("cargo:rustc-cfg=flint_model_{module}");
                        compiled.push(*module);
                        Ok(path.display().to_string())
                    }
                    Err(e) => Err(format!("{file} could not be converted: {e}")),
                }
            }
            Err(e) => Err(e),
        };
        if let Err(e) = &status {
            println!("cargo:warning=pretrained model {module} unavailable: {e}");
        }
        match status {
            Ok(p) => writeln!(generated, "    ({file:?}, Ok({p:?})),").unwrap(),
            Err(e) => writeln!(generated, "    ({file:?}, Err({e:?})),").unwrap(),
        }
    }
    writeln!(generated, "];").unwrap();
    // Read by dependents' build scripts as DEP_FLINT_PRETRAINED_MODELS.
    println!("cargo:models={}", compiled.join(","));
    std::fs::write(out.join("build_status.rs"), generated).unwrap();
}

#[cfg(feature = "codegen")]
/// The first file with the right name and checksum in the search folders.
fn find(file: &str, sha256: &str, dirs: &[(PathBuf, &str)]) -> Result<PathBuf, String> {
    let mut notes = Vec::new();
    for (dir, why) in dirs {
        let path = dir.join(file);
        let Ok(bytes) = std::fs::read(&path) else {
            notes.push(format!("not in {} ({why})", dir.display()));
            continue;
        };
        let actual = format!("{:x}", Sha256::digest(&bytes));
        if actual == sha256 {
            return Ok(path);
        }
        notes.push(format!(
            "{} has SHA-256 {actual}, expected {sha256}",
            path.display()
        ));
    }
    Err(format!(
        "{file}: {}; run `cargo xtask models fetch` or set FLINT_MODELS to a folder holding it, then rebuild",
        notes.join("; ")
    ))
}

#[cfg(feature = "codegen")]
/// Writes `<module>.rs` (+ weights) into `OUT_DIR/models`, cutting the classifier if asked.
fn convert(path: &Path, module: &str, cut: bool, out: &Path) -> Result<(), String> {
    let models = out.join("models");
    std::fs::create_dir_all(&models).map_err(|e| e.to_string())?;
    let input = models.join(format!("{module}.onnx"));
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if cut {
        let mut proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| e.to_string())?;
        let classifier = cut_classifier(&mut proto)?;
        std::fs::write(
            models.join(format!("{module}_classifier.bin")),
            &classifier.bytes,
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            models.join(format!("{module}_classifier.rs")),
            format!(
                "/// Classes and features of the cut classifier.\npub const CLASSIFIER_SHAPE: [usize; 2] = [{}, {}];\n\
                 /// Weight `[classes, features]` then bias `[classes]`, little-endian f32.\n\
                 pub static CLASSIFIER: &[u8] = include_bytes!(concat!(env!(\"OUT_DIR\"), \"/models/{module}_classifier.bin\"));\n",
                classifier.classes, classifier.features
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(&input, proto.write_to_bytes().map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    } else {
        std::fs::write(&input, &bytes).map_err(|e| e.to_string())?;
    }
    ModelGen::new()
        .input(input.to_str().ok_or("non-UTF-8 path")?)
        .out_dir("models/")
        .load_strategy(burn_onnx::LoadStrategy::Embedded)
        .run_from_script();
    std::fs::remove_file(&input).ok();
    Ok(())
}

#[cfg(feature = "codegen")]
struct Classifier {
    classes: usize,
    features: usize,
    bytes: Vec<u8>,
}

#[cfg(feature = "codegen")]
/// Removes the last `Gemm` (and anything after it) and makes its input the graph's output.
fn cut_classifier(proto: &mut ModelProto) -> Result<Classifier, String> {
    let graph = proto.graph.as_mut().ok_or("no graph")?;
    let gemm = graph
        .node
        .iter()
        .rposition(|n| n.op_type == "Gemm")
        .ok_or("no Gemm node to cut")?;
    let node = graph.node[gemm].clone();
    let mut trans_b = false;
    for a in &node.attribute {
        let ok = match a.name.as_str() {
            "alpha" | "beta" => a.f == 1.0,
            "transA" => a.i == 0,
            "transB" => {
                trans_b = a.i == 1;
                true
            }
            _ => true,
        };
        if !ok {
            return Err(format!("unexpected Gemm attribute {}", a.name));
        }
    }
    let [features_name, weight_name, bias_name] = [0, 1, 2].map(|i| node.input.get(i).cloned());
    let (features_name, weight_name, bias_name) = (
        features_name.ok_or("Gemm without input")?,
        weight_name.ok_or("Gemm without weight")?,
        bias_name.ok_or("Gemm without bias")?,
    );
    let tensor = |name: &str| -> Result<(Vec<i64>, Vec<f32>), String> {
        let t = graph
            .initializer
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| format!("classifier tensor {name} is not an initializer"))?;
        let values = if !t.float_data.is_empty() {
            t.float_data.clone()
        } else {
            t.raw_data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        Ok((t.dims.clone(), values))
    };
    let (wdims, weight) = tensor(&weight_name)?;
    let (_, bias) = tensor(&bias_name)?;
    if wdims.len() != 2 {
        return Err(format!("classifier weight has shape {wdims:?}"));
    }
    // Stored `[classes, features]` (PyTorch's layout): transpose a `transB = 0` weight.
    let (classes, features, weight) = if trans_b {
        (wdims[0] as usize, wdims[1] as usize, weight)
    } else {
        let (f, c) = (wdims[0] as usize, wdims[1] as usize);
        let mut t = vec![0.0; f * c];
        for i in 0..f {
            for j in 0..c {
                t[j * f + i] = weight[i * c + j];
            }
        }
        (c, f, t)
    };
    if bias.len() != classes {
        return Err(format!(
            "classifier bias has {} values for {classes} classes",
            bias.len()
        ));
    }
    graph.node.truncate(gemm);
    graph
        .initializer
        .retain(|t| t.name != weight_name && t.name != bias_name);
    let mut output = graph
        .output
        .first()
        .cloned()
        .ok_or("graph without output")?;
    output.name = features_name;
    if let Some(tt) = output.type_.as_mut().filter(|t| t.has_tensor_type()) {
        let shape = tt.mut_tensor_type().shape.mut_or_insert_default();
        if shape.dim.len() == 2 {
            shape.dim[1].set_dim_value(features as i64);
        }
    }
    graph.output = vec![output];
    let mut bytes = Vec::with_capacity((weight.len() + bias.len()) * 4);
    for v in weight.iter().chain(&bias) {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    Ok(Classifier {
        classes,
        features,
        bytes,
    })
}
