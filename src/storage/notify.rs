//! Cross-instance wake-ups: after a commit that other instances' workers should see (an outbox
//! row, a publish step), PostgreSQL `NOTIFY` tells every instance listening on `CHANNEL`, so
//! their workers start at once instead of at their next poll. In-process, `Store::changes()`
//! is woken as before; SQLite (one process) has nothing else to tell.
//!
//! Notifications are a hint, never the record: workers still poll, and a listener that
//! reconnects wakes its workers once in case it missed one.

use std::sync::atomic::{AtomicBool, Ordering};

use super::{Backend, Result, Store};

/// The channel every instance listens on; the payload is the sender's instance id.
pub const CHANNEL: &str = "tessera_changes";

/// At most one `NOTIFY` in flight per instance: changes committed while one is on its way are
/// covered by one more, so a burst of postings costs a couple of notifications, not one each.
#[derive(Default)]
pub(super) struct Announcer {
    sending: AtomicBool,
    again: AtomicBool,
}

impl Store {
    /// Call after a commit that wrote work for the workers: wakes this instance's dispatcher and,
    /// on PostgreSQL, every other instance's (sent off the caller's path).
    pub(super) fn committed(&self) {
        self.changed.notify_one();
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
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(store.instance_id())
                    .execute(&store.pool)
                    .await
                {
                    tracing::warn!(error = %e, "telling the other instances about a change failed; they find it at their next poll");
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
        let mut listener = sqlx::postgres::PgListener::connect(&self.url).await?;
        listener.listen(CHANNEL).await?;
        // Whatever was announced while no one listened: look once.
        self.changed.notify_one();
        heard();
        loop {
            match listener.try_recv().await? {
                Some(n) if n.payload() != self.instance_id() => {
                    self.changed.notify_one();
                    heard();
                }
                Some(_) => heard(),
                // The connection dropped and will be re-established: we may have missed some.
                None => self.changed.notify_one(),
            }
        }
    }
}
