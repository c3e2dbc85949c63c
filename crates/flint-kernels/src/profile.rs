//! Where a training step's time goes: wall time, calls and floating-point operations of
//! flint's kernels, per kind of kernel.
//!
//! Off by default. [`enable`] turns it on for the whole process; from then on every kernel call
//! adds its wall time (measured on the calling thread, around the whole call, its parallel
//! parts included) and its floating-point operations to per-thread counters, which
//! [`snapshot`] adds up. Off, a kernel call costs one relaxed atomic load more.
//!
//! Operations are counted from the shapes, exactly: 2 per multiply-add of the layer's
//! definition (a convolution's zero padding included, as PyTorch's and the papers' counts do),
//! the same count for the forward step, the input gradient and the weight gradient. Bias adds,
//! batch norm, clamping and pooling count no operations (their cost is memory traffic): their
//! rows show calls and time only. A clamp fused into a convolution ([`crate::conv2d_clamp`])
//! is not a clamp call of its own: its time counts under the convolution's kinds.
//!
//! While profiling is on, a convolution's or linear layer's backward step runs as two calls,
//! the weight and bias gradients then the input gradient, so that each is timed alone (each
//! reads the output gradient once; the split costs one more pass over it). A fused
//! convolution + clamp masks the output gradient in each of the two calls, so its backward
//! rows read higher while profiling than its backward step costs without.
//!
//! Time spent in kernels that run at the same time on several threads (data-parallel training
//! over several devices) adds up: the kernels' total can then exceed the wall time.
//!
//! # Example
//! ```
//! use burn::tensor::{Device, Distribution, Tensor};
//! use flint_kernels::profile::{self, KernelKind};
//!
//! let device = Device::flex();
//! let x = Tensor::<2>::random([8, 16], Distribution::Default, &device);
//! let w = Tensor::<2>::random([16, 4], Distribution::Default, &device);
//!
//! profile::enable(true);
//! let before = profile::thread_snapshot();
//! flint_kernels::linear(&x, &w, None).expect("f32 on flex");
//! let after = profile::thread_snapshot();
//! profile::enable(false);
//!
//! let forward = after.get(KernelKind::LinearForward).since(before.get(KernelKind::LinearForward));
//! assert_eq!(forward.calls, 1);
//! assert_eq!(forward.flops, 2 * 8 * 16 * 4);
//! ```

use burn::backend::flex::FlexTensor;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::gemm::{Operand, Wanted, matmul};
use super::weighted::WeightedOp;

/// A kind of kernel call: a layer kind and a pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// 1x1 convolution (not depthwise), forward.
    PointwiseForward,
    /// 1x1 convolution, input gradient.
    PointwiseInputGrad,
    /// 1x1 convolution, weight (and bias) gradient.
    PointwiseWeightGrad,
    /// Depthwise convolution (one input channel per group), forward.
    DepthwiseForward,
    /// Depthwise convolution, input gradient.
    DepthwiseInputGrad,
    /// Depthwise convolution, weight (and bias) gradient.
    DepthwiseWeightGrad,
    /// Any other convolution (say, a 3x3 stem), forward.
    ConvForward,
    /// Any other convolution, input gradient.
    ConvInputGrad,
    /// Any other convolution, weight (and bias) gradient.
    ConvWeightGrad,
    /// Linear layer, forward.
    LinearForward,
    /// Linear layer, input gradient.
    LinearInputGrad,
    /// Linear layer, weight (and bias) gradient.
    LinearWeightGrad,
    /// Batch norm in training mode, forward (statistics and normalisation).
    BatchNormForward,
    /// Batch norm, backward.
    BatchNormBackward,
    /// Clamp (ReLU6), forward.
    ClampForward,
    /// Clamp, backward.
    ClampBackward,
    /// Max pooling, forward.
    MaxPoolForward,
    /// Max pooling, backward.
    MaxPoolBackward,
}

/// The number of kinds.
const KINDS: usize = KernelKind::ALL.len();

impl KernelKind {
    /// Every kind, in table order.
    pub const ALL: [KernelKind; 18] = [
        Self::PointwiseForward,
        Self::PointwiseInputGrad,
        Self::PointwiseWeightGrad,
        Self::DepthwiseForward,
        Self::DepthwiseInputGrad,
        Self::DepthwiseWeightGrad,
        Self::ConvForward,
        Self::ConvInputGrad,
        Self::ConvWeightGrad,
        Self::LinearForward,
        Self::LinearInputGrad,
        Self::LinearWeightGrad,
        Self::BatchNormForward,
        Self::BatchNormBackward,
        Self::ClampForward,
        Self::ClampBackward,
        Self::MaxPoolForward,
        Self::MaxPoolBackward,
    ];

