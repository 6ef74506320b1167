//! Throttles keyed by client address, staff account or API key (GCRA, `governor`): the join
//! form, barcode lookups and device logs answer 429 past their quota, so none can be used to
//! enumerate members or flood the database or the log. [`Backoff`] makes failed staff sign-ins
//! wait longer and longer.
//!
//! On PostgreSQL both are shared by every instance on the database (`shared_on`): the GCRA state
//! and the failure counts live in tables (`storage::throttles`), updated in one statement per key,
//! so N instances allow a client one quota, not N. On SQLite (one process) they stay in memory.
//! Should the database fail, a throttle falls back to this process's memory rather than refuse.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::domain::now_ms;

pub struct Throttle {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
    /// The GCRA emission interval and burst tolerance, in ms, for the shared state.
    interval_ms: i64,
    tolerance_ms: i64,
    /// Where the state is shared across instances (PostgreSQL), and the key prefix.
    shared: Option<(Store, &'static str)>,
}

use crate::storage::{Backend, Store};

/// Keys kept before forgetting those whose quota has refilled.
const MAX_KEYS: usize = 10_000;

impl Throttle {
    /// `per_minute` requests a minute per key, in bursts of at most a quarter of that (at
    /// least 3), refilling evenly.
    pub fn per_minute(per_minute: u32) -> Throttle {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least 1");
        let burst =
            NonZeroU32::new((per_minute / 4).max(3).min(per_minute.max(1))).expect("at least 1");
        Throttle::new(
            Quota::per_minute(n).allow_burst(burst),
            60_000 / n.get() as i64,
            burst,
        )
    }

    fn new(quota: Quota, interval_ms: i64, burst: NonZeroU32) -> Throttle {
        Throttle {
            limiter: RateLimiter::keyed(quota),
            clock: DefaultClock::default(),
            interval_ms: interval_ms.max(1),
            tolerance_ms: interval_ms.max(1) * (burst.get() as i64 - 1),
            shared: None,
        }
    }

    /// Shares the state with every instance on `store`'s database when it is PostgreSQL;
    /// `scope` names this throttle's keys there.
    pub fn shared_on(mut self, store: &Store, scope: &'static str) -> Throttle {
        if store.backend() == Backend::Postgres {
            self.shared = Some((store.clone(), scope));
        }
        self
    }

