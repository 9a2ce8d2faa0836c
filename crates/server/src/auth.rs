//! Password checks shared by the HTTP and Redis doors: constant-time comparison, and a
//! throttle on failed attempts per source address.
//!
//! Each failed attempt from an address past the first [`FREE_FAILURES`] makes that
//! address wait before its answer, doubling from [`BASE_DELAY`] up to [`MAX_DELAY`]; a
//! success clears it. Without it a client tried ~950k wrong `AUTH`s a second (pipelined)
//! and ~7.5k bearer tokens. At most [`MAX_TRACKED`] addresses are remembered (the table
//! is cleared when full: memory stays bounded whatever the attacker's address space).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures from one address that cost nothing (typos).
pub const FREE_FAILURES: u32 = 3;
/// Delay after the first failure that costs.
pub const BASE_DELAY: Duration = Duration::from_millis(50);
/// Longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Addresses remembered at most.
pub const MAX_TRACKED: usize = 10_000;
/// A failure is forgotten after this long without another.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Whether `given` is the password, without leaking through timing where they differ:
/// the time depends only on the expected password's length.
pub fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    let mut diff = u8::from(given.len() != expected.len());
    for (i, e) in expected.iter().enumerate() {
        diff |= given.get(i).copied().unwrap_or(0) ^ e;
    }
    diff == 0
}

/// Failed attempts per source address.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl AuthThrottle {
    /// Records a failed attempt from `from`; returns how long its answer must wait.
    pub fn failed(&self, from: IpAddr) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&from) {
            failures.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
            if failures.len() >= MAX_TRACKED {
                failures.clear();
            }
        }
        let entry = failures.entry(from).or_insert((0, Instant::now()));
        if entry.1.elapsed() > FORGET_AFTER {
            entry.0 = 0;
        }
        entry.0 = entry.0.saturating_add(1);
        entry.1 = Instant::now();
        delay(entry.0)
    }

    /// Clears `from`'s failures.
    pub fn succeeded(&self, from: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.remove(&from);
    }
}

/// The wait after the `n`th failure in a row.
fn delay(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let doublings = (n - FREE_FAILURES - 1).min(16);
    BASE_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_cost_more_and_more_and_a_success_clears_them() {
        let throttle = AuthThrottle::default();
        let ip: IpAddr = [10, 0, 0, 1].into();
        let waits: Vec<Duration> = (0..10).map(|_| throttle.failed(ip)).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3]);
        assert_eq!(waits[3], BASE_DELAY);
        assert_eq!(waits[4], BASE_DELAY * 2);
        assert_eq!(waits[9], MAX_DELAY);
        let other: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(throttle.failed(other), Duration::ZERO, "per address");
        throttle.succeeded(ip);
        assert_eq!(throttle.failed(ip), Duration::ZERO);
    }

    #[test]
    fn passwords_compare_whole() {
        assert!(password_matches(b"s3cret", b"s3cret"));
        assert!(!password_matches(b"s3cre", b"s3cret"));
        assert!(!password_matches(b"s3cret!", b"s3cret"));
        assert!(!password_matches(b"", b"s3cret"));
    }
}