    /// A short name for tables: layer kind, then pass.
    pub fn name(self) -> &'static str {
        match self {
            Self::PointwiseForward => "conv 1x1 forward",
            Self::PointwiseInputGrad => "conv 1x1 input grad",
            Self::PointwiseWeightGrad => "conv 1x1 weight grad",
            Self::DepthwiseForward => "depthwise forward",
            Self::DepthwiseInputGrad => "depthwise input grad",
            Self::DepthwiseWeightGrad => "depthwise weight grad",
            Self::ConvForward => "conv other forward",
            Self::ConvInputGrad => "conv other input grad",
            Self::ConvWeightGrad => "conv other weight grad",
            Self::LinearForward => "linear forward",
            Self::LinearInputGrad => "linear input grad",
            Self::LinearWeightGrad => "linear weight grad",
            Self::BatchNormForward => "batch norm forward",
            Self::BatchNormBackward => "batch norm backward",
            Self::ClampForward => "clamp forward",
            Self::ClampBackward => "clamp backward",
            Self::MaxPoolForward => "max pool forward",
            Self::MaxPoolBackward => "max pool backward",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The forward, input-gradient and weight-gradient kinds of a convolution: depthwise
/// (`depthwise`), else 1x1 (`kernel == [1, 1]`), else other.
pub(crate) fn conv_kinds(depthwise: bool, kernel: [usize; 2]) -> [KernelKind; 3] {
    use KernelKind::*;
    if depthwise {
        [DepthwiseForward, DepthwiseInputGrad, DepthwiseWeightGrad]
    } else if kernel == [1, 1] {
        [PointwiseForward, PointwiseInputGrad, PointwiseWeightGrad]
    } else {
        [ConvForward, ConvInputGrad, ConvWeightGrad]
    }
}

/// The forward, input-gradient and weight-gradient kinds of a linear layer.
pub(crate) const LINEAR_KINDS: [KernelKind; 3] = [
    KernelKind::LinearForward,
    KernelKind::LinearInputGrad,
    KernelKind::LinearWeightGrad,
];

/// What the calls of one kind added up to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Kernel calls.
    pub calls: u64,
    /// Wall time of the calls, in nanoseconds.
    pub nanos: u64,
    /// CPU time of the calling thread during the calls, in nanoseconds (0 where the platform
    /// does not tell it). With one compute thread it is the kernels' own CPU time, free of the
    /// time other processes took the core away; with more, the other threads' share is left out.
    pub cpu_nanos: u64,
    /// Floating-point operations (2 per multiply-add); 0 for kinds that count none.
    pub flops: u64,
}

impl KernelStats {
    /// Wall time in seconds.
    pub fn seconds(&self) -> f64 {
        self.nanos as f64 * 1e-9
    }

    /// The calling thread's CPU time in seconds.
    pub fn cpu_seconds(&self) -> f64 {
        self.cpu_nanos as f64 * 1e-9
    }

    /// Billions of floating-point operations.
    pub fn gflop(&self) -> f64 {
        self.flops as f64 * 1e-9
    }

    /// Achieved GFLOP/s over the wall time, or `None` where nothing was counted or timed.
    pub fn gflops_per_sec(&self) -> Option<f64> {
        (self.flops > 0 && self.nanos > 0).then(|| self.flops as f64 / self.nanos as f64)
    }

    /// GFLOP/s over the calling thread's CPU time, or `None` where nothing was counted or timed.
    pub fn cpu_gflops_per_sec(&self) -> Option<f64> {
        (self.flops > 0 && self.cpu_nanos > 0).then(|| self.flops as f64 / self.cpu_nanos as f64)
    }

    /// What was added since `earlier` (a snapshot of the same counters taken before).
    pub fn since(&self, earlier: KernelStats) -> KernelStats {
        KernelStats {
            calls: self.calls.saturating_sub(earlier.calls),
            nanos: self.nanos.saturating_sub(earlier.nanos),
            cpu_nanos: self.cpu_nanos.saturating_sub(earlier.cpu_nanos),
            flops: self.flops.saturating_sub(earlier.flops),
        }
    }

