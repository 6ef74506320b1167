//! What the PassKit web service reads most, kept in memory: passes by serial (`get_pass`) and
//! which passes a device is registered for (`registered_versions`). Apple devices ask both on
//! every push and whenever Wallet looks, so a publish to every holder is answered from here.
//!
//! **No stale answer.** Every storage write that changes a pass (its version, token or state)
//! or a registration forgets what it touched *after its commit and before it wakes the
//! workers*, so no push can precede the forgetting. A reader notes the generation before its
//! database read and keeps what it read only if no forgetting happened meanwhile (a read that
//! raced a commit is answered but not kept). On PostgreSQL each instance forgets what the
//! others changed when their `NOTIFY` arrives (`notify`); while this instance's `LISTEN`
//! connection is down the cache is off (`live`), and it starts empty whenever the connection
//! is (re)established.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::domain::Pass;

/// Entries per map; past it the map is emptied (a simple bound that costs a refill).
const MAX_ENTRIES: usize = 50_000;

/// What a write made stale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stale {
    /// These members' passes (their version, token or state changed).
    Members(Vec<String>),
    /// These devices' registrations.
    Devices(Vec<String>),
    /// Everything (a batch too large to list, or a missed notification).
    All,
}

#[derive(Default)]
pub(super) struct PassCache {
    /// Serves answers; off on PostgreSQL until this instance listens for the others' changes.
    live: AtomicBool,
    /// Bumped by every forgetting: a fill read before it is not kept.
    generation: AtomicU64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    passes: HashMap<String, Pass>,
    /// Member id -> serials cached for them, to forget a member's passes.
    by_member: HashMap<String, Vec<String>>,
    /// Device -> pass type -> serials it is registered for.
    registrations: HashMap<String, HashMap<String, Vec<String>>>,
}

impl PassCache {
    pub(super) fn set_live(&self, live: bool) {
        self.forget(&Stale::All);
        self.live.store(live, Ordering::Release);
    }

    /// The generation to hand back to a `keep_*` after a database read, or `None` when the
    /// cache is off.
    pub(super) fn generation(&self) -> Option<u64> {
        self.live
            .load(Ordering::Acquire)
            .then(|| self.generation.load(Ordering::Acquire))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves at worst a partial entry set; start empty.
        self.inner.lock().unwrap_or_else(|poisoned| {
            let mut g = poisoned.into_inner();
            *g = Inner::default();
            g
        })
    }

    pub(super) fn pass(&self, serial: &str) -> Option<Pass> {
        self.generation()?;
        self.lock().passes.get(serial).cloned()
    }

    /// The device's registered passes of this type with their versions, if all are cached.
    pub(super) fn registered(&self, device: &str, pass_type: &str) -> Option<Vec<(String, i64)>> {
        self.generation()?;
        let inner = self.lock();
        let serials = inner.registrations.get(device)?.get(pass_type)?;
        serials
            .iter()
            .map(|s| Some((s.clone(), inner.passes.get(s)?.updated_at)))
            .collect()
    }

    /// Keeps passes read at `generation`, unless something was forgotten since.
    pub(super) fn keep_passes<'a>(
        &self,
        generation: u64,
        passes: impl IntoIterator<Item = &'a Pass>,
    ) {
        let mut inner = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        for pass in passes {
            inner.keep_pass(pass);
        }
    }

    /// Keeps a device's registrations (and their passes) read at `generation`.
    pub(super) fn keep_registered(
        &self,
        generation: u64,
        device: &str,
        pass_type: &str,
        passes: &[Pass],
    ) {
        let mut inner = self.lock();
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        for pass in passes {
            inner.keep_pass(pass);
        }
        if inner.registrations.len() >= MAX_ENTRIES {
            inner.registrations.clear();
        }
        inner
            .registrations
            .entry(device.to_owned())
            .or_default()
            .insert(
                pass_type.to_owned(),
                passes.iter().map(|p| p.serial_number.clone()).collect(),
            );
    }

    pub(super) fn forget(&self, stale: &Stale) {
        let mut inner = self.lock();
        // Bumped under the lock, so a fill either sees the new generation or finished before.
        self.generation.fetch_add(1, Ordering::AcqRel);
        match stale {
            Stale::All => *inner = Inner::default(),
            Stale::Members(members) => {
                for m in members {
                    for serial in inner.by_member.remove(m).unwrap_or_default() {
                        inner.passes.remove(&serial);
                    }
                }
            }
            Stale::Devices(devices) => {
                for d in devices {
                    inner.registrations.remove(d);
                }
            }
        }
    }
}

