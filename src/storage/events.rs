//! The event catalogue's rows (`events`): one per change, written in the change's own
//! transaction, read in order by the pull feed and the webhook fan-out.
//!
//! **Order without a counter.** A sequence number taken inside concurrent PostgreSQL
//! transactions commits out of order: a reader past "N" could skip a row that commits later
//! with a smaller number. So each row carries the writing transaction's id (`xid`,
//! `pg_current_xact_id()`), readers walk `(xid, seq)` and see only rows whose transaction is
//! older than the oldest one still running (`pg_snapshot_xmin`): every transaction below that
//! line has ended, and every later one gets a larger xid, so nothing can appear behind a
//! cursor. No per-program counter row is updated, so writers do not serialise on one. On
//! SQLite writers are serialised (`BEGIN IMMEDIATE`): `xid` is 0 and `seq` is commit order.
//! (A transaction that stays open holds PostgreSQL's line back: events wait, none is lost.)

use sqlx::{AnyConnection, Row};

use super::{Backend, Result, StorageError, Store, new_id, rows};

/// The schema version of every event type's payload.
pub const EVENT_VERSION: i64 = 1;

/// The event types, as the API and the README name them.
pub mod kinds {
    pub const MEMBER_CREATED: &str = "member.created";
    pub const MEMBER_UPDATED: &str = "member.updated";
    pub const MEMBER_ERASED: &str = "member.erased";
    pub const CARD_INSTALLED: &str = "card.installed";
    pub const CARD_REMOVED: &str = "card.removed";
    pub const POINTS_EARNED: &str = "points.earned";
    pub const POINTS_REDEEMED: &str = "points.redeemed";
    pub const POINTS_REFUNDED: &str = "points.refunded";
    pub const POINTS_ADJUSTED: &str = "points.adjusted";
    pub const POINTS_EXPIRED: &str = "points.expired";
    pub const POINTS_REVERSED: &str = "points.reversed";
    pub const TIER_CHANGED: &str = "tier.changed";
    pub const CONSENT_CHANGED: &str = "consent.changed";
    pub const SCAN_PERFORMED: &str = "scan.performed";
    pub const HOLD_CREATED: &str = "hold.created";
    pub const HOLD_CAPTURED: &str = "hold.captured";
    pub const HOLD_VOIDED: &str = "hold.voided";
    pub const HOLD_EXPIRED: &str = "hold.expired";
}

/// Every event type, in the catalogue's order.
pub const CATALOGUE: &[&str] = &[
    kinds::MEMBER_CREATED,
    kinds::MEMBER_UPDATED,
    kinds::MEMBER_ERASED,
    kinds::CARD_INSTALLED,
    kinds::CARD_REMOVED,
    kinds::POINTS_EARNED,
    kinds::POINTS_REDEEMED,
    kinds::POINTS_REFUNDED,
    kinds::POINTS_ADJUSTED,
    kinds::POINTS_EXPIRED,
    kinds::POINTS_REVERSED,
    kinds::TIER_CHANGED,
    kinds::CONSENT_CHANGED,
    kinds::SCAN_PERFORMED,
    kinds::HOLD_CREATED,
    kinds::HOLD_CAPTURED,
    kinds::HOLD_VOIDED,
    kinds::HOLD_EXPIRED,
];

/// The `points.*` event of a ledger entry kind.
pub fn points_event(kind: crate::ledger::EntryKind) -> &'static str {
    use crate::ledger::EntryKind::*;
    match kind {
        Earn => kinds::POINTS_EARNED,
        Redeem => kinds::POINTS_REDEEMED,
        Refund => kinds::POINTS_REFUNDED,
        Adjust => kinds::POINTS_ADJUSTED,
        Expire => kinds::POINTS_EXPIRED,
        Reversal => kinds::POINTS_REVERSED,
    }
}

/// An event to write: its type, the member, and its payload (JSON).
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: &'static str,
    pub member_id: String,
    pub payload: serde_json::Value,
}

