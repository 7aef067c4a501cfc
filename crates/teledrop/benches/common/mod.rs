//! What the benchmarks share: their numeric arguments and latency
//! percentiles. Each bench uses only some of it.
#![allow(dead_code)]

use std::time::Duration;

/// The numeric command-line arguments, in order (cargo's own `--bench`
/// flags skipped).
pub fn numeric_args() -> Vec<u64> {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .filter_map(|a| a.parse().ok())
        .collect()
}

/// The `p`th percentile of `sorted` (nearest rank); zero when empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Pairs of measurements taken back to back: ours, then the reference's,
/// round after round, so that a background hiccup hits both sides of a
/// pair. On a shared 2-core machine absolute figures move by 2× between
/// runs; the median of the per-round ratios does not.
pub struct Rounds {
    what: &'static str,
    unit: &'static str,
    /// Whether a higher figure is better (rates) or a lower one (seconds).
    higher_is_better: bool,
    pairs: Vec<(f64, f64)>,
}

impl Rounds {
    /// Figures where more is better, e.g. requests per second.
    pub fn rate(what: &'static str, unit: &'static str) -> Self {
        Self {
            what,
            unit,
            higher_is_better: true,
            pairs: Vec::new(),
        }
    }

    /// Figures where less is better, e.g. seconds.
    pub fn time(what: &'static str, unit: &'static str) -> Self {
        Self {
            what,
            unit,
            higher_is_better: false,
            pairs: Vec::new(),
        }
    }

    pub fn push(&mut self, ours: f64, reference: f64) {
        self.pairs.push((ours, reference));
    }

    /// ours / reference for each round, sorted.
    fn ratios(&self) -> Vec<f64> {
        let mut r: Vec<f64> = self.pairs.iter().map(|(a, b)| a / b).collect();
        r.sort_by(f64::total_cmp);
        r
    }

    /// The median of the per-round ratios ours / reference.
    pub fn ratio(&self) -> f64 {
        median(&self.ratios())
    }

    /// One line: medians of both sides, the median ratio and its spread.
    pub fn print(&self, reference: &str) {
        let ours = median_of(self.pairs.iter().map(|p| p.0));
        let theirs = median_of(self.pairs.iter().map(|p| p.1));
        let r = self.ratios();
        let better = if self.higher_is_better { "higher" } else { "lower" };
        println!(
            "{:<34} teledrop {:>10.2} {unit:<6} {reference} {:>10.2} {unit:<6} ratio {:>5.2}× (rounds {}, range {:.2}–{:.2}; {better} is better)",
            self.what,
            ours,
            theirs,
            self.ratio(),
            r.len(),
            r.first().copied().unwrap_or(f64::NAN),
            r.last().copied().unwrap_or(f64::NAN),
            unit = self.unit,
        );
    }
}

fn median_of(values: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.collect();
    v.sort_by(f64::total_cmp);
    median(&v)
}

/// The middle of `sorted` (the mean of the two middles for an even count).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
pub mod minimal;
