//! flint's models: the reference `mlp` and `cnn` of `reference.md`, configurable MLPs and CNNs
//! (`#[derive(Config)]`, saved to and loaded from JSON), and model summaries; and networks whose
//! parameter names are a PyTorch state dict's, so published weights load by name:
//! torchvision's [`ResNet`]-18/34/50, EfficientNet-Lite0 and burn's MNIST CNN with batch norm.
//!
//! Initialisation is PyTorch's default, which burn's `LinearConfig`/`Conv2dConfig` defaults
//! already implement (Kaiming-uniform with `a = sqrt(5)`: weights and biases uniform in
//! `±1/sqrt(fan_in)`); batch norm starts at weight 1, bias 0.
//!
//! ```
//! use burn::prelude::*;
//! use flint_models::{ModelConfig, CnnConfig};
//!
//! let device = Device::flex();
//! let model = ModelConfig::Cnn(CnnConfig::reference()).init(&device);
//! let logits = model.forward(Tensor::zeros([2, 1, 28, 28], &device));
//! assert_eq!(logits.dims(), [2, 10]);
//! println!("{}", model.summary([1, 1, 28, 28], &device));
//! ```

pub mod activation;
pub mod cnn;
pub mod efficientnet_lite0;
pub mod error;
mod layers;
pub mod mlp;
pub mod mnist_cnn_bn;
pub mod resnet;
pub mod summary;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::{Device, Tensor};

pub use activation::Activation;
pub use cnn::{Cnn, CnnConfig, ConvBlock};
pub use efficientnet_lite0::{EfficientNetLite0, EfficientNetLite0Config, MbConvBlock};
pub use error::ModelConfigError;
pub use mlp::{HiddenLayer, Mlp, MlpConfig};
pub use mnist_cnn_bn::{MnistCnnBn, MnistCnnBnConfig};
pub use resnet::{ResNet, ResNetArch, ResNetBlock, ResNetConfig};
pub use summary::{LayerRow, ModelSummary, ParamCounts};

/// Any of flint's classifier configurations, tagged in JSON (`{"Cnn": {...}}`).
#[derive(Config, Debug)]
pub enum ModelConfig {
    /// A multi-layer perceptron.
    Mlp(MlpConfig),
    /// A small convolutional network.
    Cnn(CnnConfig),
}

impl ModelConfig {
    /// A reference model of `reference.md` by name: `mlp` or `cnn`.
    pub fn reference(name: &str) -> Result<Self, ModelConfigError> {
        match name {
            "mlp" => Ok(Self::Mlp(MlpConfig::reference())),
            "cnn" => Ok(Self::Cnn(CnnConfig::reference())),
            other => Err(ModelConfigError::UnknownModel {
                name: other.to_string(),
            }),
        }
    }

    /// The same model with its dropout rate set to `rate` (MLP: after every hidden layer; CNN:
    /// before the classifier), what `flint train --dropout` and the dropout experiments vary.
    /// An MLP's input dropout and a CNN's spatial dropout are left as they are.
    pub fn with_dropout_rate(mut self, rate: f64) -> Self {
        match &mut self {
            Self::Mlp(m) => m.dropout = vec![rate],
            Self::Cnn(c) => c.dropout = rate,
        }
        self
    }

    /// Short name: `mlp` or `cnn`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Mlp(_) => "mlp",
            Self::Cnn(_) => "cnn",
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ModelConfigError> {
        match self {
            Self::Mlp(c) => c.validate(),
            Self::Cnn(c) => c.validate(),
        }
    }

    /// How big the model is, counted without building it (so a configuration that cannot fit
    /// in memory is refused before anything is allocated).
    pub fn size(&self) -> Result<ModelSize, ModelConfigError> {
        match self {
            Self::Mlp(c) => c.size(),
            Self::Cnn(c) => c.size(),
        }
    }

    /// Checks the configuration and builds the model.
    pub fn try_init(&self, device: &Device) -> Result<Classifier, ModelConfigError> {
        Ok(match self {
            Self::Mlp(c) => Classifier::Mlp(c.try_init(device)?),
            Self::Cnn(c) => Classifier::Cnn(c.try_init(device)?),
        })
    }

    /// Builds the model.
    ///
    /// # Panics
    /// With the validation message if the configuration is invalid.
    pub fn init(&self, device: &Device) -> Classifier {
        error::or_panic(self.try_init(device))
    }
}

