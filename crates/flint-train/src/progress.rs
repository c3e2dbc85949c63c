//! What a run shows while it trains: a progress bar, nothing, or JSON lines.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};

use crate::metrics::{EpochMetrics, EvalReport};

/// How a run reports progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// A progress bar per epoch (stderr, only on a terminal) and one summary line per epoch.
    #[default]
    Bar,
    /// Only the final result line.
    Quiet,
    /// One JSON object per line on stdout: `{"event": "epoch", ...}`, then `{"event": "test", ...}`.
    Json,
    /// Nothing at all: for runs driven by a program (experiments) that reports itself.
    Silent,
}

/// Reports a run's progress in the chosen [`ProgressMode`].
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A reporter in `mode`.
    pub fn new(mode: ProgressMode) -> Self {
        Self { mode, bar: None }
    }

    /// The mode it reports in.
    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    /// An informational line (bar mode only, on stderr so stdout stays parseable).
    pub fn info(&self, text: &str) {
        if self.mode == ProgressMode::Bar {
            match &self.bar {
                Some(bar) => bar.println(text),
                None => eprintln!("{text}"),
            }
        }
    }

    /// A warning: something the user should know about the run (a file that was skipped), on
    /// stderr in every mode but `Silent`, whose caller reports itself.
    pub fn warn(&self, text: &str) {
        match (self.mode, &self.bar) {
            (ProgressMode::Silent, _) => {}
            (_, Some(bar)) => bar.println(format!("warning: {text}")),
            (_, None) => eprintln!("warning: {text}"),
        }
    }

    /// Starts an epoch of `batches` batches.
    pub fn start_epoch(&mut self, epoch: usize, epochs: usize, batches: usize) {
        if self.mode != ProgressMode::Bar {
            return;
        }
        let bar = ProgressBar::new(batches as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("{epoch}/{epochs}"));
        bar.enable_steady_tick(Duration::from_millis(500));
        self.bar = Some(bar);
    }

    /// Updates after a batch.
    pub fn batch(&self, loss: f64, accuracy: f64, samples_per_sec: f64) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!(
                "loss {loss:.4} acc {:.2}% {samples_per_sec:.0} img/s",
                accuracy * 100.0
            ));
            bar.inc(1);
        }
    }

    /// Ends an epoch with its metrics.
    pub fn end_epoch(&mut self, m: &EpochMetrics, epochs: usize, eval_set: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        match self.mode {
            ProgressMode::Bar => println!(
                "epoch {:>3}/{epochs}  train loss {:.4} acc {:.2}%  {eval_set} loss {:.4} acc {:.2}%  lr {:.2e}  {:.0} img/s  {:.1}s",
                m.epoch,
                m.train_loss,
                m.train_accuracy * 100.0,
                m.val_loss,
                m.val_accuracy * 100.0,
                m.lr,
                m.samples_per_sec,
                m.train_secs
            ),
            ProgressMode::Json => {
                let mut value = serde_json::to_value(m).expect("metrics serialise");
                value["event"] = "epoch".into();
                value["eval_set"] = eval_set.into();
                println!("{value}");
            }
            ProgressMode::Quiet | ProgressMode::Silent => {}
        }
    }

    /// The final test result; in bar and quiet modes the last line is `test accuracy: <fraction>`.
    /// `peak_rss_mib` is the process's peak resident memory (JSON mode reports it).
    pub fn finish(&self, test: &EvalReport, run_dir: &std::path::Path, peak_rss_mib: Option<f64>) {
        match self.mode {
            ProgressMode::Json => {
                let value = serde_json::json!({
                    "event": "test",
                    "loss": test.loss,
                    "accuracy": test.accuracy,
                    "per_class_accuracy": test.per_class_accuracy,
                    "samples_per_sec": test.samples_per_sec,
                    "peak_rss_mib": peak_rss_mib,
                    "run_dir": run_dir.display().to_string(),
                });
                println!("{value}");
            }
            ProgressMode::Bar => {
                println!("run directory: {}", run_dir.display());
                println!("test loss: {:.4}", test.loss);
                println!("test accuracy: {:.4}", test.accuracy);
            }
            ProgressMode::Quiet => println!("test accuracy: {:.4}", test.accuracy),
            ProgressMode::Silent => {}
        }
    }
}
