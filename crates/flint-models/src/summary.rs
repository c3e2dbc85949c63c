//! Model summaries: layers, output shapes and parameter counts, like Keras' `model.summary()`
//! or torchinfo.

use std::fmt;

use burn::module::{Module, Param};
use burn::tensor::Tensor;
use flint_layers::visit::{ParamPath, ParamVisitor, visit_params};

/// Field names of normalisation buffers: running statistics are state, not parameters
/// (PyTorch's `buffers()`, Keras' "non-trainable" BN weights).
const BUFFER_NAMES: [&str; 3] = ["running_mean", "running_var", "num_batches_tracked"];

/// Parameter counts split by whether the optimiser may change them. Running statistics of
/// normalisation layers are counted apart, so `total()` matches PyTorch's `parameters()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParamCounts {
    /// Parameters that require gradients.
    pub trainable: usize,
    /// Parameters frozen (`freeze()`, `freeze_group(..)`, `no_grad()`).
    pub frozen: usize,
    /// Running statistics (buffers), never trained by the optimiser.
    pub buffers: usize,
}

impl ParamCounts {
    /// Counts the float parameters of `module`, checking each one's gradient setting.
    ///
    /// Works on any device: the gradient settings of a module on a plain (non-autodiff) device
    /// only show once it is moved to autodiff, so the count is taken on a `train()` copy.
    pub fn of<M: Module>(module: &M) -> Self {
        #[derive(Default)]
        struct Counter(ParamCounts);
        impl ParamVisitor for Counter {
            fn visit_float<const D: usize>(
                &mut self,
                path: ParamPath<'_>,
                param: &Param<Tensor<D>>,
            ) {
                let n = param.lazy_shape().num_elements();
                if BUFFER_NAMES.contains(&path.name()) {
                    self.0.buffers += n;
                } else if param.is_require_grad() {
                    self.0.trainable += n;
                } else {
                    self.0.frozen += n;
                }
            }
        }
        let mut counter = Counter::default();
        visit_params(&module.clone().train(), &mut counter);
        counter.0
    }

    /// All parameters.
    pub fn total(&self) -> usize {
        self.trainable + self.frozen
    }
}

impl std::ops::Add for ParamCounts {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self {
            trainable: self.trainable + rhs.trainable,
            frozen: self.frozen + rhs.frozen,
            buffers: self.buffers + rhs.buffers,
        }
    }
}

/// One row of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRow {
    /// Field path in the module, e.g. `hidden.0`.
    pub name: String,
    /// What the layer is, e.g. `Linear(784, 256) + ReLU + Dropout(0.5)`.
    pub kind: String,
    /// Output shape, batch first.
    pub output_shape: Vec<usize>,
    /// Its parameters.
    pub params: ParamCounts,
}

impl LayerRow {
    /// A row for `module`, counting its parameters.
    pub fn new<M: Module>(name: &str, kind: &str, output_shape: &[usize], module: &M) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            output_shape: output_shape.to_vec(),
            params: ParamCounts::of(module),
        }
    }

    /// A row for a parameter-free step (flatten, pooling).
    pub fn without_params(name: &str, kind: &str, output_shape: &[usize]) -> Self {
        Self {
            name: name.to_string(),
            kind: kind.to_string(),
            output_shape: output_shape.to_vec(),
            params: ParamCounts::default(),
        }
    }
}

/// A whole model's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSummary {
    /// The model's type name.
    pub model: String,
    /// The input shape the shapes were computed for.
    pub input_shape: [usize; 4],
    /// One row per layer or block.
    pub rows: Vec<LayerRow>,
    /// The whole model's parameters (not just the sum of the rows: every parameter counts).
    pub params: ParamCounts,
}

impl ModelSummary {
    /// Builds a summary; `model` supplies the totals.
    pub fn new<M: Module>(
        name: &str,
        input_shape: [usize; 4],
        rows: Vec<LayerRow>,
        model: &M,
    ) -> Self {
        Self {
            model: name.to_string(),
            input_shape,
            rows,
            params: ParamCounts::of(model),
        }
    }
}

fn shape(s: &[usize]) -> String {
    let inner: Vec<String> = s.iter().map(|d| d.to_string()).collect();
    format!("[{}]", inner.join(", "))
}

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for ModelSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let kind_w = self
            .rows
            .iter()
            .map(|r| r.kind.len())
            .max()
            .unwrap_or(0)
            .max(5);
        let shape_w = self
            .rows
            .iter()
            .map(|r| shape(&r.output_shape).len())
            .max()
            .unwrap_or(0)
            .max(12);
        writeln!(f, "{} (input {})", self.model, shape(&self.input_shape))?;
        let rule = "-".repeat(name_w + kind_w + shape_w + 18);
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "{:<name_w$}  {:<kind_w$}  {:<shape_w$}  {:>12}",
            "layer", "type", "output shape", "params"
        )?;
        writeln!(f, "{rule}")?;
        for row in &self.rows {
            writeln!(
                f,
                "{:<name_w$}  {:<kind_w$}  {:<shape_w$}  {:>12}",
                row.name,
                row.kind,
                shape(&row.output_shape),
                thousands(row.params.total())
            )?;
        }
        writeln!(f, "{rule}")?;
        writeln!(
            f,
            "total params:     {:>12}",
            thousands(self.params.total())
        )?;
        writeln!(
            f,
            "trainable params: {:>12}",
            thousands(self.params.trainable)
        )?;
        writeln!(f, "frozen params:    {:>12}", thousands(self.params.frozen))?;
        write!(
            f,
            "buffers (BN running stats): {}",
            thousands(self.params.buffers)
        )
    }
}
