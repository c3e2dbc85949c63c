//! burn's `Module` trait by hand: parameters are visited under their ONNX names.

use burn::module::{Devices, Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{Device, Tensor};
use flint_layers::{BatchNorm, Dropout};

use super::{OnnxModel, Weight};

/// Enters the modules of a dotted name, runs `f` on the leaf, and leaves them.
fn with_path<R>(
    name: &str,
    enter: &mut impl FnMut(&str),
    exit: &mut impl FnMut(&str),
    f: impl FnOnce() -> R,
) -> R {
    let parts: Vec<&str> = name.split('.').collect();
    for p in &parts {
        enter(p);
    }
    let r = f();
    for p in parts.iter().rev() {
        exit(p);
    }
    r
}

const CONTAINER: &str = "Struct:OnnxModel";

impl Module for OnnxModel {
    fn collect_devices(&self, mut devices: Devices) -> Devices {
        for (_, w) in &self.params {
            devices = each_weight!(w, p => p.collect_devices(devices));
        }
        for b in &self.bns {
            devices = b.layer.collect_devices(devices);
        }
        devices
    }

    fn fork(self, device: &Device) -> Self {
        self.apply(
            |w| map_weight!(w, p => p.fork(device)),
            |b| b.fork(device),
            |d| d.fork(device),
        )
    }

    fn to_device(self, device: &Device) -> Self {
        self.apply(
            |w| map_weight!(w, p => p.to_device(device)),
            |b| b.to_device(device),
            |d| d.to_device(device),
        )
    }

    fn train(self) -> Self {
        self.apply(
            |w| map_weight!(w, p => p.train()),
            |b| b.train(),
            |d| d.train(),
        )
    }

    fn valid(&self) -> Self {
        self.clone().apply(
            |w| map_weight!(w, p => p.valid()),
            |b| b.valid(),
            |d| d.valid(),
        )
    }

    fn materialize(self) -> Self {
        self.apply(
            |w| map_weight!(w, p => p.materialize()),
            |b| b.materialize(),
            |d| d.materialize(),
        )
    }

    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        let visitor = std::cell::RefCell::new(visitor);
        let mut enter = |p: &str| visitor.borrow_mut().enter_module(p, CONTAINER);
        let mut exit = |p: &str| visitor.borrow_mut().exit_module(p, CONTAINER);
        for (name, w) in &self.params {
            with_path(
                name,
                &mut enter,
                &mut exit,
                || each_weight!(w, p => p.visit(*visitor.borrow_mut())),
            );
        }
        for b in &self.bns {
            let l = &b.layer;
            with_path(&b.names[0], &mut enter, &mut exit, || {
                Module::visit(&l.gamma, *visitor.borrow_mut())
            });
            with_path(&b.names[1], &mut enter, &mut exit, || {
                Module::visit(&l.beta, *visitor.borrow_mut())
            });
            with_path(&b.names[2], &mut enter, &mut exit, || {
                Module::visit(&l.running_mean, *visitor.borrow_mut())
            });
            with_path(&b.names[3], &mut enter, &mut exit, || {
                Module::visit(&l.running_var, *visitor.borrow_mut())
            });
            let count = format!("{}num_batches_tracked", b.prefix);
            with_path(&count, &mut enter, &mut exit, || {
                Module::visit(&l.num_batches_tracked, *visitor.borrow_mut())
            });
            let flag = format!("{}training", b.prefix);
            with_path(&flag, &mut enter, &mut exit, || {
                Module::visit(&l.training, *visitor.borrow_mut())
            });
        }
        for d in &self.dropouts {
            let flag = format!("{}.training", d.node);
            with_path(&flag, &mut enter, &mut exit, || {
                Module::visit(&d.layer.training, *visitor.borrow_mut())
            });
        }
    }

    fn map<M: ModuleMapper>(mut self, mapper: &mut M) -> Self {
        let mapper = std::cell::RefCell::new(mapper);
        let mut enter = |p: &str| mapper.borrow_mut().enter_module(p, CONTAINER);
        let mut exit = |p: &str| mapper.borrow_mut().exit_module(p, CONTAINER);
        self.params = std::mem::take(&mut self.params)
            .into_iter()
            .map(|(name, w)| {
                let w = with_path(
                    &name,
                    &mut enter,
                    &mut exit,
                    || map_weight!(w, p => Module::map(p, *mapper.borrow_mut())),
                );
                (name, w)
            })
            .collect();
        for b in &mut self.bns {
            let l = &mut b.layer;
            l.gamma = with_path(&b.names[0], &mut enter, &mut exit, || {
                Module::map(l.gamma.take(), *mapper.borrow_mut())
            });
            l.beta = with_path(&b.names[1], &mut enter, &mut exit, || {
                Module::map(l.beta.take(), *mapper.borrow_mut())
            });
            l.running_mean = with_path(&b.names[2], &mut enter, &mut exit, || {
                Module::map(l.running_mean.take(), *mapper.borrow_mut())
            });
            l.running_var = with_path(&b.names[3], &mut enter, &mut exit, || {
                Module::map(l.running_var.take(), *mapper.borrow_mut())
            });
            let count = format!("{}num_batches_tracked", b.prefix);
            l.num_batches_tracked = with_path(&count, &mut enter, &mut exit, || {
                Module::map(l.num_batches_tracked.take(), *mapper.borrow_mut())
            });
            let flag = format!("{}training", b.prefix);
            let training = l.training.clone();
            l.training = with_path(&flag, &mut enter, &mut exit, || {
                Module::map(training, *mapper.borrow_mut())
            });
        }
        for d in &mut self.dropouts {
            let flag = format!("{}.training", d.node);
            let training = d.layer.training.clone();
            d.layer.training = with_path(&flag, &mut enter, &mut exit, || {
                Module::map(training, *mapper.borrow_mut())
            });
        }
        self
    }
}

