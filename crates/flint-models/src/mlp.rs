//! Multi-layer perceptrons, including the reference `mlp` of `reference.md`.

use burn::config::Config;
use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{Device, Tensor};
use flint_layers::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, linear};

use crate::activation::Activation;
use crate::error::{ModelConfigError, check_rate, or_panic};
use crate::summary::{LayerRow, ModelSummary};

/// Configuration of an [`Mlp`]: `flatten -> [Linear -> (BatchNorm) -> activation -> Dropout] x
/// hidden -> Linear`.
///
/// The defaults are the reference `mlp` of `reference.md`: 784-256-256-10, ReLU, dropout 0.5
/// after each hidden layer (269,322 parameters).
#[derive(Config, Debug)]
pub struct MlpConfig {
    /// Input features (the flattened image: 784 for 28x28).
    #[config(default = 784)]
    pub input_size: usize,
    /// Hidden layer widths; empty gives logistic regression.
    #[config(default = "vec![256, 256]")]
    pub hidden: Vec<usize>,
    /// Output classes.
    #[config(default = 10)]
    pub num_classes: usize,
    /// Activation after each hidden layer.
    #[config(default = "Activation::Relu")]
    pub activation: Activation,
    /// Dropout rate after each hidden layer: one rate for all, or one per hidden layer.
    #[config(default = "vec![0.5]")]
    pub dropout: Vec<f64>,
    /// Dropout rate on the input (Srivastava et al. 2014 use 0.2).
    #[config(default = 0.0)]
    pub input_dropout: f64,
    /// Batch normalisation between each hidden linear layer and its activation
    /// (Ioffe & Szegedy 2015).
    #[config(default = false)]
    pub batch_norm: bool,
}

impl MlpConfig {
    /// The reference `mlp` of `reference.md`.
    pub fn reference() -> Self {
        Self::new()
    }

