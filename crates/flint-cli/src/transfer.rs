//! `flint finetune` and `flint models`.

use std::path::PathBuf;

use clap::Args;
use flint_transfer::{FinetuneConfig, FinetuneOptions, Strategy};

use crate::{ComputeArgs, OptimArgs, OutputArgs};

/// `flint finetune`.
#[derive(Args, Debug)]
pub struct FinetuneArgs {
    /// Pretrained model: a name from `flint models`, an .onnx file (read at run time and cut
    /// before its classifier), a .pt/.pth/.safetensors file, or a `flint train` run directory.
    #[arg(long, required_unless_present = "resume")]
    pub pretrained: Option<String>,
    /// ONNX: where to cut the network: `auto` (before its final Gemm/MatMul, the default) or
    /// the name of a node (its output) or tensor (`flint models inspect FILE` shows them).
    #[arg(long)]
    pub cut: Option<String>,
    /// ONNX: square input side in pixels (default: the file's declared input, else 224); the
    /// evaluation resize is side x 256 / 224, as torchvision's.
    #[arg(long)]
    pub input_size: Option<u32>,
    /// ONNX: pixel normalisation: imagenet (default for RGB; the catalogue's
    /// efficientnet-lite0 file defaults to its own (255 x - 127) / 128), inception (mean 0.5,
    /// std 0.5), none, or MEANS/STDS with one value per channel, e.g.
    /// 0.485,0.456,0.406/0.229,0.224,0.225.
    #[arg(long)]
    pub normalize: Option<String>,
    /// .pth/.safetensors: the architecture of a torchvision state dict.
    #[arg(long)]
    pub arch: Option<String>,
    /// Image folder: `train/<class>/*` and `val/<class>/*`, or `<class>/*` (split by
    /// --val-fraction).
    #[arg(long, required_unless_present = "resume")]
    pub data: Option<PathBuf>,
    /// feature-extract (frozen backbone, cached features, head only), finetune (everything,
    /// backbone at a lower rate) or gradual (head first, then backbone groups top-down).
    #[arg(long, default_value = "feature-extract")]
    pub strategy: String,
    /// Epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Optimiser and schedule (default: SGD at 0.001 with momentum 0.9, the rate times 0.1
    /// every 7 epochs, as PyTorch's tutorial).
    #[command(flatten)]
    pub optim: OptimArgs,
    /// The backbone's learning rate as a fraction of the head's.
    #[arg(long)]
    pub backbone_lr_factor: Option<f64>,
    /// Dropout before the new head.
    #[arg(long)]
    pub head_dropout: Option<f64>,
    /// Gradual: epochs between unfreezing the next backbone group.
    #[arg(long)]
    pub unfreeze_every: Option<usize>,
    /// Gradual: number of backbone groups.
    #[arg(long)]
    pub groups: Option<usize>,
    /// Keep parameters matching this regular expression frozen (repeatable), e.g.
    /// `backbone\..*conv2d1\.`.
    #[arg(long)]
    pub freeze: Vec<String>,
    /// Validation fraction when the folder has no val/.
    #[arg(long)]
    pub val_fraction: Option<f64>,
    /// No random-crop/flip augmentation while the backbone trains.
    #[arg(long)]
    pub no_augment: bool,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Loader threads.
    #[arg(long)]
    pub workers: Option<usize>,
    /// Feature cache folder (default: $FLINT_CACHE/features or ~/.cache/flint/features).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Continue the fine-tuning run in this directory from its last checkpoint, with the
    /// configuration it was started with (flags that would change it are refused).
    #[arg(long, conflicts_with_all = [
        "pretrained", "cut", "input_size", "normalize", "arch", "data", "strategy", "epochs", "batch_size", "optimizer", "lr", "momentum",
        "nesterov", "weight_decay", "clip_grad_norm", "schedule", "warmup", "step_size", "gamma", "backbone_lr_factor", "head_dropout",
        "unfreeze_every", "groups", "freeze", "val_fraction", "no_augment", "seed", "workers",
        "output",
    ])]
    pub resume: Option<PathBuf>,
    #[command(flatten)]
    pub out: OutputArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

impl FinetuneArgs {
    /// The run's configuration.
    pub fn to_config(&self) -> Result<FinetuneConfig, String> {
        let strategy: Strategy = self
            .strategy
            .parse()
            .map_err(|e: flint_transfer::TransferError| e.to_string())?;
        let (Some(pretrained), Some(data)) = (&self.pretrained, &self.data) else {
            return Err(
                "--pretrained and --data are required (or --resume <run directory>)".into(),
            );
        };
        let mut c = FinetuneConfig::new(pretrained.clone(), data.clone()).with_strategy(strategy);
        if let Some(v) = self.epochs {
            c.epochs = v;
        }
        if let Some(v) = self.batch_size {
            c.batch_size = v;
        }
        self.optim.apply(&mut c.optimizer, &mut c.schedule);
        if let Some(v) = self.backbone_lr_factor {
            c.backbone_lr_factor = v;
        }
        if let Some(v) = self.head_dropout {
            c.head_dropout = v;
        }
        if let Some(v) = self.unfreeze_every {
            c.unfreeze_every = v;
        }
        if let Some(v) = self.groups {
            c.groups = v;
        }
        c.freeze = self.freeze.clone();
        if let Some(v) = self.val_fraction {
            c.val_fraction = v;
        }
        if self.no_augment {
            c.augment = false;
        }
        if let Some(v) = self.seed {
            c.seed = v;
        }
        if let Some(v) = self.workers {
            c.workers = v;
        }
        c.cut = self.cut.clone();
        c.input_size = self.input_size;
        c.normalize = self.normalize.clone();
        c.arch = self.arch.clone();
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }
}

