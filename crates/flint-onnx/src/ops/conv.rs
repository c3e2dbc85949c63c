//! Convolution, pooling, batch normalisation and dropout.

use burn::module::{Param, ParamId};
use burn::nn::PaddingConfig2d;
use burn::nn::conv::Conv2d;
use burn::tensor::Tensor;
use burn::tensor::module::{avg_pool2d, max_pool2d};
use burn::tensor::ops::{AvgPoolOptions, MaxPoolOptions};
use onnx_ir::NodeProto;

use super::{Ctx, Op};
use crate::error::OnnxError;
use crate::proto::Attrs;
use crate::value::FloatValue;

/// How a convolution or pooling window pads its input.
#[derive(Clone, Debug)]
pub(crate) enum Padding {
    /// `[begin_h, begin_w, end_h, end_w]`, ONNX's `pads` order.
    Explicit([usize; 4]),
    /// `SAME_UPPER` (extra after) or `SAME_LOWER` (extra before), computed from the input size.
    Same { upper: bool },
}

#[derive(Clone, Debug)]
pub(crate) struct ConvSpec {
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub groups: usize,
    pub padding: Padding,
}

#[derive(Clone, Debug)]
pub(crate) struct PoolSpec {
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    pub padding: Padding,
    pub ceil_mode: bool,
    pub count_include_pad: bool,
}

/// Reads a 1- or 2-D spatial attribute as two values (1-D runs as a 1 x n window).
fn pair(a: &mut Attrs, key: &'static str, default: usize) -> Result<[usize; 2], OnnxError> {
    match a.ints(key).as_deref() {
        None => Ok([default; 2]),
        Some([w]) if *w > 0 => Ok([1, *w as usize]),
        Some([h, w]) if *h > 0 && *w > 0 => Ok([*h as usize, *w as usize]),
        Some(other) => Err(a.unsupported(key, format!("= {other:?} (1-D and 2-D only)"))),
    }
}

fn padding(a: &mut Attrs) -> Result<Padding, OnnxError> {
    let auto = a.string("auto_pad", "NOTSET");
    let pads = a.ints("pads");
    match auto.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => Ok(Padding::Same {
            upper: auto == "SAME_UPPER",
        }),
        "VALID" => Ok(Padding::Explicit([0; 4])),
        "NOTSET" => match pads.as_deref() {
            None => Ok(Padding::Explicit([0; 4])),
            Some(p) if p.iter().any(|&x| x < 0) => Err(a.unsupported("pads", format!("= {p:?}"))),
            Some(&[b, e]) => Ok(Padding::Explicit([0, b as usize, 0, e as usize])),
            Some(&[bh, bw, eh, ew]) => Ok(Padding::Explicit([bh, bw, eh, ew].map(|x| x as usize))),
            Some(p) => Err(a.unsupported("pads", format!("= {p:?} (1-D and 2-D only)"))),
        },
        other => Err(a.unsupported("auto_pad", format!("= {other}"))),
    }
}

pub(crate) fn parse_conv(a: &mut Attrs) -> Result<ConvSpec, OnnxError> {
    pair(a, "kernel_shape", 1)?; // the weight's shape is the authority
    let groups = a.int("group", 1);
    if groups < 1 {
        return Err(a.unsupported("group", format!("= {groups}")));
    }
    Ok(ConvSpec {
        strides: pair(a, "strides", 1)?,
        dilations: pair(a, "dilations", 1)?,
        groups: groups as usize,
        padding: padding(a)?,
    })
}

pub(crate) fn parse_pool(
    a: &mut Attrs,
    max: bool,
    node: &NodeProto,
) -> Result<PoolSpec, OnnxError> {
    if a.ints("kernel_shape").is_none() {
        return Err(a.unsupported("kernel_shape", "is missing"));
    }
    let kernel = {
        let k = node
            .attribute
            .iter()
            .find(|x| x.name == "kernel_shape")
            .unwrap();
        match k.ints.as_slice() {
            [w] if *w > 0 => [1, *w as usize],
            [h, w] if *h > 0 && *w > 0 => [*h as usize, *w as usize],
            other => {
                return Err(
                    a.unsupported("kernel_shape", format!("= {other:?} (1-D and 2-D only)"))
                );
            }
        }
    };
    if max {
        let order = a.int("storage_order", 0);
        if order != 0 {
            return Err(a.unsupported("storage_order", format!("= {order}")));
        }
        if node.output.get(1).is_some_and(|o| !o.is_empty()) {
            return Err(a.unsupported("Indices", "(a second output) is requested"));
        }
    }
    let dilations = if max {
        pair(a, "dilations", 1)?
    } else {
        [1, 1]
    };
    if !max && a.has("dilations") {
        let d = pair(a, "dilations", 1)?;
        if d != [1, 1] {
            return Err(a.unsupported("dilations", format!("= {d:?}")));
        }
    }
    Ok(PoolSpec {
        kernel,
        strides: pair(a, "strides", 1)?,
        dilations,
        padding: padding(a)?,
        ceil_mode: a.int("ceil_mode", 0) != 0,
        count_include_pad: !max && a.int("count_include_pad", 0) != 0,
    })
}

