//! Benchmark baselines (feature `bench`), kept out of the release server.

use super::{Result, Store};

impl Store {
    /// Benchmark baseline table; see `bench_bare_insert`.
    pub async fn bench_prepare(&self) -> Result<()> {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS bench_bare (id TEXT PRIMARY KEY, v BIGINT NOT NULL)",
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Benchmark baseline: one single-row INSERT in its own write transaction, opened the way
    /// ledger writes open theirs.
    pub async fn bench_bare_insert(&self, id: &str, value: i64) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        sqlx::query("INSERT INTO bench_bare (id, v) VALUES ($1, $2)")
            .bind(id)
            .bind(value)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }
}
