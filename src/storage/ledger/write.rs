//! Writing one computed change in one round trip.

use sqlx::{AnyConnection, Row};

use crate::ledger::{Entry, Idempotency, Lot, consume};
use crate::storage::changes::{OUTBOX_SQL, POINTS_CHANGED, bump_member_sql};
use crate::storage::events::{NewEvent, insert_sql};
use crate::storage::{Backend, Result, StorageError, Store, new_id, rows};

/// Everything one change writes, computed before anything is written.
pub(super) struct Change<'a> {
    pub(super) entry: &'a Entry,
    pub(super) api_key_id: Option<&'a str>,
    /// A credit opens a lot, with its expiry.
    pub(super) new_lot: Option<Option<i64>>,
    /// A debit takes from these lots, oldest first.
    pub(super) takes: Vec<(String, i64)>,
    /// A promotion to this tier.
    pub(super) tier: Option<String>,
    /// The balance after the change.
    pub(super) balance: i64,
    pub(super) idempotency: Option<(&'a Idempotency, String)>,
    /// The change's events (`storage::events`), written in the same round trip.
    pub(super) events: Vec<NewEvent>,
}

/// One SQL text with numbered parameters, built from statements that each take the next ones.
#[derive(Default)]
pub(super) struct Batch {
    statements: Vec<String>,
    args: Vec<Arg>,
}

pub(super) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Batch {
    /// Adds a statement whose `?`s take `args` in order, numbered after the ones before.
    fn push(&mut self, sql: &str, args: Vec<Arg>) {
        debug_assert_eq!(sql.matches('?').count(), args.len(), "{sql}");
        let mut parts = sql.split('?');
        let mut out = parts.next().unwrap_or_default().to_string();
        for (i, part) in parts.enumerate() {
            out.push_str(&format!("${}{part}", self.args.len() + i + 1));
        }
        self.args.extend(args);
        self.statements.push(out);
    }
}

pub(super) fn text(v: impl Into<Option<String>>) -> Arg {
    Arg::Text(v.into())
}