    fn add(&mut self, other: &KernelStats) {
        self.calls += other.calls;
        self.nanos += other.nanos;
        self.cpu_nanos += other.cpu_nanos;
        self.flops += other.flops;
    }
}

/// The counters of every kind at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelProfile {
    stats: [KernelStats; KINDS],
}

impl KernelProfile {
    /// The counters of `kind`.
    pub fn get(&self, kind: KernelKind) -> KernelStats {
        self.stats[kind.index()]
    }

    /// Each kind with its counters, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (KernelKind, KernelStats)> + '_ {
        KernelKind::ALL.iter().map(|&kind| (kind, self.get(kind)))
    }

    /// All kinds together.
    pub fn total(&self) -> KernelStats {
        let mut total = KernelStats::default();
        self.stats.iter().for_each(|s| total.add(s));
        total
    }

    /// Adds `other`'s counters to these, kind by kind.
    pub fn merge(&mut self, other: &KernelProfile) {
        for (s, o) in self.stats.iter_mut().zip(&other.stats) {
            s.add(o);
        }
    }

    /// What was added since `earlier`, kind by kind.
    pub fn since(&self, earlier: &KernelProfile) -> KernelProfile {
        let mut stats = self.stats;
        for (s, e) in stats.iter_mut().zip(&earlier.stats) {
            *s = s.since(*e);
        }
        KernelProfile { stats }
    }

    /// A text table of the kinds that were called: calls, wall seconds and their share of
    /// `wall_secs` (the time the calls ran in, say one epoch's training steps), the calling
    /// thread's CPU seconds, GFLOP, GFLOP/s over the wall time and, given `peak`, that as a share
    /// of the all-thread matrix-product peak, and GFLOP/s over the CPU time; then the kernels'
    /// total and "other" (`wall_secs` minus the kernels' time, and `cpu_secs`, the calling
    /// thread's CPU time over the same span, minus theirs: burn's element-wise ops, the
    /// optimiser, waiting for data, allocation).
    pub fn table(
        &self,
        wall_secs: f64,
        cpu_secs: Option<f64>,
        peak: Option<&MatmulPeak>,
    ) -> String {
        let mut out = String::new();
        let share = |secs: f64| {
            if wall_secs > 0.0 {
                format!("{:5.1}%", 100.0 * secs / wall_secs)
            } else {
                "     -".into()
            }
        };
        let gflops = |rate: Option<f64>| rate.map_or(format!("{:>9}", "-"), |r| format!("{r:9.2}"));
        let of_peak = |s: &KernelStats| match (s.gflops_per_sec(), peak) {
            (Some(r), Some(p)) if p.all_threads > 0.0 => {
                format!(" {:6.1}%", 100.0 * r / p.all_threads)
            }
            (_, Some(_)) => format!(" {:>7}", "-"),
            (_, None) => String::new(),
        };
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:>9} {:>6} {:>9} {:>9} {:>9}{} {:>9}",
            "kernel",
            "calls",
            "time (s)",
            "time",
            "cpu (s)",
            "GFLOP",
            "GFLOP/s",
            if peak.is_some() { " of peak" } else { "" },
            "cpu GF/s"
        );
        let mut row = |name: &str, s: &KernelStats, calls: String| {
            let _ = writeln!(
                out,
                "{:<24} {:>7} {:9.3} {} {:9.3} {:9.2} {}{} {}",
                name,
                calls,
                s.seconds(),
                share(s.seconds()),
                s.cpu_seconds(),
                s.gflop(),
                gflops(s.gflops_per_sec()),
                of_peak(s),
                gflops(s.cpu_gflops_per_sec())
            );
        };
        for (kind, s) in self.iter().filter(|(_, s)| s.calls > 0) {
            row(kind.name(), &s, s.calls.to_string());
        }
        let total = self.total();
        row("kernels total", &total, total.calls.to_string());
        let remainder = |all: f64, kernels: f64| ((all - kernels).max(0.0) * 1e9) as u64;
        let cpu_secs = cpu_secs.unwrap_or(0.0);
        let other = KernelStats {
            nanos: remainder(wall_secs, total.seconds()),
            cpu_nanos: remainder(cpu_secs, total.cpu_seconds()),
            ..KernelStats::default()
        };
        row("other (not in kernels)", &other, "-".into());
        let _ = writeln!(
            out,
            "{:<24} {:>7} {:9.3} {} {:9.3}",
            "wall",
            "",
            wall_secs,
            share(wall_secs),
            cpu_secs
        );
        out
    }
}

