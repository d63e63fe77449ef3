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

/// One measurement of one case. Latencies are NaN for cases that measure
/// only a rate.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub p50_us: f64,
    pub p99_us: f64,
    /// Operations per second (0 where the case measures latency only).
    pub rate: f64,
}

impl Sample {
    /// A rate-only sample.
    pub fn rate(rate: f64) -> Self {
        Self { p50_us: f64::NAN, p99_us: f64::NAN, rate }
    }

    pub fn latency(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let total: Duration = samples.iter().sum();
        let rate = samples.len() as f64 / total.as_secs_f64().max(1e-9);
        Self { p50_us: percentile_us(&samples, 50.0), p99_us: percentile_us(&samples, 99.0), rate }
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
    /// Messages published but not received, in percent (pub/sub).
    pub lost_pct: Option<f64>,
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
            lost_pct: None,
        }
    }
}

/// Rows measuring a peer (ratio reads switchboard ÷ peer).
#[allow(non_snake_case)]
fn PEER_ROW(system: &str) -> bool {
    ["nats", "dbus", "zeromq", "rabbitmq"].iter().any(|peer| system.starts_with(peer))
}

/// Prints the table.
pub fn print_table(rows: &[Row]) {
    println!(
        "{:<8} {:<44} {:>9} {:>9} {:>12}  ratio (switchboard / baseline), loss",
        "group", "case", "p50 µs", "p99 µs", "rate /s"
    );
    for row in rows {
        let ratio = match (&row.baseline, row.ratio, row.ratio_of, row.lost_pct) {
            (Some(base), Some(ratio), Some(of), lost) if PEER_ROW(&row.system) => {
                let lost = lost.map(|l| format!(", lost {l:.2} %")).unwrap_or_default();
                format!("switchboard = {ratio:.2}× {base} ({of}){lost}")
            }
            (Some(base), Some(ratio), Some(of), _) => format!("{ratio:.2}× {of} of {base}"),
            (_, _, _, Some(lost)) => format!("lost {lost:.2} %"),
            _ => String::new(),
        };
        let us = |v: f64| {
            if v.is_finite() {
                format!("{v:.1}")
            } else {
                "-".to_owned()
            }
        };
        println!(
            "{:<8} {:<44} {:>9} {:>9} {:>12.0}  {}",
            row.group,
            format!("{} [{}]", row.case, row.system),
            us(row.p50_us),
            us(row.p99_us),
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
