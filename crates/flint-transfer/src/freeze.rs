//! Freezing and unfreezing parameters by name, and the parameter groups behind per-group
//! learning rates, all on burn's `ParamGroup` (regular expressions on module paths such as
//! `backbone.conv1.weight`).
//!
//! Freezing a batch norm also switches it to inference mode (burn clears its training flag),
//! so a frozen backbone normalises with its running statistics and never updates them: the
//! behaviour PyTorch users get from `requires_grad_(False)` plus `.eval()` on those layers.

use burn::module::{Flag, Module, Param, ParamGroup, ParamId};
use burn::tensor::Tensor;
use flint_layers::visit::{ParamPath, ParamVisitor, visit_params};

use crate::error::TransferError;

/// One parameter tensor of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// Module path, `.`-separated (`backbone.conv1.weight`).
    pub path: String,
    /// Shape.
    pub shape: Vec<usize>,
    /// Whether the optimiser updates it.
    pub trainable: bool,
}

/// Calls `on_param(path, id, param)` for every float parameter and `on_flag(layer_path, id)`
/// for every training flag of `module`.
fn walk<M: Module>(
    module: &M,
    on_param: impl FnMut(&str, ParamId, Vec<usize>, bool),
    on_flag: impl FnMut(&str, ParamId),
) {
    struct Walker<P, F>(P, F);
    impl<P, F> ParamVisitor for Walker<P, F>
    where
        P: FnMut(&str, ParamId, Vec<usize>, bool),
        F: FnMut(&str, ParamId),
    {
        fn visit_float<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {
            let shape = param.shape().to_vec();
            (self.0)(&path.to_string(), param.id, shape, param.is_require_grad());
        }
        fn visit_flag(&mut self, path: ParamPath<'_>, flag: &Param<Flag>) {
            // The flag's own name (`training`) is the last element: report its layer's path.
            (self.1)(&path.layer().to_string(), flag.id);
        }
    }
    visit_params(module, &mut Walker(on_param, on_flag));
}

/// Every float parameter of `module` in declaration order, with its path and whether it
/// trains.
pub fn parameters<M: Module>(module: &M) -> Vec<ParamInfo> {
    let mut out = Vec::new();
    walk(
        module,
        |path, _, shape, trainable| {
            out.push(ParamInfo {
                path: path.to_string(),
                shape,
                trainable,
            })
        },
        |_, _| {},
    );
    out
}

fn compile(pattern: &str) -> Result<regex::Regex, TransferError> {
    regex::Regex::new(pattern)
        .map_err(|e| TransferError::Invalid(format!("bad parameter pattern `{pattern}`: {e}")))
}

/// The ids of the float parameters whose path matches `pattern` (a regular expression,
/// searched anywhere in the path, so `^backbone\.` or `conv`).
pub fn matching_ids<M: Module>(module: &M, pattern: &str) -> Result<Vec<ParamId>, TransferError> {
    let re = compile(pattern)?;
    let mut ids = Vec::new();
    walk(
        module,
        |path, id, _, _| {
            if re.is_match(path) {
                ids.push(id);
            }
        },
        |_, _| {},
    );
    Ok(ids)
}

/// A parameter group of the parameters matching `pattern`. It is an error when nothing
/// matches: a misspelt layer name should not silently freeze nothing.
pub fn group<M: Module>(module: &M, pattern: &str) -> Result<ParamGroup, TransferError> {
    let ids = matching_ids(module, pattern)?;
    if ids.is_empty() {
        return Err(TransferError::Invalid(format!(
            "no parameter matches `{pattern}` (`flint models --params <model>` lists the names)"
        )));
    }
    Ok(ParamGroup::from_ids(ids))
}

/// Freezes the parameters (and batch norm / dropout training flags of the layers) matching
/// `pattern`: no gradients, no updates, inference-mode normalisation.
pub fn freeze<M: Module>(module: M, pattern: &str) -> Result<M, TransferError> {
    let group = group_with_flags(&module, pattern)?;
    Ok(module.freeze_group(group))
}

/// Makes the parameters matching `pattern` trainable again (and their layers' training flags).
pub fn unfreeze<M: Module>(module: M, pattern: &str) -> Result<M, TransferError> {
    let group = group_with_flags(&module, pattern)?;
    Ok(module.unfreeze_group(group))
}

/// Like [`group`], plus the training flags (`.training`) of the layers whose parameters match,
/// so freezing a batch norm's weights also puts it in inference mode.
fn group_with_flags<M: Module>(module: &M, pattern: &str) -> Result<ParamGroup, TransferError> {
    let params = group(module, pattern)?;
    let re = compile(pattern)?;
    let mut flags = Vec::new();
    walk(
        module,
        |_, _, _, _| {},
        |layer, id| {
            // A flag goes with its layer when the layer's own path matches (`conv`,
            // `^backbone\.`) or the pattern names one of its tensors.
            let matched = re.is_match(layer)
                || ["gamma", "beta", "weight", "bias"]
                    .iter()
                    .any(|p| re.is_match(&format!("{layer}.{p}")));
            if matched {
                flags.push(id);
            }
        },
    );
    Ok(if flags.is_empty() {
        params
    } else {
        params.fuse(&ParamGroup::from_ids(flags))
    })
}
