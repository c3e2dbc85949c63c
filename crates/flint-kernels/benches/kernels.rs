//! flint's kernels beside burn's own ops on the same tensors, on burn-flex.
//!
//! Run with `cargo bench -p flint-kernels` (add `-- --warm-up-time 1 --measurement-time 3` for a
//! quick pass, or a group name to filter). Every group holds `flint` and `burn` on the same
//! inputs, so the ratio can be read off one run:
//!
//! - `<op> fwd <case>`: forward on a plain flex device (inference, no graph recorded);
//! - `<op> fwd+bwd <case>`: forward and backward on an autodiff device from a fixed dense
//!   upstream gradient, as inside a network; parameters are tracked, and the input too except for
//!   a network's first layer.
//!
//! The cases are the layers of the reference CNN on Fashion-MNIST (28x28, batch 128: conv 1→32
//! and 32→64 with 3x3 kernels, batch norm and 2x2 max pooling after each, fully connected
//! 3136→128→10) and MobileNetV2-like stages at 224x224, batch 16 (the stride-2 stem conv, a 1x1
//! expansion at 56x56, batch norm and pooling at 112x112, the 1280→1000 classifier), plus every
//! distinct 3x3 depthwise convolution of MobileNetV2 at 224x224, batch 16 (`conv2d depthwise`:
//! channels@size and stride, no bias, as in the network) and ReLU6 (`clamp(0, 6)`) at two of
//! MobileNetV2's activation shapes, and four of its 1x1 expansions fused with ReLU6. Each
//! iteration ends by reading a scalar back (a sum of the output or of one gradient), the same
//! reduction for both.

use burn::tensor::module::{batch_norm_train, conv2d, linear, max_pool2d};
use burn::tensor::ops::{ConvOptions as BurnConvOptions, MaxPoolOptions};
use burn::tensor::{Device, Distribution, Tensor};
use criterion::{Criterion, criterion_group, criterion_main};
use flint_kernels::ConvOptions;

const NORMAL: Distribution = Distribution::Normal(0.0, 1.0);

/// Times `flint` and `burn` in one group named `name`.
fn pair(c: &mut Criterion, name: &str, flint: impl Fn() -> f32, burn: impl Fn() -> f32) {
    let mut group = c.benchmark_group(name);
    group.bench_function("flint", |b| b.iter(&flint));
    group.bench_function("burn", |b| b.iter(&burn));
    group.finish();
}

/// A tensor's sum, read back.
fn total<const D: usize>(tensor: Tensor<D>) -> f32 {
    tensor.sum().into_scalar::<f32>()
}

/// Asserts that flint's kernel applies and agrees with burn's op (so the fallback to burn is
/// never what gets timed).
fn check(what: &str, flint: f32, burn: f32) {
    let scale = burn.abs().max(1.0);
    assert!(
        (flint - burn).abs() <= 1e-3 * scale,
        "{what}: flint {flint}, burn {burn}"
    );
}

/// A convolution case: input and weight shapes, stride, symmetric padding, groups, whether it
/// has a bias and whether the input takes a gradient (not for a network's first layer).
struct Conv {
    label: &'static str,
    input: [usize; 4],
    weight: [usize; 4],
    stride: usize,
    padding: usize,
    groups: usize,
    bias: bool,
    input_grad: bool,
}

/// MobileNetV2's 3x3 depthwise convolution of `channels` planes of `size x size`, batch 16.
const fn depthwise(label: &'static str, channels: usize, size: usize, stride: usize) -> Conv {
    Conv {
        label,
        input: [16, channels, size, size],
        weight: [channels, 1, 3, 3],
        stride,
        padding: 1,
        groups: channels,
        bias: false,
        input_grad: true,
    }
}

/// The depthwise layers of MobileNetV2 at 224x224 (block by block: 32@112 s1, 96@112 s2,
/// 144@56 s1 and s2, 192@28 s1 and s2, 384@14 s1, 576@14 s1 and s2, 960@7 s1).
const DEPTHWISE: [Conv; 10] = [
    depthwise("mnv2 dw 32@112 s1", 32, 112, 1),
    depthwise("mnv2 dw 96@112 s2", 96, 112, 2),
    depthwise("mnv2 dw 144@56 s1", 144, 56, 1),
    depthwise("mnv2 dw 144@56 s2", 144, 56, 2),
    depthwise("mnv2 dw 192@28 s1", 192, 28, 1),
    depthwise("mnv2 dw 192@28 s2", 192, 28, 2),
    depthwise("mnv2 dw 384@14 s1", 384, 14, 1),
    depthwise("mnv2 dw 576@14 s1", 576, 14, 1),
    depthwise("mnv2 dw 576@14 s2", 576, 14, 2),
    depthwise("mnv2 dw 960@7 s1", 960, 7, 1),
];

