//! Throttles keyed by client address, staff account or API key (GCRA, `governor`): the join
//! form, barcode lookups and device logs answer 429 past their quota, so none can be used to
//! enumerate members or flood the database or the log. [`Backoff`] makes failed staff sign-ins
//! wait longer and longer.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

pub struct Throttle {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

/// Keys kept before forgetting those whose quota has refilled.
const MAX_KEYS: usize = 10_000;

impl Throttle {
    /// `per_minute` requests a minute per key, in bursts of at most a quarter of that (at
    /// least 3), refilling evenly.
    pub fn per_minute(per_minute: u32) -> Throttle {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
        let burst =
            NonZeroU32::new((per_minute / 4).max(3).min(per_minute.max(1))).expect("at least 1");
        Throttle {
            limiter: RateLimiter::keyed(Quota::per_minute(n).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `per_hour` requests an hour per key, in bursts of at most 3, refilling evenly.
    pub fn per_hour(per_hour: u32) -> Throttle {
        let n = NonZeroU32::new(per_hour.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(per_hour.clamp(1, 3)).expect("at least 1");
        Throttle {
            limiter: RateLimiter::keyed(Quota::per_hour(n).allow_burst(burst)),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(wait)` when `key` is over its quota: how long until the next request is allowed.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.limiter.len() > MAX_KEYS {
            self.limiter.retain_recent();
        }
        self.limiter
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Increasing delays after failures, per key: after `free` failures each further one makes
/// the key wait 1 s, then 2 s, 4 s, ... up to `max`. A success clears the key.
pub struct Backoff {
    free: u32,
    max: Duration,
    keys: Mutex<HashMap<String, Failures>>,
}

struct Failures {
    count: u32,
    until: Instant,
}

impl Backoff {
    pub fn new(free: u32, max: Duration) -> Backoff {
        Backoff {
            free,
            max,
            keys: Mutex::default(),
        }
    }

    /// `Err(wait)` while any of `keys` must wait.
    pub fn check(&self, keys: &[&str]) -> Result<(), Duration> {
        let now = Instant::now();
        let map = self.keys.lock().expect("backoff lock");
        let wait = keys
            .iter()
            .filter_map(|k| map.get(*k))
            .map(|f| f.until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() { Ok(()) } else { Err(wait) }
    }

    /// Counts a failure against each of `keys`.
    pub fn fail(&self, keys: &[&str]) {
        let now = Instant::now();
        let mut map = self.keys.lock().expect("backoff lock");
        if map.len() > MAX_KEYS {
            // Forget keys that have not failed for an hour (or are not waiting).
            map.retain(|_, f| f.until + Duration::from_secs(3600) > now);
        }
        for k in keys {
            let f = map.entry((*k).to_string()).or_insert(Failures {
                count: 0,
                until: now,
            });
            f.count = f.count.saturating_add(1);
            if f.count > self.free {
                let doublings = (f.count - self.free - 1).min(20);
                let delay = Duration::from_secs(1u64 << doublings).min(self.max);
                f.until = now + delay;
            }
        }
    }

    /// Clears `keys` after a success.
    pub fn succeed(&self, keys: &[&str]) {
        let mut map = self.keys.lock().expect("backoff lock");
        for k in keys {
            map.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_wait_longer_each_time() {
        let b = Backoff::new(2, Duration::from_secs(8));
        for _ in 0..2 {
            assert!(b.check(&["acct", "addr"]).is_ok());
            b.fail(&["acct", "addr"]);
        }
        assert!(b.check(&["acct"]).is_ok(), "two failures are free");
        let mut waits = Vec::new();
        for _ in 0..6 {
            b.fail(&["acct"]);
            waits.push(
                b.check(&["acct", "other"])
                    .unwrap_err()
                    .as_secs_f64()
                    .round() as u64,
            );
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
        assert!(b.check(&["other"]).is_ok());
        b.succeed(&["acct"]);
        assert!(b.check(&["acct"]).is_ok());
    }

    #[test]
    fn a_key_past_its_burst_waits_and_others_do_not() {
        let t = Throttle::per_minute(12);
        for _ in 0..3 {
            assert!(t.check("a").is_ok());
        }
        let wait = t.check("a").unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );
        assert!(t.check("b").is_ok(), "keys are independent");
    }
}