/// Whether kernels record (see [`enable`]).
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Every thread's counters, for [`snapshot`] and [`reset`].
static THREADS: Mutex<Vec<Arc<Mutex<KernelProfile>>>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's counters (registered in [`THREADS`] on first use).
    static COUNTERS: Arc<Mutex<KernelProfile>> = {
        let counters = Arc::new(Mutex::new(KernelProfile::default()));
        lock(&THREADS).push(counters.clone());
        counters
    };
}

/// A lock that survives a panic elsewhere (counters stay usable; at worst one call is lost).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Turns recording on (`true`) or off for every thread. Counters keep their values.
pub fn enable(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether kernels record.
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Sets every thread's counters to zero.
pub fn reset() {
    for counters in lock(&THREADS).iter() {
        *lock(counters) = KernelProfile::default();
    }
}

/// Every thread's counters added up.
pub fn snapshot() -> KernelProfile {
    let mut total = KernelProfile::default();
    for counters in lock(&THREADS).iter() {
        let counters = lock(counters);
        total.merge(&counters);
    }
    total
}

/// The calling thread's counters only: the kernels it called (whose parallel parts may have
/// run on other threads).
pub fn thread_snapshot() -> KernelProfile {
    COUNTERS.with(|counters| lock(counters).clone())
}

/// Adds `call` (one call) to the calling thread's counters of `kind`.
fn record(kind: KernelKind, call: &KernelStats) {
    COUNTERS.with(|counters| lock(counters).stats[kind.index()].add(call));
}

/// The calling thread's CPU time in nanoseconds, or 0 where the platform does not tell it.
pub fn thread_cpu_nanos() -> u64 {
    #[cfg(unix)]
    {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `now` is a valid timespec for the call to write.
        if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) } == 0 {
            return now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64;
        }
    }
    0
}

/// One kernel call being timed: records its kind, wall and CPU time and operations when
/// dropped. Inert when profiling was off at its start.
#[must_use = "the call is recorded when the span is dropped"]
pub(crate) struct Span(Option<(KernelKind, u64, Instant, u64)>);

/// Starts timing one call of `kind` doing `flops` floating-point operations (one relaxed load
/// when profiling is off).
pub(crate) fn span(kind: KernelKind, flops: u64) -> Span {
    Span(is_enabled().then(|| (kind, flops, Instant::now(), thread_cpu_nanos())))
}

impl Span {
    /// Drops the span without recording (the kernel declined the call).
    pub(crate) fn cancel(mut self) {
        self.0 = None;
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some((kind, flops, start, cpu_start)) = self.0.take() {
            let call = KernelStats {
                calls: 1,
                nanos: start.elapsed().as_nanos() as u64,
                cpu_nanos: thread_cpu_nanos().saturating_sub(cpu_start),
                flops,
            };
            record(kind, &call);
        }
    }
}

/// A convolution or linear layer whose calls are recorded: forward under `kinds[0]`, input
/// gradient under `kinds[1]`, weight and bias gradients under `kinds[2]`, each pass doing
/// `multiply_adds` multiply-adds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Profiled<Op> {
    op: Op,
    kinds: [KernelKind; 3],
    multiply_adds: u64,
}

impl<Op> Profiled<Op> {
    /// `op`, recorded under the forward, input-gradient and weight-gradient `kinds`.
    pub(crate) fn new(op: Op, kinds: [KernelKind; 3], multiply_adds: u64) -> Self {
        Self {
            op,
            kinds,
            multiply_adds,
        }
    }
}

impl<Op: WeightedOp> WeightedOp for Profiled<Op> {
    fn forward(&self, input: &[f32], weight: &[f32], bias: Option<&[f32]>) -> FlexTensor {
        let _span = span(self.kinds[0], 2 * self.multiply_adds);
        self.op.forward(input, weight, bias)
    }

    fn reads_output(&self) -> bool {
        self.op.reads_output()
    }

