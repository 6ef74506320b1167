//! Device registrations for the Apple PassKit web service.

use std::collections::BTreeMap;

use sqlx::{AssertSqlSafe, Row};

use super::cache::Stale;
use super::{Result, Store, rows};

/// A device registered for a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    pub device_library_identifier: String,
    pub push_token: String,
    pub created_at: i64,
    pub last_push_at: Option<i64>,
    /// `delivered`, `retry: ...` or `rejected: ...`.
    pub last_push_result: Option<String>,
}

impl Store {
    /// Upserts the device and its push token, then registers it for the pass. Returns `true`
    /// when the registration is new (201) and `false` when it existed (200).
    pub async fn register_device(
        &self,
        device: &str,
        push_token: &str,
        serial: &str,
        now: i64,
    ) -> Result<bool> {
        let (_turn, mut tx) = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO devices (device_library_identifier, push_token, created_at, updated_at) VALUES ($1, $2, $3, $3)
             ON CONFLICT (device_library_identifier) DO UPDATE SET push_token = excluded.push_token, updated_at = excluded.updated_at",
        )
        .bind(device)
        .bind(push_token)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO registrations (device_library_identifier, serial_number, created_at) VALUES ($1, $2, $3)
             ON CONFLICT (device_library_identifier, serial_number) DO NOTHING",
        )
        .bind(device)
        .bind(serial)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 1 {
            let payload = serde_json::json!({"wallet": "apple", "serial_number": serial});
            self.record_pass_event(
                &mut tx,
                serial,
                super::events::kinds::CARD_INSTALLED,
                payload,
                now,
            )
            .await?;
            super::cockpit::record_wallet_events(
                &mut tx,
                "install",
                now,
                "r.device_library_identifier = $2 AND r.serial_number = $3",
                &[device, serial],
            )
            .await?;
        }
        tx.commit().await?;
        self.forget(Stale::Devices(vec![device.to_owned()]));
        Ok(inserted.rows_affected() == 1)
    }

    /// Registers many `(device, push token, serial)` at once, in one transaction: load tests
    /// and the publishing test's ten thousand holders.
    pub async fn register_devices(
        &self,
        regs: &[(String, String, String)],
        now: i64,
    ) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        for chunk in regs.chunks(500) {
            let devices = (0..chunk.len())
                .map(|k| format!("(${}, ${}, $1, $1)", 2 + 2 * k, 3 + 2 * k))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO devices (device_library_identifier, push_token, created_at, updated_at) VALUES {devices}
                 ON CONFLICT (device_library_identifier) DO UPDATE SET push_token = excluded.push_token"
            )))
            .bind(now);
            for (device, token, _) in chunk {
                q = q.bind(device).bind(token);
            }
            q.execute(&mut *tx).await?;
            let rows = (0..chunk.len())
                .map(|k| format!("(${}, ${}, $1)", 2 + 2 * k, 3 + 2 * k))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO registrations (device_library_identifier, serial_number, created_at) VALUES {rows}
                 ON CONFLICT (device_library_identifier, serial_number) DO NOTHING"
            )))
            .bind(now);
            for (device, _, serial) in chunk {
                q = q.bind(device).bind(serial);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.forget(Stale::Devices(
            regs.iter().map(|(device, _, _)| device.clone()).collect(),
        ));
        Ok(())
    }

    /// Removes a registration, and the device once it holds no registrations [UPD].
    pub async fn unregister_device(&self, device: &str, serial: &str) -> Result<()> {
        let now = crate::domain::now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        super::cockpit::record_wallet_events(
            &mut tx,
            "remove",
            crate::domain::now_ms(),
            "r.device_library_identifier = $2 AND r.serial_number = $3",
            &[device, serial],
        )
        .await?;
        let removed = sqlx::query(
            "DELETE FROM registrations WHERE device_library_identifier = $1 AND serial_number = $2",
        )
        .bind(device)
        .bind(serial)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        sqlx::query(
            "DELETE FROM devices WHERE device_library_identifier = $1
             AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_library_identifier = $1)",
        )
        .bind(device)
        .execute(&mut *tx)
        .await?;
        if removed > 0 {
            let payload = serde_json::json!({"wallet": "apple", "serial_number": serial});
            self.record_pass_event(
                &mut tx,
                serial,
                super::events::kinds::CARD_REMOVED,
                payload,
                now,
            )
            .await?;
        }
        tx.commit().await?;
        if removed > 0 {
            self.forget(Stale::Devices(vec![device.to_owned()]));
        }
        Ok(())
    }

    /// How many of a template's passes changed at or after `since`.
    pub async fn passes_changed_since(&self, template_id: &str, since: i64) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM passes WHERE template_id = $1 AND updated_at >= $2",
        )
        .bind(template_id)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        rows::int(&row, "n")
    }

    /// Every pass of one type the device is registered for, with its version, by serial.
    pub async fn registered_versions(
        &self,
        device: &str,
        pass_type_identifier: &str,
    ) -> Result<Vec<(String, i64)>> {
        if let Some(known) = self.cache.registered(device, pass_type_identifier) {
            return Ok(known);
        }
        let generation = self.cache.generation();
        let rows = sqlx::query(
            "SELECT p.* FROM registrations r
             JOIN passes p ON p.serial_number = r.serial_number
             WHERE r.device_library_identifier = $1 AND p.pass_type_identifier = $2
             ORDER BY p.serial_number",
        )
        .bind(device)
        .bind(pass_type_identifier)
        .fetch_all(&self.pool)
        .await?;
        let passes = rows.iter().map(rows::pass).collect::<Result<Vec<_>>>()?;
        // An unknown device is not kept: made-up ids would only crowd out real ones.
        if let (Some(g), false) = (generation, passes.is_empty()) {
            self.cache
                .keep_registered(g, device, pass_type_identifier, &passes);
        }
        Ok(passes
            .into_iter()
            .map(|p| (p.serial_number, p.updated_at))
            .collect())
    }

    /// Notes when Wallet downloaded passes: `(serial, at)` pairs, in one transaction. A time
    /// older than the one stored is ignored.
    pub async fn mark_fetched(&self, fetches: &[(String, i64)]) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        super::cockpit::count_fetches_after_push(&mut tx, fetches).await?;
        for chunk in fetches.chunks(CHUNK / 2) {
            let sql = format!(
                "UPDATE passes SET last_fetched_at = v.column2
                 FROM (VALUES {}) AS v
                 WHERE passes.serial_number = v.column1
                   AND (passes.last_fetched_at IS NULL OR passes.last_fetched_at < v.column2)",
                numbered_pairs(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for (serial, at) in chunk {
                q = q.bind(serial).bind(*at);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The devices registered for a pass, for push fan-out and the admin view.
    pub async fn registrations(&self, serial: &str) -> Result<Vec<Registration>> {
        let rows = sqlx::query(
            "SELECT d.device_library_identifier, d.push_token, r.created_at, r.last_push_at, r.last_push_result FROM registrations r
             JOIN devices d ON d.device_library_identifier = r.device_library_identifier
             WHERE r.serial_number = $1 ORDER BY r.created_at, d.device_library_identifier",
        )
        .bind(serial)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Registration {
                    device_library_identifier: r.try_get("device_library_identifier")?,
                    push_token: r.try_get("push_token")?,
                    created_at: r.try_get("created_at")?,
                    last_push_at: r.try_get("last_push_at")?,
                    last_push_result: r.try_get("last_push_result")?,
                })
            })
            .collect()
    }
}

