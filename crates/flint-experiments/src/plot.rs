//! Accuracy-versus-size plots with error bars, as PNG bytes (written atomically by the caller).

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

/// Draws `series` against a logarithmic x axis with ticks at `xs`, each point with a ±1 std
/// error bar (series are shifted slightly sideways so the bars do not hide each other), and
/// returns the PNG.
pub fn accuracy_plot_png(
    title: &str,
    x_desc: &str,
    xs: &[f64],
    series: &[Series],
    (width, height): (u32, u32),
) -> Result<Vec<u8>, ExperimentError> {
    let err = |e: String| ExperimentError::Plot(e);
    if xs.is_empty() || xs.iter().any(|&x| !(x > 0.0 && x.is_finite())) {
        return Err(err(format!("x values must be positive, got {xs:?}")));
    }
    let font = flint_train::report::plot_font();
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
        let x_lo = xs.iter().copied().fold(f64::INFINITY, f64::min) / 1.35;
        let x_hi = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max) * 1.35;
        let (mut y_lo, mut y_hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for (_, v) in series.iter().flat_map(|s| &s.points) {
            y_lo = y_lo.min((v.mean - v.std) * 100.0);
            y_hi = y_hi.max((v.mean + v.std) * 100.0);
        }
        if !(y_lo.is_finite() && y_hi.is_finite()) {
            (y_lo, y_hi) = (0.0, 100.0);
        }
        let pad = ((y_hi - y_lo) * 0.08).max(0.5);
        let (y_lo, y_hi) = ((y_lo - pad).max(0.0), (y_hi + pad).min(100.0));

        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(20)
            .x_label_area_size(45)
            .y_label_area_size(60);
        if let Some(f) = font {
            builder.caption(title, (f, 22));
        }
        let mut chart = builder
            .build_cartesian_2d(
                (x_lo..x_hi).log_scale().with_key_points(xs.to_vec()),
                y_lo..y_hi,
            )
            .map_err(|e| err(e.to_string()))?;
        let mut mesh = chart.configure_mesh();
        mesh.x_desc(x_desc)
            .y_desc("test accuracy (%)")
            .x_label_formatter(&|x| format!("{x:.0}"));
        if let Some(f) = font {
            mesh.label_style((f, 15)).axis_desc_style((f, 17));
        } else {
            mesh.disable_x_axis().disable_y_axis();
        }
        mesh.draw().map_err(|e| err(e.to_string()))?;

        let k = series.len() as f64;
        for (i, s) in series.iter().enumerate() {
            let color = RGBColor(s.color.0, s.color.1, s.color.2);
            let shift = 1.0 + 0.012 * (i as f64 - (k - 1.0) / 2.0);
            let points: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|(x, v)| (x * shift, v.mean * 100.0))
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
                    if dashed {
                        PathElement::new(vec![(x, y), (x + 8, y)], color.stroke_width(2))
                    } else {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    }
                });
            }
            // Error bars: a vertical line with caps, and a marker at the mean.
            for (x, v) in &s.points {
                let x = x * shift;
                let (lo, hi) = ((v.mean - v.std) * 100.0, (v.mean + v.std) * 100.0);
                let cap = 1.008;
                let bars = [
                    vec![(x, lo), (x, hi)],
                    vec![(x / cap, lo), (x * cap, lo)],
                    vec![(x / cap, hi), (x * cap, hi)],
                ];
                chart
                    .draw_series(
                        bars.into_iter()
                            .map(|b| PathElement::new(b, color.stroke_width(1))),
                    )
                    .map_err(|e| err(e.to_string()))?;
                chart
                    .draw_series(std::iter::once(Circle::new(
                        (x, v.mean * 100.0),
                        4,
                        color.filled(),
                    )))
                    .map_err(|e| err(e.to_string()))?;
            }
        }
        if let Some(f) = font {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .label_font((f, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(|e| err(e.to_string()))?;
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
    }
}