    fn backward(
        &self,
        input: &[f32],
        weight: &[f32],
        output: Option<&[f32]>,
        grad: &[f32],
        wanted: Wanted,
    ) -> [Option<FlexTensor>; 3] {
        if !is_enabled() {
            return self.op.backward(input, weight, output, grad, wanted);
        }
        let flops = 2 * self.multiply_adds;
        let [_, weight_grad, bias_grad] = if wanted.weight || wanted.bias {
            let _span = span(self.kinds[2], if wanted.weight { flops } else { 0 });
            let params = Wanted {
                input: false,
                ..wanted
            };
            self.op.backward(input, weight, output, grad, params)
        } else {
            [None, None, None]
        };
        let input_grad = if wanted.input {
            let _span = span(self.kinds[1], flops);
            let only_input = Wanted {
                input: true,
                weight: false,
                bias: false,
            };
            let [input_grad, ..] = self.op.backward(input, weight, output, grad, only_input);
            input_grad
        } else {
            None
        };
        [input_grad, weight_grad, bias_grad]
    }
}

/// The matrix-product speed of this machine through flint's gemm path, in GFLOP/s.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MatmulPeak {
    /// The side of the square matrices.
    pub size: usize,
    /// One product at a time on the calling thread (the best of the repeats).
    pub single_thread: f64,
    /// Threads of the current rayon pool, each running its own product at once.
    pub threads: usize,
    /// Their products together over the time the slowest took (the best of the repeats).
    pub all_threads: f64,
}

impl std::fmt::Display for MatmulPeak {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "matmul peak ({n}x{n}x{n} f32, flint's gemm): {:.2} GFLOP/s on 1 thread, {:.2} \
             GFLOP/s on {} thread(s) at once",
            self.single_thread,
            self.all_threads,
            self.threads,
            n = self.size
        )
    }
}

