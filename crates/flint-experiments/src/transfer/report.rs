//! The T2 experiment's results: the summary over seeds, its tables, the plot and
//! `results.md`.

use std::fmt::Write as _;

use super::*;

/// Mean ± std per method and `N`, and the paired gain over scratch.
pub fn summarize(config: &TransferExperimentConfig, runs: &[RunResult]) -> Vec<Summary> {
    let mut out = Vec::new();
    for method in Method::ALL {
        let key = method.key();
        let scratch_key = Method::new(Approach::Scratch, method.dropout).key();
        for &shots in &config.shots {
            let cell: Vec<&RunResult> = runs
                .iter()
                .filter(|r| r.method == key && r.shots == shots)
                .collect();
            let values: Vec<f64> = cell.iter().map(|r| r.test_accuracy).collect();
            let Some(accuracy) = MeanStd::of(&values) else {
                continue;
            };
            let gains: Vec<f64> = cell
                .iter()
                .filter_map(|r| {
                    runs.iter()
                        .find(|s| s.method == scratch_key && s.shots == shots && s.seed == r.seed)
                        .map(|s| r.test_accuracy - s.test_accuracy)
                })
                .collect();
            out.push(Summary {
                method: key.clone(),
                shots,
                accuracy,
                gain_over_scratch: if method.approach == Approach::Scratch {
                    None
                } else {
                    MeanStd::of(&gains)
                },
            });
        }
    }
    out
}

fn cell(summary: &[Summary], method: Method, shots: usize) -> Option<&Summary> {
    summary
        .iter()
        .find(|s| s.method == method.key() && s.shots == shots)
}

