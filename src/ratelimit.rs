//! Throttles keyed by client address, staff account or API key (GCRA, `governor`): the join
//! form and barcode lookups answer 429 past their quota, so neither can be used to enumerate
//! members or flood the database.

use std::num::NonZeroU32;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

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