/// Measures [`MatmulPeak`] with `size x size` f32 matrices through the same gemm call (one
/// product per thread) as flint's convolution and linear kernels: the best of `repeats` products
/// on the calling thread, then the best of `repeats` rounds of one product on every thread of
/// the current rayon pool at once, each after one to warm up. `None` for `size` or `repeats`
/// of 0.
pub fn matmul_peak(size: usize, repeats: usize) -> Option<MatmulPeak> {
    if size == 0 || repeats == 0 {
        return None;
    }
    let flops = 2.0 * (size as f64).powi(3);
    let lhs: Vec<f32> = (0..size * size).map(|i| (i % 7) as f32 * 0.25).collect();
    let rhs: Vec<f32> = (0..size * size).map(|i| (i % 5) as f32 * 0.5).collect();
    // Each thread writes its own output, allocated (and first touched) before the clock starts.
    let product = |dst: &mut [f32]| {
        let (a, b) = (Operand::rows(&lhs, size), Operand::rows(&rhs, size));
        matmul(dst, false, a, b, [size, size, size]);
    };
    let best = |round: &dyn Fn()| {
        round();
        (0..repeats)
            .map(|_| {
                let start = Instant::now();
                round();
                start.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let threads = rayon::current_num_threads();
    let outputs: Vec<Mutex<Vec<f32>>> = (0..threads)
        .map(|_| Mutex::new(vec![0.0f32; size * size]))
        .collect();
    let single = best(&|| product(&mut lock(&outputs[0])));
    let everywhere = best(&|| {
        rayon::broadcast(|context| product(&mut lock(&outputs[context.index()])));
    });
    Some(MatmulPeak {
        size,
        single_thread: flops / single * 1e-9,
        threads,
        all_threads: flops * threads as f64 / everywhere * 1e-9,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConvOptions, conv2d, linear};
    use burn::tensor::{Device, Distribution, Tensor};

    fn options(stride: usize, padding: usize, groups: usize) -> ConvOptions {
        ConvOptions {
            stride: [stride, stride],
            dilation: [1, 1],
            padding: [[padding, padding], [padding, padding]],
            groups,
        }
    }

    /// What the calling thread recorded while `work` ran (profiling on), and while it ran with
    /// profiling off. The only test that turns profiling on: others running at the same time
    /// record on their own threads, and only while this one has it on.
    fn recorded(work: impl Fn()) -> [KernelProfile; 2] {
        let before = thread_snapshot();
        enable(true);
        work();
        enable(false);
        let on = thread_snapshot().since(&before);
        let before = thread_snapshot();
        work();
        let off = thread_snapshot().since(&before);
        [on, off]
    }

    #[test]
    fn counts_each_pass_of_convolutions_and_linear_layers_exactly() {
        let device = Device::flex().autodiff();
        let normal = Distribution::Normal(0.0, 1.0);
        // A 3x3 stride-2 stem, a 1x1, a depthwise 3x3 and a linear layer, as in MobileNetV2.
        let x = Tensor::<4>::random([2, 3, 9, 9], normal, &device);
        let stem = Tensor::<4>::random([8, 3, 3, 3], normal, &device).require_grad();
        let pointwise = Tensor::<4>::random([6, 8, 1, 1], normal, &device).require_grad();
        let depthwise = Tensor::<4>::random([6, 1, 3, 3], normal, &device).require_grad();
        let bias = Tensor::<1>::random([6], normal, &device).require_grad();
        let fc = Tensor::<2>::random([6 * 5 * 5, 4], normal, &device).require_grad();
        let step = || {
            let y = conv2d(&x, &stem, None, options(2, 1, 1)).unwrap();
            let y = conv2d(&y, &pointwise, Some(&bias), options(1, 0, 1)).unwrap();
            let y = conv2d(&y, &depthwise, None, options(1, 1, 6)).unwrap();
            let y = linear(&y.reshape([2, 6 * 5 * 5]), &fc, None).unwrap();
            y.sum().backward();
        };
        let [on, off] = recorded(step);
        assert_eq!(off, KernelProfile::default(), "disabled records nothing");

        // Output 5x5 everywhere: (9 + 2 - 3) / 2 + 1.
        let stem_macs = 2 * 8 * 25 * 3 * 9;
        let pointwise_macs = 2 * 6 * 25 * 8;
        let depthwise_macs = 2 * 6 * 25 * 9;
        let linear_macs = 2 * 150 * 4;
        use KernelKind::*;
        let expected = [
            (ConvForward, stem_macs),
            // The input needs no gradient: the stem computes its weight gradient only.
            (ConvInputGrad, 0),
            (ConvWeightGrad, stem_macs),
            (PointwiseForward, pointwise_macs),
            (PointwiseInputGrad, pointwise_macs),
            (PointwiseWeightGrad, pointwise_macs),
            (DepthwiseForward, depthwise_macs),
            (DepthwiseInputGrad, depthwise_macs),
            (DepthwiseWeightGrad, depthwise_macs),
            (LinearForward, linear_macs),
            (LinearInputGrad, linear_macs),
            (LinearWeightGrad, linear_macs),
        ];
        for (kind, macs) in expected {
            let stats = on.get(kind);
            assert_eq!(stats.flops, 2 * macs as u64, "{kind:?}");
            assert_eq!(stats.calls, u64::from(macs > 0), "{kind:?}");
            assert_eq!(stats.nanos > 0, macs > 0, "{kind:?}: {stats:?}");
            #[cfg(target_os = "linux")]
            assert_eq!(stats.cpu_nanos > 0, macs > 0, "{kind:?}: {stats:?}");
        }
        let counted: u64 = expected.iter().map(|&(_, macs)| 2 * macs as u64).sum();
        assert_eq!(on.total().flops, counted);
        let table = on.table(1.0, Some(1.0), None);
        assert!(table.contains("conv 1x1 weight grad"), "{table}");
        assert!(!table.contains("conv other input grad"), "{table}");
    }

    #[test]
    fn the_peak_is_positive_and_declines_empty_sizes() {
        let peak = matmul_peak(64, 2).expect("a size and repeats");
        assert!(
            peak.single_thread > 0.0 && peak.all_threads > 0.0,
            "{peak:?}"
        );
        assert_eq!(peak.threads, rayon::current_num_threads());
        assert!(matmul_peak(0, 2).is_none());
        assert!(matmul_peak(8, 0).is_none());
    }

    #[test]
    fn stats_subtract_and_rate() {
        let later = KernelStats {
            calls: 3,
            nanos: 2_000,
            cpu_nanos: 1_000,
            flops: 10_000,
        };
        let earlier = KernelStats {
            calls: 1,
            nanos: 1_000,
            cpu_nanos: 500,
            flops: 4_000,
        };
        let delta = later.since(earlier);
        assert_eq!(delta.calls, 2);
        assert_eq!(delta.gflops_per_sec(), Some(6.0));
        assert_eq!(delta.cpu_gflops_per_sec(), Some(12.0));
        assert_eq!(KernelStats::default().gflops_per_sec(), None);
    }
}
