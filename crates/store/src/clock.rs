//! The node's update clock: arrival timestamps and per-update unique numbers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid clock in microseconds: `tick()` never returns the same value twice in one
/// process and never goes backwards, even if the wall clock does. Values start at the
/// wall clock, so after a restart they continue above what a previous run handed out
/// (unless the previous run out-ran real time, which takes > 1M updates/s sustained).
///
/// Used as the arrival time of updates that carry no `ts` (so two `SET`s on one node
/// order as they arrived) and as the unique number of anonymous set-add dots.
#[derive(Debug, Default)]
pub struct Clock {
    last: AtomicU64,
}

/// Wall-clock microseconds since the Unix epoch (0 if the clock is before 1970).
pub fn wall_clock_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Clock {
    /// A strictly increasing microsecond timestamp.
    pub fn tick(&self) -> u64 {
        let now = wall_clock_us();
        let mut last = self.last.load(Ordering::Relaxed);
        loop {
            let next = now.max(last + 1);
            match self
                .last
                .compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return next,
                Err(actual) => last = actual,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn ticks_strictly_increase() {
        let clock = Clock::default();
        let mut previous = 0;
        for _ in 0..10_000 {
            let t = clock.tick();
            assert!(t > previous);
            previous = t;
        }
    }
}
