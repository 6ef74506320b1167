//! Claims with a lease, so that several instances on one PostgreSQL database hand each row of
//! background work to exactly one of them.
//!
//! A worker claims rows it works on outside a transaction (outbox rows while it pushes, Google
//! syncs while it calls Google) by writing its instance id and a lease expiry, choosing the rows
//! with `FOR UPDATE SKIP LOCKED` so two instances never wait on or take the same rows. A row whose
//! lease ran out (its instance died mid-batch) is claimable again; a clean shutdown gives every
//! claim back at once (`release_leases`). Work done inside one transaction (a publish step, an
//! expiry) needs no lease: its row lock dies with the transaction.
//!
//! SQLite is one process per database file (`serve` holds `<db>.lock`), so nothing is written
//! there: the claim columns stay NULL and the workers' own bookkeeping suffices.

use std::sync::atomic::Ordering;

use super::{Backend, Result, Store};

/// `server.worker_lease_ms`'s default, until `set_worker_lease` is called.
pub(super) const DEFAULT_LEASE_MS: i64 = 60_000;

/// An id for this process's claims: host name, pid and 64 random bits (a restarted process with
/// a recycled pid is still another owner).
pub(super) fn new_instance_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!(
        "{}:{}:{}",
        if host.is_empty() { "host" } else { &host },
        std::process::id(),
        crate::secret::random_token(8)
    )
}

impl Store {
    /// This instance's owner id on claimed rows.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// How long claims last from now on (`server.worker_lease_ms`).
    pub fn set_worker_lease(&self, ms: u64) {
        self.lease_ms
            .store(ms.clamp(1, i64::MAX as u64) as i64, Ordering::Release);
    }

    pub(super) fn lease_ms(&self) -> i64 {
        self.lease_ms.load(Ordering::Acquire)
    }

    /// Whether claims are written (several processes may share the database).
    pub(super) fn claims(&self) -> bool {
        self.backend == Backend::Postgres
    }

    /// Whether this instance gave its claims back (`release_leases`): it claims nothing more,
    /// even if a worker has not stopped yet.
    pub(super) fn released(&self) -> bool {
        self.released.load(Ordering::Acquire)
    }

    /// Claims the single job `name` (expiry, purges) for one lease; `true` when this instance
    /// holds it now. An instance renews its own lease; another takes it only once it ran out.
    /// Always `true` on SQLite.
    pub async fn claim_job(&self, name: &str, now: i64) -> Result<bool> {
        if !self.claims() {
            return Ok(true);
        }
        if self.released() {
            return Ok(false);
        }
        let done = sqlx::query(
            "INSERT INTO worker_leases (name, owner, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at
             WHERE worker_leases.owner = excluded.owner OR worker_leases.expires_at <= $4",
        )
        .bind(name)
        .bind(self.instance_id())
        .bind(now + self.lease_ms())
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives back every claim this instance holds, so another instance takes the rows at once:
    /// called on a clean shutdown, after the workers stopped. A batch that was being pushed when
    /// they stopped may be pushed again by another instance (at least once, never lost).
    pub async fn release_leases(&self) -> Result<()> {
        self.released.store(true, Ordering::Release);
        if !self.claims() {
            return Ok(());
        }
        for table in [
            "outbox",
            "google_pending",
            "google_messages",
            "webhook_deliveries",
        ] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE {table} SET claimed_by = NULL, claimed_until = NULL WHERE claimed_by = $1"
            )))
            .bind(self.instance_id())
            .execute(&self.pool)
            .await?;
        }
        sqlx::query("DELETE FROM worker_leases WHERE owner = $1")
            .bind(self.instance_id())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Rows of `table` claimed by any instance and not yet released, for tests and metrics.
    pub async fn claimed_rows(&self, table: &str, owner: Option<&str>) -> Result<i64> {
        let allowed = [
            "outbox",
            "google_pending",
            "google_messages",
            "webhook_deliveries",
        ];
        let table = allowed
            .iter()
            .find(|t| **t == table)
            .ok_or(super::StorageError::NotFound("claim table"))?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE claimed_by IS NOT NULL AND ($1 = '' OR claimed_by = $1)"
        )))
        .bind(owner.unwrap_or(""))
        .fetch_one(&self.pool)
        .await?;
        super::rows::int(&row, "n")
    }
}
