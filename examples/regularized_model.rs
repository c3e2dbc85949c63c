//! Add flint's dropout family and batch norm to a burn model of your own: flint-layers alone.
//!
//! The model below is an ordinary burn module. flint-layers supplies the regularisation: batch
//! norm with PyTorch's options, inverted dropout, DropConnect on the last layer, an L2 weight
//! penalty added to the loss and a max-norm constraint applied after each step. The loop is
//! burn's own (optimiser, loss, autodiff); nothing else from flint is needed.
//!
//! The data: three interleaved spirals in the plane, a classic case where an unregularised MLP
//! overfits a small training set. Runs in a few seconds:
//!
//! ```text
//! cargo run --release --example regularized_model
//! ```

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use flint_layers::{
    BatchNorm, BatchNormConfig, DropConnect, DropConnectConfig, Dropout, DropoutConfig,
    MaxNormConfig, MaxNormLayers, UnitWeights, WeightPenalty,
};

#[path = "support/spirals.rs"]
mod spirals;
use spirals::{accuracy, spirals, tensors};

/// A two-hidden-layer classifier regularised with flint's layers.
#[derive(Module, Debug)]
struct SpiralNet {
    fc1: Linear,
    bn1: BatchNorm,
    drop1: Dropout,
    fc2: Linear,
    bn2: BatchNorm,
    drop2: Dropout,
    /// The classifier's weights are dropped (Wan et al. 2013), not its activations.
    head: DropConnect,
    relu: Relu,
}

impl SpiralNet {
    fn new(hidden: usize, classes: usize, device: &Device) -> Self {
        Self {
            fc1: LinearConfig::new(2, hidden).init(device),
            bn1: BatchNormConfig::new(hidden).init(device),
            drop1: DropoutConfig::new(0.1).init(),
            fc2: LinearConfig::new(hidden, hidden).init(device),
            bn2: BatchNormConfig::new(hidden).init(device),
            drop2: DropoutConfig::new(0.1).init(),
            head: DropConnectConfig::new(LinearConfig::new(hidden, classes), 0.2).init(device),
            relu: Relu::new(),
        }
    }

    /// # Shapes
    ///
    /// - points: `[batch, 2]`
    /// - output: `[batch, classes]` (logits)
    fn forward(&self, points: Tensor<2>) -> Tensor<2> {
        let x = self.drop1.forward(
            self.relu
                .forward(self.bn1.forward(self.fc1.forward(points))),
        );
        let x = self
            .drop2
            .forward(self.relu.forward(self.bn2.forward(self.fc2.forward(x))));
        self.head.forward(x)
    }
}

/// The weights max-norm constrains: every layer's incoming weights per unit. (burn names layer
/// types only by strings, which a user type could match, so the model lists its own.)
impl MaxNormLayers for SpiralNet {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        self.fc1.for_each_unit_weights(f);
        self.fc2.for_each_unit_weights(f);
        self.head.for_each_unit_weights(f);
    }
}

fn main() {
    // Training needs an autodiff device: flint's dropout and batch norm act as in training only
    // there, with their training flag on (burn's rule).
    let device = Device::flex().autodiff();
    device.seed(0);
    let classes = 3;
    let (train_x, train_y) = tensors(spirals(100, classes, 0.15, 1), &device);
    let (test_x, test_y) = tensors(spirals(500, classes, 0.15, 2), &device);

    let mut model = SpiralNet::new(128, classes, &device);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    let penalty = WeightPenalty::new(0.0, 1e-4);
    let max_norm = MaxNormConfig::new(3.0).init();

    for step in 1..=600 {
        let logits = model.forward(train_x.clone());
        let loss = loss_fn.forward(logits, train_y.clone()) + penalty.penalty(&model, &device);
        if step % 150 == 0 {
            println!(
                "step {step:4}: loss {:.4}",
                loss.clone().into_scalar::<f32>()
            );
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(1e-2, model, grads);
        // Max-norm (Srivastava et al. 2014 §5.1): each unit's incoming weights are rescaled to
        // norm at most 3 after every update.
        model = max_norm.apply(model);
    }

    // `valid()` gives the inference model: dropout is the identity, batch norm uses its running
    // statistics, DropConnect uses the full weight matrix.
    let model = model.valid();
    let train_acc = accuracy(model.forward(train_x.inner()), train_y.inner());
    let test_acc = accuracy(model.forward(test_x.inner()), test_y.inner());
    println!("train accuracy: {train_acc:.4}");
    println!("test accuracy: {test_acc:.4}");
}
