//! Webhook endpoints and their deliveries. The fan-out (`fan_out_events`, a single job under
//! the `webhooks` lease) turns events past its cursor into one delivery row per endpoint that
//! wants them; the delivery worker claims due rows (`due_deliveries`: `FOR UPDATE SKIP LOCKED`
//! with `claimed_by`/`claimed_until` on PostgreSQL, like the outbox), sends them and settles
//! each (`settle_delivery`). A row is the delivery log: status, attempts, latency.

use sqlx::Row;

use super::events::{EventRecord, Position};
use super::{Result, StorageError, Store, new_id, rows};
use crate::privacy::Field;

/// A webhook endpoint (its secret stays sealed until a delivery needs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub url: String,
    pub description: String,
    /// Event types it wants; empty for all.
    pub types: Vec<String>,
    pub created_at: i64,
    pub failing_since: Option<i64>,
    pub disabled_at: Option<i64>,
}

/// One delivery of one event to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub created_at: i64,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    pub attempts: i64,
    pub next_at: Option<i64>,
    pub last_status: Option<i64>,
    pub last_error: Option<String>,
    pub latency_ms: Option<i64>,
    pub last_attempt_at: Option<i64>,
    pub delivered_at: Option<i64>,
}

/// A claimed delivery with what sending it needs.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: String,
    pub webhook_id: String,
    pub url: String,
    /// The endpoint's signing secret, opened.
    pub secret: String,
    pub attempts: i64,
    pub created_at: i64,
    /// `None` when the event is no longer kept.
    pub event: Option<EventRecord>,
    pub event_id: String,
}

/// How one attempt went.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub at: i64,
    pub status: Option<i64>,
    pub error: Option<String>,
    pub latency_ms: i64,
    pub ok: bool,
    /// When to try again; `None` gives up (or, with `ok`, is done).
    pub retry_at: Option<i64>,
    /// Disable the endpoint if it has been failing since before this (ms).
    pub disable_failing_before: i64,
}

const WEBHOOK_COLUMNS: &str = "id, url, description, types, created_at, failing_since, disabled_at";
const DELIVERY_COLUMNS: &str = "id, webhook_id, event_id, created_at, status, attempts, next_at, last_status, last_error, latency_ms, last_attempt_at, delivered_at";

