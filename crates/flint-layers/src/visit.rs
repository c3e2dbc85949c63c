//! Walking a module's parameters with their module paths (`backbone.conv1.weight`): the one
//! traversal behind freezing by name, weight penalties, model summaries and parameter listings.
//!
//! burn's [`ModuleVisitor`] and [`ModuleMapper`] only report entering and leaving each field;
//! [`visit_params`] and [`map_params`] keep that stack once and hand each parameter its
//! [`ParamPath`]. They expose field names only, never burn's container type names
//! (`"Struct:Linear"`), which a user type of the same name would match: code that needs a layer
//! kind asks the model through a trait ([`MaxNormLayers`](crate::MaxNormLayers),
//! [`BatchNormLayers`](crate::BatchNormLayers)).

use std::fmt;

use burn::module::{Flag, Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

/// Where a parameter sits in a module: its field names from the root down, the parameter's own
/// name last (`["backbone", "conv1", "weight"]`; `Vec` elements are their index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamPath<'a>(&'a [String]);

impl<'a> ParamPath<'a> {
    /// The field names, root first.
    pub fn segments(&self) -> &'a [String] {
        self.0
    }

    /// The parameter's own field name (`weight`, `running_mean`, `training`), or `""` for a
    /// module that is itself a parameter.
    pub fn name(&self) -> &'a str {
        self.0.last().map_or("", String::as_str)
    }

    /// The path of the layer holding the parameter (`backbone.conv1` for
    /// `backbone.conv1.weight`).
    pub fn layer(&self) -> ParamPath<'a> {
        ParamPath(&self.0[..self.0.len().saturating_sub(1)])
    }
}

impl fmt::Display for ParamPath<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, segment) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(".")?;
            }
            f.write_str(segment)?;
        }
        Ok(())
    }
}

/// Called by [`visit_params`] for every parameter, with its path.
pub trait ParamVisitor {
    /// A float parameter (weights, biases, batch-norm statistics).
    #[allow(unused_variables)]
    fn visit_float<const D: usize>(&mut self, path: ParamPath<'_>, param: &Param<Tensor<D>>) {}

    /// A training flag (dropout, batch norm); its path ends in the flag's field name.
    #[allow(unused_variables)]
    fn visit_flag(&mut self, path: ParamPath<'_>, flag: &Param<Flag>) {}
}

/// Called by [`map_params`] for every float parameter, with its path.
pub trait ParamMapper {
    /// Returns the parameter to keep in place of `param`.
    fn map_float<const D: usize>(
        &mut self,
        path: ParamPath<'_>,
        param: Param<Tensor<D>>,
    ) -> Param<Tensor<D>>;
}

/// Calls `visitor` on every parameter of `module`, in declaration order.
pub fn visit_params<M: Module, V: ParamVisitor>(module: &M, visitor: &mut V) {
    module.visit(&mut Tracked {
        path: Vec::new(),
        inner: visitor,
    });
}

/// Replaces every float parameter of `module` with what `mapper` returns for it.
pub fn map_params<M: Module, P: ParamMapper>(module: M, mapper: &mut P) -> M {
    module.map(&mut Tracked {
        path: Vec::new(),
        inner: mapper,
    })
}

/// The paths of `module`'s float parameters, in declaration order: the names burn-store and
/// PyTorch state dicts use.
pub fn float_param_paths<M: Module>(module: &M) -> Vec<String> {
    struct Paths(Vec<String>);
    impl ParamVisitor for Paths {
        fn visit_float<const D: usize>(&mut self, path: ParamPath<'_>, _: &Param<Tensor<D>>) {
            self.0.push(path.to_string());
        }
    }
    let mut paths = Paths(Vec::new());
    visit_params(module, &mut paths);
    paths.0
}

/// The ids of every float parameter and training flag of `module` (for `freeze_group`).
pub fn param_ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct Ids(Vec<ParamId>);
    impl ParamVisitor for Ids {
        fn visit_float<const D: usize>(&mut self, _: ParamPath<'_>, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
        fn visit_flag(&mut self, _: ParamPath<'_>, flag: &Param<Flag>) {
            self.0.push(flag.id);
        }
    }
    let mut ids = Ids(Vec::new());
    visit_params(module, &mut ids);
    ids.0
}

/// burn's visitor or mapper with the field stack kept for `inner`.
struct Tracked<'a, T> {
    path: Vec<String>,
    inner: &'a mut T,
}

impl<V: ParamVisitor> ModuleVisitor for Tracked<'_, V> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.inner.visit_float(ParamPath(&self.path), param);
    }

    fn visit_flag(&mut self, flag: &Param<Flag>) {
        self.inner.visit_flag(ParamPath(&self.path), flag);
    }
}

impl<P: ParamMapper> ModuleMapper for Tracked<'_, P> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        self.inner.map_float(ParamPath(&self.path), param)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{BatchNorm, BatchNormConfig};
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Device;

    #[derive(Module, Debug)]
    struct Block {
        fc: Linear,
        norm: BatchNorm,
    }

    #[derive(Module, Debug)]
    struct Net {
        blocks: Vec<Block>,
        head: Option<Linear>,
    }

    fn net(device: &Device) -> Net {
        let block = || Block {
            fc: LinearConfig::new(2, 3).init(device),
            norm: BatchNormConfig::new(3).init(device),
        };
        Net {
            blocks: vec![block(), block()],
            head: Some(LinearConfig::new(3, 1).init(device)),
        }
    }

    #[test]
    fn paths_are_field_names_joined_by_dots() {
        let paths = float_param_paths(&net(&Device::flex()));
        assert_eq!(&paths[..2], ["blocks.0.fc.weight", "blocks.0.fc.bias"]);
        assert!(paths.contains(&"blocks.1.norm.running_var".to_string()));
        assert_eq!(paths.last().map(String::as_str), Some("head.bias"));
    }

    #[test]
    fn flags_report_their_layer() {
        struct Flags(Vec<String>);
        impl ParamVisitor for Flags {
            fn visit_flag(&mut self, path: ParamPath<'_>, _: &Param<Flag>) {
                assert_eq!(path.name(), "training");
                self.0.push(path.layer().to_string());
            }
        }
        let mut flags = Flags(Vec::new());
        visit_params(&net(&Device::flex()), &mut flags);
        assert_eq!(flags.0, ["blocks.0.norm", "blocks.1.norm"]);
    }

    #[test]
    fn mapper_sees_paths_and_replaces_parameters() {
        struct ZeroBiases(usize);
        impl ParamMapper for ZeroBiases {
            fn map_float<const D: usize>(
                &mut self,
                path: ParamPath<'_>,
                param: Param<Tensor<D>>,
            ) -> Param<Tensor<D>> {
                if path.name() != "bias" {
                    return param;
                }
                self.0 += 1;
                param.map(|t| t.zeros_like())
            }
        }
        let mut mapper = ZeroBiases(0);
        let net = map_params(net(&Device::flex()), &mut mapper);
        assert_eq!(mapper.0, 3);
        let bias = net.head.unwrap().bias.unwrap().val();
        assert_eq!(bias.abs().sum().into_scalar::<f32>(), 0.0);
    }
}
