//! Element-wise operators, matrix products, normalisation and reductions.

use burn::module::{Param, ParamId};
use burn::nn::Linear;
use burn::tensor::Tensor;
use burn::tensor::activation;

use super::Ctx;
use crate::error::OnnxError;
use crate::proto::Attrs;
use crate::value::{FloatValue, IntValue, MAX_RANK, OnnxValue, normalize_axis, padded};

#[derive(Clone, Debug)]
pub(crate) struct GemmSpec {
    pub alpha: f32,
    pub beta: f32,
    pub trans_a: bool,
    pub trans_b: bool,
}

pub(crate) fn parse_gemm(a: &mut Attrs) -> Result<GemmSpec, OnnxError> {
    Ok(GemmSpec {
        alpha: a.float("alpha", 1.0),
        beta: a.float("beta", 1.0),
        trans_a: a.int("transA", 0) != 0,
        trans_b: a.int("transB", 0) != 0,
    })
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Unary {
    Relu,
    Sigmoid,
    Tanh,
    HardSigmoid { alpha: f32, beta: f32 },
    HardSwish,
    LeakyRelu { alpha: f32 },
    Elu { alpha: f32 },
    Gelu { tanh: bool },
    Erf,
    Exp,
    Log,
    Sqrt,
    Neg,
    Abs,
    Reciprocal,
    Softplus,
    Mish,
    Floor,
    Ceil,
}

/// The element-wise operator `op`, if it is one.
pub(crate) fn unary(op: &str, a: &mut Attrs) -> Result<Option<Unary>, OnnxError> {
    Ok(Some(match op {
        "Relu" => Unary::Relu,
        "Sigmoid" => Unary::Sigmoid,
        "Tanh" => Unary::Tanh,
        "HardSigmoid" => Unary::HardSigmoid {
            alpha: a.float("alpha", 0.2),
            beta: a.float("beta", 0.5),
        },
        "HardSwish" => Unary::HardSwish,
        "LeakyRelu" => Unary::LeakyRelu {
            alpha: a.float("alpha", 0.01),
        },
        "Elu" => Unary::Elu {
            alpha: a.float("alpha", 1.0),
        },
        "Gelu" => match a.string("approximate", "none").as_str() {
            "none" => Unary::Gelu { tanh: false },
            "tanh" => Unary::Gelu { tanh: true },
            other => return Err(a.unsupported("approximate", format!("= {other}"))),
        },
        "Erf" => Unary::Erf,
        "Exp" => Unary::Exp,
        "Log" => Unary::Log,
        "Sqrt" => Unary::Sqrt,
        "Neg" => Unary::Neg,
        "Abs" => Unary::Abs,
        "Reciprocal" => Unary::Reciprocal,
        "Softplus" => Unary::Softplus,
        "Mish" => Unary::Mish,
        "Floor" => Unary::Floor,
        "Ceil" => Unary::Ceil,
        _ => return Ok(None),
    }))
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Binary {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

pub(crate) fn binary(op: &str) -> Option<Binary> {
    Some(match op {
        "Add" => Binary::Add,
        "Sub" => Binary::Sub,
        "Mul" => Binary::Mul,
        "Div" => Binary::Div,
        "Pow" => Binary::Pow,
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Reduce {
    Mean,
    Sum,
    Max,
    Min,
}

pub(crate) fn apply_unary(ctx: &Ctx, u: &Unary) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    let t = x.tensor;
    let y = match *u {
        Unary::Relu => activation::relu(t),
        Unary::Sigmoid => activation::sigmoid(t),
        Unary::Tanh => t.tanh(),
        Unary::HardSigmoid { alpha, beta } => {
            flint_layers::clamp(t.mul_scalar(alpha).add_scalar(beta), 0.0, 1.0)
        }
        // x * relu6(x + 3) / 6, as ONNX and PyTorch define it.
        Unary::HardSwish => t.clone() * flint_layers::relu6(t.add_scalar(3.0)).div_scalar(6.0),
        Unary::LeakyRelu { alpha } => activation::leaky_relu(t, alpha as f64),
        Unary::Elu { alpha } => {
            let neg = t
                .clone()
                .clamp_max(0.0)
                .exp()
                .sub_scalar(1.0)
                .mul_scalar(alpha);
            t.clamp_min(0.0) + neg
        }
        Unary::Gelu { tanh: false } => activation::gelu(t),
        Unary::Gelu { tanh: true } => {
            let c = (2.0f64 / std::f64::consts::PI).sqrt();
            let inner = (t.clone() + t.clone().powi_scalar(3).mul_scalar(0.044715)).mul_scalar(c);
            t.mul_scalar(0.5) * inner.tanh().add_scalar(1.0)
        }
        Unary::Erf => t.erf(),
        Unary::Exp => t.exp(),
        Unary::Log => t.log(),
        Unary::Sqrt => t.sqrt(),
        Unary::Neg => t.neg(),
        Unary::Abs => t.abs(),
        Unary::Reciprocal => t.recip(),
        Unary::Softplus => activation::softplus(t, 1.0),
        Unary::Mish => activation::mish(t),
        Unary::Floor => t.floor(),
        Unary::Ceil => t.ceil(),
    };
    Ok(FloatValue {
        tensor: y,
        rank: x.rank,
    })
}

/// NumPy broadcasting of two ONNX shapes.
fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    (0..n)
        .map(|i| {
            let x = if i + a.len() >= n {
                a[i + a.len() - n]
            } else {
                1
            };
            let y = if i + b.len() >= n {
                b[i + b.len() - n]
            } else {
                1
            };
            match (x, y) {
                _ if x == y => Some(x),
                (1, y) => Some(y),
                (x, 1) => Some(x),
                _ => None,
            }
        })
        .collect()
}

pub(crate) fn apply_binary(ctx: &Ctx, op: Binary) -> Result<OnnxValue, OnnxError> {
    let (a, b) = (ctx.value(0)?, ctx.value(1)?);
    let shape = broadcast(&a.dims(), &b.dims()).ok_or_else(|| {
        ctx.shape_error(format!(
            "shapes {:?} and {:?} do not broadcast",
            a.dims(),
            b.dims()
        ))
    })?;
    if let (OnnxValue::Int(x), OnnxValue::Int(y)) = (a, b) {
        return int_binary(ctx, op, x, y, shape).map(OnnxValue::Int);
    }
    let (x, y) = (ctx.float(0)?, ctx.float(1)?);
    let t = match op {
        Binary::Add => x.tensor + y.tensor,
        Binary::Sub => x.tensor - y.tensor,
        Binary::Mul => x.tensor * y.tensor,
        Binary::Div => x.tensor / y.tensor,
        Binary::Pow => x.tensor.powf(y.tensor),
    };
    Ok(OnnxValue::Float(FloatValue {
        tensor: t,
        rank: shape.len(),
    }))
}

/// Integer arithmetic on the host, for shape computations.
fn int_binary(
    ctx: &Ctx,
    op: Binary,
    x: &IntValue,
    y: &IntValue,
    shape: Vec<usize>,
) -> Result<IntValue, OnnxError> {
    let count: usize = shape.iter().product();
    let index = |v: &IntValue, flat: usize| -> i64 {
        // Position in v of the broadcast element `flat`.
        let (mut rest, mut at, mut stride) = (flat, 0, 1);
        for (axis, &d) in shape.iter().enumerate().rev() {
            let i = rest % d;
            rest /= d;
            let offset = shape.len() - v.dims.len();
            if axis >= offset {
                let vd = v.dims[axis - offset];
                at += if vd == 1 { 0 } else { i * stride };
                stride *= vd;
            }
        }
        v.data[at]
    };
    let data = (0..count)
        .map(|i| {
            let (p, q) = (index(x, i), index(y, i));
            match op {
                Binary::Add => Ok(p.wrapping_add(q)),
                Binary::Sub => Ok(p.wrapping_sub(q)),
                Binary::Mul => Ok(p.wrapping_mul(q)),
                Binary::Div if q == 0 => Err(ctx.shape_error("integer division by zero")),
                // Truncated towards zero, as ONNX's integer division.
                Binary::Div => Ok(p.wrapping_div(q)),
                Binary::Pow => Ok(p.wrapping_pow(q.clamp(0, u32::MAX as i64) as u32)),
            }
        })
        .collect::<Result<_, _>>()?;
    Ok(IntValue { dims: shape, data })
}

pub(crate) fn clip(ctx: &Ctx, min: Option<f32>, max: Option<f32>) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    let min = ctx.scalar(1)?.or(min);
    let max = ctx.scalar(2)?.or(max);
    // Both bounds (ReLU6) in one pass through flint's clamp kernel.
    let t = match (min, max) {
        (Some(lo), Some(hi)) => flint_layers::clamp(x.tensor, lo, hi),
        (Some(lo), None) => x.tensor.clamp_min(lo),
        (None, Some(hi)) => x.tensor.clamp_max(hi),
        (None, None) => x.tensor,
    };
    Ok(FloatValue {
        tensor: t,
        rank: x.rank,
    })
}

/// `alpha * A' B' + beta * C`; a weight `B` with `alpha = 1` goes through flint's fully connected
/// kernel (PyTorch's `nn.Linear` exports as `Gemm` with `transB = 1`).
pub(crate) fn gemm(ctx: &Ctx, spec: &GemmSpec) -> Result<FloatValue, OnnxError> {
    let (a, b) = (ctx.float(0)?, ctx.float(1)?);
    let (Some(a), Some(b)) = (a.to_rank::<2>(), b.to_rank::<2>()) else {
        return Err(ctx.shape_error("A and B must be matrices"));
    };
    let a = if spec.trans_a { a.transpose() } else { a };
    let b = if spec.trans_b { b.transpose() } else { b };
    let ([m, k], [k2, n]) = (a.dims(), b.dims());
    if k != k2 {
        return Err(ctx.shape_error(format!("A is {m}x{k}, B is {k2}x{n}")));
    }
    let c = if ctx.has(2) {
        Some(ctx.float(2)?)
    } else {
        None
    };
    let c_is_bias = c.as_ref().is_some_and(|c| c.dims() == [n]) && spec.beta == 1.0;
    let y = if spec.alpha == 1.0 {
        let bias = if c_is_bias {
            c.as_ref().and_then(|c| c.to_rank::<1>())
        } else {
            None
        };
        let layer = Linear {
            weight: Param::initialized(ParamId::new(), b),
            bias: bias.map(|b| Param::initialized(ParamId::new(), b)),
        };
        flint_layers::linear(&layer, a)
    } else {
        a.matmul(b).mul_scalar(spec.alpha)
    };
    let mut out = FloatValue::new(y);
    if let Some(c) = c.filter(|_| !c_is_bias || spec.alpha != 1.0) {
        if broadcast(&[m, n], &c.dims()).as_deref() != Some(&[m, n]) {
            return Err(ctx.shape_error(format!("C of shape {:?} for a {m}x{n} product", c.dims())));
        }
        out.tensor = out.tensor + c.tensor.mul_scalar(spec.beta);
    }
    Ok(out)
}

pub(crate) fn matmul(ctx: &Ctx) -> Result<FloatValue, OnnxError> {
    let (a, b) = (ctx.float(0)?, ctx.float(1)?);
    let (ad, bd) = (a.dims(), b.dims());
    if ad.is_empty() || bd.is_empty() {
        return Err(ctx.shape_error("MatMul of a scalar"));
    }
    // ONNX (NumPy) promotes vectors to matrices and drops the added axis afterwards.
    let a2 = if ad.len() == 1 {
        a.reshaped(&[1, ad[0]]).unwrap()
    } else {
        a
    };
    let b2 = if bd.len() == 1 {
        b.reshaped(&[bd[0], 1]).unwrap()
    } else {
        b
    };
    let (ad2, bd2) = (a2.dims(), b2.dims());
    let k = ad2[ad2.len() - 1];
    if k != bd2[bd2.len() - 2] {
        return Err(ctx.shape_error(format!("shapes {ad:?} and {bd:?} do not multiply")));
    }
    let batch = broadcast(&ad2[..ad2.len() - 2], &bd2[..bd2.len() - 2])
        .ok_or_else(|| ctx.shape_error(format!("batch shapes of {ad:?} and {bd:?} differ")))?;
    let n = bd2[bd2.len() - 1];
    let y = if bd2.len() == 2 {
        // A weight matrix: every row of A through flint's fully connected kernel.
        let rows: usize = ad2[..ad2.len() - 1].iter().product();
        let flat = a2.reshaped(&[rows, k]).unwrap().to_rank::<2>().unwrap();
        let layer = Linear {
            weight: Param::initialized(ParamId::new(), b2.to_rank::<2>().unwrap()),
            bias: None,
        };
        let mut dims = ad2[..ad2.len() - 1].to_vec();
        dims.push(n);
        FloatValue::new(flint_layers::linear(&layer, flat))
            .reshaped(&dims)
            .unwrap()
    } else {
        let rank = batch.len() + 2;
        FloatValue {
            tensor: a2.tensor.matmul(b2.tensor),
            rank,
        }
    };
    let mut dims = y.dims();
    if bd.len() == 1 {
        dims.pop();
    }
    if ad.len() == 1 {
        dims.remove(dims.len() - if bd.len() == 1 { 1 } else { 2 });
    }
    y.reshaped(&dims)
        .ok_or_else(|| ctx.shape_error("rank too high"))
}

/// `LayerNormalization`, with its optional `Mean` and `InvStdDev` outputs (the statistics, with
/// the normalised axes kept as 1).
pub(crate) fn layer_norm(ctx: &Ctx, axis: i64, epsilon: f64) -> Result<Vec<OnnxValue>, OnnxError> {
    let x = ctx.float(0)?;
    let first = x
        .axis(axis)
        .ok_or_else(|| ctx.unsupported("axis", format!("= {axis} for rank {}", x.rank)))?;
    let mut t = x.tensor.clone();
    // Statistics over every axis from `axis` on: flatten them into the last one.
    let dims = t.dims();
    let inner: usize = dims[first..].iter().product();
    let flat = {
        let mut f = [1; MAX_RANK];
        let outer: usize = dims[..first].iter().product();
        f[MAX_RANK - 2] = outer;
        f[MAX_RANK - 1] = inner;
        f
    };
    t = t.reshape(flat);
    let mean = t.clone().mean_dim(MAX_RANK - 1);
    let centered = t - mean.clone();
    let var = centered.clone().powi_scalar(2).mean_dim(MAX_RANK - 1);
    let inv_std = var.add_scalar(epsilon).sqrt().recip();
    let normed = (centered * inv_std.clone()).reshape(dims);
    let mut y = normed * ctx.float(1)?.tensor;
    if ctx.has(2) {
        y = y + ctx.float(2)?.tensor;
    }
    let mut outs = vec![OnnxValue::Float(FloatValue {
        tensor: y,
        rank: x.rank,
    })];
    if ctx.node.outputs.iter().skip(1).any(|o| !o.is_empty()) {
        let mut kept = dims;
        kept[first..].iter_mut().for_each(|d| *d = 1);
        for stat in [mean, inv_std] {
            outs.push(OnnxValue::Float(FloatValue {
                tensor: stat.reshape(kept),
                rank: x.rank,
            }));
        }
    }
    Ok(outs)
}

pub(crate) fn softmax(
    ctx: &Ctx,
    axis: i64,
    log: bool,
    coerce_2d: bool,
) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    let a = x
        .axis(axis)
        .ok_or_else(|| ctx.unsupported("axis", format!("= {axis} for rank {}", x.rank)))?;
    let run = |t: Tensor<MAX_RANK>, dim| {
        if log {
            activation::log_softmax(t, dim)
        } else {
            activation::softmax(t, dim)
        }
    };
    if coerce_2d {
        // Opset < 13: softmax over everything from `axis` on, as one flattened axis.
        let dims = x.tensor.dims();
        let outer: usize = dims[..a].iter().product();
        let inner: usize = dims[a..].iter().product();
        let flat = padded(&[outer, inner]).unwrap();
        let y = run(x.tensor.reshape(flat), MAX_RANK - 1).reshape(dims);
        return Ok(FloatValue {
            tensor: y,
            rank: x.rank,
        });
    }
    Ok(FloatValue {
        tensor: run(x.tensor, a),
        rank: x.rank,
    })
}

pub(crate) fn reduce(
    ctx: &Ctx,
    kind: Reduce,
    axes: Option<&[i64]>,
    keepdims: bool,
    noop_with_empty_axes: bool,
) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    let axes: Vec<i64> = match axes {
        Some(a) => a.to_vec(),
        None if ctx.has(1) => ctx.ints(1)?.data,
        None => Vec::new(),
    };
    if axes.is_empty() && noop_with_empty_axes {
        return Ok(x);
    }
    let mut list: Vec<usize> = if axes.is_empty() {
        (0..x.rank).collect()
    } else {
        axes.iter()
            .map(|&a| {
                normalize_axis(a, x.rank)
                    .ok_or_else(|| ctx.unsupported("axes", format!("= {axes:?}")))
            })
            .collect::<Result<_, _>>()?
    };
    list.sort_unstable();
    list.dedup();
    let offset = MAX_RANK - x.rank;
    let mut t = x.tensor.clone();
    for &a in &list {
        t = match kind {
            Reduce::Mean => t.mean_dim(a + offset),
            Reduce::Sum => t.sum_dim(a + offset),
            Reduce::Max => t.max_dim(a + offset),
            Reduce::Min => t.min_dim(a + offset),
        };
    }
    let y = FloatValue {
        tensor: t,
        rank: x.rank,
    };
    if keepdims {
        return Ok(y);
    }
    let dims: Vec<usize> = y
        .dims()
        .iter()
        .enumerate()
        .filter(|(i, _)| !list.contains(i))
        .map(|(_, &d)| d)
        .collect();
    Ok(y.reshaped(&dims).unwrap())
}
