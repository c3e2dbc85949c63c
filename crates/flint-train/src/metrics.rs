//! Per-epoch metrics, evaluation reports and the confusion matrix, and the running totals that
//! produce them ([`EpochTally`] while training, [`EvalAccumulator`] while evaluating).

use std::time::Instant;

use burn::nn::loss::{CrossEntropyLoss, CrossEntropyLossConfig};
use burn::tensor::{Device, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::memory::resident_memory;

/// What one epoch measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// 1-based epoch number.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (with dropout on).
    pub train_loss: f64,
    /// Training accuracy over the epoch (with dropout on).
    pub train_accuracy: f64,
    /// Loss on the evaluation set (validation split, or the test set when there is none).
    pub val_loss: f64,
    /// Accuracy on the evaluation set.
    pub val_accuracy: f64,
    /// Learning rate at the end of the epoch.
    pub lr: f64,
    /// Training samples per second (data loading, forward, backward and optimiser step).
    pub samples_per_sec: f64,
    /// Wall time of the training part of the epoch, in seconds.
    pub train_secs: f64,
    /// Resident memory of the process at the end of the epoch, in MiB (0 where unknown); it
    /// should not grow from epoch to epoch.
    #[serde(default)]
    pub rss_mib: f64,
    /// Samples per second of the epoch's evaluation (0 without an evaluation set); not in
    /// `metrics.csv`.
    #[serde(default)]
    pub val_samples_per_sec: f64,
}

impl EpochMetrics {
    /// The `metrics.csv` header.
    pub const CSV_HEADER: &'static str = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,lr,samples_per_sec,train_secs,rss_mib";

    /// One `metrics.csv` row.
    pub fn csv_row(&self) -> String {
        format!(
            "{},{:.6},{:.6},{:.6},{:.6},{:.6e},{:.1},{:.2},{:.1}",
            self.epoch,
            self.train_loss,
            self.train_accuracy,
            self.val_loss,
            self.val_accuracy,
            self.lr,
            self.samples_per_sec,
            self.train_secs,
            self.rss_mib
        )
    }
}

/// The whole `metrics.csv` for a history.
pub fn metrics_csv(history: &[EpochMetrics]) -> String {
    let mut out = String::from(EpochMetrics::CSV_HEADER);
    out.push('\n');
    for m in history {
        out.push_str(&m.csv_row());
        out.push('\n');
    }
    out
}

/// A confusion matrix: `counts[true][predicted]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfusionMatrix {
    /// Counts indexed by true class, then predicted class.
    pub counts: Vec<Vec<usize>>,
}

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes.
    pub fn new(classes: usize) -> Self {
        Self {
            counts: vec![vec![0; classes]; classes],
        }
    }

    /// Records predictions against targets.
    pub fn add(&mut self, targets: &[i64], predictions: &[i64]) {
        for (&t, &p) in targets.iter().zip(predictions) {
            self.counts[t as usize][p as usize] += 1;
        }
    }

    /// Samples seen.
    pub fn total(&self) -> usize {
        self.counts.iter().flatten().sum()
    }

    /// Correct predictions.
    pub fn correct(&self) -> usize {
        (0..self.counts.len()).map(|i| self.counts[i][i]).sum()
    }

    /// Overall accuracy.
    pub fn accuracy(&self) -> f64 {
        self.correct() as f64 / self.total().max(1) as f64
    }

    /// Recall of each class (its share of correctly classified samples).
    pub fn per_class_accuracy(&self) -> Vec<f64> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, row)| row[i] as f64 / row.iter().sum::<usize>().max(1) as f64)
            .collect()
    }
}

/// An evaluation over a whole data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Accuracy.
    pub accuracy: f64,
    /// Per-class accuracy (recall).
    pub per_class_accuracy: Vec<f64>,
    /// Class names, by label.
    pub class_names: Vec<String>,
    /// The confusion matrix.
    pub confusion: ConfusionMatrix,
    /// Samples per second of the evaluation (batch 1000).
    pub samples_per_sec: f64,
}

impl EvalReport {
    /// No evaluation (a run without an evaluation set): loss and accuracy are NaN.
    pub fn empty() -> Self {
        Self {
            loss: f64::NAN,
            accuracy: f64::NAN,
            per_class_accuracy: Vec::new(),
            class_names: Vec::new(),
            confusion: ConfusionMatrix::new(0),
            samples_per_sec: 0.0,
        }
    }
}

/// The running totals of a training epoch: mean loss, accuracy and throughput so far.
#[derive(Debug, Clone)]
pub struct EpochTally {
    loss_sum: f64,
    correct: i64,
    seen: usize,
    start: Instant,
}

impl EpochTally {
    /// Starts the epoch's clock.
    pub fn start() -> Self {
        Self {
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            start: Instant::now(),
        }
    }

    /// Records a batch: its mean loss, its logits `[n, classes]` and targets `[n]`.
    pub fn add(&mut self, loss: f32, logits: Tensor<2>, targets: Tensor<1, Int>) {
        let n = targets.dims()[0];
        let hits: i64 = logits
            .argmax(1)
            .reshape([n])
            .equal(targets)
            .int()
            .sum()
            .into_scalar();
        self.loss_sum += loss as f64 * n as f64;
        self.correct += hits;
        self.seen += n;
    }