/// Runs `flint finetune`.
pub fn run_finetune(args: &FinetuneArgs) -> Result<(), String> {
    let device = args.compute.setup()?;
    let options = FinetuneOptions {
        output: args.out.output.clone(),
        device,
        progress: args.out.progress(),
        cache_dir: args.cache_dir.clone(),
        stop_after: args.out.stop_after,
    };
    let outcome = match &args.resume {
        Some(dir) => flint_transfer::finetune::resume(dir, &options),
        None => flint_transfer::finetune(&args.to_config()?, &options),
    };
    outcome.map(|_| ()).map_err(|e| e.to_string())
}

/// `flint models`.
#[derive(Args, Debug)]
pub struct ModelsArgs {
    /// Also list this model's parameter names and shapes (the names --freeze matches).
    #[arg(long)]
    pub params: Option<String>,
    /// Inspect a file instead of listing the catalogue.
    #[command(subcommand)]
    pub command: Option<ModelsCommand>,
}

/// `flint models <command>`.
#[derive(clap::Subcommand, Debug)]
pub enum ModelsCommand {
    /// What an ONNX file holds and how flint reads it: inputs, outputs, operators (and any flint
    /// cannot run), parameter count, the automatic cut point and the feature size.
    Inspect(InspectArgs),
}

/// `flint models inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    /// The .onnx file (or a catalogue name such as mobilenetv2).
    pub file: String,
    /// Where to cut, as `flint finetune --cut` (default auto).
    #[arg(long)]
    pub cut: Option<String>,
    /// Input side, as `flint finetune --input-size`.
    #[arg(long)]
    pub input_size: Option<u32>,
    /// Normalisation, as `flint finetune --normalize`.
    #[arg(long)]
    pub normalize: Option<String>,
}

/// Runs `flint models`.
pub fn run_models(args: &ModelsArgs) -> Result<(), String> {
    if let Some(ModelsCommand::Inspect(inspect)) = &args.command {
        return run_inspect(inspect);
    }
    println!("pretrained models (flint finetune --pretrained <name>):");
    for m in flint_transfer::available() {
        match &m.status {
            Ok(place) => println!(
                "  {:<20} {}\n  {:<20} available: {place}",
                m.name, m.description, ""
            ),
            Err(why) => println!(
                "  {:<20} {}\n  {:<20} unavailable: {why}",
                m.name, m.description, ""
            ),
        }
    }
    println!(
        "  {:<20} any ONNX file, read at run time (`flint models inspect FILE` shows how)",
        "<file>.onnx"
    );
    println!("\nmodel files searched in:");
    for (dir, why) in flint_transfer::pretrained::model_dirs() {
        println!("  {} ({why})", dir.display());
    }
    if let Some(name) = &args.params {
        let device = burn::tensor::Device::flex();
        let p = flint_transfer::load_pretrained(name, &device).map_err(|e| e.to_string())?;
        let model = flint_transfer::TransferModel {
            head: flint_transfer::Head::new(p.feature_dim, 2, 0.0, &device)
                .map_err(|e| e.to_string())?,
            backbone: p.backbone,
        };
        println!("\nparameters of {name} with a 2-class head:");
        for info in flint_transfer::freeze::parameters(&model) {
            println!("  {:<50} {:?}", info.path, info.shape);
        }
    }
    Ok(())
}

