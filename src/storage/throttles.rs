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
    /// rows: `Err(wait ms)` if any key must still wait (nothing counted), else each key with
    /// its wait from before (ms since the epoch), the attempt counted. Past `free` attempts
    /// each makes the key wait 1 s, 2 s, 4 s, ... up to `max_ms`, so parallel guesses on
    /// several instances are each counted before any is checked.
    pub async fn sign_in_attempt(
        &self,
        keys: &[&str],
        now: i64,
        free: i64,
        max_ms: i64,
    ) -> Result<std::result::Result<Vec<(String, i64)>, i64>> {
        let mut keys = keys.to_vec();
        keys.sort_unstable(); // one lock order for every instance
        let mut tx = self.pool.begin().await?;
        let mut previous = Vec::with_capacity(keys.len());
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
            previous.push(((*key).to_string(), row.try_get::<i64, _>("until")?));
        }
        let wait = previous
            .iter()
            .map(|(_, until)| until - now)
            .max()
            .unwrap_or(0);
        if wait > 0 {
            tx.commit().await?;
            return Ok(Err(wait));
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
        Ok(Ok(previous))
    }

    /// After a correct password: clears `clear`, and takes back one attempt of each key in
    /// `refund` with the wait it had before (`sign_in_attempt`'s answer).
    pub async fn sign_in_succeeded(&self, clear: &[&str], refund: &[(&str, i64)]) -> Result<()> {
        for key in clear {
            sqlx::query("DELETE FROM sign_in_failures WHERE key = $1")
                .bind(*key)
                .execute(&self.pool)
                .await?;
        }
        for (key, until) in refund {
            sqlx::query(
                "UPDATE sign_in_failures SET failures = GREATEST(failures - 1, 0), until = LEAST(until, $2)
                 WHERE key = $1",
            )
            .bind(*key)
            .bind(*until)
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