pub(crate) fn parse_batch_norm(a: &mut Attrs, node: &NodeProto) -> Result<Op, OnnxError> {
    // Read at load by the model (epsilon, momentum); training_mode only says how the graph was
    // exported: flint's rule (autodiff device and training flag) decides, as for its own layers.
    a.float("epsilon", 1e-5);
    a.float("momentum", 0.9);
    a.int("training_mode", 0);
    a.int("spatial", 1);
    if node.output.iter().skip(1).any(|o| !o.is_empty()) {
        return Err(a.unsupported("running statistics outputs", "are requested"));
    }
    Ok(Op::BatchNorm)
}

/// `[begin, end]` padding of one axis for SAME auto-padding.
fn same(size: usize, kernel: usize, stride: usize, dilation: usize, upper: bool) -> [usize; 2] {
    let out = size.div_ceil(stride);
    let reach = (kernel - 1) * dilation + 1;
    let total = ((out.max(1) - 1) * stride + reach).saturating_sub(size);
    let small = total / 2;
    if upper {
        [small, total - small]
    } else {
        [total - small, small]
    }
}

/// The input as `[N, C, H, W]` (a 1-D input `[N, C, L]` as `[N, C, 1, L]`) and its rank.
fn as_4d(ctx: &Ctx, x: &FloatValue) -> Result<Tensor<4>, OnnxError> {
    match x.dims().as_slice() {
        &[n, c, l] => Ok(x.reshaped(&[n, c, 1, l]).unwrap().to_rank::<4>().unwrap()),
        &[_, _, _, _] => Ok(x.to_rank::<4>().unwrap()),
        d => Err(ctx.shape_error(format!("expects a 3-D or 4-D input, got shape {d:?}"))),
    }
}

/// Back to the input's rank.
fn from_4d(y: Tensor<4>, rank: usize) -> FloatValue {
    let v = FloatValue::new(y);
    if rank == 3 {
        let [n, c, _, l] = v.dims().try_into().unwrap();
        v.reshaped(&[n, c, l]).unwrap()
    } else {
        v
    }
}

fn resolve(
    padding: &Padding,
    hw: [usize; 2],
    k: [usize; 2],
    s: [usize; 2],
    d: [usize; 2],
) -> [[usize; 2]; 2] {
    match padding {
        Padding::Explicit([bh, bw, eh, ew]) => [[*bh, *eh], [*bw, *ew]],
        Padding::Same { upper } => [0, 1].map(|i| same(hw[i], k[i], s[i], d[i], *upper)),
    }
}

pub(crate) fn conv(ctx: &Ctx, spec: &ConvSpec) -> Result<FloatValue, OnnxError> {
    let (module, input, rank) = conv_module(ctx, spec)?;
    Ok(from_4d(flint_layers::conv2d(&module, input), rank))
}

/// A `Conv` followed by an activation clamping to `[min, max]` that reads only its output
/// (`Relu`: `[0, inf]`, ReLU6: `[0, 6]`), in one step ([`flint_layers::conv2d_clamp`]).
pub(crate) fn conv_clamp(
    ctx: &Ctx,
    spec: &ConvSpec,
    min: f32,
    max: f32,
) -> Result<FloatValue, OnnxError> {
    let (module, input, rank) = conv_module(ctx, spec)?;
    let output = flint_layers::conv2d_clamp(&module, input, min, max);
    Ok(from_4d(output, rank))
}

