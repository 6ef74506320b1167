//! Google Wallet sync state: synced classes and objects, the notification budget, and the
//! queue of members whose object is out of date.

use std::sync::atomic::Ordering;

use sqlx::Row;

use super::{Result, Store};
use crate::domain::google_notify::NotifyPolicy;

/// The UPSERT that queues a member for a Google sync; `?`s are member id, time, time. A row
/// whose last try Google refused (`last_status` set) is brought forward: the change may be what
/// lets it pass, and the card must not wait out the hour behind a change. A row backing off
/// from an outage keeps its time.
pub(super) const QUEUE_SQL: &str =
    "INSERT INTO google_pending (member_id, queued_at, available_at) VALUES (?, ?, ?)
     ON CONFLICT (member_id) DO UPDATE SET queued_at = excluded.queued_at,
        available_at = CASE WHEN google_pending.last_status IS NOT NULL
                            THEN excluded.available_at ELSE google_pending.available_at END";

/// A member waiting for its object to be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GooglePending {
    pub member_id: String,
    pub queued_at: i64,
    pub attempts: i64,
}

/// A message waiting to be added to one card.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleMessage {
    pub message_id: String,
    pub member_id: String,
    pub header: String,
    pub body: String,
    pub attempts: i64,
}

/// What was last written to Google for a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleObject {
    pub object_id: String,
    pub class_id: String,
    pub synced_points: i64,
    pub synced_at: i64,
    /// The pass version (`passes.updated_at`) Google got.
    pub synced_version: i64,
    /// The tier id Google shows.
    pub synced_tier: Option<String>,
    /// The pass the object shows; a reissued card gets a new object.
    pub serial_number: Option<String>,
}

/// A member's Google sync status, for the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoogleSyncStatus {
    /// A change waits to be written (or a failed write waits for its retry).
    pub pending: bool,
    /// Failed tries since the last success.
    pub attempts: i64,
    /// Why the last try failed, while the row waits.
    pub last_error: Option<String>,
    /// When the next try is due, while the row waits.
    pub next_attempt_at: Option<i64>,
    /// Messages Google refused until their attempt limit, with the last reason.
    pub failed_messages: Vec<(String, String)>,
}

impl Store {
    /// From now on every ledger change and new member also queues a Google sync.
    pub fn enable_google_sync(&self) {
        self.google.store(true, Ordering::Release);
    }

    pub(super) fn google_sync(&self) -> bool {
        self.google.load(Ordering::Acquire)
    }