/// A model's size, counted from its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ModelSize {
    /// Trainable parameters, as PyTorch's `parameters()` counts them (batch norm's running
    /// statistics, two floats a channel, come on top).
    pub parameters: u64,
    /// Floats the forward pass produces per sample (every layer's output, batch-norm and
    /// pooling included), what training keeps for the backward pass.
    pub activations_per_sample: u64,
}

impl ModelSize {
    /// The size from counts made in `u128` with saturating arithmetic (a product of two `usize`
    /// always fits), or [`ModelConfigError::TooLarge`] when either does not fit in a `u64`.
    pub(crate) fn counted(
        model: &'static str,
        parameters: u128,
        activations: u128,
    ) -> Result<Self, ModelConfigError> {
        let fit = |n: u128| u64::try_from(n).map_err(|_| ModelConfigError::TooLarge { model });
        Ok(Self {
            parameters: fit(parameters)?,
            activations_per_sample: fit(activations)?,
        })
    }
}

/// Parameters of a fully connected layer: weights and biases.
pub(crate) fn dense(inputs: u128, outputs: u128) -> u128 {
    inputs.saturating_mul(outputs).saturating_add(outputs)
}

/// Any of flint's classifiers, as one module type (what the trainer and the CLI work with).
#[derive(Module, Debug)]
pub enum Classifier {
    /// A multi-layer perceptron.
    Mlp(Mlp),
    /// A small convolutional network.
    Cnn(Cnn),
}