impl NewEvent {
    pub fn new(kind: &'static str, member_id: &str, payload: serde_json::Value) -> NewEvent {
        NewEvent {
            kind,
            member_id: member_id.to_owned(),
            payload,
        }
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub id: String,
    pub kind: String,
    pub version: i64,
    pub program_id: String,
    pub member_id: String,
    pub payload: serde_json::Value,
    pub created_at: i64,
    pub position: Position,
}

/// Where an event stands in the feed: `(xid, seq)`. Opaque to clients (`Display`/`parse`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub xid: i64,
    pub seq: i64,
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:x}-{:x}", self.xid, self.seq)
    }
}

impl Position {
    /// Reads a cursor written by `Display`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Position> {
        let (x, s) = s.split_once('-')?;
        let xid = i64::from_str_radix(x, 16).ok()?;
        let seq = i64::from_str_radix(s, 16).ok()?;
        (xid >= 0 && seq >= 0 && x.len() <= 16 && s.len() <= 16).then_some(Position { xid, seq })
    }
}

/// One INSERT of `n` event rows, in order (one statement, so a transaction's events keep
/// their order on PostgreSQL too, where the CTEs of one statement run in no set order); each
/// row's `?`s: id, type, member id, payload, created_at. The program is the member's.
pub(super) fn insert_sql(backend: Backend, n: usize) -> String {
    let row = format!(
        "(?, ?, {EVENT_VERSION}, (SELECT m.program_id FROM members m WHERE m.id = ?), ?, ?, ?, {})",
        xid_sql(backend)
    );
    format!(
        "INSERT INTO events (id, type, version, program_id, member_id, payload, created_at, xid) VALUES {}",
        vec![row; n].join(", ")
    )
}

/// The writing transaction's id (PostgreSQL), or 0 (SQLite).
fn xid_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => "pg_current_xact_id()::text::bigint",
        Backend::Sqlite => "0",
    }
}

/// What the reader may see: rows of transactions older than every running one (PostgreSQL).
fn visible_sql(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => " AND xid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
        Backend::Sqlite => "",
    }
}

