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