impl Store {
    /// Stores an endpoint; its secret sealed with the key ring.
    pub async fn insert_webhook(&self, w: &Webhook, secret: &str) -> Result<()> {
        let ring = self.key_ring()?;
        let sealed = ring.seal(Field::WebhookSecret, &w.id, secret);
        sqlx::query(
            "INSERT INTO webhooks (id, url, description, types, secret, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&w.id)
        .bind(&w.url)
        .bind(&w.description)
        .bind(w.types.join(","))
        .bind(sealed)
        .bind(w.created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_webhooks(&self) -> Result<Vec<Webhook>> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks ORDER BY created_at, id");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(webhook)
            .collect()
    }

    pub async fn get_webhook(&self, id: &str) -> Result<Webhook> {
        let sql = format!("SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("webhook"))?;
        webhook(&row)
    }

    /// The endpoint's signing secret, opened (a test ping signs with it).
    pub async fn webhook_secret(&self, id: &str) -> Result<String> {
        let row = sqlx::query("SELECT secret FROM webhooks WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("webhook"))?;
        self.open_secret(id, &row.try_get::<String, _>("secret")?)
    }

    fn open_secret(&self, id: &str, sealed: &str) -> Result<String> {
        self.key_ring()?
            .open(Field::WebhookSecret, id, sealed)
            .map_err(|e| StorageError::Privacy(format!("the secret of webhook {id}: {e}")))
    }

    /// Deletes an endpoint and its deliveries; `false` when there was none.
    pub async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let (_turn, mut tx) = self.write_tx().await?;
        sqlx::query("DELETE FROM webhook_deliveries WHERE webhook_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = sqlx::query("DELETE FROM webhooks WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    /// Turns a disabled endpoint back on; its given-up deliveries stay as they are.
    pub async fn enable_webhook(&self, id: &str) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE webhooks SET disabled_at = NULL, failing_since = NULL WHERE id = $1",
        )
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// One fan-out step: events past the `webhooks` cursor (at most `limit`) become delivery
    /// rows for each enabled endpoint that wants them and existed when they happened, and the
    /// cursor moves past them, in one transaction. The cursor moves only from where this step
    /// read it (compare and set), so two instances never both fan out one event; a row
    /// written twice is ignored (`UNIQUE (webhook_id, event_id)`). Returns how many events it
    /// passed.
    pub async fn fan_out_events(&self, now: i64, limit: i64) -> Result<usize> {
        let row = sqlx::query("SELECT xid, seq FROM event_cursors WHERE name = 'webhooks'")
            .fetch_one(&self.pool)
            .await?;
        let from = Position {
            xid: rows::int(&row, "xid")?,
            seq: rows::int(&row, "seq")?,
        };
        let events = self.events_after(from, &[], limit).await?;
        let Some(last) = events.last().map(|e| e.position) else {
            return Ok(0);
        };
        let hooks: Vec<Webhook> = self
            .list_webhooks()
            .await?
            .into_iter()
            .filter(|w| w.disabled_at.is_none())
            .collect();
        self.yield_to_postings().await;
        let (_turn, mut tx) = self.write_tx().await?;
        let moved = sqlx::query(
            "UPDATE event_cursors SET xid = $1, seq = $2 WHERE name = 'webhooks' AND xid = $3 AND seq = $4",
        )
        .bind(last.xid)
        .bind(last.seq)
        .bind(from.xid)
        .bind(from.seq)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved != 1 {
            // Another instance moved it first: its step wrote these rows.
            return Ok(0);
        }
        let rows: Vec<(&Webhook, &EventRecord)> = events
            .iter()
            .flat_map(|e| {
                hooks
                    .iter()
                    .filter(move |w| {
                        e.created_at >= w.created_at
                            && (w.types.is_empty() || w.types.contains(&e.kind))
                    })
                    .map(move |w| (w, e))
            })
            .collect();
        for chunk in rows.chunks(200) {
            let values = (0..chunk.len())
                .map(|k| format!("(${}, ${}, ${}, $1, $1)", 2 + 3 * k, 3 + 3 * k, 4 + 3 * k))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, created_at, next_at) VALUES {values}
                 ON CONFLICT (webhook_id, event_id) DO NOTHING"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for (w, e) in chunk {
                q = q.bind(new_id()).bind(&w.id).bind(&e.id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(events.len())
    }

    /// Deliveries due by `now` of enabled endpoints, at most `limit`, oldest first; on
    /// PostgreSQL claimed for this instance in the same statement.
    pub async fn due_deliveries(&self, now: i64, limit: i64) -> Result<Vec<DueDelivery>> {
        const SELECT: &str = "SELECT d.id, d.webhook_id, d.event_id, d.attempts, d.created_at, w.url, w.secret,
                    e.seq, e.type, e.version, e.program_id, e.member_id, e.payload, e.created_at AS event_at, e.xid
             FROM d JOIN webhooks w ON w.id = d.webhook_id
             LEFT JOIN events e ON e.id = d.event_id
             ORDER BY d.next_at, d.id";
        if self.released() {
            return Ok(Vec::new());
        }
        let rows = if self.claims() {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH d AS (
                   UPDATE webhook_deliveries SET claimed_by = $3, claimed_until = $4
                   WHERE id IN (SELECT dd.id FROM webhook_deliveries dd JOIN webhooks ww ON ww.id = dd.webhook_id
                                WHERE dd.next_at <= $1 AND ww.disabled_at IS NULL
                                  AND (dd.claimed_until IS NULL OR dd.claimed_until <= $1)
                                ORDER BY dd.next_at LIMIT $2 FOR UPDATE OF dd SKIP LOCKED)
                   RETURNING id, webhook_id, event_id, attempts, created_at, next_at)
                 {SELECT}"
            )))
            .bind(now)
            .bind(limit)
            .bind(self.instance_id())
            .bind(now + self.lease_ms())
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH d AS (
                   SELECT dd.id, dd.webhook_id, dd.event_id, dd.attempts, dd.created_at, dd.next_at
                   FROM webhook_deliveries dd JOIN webhooks ww ON ww.id = dd.webhook_id
                   WHERE dd.next_at <= $1 AND ww.disabled_at IS NULL
                   ORDER BY dd.next_at LIMIT $2)
                 {SELECT}"
            )))
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let webhook_id: String = r.try_get("webhook_id")?;
            // A secret the ring cannot open stops only its own endpoint's deliveries (the
            // claim runs out and the row is tried again), never the others'.
            let secret = match self.open_secret(&webhook_id, &r.try_get::<String, _>("secret")?) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(webhook = %webhook_id, error = %e, "cannot sign a webhook delivery");
                    continue;
                }
            };
            let event = match r.try_get::<Option<String>, _>("type")? {
                None => None,
                Some(kind) => {
                    let payload: String = r.try_get("payload")?;
                    Some(EventRecord {
                        id: r.try_get("event_id")?,
                        kind,
                        version: rows::int(r, "version")?,
                        program_id: r.try_get("program_id")?,
                        member_id: r.try_get("member_id")?,
                        payload: serde_json::from_str(&payload)
                            .map_err(|e| StorageError::Corrupt(format!("event payload: {e}")))?,
                        created_at: rows::int(r, "event_at")?,
                        position: Position {
                            xid: rows::int(r, "xid")?,
                            seq: rows::int(r, "seq")?,
                        },
                    })
                }
            };
            out.push(DueDelivery {
                id: r.try_get("id")?,
                url: r.try_get("url")?,
                secret,
                attempts: rows::int(r, "attempts")?,
                created_at: rows::int(r, "created_at")?,
                event_id: r.try_get("event_id")?,
                event,
                webhook_id,
            });
        }
        Ok(out)
    }

    /// Records one attempt of a delivery and its endpoint's health, and gives its claim back.
    pub async fn settle_delivery(&self, d: &DueDelivery, a: &Attempt) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        let status = match (a.ok, a.retry_at) {
            (true, _) => "delivered",
            (false, Some(_)) => "pending",
            (false, None) => "failed",
        };
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $2, attempts = attempts + 1, next_at = $3,
                    last_status = $4, last_error = $5, latency_ms = $6, last_attempt_at = $7,
                    delivered_at = CASE WHEN $8 = 1 THEN $7 ELSE delivered_at END,
                    claimed_by = NULL, claimed_until = NULL
             WHERE id = $1",
        )
        .bind(&d.id)
        .bind(status)
        .bind(if a.ok { None } else { a.retry_at })
        .bind(a.status)
        .bind(&a.error)
        .bind(a.latency_ms)
        .bind(a.at)
        .bind(a.ok as i64)
        .execute(&mut *tx)
        .await?;
        if a.ok {
            sqlx::query("UPDATE webhooks SET failing_since = NULL WHERE id = $1 AND failing_since IS NOT NULL")
                .bind(&d.webhook_id)
                .execute(&mut *tx)
                .await?;
        } else {
            sqlx::query(
                "UPDATE webhooks SET failing_since = COALESCE(failing_since, $2),
                        disabled_at = CASE WHEN disabled_at IS NULL AND failing_since IS NOT NULL
                                            AND failing_since < $3 THEN $2 ELSE disabled_at END
                 WHERE id = $1",
            )
            .bind(&d.webhook_id)
            .bind(a.at)
            .bind(a.disable_failing_before)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An endpoint's deliveries, newest first, before `(created_at, id)`.
    pub async fn webhook_deliveries(
        &self,
        webhook_id: &str,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Delivery>> {
        let (at, id) = before.unwrap_or((i64::MAX, String::new()));
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1
               AND (created_at < $2 OR (created_at = $2 AND id < $3) OR $4 = 1)
             ORDER BY created_at DESC, id DESC LIMIT $5"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(webhook_id)
            .bind(at)
            .bind(id.clone())
            .bind((id.is_empty() && at == i64::MAX) as i64)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(delivery)
            .collect()
    }

    /// Queues `events` for the endpoint again, due now: a row delivered or given up starts
    /// over (attempts kept in the log), a pending one is made due. Returns how many.
    pub async fn redeliver(&self, webhook_id: &str, event_ids: &[String], now: i64) -> Result<u64> {
        let (_turn, mut tx) = self.write_tx().await?;
        let mut n = 0;
        for chunk in event_ids.chunks(200) {
            let values = (0..chunk.len())
                .map(|k| format!("(${}, $1, ${}, $2, $2)", 3 + 2 * k, 4 + 2 * k))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO webhook_deliveries (id, webhook_id, event_id, created_at, next_at) VALUES {values}
                 ON CONFLICT (webhook_id, event_id) DO UPDATE SET status = 'pending', next_at = excluded.next_at"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(webhook_id)
                .bind(now);
            for e in chunk {
                q = q.bind(new_id()).bind(e);
            }
            n += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(n)
    }
}

fn webhook(r: &sqlx::any::AnyRow) -> Result<Webhook> {
    let types: String = r.try_get("types")?;
    Ok(Webhook {
        id: r.try_get("id")?,
        url: r.try_get("url")?,
        description: r.try_get("description")?,
        types: types
            .split(',')
            .filter(|t| !t.is_empty())
            .map(String::from)
            .collect(),
        created_at: rows::int(r, "created_at")?,
        failing_since: r.try_get("failing_since")?,
        disabled_at: r.try_get("disabled_at")?,
    })
}

fn delivery(r: &sqlx::any::AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get("id")?,
        webhook_id: r.try_get("webhook_id")?,
        event_id: r.try_get("event_id")?,
        created_at: rows::int(r, "created_at")?,
        status: r.try_get("status")?,
        attempts: rows::int(r, "attempts")?,
        next_at: r.try_get("next_at")?,
        last_status: r.try_get("last_status")?,
        last_error: r.try_get("last_error")?,
        latency_ms: r.try_get("latency_ms")?,
        last_attempt_at: r.try_get("last_attempt_at")?,
        delivered_at: r.try_get("delivered_at")?,
    })
}
