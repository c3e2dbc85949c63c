//! Fine-tune a pretrained ImageNet network on a small image folder (flint-transfer).
//!
//! PyTorch's transfer-learning tutorial, in flint: MobileNetV2 pretrained on ImageNet, the
//! hymenoptera set (245 training images of ants and bees, 153 for validation), the backbone
//! frozen and its features computed once (then cached), a new linear head trained on them.
//! Swap `Strategy::FeatureExtract` for `Strategy::Finetune` to train the whole network, the
//! backbone at a tenth of the head's learning rate.
//!
//! The data set is found like every flint data set (`$FLINT_DATA`, `./data`, ...; see the
//! README); `mobilenetv2.onnx` is read at run time from the model folders (`$FLINT_MODELS`,
//! `./models`, ...; `flint models` lists where it was found), checked against the catalogue's
//! SHA-256. Any other ONNX file works the same way: pass its path instead of the name. Runs in
//! seconds once the features are cached:
//!
//! ```text
//! cargo run --release --example finetune_folder
//! ```

use flint_data::{HYMENOPTERA, Locator};
use flint_train::ProgressMode;
use flint_transfer::{FinetuneConfig, FinetuneOptions, Strategy, finetune};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let folder = Locator::new().locate(&HYMENOPTERA)?.dir;
    let config = FinetuneConfig::new("mobilenetv2".into(), folder)
        .with_strategy(Strategy::FeatureExtract)
        .with_epochs(5);
    let options = FinetuneOptions {
        progress: ProgressMode::Bar,
        ..FinetuneOptions::default()
    };
    let outcome = finetune(&config, &options)?;
    println!(
        "features computed in {:.1} s ({:?})",
        outcome.extract_secs, outcome.cache
    );
    println!(
        "best val accuracy {:.4} at epoch {}; the run (checkpoints, report, curves) is in {}",
        outcome.best.0,
        outcome.best.1,
        outcome.run_dir.display()
    );
    println!("val accuracy: {:.4}", outcome.final_val.accuracy);
    Ok(())
}