const CONVS: [Conv; 4] = [
    Conv {
        label: "cnn conv1 [128,1,28,28] x [32,1,3,3]",
        input: [128, 1, 28, 28],
        weight: [32, 1, 3, 3],
        stride: 1,
        padding: 1,
        groups: 1,
        bias: true,
        input_grad: false,
    },
    Conv {
        label: "cnn conv2 [128,32,14,14] x [64,32,3,3]",
        input: [128, 32, 14, 14],
        weight: [64, 32, 3, 3],
        stride: 1,
        padding: 1,
        groups: 1,
        bias: true,
        input_grad: true,
    },
    Conv {
        label: "mnv2 stem [16,3,224,224] x [32,3,3,3] s2",
        input: [16, 3, 224, 224],
        weight: [32, 3, 3, 3],
        stride: 2,
        padding: 1,
        groups: 1,
        bias: true,
        input_grad: false,
    },
    Conv {
        label: "mnv2 expand [16,24,56,56] x [144,24,1,1]",
        input: [16, 24, 56, 56],
        weight: [144, 24, 1, 1],
        stride: 1,
        padding: 0,
        groups: 1,
        bias: true,
        input_grad: true,
    },
];

fn convolution(c: &mut Criterion) {
    for case in &CONVS {
        convolution_case(c, "conv2d", case);
    }
    for case in &DEPTHWISE {
        convolution_case(c, "conv2d depthwise", case);
    }
}

fn convolution_case(c: &mut Criterion, op: &str, case: &Conv) {
    {
        let (s, p) = (case.stride, case.padding);
        let options = ConvOptions {
            stride: [s, s],
            dilation: [1, 1],
            padding: [[p, p], [p, p]],
            groups: case.groups,
        };
        let burn_options = BurnConvOptions::new([s, s], [p, p], [1, 1], case.groups);

        let device = Device::flex();
        let x = Tensor::<4>::random(case.input, NORMAL, &device);
        let w = Tensor::<4>::random(case.weight, NORMAL, &device);
        let b = Tensor::<1>::random([case.weight[0]], NORMAL, &device);
        let b = case.bias.then_some(b);
        let flint = || {
            let y = flint_kernels::conv2d(&x, &w, b.as_ref(), options);
            total(y.expect("the kernel applies"))
        };
        let burn = || {
            total(conv2d(
                x.clone(),
                w.clone(),
                b.clone(),
                burn_options.clone(),
            ))
        };
        check(case.label, flint(), burn());
        pair(c, &format!("{op} fwd {}", case.label), flint, burn);

        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random(case.input, NORMAL, &device);
        let x = if case.input_grad { x.require_grad() } else { x };
        let w = Tensor::<4>::random(case.weight, NORMAL, &device).require_grad();
        let b = Tensor::<1>::random([case.weight[0]], NORMAL, &device).require_grad();
        let b = case.bias.then_some(b);
        // From the shapes, not a forward pass: a graph recorded and never consumed by a backward
        // stays in burn-autodiff's bookkeeping and slows every later backward.
        let out = |size: usize, k: usize| (size + 2 * p - k) / s + 1;
        let [n, _, h, w_in] = case.input;
        let [c_out, _, kh, kw] = case.weight;
        let output = [n, c_out, out(h, kh), out(w_in, kw)];
        let upstream = Tensor::<4>::random(output, NORMAL, &device);
        let step = |y: Tensor<4>| {
            let grads = (y * upstream.clone()).sum().backward();
            total(w.grad(&grads).expect("the weight is tracked"))
        };
        let flint = || step(flint_kernels::conv2d(&x, &w, b.as_ref(), options).unwrap());
        let burn = || {
            step(conv2d(
                x.clone(),
                w.clone(),
                b.clone(),
                burn_options.clone(),
            ))
        };
        check(case.label, flint(), burn());
        pair(c, &format!("{op} fwd+bwd {}", case.label), flint, burn);
    }
}

