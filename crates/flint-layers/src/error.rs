//! The one error type for invalid layer configurations.

/// Why a layer configuration was rejected.
///
/// Every `try_init` returns it and every `init` panics with its `Display` text, so the message
/// a user sees is the same either way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LayerConfigError {
    /// A drop probability outside `[0, 1)` (1 would divide by zero in the inverted scaling).
    #[error("{layer}: drop probability must be finite and in [0, 1), got {value}")]
    Probability {
        /// The layer whose config was rejected.
        layer: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A size or count that must be at least 1.
    #[error("{layer}: {field} must be at least 1, got 0")]
    Zero {
        /// The layer whose config was rejected.
        layer: &'static str,
        /// The rejected field.
        field: &'static str,
    },
    /// A value that must be finite and strictly positive.
    #[error("{layer}: {field} must be finite and positive, got {value}")]
    NotPositive {
        /// The layer whose config was rejected.
        layer: &'static str,
        /// The rejected field.
        field: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// A momentum outside `[0, 1]`.
    #[error(
        "{layer}: momentum must be finite and in [0, 1] (or None for a cumulative average), got {value}"
    )]
    Momentum {
        /// The layer whose config was rejected.
        layer: &'static str,
        /// The rejected value.
        value: f64,
    },
    /// An operation the layer's configuration does not allow.
    #[error("{layer}: {reason}")]
    Unsupported {
        /// The layer or function that refused.
        layer: &'static str,
        /// Why.
        reason: String,
    },
}

/// Checks a drop probability: finite and in `[0, 1)`.
pub(crate) fn check_prob(layer: &'static str, value: f64) -> Result<f64, LayerConfigError> {
    if value.is_finite() && (0.0..1.0).contains(&value) {
        Ok(value)
    } else {
        Err(LayerConfigError::Probability { layer, value })
    }
}

/// Unwraps a `try_init` result the way burn's `init` does: a panic with the error's message.
pub(crate) fn or_panic<T>(result: Result<T, LayerConfigError>) -> T {
    result.unwrap_or_else(|error| panic!("{error}"))
}
