//! Shape operators: on float tensors with burn, on integer tensors on the host.

use burn::tensor::{Int, Slice, Tensor, TensorData};

use super::{Ctx, Op};
use crate::error::OnnxError;
use crate::proto::HostTensor;
use crate::value::{FloatValue, IntValue, MAX_RANK, OnnxValue, normalize_axis};

pub(crate) fn eval(ctx: &Ctx) -> Result<Vec<OnnxValue>, OnnxError> {
    let v = match &ctx.node.op {
        Op::Identity => ctx.value(0)?.clone(),
        Op::Flatten { axis } => {
            let d = ctx.value(0)?.dims();
            let a = if *axis == d.len() as i64 {
                d.len()
            } else {
                normalize_axis(*axis, d.len()).ok_or_else(|| {
                    ctx.unsupported("axis", format!("= {axis} for rank {}", d.len()))
                })?
            };
            reshape(ctx, &[d[..a].iter().product(), d[a..].iter().product()])?
        }
        Op::Reshape { allowzero } => {
            let d = ctx.value(0)?.dims();
            let spec = ctx.ints(1)?.data;
            reshape(ctx, &target_shape(ctx, &d, &spec, *allowzero)?)?
        }
        Op::Squeeze { axes } => {
            let d = ctx.value(0)?.dims();
            let axes = axes_of(ctx, axes, 1)?;
            let axes: Vec<usize> = if axes.is_empty() {
                (0..d.len()).filter(|&i| d[i] == 1).collect()
            } else {
                axes.iter()
                    .map(|&a| axis(ctx, a, d.len()))
                    .collect::<Result<_, _>>()?
            };
            if let Some(&a) = axes.iter().find(|&&a| d[a] != 1) {
                return Err(ctx.shape_error(format!("cannot squeeze axis {a} of shape {d:?}")));
            }
            let out: Vec<usize> = (0..d.len())
                .filter(|i| !axes.contains(i))
                .map(|i| d[i])
                .collect();
            reshape(ctx, &out)?
        }
        Op::Unsqueeze { axes } => {
            let d = ctx.value(0)?.dims();
            let axes = axes_of(ctx, axes, 1)?;
            let rank = d.len() + axes.len();
            let mut pos: Vec<usize> = axes
                .iter()
                .map(|&a| axis(ctx, a, rank))
                .collect::<Result<_, _>>()?;
            pos.sort_unstable();
            let mut rest = d.iter();
            let out: Vec<usize> = (0..rank)
                .map(|i| {
                    if pos.contains(&i) {
                        1
                    } else {
                        *rest.next().unwrap_or(&1)
                    }
                })
                .collect();
            reshape(ctx, &out)?
        }
        Op::Transpose { perm } => {
            let x = ctx.float(0)?;
            let perm: Vec<usize> = match perm {
                Some(p) => p
                    .iter()
                    .map(|&a| axis(ctx, a, x.rank))
                    .collect::<Result<_, _>>()?,
                None => (0..x.rank).rev().collect(),
            };
            let offset = MAX_RANK - x.rank;
            let mut full: [usize; MAX_RANK] = std::array::from_fn(|i| i);
            for (i, &p) in perm.iter().enumerate() {
                full[offset + i] = offset + p;
            }
            OnnxValue::Float(FloatValue {
                tensor: x.tensor.permute(full),
                rank: x.rank,
            })
        }
        Op::Concat { axis: a } => concat(ctx, *a)?,
        Op::Split { axis: a, split } => return split_op(ctx, *a, split.as_deref()),
        Op::Slice => slice(ctx)?,
        Op::Gather { axis: a } => gather(ctx, *a)?,
        Op::Shape { start, end } => {
            let d = ctx.value(0)?.dims();
            let clampi = |i: i64| {
                (if i < 0 { i + d.len() as i64 } else { i }).clamp(0, d.len() as i64) as usize
            };
            let (s, e) = (clampi(*start), end.map_or(d.len(), clampi));
            OnnxValue::Int(IntValue::vector(
                d[s..e.max(s)].iter().map(|&x| x as i64).collect(),
            ))
        }
        Op::Cast { to_float } => match (ctx.value(0)?, to_float) {
            (OnnxValue::Float(f), true) => OnnxValue::Float(f.clone()),
            (OnnxValue::Int(i), false) => OnnxValue::Int(i.clone()),
            (OnnxValue::Int(i), true) => OnnxValue::Float(ctx.int_to_float(i)?),
            (OnnxValue::Float(f), false) => {
                let data = f.tensor.clone().into_data().convert::<f32>();
                let values = data.try_to_vec::<f32>().unwrap_or_default();
                OnnxValue::Int(IntValue {
                    dims: f.dims(),
                    data: values.iter().map(|&x| x as i64).collect(),
                })
            }
        },
        Op::Constant(t) => host_value(ctx, t)?,
        Op::ConstantOfShape(t) => {
            let dims: Vec<usize> = ctx
                .ints(0)?
                .data
                .iter()
                .map(|&x| x.max(0) as usize)
                .collect();
            let count = dims.iter().product();
            match t {
                HostTensor::Float { data, .. } => host_value(
                    ctx,
                    &HostTensor::Float {
                        dims,
                        data: vec![data[0]; count],
                    },
                )?,
                HostTensor::Int(i) => OnnxValue::Int(IntValue {
                    dims,
                    data: vec![i.data[0]; count],
                }),
            }
        }
        Op::Expand => {
            let target: Vec<usize> = ctx
                .ints(1)?
                .data
                .iter()
                .map(|&x| x.max(0) as usize)
                .collect();
            let x = ctx.float(0)?;
            let d = x.dims();
            let n = d.len().max(target.len());
            let out: Vec<usize> = (0..n)
                .map(|i| {
                    let a = if i + d.len() >= n {
                        d[i + d.len() - n]
                    } else {
                        1
                    };
                    let b = if i + target.len() >= n {
                        target[i + target.len() - n]
                    } else {
                        1
                    };
                    if a == 1 { b } else { a }
                })
                .collect();
            let shape =
                crate::value::padded(&out).ok_or_else(|| ctx.shape_error("rank too high"))?;
            OnnxValue::Float(FloatValue {
                tensor: x.tensor.expand(shape),
                rank: n,
            })
        }
        other => unreachable!("{other:?} is dispatched in ops::eval"),
    };
    Ok(vec![v])
}

