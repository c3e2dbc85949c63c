//! `FLINT_PROFILE_KERNELS=1`: where the training steps' time goes, per kind of layer.
//!
//! With the variable set (to anything but `0` or empty), [`Engine::fit`](crate::Engine::fit)
//! turns on [`flint_kernels::profile`], splits its counters between the training steps and the
//! evaluation passes of every epoch, and at the end of the run prints on stderr (stdout stays
//! parseable in JSON mode) a table for each: calls, seconds, share of the phase's wall time,
//! CPU seconds of the loop's thread, GFLOP and GFLOP/s (over the wall time and over that CPU
//! time, which with `--threads 1` leaves out the time other processes held the core) per kind
//! of kernel, with the time not spent in flint's kernels ("other":
//! burn's element-wise ops, the optimiser, data loading, allocation) and the machine's
//! matrix-product peak measured at the end of the same run through the same gemm path.
//! The forward multiply-adds per training sample, per kind of layer, check the counts against
//! a model's published figure. A run with a run directory also gets the same figures as
//! `kernel_profile.json` there.

use std::path::Path;
use std::time::Instant;

use serde_json::{Value, json};

use flint_kernels::profile::{self, KernelKind, KernelProfile, MatmulPeak};

use crate::checkpoint::write_atomic;
use crate::error::TrainError;

/// The environment variable that turns the profile on.
pub const PROFILE_ENV: &str = "FLINT_PROFILE_KERNELS";

/// Side of the square matrices of the peak measurement (2 GFLOP per product).
const PEAK_SIZE: usize = 1024;

/// Products per thread of the peak measurement, after one to warm up: the best of them counts
/// (on a loaded machine most products of 12 ms are interrupted).
const PEAK_REPEATS: usize = 16;

/// Whether [`PROFILE_ENV`] asks for the profile.
pub fn requested() -> bool {
    std::env::var(PROFILE_ENV).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A run's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The training steps of an epoch (forward, backward, optimiser step).
    Train,
    /// The evaluation pass after an epoch.
    Eval,
}

/// The kernel counters and wall time of one phase, over every epoch of a run.
#[derive(Clone, Debug, Default)]
pub struct PhaseProfile {
    /// What flint's kernels did.
    pub kernels: KernelProfile,
    /// Wall time of the phase, in seconds.
    pub secs: f64,
    /// CPU time of the training loop's thread during the phase, in seconds.
    pub cpu_secs: f64,
    /// Samples the phase went through (counted for training only).
    pub samples: usize,
}

/// Splits the kernel counters of a run into its phases; inert unless built by
/// [`PhaseProfiler::from_env`] with the variable set.
#[derive(Debug)]
pub(crate) struct PhaseProfiler {
    on: bool,
    mark: (KernelProfile, Instant, u64),
    train: PhaseProfile,
    eval: PhaseProfile,
}

impl PhaseProfiler {
    /// A profiler that records when [`PROFILE_ENV`] asks for it (and then turns profiling on).
    pub(crate) fn from_env() -> Self {
        let on = requested();
        if on {
            profile::enable(true);
        }
        Self {
            on,
            mark: (KernelProfile::default(), Instant::now(), 0),
            train: PhaseProfile::default(),
            eval: PhaseProfile::default(),
        }
    }

    /// A phase starts now.
    pub(crate) fn start(&mut self) {
        if self.on {
            self.mark = mark();
        }
    }

    /// `samples` more training samples.
    pub(crate) fn samples(&mut self, samples: usize) {
        self.train.samples += samples;
    }

    /// The current phase, `phase`, ends now; the next one starts.
    pub(crate) fn end(&mut self, phase: Phase) {
        if !self.on {
            return;
        }
        let now = mark();
        let into = match phase {
            Phase::Train => &mut self.train,
            Phase::Eval => &mut self.eval,
        };
        into.kernels.merge(&now.0.since(&self.mark.0));
        into.secs += now.1.duration_since(self.mark.1).as_secs_f64();
        into.cpu_secs += now.2.saturating_sub(self.mark.2) as f64 * 1e-9;
        self.mark = now;
    }

    /// Prints the report on stderr (when on), measuring the peak first, writes it as
    /// `kernel_profile.json` into `run_dir` where given, and turns profiling off.
    pub(crate) fn finish(self, run_dir: Option<&Path>) -> Result<(), TrainError> {
        if !self.on {
            return Ok(());
        }
        profile::enable(false);
        let peak = profile::matmul_peak(PEAK_SIZE, PEAK_REPEATS);
        eprint!("{}", report(&self.train, &self.eval, peak.as_ref()));
        if let Some(dir) = run_dir {
            let value = to_json(&self.train, &self.eval, peak.as_ref());
            let text = serde_json::to_string_pretty(&value)
                .map_err(|e| TrainError::Report(e.to_string()))?;
            write_atomic(&dir.join("kernel_profile.json"), text.as_bytes())?;
        }
        Ok(())
    }
}