/// Fully connected cases: batch, inputs, outputs, and whether the input takes a gradient.
const LINEARS: [(&str, [usize; 3], bool); 3] = [
    ("cnn fc1 [128,3136] -> 128", [128, 3136, 128], true),
    ("cnn fc2 [128,128] -> 10", [128, 128, 10], true),
    ("mnv2 classifier [16,1280] -> 1000", [16, 1280, 1000], true),
];

fn fully_connected(c: &mut Criterion) {
    for &(label, [batch, d_in, d_out], input_grad) in &LINEARS {
        let device = Device::flex();
        let x = Tensor::<2>::random([batch, d_in], NORMAL, &device);
        let w = Tensor::<2>::random([d_in, d_out], NORMAL, &device);
        let b = Tensor::<1>::random([d_out], NORMAL, &device);
        let flint = || total(flint_kernels::linear(&x, &w, Some(&b)).expect("the kernel applies"));
        let burn = || total(linear(x.clone(), w.clone(), Some(b.clone())));
        check(label, flint(), burn());
        pair(c, &format!("linear fwd {label}"), flint, burn);

        let device = Device::flex().autodiff();
        let x = Tensor::<2>::random([batch, d_in], NORMAL, &device);
        let x = if input_grad { x.require_grad() } else { x };
        let w = Tensor::<2>::random([d_in, d_out], NORMAL, &device).require_grad();
        let b = Tensor::<1>::random([d_out], NORMAL, &device).require_grad();
        let upstream = Tensor::<2>::random([batch, d_out], NORMAL, &device);
        let step = |y: Tensor<2>| {
            let grads = (y * upstream.clone()).sum().backward();
            total(w.grad(&grads).expect("the weight is tracked"))
        };
        let flint = || step(flint_kernels::linear(&x, &w, Some(&b)).unwrap());
        let burn = || step(linear(x.clone(), w.clone(), Some(b.clone())));
        check(label, flint(), burn());
        pair(c, &format!("linear fwd+bwd {label}"), flint, burn);
    }
}

/// Activations that are pooled (2x2, stride 2) and batch-normalised.
const ACTIVATIONS: [(&str, [usize; 4]); 3] = [
    ("cnn [128,32,28,28]", [128, 32, 28, 28]),
    ("cnn [128,64,14,14]", [128, 64, 14, 14]),
    ("mnv2 [16,32,112,112]", [16, 32, 112, 112]),
];

fn max_pooling(c: &mut Criterion) {
    let options = MaxPoolOptions::new([2, 2]).with_stride([2, 2]);
    for &(label, shape) in &ACTIVATIONS {
        let device = Device::flex();
        let x = Tensor::<4>::random(shape, NORMAL, &device);
        let flint = || total(flint_kernels::max_pool2d(&x, [2, 2]).expect("the kernel applies"));
        let burn = || total(max_pool2d(x.clone(), options.clone()));
        check(label, flint(), burn());
        pair(c, &format!("max_pool2d fwd {label}"), flint, burn);

        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random(shape, NORMAL, &device).require_grad();
        let [n, ch, h, w] = shape;
        let upstream = Tensor::<4>::random([n, ch, h / 2, w / 2], NORMAL, &device);
        let step = |y: Tensor<4>| {
            let grads = (y * upstream.clone()).sum().backward();
            total(x.grad(&grads).expect("the input is tracked"))
        };
        let flint = || step(flint_kernels::max_pool2d(&x, [2, 2]).unwrap());
        let burn = || step(max_pool2d(x.clone(), options.clone()));
        check(label, flint(), burn());
        pair(c, &format!("max_pool2d fwd+bwd {label}"), flint, burn);
    }
}

