//! An independent float64 computation of a parity fixture's eval-mode output and gradients,
//! to decide who is right when flint and the PyTorch reference disagree.
//!
//! ```text
//! cargo run -p flint-onnx --example f64_reference -- FOLDER/NAME.onnx [--fd K]
//! ```
//!
//! The graph is run here with plain `f64` loops (no burn, no flint kernel): `Conv`,
//! `BatchNormalization` (eval mode: running statistics), `Relu`, `MaxPool` (padding never wins,
//! `ceil_mode` as PyTorch drops a last window that starts in the padding; the gradient goes to
//! the first maximum of a window, PyTorch's rule), `Add`, `Concat`, `GlobalAveragePool`,
//! `Flatten`, `Gemm`, `Identity`/`Dropout`. Reverse mode gives every gradient of
//! `loss = sum(output * probe)`, which is compared with the reference file and with flint
//! (the same network through `OnnxModel` on flex autodiff, f32).
//!
//! `--fd K` also checks this program's own gradients by central differences of the f64 loss at
//! the K elements of each reference gradient where the reference and f64 differ most. These
//! networks are piecewise linear in any one scalar weight or input value in eval mode (batch
//! norm is affine then), so a central difference is exact up to rounding unless the step
//! crosses a kink; two step sizes are printed to show that none was crossed.
//!
//! It also counts the places where a subgradient convention could matter: `Relu` inputs that
//! are exactly 0 and `MaxPool` windows whose maximum is shared, where the incoming gradient is
//! not zero.
//!
//! `--bisect` cuts flint's network after each node, feeds the head the f64 value there and
//! compares the head's input gradient with the f64 one; it then lists the ReLU inputs nearest 0
//! and counts those whose sign differs between f64 and flint's f32 forward pass (a decision
//! within f32 rounding, where the gradient jumps). `--flint-f64` runs flint's side in f64
//! (flex configured to `FloatDType::F64`), which separates rounding from a wrong operator.

// Index arithmetic over flat buffers reads clearer as index loops here.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;
use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use flint_onnx::OnnxModel;
use flint_onnx::parity::{Reference, param_grads, relative_error, values};
use onnx_ir::{Message, ModelProto, NodeProto, TensorProto};

#[derive(Clone, Debug)]
struct T {
    dims: Vec<usize>,
    data: Vec<f64>,
}

impl T {
    fn zeros(dims: &[usize]) -> Self {
        Self {
            dims: dims.to_vec(),
            data: vec![0.0; dims.iter().product()],
        }
    }
}

type Result<V> = std::result::Result<V, String>;

fn attr<'a>(n: &'a NodeProto, key: &str) -> Option<&'a onnx_ir::AttributeProto> {
    n.attribute.iter().find(|a| a.name == key)
}
fn ints(n: &NodeProto, key: &str, default: &[i64]) -> Vec<i64> {
    attr(n, key).map_or_else(|| default.to_vec(), |a| a.ints.clone())
}
fn int(n: &NodeProto, key: &str, default: i64) -> i64 {
    attr(n, key).map_or(default, |a| a.i)
}
fn float(n: &NodeProto, key: &str, default: f64) -> f64 {
    attr(n, key).map_or(default, |a| a.f as f64)
}

fn tensor(t: &TensorProto) -> Result<T> {
    if t.data_type != 1 {
        return Err(format!("{}: element type {}", t.name, t.data_type));
    }
    let data: Vec<f64> = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect()
    } else {
        t.float_data.iter().map(|&v| v as f64).collect()
    };
    Ok(T {
        dims: t.dims.iter().map(|&d| d as usize).collect(),
        data,
    })
}

/// Conv geometry of one node.
struct Conv {
    stride: [usize; 2],
    pad: [usize; 4],
    group: usize,
}

fn conv_geometry(n: &NodeProto) -> Result<Conv> {
    let s = ints(n, "strides", &[1, 1]);
    let p = ints(n, "pads", &[0, 0, 0, 0]);
    if ints(n, "dilations", &[1, 1]).iter().any(|&d| d != 1) {
        return Err(format!("{}: dilations", n.name));
    }
    Ok(Conv {
        stride: [s[0] as usize, s[1] as usize],
        pad: [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize],
        group: int(n, "group", 1) as usize,
    })
}

