//! Freezing and unfreezing parameters by name, and the parameter groups behind per-group
//! learning rates, all on burn's `ParamGroup` (regular expressions on module paths such as
//! `backbone.conv1.weight`).
//!
//! Freezing a batch norm also switches it to inference mode (burn clears its training flag),
//! so a frozen backbone normalises with its running statistics and never updates them: the
//! behaviour PyTorch users get from `requires_grad_(False)` plus `.eval()` on those layers.

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::tensor::Tensor;

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

/// Every float parameter of `module` in declaration order, with its path and whether it
/// trains.
pub fn parameters<M: Module>(module: &M) -> Vec<ParamInfo> {
    struct Collect {
        stack: Vec<String>,
        out: Vec<ParamInfo>,
    }
    impl ModuleVisitor for Collect {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.out.push(ParamInfo {
                path: self.stack.join("."),
                shape: param.shape().to_vec(),
                trainable: param.is_require_grad(),
            });
        }
    }
    let mut c = Collect {
        stack: Vec::new(),
        out: Vec::new(),
    };
    module.visit(&mut c);
    c.out
}

/// The ids of the float parameters whose path matches `pattern` (a regular expression,
/// searched anywhere in the path, so `^backbone\.` or `conv`).
pub fn matching_ids<M: Module>(module: &M, pattern: &str) -> Result<Vec<ParamId>, TransferError> {
    let re = regex::Regex::new(pattern)
        .map_err(|e| TransferError::Invalid(format!("bad parameter pattern `{pattern}`: {e}")))?;
    struct Collect<'a> {
        re: &'a regex::Regex,
        stack: Vec<String>,
        ids: Vec<ParamId>,
    }
    impl ModuleVisitor for Collect<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if self.re.is_match(&self.stack.join(".")) {
                self.ids.push(param.id);
            }
        }
    }
    let mut c = Collect {
        re: &re,
        stack: Vec::new(),
        ids: Vec::new(),
    };
    module.visit(&mut c);
    Ok(c.ids)
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
    let re = regex::Regex::new(pattern).expect("checked by group()");
    struct Flags<'a> {
        re: &'a regex::Regex,
        stack: Vec<String>,
        ids: Vec<ParamId>,
    }
    impl ModuleVisitor for Flags<'_> {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.stack.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.stack.pop();
        }
        fn visit_flag(&mut self, flag: &Param<burn::module::Flag>) {
            // The flag's path is its layer's path plus `training`; it goes with the layer when
            // any parameter under the layer matches, i.e. when the layer's own path matches
            // (`conv` or `^backbone\.`) or the pattern names one of its tensors.
            let layer = self.stack[..self.stack.len().saturating_sub(1)].join(".");
            let matched = self.re.is_match(&layer)
                || ["gamma", "beta", "weight", "bias"]
                    .iter()
                    .any(|p| self.re.is_match(&format!("{layer}.{p}")));
            if matched {
                self.ids.push(flag.id);
            }
        }
    }
    let mut f = Flags {
        re: &re,
        stack: Vec::new(),
        ids: Vec::new(),
    };
    module.visit(&mut f);
    Ok(if f.ids.is_empty() {
        params
    } else {
        params.fuse(&ParamGroup::from_ids(f.ids))
    })
}