fn batch_norm(c: &mut Criterion) {
    let mut shapes = ACTIVATIONS.to_vec();
    shapes.push(("mnv2 [16,144,56,56]", [16, 144, 56, 56]));
    for (label, shape) in shapes {
        let channels = shape[1];
        let device = Device::flex();
        let x = Tensor::<4>::random(shape, NORMAL, &device);
        let gamma = Tensor::<1>::random([channels], NORMAL, &device);
        let beta = Tensor::<1>::random([channels], NORMAL, &device);
        let flint = || {
            let r = flint_kernels::batch_norm_train(&x, &gamma, &beta, 1e-5);
            total(r.expect("the kernel applies").output)
        };
        let burn = || total(batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5).output);
        check(label, flint(), burn());
        pair(c, &format!("batch_norm_train fwd {label}"), flint, burn);

        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random(shape, NORMAL, &device).require_grad();
        let gamma = Tensor::<1>::random([channels], NORMAL, &device).require_grad();
        let beta = Tensor::<1>::random([channels], NORMAL, &device).require_grad();
        let upstream = Tensor::<4>::random(shape, NORMAL, &device);
        let step = |y: Tensor<4>| {
            let grads = (y * upstream.clone()).sum().backward();
            // The input's gradient: a sum over the normalised input's gradient is ~0, so its
            // squares are read instead (still one reduction).
            let dx = x.grad(&grads).expect("the input is tracked");
            total(dx.clone() * dx)
        };
        let flint = || {
            step(
                flint_kernels::batch_norm_train(&x, &gamma, &beta, 1e-5)
                    .unwrap()
                    .output,
            )
        };
        let burn = || step(batch_norm_train(x.clone(), gamma.clone(), beta.clone(), 1e-5).output);
        check(label, flint(), burn());
        pair(c, &format!("batch_norm_train fwd+bwd {label}"), flint, burn);
    }
}

/// MobileNetV2's activation, ReLU6 (`clamp(0, 6)`), at two of its activation shapes.
fn relu6(c: &mut Criterion) {
    for (label, shape) in [
        ("mnv2 [16,144,56,56]", [16, 144, 56, 56]),
        ("mnv2 [16,96,112,112]", [16, 96, 112, 112]),
    ] {
        let device = Device::flex();
        let x = Tensor::<4>::random(shape, NORMAL, &device) * 4.0;
        let flint = || total(flint_kernels::clamp(&x, 0.0, 6.0).expect("the kernel applies"));
        let burn = || total(x.clone().clamp(0.0, 6.0));
        check(label, flint(), burn());
        pair(c, &format!("relu6 fwd {label}"), flint, burn);

        let device = Device::flex().autodiff();
        let x = (Tensor::<4>::random(shape, NORMAL, &device) * 4.0).require_grad();
        let upstream = Tensor::<4>::random(shape, NORMAL, &device);
        let step = |y: Tensor<4>| {
            let grads = (y * upstream.clone()).sum().backward();
            total(x.grad(&grads).expect("the input is tracked"))
        };
        let flint = || step(flint_kernels::clamp(&x, 0.0, 6.0).unwrap());
        let burn = || step(x.clone().clamp(0.0, 6.0));
        check(label, flint(), burn());
        pair(c, &format!("relu6 fwd+bwd {label}"), flint, burn);
    }
}

/// What fusing ReLU6 into the depthwise convolution saves: flint's depthwise convolution alone
/// (`conv`), followed by flint's clamp(0, 6) as two ops (`conv+relu6`, as MobileNetV2 runs it
/// unfused) and as one (`fused`, `conv2d_clamp`), forward and forward + backward, on
/// four of MobileNetV2's depthwise shapes.
fn depthwise_relu6(c: &mut Criterion) {
    for case in [&DEPTHWISE[0], &DEPTHWISE[2], &DEPTHWISE[3], &DEPTHWISE[7]] {
        let options = ConvOptions {
            stride: [case.stride, case.stride],
            dilation: [1, 1],
            padding: [[1, 1], [1, 1]],
            groups: case.groups,
        };
        let conv = |x: &Tensor<4>, w: &Tensor<4>| {
            flint_kernels::conv2d(x, w, None, options).expect("the kernel applies")
        };
        let relu6 = |y: Tensor<4>| flint_kernels::clamp(&y, 0.0, 6.0).expect("the kernel applies");
        let fused = |x: &Tensor<4>, w: &Tensor<4>| {
            let y = flint_kernels::conv2d_clamp(x, w, None, options, 0.0, 6.0);
            y.expect("the kernel applies")
        };
        let device = Device::flex();
        let x = Tensor::<4>::random(case.input, NORMAL, &device);
        let w = Tensor::<4>::random(case.weight, NORMAL, &device);
        let mut group = c.benchmark_group(format!("depthwise+relu6 fwd {}", case.label));
        group.bench_function("conv", |b| b.iter(|| total(conv(&x, &w))));
        group.bench_function("conv+relu6", |b| b.iter(|| total(relu6(conv(&x, &w)))));
        group.bench_function("fused", |b| b.iter(|| total(fused(&x, &w))));
        group.finish();

        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random(case.input, NORMAL, &device).require_grad();
        let w = Tensor::<4>::random(case.weight, NORMAL, &device).require_grad();
        let output = conv(&x.clone().inner(), &w.clone().inner()).dims();
        let upstream = Tensor::<4>::random(output, NORMAL, &device);
        let step = |y: Tensor<4>| {
            let grads = (y * upstream.clone()).sum().backward();
            total(w.grad(&grads).expect("the weight is tracked"))
        };
        let mut group = c.benchmark_group(format!("depthwise+relu6 fwd+bwd {}", case.label));
        group.bench_function("conv", |b| b.iter(|| step(conv(&x, &w))));
        group.bench_function("conv+relu6", |b| b.iter(|| step(relu6(conv(&x, &w)))));
        group.bench_function("fused", |b| b.iter(|| step(fused(&x, &w))));
        group.finish();
    }
}