impl OnnxModel {
    /// Applies a whole-module operation to every weight, batch norm and dropout.
    fn apply(
        mut self,
        w: impl Fn(Weight) -> Weight,
        b: impl Fn(BatchNorm) -> BatchNorm,
        d: impl Fn(Dropout) -> Dropout,
    ) -> Self {
        self.params = std::mem::take(&mut self.params)
            .into_iter()
            .map(|(n, x)| (n, w(x)))
            .collect();
        for s in &mut self.bns {
            s.layer = b(s.layer.clone());
        }
        for s in &mut self.dropouts {
            s.layer = d(s.layer.clone());
        }
        self
    }

    /// Number of float parameters (weights, not running statistics).
    pub fn num_weights(&self) -> usize {
        self.params.iter().map(|(_, w)| w.numel()).sum::<usize>()
            + self
                .bns
                .iter()
                .map(|b| 2 * b.layer.num_features)
                .sum::<usize>()
    }
}

/// Sets every training flag (batch norm, dropout) without touching gradients.
struct TrainingFlags(bool);

impl ModuleMapper for TrainingFlags {
    fn map_flag(&mut self, flag: Param<burn::module::Flag>) -> Param<burn::module::Flag> {
        flag.with_value(self.0)
    }
}

impl OnnxModel {
    /// Turns training behaviour (batch statistics, dropout) on or off while parameters keep
    /// requiring gradients: `false` gives the exported network's inference computation with
    /// gradients still flowing, as PyTorch's `model.eval()` does.
    pub fn with_training(self, training: bool) -> Self {
        self.map(&mut TrainingFlags(training))
    }

    /// Each batch norm's running mean and variance, under their ONNX names.
    pub fn running_stats(&self) -> Vec<(String, Tensor<1>)> {
        let mut out = Vec::new();
        for b in &self.bns {
            let l = &b.layer;
            if let (Some(m), Some(v)) = (&l.running_mean, &l.running_var) {
                out.push((b.names[2].clone(), m.value_sync()));
                out.push((b.names[3].clone(), v.value_sync()));
            }
        }
        out
    }
}
