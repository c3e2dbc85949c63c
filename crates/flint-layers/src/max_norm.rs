//! Max-norm weight constraint (Srivastava et al. 2014, "Dropout", section 5.1).

use burn::config::Config;
use burn::module::Param;
use burn::nn::Linear;
use burn::nn::conv::{Conv1d, Conv2d, Conv3d};
use burn::tensor::Tensor;

use crate::DropConnect;
use crate::error::{LayerConfigError, or_panic};

/// Configuration of a [`MaxNorm`] constraint (Keras' `constraints.MaxNorm`).
#[derive(Config, Debug)]
pub struct MaxNormConfig {
    /// The cap `c` on each unit's incoming weight vector's L2 norm, finite and positive.
    pub max_norm: f64,
}

impl MaxNormConfig {
    /// Checks the configuration and builds the constraint.
    pub fn try_init(&self) -> Result<MaxNorm, LayerConfigError> {
        if !(self.max_norm.is_finite() && self.max_norm > 0.0) {
            return Err(LayerConfigError::NotPositive {
                layer: "MaxNorm",
                field: "max_norm",
                value: self.max_norm,
            });
        }
        Ok(MaxNorm {
            max_norm: self.max_norm,
        })
    }

    /// Builds the constraint; panics with [`try_init`](Self::try_init)'s message if invalid.
    pub fn init(&self) -> MaxNorm {
        or_panic(self.try_init())
    }
}

/// Caps the L2 norm of every unit's incoming weight vector at `max_norm`, to be applied after
/// every optimiser step: `w ← w · min(1, c / ‖w‖)`. Vectors with `‖w‖ ≤ c` are left exactly as
/// they are.
///
/// [`apply`](Self::apply) constrains the weights the model names through [`MaxNormLayers`]:
/// burn's `Linear` (`weight` is `[d_input, d_output]`: one vector per column) and
/// `Conv1d/2d/3d` (`weight` is `[out, in, k...]`: one vector per output channel), including the
/// linear layer inside [`DropConnect`].
#[derive(Debug, Clone, Copy)]
pub struct MaxNorm {
    /// The cap on each unit's incoming weight norm.
    pub max_norm: f64,
}

impl MaxNorm {
    /// Applies the constraint to every weight `model` names in
    /// [`for_each_unit_weights`](MaxNormLayers::for_each_unit_weights).
    pub fn apply<M: MaxNormLayers>(&self, mut model: M) -> M {
        model.for_each_unit_weights(&mut |weights| match weights {
            UnitWeights::Linear(param) => self.project(param, &[0]),
            UnitWeights::Conv1d(param) => self.project(param, &[1, 2]),
            UnitWeights::Conv2d(param) => self.project(param, &[1, 2, 3]),
            UnitWeights::Conv3d(param) => self.project(param, &[1, 2, 3, 4]),
        });
        model
    }

    /// Applies the constraint to one weight tensor, normalising over `dims` (the axes of one
    /// unit's incoming vector, e.g. `[0]` for burn's linear weight).
    pub fn constrain<const D: usize>(&self, weight: Tensor<D>, dims: &[usize]) -> Tensor<D> {
        let norm = weight.clone().powi_scalar(2).sum_dims(dims).sqrt();
        // c / 0 is +inf, clamped to 1: zero vectors stay zero.
        let scale = norm.recip().mul_scalar(self.max_norm).clamp_max(1.0);
        weight * scale
    }

    fn project<const D: usize>(&self, param: &mut Param<Tensor<D>>, dims: &[usize]) {
        *param = param.clone().map(|weight| {
            // A projection after the step, outside the graph; the parameter keeps requiring grad.
            // Computed on the inner (non-autodiff) tensor: a new leaf, as an optimiser step makes.
            let require_grad = weight.is_require_grad();
            Tensor::from_inner(self.constrain(weight.inner(), dims)).set_require_grad(require_grad)
        });
    }
}

/// A weight [`MaxNorm`] constrains, by layout (which axes hold one unit's incoming vector).
#[derive(Debug)]
pub enum UnitWeights<'a> {
    /// A linear weight in burn's `[d_input, d_output]` layout: one unit per column.
    Linear(&'a mut Param<Tensor<2>>),
    /// A 1-d convolution kernel `[out, in, k]`: one unit per output channel.
    Conv1d(&'a mut Param<Tensor<3>>),
    /// A 2-d convolution kernel `[out, in, kh, kw]`: one unit per output channel.
    Conv2d(&'a mut Param<Tensor<4>>),
    /// A 3-d convolution kernel `[out, in, kd, kh, kw]`: one unit per output channel.
    Conv3d(&'a mut Param<Tensor<5>>),
}

/// Gives [`MaxNorm::apply`] a model's constrained weights.
///
/// burn's module traversal only names layer types by strings (`"Struct:Linear"`, which a user
/// type called `Linear` would also match), so a model names its layers once, as for
/// [`BatchNormLayers`](crate::BatchNormLayers):
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use flint_layers::{MaxNormConfig, MaxNormLayers, UnitWeights};
///
/// #[derive(Module, Debug)]
/// struct Net {
///     hidden: Vec<Linear>,
///     output: Linear,
/// }
///
/// impl MaxNormLayers for Net {
///     fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
///         self.hidden.for_each_unit_weights(f);
///         self.output.for_each_unit_weights(f);
///     }
/// }
///
/// let device = burn::tensor::Device::flex();
/// let net = Net {
///     hidden: vec![LinearConfig::new(4, 3).init(&device)],
///     output: LinearConfig::new(3, 2).init(&device),
/// };
/// let net = MaxNormConfig::new(0.5).init().apply(net);
/// let norms = net.output.weight.val().powi_scalar(2).sum_dim(0).sqrt();
/// assert!(norms.max().into_scalar::<f32>() <= 0.5 + 1e-6);
/// ```
pub trait MaxNormLayers {
    /// Calls `f` on every weight to constrain, in a fixed order.
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>));
}

impl MaxNormLayers for Linear {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        f(UnitWeights::Linear(&mut self.weight))
    }
}

impl MaxNormLayers for Conv1d {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        f(UnitWeights::Conv1d(&mut self.weight))
    }
}

impl MaxNormLayers for Conv2d {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        f(UnitWeights::Conv2d(&mut self.weight))
    }
}

impl MaxNormLayers for Conv3d {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        f(UnitWeights::Conv3d(&mut self.weight))
    }
}

impl MaxNormLayers for DropConnect {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        self.linear.for_each_unit_weights(f)
    }
}

impl<T: MaxNormLayers> MaxNormLayers for Option<T> {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        if let Some(layer) = self {
            layer.for_each_unit_weights(f);
        }
    }
}

impl<T: MaxNormLayers> MaxNormLayers for Vec<T> {
    fn for_each_unit_weights(&mut self, f: &mut dyn FnMut(UnitWeights<'_>)) {
        for layer in self {
            layer.for_each_unit_weights(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_positive_cap() {
        for cap in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let err = MaxNormConfig::new(cap).try_init().unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("MaxNorm: max_norm must be finite and positive, got {cap}")
            );
        }
    }

    #[test]
    #[should_panic(expected = "MaxNorm: max_norm must be finite and positive, got 0")]
    fn init_panics_with_the_same_message() {
        MaxNormConfig::new(0.0).init();
    }
}