    /// Mean loss so far.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.seen.max(1) as f64
    }

    /// Accuracy so far.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.seen.max(1) as f64
    }

    /// Samples per second so far.
    pub fn samples_per_sec(&self) -> f64 {
        self.seen as f64 / self.start.elapsed().as_secs_f64()
    }

    /// Seconds since the epoch started.
    pub fn secs(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// The epoch's metrics, with `eval` as its validation result and `train_secs` as the
    /// training time (taken before evaluating); reads the resident memory now.
    pub fn metrics(
        &self,
        epoch: usize,
        lr: f64,
        train_secs: f64,
        eval: &EvalReport,
    ) -> EpochMetrics {
        EpochMetrics {
            epoch,
            train_loss: self.loss(),
            train_accuracy: self.accuracy(),
            val_loss: eval.loss,
            val_accuracy: eval.accuracy,
            lr,
            samples_per_sec: self.seen as f64 / train_secs,
            train_secs,
            rss_mib: resident_memory().map_or(0.0, |m| m.current_mib),
            val_samples_per_sec: eval.samples_per_sec,
        }
    }
}

/// Builds an [`EvalReport`] batch by batch: cross-entropy, confusion matrix, throughput.
#[derive(Debug)]
pub struct EvalAccumulator {
    ce: CrossEntropyLoss,
    confusion: ConfusionMatrix,
    loss_sum: f64,
    start: Instant,
}

impl EvalAccumulator {
    /// An empty evaluation over `classes` classes, starting its clock.
    pub fn new(classes: usize, device: &Device) -> Self {
        Self {
            ce: CrossEntropyLossConfig::new().init(device),
            confusion: ConfusionMatrix::new(classes),
            loss_sum: 0.0,
            start: Instant::now(),
        }
    }

    /// Records a batch of logits `[n, classes]` against targets `[n]`.
    pub fn add(&mut self, logits: Tensor<2>, targets: Tensor<1, Int>) {
        let n = targets.dims()[0];
        let loss: f32 = self
            .ce
            .forward(logits.clone(), targets.clone())
            .into_scalar();
        self.loss_sum += loss as f64 * n as f64;
        self.confusion
            .add(&ints(targets), &ints(logits.argmax(1).reshape([n])));
    }

    /// The report, with the classes' names.
    pub fn finish(self, class_names: Vec<String>) -> EvalReport {
        let total = self.confusion.total();
        EvalReport {
            loss: self.loss_sum / total.max(1) as f64,
            accuracy: self.confusion.accuracy(),
            per_class_accuracy: self.confusion.per_class_accuracy(),
            class_names,
            samples_per_sec: total as f64 / self.start.elapsed().as_secs_f64(),
            confusion: self.confusion,
        }
    }
}

fn ints(t: Tensor<1, Int>) -> Vec<i64> {
    t.into_data()
        .convert::<i64>()
        .try_to_vec::<i64>()
        .expect("converted to i64")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_matrix_accuracies() {
        let mut m = ConfusionMatrix::new(3);
        m.add(&[0, 0, 1, 2, 2, 2], &[0, 1, 1, 2, 2, 0]);
        assert_eq!(m.total(), 6);
        assert_eq!(m.correct(), 4);
        assert!((m.accuracy() - 4.0 / 6.0).abs() < 1e-12);
        assert_eq!(m.per_class_accuracy(), vec![0.5, 1.0, 2.0 / 3.0]);
        assert_eq!(m.counts[2][0], 1);
    }

    #[test]
    fn tally_and_accumulator_count_like_by_hand() {
        use burn::tensor::TensorData;
        let device = Device::flex();
        let logits = Tensor::<2>::from_data(
            TensorData::new(vec![2.0f32, 0.0, 0.0, 1.0, 3.0, 0.0], [3, 2]),
            &device,
        );
        let targets = Tensor::<1, Int>::from_data(TensorData::new(vec![0i64, 1, 1], [3]), &device);
        let mut tally = EpochTally::start();
        tally.add(0.5, logits.clone(), targets.clone());
        tally.add(1.0, logits.clone(), targets.clone());
        assert!((tally.loss() - 0.75).abs() < 1e-12);
        assert!((tally.accuracy() - 2.0 / 3.0).abs() < 1e-12);
        let mut eval = EvalAccumulator::new(2, &device);
        eval.add(logits, targets);
        let report = eval.finish(vec!["a".into(), "b".into()]);
        assert_eq!(report.confusion.counts, vec![vec![1, 0], vec![1, 1]]);
        assert_eq!(report.per_class_accuracy, vec![1.0, 0.5]);
        // Mean of -log softmax of the target logit over the three rows.
        let lse = |a: f64, b: f64| (a.exp() + b.exp()).ln();
        let expected =
            ((lse(2.0, 0.0) - 2.0) + (lse(0.0, 1.0) - 1.0) + (lse(3.0, 0.0) - 0.0)) / 3.0;
        assert!((report.loss - expected).abs() < 1e-5, "{}", report.loss);
    }

    #[test]
    fn csv_has_a_header_and_one_row_per_epoch() {
        let m = EpochMetrics {
            epoch: 1,
            train_loss: 0.5,
            train_accuracy: 0.8,
            val_loss: 0.4,
            val_accuracy: 0.85,
            lr: 1e-3,
            samples_per_sec: 1000.0,
            train_secs: 60.0,
            rss_mib: 512.25,
            val_samples_per_sec: 2000.0,
        };
        let csv = metrics_csv(&[m.clone(), EpochMetrics { epoch: 2, ..m }]);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[1],
            "1,0.500000,0.800000,0.400000,0.850000,1.000000e-3,1000.0,60.00,512.2"
        );
    }
}