/// Runs `flint models inspect FILE`.
pub fn run_inspect(args: &InspectArgs) -> Result<(), String> {
    let err = |e: flint_transfer::TransferError| e.to_string();
    // A catalogue name inspects its verified file.
    let path = match flint_transfer::pretrained::catalogue_files(&args.file) {
        Some(files) if !std::path::Path::new(&args.file).exists() => {
            flint_transfer::pretrained::find_model_file(files).map_err(err)?
        }
        _ => PathBuf::from(&args.file),
    };
    if !path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("onnx"))
    {
        return Err(format!(
            "{}: flint models inspect reads ONNX files (.onnx); `flint models --params NAME` \
             lists the parameters of other networks",
            path.display()
        ));
    }
    let info = flint_onnx::read_file_info(&path).map_err(|e| e.to_string())?;
    let sha = flint_transfer::pretrained::file_sha256(&path).map_err(err)?;
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("{}", path.display());
    println!(
        "  {:.1} MB, SHA-256 {sha}{}",
        size as f64 / 1e6,
        if info.producer.is_empty() {
            String::new()
        } else {
            format!(", written by {}", info.producer)
        }
    );
    println!("inputs:");
    for i in &info.inputs {
        println!("  {} {}", i.name, i.shape_text());
    }
    println!("outputs:");
    for o in &info.outputs {
        println!("  {} {}", o.name, o.shape_text());
    }
    let nodes: usize = info.operators.iter().map(|(_, n)| n).sum();
    let ops: Vec<String> = info
        .operators
        .iter()
        .map(|(op, n)| format!("{op} x{n}"))
        .collect();
    println!(
        "operators ({} kinds, {nodes} nodes): {}",
        info.operators.len(),
        ops.join(", ")
    );
    if !info.unsupported.is_empty() {
        println!("unsupported ({} nodes):", info.unsupported.len());
        for e in &info.unsupported {
            println!("  {e}");
        }
        return Err(format!(
            "{}: {} node(s) use operators or attributes flint cannot run (listed above)",
            path.display(),
            info.unsupported.len()
        ));
    }
    println!("unsupported: none");
    let device = burn::tensor::Device::flex();
    let whole = flint_onnx::OnnxModel::load(&path, &device).map_err(|e| e.to_string())?;
    let summary = whole.inspect();
    println!("opset: {}", summary.opset);
    println!("parameters: {}", summary.parameters);
    match &summary.auto_cut {
        Some((node, _)) => println!("automatic cut: before node {node}"),
        None => println!("automatic cut: none (no Gemm or MatMul node; give --cut NAME)"),
    }
    let options = flint_transfer::PretrainedOptions {
        cut: args.cut.clone().filter(|c| c != "auto"),
        input_size: args.input_size,
        normalize: args
            .normalize
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(err)?,
        arch: None,
    };
    let spec = path.display().to_string();
    let p = flint_transfer::load_pretrained_with(&spec, &options, &device).map_err(err)?;
    let source = p.source.as_ref();
    println!(
        "features: {} per image, read at tensor {}",
        p.feature_dim,
        source.and_then(|s| s.cut.as_deref()).unwrap_or("?")
    );
    match &p.classifier {
        Some(c) => {
            let [inputs, classes] = c.weight.dims();
            println!("classifier cut off: linear {inputs} -> {classes}");
        }
        None => println!("classifier cut off: not a single linear layer"),
    }
    let n = &p.input.normalize;
    println!(
        "input for fine-tuning: {}x{}x{}, resize {} then centre crop, normalise mean {:?} std {:?}",
        p.input.channels,
        p.input.size,
        p.input.size,
        p.input.resize,
        n.mean(),
        n.std()
    );
    Ok(())
}

/// `flint predict` on a fine-tuning run.
pub fn predict(args: &crate::PredictArgs, device: &burn::tensor::Device) -> Result<(), String> {
    use burn::tensor::{Tensor, TensorData};
    let (config, model, input) =
        flint_transfer::load_finetuned(&args.checkpoint, device).map_err(|e| e.to_string())?;
    let (c, s) = (input.channels, input.size as usize);
    crate::classify_files(
        &args.images,
        args.top_k,
        |k| config.classes[k].clone(),
        |path| flint_transfer::load_image_checked(path, &input).map_err(|e| e.to_string()),
        |pixels| {
            model.forward(Tensor::from_data(
                TensorData::new(pixels, [1, c, s, s]),
                device,
            ))
        },
    )
}

/// `flint eval` on a fine-tuning run: its network on its validation images (the last line is
/// `val accuracy: <fraction>`).
pub fn eval(args: &crate::EvalArgs, device: &burn::tensor::Device) -> Result<(), String> {
    let (config, model, input) =
        flint_transfer::load_finetuned(&args.checkpoint, device).map_err(|e| e.to_string())?;
    let f = &config.finetune;
    let data = flint_transfer::TransferData::open_folder(&f.data, f.val_fraction, f.seed)
        .map_err(|e| e.to_string())?;
    if data.class_names() != config.classes {
        return Err(format!(
            "{}: the image folder's classes {:?} are not the run's {:?}",
            f.data.display(),
            data.class_names(),
            config.classes
        ));
    }
    let val = flint_transfer::finetune::SplitBatches {
        data: &data,
        val: true,
        augment: false,
        input: &input,
        workers: f.workers,
    };
    let report =
        flint_train::evaluate_model(&model, &val, 32, device).map_err(|e| e.to_string())?;
    println!(
        "{} fine-tuned ({}) on {} val ({} images)",
        f.pretrained,
        f.strategy.name(),
        f.data.display(),
        report.confusion.total()
    );
    for (name, acc) in report.class_names.iter().zip(&report.per_class_accuracy) {
        println!("  {name:<14} {:.2}%", acc * 100.0);
    }
    println!("val loss: {:.4}", report.loss);
    println!("val accuracy: {:.4}", report.accuracy);
    Ok(())
}