impl Store {
    /// Writes a change in one round trip: the entry, the lots, the pass's `updated_at`, the
    /// outbox row, the idempotency record and last the member's balance, which must land on the
    /// balance the change was computed for. SQLite runs the statements as one script (with
    /// `COMMIT` appended when `commit`); PostgreSQL as one statement of data-modifying CTEs
    /// (foreign keys are checked at its end, so the lot may name the entry written beside it).
    /// A balance below zero violates `CHECK (points >= 0)`, which aborts before any commit.
    pub(super) async fn write_change(
        &self,
        conn: &mut AnyConnection,
        c: &Change<'_>,
        commit: bool,
    ) -> Result<()> {
        let e = c.entry;
        let now = Arg::Int(Some(e.created_at));
        let mut b = Batch::default();
        b.push(
            "INSERT INTO ledger_entries (id, member_id, kind, points, amount_minor, external_ref, channel, store_id,
                                         partner_id, reason, reverses_entry_id, api_key_id, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            vec![
                text(e.id.clone()),
                text(e.member_id.clone()),
                text(e.kind.as_str().to_string()),
                Arg::Int(Some(e.points)),
                Arg::Int(e.amount_minor),
                text(e.origin.external_ref.clone()),
                text(e.origin.channel.clone()),
                text(e.origin.store_id.clone()),
                text(e.origin.partner_id.clone()),
                text(e.reason.clone()),
                text(e.reverses_entry_id.clone()),
                text(c.api_key_id.map(String::from)),
                Arg::Int(Some(e.created_at)),
            ],
        );
        if let Some(expires_at) = c.new_lot {
            b.push(
                "INSERT INTO point_lots (id, member_id, entry_id, points, remaining, earned_at, expires_at)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                vec![
                    text(new_id()),
                    text(e.member_id.clone()),
                    text(e.id.clone()),
                    Arg::Int(Some(e.points)),
                    Arg::Int(Some(e.points)),
                    Arg::Int(Some(e.created_at)),
                    Arg::Int(expires_at),
                ],
            );
        }
        for (lot, take) in &c.takes {
            b.push(
                "UPDATE point_lots SET remaining = remaining - ? WHERE id = ?",
                vec![Arg::Int(Some(*take)), text(lot.clone())],
            );
        }
        b.push(
            &bump_member_sql(),
            vec![now, Arg::Int(Some(e.created_at)), text(e.member_id.clone())],
        );
        let payload = serde_json::json!({"entry_id": e.id, "kind": e.kind.as_str(), "points": e.points, "balance": c.balance});
        b.push(
            OUTBOX_SQL,
            vec![
                text(new_id()),
                text(POINTS_CHANGED.to_string()),
                text(e.member_id.clone()),
                text(payload.to_string()),
                Arg::Int(Some(e.created_at)),
            ],
        );
        if let Some((i, response)) = &c.idempotency {
            b.push(
                "INSERT INTO idempotency_keys (api_key_id, key, request_hash, response, created_at) VALUES (?, ?, ?, ?, ?)",
                vec![
                    text(i.api_key_id.clone()),
                    text(i.key.clone()),
                    text(i.request_hash.clone()),
                    text(response.clone()),
                    Arg::Int(Some(e.created_at)),
                ],
            );
        }
        if !c.events.is_empty() {
            let mut args = Vec::with_capacity(6 * c.events.len());
            for ev in &c.events {
                args.extend([
                    text(new_id()),
                    text(ev.kind.to_string()),
                    text(ev.member_id.clone()),
                    text(ev.member_id.clone()),
                    text(ev.payload.to_string()),
                    Arg::Int(Some(e.created_at)),
                ]);
            }
            b.push(&insert_sql(self.backend, c.events.len()), args);
        }
        if self.google_sync() {
            b.push(
                crate::storage::google::QUEUE_SQL,
                vec![
                    text(e.member_id.clone()),
                    Arg::Int(Some(e.created_at)),
                    Arg::Int(Some(e.created_at)),
                ],
            );
        }
        b.push(
            // No guard in WHERE: the CHECK (points >= 0) constraint raises an error, which stops a
            // SQLite script before its COMMIT; a WHERE guard would silently update nothing.
            "UPDATE members SET points = points + ?, tier = COALESCE(?, tier) WHERE id = ? RETURNING points",
            vec![Arg::Int(Some(e.points)), text(c.tier.clone()), text(e.member_id.clone())],
        );
        let sql = match self.backend {
            Backend::Sqlite if commit => b.statements.join(";\n") + ";\nCOMMIT",
            Backend::Sqlite => b.statements.join(";\n"),
            Backend::Postgres => {
                let (last, ctes) = b.statements.split_last().expect("a batch has statements");
                let ctes: Vec<String> = ctes
                    .iter()
                    .enumerate()
                    .map(|(i, s)| format!("w{i} AS ({s})"))
                    .collect();
                format!("WITH {}\n{last}", ctes.join(",\n"))
            }
        };
        // Built only from the fixed statements above; every value is a bound parameter.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for arg in b.args {
            query = match arg {
                Arg::Text(v) => query.bind(v),
                Arg::Int(v) => query.bind(v),
            };
        }
        // fetch_all, not fetch_optional: on a SQLite script sqlx stops fetch_optional after the
        // first statement's empty result, though every statement runs.
        let rows = query
            .fetch_all(&mut *conn)
            .await
            .map_err(|err| match &err {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    if c.idempotency.is_some() && d.message().contains("idempotency") {
                        StorageError::IdempotencyRace
                    } else if e.reverses_entry_id.is_some() {
                        StorageError::Rejected("that entry is already reversed".into())
                    } else {
                        StorageError::Database(err)
                    }
                }
                sqlx::Error::Database(d) if d.is_check_violation() => StorageError::Insufficient {
                    available: c.balance - e.points,
                },
                _ => StorageError::Database(err),
            })?;
        let balance = match rows.last() {
            Some(r) => rows::int(r, "points")?,
            None => {
                return Err(StorageError::Insufficient {
                    available: c.balance - e.points,
                });
            }
        };
        if balance != c.balance {
            return Err(StorageError::Corrupt(format!(
                "balance moved under the write lock: expected {}, found {balance}",
                c.balance
            )));
        }
        Ok(())
    }
}

/// Which lots a debit of `points` takes from, oldest first.
pub(super) async fn lots_to_take(
    conn: &mut AnyConnection,
    member_id: &str,
    points: i64,
    available: i64,
) -> Result<Vec<(String, i64)>> {
    let rows = sqlx::query("SELECT id, remaining FROM point_lots WHERE member_id = $1 AND remaining > 0 ORDER BY earned_at, id")
        .bind(member_id)
        .fetch_all(&mut *conn)
        .await?;
    let lots: Vec<Lot> = rows
        .iter()
        .map(|r| {
            Ok(Lot {
                id: r.try_get("id")?,
                remaining: r.try_get("remaining")?,
            })
        })
        .collect::<Result<_>>()?;
    consume(&lots, points).ok_or(StorageError::Insufficient { available })
}