/// The report's figures: per phase its wall time, samples and, per kind called, calls, seconds
/// and GFLOP; the peak in GFLOP/s.
pub fn to_json(train: &PhaseProfile, eval: &PhaseProfile, peak: Option<&MatmulPeak>) -> Value {
    let phase = |p: &PhaseProfile| {
        let kinds: Vec<Value> = p
            .kernels
            .iter()
            .filter(|(_, s)| s.calls > 0)
            .map(|(kind, s)| {
                json!({
                    "kind": kind.name(),
                    "calls": s.calls,
                    "secs": s.seconds(),
                    "cpu_secs": s.cpu_seconds(),
                    "gflop": s.gflop(),
                })
            })
            .collect();
        json!({
            "secs": p.secs,
            "cpu_secs": p.cpu_secs,
            "samples": p.samples,
            "kernel_secs": p.kernels.total().seconds(),
            "kernel_cpu_secs": p.kernels.total().cpu_seconds(),
            "kernels": kinds,
        })
    };
    json!({
        "threads": rayon::current_num_threads(),
        "train": phase(train),
        "eval": phase(eval),
        "peak": peak.map(|p| json!({
            "size": p.size,
            "single_thread_gflops": p.single_thread,
            "threads": p.threads,
            "all_threads_gflops": p.all_threads,
        })),
    })
}

/// The kernels' counters, the time and the calling thread's CPU time (ns) now.
fn mark() -> (KernelProfile, Instant, u64) {
    (
        profile::snapshot(),
        Instant::now(),
        profile::thread_cpu_nanos(),
    )
}

/// The text report of a run's two phases beside `peak`.
pub fn report(train: &PhaseProfile, eval: &PhaseProfile, peak: Option<&MatmulPeak>) -> String {
    let threads = rayon::current_num_threads();
    let mut out = format!(
        "\nkernel profile ({PROFILE_ENV}), training steps: {} samples, {threads} thread(s)\n",
        train.samples
    );
    out += &train.kernels.table(train.secs, Some(train.cpu_secs), peak);
    if train.samples > 0 {
        out += &forward_per_sample(&train.kernels, train.samples);
    }
    if eval.kernels.total().calls > 0 {
        out += &format!("\nkernel profile ({PROFILE_ENV}), evaluation passes\n");
        out += &eval.kernels.table(eval.secs, Some(eval.cpu_secs), peak);
    }
    if let Some(peak) = peak {
        out += &format!("{peak}\n");
    }
    out
}

/// The forward multiply-adds per sample, in total and per kind of layer.
fn forward_per_sample(kernels: &KernelProfile, samples: usize) -> String {
    use KernelKind::*;
    let kinds = [
        (PointwiseForward, "1x1"),
        (DepthwiseForward, "depthwise"),
        (ConvForward, "other conv"),
        (LinearForward, "linear"),
    ];
    let total: u64 = kinds.iter().map(|&(k, _)| kernels.get(k).flops).sum();
    let macs = |flops: u64| flops as f64 / 2.0 / samples as f64 / 1e6;
    let mut out = format!(
        "forward multiply-adds per training sample: {:.1} M (",
        macs(total)
    );
    let shares: Vec<String> = kinds
        .iter()
        .map(|&(kind, name)| {
            let flops = kernels.get(kind).flops;
            format!(
                "{name} {:.1} M, {:.1}%",
                macs(flops),
                100.0 * flops as f64 / total.max(1) as f64
            )
        })
        .collect();
    out += &shares.join("; ");
    out += ")\n";
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_shows_each_phase_and_the_forward_count_per_sample() {
        let mut train = PhaseProfile {
            secs: 2.0,
            samples: 4,
            ..PhaseProfile::default()
        };
        let device = burn::tensor::Device::flex();
        let x = burn::tensor::Tensor::<2>::ones([4, 1000], &device);
        let w = burn::tensor::Tensor::<2>::ones([1000, 500], &device);
        profile::enable(true);
        let before = profile::thread_snapshot();
        flint_kernels::linear(&x, &w, None).expect("f32 on flex");
        let linear = profile::thread_snapshot().since(&before);
        profile::enable(false);
        train.kernels.merge(&linear);
        assert_eq!(
            train.kernels.get(KernelKind::LinearForward).flops,
            2 * 4 * 1000 * 500
        );
        let text = report(&train, &PhaseProfile::default(), None);
        assert!(text.contains("linear forward"), "{text}");
        // 1000 x 500 multiply-adds per sample, all of them in the linear layer.
        assert!(text.contains("sample: 0.5 M (1x1 0.0 M, 0.0%"), "{text}");
        assert!(text.contains("linear 0.5 M, 100.0%"), "{text}");
        assert!(!text.contains("evaluation"), "{text}");
        let value = to_json(&train, &PhaseProfile::default(), None);
        assert_eq!(value["train"]["samples"], 4);
        assert_eq!(value["train"]["kernels"][0]["kind"], "linear forward");
        assert_eq!(value["train"]["kernels"][0]["calls"], 1);
        assert_eq!(value["eval"]["kernels"].as_array().map(Vec::len), Some(0));
    }
}
