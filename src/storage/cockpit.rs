//! The staff dashboard's figures (issue 17): one `daily_figures` row per program and UTC day,
//! recomputed by the `cockpit` job from the raw tables through their time indexes, and the few
//! recordings the figures need that no other table keeps (`wallet_events`: Apple registrations
//! and their removals; `cockpit_counters`: join-page views, push outcomes, fetches after a
//! push).
//!
//! Only today's and yesterday's rows (and back-filled days in `cockpit_dirty`) are recomputed;
//! older rows are final. A figure over a period is the sum of its days' rows; a figure "now"
//! (points outstanding, cards installed) is the sum of every row up to the period's end.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::{Result, Store};

pub const DAY_MS: i64 = 86_400_000;

/// The first millisecond of the UTC day holding `ms`.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS) * DAY_MS
}

/// A purchase: an `earn` entry with an amount (bonuses and campaign points have none).
const PURCHASE: &str = "e.kind = 'earn' AND e.amount_minor IS NOT NULL";

/// One program's figures for one UTC day.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DailyFigures {
    pub program_id: String,
    pub day: i64,
    /// Cards (passes) issued, reissues included.
    pub issued: i64,
    pub new_members: i64,
    /// Members who joined through the join page.
    pub joins: i64,
    pub join_views: i64,
    pub apple_installs: i64,
    pub apple_removals: i64,
    pub google_installs: i64,
    pub google_removals: i64,
    /// Members whose first install (either wallet) was this day.
    pub first_installs: i64,
    pub first_purchases: i64,
    pub first_redemptions: i64,
    pub purchases: i64,
    pub earned: i64,
    pub redeemed: i64,
    pub expired: i64,
    /// Every entry's points: the change of the points outstanding.
    pub points_delta: i64,
    pub pushes_sent: i64,
    pub pushes_failed: i64,
    pub fetched_after_push: i64,
    /// Members with a purchase in the 7, 30 and 90 days ending with this day.
    pub active: [Option<i64>; 3],
    /// Of those, members with two purchases or more.
    pub repeat: [Option<i64>; 3],
    /// Tier id ("" for none) -> members, when computed.
    pub tiers: Option<BTreeMap<String, i64>>,
    /// When `active`, `repeat` and `tiers` were computed.
    pub windows_at: Option<i64>,
    pub computed_at: i64,
}

/// The window lengths of `DailyFigures::active`, in days.
pub const WINDOWS: [i64; 3] = [7, 30, 90];

/// How often today's windows and tiers are recomputed.
pub const WINDOWS_EVERY_MS: i64 = 15 * 60_000;
/// A day's windows computed this long after it ended are final.
const WINDOWS_FINAL_MS: i64 = 5 * 60_000;

/// Whether a day's windows and tiers should be recomputed now, given its stored row: never
/// computed, or not final yet and older than `WINDOWS_EVERY_MS`.
pub fn windows_due(stored: Option<&DailyFigures>, day: i64, now: i64) -> bool {
    match stored.and_then(|s| s.windows_at) {
        None => true,
        Some(at) => at < day + DAY_MS + WINDOWS_FINAL_MS && now - at >= WINDOWS_EVERY_MS,
    }
}

/// Sums of every day up to a period's end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cumulative {
    pub points_outstanding: i64,
    pub apple_installed: i64,
    pub google_installed: i64,
    pub members: i64,
    pub members_installed: i64,
    pub members_purchased: i64,
}

const COLUMNS: [&str; 20] = [
    "issued",
    "new_members",
    "joins",
    "join_views",
    "apple_installs",
    "apple_removals",
    "google_installs",
    "google_removals",
    "first_installs",
    "first_purchases",
    "first_redemptions",
    "purchases",
    "earned",
    "redeemed",
    "expired",
    "points_delta",
    "pushes_sent",
    "pushes_failed",
    "fetched_after_push",
    "computed_at",
];

