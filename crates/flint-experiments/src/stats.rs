//! Summaries of repeated runs.

use serde::{Deserialize, Serialize};

/// Mean, sample standard deviation (n - 1; 0 for a single value), minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeanStd {
    /// Number of values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (Bessel-corrected), 0 when `n < 2`.
    pub std: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
}

impl MeanStd {
    /// The summary of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n as f64;
        let std = if n < 2 {
            0.0
        } else {
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Some(Self {
            n,
            mean,
            std,
            min: values.iter().copied().fold(f64::INFINITY, f64::min),
            max: values.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        })
    }

    /// `mean ± std` of fractions as percentages with two decimals (`91.23 ± 0.45`).
    pub fn percent(&self) -> String {
        format!("{:.2} ± {:.2}", self.mean * 100.0, self.std * 100.0)
    }

    /// `mean ± std` of fractions as signed percentage points (`+3.10 ± 1.20`).
    pub fn points(&self) -> String {
        format!("{:+.2} ± {:.2}", self.mean * 100.0, self.std * 100.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std() {
        let s = MeanStd::of(&[0.80, 0.82, 0.84, 0.86, 0.88]).unwrap();
        assert_eq!(s.n, 5);
        assert!((s.mean - 0.84).abs() < 1e-12);
        // sqrt(sum of squared deviations / (n - 1)) = sqrt(0.004 / 4)
        assert!((s.std - 0.001f64.sqrt()).abs() < 1e-12, "{}", s.std);
        assert_eq!((s.min, s.max), (0.80, 0.88));
        assert_eq!(s.percent(), "84.00 ± 3.16");
        assert_eq!(s.points(), "+84.00 ± 3.16");
    }

    #[test]
    fn single_value_has_zero_std_and_none_is_none() {
        let s = MeanStd::of(&[0.5]).unwrap();
        assert_eq!((s.mean, s.std), (0.5, 0.0));
        assert_eq!(
            MeanStd::of(&[-0.01, -0.03]).unwrap().points(),
            "-2.00 ± 1.41"
        );
        assert!(MeanStd::of(&[]).is_none());
    }
}
