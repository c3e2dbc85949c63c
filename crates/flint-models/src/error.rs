//! Configuration errors of flint's models.

/// A model configuration that cannot be built, with what is wrong and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ModelConfigError {
    /// A reference model name that is not one of flint's.
    #[error("unknown model `{name}`; known: mlp, cnn")]
    UnknownModel { name: String },
    /// An architecture name that is not one flint builds.
    #[error("unknown ResNet architecture `{name}`; known: {known}")]
    UnknownArch { name: String, known: String },
    /// A size that must be positive is zero.
    #[error("{model}: `{field}` must be at least 1")]
    Zero {
        model: &'static str,
        field: &'static str,
    },
    /// A dropout rate outside `[0, 1)`.
    #[error("{model}: dropout rate {value} at `{field}` must be in [0, 1)")]
    DropoutRate {
        model: &'static str,
        field: String,
        value: f64,
    },
    /// The per-layer dropout list does not match the layers.
    #[error(
        "{model}: `dropout` has {given} rates for {layers} hidden layers; give one rate for all or one per layer"
    )]
    DropoutCount {
        model: &'static str,
        given: usize,
        layers: usize,
    },
    /// A kernel size that cannot keep the spatial size with symmetric padding.
    #[error("{model}: kernel size {kernel} must be odd (padding kernel/2 keeps the image size)")]
    EvenKernel { model: &'static str, kernel: usize },
    /// The image shrinks to nothing after the pooling stages.
    #[error(
        "{model}: a {size}x{size} image is too small for {blocks} pooling stages (each halves it)"
    )]
    TooSmall {
        model: &'static str,
        size: usize,
        blocks: usize,
    },
    /// The model's size does not even fit in a 64-bit count.
    #[error(
        "{model}: the layer sizes give more parameters or activations than a 64-bit count holds; no machine can build this model"
    )]
    TooLarge { model: &'static str },
}

pub(crate) fn check_rate(
    model: &'static str,
    field: impl Into<String>,
    value: f64,
) -> Result<(), ModelConfigError> {
    if (0.0..1.0).contains(&value) {
        Ok(())
    } else {
        Err(ModelConfigError::DropoutRate {
            model,
            field: field.into(),
            value,
        })
    }
}

pub(crate) fn or_panic<T>(result: Result<T, ModelConfigError>) -> T {
    result.unwrap_or_else(|e| panic!("{e}"))
}