impl DailyFigures {
    fn values(&self) -> [i64; 20] {
        [
            self.issued,
            self.new_members,
            self.joins,
            self.join_views,
            self.apple_installs,
            self.apple_removals,
            self.google_installs,
            self.google_removals,
            self.first_installs,
            self.first_purchases,
            self.first_redemptions,
            self.purchases,
            self.earned,
            self.redeemed,
            self.expired,
            self.points_delta,
            self.pushes_sent,
            self.pushes_failed,
            self.fetched_after_push,
            self.computed_at,
        ]
    }

    fn from_row(r: &AnyRow) -> Result<DailyFigures> {
        let get = |c: &str| -> Result<i64> { Ok(r.try_get::<i64, _>(c)?) };
        let opt = |c: &str| -> Result<Option<i64>> { Ok(r.try_get::<Option<i64>, _>(c)?) };
        let tiers: Option<String> = r.try_get("tiers")?;
        Ok(DailyFigures {
            program_id: r.try_get("program_id")?,
            day: get("day")?,
            issued: get("issued")?,
            new_members: get("new_members")?,
            joins: get("joins")?,
            join_views: get("join_views")?,
            apple_installs: get("apple_installs")?,
            apple_removals: get("apple_removals")?,
            google_installs: get("google_installs")?,
            google_removals: get("google_removals")?,
            first_installs: get("first_installs")?,
            first_purchases: get("first_purchases")?,
            first_redemptions: get("first_redemptions")?,
            purchases: get("purchases")?,
            earned: get("earned")?,
            redeemed: get("redeemed")?,
            expired: get("expired")?,
            points_delta: get("points_delta")?,
            pushes_sent: get("pushes_sent")?,
            pushes_failed: get("pushes_failed")?,
            fetched_after_push: get("fetched_after_push")?,
            active: [opt("active_7")?, opt("active_30")?, opt("active_90")?],
            repeat: [opt("repeat_7")?, opt("repeat_30")?, opt("repeat_90")?],
            tiers: tiers.and_then(|t| serde_json::from_str(&t).ok()),
            windows_at: opt("windows_at")?,
            computed_at: get("computed_at")?,
        })
    }
}