fn axis(ctx: &Ctx, a: i64, rank: usize) -> Result<usize, OnnxError> {
    normalize_axis(a, rank).ok_or_else(|| ctx.unsupported("axis", format!("= {a} for rank {rank}")))
}

/// Axes from the attribute (older opsets) or from input `i`.
fn axes_of(ctx: &Ctx, attr: &Option<Vec<i64>>, i: usize) -> Result<Vec<i64>, OnnxError> {
    match attr {
        Some(a) => Ok(a.clone()),
        None if ctx.has(i) => Ok(ctx.ints(i)?.data),
        None => Ok(Vec::new()),
    }
}

fn host_value(ctx: &Ctx, t: &HostTensor) -> Result<OnnxValue, OnnxError> {
    Ok(match t {
        HostTensor::Float { dims, data } => OnnxValue::Float(
            FloatValue::from_values(data.clone(), dims, ctx.device)
                .ok_or_else(|| ctx.shape_error("rank too high"))?,
        ),
        HostTensor::Int(i) => OnnxValue::Int(i.clone()),
    })
}

/// `Reshape`'s target: 0 copies the input's dimension (unless `allowzero`), -1 is inferred.
fn target_shape(
    ctx: &Ctx,
    d: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> Result<Vec<usize>, OnnxError> {
    let total: usize = d.iter().product();
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &s) in spec.iter().enumerate() {
        out.push(match s {
            0 if !allowzero => *d
                .get(i)
                .ok_or_else(|| ctx.shape_error(format!("0 at axis {i} of input shape {d:?}")))?,
            -1 if infer.is_none() => {
                infer = Some(i);
                1
            }
            s if s >= 0 => s as usize,
            _ => return Err(ctx.shape_error(format!("invalid target shape {spec:?}"))),
        });
    }
    if let Some(i) = infer {
        let known: usize = out.iter().product();
        if known == 0 || !total.is_multiple_of(known) {
            return Err(ctx.shape_error(format!("cannot reshape {d:?} to {spec:?}")));
        }
        out[i] = total / known;
    }
    if out.iter().product::<usize>() != total {
        return Err(ctx.shape_error(format!("cannot reshape {d:?} to {spec:?}")));
    }
    Ok(out)
}