/// The main table: one row per method, one column per `N`, `mean ± std` test accuracy in %.
pub fn accuracy_table(config: &TransferExperimentConfig, summary: &[Summary]) -> String {
    let mut md = String::from("| method |");
    for n in &config.shots {
        let _ = write!(md, " N = {n} |");
    }
    md.push_str("\n| --- |");
    md.push_str(&" ---: |".repeat(config.shots.len()));
    md.push('\n');
    for method in Method::ALL {
        let _ = write!(md, "| {} |", method.label(config.head_dropout));
        for &n in &config.shots {
            match cell(summary, method, n) {
                Some(s) => {
                    let _ = write!(md, " {} |", s.accuracy.percent());
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

/// Gains over scratch (same seed, shots and head), in percentage points.
pub fn gain_table(config: &TransferExperimentConfig, summary: &[Summary]) -> String {
    let mut md = String::from("| method | vs |");
    for n in &config.shots {
        let _ = write!(md, " N = {n} |");
    }
    md.push_str("\n| --- | --- |");
    md.push_str(&" ---: |".repeat(config.shots.len()));
    md.push('\n');
    for method in Method::ALL
        .into_iter()
        .filter(|m| m.approach != Approach::Scratch)
    {
        let base = Method::new(Approach::Scratch, method.dropout);
        let _ = write!(
            md,
            "| {} | {} |",
            method.label(config.head_dropout),
            base.label(config.head_dropout)
        );
        for &n in &config.shots {
            match cell(summary, method, n).and_then(|s| s.gain_over_scratch) {
                Some(g) => {
                    let _ = write!(md, " {} |", g.points());
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

/// Per-class test accuracy (mean over seeds, %) for one `N`: a row per method, a column per
/// target class.
pub fn per_class_table(runs: &[RunResult], shots: usize, classes: &[String], rate: f64) -> String {
    let mut md = String::from("| method |");
    for c in classes {
        let _ = write!(md, " {c} |");
    }
    md.push_str("\n| --- |");
    md.push_str(&" ---: |".repeat(classes.len()));
    md.push('\n');
    for method in Method::ALL {
        let cell: Vec<&RunResult> = runs
            .iter()
            .filter(|r| r.method == method.key() && r.shots == shots)
            .collect();
        if cell.is_empty() {
            continue;
        }
        let _ = write!(md, "| {} |", method.label(rate));
        for k in 0..classes.len() {
            let values: Vec<f64> = cell
                .iter()
                .filter_map(|r| r.per_class_accuracy.get(k).copied())
                .collect();
            match MeanStd::of(&values) {
                Some(s) => {
                    let _ = write!(md, " {:.1} |", s.mean * 100.0);
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
    }
    md
}

pub(super) fn plot(results: &TransferResults) -> Result<Vec<u8>, ExperimentError> {
    let config = &results.config;
    let series: Vec<Series> = Method::ALL
        .into_iter()
        .map(|m| Series {
            label: m.label(config.head_dropout),
            color: m.color(),
            dashed: m.dropout,
            points: config
                .shots
                .iter()
                .filter_map(|&n| cell(&results.summary, m, n).map(|s| (n as f64, s.accuracy)))
                .collect(),
        })
        .collect();
    let xs: Vec<f64> = config.shots.iter().map(|&n| n as f64).collect();
    accuracy_plot_png(
        &format!(
            "Fashion-MNIST 0-4 -> 5-9: target test accuracy (mean ± std, {} seed{})",
            config.seeds,
            if config.seeds == 1 { "" } else { "s" }
        ),
        "labelled target images per class (N)",
        &xs,
        &series,
        (1000, 650),
    )
}

pub(super) fn markdown(results: &TransferResults, data: &Data) -> String {
    let c = &results.config;
    let mut md = String::new();
    let _ = writeln!(md, "# Transfer learning on Fashion-MNIST (protocol T2)\n");
    let names = |set: &ImageSet| set.class_names().join(", ");
    let _ = writeln!(
        md,
        "Source task: classes {:?} ({}), {} training images. Target task: classes {:?} ({}), \
         N labelled training images per class; test: the {} test images of the target classes. \
         Test accuracy (%) of the model after the last epoch, mean ± sample std over {} seed(s).\n",
        c.source_classes,
        names(&data.source_train),
        data.source_train.len(),
        c.target_classes,
        names(&data.target_test),
        data.target_test.len(),
        c.seeds
    );
    let _ = writeln!(md, "{}", accuracy_table(c, &results.summary));
    let _ = writeln!(md, "![test accuracy against N](transfer.png)\n");
    let _ = writeln!(
        md,
        "## Gain over training from scratch\n\nPercentage points, paired by seed (same shots, \
         same head initialisation and batch order), mean ± std:\n"
    );
    let _ = writeln!(md, "{}", gain_table(c, &results.summary));

    let _ = writeln!(
        md,
        "## Per-class test accuracy\n\nMean over the seeds, %, the model after the last epoch.\n"
    );
    for &n in &c.shots {
        let _ = writeln!(
            md,
            "N = {n}:\n\n{}",
            per_class_table(
                &results.runs,
                n,
                data.target_test.class_names(),
                c.head_dropout
            )
        );
    }

    let accs: Vec<f64> = results.source.iter().map(|s| s.test_accuracy).collect();
    let _ = writeln!(md, "## Source models\n");
    if let Some(s) = MeanStd::of(&accs) {
        let _ = writeln!(
            md,
            "{} source model(s) ({}): accuracy on the {} source-class test images {} % \
             (per seed: {}); {:.0} s of training each on average.\n",
            results.source.len(),
            if c.shared_source {
                "one shared by all seeds"
            } else {
                "one per seed"
            },
            data.source_test.len(),
            s.percent(),
            results
                .source
                .iter()
                .map(|s| format!("seed {} {:.2}", s.seed, s.test_accuracy * 100.0))
                .collect::<Vec<_>>()
                .join(", "),
            results.source.iter().map(|s| s.wall_secs).sum::<f64>() / results.source.len() as f64
        );
    }

    let o = &c.optimizer;
    let _ = writeln!(md, "## Setup\n");
    let lines = [
        format!(
            "Network: the reference CNN of reference.md (conv 32 + BN, conv 64 + BN, Linear 3136→128 + ReLU), \
             then the head: Linear(128, {}) or Dropout({}) → Linear(128, {}). The CNN's own dropout \
             before its classifier is the head's dropout, so \"from scratch + dropout\" is the reference CNN.",
            c.target_classes.len(),
            c.head_dropout,
            c.target_classes.len()
        ),
        "Inputs: pixels / 255, no normalisation (as `flint train`); no augmentation.".to_string(),
        format!(
            "Source model: {} epochs on {} images of the source classes, batch {}, \
             head Dropout({}) → Linear(128, {}), all parameters at the same rate; {}. \
             The target runs start from its last epoch's weights, loaded from disk for every run.",
            c.source_epochs,
            data.source_train.len(),
            c.source_batch_size,
            c.head_dropout,
            c.source_classes.len(),
            if c.shared_source {
                "one model shared by all seeds"
            } else {
                "one model per seed (trained with that seed)"
            }
        ),
        format!(
            "Target runs: {} epochs, batch {}, for every method and N. Optimiser {:?}, lr {} \
             (betas {}/{}, eps {:e}, weight decay {}), constant rate. From scratch: all parameters \
             at lr. Frozen backbone: features of the source network computed once (cached), only \
             the head trains. Full fine-tuning: head at lr, backbone at {} × lr; its batch norms \
             train (batch statistics, running averages updated).",
            c.target_epochs,
            c.target_batch_size,
            o.kind,
            o.lr,
            o.beta1,
            o.beta2,
            o.eps,
            o.weight_decay,
            c.backbone_lr_factor
        ),
        "Shots: for each seed, N images per class drawn from the target classes' training \
         images (the N = 10 set is inside the N = 50 set, inside N = 100). Every method sees \
         the same shots, head initialisation and batch order for a given seed and N."
            .to_string(),
        format!(
            "Evaluation: the model after the last epoch on the {} target test images. No epoch is \
             selected: choosing the best epoch on the test set would be biased. The per-epoch \
             validation in each run's report.md is a monitor set of {} training images per class \
             outside the shots, and influences nothing (the `best` checkpoints are not used{}).",
            data.target_test.len(),
            c.monitor_per_class,
            if c.keep_checkpoints {
                ""
            } else {
                "; the target runs' checkpoints are deleted after the evaluation"
            }
        ),
        format!(
            "Seeds {}..{}; {} target runs.",
            c.first_seed,
            c.first_seed + c.seeds as u64 - 1,
            results.runs.len()
        ),
    ];
    for line in lines {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(
        md,
        "\n## Wall time\n\n{:.0} s for this invocation; {:.0} s of recorded run time in all \
         (source models {:.0} s, target runs {:.0} s).\n",
        results.wall_secs,
        results.compute_secs,
        results.source.iter().map(|s| s.wall_secs).sum::<f64>(),
        results.runs.iter().map(|r| r.wall_secs).sum::<f64>()
    );
    let _ = writeln!(
        md,
        "| method | mean s per run, {} |\n| --- | --- |",
        c.shots
            .iter()
            .map(|n| format!("N = {n}"))
            .collect::<Vec<_>>()
            .join(" / ")
    );
    for method in Method::ALL {
        let times: Vec<String> = c
            .shots
            .iter()
            .map(|&n| {
                let t: Vec<f64> = results
                    .runs
                    .iter()
                    .filter(|r| r.method == method.key() && r.shots == n)
                    .map(|r| r.wall_secs)
                    .collect();
                MeanStd::of(&t).map_or("–".into(), |s| format!("{:.1}", s.mean))
            })
            .collect();
        let _ = writeln!(
            md,
            "| {} | {} |",
            method.label(c.head_dropout),
            times.join(" / ")
        );
    }
    let _ = writeln!(
        md,
        "\nRaw results: `results.json`; configuration: `experiment.json`; each run's directory \
         has its report, metrics and checkpoints."
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(method: Method, shots: usize, seed: u64, acc: f64) -> RunResult {
        RunResult {
            method: method.key(),
            approach: method.approach,
            head_dropout: if method.dropout { 0.5 } else { 0.0 },
            shots,
            seed,
            source_seed: Some(seed),
            test_accuracy: acc,
            test_loss: 0.0,
            test_images: 5000,
            per_class_accuracy: vec![],
            final_train_accuracy: 1.0,
            final_monitor_accuracy: acc,
            wall_secs: 1.0,
            run_dir: String::new(),
        }
    }

    #[test]
    fn method_keys_are_unique_and_stable() {
        let keys: Vec<String> = Method::ALL.iter().map(|m| m.key()).collect();
        assert_eq!(
            keys,
            [
                "scratch",
                "scratch-dropout",
                "frozen",
                "frozen-dropout",
                "finetune",
                "finetune-dropout"
            ]
        );
        assert_eq!(Method::ALL[5].label(0.5), "full fine-tuning + dropout 0.5");
    }

    #[test]
    fn summary_and_tables() {
        let config = TransferExperimentConfig::new().with_shots(vec![10, 50]);
        let mut runs = Vec::new();
        for (i, m) in Method::ALL.into_iter().enumerate() {
            for seed in 0..2 {
                for n in [10, 50] {
                    // Scratch 0.60/0.62 (+0.1 at N=50); the others i * 0.01 higher, +0.02 at seed 1.
                    let acc = 0.6
                        + 0.02 * seed as f64
                        + if n == 50 { 0.1 } else { 0.0 }
                        + if m.approach == Approach::Scratch {
                            0.0
                        } else {
                            i as f64 * 0.01
                        };
                    runs.push(run(m, n, seed, acc));
                }
            }
        }
        let summary = summarize(&config, &runs);
        assert_eq!(summary.len(), 12);
        let s = cell(&summary, Method::ALL[4], 50).unwrap();
        assert!((s.accuracy.mean - 0.75).abs() < 1e-12);
        let g = s.gain_over_scratch.unwrap();
        assert!(
            (g.mean - 0.04).abs() < 1e-12 && g.std.abs() < 1e-12,
            "{g:?}"
        );
        assert!(
            cell(&summary, Method::ALL[0], 10)
                .unwrap()
                .gain_over_scratch
                .is_none()
        );

        let table = accuracy_table(&config, &summary);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "| method | N = 10 | N = 50 |");
        assert_eq!(lines[1], "| --- | ---: | ---: |");
        assert_eq!(lines.len(), 2 + 6);
        assert_eq!(lines[2], "| from scratch | 61.00 ± 1.41 | 71.00 ± 1.41 |");
        assert_eq!(
            lines[7],
            "| full fine-tuning + dropout 0.5 | 66.00 ± 1.41 | 76.00 ± 1.41 |"
        );
        let gains = gain_table(&config, &summary);
        assert_eq!(gains.lines().count(), 2 + 4);
        assert!(
            gains.contains(
                "| frozen backbone (head only) | from scratch | +2.00 ± 0.00 | +2.00 ± 0.00 |"
            ),
            "{gains}"
        );
    }

    #[test]
    fn a_missing_cell_is_a_dash_and_configs_are_checked() {
        let config = TransferExperimentConfig::new().with_shots(vec![10, 50]);
        let summary = summarize(&config, &[run(Method::ALL[0], 10, 0, 0.5)]);
        let table = accuracy_table(&config, &summary);
        assert!(
            table.contains("| from scratch | 50.00 ± 0.00 | – |"),
            "{table}"
        );
        assert!(TransferExperimentConfig::new().validate().is_ok());
        assert!(TransferExperimentConfig::quick().validate().is_ok());
        let overlap = TransferExperimentConfig::new().with_target_classes(vec![4, 5]);
        assert!(
            overlap
                .validate()
                .unwrap_err()
                .to_string()
                .contains("overlap")
        );
        assert!(
            TransferExperimentConfig::new()
                .with_shots(vec![])
                .validate()
                .is_err()
        );
    }

    #[test]
    fn per_class_means() {
        let mut a = run(Method::ALL[2], 10, 0, 0.5);
        a.per_class_accuracy = vec![0.2, 0.8];
        let mut b = run(Method::ALL[2], 10, 1, 0.5);
        b.per_class_accuracy = vec![0.4, 0.6];
        let classes = vec!["Sandal".to_string(), "Shirt".to_string()];
        let table = per_class_table(&[a, b], 10, &classes, 0.5);
        assert_eq!(
            table,
            "| method | Sandal | Shirt |\n| --- | ---: | ---: |\n| frozen backbone (head only) | 30.0 | 70.0 |\n"
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = TransferExperimentConfig::quick();
        let json = serde_json::to_string(&c).unwrap();
        let back: TransferExperimentConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), json);
        assert_eq!(back.shots, vec![10]);
    }
}