/// burn's module with the graph's weight and bias, the input at rank 4 and its rank in the
/// graph.
fn conv_module(ctx: &Ctx, spec: &ConvSpec) -> Result<(Conv2d, Tensor<4>, usize), OnnxError> {
    let x = ctx.float(0)?;
    let input = as_4d(ctx, &x)?;
    let w = ctx.float(1)?;
    let weight = match w.rank {
        3 => {
            let [o, i, k] = w.dims().try_into().unwrap();
            w.reshaped(&[o, i, 1, k]).unwrap().to_rank::<4>().unwrap()
        }
        4 => w.to_rank::<4>().unwrap(),
        r => return Err(ctx.shape_error(format!("weight of rank {r}"))),
    };
    let [c_out, c_in_g, kh, kw] = weight.dims();
    let [_, c_in, h, wd] = input.dims();
    if c_in != c_in_g * spec.groups || !c_out.is_multiple_of(spec.groups) {
        return Err(ctx.shape_error(format!(
            "input has {c_in} channels, weight {:?} with {} groups",
            weight.dims(),
            spec.groups
        )));
    }
    let bias = if ctx.has(2) {
        let b = ctx.float(2)?;
        if b.dims() != [c_out] {
            return Err(ctx.shape_error(format!("bias shape {:?} for {c_out} outputs", b.dims())));
        }
        Some(b.to_rank::<1>().unwrap())
    } else {
        None
    };
    let [[top, bottom], [left, right]] = resolve(
        &spec.padding,
        [h, wd],
        [kh, kw],
        spec.strides,
        spec.dilations,
    );
    // burn's module with the graph's tensors: flint's kernels where they apply, burn's otherwise.
    let module = Conv2d {
        weight: Param::initialized(ParamId::new(), weight),
        bias: bias.map(|b| Param::initialized(ParamId::new(), b)),
        stride: spec.strides,
        kernel_size: [kh, kw],
        dilation: spec.dilations,
        groups: spec.groups,
        padding: PaddingConfig2d::Explicit(top, left, bottom, right),
    };
    Ok((module, input, x.rank))
}

pub(crate) fn pool(ctx: &Ctx, spec: &PoolSpec, max: bool) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    let input = as_4d(ctx, &x)?;
    let [_, _, h, w] = input.dims();
    let p = resolve(
        &spec.padding,
        [h, w],
        spec.kernel,
        spec.strides,
        spec.dilations,
    );
    let padding = [(p[0][0], p[0][1]), (p[1][0], p[1][1])];
    let y = if max {
        let mut o = MaxPoolOptions::new(spec.kernel);
        o.stride = spec.strides;
        o.padding = padding;
        o.dilation = spec.dilations;
        o.ceil_mode = spec.ceil_mode;
        max_pool2d(input, o)
    } else {
        let mut o = AvgPoolOptions::new(spec.kernel);
        o.stride = spec.strides;
        o.padding = padding;
        o.count_include_pad = spec.count_include_pad;
        o.ceil_mode = spec.ceil_mode;
        avg_pool2d(input, o)
    };
    Ok(from_4d(y, x.rank))
}

pub(crate) fn global_pool(ctx: &Ctx, max: bool) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    if x.rank < 3 {
        return Err(ctx.shape_error(format!("expects [N, C, ...], got shape {:?}", x.dims())));
    }
    let dims = x.dims();
    let spatial: usize = dims[2..].iter().product();
    let flat = x
        .reshaped(&[dims[0], dims[1], spatial])
        .unwrap()
        .to_rank::<3>()
        .unwrap();
    let pooled = if max {
        flat.max_dim(2)
    } else {
        flat.mean_dim(2)
    };
    let mut out = dims[..2].to_vec();
    out.extend(std::iter::repeat_n(1, dims.len() - 2));
    Ok(FloatValue::new(pooled).reshaped(&out).unwrap())
}

pub(crate) fn batch_norm(ctx: &Ctx) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    let bn = ctx.model.batch_norm(&ctx.node.name);
    let dims = x.dims();
    if dims.len() < 2 || dims[1] != bn.num_features {
        return Err(ctx.shape_error(format!(
            "input shape {dims:?} for {} channels",
            bn.num_features
        )));
    }
    if crate::model::is_training_bn(bn, ctx.device) && dims.iter().product::<usize>() / dims[1] < 2
    {
        return Err(ctx.shape_error(format!(
            "one value per channel in training (shape {dims:?})"
        )));
    }
    Ok(match x.rank {
        2 => FloatValue::new(bn.forward(x.to_rank::<2>().unwrap())),
        3 => FloatValue::new(bn.forward(x.to_rank::<3>().unwrap())),
        4 => FloatValue::new(bn.forward(x.to_rank::<4>().unwrap())),
        5 => FloatValue::new(bn.forward(x.to_rank::<5>().unwrap())),
        _ => FloatValue::new(bn.forward(x.to_rank::<6>().unwrap())),
    })
}

pub(crate) fn dropout(ctx: &Ctx) -> Result<FloatValue, OnnxError> {
    let x = ctx.float(0)?;
    // ONNX's training_mode input would make the node draw masks by itself; in flint the
    // training rule (autodiff device and the layer's flag) decides, so only `false` matches.
    if ctx.has(2) && ctx.ints(2)?.data.iter().any(|&v| v != 0) {
        return Err(ctx.unsupported("training_mode", "= true"));
    }
    let layer = ctx.model.dropout(&ctx.node.name);
    Ok(FloatValue {
        tensor: layer.forward(x.tensor),
        rank: x.rank,
    })
}
