//! A throttle on failed password attempts per source address, shared by the HTTP and
//! Redis doors (the comparison itself is [`speedlayer_api::secret_matches`]).
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

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

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

/// Failed attempts per source address, and their count per door.
#[derive(Debug, Default)]
pub struct AuthThrottle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
    counted: Family<Vec<(String, String)>, Counter>,
}

impl AuthThrottle {
    /// Registers `speedlayer_auth_failures_total{door}` in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "speedlayer_auth_failures",
            "Failed password attempts (RESP AUTH, HTTP bearer tokens), by door",
            self.counted.clone(),
        );
    }

    /// Records a failed attempt at `door` (`http`, `resp`) from `from` (when known);
    /// returns how long its answer must wait.
    pub fn failed(&self, door: &str, from: Option<IpAddr>) -> Duration {
        self.counted
            .get_or_create(&vec![("door".to_string(), door.to_string())])
            .inc();
        from.map_or(Duration::ZERO, |ip| self.failed_from(ip))
    }

    fn failed_from(&self, from: IpAddr) -> Duration {
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
        let waits: Vec<Duration> = (0..10).map(|_| throttle.failed("test", Some(ip))).collect();
        assert_eq!(waits[..3], [Duration::ZERO; 3]);
        assert_eq!(waits[3], BASE_DELAY);
        assert_eq!(waits[4], BASE_DELAY * 2);
        assert_eq!(waits[9], MAX_DELAY);
        let other: IpAddr = [10, 0, 0, 2].into();
        assert_eq!(
            throttle.failed("test", Some(other)),
            Duration::ZERO,
            "per address"
        );
        throttle.succeeded(ip);
        assert_eq!(throttle.failed("test", Some(ip)), Duration::ZERO);
    }
}
