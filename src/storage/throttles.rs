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

    /// Takes one sign-in attempt against each of `keys` in one transaction holding their
    /// rows: the longest wait in ms if any key must still wait (nothing counted), else 0 with
    /// the attempt counted. Past `free` attempts each makes the key wait 1 s, 2 s, 4 s, ... up
    /// to `max_ms`, so parallel guesses on several instances are each counted before any is
    /// checked.
    pub async fn sign_in_attempt(
        &self,
        keys: &[&str],
        now: i64,
        free: i64,
        max_ms: i64,
    ) -> Result<i64> {
        let mut keys = keys.to_vec();
        keys.sort_unstable(); // one lock order for every instance
        let mut tx = self.pool.begin().await?;
        let mut wait = 0;
        for key in &keys {
            sqlx::query(
                "INSERT INTO sign_in_failures (key, failures, until) VALUES ($1, 0, 0)
                 ON CONFLICT (key) DO NOTHING",
            )
            .bind(*key)
            .execute(&mut *tx)
            .await?;
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT until FROM sign_in_failures WHERE key = $1{}",
                self.for_update()
            )))
            .bind(*key)
            .fetch_one(&mut *tx)
            .await?;
            wait = wait.max(row.try_get::<i64, _>("until")? - now);
        }
        if wait > 0 {
            tx.commit().await?;
            return Ok(wait);
        }
        for key in &keys {
            sqlx::query(
                "UPDATE sign_in_failures SET failures = failures + 1,
                   until = CASE WHEN failures + 1 > $3
                           THEN $2 + LEAST(1000::BIGINT << LEAST(failures - $3, 20)::INT, $4)
                           ELSE until END
                 WHERE key = $1",
            )
            .bind(*key)
            .bind(now)
            .bind(free)
            .bind(max_ms)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(0)
    }

    /// After a correct password: clears `clear` and takes back one attempt of `refund`.
    pub async fn sign_in_succeeded(&self, clear: &[&str], refund: &[&str]) -> Result<()> {
        for key in clear {
            sqlx::query("DELETE FROM sign_in_failures WHERE key = $1")
                .bind(*key)
                .execute(&self.pool)
                .await?;
        }
        for key in refund {
            sqlx::query(
                "UPDATE sign_in_failures SET failures = GREATEST(failures - 1, 0) WHERE key = $1",
            )
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
