//! Throttle state shared by the instances on one PostgreSQL database (`ratelimit`): a GCRA
//! arrival time per key, and failed staff sign-ins per key. SQLite's one process keeps both in
//! memory and never calls these.

use sqlx::Row;

use super::{Result, Store, rows};

impl Store {
    /// One request for `key` under GCRA (emission interval `interval_ms`, `tolerance_ms` of
    /// burst), in one statement: `Ok(None)` when allowed, `Ok(Some(wait_ms))` when over quota.
    pub async fn throttle_hit(
        &self,
        key: &str,
        now: i64,
        interval_ms: i64,
        tolerance_ms: i64,
    ) -> Result<Option<i64>> {
        let allowed = sqlx::query(
            "INSERT INTO throttles (key, tat) VALUES ($1, $2 + $3)
             ON CONFLICT (key) DO UPDATE SET tat = GREATEST(throttles.tat, $2) + $3
             WHERE GREATEST(throttles.tat, $2) - $2 <= $4
             RETURNING tat",
        )
        .bind(key)
        .bind(now)
        .bind(interval_ms)
        .bind(tolerance_ms)
        .fetch_optional(&self.pool)
        .await?;
        if allowed.is_some() {
            return Ok(None);
        }
        let tat = sqlx::query("SELECT tat FROM throttles WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .map(|r| rows::int(&r, "tat"))
            .transpose()?
            .unwrap_or(now);
        Ok(Some((tat - now - tolerance_ms).max(1)))
    }

    /// How long (ms) the longest-waiting of `keys` must still wait after failed sign-ins.
    pub async fn sign_in_wait(&self, keys: &[&str], now: i64) -> Result<i64> {
        let mut wait = 0;
        for key in keys {
            let row = sqlx::query("SELECT until FROM sign_in_failures WHERE key = $1")
                .bind(*key)
                .fetch_optional(&self.pool)
                .await?;
            if let Some(r) = row {
                wait = wait.max(r.try_get::<i64, _>("until")? - now);
            }
        }
        Ok(wait.max(0))
    }

    /// Counts a failed sign-in against each of `keys`: past `free` failures each makes the key
    /// wait 1 s, 2 s, 4 s, ... up to `max_ms`, computed in the UPSERT so instances never lose a
    /// count to each other.
    pub async fn sign_in_failed(
        &self,
        keys: &[&str],
        now: i64,
        free: i64,
        max_ms: i64,
    ) -> Result<()> {
        for key in keys {
            sqlx::query(
                "INSERT INTO sign_in_failures (key, failures, until)
                 VALUES ($1, 1, CASE WHEN 1 > $3 THEN $2 + LEAST(1000, $4) ELSE $2 END)
                 ON CONFLICT (key) DO UPDATE SET
                   failures = sign_in_failures.failures + 1,
                   until = CASE WHEN sign_in_failures.failures + 1 > $3
                           THEN $2 + LEAST(1000::BIGINT << LEAST(sign_in_failures.failures - $3, 20)::INT, $4)
                           ELSE sign_in_failures.until END",
            )
            .bind(*key)
            .bind(now)
            .bind(free)
            .bind(max_ms)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Clears `keys` after a successful sign-in.
    pub async fn sign_in_succeeded(&self, keys: &[&str]) -> Result<()> {
        for key in keys {
            sqlx::query("DELETE FROM sign_in_failures WHERE key = $1")
                .bind(*key)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Forgets throttle state that no longer limits anyone (the ledger job, hourly enough).
    pub async fn purge_throttles(&self, now: i64) -> Result<()> {
        if self.claims() {
            sqlx::query("DELETE FROM throttles WHERE tat < $1")
                .bind(now)
                .execute(&self.pool)
                .await?;
            sqlx::query("DELETE FROM sign_in_failures WHERE until < $1")
                .bind(now - 3_600_000)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }
}
