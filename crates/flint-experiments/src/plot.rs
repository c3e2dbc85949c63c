//! Line plots with error bars (accuracy against size, rate, steps, samples), as PNG bytes
//! (written atomically by the caller).

use plotters::prelude::*;

use crate::error::ExperimentError;
use crate::stats::MeanStd;

/// One line of a plot: a value (mean ± std of fractions) per x.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Line colour.
    pub color: (u8, u8, u8),
    /// Dashed instead of solid.
    pub dashed: bool,
    /// `(x, value)` points; values are fractions, drawn as percentages.
    pub points: Vec<(f64, MeanStd)>,
}

/// Where a plot's legend goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Legend {
    /// Top left corner.
    UpperLeft,
    /// Top right corner.
    UpperRight,
    /// Bottom left corner.
    LowerLeft,
    /// Bottom right corner.
    LowerRight,
}

impl Legend {
    fn position(self) -> SeriesLabelPosition {
        match self {
            Legend::UpperLeft => SeriesLabelPosition::UpperLeft,
            Legend::UpperRight => SeriesLabelPosition::UpperRight,
            Legend::LowerLeft => SeriesLabelPosition::LowerLeft,
            Legend::LowerRight => SeriesLabelPosition::LowerRight,
        }
    }
}

/// The axes and look of a plot.
#[derive(Debug, Clone)]
pub struct PlotSpec<'a> {
    /// Caption.
    pub title: &'a str,
    /// X axis description.
    pub x_desc: &'a str,
    /// Y axis description.
    pub y_desc: &'a str,
    /// Logarithmic x axis (x values must then be positive).
    pub log_x: bool,
    /// X tick positions on a logarithmic axis (`None`, and on a linear axis: plotters chooses).
    pub x_ticks: Option<Vec<f64>>,
    /// Draw y values times 100 (fractions shown as percentages), clamped to 0..100.
    pub percent: bool,
    /// A marker at every point, with its ±1 std error bar (off for long curves).
    pub markers: bool,
    /// Where the legend goes.
    pub legend: Legend,
    /// Image size in pixels.
    pub size: (u32, u32),
}

/// Draws `series` against a logarithmic x axis with ticks at `xs`, each point with a ±1 std
/// error bar (series are shifted slightly sideways so the bars do not hide each other), and
/// returns the PNG.
pub fn accuracy_plot_png(
    title: &str,
    x_desc: &str,
    xs: &[f64],
    series: &[Series],
    size: (u32, u32),
) -> Result<Vec<u8>, ExperimentError> {
    if xs.is_empty() {
        return Err(ExperimentError::Plot("no x values".into()));
    }
    line_plot_png(
        &PlotSpec {
            title,
            x_desc,
            y_desc: "test accuracy (%)",
            log_x: true,
            x_ticks: Some(xs.to_vec()),
            percent: true,
            markers: true,
            legend: Legend::LowerRight,
            size,
        },
        series,
    )
}