/// Runs `f(image)` for every image on up to two threads and returns the results in order.
fn per_image<R: Send>(images: usize, f: impl Fn(usize) -> R + Sync) -> Vec<R> {
    std::thread::scope(|s| {
        let f = &f;
        let handles: Vec<_> = (0..images).map(|i| s.spawn(move || f(i))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn conv_forward(x: &T, w: &T, b: Option<&T>, g: &Conv) -> T {
    let [n, c, h, wd] = x.dims[..] else { panic!() };
    let [m, cg, kh, kw] = w.dims[..] else {
        panic!()
    };
    let oh = (h + g.pad[0] + g.pad[2] - kh) / g.stride[0] + 1;
    let ow = (wd + g.pad[1] + g.pad[3] - kw) / g.stride[1] + 1;
    let mg = m / g.group;
    let planes = per_image(n, |img| {
        let mut out = vec![0.0; m * oh * ow];
        for mo in 0..m {
            let grp = mo / mg;
            let o = &mut out[mo * oh * ow..(mo + 1) * oh * ow];
            if let Some(b) = b {
                o.iter_mut().for_each(|v| *v = b.data[mo]);
            }
            for cc in 0..cg {
                let ci = grp * cg + cc;
                let xp = &x.data[(img * c + ci) * h * wd..(img * c + ci + 1) * h * wd];
                for i in 0..kh {
                    for j in 0..kw {
                        let wv = w.data[((mo * cg + cc) * kh + i) * kw + j];
                        for y in 0..oh {
                            let iy = (y * g.stride[0] + i) as isize - g.pad[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let row = &xp[iy as usize * wd..(iy as usize + 1) * wd];
                            let orow = &mut o[y * ow..(y + 1) * ow];
                            for (xo, ov) in orow.iter_mut().enumerate() {
                                let ix = (xo * g.stride[1] + j) as isize - g.pad[1] as isize;
                                if ix >= 0 && ix < wd as isize {
                                    *ov += wv * row[ix as usize];
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    });
    T {
        dims: vec![n, m, oh, ow],
        data: planes.concat(),
    }
}

/// (input gradient, weight gradient, bias gradient).
fn conv_backward(x: &T, w: &T, dy: &T, g: &Conv) -> (T, T, T) {
    let [n, c, h, wd] = x.dims[..] else { panic!() };
    let [m, cg, kh, kw] = w.dims[..] else {
        panic!()
    };
    let [_, _, oh, ow] = dy.dims[..] else {
        panic!()
    };
    let mg = m / g.group;
    let parts = per_image(n, |img| {
        let mut dx = vec![0.0; c * h * wd];
        let mut dw = vec![0.0; w.data.len()];
        let mut db = vec![0.0; m];
        for mo in 0..m {
            let grp = mo / mg;
            let d = &dy.data[(img * m + mo) * oh * ow..(img * m + mo + 1) * oh * ow];
            db[mo] += d.iter().sum::<f64>();
            for cc in 0..cg {
                let ci = grp * cg + cc;
                let xp = &x.data[(img * c + ci) * h * wd..(img * c + ci + 1) * h * wd];
                let dxp = &mut dx[ci * h * wd..(ci + 1) * h * wd];
                for i in 0..kh {
                    for j in 0..kw {
                        let wi = ((mo * cg + cc) * kh + i) * kw + j;
                        let wv = w.data[wi];
                        let mut acc = 0.0;
                        for y in 0..oh {
                            let iy = (y * g.stride[0] + i) as isize - g.pad[0] as isize;
                            if iy < 0 || iy >= h as isize {
                                continue;
                            }
                            let base = iy as usize * wd;
                            for xo in 0..ow {
                                let ix = (xo * g.stride[1] + j) as isize - g.pad[1] as isize;
                                if ix >= 0 && ix < wd as isize {
                                    let gv = d[y * ow + xo];
                                    acc += gv * xp[base + ix as usize];
                                    dxp[base + ix as usize] += gv * wv;
                                }
                            }
                        }
                        dw[wi] += acc;
                    }
                }
            }
        }
        (dx, dw, db)
    });
    let mut dx = T::zeros(&x.dims);
    let mut dw = T::zeros(&w.dims);
    let mut db = T::zeros(&[m]);
    for (img, (px, pw, pb)) in parts.into_iter().enumerate() {
        dx.data[img * c * h * wd..(img + 1) * c * h * wd].copy_from_slice(&px);
        dw.data.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.data.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dx, dw, db)
}

/// MaxPool geometry and output size (PyTorch's ceil_mode rule).
struct Pool {
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 4],
    out: [usize; 2],
}

fn pool_geometry(n: &NodeProto, h: usize, w: usize) -> Pool {
    let k = ints(n, "kernel_shape", &[]);
    let s = ints(n, "strides", &[1, 1]);
    let p = ints(n, "pads", &[0, 0, 0, 0]);
    let ceil = int(n, "ceil_mode", 0) != 0;
    let size = |len: usize, k: usize, s: usize, b: usize, e: usize| {
        let span = len + b + e - k;
        let mut out = if ceil { span.div_ceil(s) } else { span / s } + 1;
        if ceil && (out - 1) * s >= len + b {
            out -= 1;
        }
        out
    };
    let (k, s, p) = (
        [k[0] as usize, k[1] as usize],
        [s[0] as usize, s[1] as usize],
        [p[0] as usize, p[1] as usize, p[2] as usize, p[3] as usize],
    );
    Pool {
        kernel: k,
        stride: s,
        pad: p,
        out: [
            size(h, k[0], s[0], p[0], p[2]),
            size(w, k[1], s[1], p[1], p[3]),
        ],
    }
}

/// For each output: the flat input index of the first maximum and whether the maximum is tied.
fn pool_argmax(x: &T, p: &Pool) -> (T, Vec<usize>, Vec<bool>) {
    let [n, c, h, w] = x.dims[..] else { panic!() };
    let [oh, ow] = p.out;
    let mut out = T::zeros(&[n, c, oh, ow]);
    let mut arg = vec![0; out.data.len()];
    let mut tie = vec![false; out.data.len()];
    for plane in 0..n * c {
        for y in 0..oh {
            for xo in 0..ow {
                let mut best = f64::NEG_INFINITY;
                let mut at = usize::MAX;
                let mut tied = false;
                for i in 0..p.kernel[0] {
                    let iy = (y * p.stride[0] + i) as isize - p.pad[0] as isize;
                    if iy < 0 || iy >= h as isize {
                        continue;
                    }
                    for j in 0..p.kernel[1] {
                        let ix = (xo * p.stride[1] + j) as isize - p.pad[1] as isize;
                        if ix < 0 || ix >= w as isize {
                            continue;
                        }
                        let idx = plane * h * w + iy as usize * w + ix as usize;
                        let v = x.data[idx];
                        if v > best {
                            best = v;
                            at = idx;
                            tied = false;
                        } else if v == best {
                            tied = true;
                        }
                    }
                }
                let o = plane * oh * ow + y * ow + xo;
                out.data[o] = best;
                arg[o] = at;
                tie[o] = tied;
            }
        }
    }
    (out, arg, tie)
}

struct Net {
    nodes: Vec<NodeProto>,
    params: HashMap<String, T>,
    output: String,
}

fn load(path: &std::path::Path) -> Result<Net> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let model = ModelProto::parse_from_bytes(&bytes).map_err(|e| e.to_string())?;
    let graph = model.graph.as_ref().ok_or("no graph")?;
    let mut params = HashMap::new();
    for t in &graph.initializer {
        params.insert(t.name.clone(), tensor(t)?);
    }
    Ok(Net {
        nodes: graph.node.to_vec(),
        params,
        output: graph.output[0].name.clone(),
    })
}

/// Every value of the graph, by name.
fn forward(net: &Net, input: &T) -> Result<HashMap<String, T>> {
    let mut v: HashMap<String, T> = HashMap::new();
    v.insert("input".into(), input.clone());
    for n in &net.nodes {
        let get = |i: usize| -> Result<&T> {
            let name = &n.input[i];
            v.get(name)
                .or_else(|| net.params.get(name))
                .ok_or_else(|| format!("{}: no value {name}", n.name))
        };
        let out = match n.op_type.as_str() {
            "Conv" => {
                let b = if n.input.len() > 2 {
                    Some(get(2)?)
                } else {
                    None
                };
                conv_forward(get(0)?, get(1)?, b, &conv_geometry(n)?)
            }
            "BatchNormalization" => {
                let (x, s, b, m, var) = (get(0)?, get(1)?, get(2)?, get(3)?, get(4)?);
                let eps = float(n, "epsilon", 1e-5);
                let (c, hw) = (x.dims[1], x.dims[2..].iter().product::<usize>());
                let mut y = x.clone();
                for (i, val) in y.data.iter_mut().enumerate() {
                    let ch = (i / hw) % c;
                    *val =
                        (*val - m.data[ch]) / (var.data[ch] + eps).sqrt() * s.data[ch] + b.data[ch];
                }
                y
            }
            "Relu" => {
                let mut y = get(0)?.clone();
                y.data.iter_mut().for_each(|x| *x = x.max(0.0));
                y
            }
            "MaxPool" => {
                let x = get(0)?;
                pool_argmax(x, &pool_geometry(n, x.dims[2], x.dims[3])).0
            }
            "Add" => {
                let (a, b) = (get(0)?, get(1)?);
                if a.dims != b.dims {
                    return Err(format!("{}: broadcasting Add", n.name));
                }
                let mut y = a.clone();
                y.data.iter_mut().zip(&b.data).for_each(|(a, b)| *a += b);
                y
            }
            "Concat" => {
                let parts: Vec<&T> = (0..n.input.len()).map(get).collect::<Result<_>>()?;
                let axis = int(n, "axis", 0) as usize;
                let outer: usize = parts[0].dims[..axis].iter().product();
                let mut dims = parts[0].dims.clone();
                dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
                let mut data = Vec::new();
                for o in 0..outer {
                    for p in &parts {
                        let inner: usize = p.dims[axis..].iter().product();
                        data.extend_from_slice(&p.data[o * inner..(o + 1) * inner]);
                    }
                }
                T { dims, data }
            }
            "GlobalAveragePool" => {
                let x = get(0)?;
                let hw: usize = x.dims[2..].iter().product();
                T {
                    dims: vec![x.dims[0], x.dims[1], 1, 1],
                    data: x
                        .data
                        .chunks_exact(hw)
                        .map(|c| c.iter().sum::<f64>() / hw as f64)
                        .collect(),
                }
            }
            "Flatten" => {
                let x = get(0)?;
                let axis = int(n, "axis", 1) as usize;
                T {
                    dims: vec![
                        x.dims[..axis].iter().product(),
                        x.dims[axis..].iter().product(),
                    ],
                    data: x.data.clone(),
                }
            }
            "Identity" | "Dropout" => get(0)?.clone(),
            "Gemm" => {
                let (a, b, c) = (get(0)?, get(1)?, get(2)?);
                let (alpha, beta) = (float(n, "alpha", 1.0), float(n, "beta", 1.0));
                if int(n, "transA", 0) != 0 || int(n, "transB", 0) != 1 {
                    return Err(format!("{}: Gemm other than transB", n.name));
                }
                let (rows, k, cols) = (a.dims[0], a.dims[1], b.dims[0]);
                let mut y = T::zeros(&[rows, cols]);
                for r in 0..rows {
                    for o in 0..cols {
                        let dot: f64 = (0..k).map(|i| a.data[r * k + i] * b.data[o * k + i]).sum();
                        y.data[r * cols + o] = alpha * dot + beta * c.data[o];
                    }
                }
                y
            }
            other => return Err(format!("{}: operator {other} is not in this check", n.name)),
        };
        v.insert(n.output[0].clone(), out);
    }
    Ok(v)
}

fn loss(net: &Net, input: &T, probe: &[f64]) -> Result<f64> {
    let v = forward(net, input)?;
    Ok(v[&net.output]
        .data
        .iter()
        .zip(probe)
        .map(|(a, b)| a * b)
        .sum())
}

/// Subgradient places met by a non-zero incoming gradient.
#[derive(Default, Debug)]
struct Ties {
    relu_zero: usize,
    maxpool_tied: usize,
}

/// Gradients of `sum(output * probe)` for every value and initializer.
fn backward(
    net: &Net,
    v: &HashMap<String, T>,
    probe: &[f64],
) -> Result<(HashMap<String, T>, Ties)> {
    let mut g: HashMap<String, T> = HashMap::new();
    let out = &v[&net.output];
    g.insert(
        net.output.clone(),
        T {
            dims: out.dims.clone(),
            data: probe.to_vec(),
        },
    );
    let mut ties = Ties::default();
    let value = |name: &str| v.get(name).or_else(|| net.params.get(name)).unwrap();
    fn add(g: &mut HashMap<String, T>, name: &str, d: T) {
        match g.get_mut(name) {
            Some(t) => t.data.iter_mut().zip(d.data).for_each(|(a, b)| *a += b),
            None => {
                g.insert(name.to_string(), d);
            }
        }
    }
    for n in net.nodes.iter().rev() {
        let Some(dy) = g.get(&n.output[0]).cloned() else {
            continue;
        };
        match n.op_type.as_str() {
            "Conv" => {
                let (x, w) = (value(&n.input[0]), value(&n.input[1]));
                let (dx, dw, db) = conv_backward(x, w, &dy, &conv_geometry(n)?);
                add(&mut g, &n.input[0], dx);
                add(&mut g, &n.input[1], dw);
                if n.input.len() > 2 {
                    add(&mut g, &n.input[2], db);
                }
            }
            "BatchNormalization" => {
                let x = value(&n.input[0]);
                let (s, m, var) = (value(&n.input[1]), value(&n.input[3]), value(&n.input[4]));
                let eps = float(n, "epsilon", 1e-5);
                let (c, hw) = (x.dims[1], x.dims[2..].iter().product::<usize>());
                let mut dx = T::zeros(&x.dims);
                let mut ds = T::zeros(&[c]);
                let mut dbias = T::zeros(&[c]);
                for (i, d) in dy.data.iter().enumerate() {
                    let ch = (i / hw) % c;
                    let inv = 1.0 / (var.data[ch] + eps).sqrt();
                    dx.data[i] = d * s.data[ch] * inv;
                    ds.data[ch] += d * (x.data[i] - m.data[ch]) * inv;
                    dbias.data[ch] += d;
                }
                add(&mut g, &n.input[0], dx);
                add(&mut g, &n.input[1], ds);
                add(&mut g, &n.input[2], dbias);
            }
            "Relu" => {
                let x = value(&n.input[0]);
                let mut dx = dy.clone();
                for (d, &xv) in dx.data.iter_mut().zip(&x.data) {
                    if xv == 0.0 && *d != 0.0 {
                        ties.relu_zero += 1;
                    }
                    if xv <= 0.0 {
                        *d = 0.0;
                    }
                }
                add(&mut g, &n.input[0], dx);
            }
            "MaxPool" => {
                let x = value(&n.input[0]);
                let (_, arg, tie) = pool_argmax(x, &pool_geometry(n, x.dims[2], x.dims[3]));
                let mut dx = T::zeros(&x.dims);
                for ((d, &a), &t) in dy.data.iter().zip(&arg).zip(&tie) {
                    dx.data[a] += d;
                    if t && *d != 0.0 {
                        ties.maxpool_tied += 1;
                    }
                }
                add(&mut g, &n.input[0], dx);
            }
            "Add" => {
                add(&mut g, &n.input[0], dy.clone());
                add(&mut g, &n.input[1], dy);
            }
            "Concat" => {
                let axis = int(n, "axis", 0) as usize;
                let parts: Vec<&T> = n.input.iter().map(|i| value(i)).collect();
                let outer: usize = parts[0].dims[..axis].iter().product();
                let mut grads: Vec<T> = parts.iter().map(|p| T::zeros(&p.dims)).collect();
                let mut at = 0;
                for o in 0..outer {
                    for (p, gp) in parts.iter().zip(grads.iter_mut()) {
                        let inner: usize = p.dims[axis..].iter().product();
                        gp.data[o * inner..(o + 1) * inner]
                            .copy_from_slice(&dy.data[at..at + inner]);
                        at += inner;
                    }
                }
                for (name, d) in n.input.iter().zip(grads) {
                    add(&mut g, name, d);
                }
            }
            "GlobalAveragePool" => {
                let x = value(&n.input[0]);
                let hw: usize = x.dims[2..].iter().product();
                let mut dx = T::zeros(&x.dims);
                for (i, d) in dx.data.iter_mut().enumerate() {
                    *d = dy.data[i / hw] / hw as f64;
                }
                add(&mut g, &n.input[0], dx);
            }
            "Flatten" | "Identity" | "Dropout" => {
                let x = value(&n.input[0]);
                add(
                    &mut g,
                    &n.input[0],
                    T {
                        dims: x.dims.clone(),
                        data: dy.data,
                    },
                );
            }
            "Gemm" => {
                let (a, b) = (value(&n.input[0]), value(&n.input[1]));
                let (alpha, beta) = (float(n, "alpha", 1.0), float(n, "beta", 1.0));
                let (rows, k, cols) = (a.dims[0], a.dims[1], b.dims[0]);
                let mut da = T::zeros(&a.dims);
                let mut db = T::zeros(&b.dims);
                let mut dc = T::zeros(&[cols]);
                for r in 0..rows {
                    for o in 0..cols {
                        let d = dy.data[r * cols + o];
                        dc.data[o] += beta * d;
                        for i in 0..k {
                            da.data[r * k + i] += alpha * d * b.data[o * k + i];
                            db.data[o * k + i] += alpha * d * a.data[r * k + i];
                        }
                    }
                }
                add(&mut g, &n.input[0], da);
                add(&mut g, &n.input[1], db);
                add(&mut g, &n.input[2], dc);
            }
            other => return Err(format!("{}: no backward for {other}", n.name)),
        }
    }
    Ok((g, ties))
}

/// flint's eval-mode gradients (f32) for the reference's keys.
fn flint_grads(
    onnx: &std::path::Path,
    reference: &Reference,
    keys: &[String],
) -> HashMap<String, Vec<f32>> {
    let device = Device::flex().autodiff();
    let model = OnnxModel::load(onnx, &device)
        .expect("flint loads the network")
        .with_training(false);
    let x: Tensor<4> = reference.tensor("input", &device).unwrap().require_grad();
    let probe: Tensor<2> = reference.tensor("probe", &device).unwrap();
    let out: Tensor<2> = model.forward(x.clone());
    let grads = (out * probe).sum().backward();
    let names: Vec<String> = keys
        .iter()
        .map(|k| k["grad.".len()..].to_string())
        .collect();
    let mut found = param_grads(&model, &grads, &names);
    found.insert("input".into(), values(x.grad(&grads).unwrap()));
    found
}

/// Cuts flint's network after each node, feeds the head the f64 value of that tensor and
/// compares the head's input gradient with the f64 gradient of the tensor: the first node (from
/// the output) whose gradient disagrees is where flint's backward goes wrong.
fn bisect_graph(
    onnx: &std::path::Path,
    net: &Net,
    v: &HashMap<String, T>,
    g: &HashMap<String, T>,
    reference: &Reference,
) -> Result<()> {
    use flint_onnx::{CutPoint, FloatValue, OnnxValue};
    let device = Device::flex().autodiff();
    let model = OnnxModel::load(onnx, &device)
        .map_err(|e| e.to_string())?
        .with_training(false);
    let probe: Tensor<2> = reference.tensor("probe", &device).unwrap();
    println!("tensor (after node) | op | flint's gradient of it vs f64");
    for n in &net.nodes {
        let name = &n.output[0];
        let Ok(cut) = model.clone().cut(CutPoint::At(name.clone())) else {
            continue;
        };
        if cut.head.input_names().len() != 1 {
            continue;
        }
        let value = &v[name];
        let x: Tensor<4> = match value.dims[..] {
            [a, b, c, d] => Tensor::from_data(
                burn::tensor::TensorData::new(
                    value.data.iter().map(|&x| x as f32).collect::<Vec<_>>(),
                    [a, b, c, d],
                ),
                &device,
            ),
            _ => continue,
        }
        .require_grad();
        let out = match cut
            .head
            .run(vec![OnnxValue::Float(FloatValue::new(x.clone()))])
        {
            Ok(o) => o,
            Err(e) => {
                println!("{name} | {} | head failed: {e}", n.op_type);
                continue;
            }
        };
        let Some(OnnxValue::Float(y)) = out.into_iter().next() else {
            continue;
        };
        let y: Tensor<2> = y.to_rank().ok_or("head output rank")?;
        let grads = (y * probe.clone()).sum().backward();
        let got = values(x.grad(&grads).ok_or("no input gradient")?);
        let want: Vec<f32> = g[name].data.iter().map(|&x| x as f32).collect();
        let err = relative_error(&got, &want);
        println!("{name} | {} | {err:.1e}", n.op_type);
        if err > 1e-4 {
            let mut order: Vec<usize> = (0..got.len()).collect();
            order.sort_by(|&a, &b| {
                (got[b] - want[b])
                    .abs()
                    .total_cmp(&(got[a] - want[a]).abs())
            });
            let d = &value.dims;
            for &i in order.iter().take(6) {
                let (w, h, c) = (i % d[3], (i / d[3]) % d[2], (i / (d[3] * d[2])) % d[1]);
                let img = i / (d[1] * d[2] * d[3]);
                println!(
                    "    [{img}, {c}, {h}, {w}] value {:.9e}: f64 gradient {:.6e}, flint {:.6e}",
                    value.data[i], want[i], got[i]
                );
            }
        }
    }
    Ok(())
}

/// The ReLU inputs closest to 0 where the gradient is not zero, in f64 and in flint's f32
/// forward pass (the file is rewritten with every ReLU input as a graph output to read them).
fn near_kinks(
    onnx: &std::path::Path,
    net: &Net,
    v: &HashMap<String, T>,
    g: &HashMap<String, T>,
    reference: &Reference,
) -> Result<()> {
    use flint_onnx::OnnxValue;
    let relus: Vec<&NodeProto> = net.nodes.iter().filter(|n| n.op_type == "Relu").collect();
    let bytes = std::fs::read(onnx).map_err(|e| e.to_string())?;
    let mut proto = ModelProto::parse_from_bytes(&bytes).map_err(|e| e.to_string())?;
    let graph = proto.graph.as_mut().ok_or("no graph")?;
    for n in &relus {
        let mut info = onnx_ir::ValueInfoProto::new();
        info.name = n.input[0].clone();
        graph.output.push(info);
    }
    let path = std::env::temp_dir().join(format!("f64-reference-{}.onnx", std::process::id()));
    std::fs::write(&path, proto.write_to_bytes().map_err(|e| e.to_string())?)
        .map_err(|e| e.to_string())?;
    let device = Device::flex();
    let model = OnnxModel::load(&path, &device).map_err(|e| e.to_string())?;
    std::fs::remove_file(&path).ok();
    let input: Tensor<4> = reference.tensor("input", &device).unwrap();
    let outs = model
        .run(vec![OnnxValue::Float(flint_onnx::FloatValue::new(input))])
        .map_err(|e| e.to_string())?;
    println!("ReLU inputs nearest 0 (where the gradient reaching the ReLU is not 0):");
    println!("tensor[n, c, h, w] | f64 value | flint's f32 value | gradient reaching the ReLU");
    let mut flips = 0;
    for (n, out) in relus.iter().zip(outs.into_iter().skip(1)) {
        let OnnxValue::Float(f) = out else { continue };
        let ours = values(f.tensor);
        let name = &n.input[0];
        let x = &v[name];
        let dy = &g[&n.output[0]];
        let live: Vec<usize> = (0..x.data.len())
            .filter(|&i| dy.data[i] != 0.0 || x.data[i] > 0.0)
            .collect();
        flips += live
            .iter()
            .filter(|&&i| (x.data[i] > 0.0) != (ours[i] > 0.0))
            .count();
        let mut order = live;
        order.sort_by(|&a, &b| x.data[a].abs().total_cmp(&x.data[b].abs()));
        let d = &x.dims;
        for &i in order.iter().take(2).filter(|&&i| x.data[i].abs() <= 1e-5) {
            let (w, h, c) = (i % d[3], (i / d[3]) % d[2], (i / (d[3] * d[2])) % d[1]);
            println!(
                "{name}[{}, {c}, {h}, {w}] | {:.3e} | {:.3e} | {:.3e}",
                i / (d[1] * d[2] * d[3]),
                x.data[i],
                ours[i],
                dy.data[i]
            );
        }
    }
    println!("ReLU inputs whose sign differs between f64 and flint's f32: {flips}");
    Ok(())
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let onnx = PathBuf::from(
        args.next()
            .ok_or("usage: f64_reference NAME.onnx [--fd K]")?,
    );
    let (mut fd, mut bisect) = (0usize, false);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--fd" => {
                fd = args
                    .next()
                    .and_then(|k| k.parse().ok())
                    .ok_or("--fd takes a count")?
            }
            "--bisect" => bisect = true,
            "--flint-f64" => {
                let mut d = Device::flex();
                d.configure(burn::tensor::FloatDType::F64)
                    .map_err(|e| format!("{e:?}"))?;
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let reference = Reference::read(&onnx.with_extension("reference.safetensors"))
        .map_err(|e| e.to_string())?;
    let net = load(&onnx)?;
    let f64s = |key: &str| -> Vec<f64> {
        reference
            .values(key)
            .unwrap_or_else(|| panic!("reference has no {key}"))
            .iter()
            .map(|&v| v as f64)
            .collect()
    };
    let input = T {
        dims: vec![2, 3, 224, 224],
        data: f64s("input"),
    };
    let probe = f64s("probe");
    let start = std::time::Instant::now();
    let v = forward(&net, &input)?;
    let (g, ties) = backward(&net, &v, &probe)?;
    println!(
        "{}: f64 forward + backward in {:.1} s",
        onnx.display(),
        start.elapsed().as_secs_f64()
    );
    println!("subgradient places with a non-zero incoming gradient: {ties:?}");
    let as_f32 = |d: &[f64]| d.iter().map(|&x| x as f32).collect::<Vec<_>>();
    // The relative errors are measured as the parity tool measures them, against the f64 values.
    let out64 = as_f32(&v[&net.output].data);
    println!(
        "eval output: reference vs f64 {:.1e}",
        relative_error(reference.values("output").unwrap(), &out64)
    );
    let keys = reference.keys("grad.");
    let flint = flint_grads(&onnx, &reference, &keys);
    println!("gradient | reference vs f64 | flint vs f64 | reference vs flint");
    for key in &keys {
        let name = &key["grad.".len()..];
        let exact = as_f32(&g[name].data);
        let r = reference.values(key).unwrap();
        let f = &flint[name];
        println!(
            "{name} | {:.1e} | {:.1e} | {:.1e}",
            relative_error(r, &exact),
            relative_error(f, &exact),
            relative_error(f, r)
        );
    }
    if bisect {
        bisect_graph(&onnx, &net, &v, &g, &reference)?;
        near_kinks(&onnx, &net, &v, &g, &reference)?;
    }
    // A reference gradient that matches no f64 gradient of its own tensor may be another
    // tensor's: list the closest gradients of the same shape.
    for key in &keys {
        let name = &key["grad.".len()..];
        let r = reference.values(key).unwrap();
        if relative_error(r, &as_f32(&g[name].data)) <= 1e-4 {
            continue;
        }
        let mut close: Vec<(f32, &String)> = g
            .iter()
            .filter(|(n, t)| t.data.len() == r.len() && net.params.contains_key(*n))
            .map(|(n, t)| (relative_error(r, &as_f32(&t.data)), n))
            .collect();
        close.sort_by(|a, b| a.0.total_cmp(&b.0));
        let list: Vec<String> = close
            .iter()
            .take(3)
            .map(|(e, n)| format!("{n} {e:.1e}"))
            .collect();
        println!(
            "{key} is closest to the f64 gradients of: {}",
            list.join(", ")
        );
    }
    if fd == 0 {
        return Ok(());
    }
    println!("central differences of the f64 loss (step h and h/8) at the largest disagreements:");
    println!(
        "tensor[index] | reference | flint | f64 backward | difference (h) | difference (h/8)"
    );
    for key in &keys {
        let name = &key["grad.".len()..];
        let r = reference.values(key).unwrap();
        let exact = &g[name].data;
        let mut order: Vec<usize> = (0..r.len()).collect();
        order.sort_by(|&a, &b| {
            let da = (r[a] as f64 - exact[a]).abs();
            let db = (r[b] as f64 - exact[b]).abs();
            db.total_cmp(&da)
        });
        for &i in order.iter().take(fd) {
            let diff = |h: f64| -> Result<f64> {
                let mut plus = net.params.clone();
                let mut minus = net.params.clone();
                let (mut xp, mut xm) = (input.clone(), input.clone());
                if name == "input" {
                    xp.data[i] += h;
                    xm.data[i] -= h;
                } else {
                    plus.get_mut(name).unwrap().data[i] += h;
                    minus.get_mut(name).unwrap().data[i] -= h;
                }
                let np = Net {
                    nodes: net.nodes.clone(),
                    params: plus,
                    output: net.output.clone(),
                };
                let nm = Net {
                    nodes: net.nodes.clone(),
                    params: minus,
                    output: net.output.clone(),
                };
                Ok((loss(&np, &xp, &probe)? - loss(&nm, &xm, &probe)?) / (2.0 * h))
            };
            let h = 1e-5;
            println!(
                "{name}[{i}] | {:.6e} | {:.6e} | {:.6e} | {:.6e} | {:.6e}",
                r[i],
                flint[name][i],
                exact[i],
                diff(h)?,
                diff(h / 8.0)?
            );
        }
    }
    Ok(())
}