impl Inner {
    fn keep_pass(&mut self, pass: &Pass) {
        if self.passes.len() >= MAX_ENTRIES {
            self.passes.clear();
            self.by_member.clear();
        }
        let serials = self.by_member.entry(pass.member_id.clone()).or_default();
        if !serials.contains(&pass.serial_number) {
            serials.push(pass.serial_number.clone());
        }
        self.passes.insert(pass.serial_number.clone(), pass.clone());
    }
}

/// The `NOTIFY` payload naming what went stale: `m <id>` / `d <id>` lines, or `*`.
pub(super) fn encode(stale: &[Stale], max_len: usize) -> String {
    let mut out = String::new();
    for s in stale {
        let (tag, ids) = match s {
            Stale::All => return "*".into(),
            Stale::Members(ids) => ('m', ids),
            Stale::Devices(ids) => ('d', ids),
        };
        for id in ids {
            out.push(tag);
            out.push(' ');
            out.push_str(id);
            out.push('\n');
            if out.len() > max_len {
                return "*".into();
            }
        }
    }
    out
}

/// Reads a payload `encode` wrote; anything unreadable means everything.
pub(super) fn decode(payload: &str) -> Stale {
    if payload == "*" {
        return Stale::All;
    }
    let (mut members, mut devices) = (Vec::new(), Vec::new());
    for line in payload.lines() {
        match line.split_once(' ') {
            Some(("m", id)) => members.push(id.to_owned()),
            Some(("d", id)) => devices.push(id.to_owned()),
            _ => return Stale::All,
        }
    }
    match (members.is_empty(), devices.is_empty()) {
        (_, true) => Stale::Members(members),
        (true, false) => Stale::Devices(devices),
        (false, false) => Stale::All,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pass(serial: &str, member: &str, version: i64) -> Pass {
        Pass {
            serial_number: serial.into(),
            member_id: member.into(),
            template_id: "t".into(),
            pass_type_identifier: "pass.example".into(),
            authentication_token: "x".repeat(32),
            created_at: 0,
            updated_at: version,
            last_fetched_at: None,
            download_token: "d".repeat(32),
            ended_at: None,
        }
    }

    fn live() -> PassCache {
        let c = PassCache::default();
        c.set_live(true);
        c
    }

    #[test]
    fn a_read_that_raced_a_forgetting_is_not_kept() {
        let c = live();
        let g = c.generation().unwrap();
        c.forget(&Stale::Members(vec!["m1".into()]));
        c.keep_passes(g, [&pass("s1", "m1", 1000)]);
        assert_eq!(c.pass("s1"), None);
        let g = c.generation().unwrap();
        c.keep_passes(g, [&pass("s1", "m1", 1000)]);
        assert_eq!(c.pass("s1").map(|p| p.updated_at), Some(1000));
    }

    #[test]
    fn forgetting_a_member_drops_their_pass_and_the_versions_devices_see() {
        let c = live();
        let g = c.generation().unwrap();
        c.keep_registered(
            g,
            "dev",
            "pass.example",
            &[pass("s1", "m1", 1000), pass("s2", "m2", 7)],
        );
        assert_eq!(
            c.registered("dev", "pass.example"),
            Some(vec![("s1".into(), 1000), ("s2".into(), 7)])
        );
        c.forget(&Stale::Members(vec!["m1".into()]));
        assert_eq!(
            c.registered("dev", "pass.example"),
            None,
            "s1's version is unknown now"
        );
        assert!(c.pass("s2").is_some());
        c.forget(&Stale::Devices(vec!["dev".into()]));
        let g = c.generation().unwrap();
        c.keep_passes(g, [&pass("s1", "m1", 2000)]);
        assert_eq!(c.registered("dev", "pass.example"), None);
    }

    #[test]
    fn an_off_cache_answers_nothing() {
        let c = PassCache::default();
        assert_eq!(c.generation(), None);
        c.set_live(true);
        let g = c.generation().unwrap();
        c.keep_passes(g, [&pass("s1", "m1", 1)]);
        c.set_live(false);
        assert_eq!(c.pass("s1"), None);
        c.set_live(true);
        assert_eq!(c.pass("s1"), None, "going live starts empty");
    }

    #[test]
    fn payloads_round_trip_and_fall_back_to_everything() {
        let members = Stale::Members(vec!["a".into(), "b".into()]);
        assert_eq!(
            decode(&encode(std::slice::from_ref(&members), 100)),
            members
        );
        let devices = Stale::Devices(vec!["d1".into()]);
        assert_eq!(
            decode(&encode(std::slice::from_ref(&devices), 100)),
            devices
        );
        assert_eq!(
            decode(&encode(&[members.clone(), devices], 100)),
            Stale::All
        );
        assert_eq!(decode(&encode(&[members], 3)), Stale::All, "too long");
        assert_eq!(decode("garbage"), Stale::All);
    }
}