/// Draws `series` as lines as `spec` says and returns the PNG.
pub fn line_plot_png(spec: &PlotSpec<'_>, series: &[Series]) -> Result<Vec<u8>, ExperimentError> {
    let err = |e: String| ExperimentError::Plot(e);
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|(x, _)| *x))
        .chain(spec.x_ticks.iter().flatten().copied())
        .collect();
    if xs.is_empty()
        || xs
            .iter()
            .any(|x| !x.is_finite() || (spec.log_x && *x <= 0.0))
    {
        return Err(err(format!(
            "x values must be finite{}, got {xs:?}",
            if spec.log_x { " and positive" } else { "" }
        )));
    }
    let scale = if spec.percent { 100.0 } else { 1.0 };
    let (width, height) = spec.size;
    let font = flint_train::report::plot_font();
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let lo = xs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let (x_lo, x_hi) = if spec.log_x {
            (lo / 1.35, hi * 1.35)
        } else {
            let pad = ((hi - lo) * 0.04).max(1e-9);
            (lo - pad, hi + pad)
        };
        let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (_, v) in series.iter().flat_map(|s| &s.points) {
            let std = if spec.markers { v.std } else { 0.0 };
            y_lo = y_lo.min((v.mean - std) * scale);
            y_hi = y_hi.max((v.mean + std) * scale);
        }
        if !(y_lo.is_finite() && y_hi.is_finite()) {
            (y_lo, y_hi) = (0.0, scale);
        }
        let pad = ((y_hi - y_lo) * 0.08).max(0.005 * scale);
        let (mut y_lo, mut y_hi) = (y_lo - pad, y_hi + pad);
        if spec.percent {
            (y_lo, y_hi) = (y_lo.max(0.0), y_hi.min(100.0));
        }

        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60);
        if let Some(f) = font {
            builder.caption(spec.title, (f, 22));
        }
        let x_range: Box<dyn Fn(f64, f64) -> f64> = if spec.log_x {
            Box::new(|x: f64, k: f64| x * k)
        } else {
            Box::new(|x: f64, k: f64| x + (k - 1.0) * (x_hi - x_lo) * 0.5)
        };
        macro_rules! draw {
            ($chart:expr) => {{
                let mut chart = $chart.map_err(|e| err(e.to_string()))?;
                let mut mesh = chart.configure_mesh();
                mesh.x_desc(spec.x_desc).y_desc(spec.y_desc);
                let format_x = |x: &f64| {
                    if x.fract() == 0.0 {
                        format!("{x:.0}")
                    } else {
                        format!("{x}")
                    }
                };
                mesh.x_label_formatter(&format_x);
                if let Some(f) = font {
                    mesh.label_style((f, 15)).axis_desc_style((f, 17));
                } else {
                    mesh.disable_x_axis().disable_y_axis();
                }
                mesh.draw().map_err(|e| err(e.to_string()))?;
                let k = series.len() as f64;
                for (i, s) in series.iter().enumerate() {
                    let color = RGBColor(s.color.0, s.color.1, s.color.2);
                    // Shift series sideways a little so error bars do not hide each other.
                    let shift = if spec.markers {
                        1.0 + 0.012 * (i as f64 - (k - 1.0) / 2.0)
                    } else {
                        1.0
                    };
                    let points: Vec<(f64, f64)> = s
                        .points
                        .iter()
                        .map(|(x, v)| (x_range(*x, shift), v.mean * scale))
                        .collect();
                    let style = color.stroke_width(2);
                    let drawn = if s.dashed {
                        chart.draw_series(DashedLineSeries::new(points.clone(), 8, 5, style))
                    } else {
                        chart.draw_series(LineSeries::new(points.clone(), style))
                    }
                    .map_err(|e| err(e.to_string()))?;
                    if font.is_some() {
                        let dashed = s.dashed;
                        drawn.label(&s.label).legend(move |(x, y)| {
                            let end = if dashed { x + 8 } else { x + 20 };
                            PathElement::new(vec![(x, y), (end, y)], color.stroke_width(2))
                        });
                    }
                    if !spec.markers {
                        continue;
                    }
                    // Error bars: a vertical line with caps, and a marker at the mean.
                    for (x, v) in &s.points {
                        let x = x_range(*x, shift);
                        let (lo, hi) = ((v.mean - v.std) * scale, (v.mean + v.std) * scale);
                        let (left, right) = (x_range(x, 1.0 / 1.008), x_range(x, 1.008));
                        let bars = [
                            vec![(x, lo), (x, hi)],
                            vec![(left, lo), (right, lo)],
                            vec![(left, hi), (right, hi)],
                        ];
                        chart
                            .draw_series(
                                bars.into_iter()
                                    .map(|b| PathElement::new(b, color.stroke_width(1))),
                            )
                            .map_err(|e| err(e.to_string()))?;
                        chart
                            .draw_series(std::iter::once(Circle::new(
                                (x, v.mean * scale),
                                4,
                                color.filled(),
                            )))
                            .map_err(|e| err(e.to_string()))?;
                    }
                }
                if let Some(f) = font {
                    chart
                        .configure_series_labels()
                        .position(spec.legend.position())
                        .label_font((f, 15))
                        .background_style(WHITE.mix(0.85))
                        .border_style(BLACK)
                        .draw()
                        .map_err(|e| err(e.to_string()))?;
                }
            }};
        }
        match (&spec.x_ticks, spec.log_x) {
            (Some(ticks), true) => draw!(builder.build_cartesian_2d(
                (x_lo..x_hi).log_scale().with_key_points(ticks.clone()),
                y_lo..y_hi
            )),
            (None, true) => draw!(builder.build_cartesian_2d((x_lo..x_hi).log_scale(), y_lo..y_hi)),
            (_, false) => draw!(builder.build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)),
        }
        root.present().map_err(|e| err(e.to_string()))?;
    }
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &buffer,
        width,
        height,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| err(e.to_string()))?;
    Ok(png)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_error_bars() {
        let v = |m: f64, s: f64| MeanStd {
            n: 3,
            mean: m,
            std: s,
            min: m - s,
            max: m + s,
        };
        let series = vec![
            Series {
                label: "a".into(),
                color: (200, 0, 0),
                dashed: false,
                points: vec![(10.0, v(0.6, 0.02)), (50.0, v(0.7, 0.01))],
            },
            Series {
                label: "b".into(),
                color: (0, 0, 200),
                dashed: true,
                points: vec![(10.0, v(0.8, 0.0)), (50.0, v(0.85, 0.01))],
            },
        ];
        let png = accuracy_plot_png("t", "N", &[10.0, 50.0], &series, (400, 300)).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (400, 300));
        assert!(accuracy_plot_png("t", "N", &[], &series, (400, 300)).is_err());
        let linear = PlotSpec {
            title: "t",
            x_desc: "p",
            y_desc: "NLL",
            log_x: false,
            x_ticks: None,
            percent: false,
            markers: false,
            legend: Legend::UpperRight,
            size: (300, 200),
        };
        let png = line_plot_png(&linear, &series).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let bad = vec![Series {
            points: vec![(f64::NAN, v(0.1, 0.0))],
            ..series[0].clone()
        }];
        assert!(line_plot_png(&linear, &bad).is_err());
    }
}