/// Records Apple installs or removals of every registration `filter` selects (a condition on
/// `r`, the registrations, binding `$2` onwards; `$1` is the time), before they are deleted
/// or just after they were inserted, in the writer's transaction.
pub(super) async fn record_wallet_events(
    conn: &mut AnyConnection,
    kind: &str,
    now: i64,
    filter: &str,
    binds: &[&str],
) -> Result<()> {
    let sql = format!(
        "INSERT INTO wallet_events (program_id, member_id, kind, at)
         SELECT m.program_id, m.id, '{kind}', $1 FROM registrations r
         JOIN passes p ON p.serial_number = r.serial_number
         JOIN members m ON m.id = p.member_id
         WHERE {filter}"
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
    for b in binds {
        q = q.bind(*b);
    }
    q.execute(conn).await?;
    Ok(())
}

/// Adds `n` to counter `name` of the programs holding the passes `serials` (one per count),
/// on `day`, in the caller's transaction.
pub(super) async fn count_for_serials(
    conn: &mut AnyConnection,
    name: &'static str,
    day: i64,
    serials: &[&str],
) -> Result<()> {
    for chunk in serials.chunks(400) {
        let values = (0..chunk.len())
            .map(|k| format!("(${})", 3 + k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO cockpit_counters (program_id, day, name, n)
             SELECT m.program_id, $1, $2, COUNT(*) FROM (VALUES {values}) AS v
             JOIN passes p ON p.serial_number = v.column1
             JOIN members m ON m.id = p.member_id
             WHERE 1 = 1
             GROUP BY m.program_id
             ON CONFLICT (program_id, day, name) DO UPDATE SET n = cockpit_counters.n + excluded.n"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql)).bind(day).bind(name);
        for s in chunk {
            q = q.bind(*s);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Counts, per program and day of the fetch, the passes of `fetches` downloaded for the first
/// time since a push to one of their devices: called before the fetch times are written.
pub(super) async fn count_fetches_after_push(
    conn: &mut AnyConnection,
    fetches: &[(String, i64)],
) -> Result<()> {
    for chunk in fetches.chunks(200) {
        let values = (0..chunk.len())
            .map(|k| format!("(${}, ${})", 1 + 2 * k, 2 + 2 * k))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO cockpit_counters (program_id, day, name, n)
             SELECT m.program_id, (v.column2 / {DAY_MS}) * {DAY_MS}, 'fetched_after_push', COUNT(*)
             FROM (VALUES {values}) AS v
             JOIN passes p ON p.serial_number = v.column1
             JOIN members m ON m.id = p.member_id
             WHERE EXISTS (SELECT 1 FROM registrations r
                           WHERE r.serial_number = p.serial_number
                             AND r.last_push_at IS NOT NULL AND r.last_push_at <= v.column2
                             AND (p.last_fetched_at IS NULL OR r.last_push_at > p.last_fetched_at))
             GROUP BY m.program_id, (v.column2 / {DAY_MS}) * {DAY_MS}
             ON CONFLICT (program_id, day, name) DO UPDATE SET n = cockpit_counters.n + excluded.n"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for (serial, at) in chunk {
            q = q.bind(serial.as_str()).bind(*at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

// The day's reads put the time-indexed table first and join `members` by id (`CROSS JOIN`
// fixes that order on SQLite, whose planner has no statistics unless ANALYZE ran and would
// otherwise walk every member of the program); PostgreSQL plans them freely.

impl Store {
    /// Adds join-page views: `(program id, day, views)`.
    pub async fn add_join_views(&self, views: &[(String, i64, i64)]) -> Result<()> {
        if views.is_empty() {
            return Ok(());
        }
        let (_turn, mut tx) = self.write_tx().await?;
        for (program, day, n) in views {
            sqlx::query(
                "INSERT INTO cockpit_counters (program_id, day, name, n) VALUES ($1, $2, 'join_views', $3)
                 ON CONFLICT (program_id, day, name) DO UPDATE SET n = cockpit_counters.n + excluded.n",
            )
            .bind(program)
            .bind(day)
            .bind(n)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every program with the first day it has data for, and whether it has figures yet.
    pub async fn cockpit_programs(&self) -> Result<Vec<(String, i64, bool)>> {
        let rows = sqlx::query(
            "SELECT p.id, p.created_at,
                    (SELECT MIN(m.created_at) FROM members m WHERE m.program_id = p.id) AS first_member,
                    (SELECT COUNT(*) FROM daily_figures f WHERE f.program_id = p.id) AS figures
             FROM programs p ORDER BY p.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let created: i64 = r.try_get("created_at")?;
                let first: Option<i64> = r.try_get("first_member")?;
                let figures: i64 = super::rows::int(r, "figures")?;
                Ok((
                    r.try_get("id")?,
                    day_of(first.map_or(created, |f| f.min(created))),
                    figures > 0,
                ))
            })
            .collect()
    }

    /// Marks days to recompute (a program's history, the first time).
    pub async fn mark_cockpit_dirty(&self, program_id: &str, days: &[i64]) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        for day in days {
            sqlx::query(
                "INSERT INTO cockpit_dirty (program_id, day) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(program_id)
            .bind(day)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` days marked dirty, oldest first.
    pub async fn cockpit_dirty(&self, limit: i64) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT program_id, day FROM cockpit_dirty ORDER BY day, program_id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("program_id")?, r.try_get("day")?)))
            .collect()
    }

    /// Computes one program's figures for one day from the raw tables; `recent` adds the
    /// distinct-member windows and the members per tier (today's and yesterday's rows, when
    /// `windows_due`).
    pub async fn compute_day(
        &self,
        program_id: &str,
        day: i64,
        recent: bool,
        now: i64,
    ) -> Result<DailyFigures> {
        let (from, to) = (day, day + DAY_MS);
        let mut f = DailyFigures {
            program_id: program_id.to_string(),
            day,
            computed_at: now,
            ..DailyFigures::default()
        };
        let count = |sql: &'static str| {
            sqlx::query(sql)
                .bind(from)
                .bind(to)
                .bind(program_id)
                .fetch_one(&self.pool)
        };
        let n = |r: AnyRow| super::rows::int(&r, "n");
        f.issued = n(count(
            "SELECT COUNT(*) AS n FROM passes p CROSS JOIN members m
             WHERE m.id = p.member_id AND p.created_at >= $1 AND p.created_at < $2 AND m.program_id = $3",
        )
        .await?)?;
        f.new_members = n(count(
            "SELECT COUNT(*) AS n FROM members
             WHERE program_id = $3 AND created_at >= $1 AND created_at < $2",
        )
        .await?)?;
        f.joins = n(count(
            "SELECT COUNT(*) AS n FROM consents c CROSS JOIN members m
             WHERE m.id = c.member_id AND c.recorded_at >= $1 AND c.recorded_at < $2 AND c.source = 'join'
               AND c.kind = 'data' AND m.program_id = $3",
        )
        .await?)?;
        f.first_installs = n(count(
            "SELECT COUNT(*) AS n
             FROM (SELECT member_id FROM wallet_events
                   WHERE kind = 'install' AND at >= $1 AND at < $2
                   UNION
                   SELECT member_id FROM google_events
                   WHERE event_type = 'save' AND received_at >= $1 AND received_at < $2
                     AND member_id IS NOT NULL) t
             CROSS JOIN members m
             WHERE m.id = t.member_id AND m.program_id = $3
               AND NOT EXISTS (SELECT 1 FROM wallet_events w
                               WHERE w.member_id = m.id AND w.kind = 'install' AND w.at < $1)
               AND NOT EXISTS (SELECT 1 FROM google_events g
                               WHERE g.member_id = m.id AND g.event_type = 'save' AND g.received_at < $1)",
        )
        .await?)?;
        // A member's first purchase (redemption): one this day with none before it.
        for (kind, target) in [
            (
                "{t}.kind = 'earn' AND {t}.amount_minor IS NOT NULL",
                &mut f.first_purchases,
            ),
            ("{t}.kind = 'redeem'", &mut f.first_redemptions),
        ] {
            let sql = format!(
                "SELECT COUNT(DISTINCT e.member_id) AS n FROM ledger_entries e
                 CROSS JOIN members m
                 WHERE m.id = e.member_id AND e.created_at >= $1 AND e.created_at < $2 AND m.program_id = $3
                   AND {e}
                   AND NOT EXISTS (SELECT 1 FROM ledger_entries e2
                                   WHERE e2.member_id = e.member_id AND e2.created_at < $1
                                     AND {e2})",
                e = kind.replace("{t}", "e"),
                e2 = kind.replace("{t}", "e2"),
            );
            let r = sqlx::query(AssertSqlSafe(sql))
                .bind(from)
                .bind(to)
                .bind(program_id)
                .fetch_one(&self.pool)
                .await?;
            *target = n(r)?;
        }
        let rows = sqlx::query(
            "SELECT kind, COUNT(*) AS n FROM wallet_events
             WHERE at >= $1 AND at < $2 AND program_id = $3 GROUP BY kind",
        )
        .bind(from)
        .bind(to)
        .bind(program_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let kind: String = r.try_get("kind")?;
            match kind.as_str() {
                "install" => f.apple_installs = n(r)?,
                "remove" => f.apple_removals = n(r)?,
                _ => {}
            }
        }
        let rows = sqlx::query(
            "SELECT g.event_type, COUNT(*) AS n FROM google_events g
             CROSS JOIN members m
             WHERE m.id = g.member_id AND g.received_at >= $1 AND g.received_at < $2 AND m.program_id = $3
             GROUP BY g.event_type",
        )
        .bind(from)
        .bind(to)
        .bind(program_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let kind: String = r.try_get("event_type")?;
            match kind.as_str() {
                "save" => f.google_installs = n(r)?,
                "del" => f.google_removals = n(r)?,
                _ => {}
            }
        }
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT e.kind, CAST(COALESCE(SUM(e.points), 0) AS BIGINT) AS points,
                    CAST(COALESCE(SUM(CASE WHEN {PURCHASE} THEN 1 ELSE 0 END), 0) AS BIGINT) AS purchases
             FROM ledger_entries e CROSS JOIN members m
             WHERE m.id = e.member_id AND e.created_at >= $1 AND e.created_at < $2 AND m.program_id = $3
             GROUP BY e.kind"
        )))
        .bind(from)
        .bind(to)
        .bind(program_id)
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let kind: String = r.try_get("kind")?;
            let points = super::rows::int(&r, "points")?;
            f.points_delta += points;
            match kind.as_str() {
                "earn" => {
                    f.earned = points;
                    f.purchases = super::rows::int(&r, "purchases")?;
                }
                "redeem" => f.redeemed = -points,
                "expire" => f.expired = -points,
                _ => {}
            }
        }
        let rows =
            sqlx::query("SELECT name, n FROM cockpit_counters WHERE program_id = $1 AND day = $2")
                .bind(program_id)
                .bind(day)
                .fetch_all(&self.pool)
                .await?;
        for r in rows {
            let name: String = r.try_get("name")?;
            let v = n(r)?;
            match name.as_str() {
                "join_views" => f.join_views = v,
                "pushes_sent" => f.pushes_sent = v,
                "pushes_failed" => f.pushes_failed = v,
                "fetched_after_push" => f.fetched_after_push = v,
                _ => {}
            }
        }
        if recent {
            let [w7, w30, w90] = WINDOWS.map(|w| to - w * DAY_MS);
            let r = sqlx::query(AssertSqlSafe(format!(
                "SELECT CAST(COALESCE(SUM(CASE WHEN c7 > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS a7,
                        CAST(COALESCE(SUM(CASE WHEN c30 > 0 THEN 1 ELSE 0 END), 0) AS BIGINT) AS a30,
                        CAST(COUNT(*) AS BIGINT) AS a90,
                        CAST(COALESCE(SUM(CASE WHEN c7 > 1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS r7,
                        CAST(COALESCE(SUM(CASE WHEN c30 > 1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS r30,
                        CAST(COALESCE(SUM(CASE WHEN c90 > 1 THEN 1 ELSE 0 END), 0) AS BIGINT) AS r90
                 FROM (SELECT e.member_id,
                              SUM(CASE WHEN e.created_at >= $1 THEN 1 ELSE 0 END) AS c7,
                              SUM(CASE WHEN e.created_at >= $2 THEN 1 ELSE 0 END) AS c30,
                              COUNT(*) AS c90
                       FROM ledger_entries e CROSS JOIN members m
                       WHERE m.id = e.member_id AND e.created_at >= $3 AND e.created_at < $4 AND m.program_id = $5
                         AND {PURCHASE}
                       GROUP BY e.member_id) t"
            )))
            .bind(w7)
            .bind(w30)
            .bind(w90)
            .bind(to)
            .bind(program_id)
            .fetch_one(&self.pool)
            .await?;
            let g = |c: &str| super::rows::int(&r, c).map(Some);
            f.active = [g("a7")?, g("a30")?, g("a90")?];
            f.repeat = [g("r7")?, g("r30")?, g("r90")?];
            let rows = sqlx::query(
                "SELECT COALESCE(tier, '') AS tier, COUNT(*) AS n FROM members
                 WHERE program_id = $1 AND erased_at IS NULL GROUP BY COALESCE(tier, '')",
            )
            .bind(program_id)
            .fetch_all(&self.pool)
            .await?;
            let mut tiers = BTreeMap::new();
            for r in rows {
                tiers.insert(r.try_get::<String, _>("tier")?, n(r)?);
            }
            f.tiers = Some(tiers);
            f.windows_at = Some(now);
        }
        Ok(f)
    }

    /// Writes a day's figures (replacing the row) and clears its dirty mark.
    pub async fn store_day(&self, f: &DailyFigures) -> Result<()> {
        let names = COLUMNS.join(", ");
        let marks = (0..COLUMNS.len())
            .map(|k| format!("${}", 3 + k))
            .collect::<Vec<_>>()
            .join(", ");
        let base = 3 + COLUMNS.len();
        let extra = [
            "active_7",
            "active_30",
            "active_90",
            "repeat_7",
            "repeat_30",
            "repeat_90",
        ];
        let extra_marks = (0..extra.len())
            .map(|k| format!("${}", base + k))
            .collect::<Vec<_>>()
            .join(", ");
        let tiers_mark = base + extra.len();
        let updates = COLUMNS
            .iter()
            .chain(extra.iter())
            .chain(["tiers", "windows_at"].iter())
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO daily_figures (program_id, day, {names}, {extra}, tiers, windows_at)
             VALUES ($1, $2, {marks}, {extra_marks}, ${tiers_mark}, ${windows_mark})
             ON CONFLICT (program_id, day) DO UPDATE SET {updates}",
            extra = extra.join(", "),
            windows_mark = tiers_mark + 1,
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(&f.program_id)
            .bind(f.day);
        for v in f.values() {
            q = q.bind(v);
        }
        for v in f.active.iter().chain(f.repeat.iter()) {
            q = q.bind(*v);
        }
        q = q.bind(
            f.tiers
                .as_ref()
                .map(|t| serde_json::to_string(t).expect("a map of counts")),
        );
        q = q.bind(f.windows_at);
        let (_turn, mut tx) = self.write_tx().await?;
        q.execute(&mut *tx).await?;
        sqlx::query("DELETE FROM cockpit_dirty WHERE program_id = $1 AND day = $2")
            .bind(&f.program_id)
            .bind(f.day)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A program's daily rows from `from` to `to` (days, both included), oldest first.
    pub async fn daily_figures(
        &self,
        program_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<DailyFigures>> {
        let rows = sqlx::query(
            "SELECT * FROM daily_figures WHERE program_id = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(program_id)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(DailyFigures::from_row).collect()
    }

    /// Sums of a program's daily rows up to day `to` (included).
    pub async fn cumulative_figures(&self, program_id: &str, to: i64) -> Result<Cumulative> {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(points_delta), 0) AS BIGINT) AS points,
                    CAST(COALESCE(SUM(apple_installs - apple_removals), 0) AS BIGINT) AS apple,
                    CAST(COALESCE(SUM(google_installs - google_removals), 0) AS BIGINT) AS google,
                    CAST(COALESCE(SUM(new_members), 0) AS BIGINT) AS members,
                    CAST(COALESCE(SUM(first_installs), 0) AS BIGINT) AS installed,
                    CAST(COALESCE(SUM(first_purchases), 0) AS BIGINT) AS purchased
             FROM daily_figures WHERE program_id = $1 AND day <= $2",
        )
        .bind(program_id)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        let g = |c: &str| super::rows::int(&r, c);
        Ok(Cumulative {
            points_outstanding: g("points")?,
            apple_installed: g("apple")?,
            google_installed: g("google")?,
            members: g("members")?,
            members_installed: g("installed")?,
            members_purchased: g("purchased")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_refreshed_every_15_minutes_until_a_while_after_the_day() {
        let day = 100 * DAY_MS;
        let row = |at| DailyFigures {
            windows_at: Some(at),
            ..DailyFigures::default()
        };
        assert!(windows_due(None, day, day + 1));
        assert!(!windows_due(Some(&row(day + 1)), day, day + 60_000));
        assert!(windows_due(
            Some(&row(day + 1)),
            day,
            day + WINDOWS_EVERY_MS + 1
        ));
        // Computed after the day ended (and its grace): final.
        let last = day + DAY_MS + WINDOWS_FINAL_MS;
        assert!(!windows_due(Some(&row(last)), day, last + 10 * DAY_MS));
        // Computed just before midnight: once more after it.
        assert!(windows_due(
            Some(&row(day + DAY_MS - 1)),
            day,
            day + DAY_MS + WINDOWS_EVERY_MS
        ));
    }
}