/// What fusing ReLU6 into a 1x1 convolution saves, on MobileNetV2's 1x1 expansions (batch 8,
/// bias as after batch-norm folding): flint's convolution followed by flint's clamp(0, 6)
/// (`conv+clamp`, as two ops) and the fused `conv2d_clamp` (`fused`), forward and forward +
/// backward (input, weight and bias tracked).
fn pointwise_relu6(c: &mut Criterion) {
    let none = ConvOptions {
        stride: [1, 1],
        dilation: [1, 1],
        padding: [[0, 0], [0, 0]],
        groups: 1,
    };
    for (label, c_in, c_out, size) in [
        ("mnv2 1x1 16->96@112", 16, 96, 112),
        ("mnv2 1x1 24->144@56", 24, 144, 56),
        ("mnv2 1x1 32->192@28", 32, 192, 28),
        ("mnv2 1x1 96->576@14", 96, 576, 14),
    ] {
        let (input, weight) = ([8, c_in, size, size], [c_out, c_in, 1, 1]);
        let unfused = |x: &Tensor<4>, w: &Tensor<4>, b: &Tensor<1>| {
            let y = flint_kernels::conv2d(x, w, Some(b), none).expect("the kernel applies");
            flint_kernels::clamp(&y, 0.0, 6.0).expect("the kernel applies")
        };
        let fused = |x: &Tensor<4>, w: &Tensor<4>, b: &Tensor<1>| {
            let y = flint_kernels::conv2d_clamp(x, w, Some(b), none, 0.0, 6.0);
            y.expect("the kernel applies")
        };
        let device = Device::flex();
        let x = Tensor::<4>::random(input, NORMAL, &device);
        let w = Tensor::<4>::random(weight, NORMAL, &device) * 0.3;
        let b = Tensor::<1>::random([c_out], NORMAL, &device);
        check(label, total(fused(&x, &w, &b)), total(unfused(&x, &w, &b)));
        let mut group = c.benchmark_group(format!("conv1x1+relu6 fwd {label}"));
        group.bench_function("conv+clamp", |t| t.iter(|| total(unfused(&x, &w, &b))));
        group.bench_function("fused", |t| t.iter(|| total(fused(&x, &w, &b))));
        group.finish();

        let device = Device::flex().autodiff();
        let x = Tensor::<4>::random(input, NORMAL, &device).require_grad();
        let w = (Tensor::<4>::random(weight, NORMAL, &device) * 0.3).require_grad();
        let b = Tensor::<1>::random([c_out], NORMAL, &device).require_grad();
        let upstream = Tensor::<4>::random([8, c_out, size, size], NORMAL, &device);
        // The activation is read, not consumed (as by the next layer): the loss's product may
        // not reuse its buffer in place, which only the unfused clamp's output would allow.
        let step = |y: Tensor<4>| {
            let grads = (y.clone() * upstream.clone()).sum().backward();
            total(x.grad(&grads).expect("the input is tracked"))
                + total(w.grad(&grads).expect("the weight is tracked"))
        };
        let mut group = c.benchmark_group(format!("conv1x1+relu6 fwd+bwd {label}"));
        group.bench_function("conv+clamp", |t| t.iter(|| step(unfused(&x, &w, &b))));
        group.bench_function("fused", |t| t.iter(|| step(fused(&x, &w, &b))));
        group.finish();
    }
}

criterion_group! {
    name = benches;
    // Slow cases (a 224x224 batch takes tens of milliseconds): 10 samples each, which the
    // command line can override. No plots: criterion's plotters backend panics
    // (FontUnavailable) on machines without fonts.
    config = Criterion::default().sample_size(10).without_plots();
    targets = convolution, fully_connected, max_pooling, batch_norm, relu6, depthwise_relu6, pointwise_relu6
}
criterion_main!(benches);
