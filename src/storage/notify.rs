//! Cross-instance wake-ups: after a commit that other instances' workers should see (an outbox
//! row, a publish step), PostgreSQL `NOTIFY` tells every instance listening on `CHANNEL`, so
//! their workers start at once instead of at their next poll. In-process, `Store::changes()`
//! is woken as before; SQLite (one process) has nothing else to tell.
//!
//! Notifications are a hint, never the record: workers still poll, and a listener that
//! reconnects wakes its workers once in case it missed one.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::cache::{self, Stale};
use super::{Backend, Result, Store};

/// The channel every instance listens on; the payload is the sender's instance id on the first
/// line, then what went stale in its cache (`cache::encode`).
pub const CHANNEL: &str = "tessera_changes";

/// Changes waiting for one `NOTIFY` before they are sent as "everything".
const MAX_PENDING_STALE: usize = 1_000;

/// How often an idle listener pings itself.
const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Longest list of stale ids in one payload (PostgreSQL allows 8,000 bytes); past it the
/// others forget everything.
const MAX_STALE_PAYLOAD: usize = 7_000;

/// At most one `NOTIFY` in flight per instance: changes committed while one is on its way are
/// covered by one more, so a burst of postings costs a couple of notifications, not one each.
#[derive(Default)]
pub(super) struct Announcer {
    sending: AtomicBool,
    again: AtomicBool,
    /// What went stale since the last `NOTIFY` was sent.
    stale: Mutex<Vec<Stale>>,
}

impl Store {
    /// Call after a commit that wrote work for the workers: wakes this instance's dispatcher and,
    /// on PostgreSQL, every other instance's (sent off the caller's path).
    pub(super) fn committed(&self) {
        self.changed.notify_one();
        self.announce();
    }

    /// Call after a commit that changed a pass (version, token, state) or a registration, and
    /// before `committed`: this instance's PassKit cache forgets it now, the others when the
    /// `NOTIFY` arrives.
    pub(super) fn forget(&self, stale: Stale) {
        self.cache.forget(&stale);
        if self.backend != Backend::Postgres {
            return;
        }
        {
            let mut pending = self
                .announcer
                .stale
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            // While no NOTIFY gets out (the database away), the list would only grow; past
            // this many it says "everything" instead.
            if pending.len() >= MAX_PENDING_STALE {
                pending.clear();
                pending.push(Stale::All);
            } else {
                pending.push(stale);
            }
        }
        self.announce();
    }

    /// Whether the PassKit cache answers (on PostgreSQL: while this instance listens).
    pub fn passkit_cache_live(&self) -> bool {
        self.cache.generation().is_some()
    }

    fn announce(&self) {
        if self.backend != Backend::Postgres {
            return;
        }
        let announcer = &self.announcer;
        announcer.again.store(true, Ordering::Release);
        if announcer.sending.swap(true, Ordering::AcqRel) {
            return; // the sender in flight sends once more
        }
        let store = self.clone();
        tokio::spawn(async move {
            loop {
                store.announcer.again.store(false, Ordering::Release);
                let stale = std::mem::take(
                    &mut *store
                        .announcer
                        .stale
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()),
                );
                let payload = format!(
                    "{}\n{}",
                    store.instance_id(),
                    cache::encode(&stale, MAX_STALE_PAYLOAD)
                );
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(payload)
                    .execute(&store.pool)
                    .await
                {
                    // Their workers find the work at their next poll, but their PassKit caches
                    // must hear what went stale: try again until a NOTIFY goes out.
                    tracing::warn!(error = %e, "telling the other instances about a change failed; trying again");
                    if !stale.is_empty() {
                        store
                            .announcer
                            .stale
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(Stale::All);
                    }
                    store.announcer.again.store(true, Ordering::Release);
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                    continue;
                }
                if store.announcer.again.load(Ordering::Acquire) {
                    continue;
                }
                store.announcer.sending.store(false, Ordering::Release);
                // A change that came between the check and the store above found `sending`
                // still set; take its turn unless another sender already did.
                if !store.announcer.again.load(Ordering::Acquire)
                    || store.announcer.sending.swap(true, Ordering::AcqRel)
                {
                    return;
                }
            }
        });
    }

    /// Listens for other instances' changes until the connection fails: each wakes this
    /// instance's workers (`changes()`) and calls `heard` (liveness). Returns at once on SQLite.
    pub async fn listen_for_other_instances(&self, heard: impl Fn()) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        // The cache answers only while this connection listens (off again when this returns).
        struct Off<'a>(&'a Store);
        impl Drop for Off<'_> {
            fn drop(&mut self) {
                self.0.cache.set_live(false);
            }
        }
        let _off = Off(self);
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        // An idle channel says nothing: ping ourselves every few seconds, so hearing our own
        // notifications shows the connection alive (`heard`).
        struct Abort(tokio::task::JoinHandle<()>);
        impl Drop for Abort {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let pool = self.pool.clone();
        let ping = format!("{}\n", self.instance_id());
        let _pinger = Abort(tokio::spawn(async move {
            let mut tick = tokio::time::interval(PING_EVERY);
            loop {
                tick.tick().await;
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&ping)
                    .execute(&pool)
                    .await;
                if let Err(e) = sent {
                    tracing::debug!(error = %e, "pinging the LISTEN connection failed");
                }
            }
        }));
        // Whatever was announced while no one listened: look once, and start the cache empty.
        self.cache.set_live(true);
        self.changed.notify_one();
        heard();
        loop {
            match listener.try_recv().await? {
                Some(n) => {
                    let (from, stale) = n.payload().split_once('\n').unwrap_or((n.payload(), ""));
                    if from != self.instance_id() {
                        self.cache.forget(&cache::decode(stale));
                        self.changed.notify_one();
                    }
                    heard();
                }
                // The connection dropped: notifications may be lost. Start over (the worker
                // reconnects), with the cache off meanwhile.
                None => {
                    self.changed.notify_one();
                    return Err(
                        sqlx::Error::Protocol("the LISTEN connection dropped".into()).into(),
                    );
                }
            }
        }
    }
}
