//! Samples → percentiles, medians of repeats, and the report.

use std::time::Duration;

use serde::Serialize;

/// Percentile `p` (0–100) of sorted samples, in microseconds.
pub fn percentile_us(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)].as_secs_f64() * 1e6
}

/// The median of some numbers (NaN-free input expected).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

/// One measurement of one case.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub p50_us: f64,
    pub p99_us: f64,
    /// Operations per second (0 where the case measures latency only).
    pub rate: f64,
}

impl Sample {
    pub fn latency(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        let rate = samples.len() as f64 / total.as_secs_f64().max(1e-9);
        Self {
            p50_us: percentile_us(&samples, 50.0),
            p99_us: percentile_us(&samples, 99.0),
            rate,
        }
    }
}

/// A row of the final table: the median over repeats of one case.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub group: String,
    pub case: String,
    pub system: String,
    pub repeats: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub rate_per_s: f64,
    /// The case this row is compared with, and Switchboard / that.
    pub baseline: Option<String>,
    pub ratio: Option<f64>,
    pub ratio_of: Option<&'static str>,
}

impl Row {
    pub fn from_samples(group: &str, case: &str, system: &str, samples: &[Sample]) -> Self {
        let mut p50: Vec<f64> = samples.iter().map(|s| s.p50_us).collect();
        let mut p99: Vec<f64> = samples.iter().map(|s| s.p99_us).collect();
        let mut rate: Vec<f64> = samples.iter().map(|s| s.rate).collect();
        Self {
            group: group.into(),
            case: case.into(),
            system: system.into(),
            repeats: samples.len(),
            p50_us: median(&mut p50),
            p99_us: median(&mut p99),
            rate_per_s: median(&mut rate),
            baseline: None,
            ratio: None,
            ratio_of: None,
        }
    }
}

/// Prints the table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<10} {:<34} {:>9} {:>9} {:>12}  ratio (switchboard / baseline)",
        "group", "case", "p50 µs", "p99 µs", "rate /s"
    );
    for row in rows {
        let ratio = match (&row.baseline, row.ratio, row.ratio_of) {
            (Some(base), Some(ratio), Some(of)) => format!("{ratio:.2}× {of} of {base}"),
            _ => String::new(),
        };
        println!(
            "{:<10} {:<34} {:>9.1} {:>9.1} {:>12.0}  {}",
            row.group,
            format!("{} [{}]", row.case, row.system),
            row.p50_us,
            row.p99_us,
            row.rate_per_s,
            ratio
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_medians() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile_us(&samples, 50.0).round(), 51.0);
        assert_eq!(percentile_us(&samples, 99.0).round(), 99.0);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
