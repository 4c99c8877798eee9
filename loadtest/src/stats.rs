//! Latency distributions: HDR histograms in microseconds, reported in milliseconds.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest value tracked: one hour, in microseconds (anything slower is clamped there).
const MAX_US: u64 = 3_600_000_000;

/// p50/p90/p95/p99/max of one measurement, in ms. All `None` fields mean no samples.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Distribution {
    pub count: u64,
    pub min: Option<f64>,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

/// Collects millisecond samples.
pub struct Recorder {
    hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            // 3 significant digits over 1 us..1 h: the bounds are valid constants, so the
            // constructor cannot fail.
            hist: Histogram::new_with_bounds(1, MAX_US, 3).expect("valid histogram bounds"),
        }
    }
}

impl Recorder {
    pub fn record_ms(&mut self, ms: f64) {
        if ms.is_finite() {
            let us = (ms.max(0.0) * 1000.0).round() as u64;
            self.hist.saturating_record(us.clamp(1, MAX_US));
        }
    }

    pub fn record_all(values: impl IntoIterator<Item = f64>) -> Self {
        let mut r = Recorder::default();
        for v in values {
            r.record_ms(v);
        }
        r
    }

    pub fn count(&self) -> u64 {
        self.hist.len()
    }

    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        (!self.hist.is_empty()).then(|| self.hist.value_at_quantile(q) as f64 / 1000.0)
    }

    pub fn distribution(&self) -> Distribution {
        let some = |v: f64| (!self.hist.is_empty()).then_some(v);
        let q = |q| self.quantile_ms(q).map(round1);
        Distribution {
            count: self.hist.len(),
            min: some(self.hist.min() as f64 / 1000.0).map(round1),
            mean: some(self.hist.mean() / 1000.0).map(round1),
            p50: q(0.5),
            p90: q(0.9),
            p95: q(0.95),
            p99: q(0.99),
            max: some(self.hist.max() as f64 / 1000.0).map(round1),
        }
    }

    /// (ms, fraction of samples at or below it) at every distinct recorded value: the CDF.
    pub fn cdf(&self) -> Vec<(f64, f64)> {
        let total = self.hist.len() as f64;
        let mut seen = 0u64;
        self.hist
            .iter_recorded()
            .map(|v| {
                seen += v.count_at_value();
                (
                    round1(v.value_iterated_to() as f64 / 1000.0),
                    seen as f64 / total,
                )
            })
            .collect()
    }
}

/// Milliseconds to one decimal: sub-0.1 ms digits are noise at these scales.
pub fn round1(ms: f64) -> f64 {
    (ms * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_of_a_known_set() {
        let r = Recorder::record_all((1..=100).map(f64::from));
        let d = r.distribution();
        assert_eq!(d.count, 100);
        assert_eq!(d.p50, Some(50.0));
        assert_eq!(d.p90, Some(90.0));
        assert_eq!(d.p99, Some(99.0));
        assert_eq!(d.max, Some(100.0));
        assert_eq!(d.min, Some(1.0));
        let cdf = r.cdf();
        assert_eq!(cdf.len(), 100);
        assert_eq!(cdf.last(), Some(&(100.0, 1.0)));
    }

    #[test]
    fn empty_has_no_quantiles() {
        let d = Recorder::default().distribution();
        assert_eq!(d.count, 0);
        assert_eq!(d.p50, None);
        assert_eq!(d.max, None);
    }
}
