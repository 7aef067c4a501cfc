//! Retry delays after failures: one policy for every loop that waits and
//! tries again (the bus publishing into a full stream, the controller
//! requeueing a failed reconcile, long polling, a job's retry).
//!
//! Delays double from `min`, each with a random part, and never exceed
//! `max`. The random part spreads out the retries of many replicas (or
//! many jobs) that failed together, so they do not all come back at the
//! same instant and fail together again.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::time::Duration;

/// Doubling delays between `min` and `max`: the nominal delay goes `min`,
/// `2·min`, `4·min`, … up to `max / 2`, and each delay adds a random
/// share of up to 100 % of it. So the first delay lies in `[min, 2·min)`
/// and none reaches `max`. (A `min` above `max / 2` starts at `max / 2`.)
///
/// The builder never gives up by itself; build a fresh one to start over
/// after a success.
pub fn policy(min: Duration, max: Duration) -> ExponentialBuilder {
    let cap = max / 2;
    ExponentialBuilder::new()
        .with_min_delay(min.min(cap))
        .with_max_delay(cap)
        .with_jitter()
        .without_max_times()
}

/// The delays of a [`policy`], one per failure; it never ends.
pub type Delays = <ExponentialBuilder as BackoffBuilder>::Backoff;

/// A fresh run of [`policy`]`(min, max)`.
pub fn delays(min: Duration, max: Duration) -> Delays {
    policy(min, max).build()
}

/// The delay before retry `n` (the first is 1) of [`policy`]`(min, max)`,
/// for callers that keep a count of failures rather than a backoff.
pub fn nth(min: Duration, max: Duration, n: u32) -> Duration {
    // Past 64 doublings every nominal delay is capped: no need to walk on.
    let skip = n.clamp(1, 64) as usize - 1;
    delays(min, max).nth(skip).unwrap_or(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_millis(500);
    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn delays_double_with_jitter_and_stay_below_the_cap() {
        for _ in 0..100 {
            let delays: Vec<Duration> = policy(MIN, MAX).build().take(12).collect();
            let mut nominal = MIN;
            for d in &delays {
                assert!(
                    *d >= nominal && *d < nominal * 2,
                    "{d:?} around {nominal:?}: {delays:?}"
                );
                nominal = (nominal * 2).min(MAX / 2);
            }
        }
    }

    #[test]
    fn the_jitter_varies() {
        let firsts: std::collections::HashSet<Duration> =
            (0..20).map(|_| policy(MIN, MAX).build().next().unwrap()).collect();
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[test]
    fn the_nth_delay_follows_the_policy() {
        let d = nth(Duration::from_secs(5), Duration::from_secs(300), 3);
        assert!(d >= Duration::from_secs(20) && d < Duration::from_secs(40), "{d:?}");
        for n in [0, 1] {
            let d = nth(Duration::from_secs(5), Duration::from_secs(300), n);
            assert!(d >= Duration::from_secs(5) && d < Duration::from_secs(10), "{d:?}");
        }
        let d = nth(Duration::from_secs(5), Duration::from_secs(300), u32::MAX);
        assert!(d >= Duration::from_secs(150) && d < Duration::from_secs(300), "{d:?}");
        let big_min = policy(Duration::from_secs(60), Duration::from_secs(10))
            .build()
            .next()
            .unwrap();
        assert!(big_min >= Duration::from_secs(5) && big_min < Duration::from_secs(10));
    }
}