fn reshape(ctx: &Ctx, dims: &[usize]) -> Result<OnnxValue, OnnxError> {
    if dims.contains(&0) {
        return Err(ctx.unsupported(
            "shape",
            format!("{dims:?} (empty tensors are not supported)"),
        ));
    }
    Ok(match ctx.value(0)? {
        OnnxValue::Float(f) => OnnxValue::Float(
            f.reshaped(dims)
                .ok_or_else(|| ctx.shape_error(format!("rank of {dims:?} is above {MAX_RANK}")))?,
        ),
        OnnxValue::Int(i) => OnnxValue::Int(IntValue {
            dims: dims.to_vec(),
            data: i.data.clone(),
        }),
    })
}

fn concat(ctx: &Ctx, a: i64) -> Result<OnnxValue, OnnxError> {
    let n = ctx.node.inputs.len();
    let all_int = (0..n).all(|i| matches!(ctx.inputs[i], Some(OnnxValue::Int(_))));
    if all_int {
        let parts: Vec<IntValue> = (0..n).map(|i| ctx.ints(i)).collect::<Result<_, _>>()?;
        if parts.iter().any(|p| p.dims.len() != 1) {
            return Err(ctx.shape_error("integer Concat of tensors other than vectors"));
        }
        return Ok(OnnxValue::Int(IntValue::vector(
            parts.into_iter().flat_map(|p| p.data).collect(),
        )));
    }
    let parts: Vec<FloatValue> = (0..n).map(|i| ctx.float(i)).collect::<Result<_, _>>()?;
    let rank = parts[0].rank;
    if parts.iter().any(|p| p.rank != rank) {
        return Err(ctx.shape_error("inputs of different ranks"));
    }
    let dim = parts[0]
        .axis(a)
        .ok_or_else(|| ctx.unsupported("axis", format!("= {a} for rank {rank}")))?;
    Ok(OnnxValue::Float(FloatValue {
        tensor: Tensor::cat(parts.into_iter().map(|p| p.tensor).collect(), dim),
        rank,
    }))
}

fn split_op(ctx: &Ctx, a: i64, split: Option<&[i64]>) -> Result<Vec<OnnxValue>, OnnxError> {
    let x = ctx.float(0)?;
    let dim = x
        .axis(a)
        .ok_or_else(|| ctx.unsupported("axis", format!("= {a} for rank {}", x.rank)))?;
    let size = x.tensor.dims()[dim];
    let outputs = ctx.node.outputs.len();
    let sizes: Vec<usize> = match split {
        Some(s) => s.iter().map(|&v| v.max(0) as usize).collect(),
        None if ctx.has(1) => ctx
            .ints(1)?
            .data
            .iter()
            .map(|&v| v.max(0) as usize)
            .collect(),
        None => {
            let each = size.div_ceil(outputs);
            (0..outputs)
                .map(|i| each.min(size.saturating_sub(i * each)))
                .collect()
        }
    };
    if sizes.contains(&0) {
        return Err(ctx.unsupported(
            "split",
            format!("{sizes:?} (empty outputs are not supported)"),
        ));
    }
    if sizes.iter().sum::<usize>() != size || sizes.len() != outputs {
        return Err(ctx.shape_error(format!(
            "split {sizes:?} of an axis of {size} into {outputs} outputs"
        )));
    }
    Ok(x.tensor
        .split_with_sizes(sizes, dim)
        .into_iter()
        .map(|t| {
            OnnxValue::Float(FloatValue {
                tensor: t,
                rank: x.rank,
            })
        })
        .collect())
}

/// `(start, end, step)` of one sliced axis, clamped as ONNX specifies.
fn slice_range(start: i64, end: i64, step: i64, len: usize) -> (i64, i64) {
    let len = len as i64;
    let fix = |v: i64| if v < 0 { v + len } else { v };
    if step > 0 {
        (fix(start).clamp(0, len), fix(end).clamp(0, len))
    } else {
        (fix(start).clamp(-1, len - 1), fix(end).clamp(-1, len - 1))
    }
}