    /// Queues `member_id` (no-op when already queued, except that the change time moves).
    pub async fn queue_google_sync(&self, member_id: &str, now: i64) -> Result<()> {
        sqlx::query(sqlx::AssertSqlSafe(numbered(QUEUE_SQL)))
            .bind(member_id)
            .bind(now)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn google_due(&self, now: i64, limit: i64) -> Result<Vec<GooglePending>> {
        if self.released() {
            return Ok(Vec::new());
        }
        let rows = if self.claims() {
            // Claimed for one lease, skipping rows another instance holds (`leases`).
            sqlx::query(
                "UPDATE google_pending SET claimed_by = $3, claimed_until = $4
                 WHERE member_id IN (SELECT member_id FROM google_pending
                                     WHERE available_at <= $1
                                       AND (claimed_until IS NULL OR claimed_until <= $1)
                                     ORDER BY available_at, member_id LIMIT $2
                                     FOR UPDATE SKIP LOCKED)
                 RETURNING member_id, queued_at, attempts",
            )
            .bind(now)
            .bind(limit)
            .bind(self.instance_id())
            .bind(now + self.lease_ms())
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(
                "SELECT member_id, queued_at, attempts FROM google_pending WHERE available_at <= $1
                 ORDER BY available_at, member_id LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        };
        rows.iter()
            .map(|r| {
                Ok(GooglePending {
                    member_id: r.try_get("member_id")?,
                    queued_at: r.try_get("queued_at")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// Done with `p`: forgets it unless another change queued it again meanwhile, in which
    /// case the claim is given back so the next pass (of any instance) syncs it again.
    pub async fn google_done(&self, p: &GooglePending) -> Result<()> {
        let done =
            sqlx::query("DELETE FROM google_pending WHERE member_id = $1 AND queued_at = $2")
                .bind(&p.member_id)
                .bind(p.queued_at)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 && self.claims() {
            sqlx::query(
                "UPDATE google_pending SET claimed_by = NULL, claimed_until = NULL
                 WHERE member_id = $1 AND claimed_by = $2",
            )
            .bind(&p.member_id)
            .bind(self.instance_id())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Try `p` again at `at`, recording why it failed. `refused` is the HTTP status when Google
    /// refused the card (0 for our configuration), `None` for an outage: a refused row is
    /// brought forward by the member's next change (`QUEUE_SQL`). Like `google_done`, this
    /// matches on `queued_at`: a change queued while `p` was in flight is newer than what
    /// failed, so its row keeps its own time (due now) and counts no failure, and only the
    /// claim is given back. Only a row this instance holds (or no one does) is touched.
    pub async fn google_retry(
        &self,
        p: &GooglePending,
        at: i64,
        error: &str,
        refused: Option<u16>,
    ) -> Result<()> {
        let failed = sqlx::query(
            "UPDATE google_pending SET attempts = attempts + 1, last_error = $3, last_status = $4,
                    available_at = $2, claimed_by = NULL, claimed_until = NULL
             WHERE member_id = $1 AND queued_at = $5 AND (claimed_by IS NULL OR claimed_by = $6)",
        )
        .bind(&p.member_id)
        .bind(at)
        .bind(error)
        .bind(refused.map(i64::from))
        .bind(p.queued_at)
        .bind(self.instance_id())
        .execute(&self.pool)
        .await?;
        if failed.rows_affected() == 0 && self.claims() {
            sqlx::query(
                "UPDATE google_pending SET claimed_by = NULL, claimed_until = NULL
                 WHERE member_id = $1 AND claimed_by = $2",
            )
            .bind(&p.member_id)
            .bind(self.instance_id())
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Makes refused rows due now (after a fix: a class written again, a restart with new
    /// configuration), all of them or those of one template's cards.
    pub async fn google_retry_refused(&self, template_id: Option<&str>, now: i64) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE google_pending SET available_at = $1
             WHERE last_status IS NOT NULL AND available_at > $1
               AND (claimed_by IS NULL OR claimed_by = $2)
               AND ($3 IS NULL OR member_id IN (SELECT member_id FROM passes WHERE template_id = $3))",
        )
        .bind(now)
        .bind(self.instance_id())
        .bind(template_id)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The member's sync status: the pending row if any, and messages given up.
    pub async fn google_sync_status(&self, member_id: &str) -> Result<GoogleSyncStatus> {
        let row = sqlx::query(
            "SELECT attempts, last_error, available_at FROM google_pending WHERE member_id = $1",
        )
        .bind(member_id)
        .fetch_optional(&self.pool)
        .await?;
        let failed = sqlx::query(
            "SELECT message_id, last_error FROM google_messages
             WHERE member_id = $1 AND failed_at IS NOT NULL ORDER BY failed_at, message_id",
        )
        .bind(member_id)
        .fetch_all(&self.pool)
        .await?;
        let failed_messages = failed
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("message_id")?,
                    r.try_get::<Option<String>, _>("last_error")?
                        .unwrap_or_default(),
                ))
            })
            .collect::<Result<_>>()?;
        Ok(match row {
            Some(r) => GoogleSyncStatus {
                pending: true,
                attempts: r.try_get("attempts")?,
                last_error: r.try_get("last_error")?,
                next_attempt_at: Some(r.try_get("available_at")?),
                failed_messages,
            },
            None => GoogleSyncStatus {
                pending: false,
                attempts: 0,
                last_error: None,
                next_attempt_at: None,
                failed_messages,
            },
        })
    }

    /// Google no longer has the template's class: the next sync inserts it again.
    pub async fn forget_google_class(&self, template_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM google_classes WHERE template_id = $1")
            .bind(template_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn google_pending_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM google_pending")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    pub async fn google_class_version(&self, template_id: &str) -> Result<Option<i64>> {
        let row = sqlx::query("SELECT version FROM google_classes WHERE template_id = $1")
            .bind(template_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("version")).transpose()?)
    }

    pub async fn record_google_class(
        &self,
        template_id: &str,
        class_id: &str,
        version: i64,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO google_classes (template_id, class_id, version, synced_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (template_id) DO UPDATE SET class_id = excluded.class_id, version = excluded.version, synced_at = excluded.synced_at",
        )
        .bind(template_id)
        .bind(class_id)
        .bind(version)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Records a verified callback; `false` when its nonce was seen before (nothing changes).
    pub async fn record_google_event(
        &self,
        nonce: &str,
        object_id: &str,
        event_type: &str,
        now: i64,
    ) -> Result<bool> {
        let (_turn, mut tx) = self.write_tx().await?;
        let done = sqlx::query(
            "INSERT INTO google_events (nonce, object_id, member_id, event_type, received_at)
             SELECT $1, $2, (SELECT member_id FROM google_objects WHERE object_id = $2), $3, $4
             ON CONFLICT (nonce) DO NOTHING",
        )
        .bind(nonce)
        .bind(object_id)
        .bind(event_type)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let kind = match event_type {
            "save" => Some(super::events::kinds::CARD_INSTALLED),
            "del" | "delete" => Some(super::events::kinds::CARD_REMOVED),
            _ => None,
        };
        if let (1, Some(kind)) = (done.rows_affected(), kind) {
            let member = sqlx::query("SELECT member_id FROM google_objects WHERE object_id = $1")
                .bind(object_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(member) = member {
                let member: String = member.try_get("member_id")?;
                let event = super::events::NewEvent::new(
                    kind,
                    &member,
                    serde_json::json!({"wallet": "google", "object_id": object_id}),
                );
                self.record_events(&mut tx, &[event], now).await?;
            }
        }
        tx.commit().await?;
        Ok(done.rows_affected() == 1)
    }

    /// The member's last save or delete event from Google: `Some(true)` when the card is in a
    /// Google Wallet, `None` when Google never said.
    pub async fn google_saved(&self, member_id: &str) -> Result<Option<bool>> {
        let row = sqlx::query(
            "SELECT event_type FROM google_events WHERE member_id = $1 ORDER BY received_at DESC, nonce DESC LIMIT 1",
        )
        .bind(member_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| r.try_get::<String, _>("event_type"))
            .transpose()?
            .map(|e| e == "save"))
    }

    pub async fn google_event_count(&self, object_id: &str) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM google_events WHERE object_id = $1")
            .bind(object_id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Queues a message for one member's card; `false` when this message id was queued for it
    /// before (a retried request).
    pub async fn queue_google_message(
        &self,
        message_id: &str,
        member_id: &str,
        header: &str,
        body: &str,
        now: i64,
    ) -> Result<bool> {
        // Nothing is queued for a member who refused or withdrew marketing.
        let sql = format!(
            "INSERT INTO google_messages (message_id, member_id, header, body, created_at, available_at)
             SELECT $1, $2, $3, $4, $5, $5 WHERE {}
             ON CONFLICT (message_id, member_id) DO NOTHING",
            super::withdrawal::marketing_allowed("$2")
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(message_id)
            .bind(member_id)
            .bind(header)
            .bind(body)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Queues a message for every card of a template, in one statement; returns how many were
    /// newly queued.
    pub async fn queue_google_message_for_template(
        &self,
        message_id: &str,
        template_id: &str,
        header: &str,
        body: &str,
        now: i64,
    ) -> Result<u64> {
        // Live cards only, and no member who refused or withdrew marketing.
        let sql = format!(
            "INSERT INTO google_messages (message_id, member_id, header, body, created_at, available_at)
             SELECT $1, member_id, $3, $4, $5, $5 FROM passes
             WHERE template_id = $2 AND ended_at IS NULL AND {}
             ON CONFLICT (message_id, member_id) DO NOTHING",
            super::withdrawal::marketing_allowed("passes.member_id")
        );
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(message_id)
            .bind(template_id)
            .bind(header)
            .bind(body)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    pub async fn google_messages_due(&self, now: i64, limit: i64) -> Result<Vec<GoogleMessage>> {
        if self.released() {
            return Ok(Vec::new());
        }
        let rows = if self.claims() {
            sqlx::query(
                "UPDATE google_messages SET claimed_by = $3, claimed_until = $4
                 WHERE (message_id, member_id) IN (
                     SELECT message_id, member_id FROM google_messages
                     WHERE sent_at IS NULL AND failed_at IS NULL AND available_at <= $1
                       AND (claimed_until IS NULL OR claimed_until <= $1)
                     ORDER BY available_at, message_id, member_id LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                 RETURNING message_id, member_id, header, body, attempts",
            )
            .bind(now)
            .bind(limit)
            .bind(self.instance_id())
            .bind(now + self.lease_ms())
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(
                "SELECT message_id, member_id, header, body, attempts FROM google_messages
                 WHERE sent_at IS NULL AND failed_at IS NULL AND available_at <= $1
                 ORDER BY available_at, message_id, member_id LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
        };
        rows.iter()
            .map(|r| {
                Ok(GoogleMessage {
                    message_id: r.try_get("message_id")?,
                    member_id: r.try_get("member_id")?,
                    header: r.try_get("header")?,
                    body: r.try_get("body")?,
                    attempts: r.try_get("attempts")?,
                })
            })
            .collect()
    }

    /// A message was added to the card; `notified` records it against the budget.
    /// Whether a claimed message may still go out: not sent, not dropped by a consent
    /// withdrawal since it was claimed, and the member's marketing not refused. Read right
    /// before the call to Google, so a withdrawal during a batch stops the messages after it.
    pub async fn google_message_still_due(&self, m: &GoogleMessage) -> Result<bool> {
        let sql = format!(
            "SELECT 1 AS one FROM google_messages g
             WHERE g.message_id = $1 AND g.member_id = $2 AND g.sent_at IS NULL
               AND g.failed_at IS NULL AND {}",
            super::withdrawal::marketing_allowed("g.member_id")
        );
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&m.message_id)
            .bind(&m.member_id)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    pub async fn google_message_done(
        &self,
        m: &GoogleMessage,
        object_id: &str,
        notified: bool,
        now: i64,
    ) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        // Kept as sent, not deleted: a retried request with the same message id then queues
        // nothing (`queue_google_message*` insert with ON CONFLICT DO NOTHING).
        sqlx::query(
            "UPDATE google_messages SET sent_at = $3, claimed_by = NULL, claimed_until = NULL
             WHERE message_id = $1 AND member_id = $2",
        )
        .bind(&m.message_id)
        .bind(&m.member_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if notified {
            sqlx::query("INSERT INTO google_notifications (object_id, sent_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(object_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Try `m` again at `at`; only a row this instance holds (or no one does) is touched.
    pub async fn google_message_retry(
        &self,
        m: &GoogleMessage,
        at: i64,
        error: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE google_messages SET attempts = attempts + 1, available_at = $3, last_error = $4,
                    claimed_by = NULL, claimed_until = NULL
             WHERE message_id = $1 AND member_id = $2 AND (claimed_by IS NULL OR claimed_by = $5)",
        )
        .bind(&m.message_id)
        .bind(&m.member_id)
        .bind(at)
        .bind(error)
        .bind(self.instance_id())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Gives `m` up (its attempt limit is reached): kept with the reason, never sent again.
    pub async fn google_message_failed(
        &self,
        m: &GoogleMessage,
        error: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE google_messages SET attempts = attempts + 1, failed_at = $3, last_error = $4,
                    claimed_by = NULL, claimed_until = NULL
             WHERE message_id = $1 AND member_id = $2 AND (claimed_by IS NULL OR claimed_by = $5)",
        )
        .bind(&m.message_id)
        .bind(&m.member_id)
        .bind(now)
        .bind(error)
        .bind(self.instance_id())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets messages added to their cards before `before` (a retry of an older request
    /// would queue its message again; the same window as idempotency keys).
    pub async fn purge_sent_google_messages(&self, before: i64) -> Result<()> {
        sqlx::query(
            "DELETE FROM google_messages
             WHERE (sent_at IS NOT NULL AND sent_at < $1) OR (failed_at IS NOT NULL AND failed_at < $1)",
        )
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Templates whose Google class was written for an older version.
    pub async fn templates_ahead_of_google(&self) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT t.id FROM templates t JOIN google_classes g ON g.template_id = t.id WHERE g.version < t.version",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("id")?)).collect()
    }

    pub async fn google_object(&self, member_id: &str) -> Result<Option<GoogleObject>> {
        let row = sqlx::query("SELECT * FROM google_objects WHERE member_id = $1")
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(GoogleObject {
                object_id: r.try_get("object_id")?,
                class_id: r.try_get("class_id")?,
                synced_points: r.try_get("synced_points")?,
                synced_at: r.try_get("synced_at")?,
                synced_version: r.try_get("synced_version")?,
                synced_tier: r.try_get("synced_tier")?,
                serial_number: r.try_get("serial_number")?,
            })
        })
        .transpose()
    }

    /// Records a written object and, when it notified the holder, the notification.
    pub async fn record_google_object(
        &self,
        member_id: &str,
        o: &GoogleObject,
        notified: bool,
    ) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO google_objects (member_id, object_id, class_id, synced_points, synced_at, synced_version, synced_tier, serial_number)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (member_id) DO UPDATE SET object_id = excluded.object_id, class_id = excluded.class_id,
                 synced_points = excluded.synced_points, synced_at = excluded.synced_at, synced_version = excluded.synced_version,
                 synced_tier = excluded.synced_tier, serial_number = excluded.serial_number",
        )
        .bind(member_id)
        .bind(&o.object_id)
        .bind(&o.class_id)
        .bind(o.synced_points)
        .bind(o.synced_at)
        .bind(o.synced_version)
        .bind(&o.synced_tier)
        .bind(&o.serial_number)
        .execute(&mut *tx)
        .await?;
        if notified {
            sqlx::query("INSERT INTO google_notifications (object_id, sent_at) VALUES ($1, $2) ON CONFLICT DO NOTHING")
                .bind(&o.object_id)
                .bind(o.synced_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Notifications sent for `object_id` since `since`.
    pub async fn google_notifications_since(&self, object_id: &str, since: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM google_notifications WHERE object_id = $1 AND sent_at > $2",
        )
        .bind(object_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }
}

/// `?` placeholders as `$1, $2, ...` (both backends read those through the Any driver).
pub(super) fn numbered(sql: &str) -> String {
    let mut parts = sql.split('?');
    let mut out = parts.next().unwrap_or_default().to_string();
    for (i, part) in parts.enumerate() {
        out.push_str(&format!("${}{part}", i + 1));
    }
    out
}

impl Store {
    /// The program's Google notification policy; the default when none was set.
    pub async fn google_notify_policy(&self, program_id: &str) -> Result<NotifyPolicy> {
        let row = sqlx::query(
            "SELECT on_redemption, on_tier, min_points FROM google_notify_policies WHERE program_id = $1",
        )
        .bind(program_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map_or(Ok(NotifyPolicy::default()), |r| {
            Ok(NotifyPolicy {
                on_redemption: r.try_get::<i64, _>("on_redemption")? != 0,
                on_tier_change: r.try_get::<i64, _>("on_tier")? != 0,
                min_points: r.try_get("min_points")?,
            })
        })
    }

    pub async fn set_google_notify_policy(
        &self,
        program_id: &str,
        p: &NotifyPolicy,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO google_notify_policies (program_id, on_redemption, on_tier, min_points, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (program_id) DO UPDATE SET on_redemption = excluded.on_redemption,
                 on_tier = excluded.on_tier, min_points = excluded.min_points, updated_at = excluded.updated_at",
        )
        .bind(program_id)
        .bind(i64::from(p.on_redemption))
        .bind(i64::from(p.on_tier_change))
        .bind(p.min_points)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Whether the member redeemed points after `since` (the last sync).
    pub async fn redeemed_since(&self, member_id: &str, since: i64) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM ledger_entries WHERE member_id = $1 AND kind = 'redeem' AND created_at > $2",
        )
        .bind(member_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(super::rows::int(&row, "n")? > 0)
    }
}
