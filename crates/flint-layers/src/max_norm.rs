//! Max-norm weight constraint (Srivastava et al. 2014, "Dropout", section 5.1).

use burn::config::Config;
use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::Tensor;

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
/// [`apply`](Self::apply) finds the weights by type: burn's `Linear` (`weight` is
/// `[d_input, d_output]`: one vector per column) and `Conv1d/2d/3d` (`weight` is
/// `[out, in, k...]`: one vector per output channel), wherever they sit in the model, including
/// inside [`DropConnect`](crate::DropConnect).
#[derive(Debug, Clone, Copy)]
pub struct MaxNorm {
    /// The cap on each unit's incoming weight norm.
    pub max_norm: f64,
}

impl MaxNorm {
    /// Applies the constraint to every `Linear` and `ConvNd` weight of `model`.
    pub fn apply<M: Module>(&self, model: M) -> M {
        let mut mapper = MaxNormMapper {
            max_norm: self.max_norm,
            path: Vec::new(),
        };
        model.map(&mut mapper)
    }

    /// Applies the constraint to one weight tensor, normalising over `dims` (the axes of one
    /// unit's incoming vector, e.g. `[0]` for burn's linear weight).
    pub fn constrain<const D: usize>(&self, weight: Tensor<D>, dims: &[usize]) -> Tensor<D> {
        let norm = weight.clone().powi_scalar(2).sum_dims(dims).sqrt();
        // c / 0 is +inf, clamped to 1: zero vectors stay zero.
        let scale = norm.recip().mul_scalar(self.max_norm).clamp_max(1.0);
        weight * scale
    }
}

struct MaxNormMapper {
    max_norm: f64,
    /// `(field, enclosing struct type)` from the root down.
    path: Vec<(String, String)>,
}

impl ModuleMapper for MaxNormMapper {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path
            .push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some((field, container)) = self.path.last() else {
            return param;
        };
        if field != "weight" {
            return param;
        }
        let dims: Vec<usize> = match container.as_str() {
            "Struct:Linear" if D == 2 => vec![0],
            "Struct:Conv1d" | "Struct:Conv2d" | "Struct:Conv3d" if D >= 3 => (1..D).collect(),
            _ => return param,
        };
        let constraint = MaxNorm {
            max_norm: self.max_norm,
        };
        param.map(|weight| {
            // A projection after the step, outside the graph; the parameter keeps requiring grad.
            // Computed on the inner (non-autodiff) tensor: a new leaf, as an optimiser step makes.
            let require_grad = weight.is_require_grad();
            Tensor::from_inner(constraint.constrain(weight.inner(), &dims))
                .set_require_grad(require_grad)
        })
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