impl Store {
    /// Writes `events` in the caller's transaction, in order (each takes its member's program).
    pub(super) async fn record_events(
        &self,
        conn: &mut AnyConnection,
        events: &[NewEvent],
        now: i64,
    ) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let sql = super::google::numbered(&insert_sql(self.backend, events.len()));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for e in events {
            q = q
                .bind(new_id())
                .bind(e.kind)
                .bind(&e.member_id)
                .bind(&e.member_id)
                .bind(e.payload.to_string())
                .bind(now);
        }
        q.execute(&mut *conn).await?;
        Ok(())
    }

    /// Writes an event for the holder of the pass `serial` in the caller's transaction
    /// (`card.installed`, `card.removed`); nothing if no pass has that serial.
    pub(super) async fn record_pass_event(
        &self,
        conn: &mut AnyConnection,
        serial: &str,
        kind: &'static str,
        payload: serde_json::Value,
        now: i64,
    ) -> Result<()> {
        let sql = format!(
            "INSERT INTO events (id, type, version, program_id, member_id, payload, created_at, xid)
             SELECT $1, $2, {EVENT_VERSION}, m.program_id, m.id, $3, $4, {}
             FROM passes p JOIN members m ON m.id = p.member_id WHERE p.serial_number = $5",
            xid_sql(self.backend)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(new_id())
            .bind(kind)
            .bind(payload.to_string())
            .bind(now)
            .bind(serial)
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// Writes one event of `kind` for each member of a program in the caller's transaction,
    /// a few hundred per statement (imports).
    pub(super) async fn record_program_events(
        &self,
        conn: &mut AnyConnection,
        program_id: &str,
        kind: &str,
        members: &[(String, serde_json::Value)],
        now: i64,
    ) -> Result<()> {
        for chunk in members.chunks(300) {
            let values = (0..chunk.len())
                .map(|k| {
                    format!(
                        "(${}, $1, {EVENT_VERSION}, $2, ${}, ${}, $3, {})",
                        4 + 3 * k,
                        5 + 3 * k,
                        6 + 3 * k,
                        xid_sql(self.backend)
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO events (id, type, version, program_id, member_id, payload, created_at, xid) VALUES {values}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(kind.to_owned())
                .bind(program_id.to_owned())
                .bind(now);
            for (member, payload) in chunk {
                q = q.bind(new_id()).bind(member).bind(payload.to_string());
            }
            q.execute(&mut *conn).await?;
        }
        Ok(())
    }

    /// Writes events in their own transaction (a change that is only the event: a scan).
    pub async fn record_event_now(&self, event: NewEvent, now: i64) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        self.record_events(&mut tx, std::slice::from_ref(&event), now)
            .await?;
        tx.commit().await?;
        self.committed();
        Ok(())
    }

    /// Events after `after` in feed order, of `kinds` (all when empty), at most `limit`.
    pub async fn events_after(
        &self,
        after: Position,
        kinds: &[String],
        limit: i64,
    ) -> Result<Vec<EventRecord>> {
        let filter = if kinds.is_empty() {
            String::new()
        } else {
            let marks = (0..kinds.len())
                .map(|k| format!("${}", 4 + k))
                .collect::<Vec<_>>()
                .join(", ");
            format!(" AND type IN ({marks})")
        };
        let sql = format!(
            "SELECT seq, id, type, version, program_id, member_id, payload, created_at, xid FROM events
             WHERE (xid > $1 OR (xid = $1 AND seq > $2)){}{filter}
             ORDER BY xid, seq LIMIT $3",
            visible_sql(self.backend)
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(after.xid)
            .bind(after.seq)
            .bind(limit);
        for k in kinds {
            q = q.bind(k);
        }
        q.fetch_all(&self.pool).await?.iter().map(event).collect()
    }

    /// Events written at or after `at` (ms) in feed order, at most `limit`: a replay from a
    /// point in time.
    pub async fn events_since(&self, at: i64, limit: i64) -> Result<Vec<EventRecord>> {
        let sql = format!(
            "SELECT seq, id, type, version, program_id, member_id, payload, created_at, xid FROM events
             WHERE created_at >= $1{} ORDER BY xid, seq LIMIT $2",
            visible_sql(self.backend)
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(at)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(event)
            .collect()
    }

    /// One event by id.
    pub async fn get_event(&self, id: &str) -> Result<EventRecord> {
        let row = sqlx::query(
            "SELECT seq, id, type, version, program_id, member_id, payload, created_at, xid FROM events WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound("event"))?;
        event(&row)
    }

    /// Deletes events older than `before` (ms), at most `limit`, and the settled webhook
    /// deliveries (the delivery log) as old; returns how many events.
    pub async fn purge_events(&self, before: i64, limit: i64) -> Result<u64> {
        sqlx::query(
            "DELETE FROM webhook_deliveries WHERE id IN
             (SELECT id FROM webhook_deliveries WHERE next_at IS NULL AND created_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        let done = sqlx::query(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE created_at < $1 LIMIT $2)",
        )
        .bind(before)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }
}

fn event(r: &sqlx::any::AnyRow) -> Result<EventRecord> {
    let payload: String = r.try_get("payload")?;
    Ok(EventRecord {
        id: r.try_get("id")?,
        kind: r.try_get("type")?,
        version: rows::int(r, "version")?,
        program_id: r.try_get("program_id")?,
        member_id: r.try_get("member_id")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StorageError::Corrupt(format!("event payload: {e}")))?,
        created_at: rows::int(r, "created_at")?,
        position: Position {
            xid: rows::int(r, "xid")?,
            seq: rows::int(r, "seq")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_and_nothing_else_does() {
        let p = Position {
            xid: 77,
            seq: 12345,
        };
        assert_eq!(Position::parse(&p.to_string()), Some(p));
        for bad in ["", "1", "x-1", "1-", "-1-2", "1-2-3", "00000000000000001-1"] {
            assert_eq!(Position::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_entry_kind_has_its_event() {
        use crate::ledger::EntryKind::*;
        for k in [Earn, Redeem, Refund, Adjust, Expire, Reversal] {
            assert!(CATALOGUE.contains(&points_event(k)));
        }
    }
}
