//! What a fine-tuning run leaves behind and how it is read back: `report.md`, and the trained
//! network for `flint eval`, `flint predict` and `--resume`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;
use flint_data::{ImageTransform, SkippedFile};
use flint_train::checkpoint;
use flint_train::{EpochMetrics, EvalReport};

use super::{FinetuneConfig, RunConfig};
use crate::backbone::InputSpec;
use crate::cache::CacheStatus;
use crate::error::TransferError;
use crate::model::{Head, TransferModel};

#[allow(clippy::too_many_arguments)]
pub(crate) fn report_markdown(
    config: &FinetuneConfig,
    skipped: &[SkippedFile],
    history: &[EpochMetrics],
    best: (f64, usize),
    final_val: &EvalReport,
    wall_secs: f64,
    extract_secs: f64,
    cache: Option<&CacheStatus>,
    plotted: bool,
) -> String {
    use std::fmt::Write as _;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# flint fine-tuning report: {} on {}\n",
        config.pretrained,
        config.data.display()
    );
    let o = &config.optimizer;
    let _ = writeln!(
        md,
        "- strategy: `{}`; head dropout {}; backbone lr factor {}",
        config.strategy.name(),
        config.head_dropout,
        config.backbone_lr_factor
    );
    let _ = writeln!(
        md,
        "- optimiser: {:?}, lr {}, momentum {}, weight decay {}; schedule {:?} (step {}, gamma {})",
        o.kind,
        o.lr,
        o.momentum,
        o.weight_decay,
        config.schedule.kind,
        config.schedule.step_size,
        config.schedule.gamma
    );
    let _ = writeln!(
        md,
        "- epochs {}; batch size {}; seed {}",
        config.epochs, config.batch_size, config.seed
    );
    let _ = writeln!(
        md,
        "- wall time {wall_secs:.1} s (feature extraction {extract_secs:.1} s{})\n",
        cache.map_or(String::new(), |c| format!(", cache: {c:?}"))
    );
    let _ = writeln!(
        md,
        "## Result\n\n**best val accuracy: {:.2} %** (epoch {}); final val accuracy {:.2} % (loss {:.4})\n",
        best.0 * 100.0,
        best.1,
        final_val.accuracy * 100.0,
        final_val.loss
    );
    if plotted {
        let _ = writeln!(md, "![loss and accuracy curves](curves.png)\n");
    }
    let _ = writeln!(
        md,
        "## Epochs\n\n{}",
        flint_train::report::epoch_table(history, "val")
    );
    let _ = writeln!(md, "## Per-class accuracy (final model)\n");
    for (name, acc) in final_val
        .class_names
        .iter()
        .zip(&final_val.per_class_accuracy)
    {
        let _ = writeln!(md, "- {name}: {:.2} %", acc * 100.0);
    }
    if !skipped.is_empty() {
        let _ = writeln!(
            md,
            "\n## Skipped files\n\n{} files of the image folder could not be used:\n",
            skipped.len()
        );
        for file in skipped {
            let _ = writeln!(md, "- `{}`: {}", file.path.display(), file.reason);
        }
    }
    md
}

/// Whether `dir` is (or is inside) a fine-tuning run directory.
pub fn is_finetune_run(path: &Path) -> bool {
    run_root(path).is_some()
}

fn run_root(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|a| {
            flint_io::fs::read_regular(&a.join("config.json"), 4 << 20)
                .ok()
                .and_then(|b| serde_json::from_slice::<RunConfig>(&b).ok())
                .is_some()
        })
        .map(Path::to_path_buf)
}

/// A fine-tuned network from its run directory (best checkpoint) or a checkpoint folder in one,
/// in inference mode, with its configuration and the inputs it expects.
pub fn load_finetuned(
    path: &Path,
    device: &Device,
) -> Result<(RunConfig, TransferModel, InputSpec), TransferError> {
    let root = run_root(path).ok_or_else(|| {
        TransferError::Invalid(format!(
            "{}: not a fine-tuning run directory (no config.json of `flint finetune`)",
            path.display()
        ))
    })?;
    let config_path = root.join("config.json");
    let config: RunConfig = flint_train::config::load_strict(&config_path)?;
    let ckpt = if path.join("state.json").is_file() {
        path.to_path_buf()
    } else {
        let best = root.join("checkpoints").join("best");
        if best.join("state.json").is_file() {
            best
        } else {
            root.join("checkpoints").join("last")
        }
    };
    let pretrained = super::load_for_run(&config.finetune, config.source.as_ref(), device)?;
    let input = pretrained.input.clone();
    let model = TransferModel {
        head: Head::new(
            pretrained.feature_dim,
            config.classes.len(),
            config.finetune.head_dropout,
            device,
        )?,
        backbone: pretrained.backbone,
    };
    let (dir, state) = checkpoint::load_state(&ckpt)?;
    checkpoint::check_config_unchanged(&config_path, &state)?;
    let model = checkpoint::load_model(&dir, model)?;
    Ok((config, model.valid(), input))
}

/// Reads an image file and prepares it as `input` says (evaluation transform).
pub fn load_image(path: &Path, input: &InputSpec) -> Result<Vec<f32>, TransferError> {
    load_image_checked(path, input).map(|d| d.value)
}

/// [`load_image`], with a warning when the file decoded but is damaged (a truncated JPEG): the
/// caller should tell the user, since the network saw a partly grey picture.
pub fn load_image_checked(
    path: &Path,
    input: &InputSpec,
) -> Result<flint_data::Decoded<Vec<f32>>, TransferError> {
    if input.channels != 3 {
        let mut decoded = flint_data::image_folder::load_for_model_checked(
            path,
            input.channels,
            input.size as usize,
        )?;
        input.normalize.apply(&mut decoded.value, input.channels);
        return Ok(decoded);
    }
    let flint_data::Decoded {
        value: img,
        warning,
    } = flint_data::image_folder::load_rgb_checked(path)?;
    let transform = ImageTransform::Eval {
        resize: input.resize,
        crop: input.size,
    };
    use rand::SeedableRng;
    let mut data = transform.apply(&img, &mut rand::rngs::StdRng::seed_from_u64(0));
    input.normalize.apply(&mut data, 3);
    Ok(flint_data::Decoded {
        value: data,
        warning,
    })
}