    /// `per_hour` requests an hour per key, in bursts of at most 3, refilling evenly.
    pub fn per_hour(per_hour: u32) -> Throttle {
        let n = NonZeroU32::new(per_hour.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(per_hour.clamp(1, 3)).expect("at least 1");
        Throttle::new(
            Quota::per_hour(n).allow_burst(burst),
            3_600_000 / n.get() as i64,
            burst,
        )
    }

    /// `Err(wait)` when `key` is over its quota: how long until the next request is allowed.
    pub async fn check(&self, key: &str) -> Result<(), Duration> {
        if let Some((store, scope)) = &self.shared {
            let key = format!("{scope}:{key}");
            match store
                .throttle_hit(&key, now_ms(), self.interval_ms, self.tolerance_ms)
                .await
            {
                Ok(None) => return Ok(()),
                Ok(Some(wait)) => return Err(Duration::from_millis(wait as u64)),
                Err(e) => {
                    tracing::warn!(error = %e, scope, "the shared throttle failed; counting in memory");
                }
            }
        }
        self.check_here(key)
    }

    fn check_here(&self, key: &str) -> Result<(), Duration> {
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
    /// Where failures are counted across instances (PostgreSQL).
    shared: Option<Store>,
}

struct Failures {
    count: u32,
    /// Milliseconds since the epoch.
    until: i64,
}

impl Backoff {
    pub fn new(free: u32, max: Duration) -> Backoff {
        Backoff {
            free,
            max,
            keys: Mutex::default(),
            shared: None,
        }
    }

    /// Counts failures with every instance on `store`'s database when it is PostgreSQL.
    pub fn shared_on(mut self, store: &Store) -> Backoff {
        if store.backend() == Backend::Postgres {
            self.shared = Some(store.clone());
        }
        self
    }

    /// Takes one attempt against every key of `keys`: `Err(wait)` (nothing counted) while any
    /// of them must wait; otherwise the attempt is counted as a failure *before* the password
    /// is checked, in one step per key, so parallel guesses cannot all pass a check that
    /// none of them has counted yet. A correct password then calls `succeed` with the
    /// returned `Attempt`, which takes the count back.
    pub async fn attempt(&self, keys: &[&str]) -> Result<Attempt, Duration> {
        if let Some(store) = &self.shared {
            let max = self.max.as_millis().min(i64::MAX as u128) as i64;
            match store
                .sign_in_attempt(keys, now_ms(), self.free as i64, max)
                .await
            {
                Ok(Ok(previous)) => return Ok(Attempt(previous)),
                Ok(Err(wait)) => return Err(Duration::from_millis(wait as u64)),
                Err(e) => {
                    tracing::warn!(error = %e, "the shared sign-in backoff failed; counting in memory")
                }
            }
        }
        self.attempt_here(keys)
    }

    /// After a correct password: clears `clear` (the account) and takes back what `attempt`
    /// did to `refund` (the address): one count, and the wait it may have started, so a
    /// correct sign-in never makes others at the same address wait.
    pub async fn succeed(&self, attempt: &Attempt, clear: &[&str], refund: &[&str]) {
        let previous: Vec<(&str, i64)> = attempt
            .0
            .iter()
            .filter(|(k, _)| refund.contains(&k.as_str()))
            .map(|(k, until)| (k.as_str(), *until))
            .collect();
        if let Some(store) = &self.shared
            && let Err(e) = store.sign_in_succeeded(clear, &previous).await
        {
            tracing::warn!(error = %e, "clearing the shared sign-in backoff failed");
        }
        self.succeed_here(clear, &previous)
    }

    fn attempt_here(&self, keys: &[&str]) -> Result<Attempt, Duration> {
        let now = now_ms();
        let mut map = self.keys.lock().expect("backoff lock");
        let wait = keys
            .iter()
            .filter_map(|k| map.get(*k))
            .map(|f| f.until - now)
            .max()
            .unwrap_or_default();
        if wait > 0 {
            return Err(Duration::from_millis(wait as u64));
        }
        if map.len() > MAX_KEYS {
            // Forget keys that have not failed for an hour (or are not waiting).
            map.retain(|_, f| f.until + 3_600_000 > now);
        }
        let mut previous = Vec::with_capacity(keys.len());
        for k in keys {
            let f = map
                .entry((*k).to_string())
                .or_insert(Failures { count: 0, until: 0 });
            previous.push(((*k).to_string(), f.until));
            f.count = f.count.saturating_add(1);
            if f.count > self.free {
                let doublings = (f.count - self.free - 1).min(20);
                let delay = (1000i64 << doublings).min(self.max.as_millis() as i64);
                f.until = now + delay;
            }
        }
        Ok(Attempt(previous))
    }

    fn succeed_here(&self, clear: &[&str], previous: &[(&str, i64)]) {
        let mut map = self.keys.lock().expect("backoff lock");
        for k in clear {
            map.remove(*k);
        }
        for (k, until) in previous {
            if let Some(f) = map.get_mut(*k) {
                f.count = f.count.saturating_sub(1);
                f.until = f.until.min(*until);
            }
        }
    }
}

/// What one sign-in attempt did: each key with its wait (ms since the epoch) from before.
#[derive(Debug, Default)]
pub struct Attempt(Vec<(String, i64)>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_wait_longer_each_time() {
        let b = Backoff::new(2, Duration::from_secs(8));
        for _ in 0..2 {
            assert!(b.attempt_here(&["acct", "addr"]).is_ok());
        }
        assert!(b.attempt_here(&["other"]).is_ok(), "keys are independent");
        let mut waits = Vec::new();
        for _ in 0..6 {
            // The attempt is counted, then the next one must wait longer each time.
            b.attempt_here(&["acct"]).unwrap();
            let wait = b.attempt_here(&["acct", "other"]).unwrap_err();
            waits.push(wait.as_secs_f64().round() as u64);
            b.keys.lock().unwrap().get_mut("acct").unwrap().until = 0;
        }
        assert_eq!(waits, [1, 2, 4, 8, 8, 8]);
    }

    #[test]
    fn a_correct_password_takes_its_attempt_back() {
        let b = Backoff::new(2, Duration::from_secs(60));
        for _ in 0..2 {
            b.attempt_here(&["addr"]).unwrap();
        }
        // The third attempt from the address starts a wait; its password was right.
        let attempt = b.attempt_here(&["acct", "addr"]).unwrap();
        b.succeed_here(&["acct"], &[("addr", attempt.0[1].1)]);
        assert!(
            b.attempt_here(&["addr"]).is_ok(),
            "a correct sign-in leaves no wait at its address"
        );
        assert!(b.attempt_here(&["acct"]).is_ok(), "the account was cleared");
        assert_eq!(
            b.keys.lock().unwrap()["addr"].count,
            3,
            "2 failures + this attempt"
        );
    }

    #[test]
    fn parallel_guesses_are_counted_before_any_is_checked() {
        let b = Backoff::new(3, Duration::from_secs(60));
        let passed = (0..20)
            .filter(|_| b.attempt_here(&["acct"]).is_ok())
            .count();
        assert_eq!(
            passed, 4,
            "three free attempts and the one that starts the wait"
        );
    }

    #[test]
    fn a_key_past_its_burst_waits_and_others_do_not() {
        let t = Throttle::per_minute(12);
        for _ in 0..3 {
            assert!(t.check_here("a").is_ok());
        }
        let wait = t.check_here("a").unwrap_err();
        assert!(
            wait > Duration::from_secs(1) && wait <= Duration::from_secs(5),
            "{wait:?}"
        );
        assert!(t.check_here("b").is_ok(), "keys are independent");
    }
}