impl Classifier {
    /// Class logits.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, num_classes]`
    pub fn forward(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Mlp(m) => m.forward(images),
            Self::Cnn(m) => m.forward(images),
        }
    }

    /// The features fed to the classifier layer.
    ///
    /// # Shapes
    /// - images: `[batch, channels, height, width]`
    /// - output: `[batch, features]`
    pub fn features(&self, images: Tensor<4>) -> Tensor<2> {
        match self {
            Self::Mlp(m) => m.features(images),
            Self::Cnn(m) => m.features(images),
        }
    }

    /// Layers, output shapes and parameter counts for an input of `input_shape`.
    pub fn summary(&self, input_shape: [usize; 4], device: &Device) -> ModelSummary {
        match self {
            Self::Mlp(m) => m.summary(input_shape, device),
            Self::Cnn(m) => m.summary(input_shape, device),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::module::ParamGroup;
    use burn::tensor::{Distribution, TensorData, Tolerance};

    fn device() -> Device {
        Device::flex()
    }

    #[test]
    fn dropout_rate_replaces_the_varied_rate_only() {
        let mlp = ModelConfig::Mlp(
            MlpConfig::new()
                .with_dropout(vec![0.1, 0.2])
                .with_input_dropout(0.2),
        )
        .with_dropout_rate(0.3);
        let ModelConfig::Mlp(m) = mlp else {
            unreachable!()
        };
        assert_eq!((m.dropout, m.input_dropout), (vec![0.3], 0.2));
        let cnn =
            ModelConfig::Cnn(CnnConfig::new().with_spatial_dropout(0.1)).with_dropout_rate(0.0);
        let ModelConfig::Cnn(c) = cnn else {
            unreachable!()
        };
        assert_eq!((c.dropout, c.spatial_dropout), (0.0, 0.1));
    }

    #[test]
    fn reference_parameter_counts_match_reference_md() {
        let d = device();
        let mlp = ModelConfig::reference("mlp").unwrap().init(&d);
        let cnn = ModelConfig::reference("cnn").unwrap().init(&d);
        // PyTorch's parameters(): burn's num_params() also counts BN running statistics.
        assert_eq!(ParamCounts::of(&mlp).total(), 269_322);
        let cnn_counts = ParamCounts::of(&cnn);
        assert_eq!(cnn_counts.total(), 421_834);
        assert_eq!(cnn_counts.buffers, 2 * (32 + 64) + 2);
        let err = ModelConfig::reference("resnet").unwrap_err();
        assert_eq!(err.to_string(), "unknown model `resnet`; known: mlp, cnn");
    }

    #[test]
    fn counted_sizes_match_the_built_models() {
        let d = device();
        let configs = [
            ModelConfig::reference("mlp").unwrap(),
            ModelConfig::reference("cnn").unwrap(),
            ModelConfig::Mlp(
                MlpConfig::new()
                    .with_hidden(vec![7, 5])
                    .with_batch_norm(true),
            ),
            ModelConfig::Mlp(MlpConfig::new().with_hidden(vec![])),
            ModelConfig::Cnn(
                CnnConfig::new()
                    .with_in_channels(3)
                    .with_image_size(32)
                    .with_channels(vec![4, 6, 8])
                    .with_kernel_size(5)
                    .with_batch_norm(false)
                    .with_hidden(0),
            ),
        ];
        for config in configs {
            let counted = config.size().unwrap().parameters;
            let built = ParamCounts::of(&config.init(&d)).total() as u64;
            assert_eq!(counted, built, "{config:?}");
        }
    }

    #[test]
    fn sizes_beyond_any_count_are_refused_before_building() {
        let huge = ModelConfig::Mlp(MlpConfig::new().with_hidden(vec![4_611_686_018_427_387_904]));
        assert_eq!(
            huge.validate().unwrap_err().to_string(),
            "Mlp: the layer sizes give more parameters or activations than a 64-bit count holds; no machine can build this model"
        );
        let wide = ModelConfig::Cnn(CnnConfig::new().with_channels(vec![usize::MAX / 4, 8]));
        assert!(matches!(
            wide.validate(),
            Err(ModelConfigError::TooLarge { model: "Cnn" })
        ));
        // Big but countable: validation passes, the caller compares the size with its memory.
        let big = ModelConfig::Mlp(MlpConfig::new().with_hidden(vec![100_000_000]));
        assert_eq!(
            big.size().unwrap().parameters,
            78_400_000_000 + 100_000_000 + 1_000_000_010
        );
    }

    #[test]
    fn forward_shapes() {
        let d = device();
        for name in ["mlp", "cnn"] {
            let model = ModelConfig::reference(name).unwrap().init(&d);
            let x = Tensor::<4>::random([3, 1, 28, 28], Distribution::Default, &d);
            assert_eq!(model.forward(x.clone()).dims(), [3, 10], "{name}");
            let width = if name == "mlp" { 256 } else { 128 };
            assert_eq!(model.features(x).dims(), [3, width], "{name}");
        }
        let rgb = CnnConfig::new()
            .with_in_channels(3)
            .with_image_size(32)
            .with_channels(vec![16, 32, 64])
            .with_hidden(0)
            .init(&d);
        let x = Tensor::<4>::zeros([2, 3, 32, 32], &d);
        assert_eq!(rgb.forward(x).dims(), [2, 10]);
    }

    /// PyTorch's default: every weight and bias uniform in ±1/sqrt(fan_in), filling the range.
    #[test]
    fn initialisation_is_pytorch_default() {
        let d = device();
        let cnn = CnnConfig::reference().init(&d);
        let check = |t: Tensor<1>, fan_in: usize, what: &str| {
            let bound = 1.0 / (fan_in as f32).sqrt();
            let max: f32 = t.abs().max().into_scalar();
            assert!(max <= bound * 1.0001, "{what}: {max} > {bound}");
            assert!(max > bound * 0.9, "{what}: {max} does not fill ±{bound}");
        };
        let conv2 = &cnn.blocks[1].conv;
        check(conv2.weight.val().flatten(0, 3), 32 * 9, "conv2 weight");
        check(conv2.bias.as_ref().unwrap().val(), 32 * 9, "conv2 bias");
        let fc = cnn.hidden.as_ref().unwrap();
        check(fc.weight.val().flatten(0, 1), 3136, "fc1 weight");
        let bn = cnn.blocks[0].norm.as_ref().unwrap();
        bn.gamma
            .as_ref()
            .unwrap()
            .val()
            .into_data()
            .assert_approx_eq::<f32>(&TensorData::from([1.0f32; 32]), Tolerance::default());
    }

    #[test]
    fn configs_round_trip_through_json() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.json");
        let config = ModelConfig::Mlp(
            MlpConfig::new()
                .with_hidden(vec![100, 100, 100])
                .with_activation(Activation::Sigmoid)
                .with_dropout(vec![0.0, 0.2, 0.5])
                .with_batch_norm(true),
        );
        config.save(&path).unwrap();
        let loaded = ModelConfig::load(&path).unwrap();
        let ModelConfig::Mlp(mlp) = loaded else {
            panic!("wrong variant")
        };
        assert_eq!(mlp.hidden, vec![100, 100, 100]);
        assert_eq!(mlp.activation, Activation::Sigmoid);
        assert_eq!(mlp.dropout, vec![0.0, 0.2, 0.5]);
        assert!(mlp.batch_norm);
    }

    #[test]
    fn invalid_configs_are_refused_with_clear_messages() {
        let d = device();
        let msg = |r: Result<_, ModelConfigError>| r.map(|_: ()| ()).unwrap_err().to_string();
        assert_eq!(
            msg(MlpConfig::new().with_dropout(vec![1.0]).validate()),
            "Mlp: dropout rate 1 at `dropout[0]` must be in [0, 1)"
        );
        assert_eq!(
            msg(MlpConfig::new()
                .with_dropout(vec![0.1, 0.2, 0.3])
                .validate()),
            "Mlp: `dropout` has 3 rates for 2 hidden layers; give one rate for all or one per layer"
        );
        assert_eq!(
            msg(MlpConfig::new().with_num_classes(0).validate()),
            "Mlp: `num_classes` must be at least 1"
        );
        assert_eq!(
            msg(CnnConfig::new().with_kernel_size(4).validate()),
            "Cnn: kernel size 4 must be odd (padding kernel/2 keeps the image size)"
        );
        assert_eq!(
            msg(CnnConfig::new().with_channels(vec![8; 5]).validate()),
            "Cnn: a 28x28 image is too small for 5 pooling stages (each halves it)"
        );
        assert_eq!(
            msg(CnnConfig::new().with_dropout(-0.1).validate()),
            "Cnn: dropout rate -0.1 at `dropout` must be in [0, 1)"
        );
        let panic = std::panic::catch_unwind(|| {
            CnnConfig::new()
                .with_channels(vec![])
                .with_image_size(0)
                .init(&d)
        });
        assert!(panic.is_err());
    }

    #[test]
    fn summary_lists_layers_shapes_and_frozen_parameters() {
        let d = device();
        let cnn = ModelConfig::reference("cnn").unwrap().init(&d);
        let summary = cnn.summary([1, 1, 28, 28], &d);
        let shapes: Vec<Vec<usize>> = summary
            .rows
            .iter()
            .map(|r| r.output_shape.clone())
            .collect();
        assert_eq!(
            shapes,
            vec![
                vec![1, 32, 14, 14],
                vec![1, 64, 7, 7],
                vec![1, 3136],
                vec![1, 128],
                vec![1, 10]
            ]
        );
        assert_eq!(summary.params.trainable, 421_834);
        assert_eq!(summary.rows[0].params.total(), 320 + 64);
        let text = summary.to_string();
        assert!(
            text.contains("Conv2d(1, 32, 3x3) + BatchNorm2d + ReLU + MaxPool 2x2"),
            "{text}"
        );
        assert!(text.contains("total params:          421,834"), "{text}");

        // Freeze the convolutional backbone by path, as transfer learning does.
        let frozen = cnn.freeze_group(ParamGroup::from_predicate("blocks"));
        let summary = frozen.summary([1, 1, 28, 28], &d);
        assert_eq!(summary.params.frozen, 320 + 64 + 18_496 + 128);
        assert_eq!(summary.params.trainable, 421_834 - summary.params.frozen);

        let mlp = ModelConfig::reference("mlp")
            .unwrap()
            .init(&d)
            .freeze_group(ParamGroup::all());
        let summary = mlp.summary([1, 1, 28, 28], &d);
        assert_eq!(
            (summary.params.trainable, summary.params.frozen),
            (0, 269_322)
        );
    }

    #[test]
    fn dropout_is_active_only_when_training() {
        let d = device().autodiff();
        let mlp = MlpConfig::reference().init(&d);
        let x = Tensor::<4>::random([4, 1, 28, 28], Distribution::Default, &d);
        let a = mlp.forward(x.clone());
        let b = mlp.forward(x.clone());
        assert!(
            !a.equal(b).all().into_scalar::<bool>(),
            "training passes should differ"
        );
        let eval = mlp.valid();
        let x = x.inner();
        eval.forward(x.clone())
            .into_data()
            .assert_eq(&eval.forward(x).into_data(), true);
    }
}
