//! Order statistics over timed runs. Hand-written: a sort and a rank are all
//! that is needed, and a statistics crate would bring far more.

use std::time::Duration;

/// The durations of one measured operation, one per run.
#[derive(Debug, Clone, Default)]
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn push(&mut self, d: Duration) {
        self.0.push(d);
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn sorted(&self) -> Vec<Duration> {
        let mut v = self.0.clone();
        v.sort();
        v
    }

    /// The median (mean of the two middle values for an even count).
    pub fn median(&self) -> Duration {
        let v = self.sorted();
        match v.len() {
            0 => Duration::ZERO,
            n if n % 2 == 1 => v[n / 2],
            n => (v[n / 2 - 1] + v[n / 2]) / 2,
        }
    }

    /// The `p`th percentile by nearest rank (`p` in 0..=100). With fewer
    /// than 100 runs, p99 is the slowest run; the report says how many runs
    /// there were so that is visible.
    pub fn percentile(&self, p: f64) -> Duration {
        let v = self.sorted();
        if v.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v[rank.clamp(1, v.len()) - 1]
    }

    pub fn p99(&self) -> Duration {
        self.percentile(99.0)
    }

    pub fn min(&self) -> Duration {
        if self.is_empty() {
            return Duration::ZERO;
        }
        self.0.iter().copied().min().unwrap_or_default()
    }

    pub fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

/// A table row of `what` and the spread of `x`: runs, p50, p99, min, max.
pub fn spread_row(what: impl Into<String>, x: &Samples) -> Vec<String> {
    vec![
        what.into(),
        x.len().to_string(),
        ms(x.median()),
        ms(x.p99()),
        ms(x.min()),
        ms(x.max()),
    ]
}

/// Milliseconds with a precision that suits the size of the value.
pub fn ms(d: Duration) -> String {
    let v = d.as_secs_f64() * 1000.0;
    if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// `a / b` as a ratio, e.g. `3.2×`.
pub fn ratio(a: Duration, b: Duration) -> f64 {
    if b.is_zero() {
        return f64::INFINITY;
    }
    a.as_secs_f64() / b.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(ms: &[u64]) -> Samples {
        let mut s = Samples::new();
        for m in ms {
            s.push(Duration::from_millis(*m));
        }
        s
    }

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(samples(&[5, 1, 3]).median(), Duration::from_millis(3));
        assert_eq!(samples(&[4, 1, 3, 2]).median(), Duration::from_micros(2500));
    }

    #[test]
    fn p99_by_nearest_rank() {
        let s = samples(&(1..=200).collect::<Vec<_>>());
        assert_eq!(s.p99(), Duration::from_millis(198));
        // Fewer than 100 runs: the slowest one.
        assert_eq!(samples(&[1, 9, 2]).p99(), Duration::from_millis(9));
        assert_eq!(samples(&[7]).percentile(50.0), Duration::from_millis(7));
    }

    #[test]
    fn empty_samples_do_not_panic() {
        let s = Samples::new();
        assert_eq!(s.median(), Duration::ZERO);
        assert_eq!(s.p99(), Duration::ZERO);
    }
}
