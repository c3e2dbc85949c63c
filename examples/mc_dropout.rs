//! MC-dropout uncertainty for a trained model (Gal & Ghahramani 2016), with flint-layers.
//!
//! Train a small dropout network, then keep its dropout on at inference and average many
//! stochastic passes: the mean is the prediction, its entropy the uncertainty. The example
//! checks the claim users care about: the predictions the model gets wrong carry more
//! uncertainty than the ones it gets right, so the entropy says which answers to distrust.
//!
//! ```text
//! cargo run --release --example mc_dropout
//! ```

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig, Relu};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Tensor};
use flint_layers::{
    BatchNorm, BatchNormConfig, BatchNormLayers, Dropout, DropoutConfig, mc_dropout_mode,
    mc_dropout_predict,
};

#[path = "support/spirals.rs"]
mod spirals;
use spirals::{accuracy, spirals, tensors};

/// An MLP with batch norm and dropout after each hidden layer.
#[derive(Module, Debug)]
struct DropoutMlp {
    hidden: Vec<Linear>,
    norms: Vec<BatchNorm>,
    dropout: Dropout,
    output: Linear,
    relu: Relu,
}

impl DropoutMlp {
    fn new(widths: &[usize], classes: usize, dropout: f64, device: &Device) -> Self {
        let mut inputs = 2;
        let (mut hidden, mut norms) = (Vec::new(), Vec::new());
        for &width in widths {
            hidden.push(LinearConfig::new(inputs, width).init(device));
            norms.push(BatchNormConfig::new(width).init(device));
            inputs = width;
        }
        Self {
            hidden,
            norms,
            dropout: DropoutConfig::new(dropout).init(),
            output: LinearConfig::new(inputs, classes).init(device),
            relu: Relu::new(),
        }
    }

    /// # Shapes
    ///
    /// - points: `[batch, 2]`
    /// - output: `[batch, classes]` (logits)
    fn forward(&self, points: Tensor<2>) -> Tensor<2> {
        let mut x = points;
        for (linear, norm) in self.hidden.iter().zip(&self.norms) {
            x = self
                .dropout
                .forward(self.relu.forward(norm.forward(linear.forward(x))));
        }
        self.output.forward(x)
    }
}

/// The batch norms MC-dropout freezes (burn names layer types only by strings, which a user type
/// could match, so the model lists its own).
impl BatchNormLayers for DropoutMlp {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm)) {
        self.norms.iter_mut().for_each(f);
    }
}

/// Mean of the entries of `values` where `mask` is true, and how many there were.
fn masked_mean(values: &[f32], mask: &[bool]) -> (f32, usize) {
    let picked: Vec<f32> = values
        .iter()
        .zip(mask)
        .filter(|(_, m)| **m)
        .map(|(v, _)| *v)
        .collect();
    let mean = picked.iter().sum::<f32>() / picked.len().max(1) as f32;
    (mean, picked.len())
}

fn main() {
    let device = Device::flex().autodiff();
    device.seed(0);
    let classes = 3;
    // Noisy spirals: the arms overlap near the centre, so some test points are truly ambiguous.
    let (train_x, train_y) = tensors(spirals(200, classes, 0.3, 1), &device);
    let (test_x, test_y) = tensors(spirals(500, classes, 0.3, 2), &device);

    let mut model = DropoutMlp::new(&[128, 128], classes, 0.3, &device);
    let mut optimizer = AdamConfig::new().init();
    let loss_fn = CrossEntropyLossConfig::new().init(&device);
    for _ in 0..500 {
        let loss = loss_fn.forward(model.forward(train_x.clone()), train_y.clone());
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(5e-3, model, grads);
    }

    // The usual deterministic prediction: dropout off, batch norm on running statistics.
    let plain = model.clone().valid();
    let plain_acc = accuracy(
        plain.forward(test_x.clone().inner()),
        test_y.clone().inner(),
    );

    // MC-dropout: batch norm frozen (running statistics), dropout kept stochastic; `no_grad`
    // stops the autodiff graph from growing over the passes.
    let stochastic = mc_dropout_mode(model).no_grad();
    let samples = 50;
    let prediction = mc_dropout_predict(test_x, samples, |x| stochastic.forward(x))
        .expect("samples is not zero");
    let mc_acc = accuracy(prediction.mean.clone(), test_y.clone());

    let predicted: Vec<i64> = prediction
        .mean
        .argmax(1)
        .into_data()
        .iter::<i64>()
        .collect();
    let labels: Vec<i64> = test_y.into_data().iter::<i64>().collect();
    let entropy: Vec<f32> = prediction.entropy.into_data().iter::<f32>().collect();
    let correct: Vec<bool> = predicted.iter().zip(&labels).map(|(p, l)| p == l).collect();
    let wrong: Vec<bool> = correct.iter().map(|c| !c).collect();
    let (right_entropy, n_right) = masked_mean(&entropy, &correct);
    let (wrong_entropy, n_wrong) = masked_mean(&entropy, &wrong);

    println!("test accuracy, dropout off:          {plain_acc:.4}");
    println!("test accuracy, MC-dropout ({samples} passes): {mc_acc:.4}");
    println!(
        "predictive entropy (nats, max {:.3}): {right_entropy:.3} on the {n_right} right answers, \
         {wrong_entropy:.3} on the {n_wrong} wrong ones",
        (classes as f32).ln()
    );
}
