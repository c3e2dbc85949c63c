//! Train a burn model of your own with flint's engine (flint-train).
//!
//! The model is yours: any burn `Module`. Implementing [`Classify`] (images in, logits out) is
//! all flint-train asks of an image classifier; the engine brings the optimiser and schedule,
//! clipping, early stopping, checkpoints with exact resume and the run directory. (For batches
//! that are not images, implement [`flint_train::TrainStep`] for your own batch type instead.)
//!
//! Data: 5,000 MNIST training images and 1,000 test images, found by flint-data
//! (`$FLINT_DATA`, `./data`, the cache, or a checksummed download). Runs in seconds:
//!
//! ```text
//! cargo run --release --example custom_model
//! ```

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::tensor::{Device, Tensor};
use flint_data::{LabelledSet, Locator, Split, mnist, random_subset};
use flint_train::{
    Classify, Engine, EvalSet, ImageBatches, LoopConfig, OptimizerConfig, ProgressMode,
    ScheduleConfig, ScheduleKind, evaluate_model,
};

/// A small LeNet-style network: two 3x3 convolutions, each followed by 2x2 max pooling, and a
/// linear classifier on the 7x7 feature maps.
#[derive(Module, Debug)]
struct TinyConvNet {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc: Linear,
    relu: Relu,
}

impl TinyConvNet {
    fn new(classes: usize, device: &Device) -> Self {
        let conv = |c_in, c_out| {
            Conv2dConfig::new([c_in, c_out], [3, 3])
                .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                .init(device)
        };
        Self {
            conv1: conv(1, 16),
            conv2: conv(16, 32),
            // burn's pooling stride defaults to 1: set it, as PyTorch's default does.
            pool: MaxPool2dConfig::new([2, 2]).with_strides([2, 2]).init(),
            fc: LinearConfig::new(32 * 7 * 7, classes).init(device),
            relu: Relu::new(),
        }
    }
}

/// What flint-train needs from an image classifier.
impl Classify for TinyConvNet {
    /// # Shapes
    ///
    /// - images: `[batch, 1, 28, 28]`
    /// - output: `[batch, classes]`
    fn logits(&self, images: Tensor<4>) -> Tensor<2> {
        let x = self
            .pool
            .forward(self.relu.forward(self.conv1.forward(images)));
        let x = self.pool.forward(self.relu.forward(self.conv2.forward(x)));
        self.fc.forward(x.flatten(1, 3))
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let locator = Locator::new();
    let train = random_subset(&mnist(Split::Train, &locator)?, 5_000, 0)?;
    let test = random_subset(&mnist(Split::Test, &locator)?, 1_000, 0)?;
    let classes = train.class_names().len();
    let (train, test) = (ImageBatches::new(train), ImageBatches::new(test));

    let device = Device::flex();
    device.seed(0);
    // The model starts on the training device: the plain device made autodiff.
    let model = TinyConvNet::new(classes, &device.clone().autodiff());
    let config = LoopConfig::new()
        .with_epochs(3)
        .with_batch_size(64)
        .with_optimizer(OptimizerConfig::new().with_lr(2e-3))
        .with_schedule(ScheduleConfig::new().with_kind(ScheduleKind::Cosine));

    let trained = Engine::new(config, &train)
        .devices(vec![device.clone()])
        .eval(EvalSet {
            data: &test,
            name: "test",
            batch_size: 500,
        })
        .progress(ProgressMode::Bar)
        .fit(model, false)?;

    let report = evaluate_model(&trained.model.valid(), &test, 500, &device)?;
    println!("test accuracy: {:.4}", report.accuracy);
    Ok(())
}
