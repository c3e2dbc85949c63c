//! The run report (`report.md`) and the curves plot (`curves.png`).

use std::fmt::Write as _;
use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::config::TrainConfig;
use crate::error::TrainError;
use crate::metrics::{EpochMetrics, EvalReport};

/// `report.md` of a `flint train` run: the configuration, the per-epoch table, the test
/// result, per-class accuracy and the confusion matrix.
pub fn report_markdown(
    config: &TrainConfig,
    history: &[EpochMetrics],
    test: &EvalReport,
    eval_set: &str,
    wall_secs: f64,
    plot_written: bool,
) -> String {
    let mut md = String::new();
    let model = config.model.kind();
    let _ = writeln!(
        md,
        "# flint training report: {model} on {}\n",
        config.dataset
    );
    let o = &config.optimizer;
    let _ = writeln!(
        md,
        "- model: `{model}`; optimiser: {:?}, lr {}, weight decay {}; schedule: {:?} (warm-up {} epochs)",
        o.kind, o.lr, o.weight_decay, config.schedule.kind, config.schedule.warmup_epochs
    );
    if let Some(r) = &config.regularization {
        let _ = writeln!(md, "- regularisation: {}", r.describe());
    }
    let _ = writeln!(
        md,
        "- epochs: {} run of {}; batch size {}; seed {}",
        history.len(),
        config.epochs,
        config.batch_size,
        config.seed
    );
    let _ = writeln!(md, "- per-epoch evaluation set: {eval_set}");
    let _ = writeln!(md, "- wall time: {wall_secs:.1} s\n");
    let _ = writeln!(
        md,
        "## Result\n\n**test accuracy: {:.2} %** (loss {:.4}, {:.0} samples/s at batch 1000)\n",
        test.accuracy * 100.0,
        test.loss,
        test.samples_per_sec
    );
    if plot_written {
        let _ = writeln!(md, "![loss and accuracy curves](curves.png)\n");
    }
    let _ = writeln!(md, "## Epochs\n\n{}", epoch_table(history, eval_set));
    let _ = writeln!(
        md,
        "\n## Per-class test accuracy\n\n| class | accuracy |\n| --- | ---: |"
    );
    for (name, acc) in test.class_names.iter().zip(&test.per_class_accuracy) {
        let _ = writeln!(md, "| {name} | {:.2} % |", acc * 100.0);
    }
    let _ = writeln!(
        md,
        "\n## Confusion matrix (rows: true class, columns: predicted)\n"
    );
    let n = test.class_names.len();
    let _ = writeln!(
        md,
        "| | {} |\n|---|{}",
        (0..n)
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" | "),
        "---:|".repeat(n)
    );
    for (i, row) in test.confusion.counts.iter().enumerate() {
        let cells: Vec<String> = row.iter().map(|c| c.to_string()).collect();
        let _ = writeln!(
            md,
            "| {i} {} | {} |",
            test.class_names[i],
            cells.join(" | ")
        );
    }
    md
}

/// The per-epoch markdown table of a report (`eval_set` names the evaluation columns).
pub fn epoch_table(history: &[EpochMetrics], eval_set: &str) -> String {
    let mut md = format!(
        "| epoch | train loss | train acc | {eval_set} loss | {eval_set} acc | lr | img/s | s |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n"
    );
    for m in history {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.2} % | {:.4} | {:.2} % | {:.2e} | {:.0} | {:.1} |",
            m.epoch,
            m.train_loss,
            m.train_accuracy * 100.0,
            m.val_loss,
            m.val_accuracy * 100.0,
            m.lr,
            m.samples_per_sec,
            m.train_secs
        );
    }
    md
}

/// Registers a sans-serif system font for plots' text, once per process, and returns its family
/// name. `None` when the machine has none of the usual ones: plots are then drawn without text.
pub fn plot_font() -> Option<&'static str> {
    static FONT: OnceLock<Option<&'static str>> = OnceLock::new();
    *FONT.get_or_init(|| {
        const CANDIDATES: [&str; 5] = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
            "/System/Library/Fonts/Supplemental/Arial.ttf",
            "C:\\Windows\\Fonts\\arial.ttf",
        ];
        let bytes = CANDIDATES.iter().find_map(|p| std::fs::read(p).ok())?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
            .ok()
            .map(|_| "sans-serif")
    })
}

/// Draws loss and accuracy curves (train and evaluation set) into a PNG. Returns whether text
/// could be drawn (a system font was found).
pub fn plot_curves(
    path: &Path,
    history: &[EpochMetrics],
    eval_set: &str,
) -> Result<bool, TrainError> {
    let err = |e: String| TrainError::Report(format!("plot {}: {e}", path.display()));
    let font = plot_font();
    let tmp = path.with_extension("tmp.png");
    {
        let root = BitMapBackend::new(&tmp, (1200, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let (left, right) = root.split_horizontally(600);
        let epochs = history.len().max(1) as f64;
        type Pick = fn(&EpochMetrics) -> (f64, f64);
        let panels: [(&DrawingArea<_, _>, &str, Pick); 2] = [
            (&left, "loss", |m| (m.train_loss, m.val_loss)),
            (&right, "accuracy", |m| (m.train_accuracy, m.val_accuracy)),
        ];
        for (area, name, get) in panels {
            let values: Vec<(f64, f64)> = history.iter().map(get).collect();
            let lo = values
                .iter()
                .flat_map(|&(a, b)| [a, b])
                .fold(f64::INFINITY, f64::min);
            let hi = values
                .iter()
                .flat_map(|&(a, b)| [a, b])
                .fold(f64::NEG_INFINITY, f64::max);
            let pad = ((hi - lo) * 0.1).max(1e-3);
            let mut builder = ChartBuilder::on(area);
            builder
                .margin(20)
                .x_label_area_size(35)
                .y_label_area_size(55);
            if let Some(f) = font {
                builder.caption(name, (f, 22));
            }
            let mut chart = builder
                .build_cartesian_2d(0.5..epochs + 0.5, (lo - pad)..(hi + pad))
                .map_err(|e| err(e.to_string()))?;
            let mut mesh = chart.configure_mesh();
            mesh.x_desc("epoch");
            if font.is_none() {
                mesh.disable_x_axis().disable_y_axis();
            }
            mesh.draw().map_err(|e| err(e.to_string()))?;
            for (series, color, label) in [(0, BLUE, "train"), (1, RED, eval_set)] {
                let points = values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| ((i + 1) as f64, if series == 0 { v.0 } else { v.1 }));
                let drawn = chart
                    .draw_series(LineSeries::new(points, color.stroke_width(2)))
                    .map_err(|e| err(e.to_string()))?;
                if font.is_some() {
                    drawn.label(label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
            }
            if let Some(f) = font {
                chart
                    .configure_series_labels()
                    .label_font((f, 16))
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .draw()
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))?;
    Ok(font.is_some())
}
