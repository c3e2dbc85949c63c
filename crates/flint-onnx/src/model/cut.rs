//! Inspecting a network and cutting its classifier off.

use std::collections::{HashMap, HashSet};

use super::{Cut, CutPoint, OnnxModel, Summary, Weight};
use crate::error::OnnxError;
use crate::ops::{Node, Op};

impl OnnxModel {
    /// Inputs, outputs, operators, parameter count and the automatic cut point.
    pub fn inspect(&self) -> Summary {
        let mut ops: HashMap<String, usize> = HashMap::new();
        for n in &self.graph.nodes {
            *ops.entry(n.op_type.clone()).or_default() += 1;
        }
        let mut operators: Vec<_> = ops.into_iter().collect();
        operators.sort();
        Summary {
            inputs: self.graph.inputs.clone(),
            outputs: self.graph.outputs.clone(),
            operators,
            parameters: self.num_weights(),
            opset: self.graph.opset,
            constants: {
                let mut c: Vec<(String, Vec<usize>)> = self
                    .graph
                    .constants
                    .iter()
                    .map(|(n, t)| (n.clone(), t.dims().to_vec()))
                    .collect();
                c.sort();
                c
            },
            auto_cut: self
                .auto_cut()
                .ok()
                .map(|(i, size)| (self.graph.nodes[i].name.clone(), size)),
        }
    }

    /// The last `Gemm`/`MatMul` and the feature size its weight implies.
    fn auto_cut(&self) -> Result<(usize, Option<usize>), OnnxError> {
        let g = &self.graph;
        let i = g
            .nodes
            .iter()
            .rposition(|n| matches!(n.op, Op::Gemm(_) | Op::MatMul))
            .ok_or_else(|| {
                OnnxError::NoClassifier("the graph has no Gemm or MatMul node".into())
            })?;
        let node = &g.nodes[i];
        let weight = node
            .inputs
            .get(1)
            .and_then(|w| self.param_index.get(w))
            .map(|&p| self.params[p].1.value().dims());
        let size = match (&node.op, weight.as_deref()) {
            (Op::Gemm(s), Some(&[r, c])) => Some(if s.trans_b { c } else { r }),
            (Op::MatMul, Some(&[k, _])) => Some(k),
            _ => None,
        };
        Ok((i, size))
    }

    /// Splits the network into features and head (the cut-off classifier), each a module of
    /// its own holding the parameters it uses.
    pub fn cut(self, at: CutPoint) -> Result<Cut, OnnxError> {
        let g = self.graph.clone();
        let (tensor, size) = match &at {
            CutPoint::Auto => {
                let (i, size) = self.auto_cut()?;
                (g.nodes[i].inputs[0].clone(), size)
            }
            CutPoint::At(name) => match g.nodes.iter().find(|n| &n.name == name) {
                Some(n) => (n.outputs[0].clone(), None),
                None if g.nodes.iter().any(|n| n.outputs.contains(name))
                    || g.inputs.contains(name) =>
                {
                    (name.clone(), None)
                }
                None => return Err(OnnxError::UnknownCut(name.clone())),
            },
        };
        // Features: the nodes the tensor depends on. Head: the nodes the outputs need beyond it.
        let needed = |targets: &[String], stop: &str| -> Vec<bool> {
            let mut want: HashSet<String> = targets.iter().cloned().collect();
            let mut keep = vec![false; g.nodes.len()];
            for (i, n) in g.nodes.iter().enumerate().rev() {
                if n.outputs.iter().any(|o| want.contains(o)) {
                    keep[i] = true;
                    want.extend(n.inputs.iter().filter(|s| s.as_str() != stop).cloned());
                }
            }
            keep
        };
        let front = needed(std::slice::from_ref(&tensor), "");
        let back = needed(&g.outputs, &tensor);
        // The head may read only the cut tensor, weights, constants and its own nodes' outputs;
        // anything else (a graph input, a tensor from before the cut) is a skip connection.
        let mut available: HashSet<&str> = HashSet::from([tensor.as_str()]);
        let mut separates = true;
        for (n, _) in g.nodes.iter().zip(&back).filter(|(_, b)| **b) {
            separates &= n.inputs.iter().all(|i| {
                i.is_empty()
                    || available.contains(i.as_str())
                    || self.param_index.contains_key(i)
                    || g.constants.contains_key(i)
                    || self.bns.iter().any(|b| b.names.contains(i))
            });
            available.extend(n.outputs.iter().map(String::as_str));
        }
        if !separates {
            return Err(OnnxError::CutNotSeparating(tensor));
        }
        let features = self.subgraph(&front, g.inputs.clone(), vec![tensor.clone()])?;
        let head = self.subgraph(&back, vec![tensor.clone()], g.outputs.clone())?;
        Ok(Cut {
            features,
            head,
            feature_tensor: tensor,
            feature_size: size,
        })
    }

    fn subgraph(
        &self,
        keep: &[bool],
        inputs: Vec<String>,
        outputs: Vec<String>,
    ) -> Result<Self, OnnxError> {
        let g = &self.graph;
        let nodes: Vec<Node> = g
            .nodes
            .iter()
            .zip(keep)
            .filter(|(_, k)| **k)
            .map(|(n, _)| n.clone())
            .collect();
        let used: HashSet<&str> = nodes
            .iter()
            .flat_map(|n| n.inputs.iter().map(String::as_str))
            .collect();
        let names: HashSet<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        let params: Vec<(String, Weight)> = self
            .params
            .iter()
            .filter(|(n, _)| used.contains(n.as_str()))
            .cloned()
            .collect();
        let param_index = params
            .iter()
            .enumerate()
            .map(|(i, (n, _))| (n.clone(), i))
            .collect();
        let bns = self
            .bns
            .iter()
            .filter(|b| names.contains(b.node.as_str()))
            .cloned()
            .collect();
        let dropouts = self
            .dropouts
            .iter()
            .filter(|d| names.contains(d.node.as_str()))
            .cloned()
            .collect();
        let constants = g
            .constants
            .iter()
            .filter(|(n, _)| used.contains(n.as_str()))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        let part = Self::assemble(
            params,
            bns,
            dropouts,
            nodes,
            inputs,
            outputs,
            constants,
            g.opset,
            param_index,
        )?;
        Ok(part.with_fusion(self.fuse))
    }
}