    /// The dropout rate after hidden layer `i`.
    fn rate(&self, i: usize) -> f64 {
        if self.dropout.len() == 1 {
            self.dropout[0]
        } else {
            self.dropout.get(i).copied().unwrap_or(0.0)
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        const M: &str = "Mlp";
        if self.input_size == 0 {
            return Err(ModelConfigError::Zero {
                model: M,
                field: "input_size",
            });
        }
        if self.num_classes == 0 {
            return Err(ModelConfigError::Zero {
                model: M,
                field: "num_classes",
            });
        }
        if self.hidden.contains(&0) {
            return Err(ModelConfigError::Zero {
                model: M,
                field: "hidden",
            });
        }
        let given = self.dropout.len();
        if given > 1 && given != self.hidden.len() {
            return Err(ModelConfigError::DropoutCount {
                model: M,
                given,
                layers: self.hidden.len(),
            });
        }
        for (i, &p) in self.dropout.iter().enumerate() {
            check_rate(M, format!("dropout[{i}]"), p)?;
        }
        check_rate(M, "input_dropout", self.input_dropout)?;
        self.size().map(|_| ())
    }

    /// Parameters and activations, counted without building the model.
    pub fn size(&self) -> Result<crate::ModelSize, ModelConfigError> {
        let bn = u128::from(self.batch_norm);
        let (mut parameters, mut activations) = (0u128, self.input_size as u128);
        let mut width = self.input_size as u128;
        for &out in &self.hidden {
            let out = out as u128;
            // weight and bias (+ gamma and beta)
            parameters = parameters
                .saturating_add(crate::dense(width, out))
                .saturating_add(out * 2 * bn);
            // linear output (+ normalised), activation, dropout
            activations = activations.saturating_add(out * (3 + bn));
            width = out;
        }
        let classes = self.num_classes as u128;
        crate::ModelSize::counted(
            "Mlp",
            parameters.saturating_add(crate::dense(width, classes)),
            activations.saturating_add(classes),
        )
    }

    /// Checks the configuration and builds the model with PyTorch's default initialisation.
    pub fn try_init(&self, device: &Device) -> Result<Mlp, ModelConfigError> {
        self.validate()?;
        let mut width = self.input_size;
        let mut hidden = Vec::with_capacity(self.hidden.len());
        for (i, &out) in self.hidden.iter().enumerate() {
            hidden.push(HiddenLayer {
                linear: LinearConfig::new(width, out).init(device),
                norm: self
                    .batch_norm
                    .then(|| BatchNormConfig::new(out).init(device)),
                dropout: DropoutConfig::new(self.rate(i)).init(),
            });
            width = out;
        }
        Ok(Mlp {
            input_dropout: DropoutConfig::new(self.input_dropout).init(),
            hidden,
            output: LinearConfig::new(width, self.num_classes).init(device),
            activation: self.activation,
            input_size: self.input_size,
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    /// With [`validate`](Self::validate)'s message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> Mlp {
        or_panic(self.try_init(device))
    }
}

/// One hidden layer of an [`Mlp`].
#[derive(Module, Debug)]
pub struct HiddenLayer {
    /// The affine map.
    pub linear: Linear,
    /// Optional batch normalisation before the activation.
    pub norm: Option<BatchNorm>,
    /// Dropout after the activation.
    pub dropout: Dropout,
}

/// A multi-layer perceptron classifier; see [`MlpConfig`].
#[derive(Module, Debug)]
pub struct Mlp {
    /// Dropout on the flattened input.
    pub input_dropout: Dropout,
    /// The hidden layers.
    pub hidden: Vec<HiddenLayer>,
    /// The classifier layer.
    pub output: Linear,
    #[module(skip)]
    activation: Activation,
    #[module(skip)]
    input_size: usize,
}

impl Mlp {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]` with `channels * height * width` equal to
    ///   the configured input size (or already flat: `[batch, input_size, 1, 1]`)
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        self.forward_traced(images, &mut |_, _| {})
    }

    /// The features before the classifier layer, `[batch, last hidden width]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        let mut x = self.flatten(images);
        for layer in &self.hidden {
            x = self.hidden_forward(layer, x);
        }
        x
    }

    fn flatten(&self, images: Tensor<4>) -> Tensor<2> {
        let [n, c, h, w] = images.dims();
        assert_eq!(
            c * h * w,
            self.input_size,
            "Mlp expects {} input features, got images of shape {:?}",
            self.input_size,
            [n, c, h, w]
        );
        self.input_dropout.forward(images.reshape([n, c * h * w]))
    }

    fn hidden_forward(&self, layer: &HiddenLayer, x: Tensor<2>) -> Tensor<2> {
        let mut x = linear(&layer.linear, x);
        if let Some(norm) = &layer.norm {
            x = norm.forward(x);
        }
        layer.dropout.forward(self.activation.forward(x))
    }

    fn forward_traced(
        &self,
        images: Tensor<4>,
        trace: &mut dyn FnMut(usize, &[usize]),
    ) -> Tensor<2> {
        let mut x = self.flatten(images);
        trace(0, &x.dims());
        for (i, layer) in self.hidden.iter().enumerate() {
            x = self.hidden_forward(layer, x);
            trace(i + 1, &x.dims());
        }
        let out = linear(&self.output, x);
        trace(self.hidden.len() + 1, &out.dims());
        out
    }

    /// Layers, output shapes and parameter counts for an input of `input_shape`
    /// (`[batch, channels, height, width]`).
    pub fn summary(&self, input_shape: [usize; 4], device: &Device) -> ModelSummary {
        let mut shapes = Vec::new();
        let _ = self.forward_traced(Tensor::zeros(input_shape, device), &mut |_, s| {
            shapes.push(s.to_vec())
        });
        let mut rows = vec![LayerRow::without_params("flatten", "Flatten", &shapes[0])];
        if self.input_dropout.prob > 0.0 {
            rows[0].kind = format!("Flatten + Dropout({})", self.input_dropout.prob);
        }
        for (i, layer) in self.hidden.iter().enumerate() {
            let mut kind = format!(
                "Linear({}, {})",
                layer.linear.weight.dims()[0],
                layer.linear.weight.dims()[1]
            );
            if layer.norm.is_some() {
                kind.push_str(" + BatchNorm1d");
            }
            kind.push_str(&format!(" + {}", self.activation.name()));
            if layer.dropout.prob > 0.0 {
                kind.push_str(&format!(" + Dropout({})", layer.dropout.prob));
            }
            rows.push(LayerRow::new(
                &format!("hidden.{i}"),
                &kind,
                &shapes[i + 1],
                layer,
            ));
        }
        let w = self.output.weight.dims();
        rows.push(LayerRow::new(
            "output",
            &format!("Linear({}, {})", w[0], w[1]),
            shapes.last().unwrap(),
            &self.output,
        ));
        ModelSummary::new("Mlp", input_shape, rows, self)
    }
}