fn slice(ctx: &Ctx) -> Result<OnnxValue, OnnxError> {
    let v = ctx.value(0)?;
    let d = v.dims();
    let starts = ctx.ints(1)?.data;
    let ends = ctx.ints(2)?.data;
    let axes: Vec<usize> = if ctx.has(3) {
        ctx.ints(3)?
            .data
            .iter()
            .map(|&a| axis(ctx, a, d.len()))
            .collect::<Result<_, _>>()?
    } else {
        (0..starts.len()).collect()
    };
    let steps = if ctx.has(4) {
        ctx.ints(4)?.data
    } else {
        vec![1; starts.len()]
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return Err(ctx.shape_error("starts, ends, axes and steps differ in length"));
    }
    // Per axis: the kept indices.
    let mut keep: Vec<Vec<usize>> = d.iter().map(|&n| (0..n).collect()).collect();
    for i in 0..starts.len() {
        if steps[i] == 0 {
            return Err(ctx.unsupported("steps", "= 0"));
        }
        let (s, e) = slice_range(starts[i], ends[i], steps[i], d[axes[i]]);
        let mut idx = Vec::new();
        let mut at = s;
        while (steps[i] > 0 && at < e) || (steps[i] < 0 && at > e) {
            idx.push(at as usize);
            at += steps[i];
        }
        keep[axes[i]] = idx;
    }
    match v {
        OnnxValue::Int(iv) => {
            if iv.dims.len() != 1 {
                return Err(ctx.shape_error("integer Slice of a tensor other than a vector"));
            }
            Ok(OnnxValue::Int(IntValue::vector(
                keep[0].iter().map(|&i| iv.data[i]).collect(),
            )))
        }
        OnnxValue::Float(f) => {
            let offset = MAX_RANK - f.rank;
            let mut t = f.tensor.clone();
            for (a, idx) in keep.iter().enumerate() {
                if idx.len() == d[a] && idx.iter().enumerate().all(|(i, &j)| i == j) {
                    continue;
                }
                let step = if idx.len() > 1 {
                    idx[1] as isize - idx[0] as isize
                } else {
                    1
                };
                if step > 0 {
                    let mut ranges: Vec<Slice> = vec![Slice::new(0, None, 1); MAX_RANK];
                    let start = idx.first().copied().unwrap_or(0) as isize;
                    ranges[offset + a] = Slice::new(
                        start,
                        Some(start + (idx.len() as isize) * step - (step - 1)),
                        step,
                    );
                    if idx.is_empty() {
                        ranges[offset + a] = Slice::new(0, Some(0), 1);
                    }
                    t = t.slice(ranges.as_slice());
                } else {
                    let index = Tensor::<1, Int>::from_data(
                        TensorData::new(
                            idx.iter().map(|&i| i as i64).collect::<Vec<_>>(),
                            [idx.len()],
                        ),
                        ctx.device,
                    );
                    t = t.select(offset + a, index);
                }
            }
            Ok(OnnxValue::Float(FloatValue {
                tensor: t,
                rank: f.rank,
            }))
        }
    }
}

fn gather(ctx: &Ctx, a: i64) -> Result<OnnxValue, OnnxError> {
    let v = ctx.value(0)?;
    let d = v.dims();
    let ax = axis(ctx, a, d.len())?;
    let idx = ctx.ints(1)?;
    let n = d[ax] as i64;
    let flat: Vec<i64> = idx
        .data
        .iter()
        .map(|&i| {
            let j = if i < 0 { i + n } else { i };
            if (0..n).contains(&j) {
                Ok(j)
            } else {
                Err(ctx.shape_error(format!("index {i} out of range for {n}")))
            }
        })
        .collect::<Result<_, _>>()?;
    let mut out_dims = d[..ax].to_vec();
    out_dims.extend(&idx.dims);
    out_dims.extend(&d[ax + 1..]);
    match v {
        OnnxValue::Int(iv) => {
            let outer: usize = d[..ax].iter().product();
            let inner: usize = d[ax + 1..].iter().product();
            let mut data = Vec::with_capacity(outer * flat.len() * inner);
            for o in 0..outer {
                for &j in &flat {
                    let base = (o * d[ax] + j as usize) * inner;
                    data.extend_from_slice(&iv.data[base..base + inner]);
                }
            }
            Ok(OnnxValue::Int(IntValue {
                dims: out_dims,
                data,
            }))
        }
        OnnxValue::Float(f) => {
            let offset = MAX_RANK - f.rank;
            let index = Tensor::<1, Int>::from_data(
                TensorData::new(flat.clone(), [flat.len()]),
                ctx.device,
            );
            let g = FloatValue {
                tensor: f.tensor.clone().select(offset + ax, index),
                rank: f.rank,
            };
            Ok(OnnxValue::Float(
                g.reshaped(&out_dims)
                    .ok_or_else(|| ctx.shape_error("rank too high"))?,
            ))
        }
    }
}