/// An outbox row due for delivery, with its retry count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueChange {
    pub id: String,
    pub member_id: Option<String>,
    pub attempts: i64,
}

/// A device to push for a member's change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushTarget {
    pub member_id: String,
    pub serial_number: String,
    pub pass_type_identifier: String,
    pub device_library_identifier: String,
    pub push_token: String,
}

/// What one dispatcher batch came to, written back in one transaction.
#[derive(Debug, Default)]
pub struct PushSettlement {
    /// Outbox rows handled (delivered, or given up on).
    pub finished: Vec<String>,
    /// Outbox rows to try again: `(id, not before, why)`.
    pub retries: Vec<(String, i64, String)>,
    /// `(device, serial, result)` of each push.
    pub results: Vec<(String, String, String)>,
    /// Registrations whose token APNs called gone: `(device, serial)`.
    pub gone: Vec<(String, String)>,
}

impl PushSettlement {
    /// Adds another batch's outcome, to write both in one transaction.
    pub fn absorb(&mut self, other: PushSettlement) {
        self.finished.extend(other.finished);
        self.retries.extend(other.retries);
        self.results.extend(other.results);
        self.gone.extend(other.gone);
    }
}

impl Store {
    /// Outbox rows due by `now` with ids after `after` (`""` for all), oldest first, and every
    /// device registered for their members' passes, in one query. A device appears once however
    /// many of its member's changes are due. On PostgreSQL the rows are claimed for this
    /// instance for one lease (`leases`), so no other instance pushes them meanwhile.
    pub async fn due_pushes(
        &self,
        now: i64,
        after: &str,
        limit: i64,
    ) -> Result<(Vec<DueChange>, Vec<PushTarget>)> {
        // An ended pass's devices hear of changes up to its end (the end itself), not after.
        const JOIN: &str = "LEFT JOIN passes p ON p.member_id = o.member_id
                 AND (p.ended_at IS NULL OR p.ended_at >= o.created_at)
             LEFT JOIN registrations r ON r.serial_number = p.serial_number
             LEFT JOIN devices d ON d.device_library_identifier = r.device_library_identifier
             ORDER BY o.id";
        const COLUMNS: &str =
            "SELECT o.id, o.member_id, o.attempts, p.serial_number, p.pass_type_identifier,
                    d.device_library_identifier, d.push_token";
        if self.released() {
            return Ok((Vec::new(), Vec::new()));
        }
        let rows = if self.claims() {
            // Claimed in the same statement: rows another instance holds are skipped, not
            // waited for, and a row whose lease ran out is taken over (`leases`).
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH o AS (
                   UPDATE outbox SET claimed_by = $4, claimed_until = $5
                   WHERE id IN (SELECT id FROM outbox
                                WHERE processed_at IS NULL AND available_at <= $1 AND id > $3
                                  AND (claimed_until IS NULL OR claimed_until <= $1)
                                ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED)
                   RETURNING id, member_id, attempts, created_at)
                 {COLUMNS} FROM o {JOIN}"
            )))
            .bind(now)
            .bind(limit)
            .bind(after)
            .bind(self.instance_id())
            .bind(now + self.lease_ms())
            .fetch_all(&self.pool)
            .await?
        } else {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "{COLUMNS}
                 FROM (SELECT id, member_id, attempts, created_at FROM outbox
                       WHERE processed_at IS NULL AND available_at <= $1 AND id > $3
                       ORDER BY id LIMIT $2) o
                 {JOIN}"
            )))
            .bind(now)
            .bind(limit)
            .bind(after)
            .fetch_all(&self.pool)
            .await?
        };
        let mut due: Vec<DueChange> = Vec::new();
        let mut targets = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in &rows {
            let id: String = r.try_get("id")?;
            let member_id: Option<String> = r.try_get("member_id")?;
            if due.last().is_none_or(|d| d.id != id) {
                due.push(DueChange {
                    id,
                    member_id: member_id.clone(),
                    attempts: r.try_get("attempts")?,
                });
            }
            let (Some(member_id), Some(device)) = (
                member_id,
                r.try_get::<Option<String>, _>("device_library_identifier")?,
            ) else {
                continue;
            };
            let serial: String = r.try_get("serial_number")?;
            if seen.insert((device.clone(), serial.clone())) {
                targets.push(PushTarget {
                    member_id,
                    serial_number: serial,
                    pass_type_identifier: r.try_get("pass_type_identifier")?,
                    device_library_identifier: device,
                    push_token: r.try_get("push_token")?,
                });
            }
        }
        Ok((due, targets))
    }

    /// Writes back a dispatcher batch in one transaction (one commit, not one per push), with
    /// one statement per chunk of rows rather than one per row.
    pub async fn settle_pushes(&self, s: &PushSettlement, now: i64) -> Result<()> {
        self.yield_to_postings().await;
        let (_turn, mut tx) = self.write_tx().await?;
        for chunk in s.finished.chunks(CHUNK) {
            let sql = format!(
                "DELETE FROM outbox WHERE id IN ({})",
                numbered(1, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                q = q.bind(id);
            }
            q.execute(&mut *tx).await?;
        }
        for (id, at, error) in &s.retries {
            // Only a row this instance still holds: one another instance took over after our
            // lease ran out stays its own.
            sqlx::query("UPDATE outbox SET attempts = attempts + 1, available_at = $2, last_error = $3, claimed_by = NULL, claimed_until = NULL
                         WHERE id = $1 AND (claimed_by IS NULL OR claimed_by = $4)")
                .bind(id)
                .bind(at)
                .bind(error)
                .bind(self.instance_id())
                .execute(&mut *tx)
                .await?;
        }
        // Most results are "delivered": one UPDATE per result label and chunk of devices.
        let mut by_label: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::new();
        for (device, serial, result) in &s.results {
            by_label.entry(result).or_default().push((device, serial));
        }
        for (label, pairs) in by_label {
            for chunk in pairs.chunks(CHUNK / 2) {
                // Joined with a VALUES list so both backends look each pair up by the primary
                // key (a row-value IN list makes SQLite scan the table).
                let sql = format!(
                    "UPDATE registrations SET last_push_at = $1, last_push_result = $2
                     FROM (VALUES {}) AS v
                     WHERE registrations.device_library_identifier = v.column1
                       AND registrations.serial_number = v.column2",
                    numbered_pairs(3, chunk.len())
                );
                let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now).bind(label);
                for (device, serial) in chunk {
                    q = q.bind(*device).bind(*serial);
                }
                q.execute(&mut *tx).await?;
            }
        }
        let day = super::cockpit::day_of(now);
        let (sent, failed): (Vec<_>, Vec<_>) =
            s.results.iter().partition(|(_, _, r)| r == "delivered");
        for (name, pushes) in [("pushes_sent", sent), ("pushes_failed", failed)] {
            let serials: Vec<&str> = pushes.iter().map(|(_, s, _)| s.as_str()).collect();
            super::cockpit::count_for_serials(&mut tx, name, day, &serials).await?;
        }
        for (device, serial) in &s.gone {
            super::cockpit::record_wallet_events(
                &mut tx,
                "remove",
                now,
                "r.device_library_identifier = $2 AND r.serial_number = $3",
                &[device, serial],
            )
            .await?;
            sqlx::query("DELETE FROM registrations WHERE device_library_identifier = $1 AND serial_number = $2")
                .bind(device)
                .bind(serial)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM devices WHERE device_library_identifier = $1
                 AND NOT EXISTS (SELECT 1 FROM registrations WHERE device_library_identifier = $1)",
            )
            .bind(device)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if !s.gone.is_empty() {
            self.forget(Stale::Devices(
                s.gone.iter().map(|(device, _)| device.clone()).collect(),
            ));
        }
        Ok(())
    }
}

/// Rows per batched statement: well under SQLite's and PostgreSQL's parameter limits.
const CHUNK: usize = 400;

/// `$start, $start+1, ...` for `n` parameters. Built from counts only; values stay bound.
fn numbered(start: usize, n: usize) -> String {
    (start..start + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($start, $start+1), ...` for `n` pairs.
fn numbered_pairs(start: usize, n: usize) -> String {
    (0..n)
        .map(|k| format!("(${}, ${})", start + 2 * k, start + 2 * k + 1))
        .collect::<Vec<_>>()
        .join(", ")
}
