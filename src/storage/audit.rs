//! The audit log: rows are only ever inserted (triggers refuse updates and deletes). One
//! request is one `audit_log` row plus an `audit_members` row per member it read or changed.

use sqlx::Row;

use super::{Backend, Result, Store, new_id, rows};

/// One audited request or command.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: String,
    pub at: i64,
    /// `api_key`, `staff` or `cli`.
    pub actor_kind: String,
    pub actor_id: String,
    pub actor_label: String,
    /// The route's template with its method (`POST /api/v1/members/{member_id}/erase`), or a
    /// CLI verb (`tessera api-key create`).
    pub action: String,
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub client_ip: Option<String>,
    pub status: i64,
    pub is_write: bool,
    /// The members the request read or changed.
    pub members: Vec<String>,
}

/// What `GET /api/v1/audit` filters on; every part optional.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor_id: Option<String>,
    /// Matches the target id, or a member the request touched.
    pub target_id: Option<String>,
    /// A substring of the action (`erase`, `POST /api/v1/api-keys`).
    pub action: Option<String>,
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// A member whose data a period's requests read or changed, for a breach notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AffectedMember {
    pub member_id: String,
    pub external_id: Option<String>,
    pub first_at: i64,
    pub last_at: i64,
    pub reads: i64,
    pub writes: i64,
}

/// Member rows per statement, far under both backends' parameter limits (an import names
/// every member it created or found).
const MEMBERS_PER_STATEMENT: usize = 1000;

const ROW_SQL: &str = "INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_label, action,
                           target_kind, target_id, client_ip, status, is_write)
                       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// `n` member rows `($1, $first.., $2)`: the audit id, each member, the time.
fn members_sql(first: usize, n: usize) -> String {
    let values = (0..n)
        .map(|k| format!("($1, ${}, $2)", first + k))
        .collect::<Vec<_>>()
        .join(", ");
    format!("INSERT INTO audit_members (audit_id, member_id, at) VALUES {values}")
}

/// Binds `$1`..`$11` of `ROW_SQL` to the entry's columns.
fn bind_row<'q>(
    q: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    e: &'q AuditEntry,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    q.bind(&e.id)
        .bind(e.at)
        .bind(&e.actor_kind)
        .bind(&e.actor_id)
        .bind(&e.actor_label)
        .bind(&e.action)
        .bind(&e.target_kind)
        .bind(&e.target_id)
        .bind(&e.client_ip)
        .bind(e.status)
        .bind(e.is_write as i64)
}

impl Store {
    /// Appends one entry (with its id and time filled in when empty) and returns its id. On
    /// PostgreSQL the row and its members are one statement (a data-modifying CTE): one round
    /// trip, committed alone; on SQLite a transaction in this process's write turn.
    pub async fn append_audit(&self, entry: &AuditEntry) -> Result<String> {
        let mut entry = entry.clone();
        if entry.id.is_empty() {
            entry.id = new_id();
        }
        if entry.at == 0 {
            entry.at = crate::domain::now_ms();
        }
        entry.members.sort();
        entry.members.dedup();
        let e = &entry;
        if self.backend == Backend::Postgres && e.members.len() <= MEMBERS_PER_STATEMENT {
            let sql = if e.members.is_empty() {
                ROW_SQL.to_string()
            } else {
                format!(
                    "WITH logged AS ({ROW_SQL}) {}",
                    members_sql(12, e.members.len())
                )
            };
            let mut q = bind_row(sqlx::query(sqlx::AssertSqlSafe(sql)), e);
            for m in &e.members {
                q = q.bind(m);
            }
            q.execute(&self.pool).await?;
        } else {
            self.append_audits(std::slice::from_ref(e)).await?;
        }
        Ok(entry.id)
    }

    /// Appends entries whose id and time are set, in one transaction.
    pub async fn append_audits(&self, entries: &[AuditEntry]) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        for e in entries {
            bind_row(sqlx::query(ROW_SQL), e).execute(&mut *tx).await?;
            let mut members: Vec<&String> = e.members.iter().collect();
            members.sort();
            members.dedup();
            for chunk in members.chunks(MEMBERS_PER_STATEMENT) {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(members_sql(3, chunk.len())))
                    .bind(&e.id)
                    .bind(e.at);
                for m in chunk {
                    q = q.bind(*m);
                }
                q.execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Entries matching `filter`, newest first, after the cursor `(at, id)`; up to `limit`.
    pub async fn audit_page(
        &self,
        filter: &AuditFilter,
        before: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let mut sql = String::from(
            "SELECT id, at, actor_kind, actor_id, actor_label, action, target_kind, target_id,
                    client_ip, status, is_write
             FROM audit_log a WHERE 1 = 1",
        );
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if filter.actor_id.is_some() {
            sql += &format!(" AND a.actor_id = {}", next());
        }
        if filter.target_id.is_some() {
            let p = next();
            sql += &format!(
                " AND (a.target_id = {p} OR EXISTS (SELECT 1 FROM audit_members m
                        WHERE m.audit_id = a.id AND m.member_id = {p}))"
            );
        }
        if filter.action.is_some() {
            sql += &format!(" AND a.action LIKE {} ESCAPE '\\'", next());
        }
        if filter.from_ms.is_some() {
            sql += &format!(" AND a.at >= {}", next());
        }
        if filter.to_ms.is_some() {
            sql += &format!(" AND a.at < {}", next());
        }
        if before.is_some() {
            let (at, id) = (next(), next());
            sql += &format!(" AND (a.at < {at} OR (a.at = {at} AND a.id < {id}))");
        }
        sql += &format!(" ORDER BY a.at DESC, a.id DESC LIMIT {}", next());
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        if let Some(v) = &filter.actor_id {
            q = q.bind(v.clone());
        }
        if let Some(v) = &filter.target_id {
            q = q.bind(v.clone());
        }
        if let Some(v) = &filter.action {
            let escaped = v
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            q = q.bind(format!("%{escaped}%"));
        }
        if let Some(v) = filter.from_ms {
            q = q.bind(v);
        }
        if let Some(v) = filter.to_ms {
            q = q.bind(v);
        }
        if let Some((at, id)) = before {
            q = q.bind(at).bind(id);
        }
        let found = q.bind(limit).fetch_all(&self.pool).await?;
        let mut entries = Vec::with_capacity(found.len());
        for r in &found {
            entries.push(AuditEntry {
                id: r.try_get("id")?,
                at: rows::int(r, "at")?,
                actor_kind: r.try_get("actor_kind")?,
                actor_id: r.try_get("actor_id")?,
                actor_label: r.try_get("actor_label")?,
                action: r.try_get("action")?,
                target_kind: r.try_get("target_kind")?,
                target_id: r.try_get("target_id")?,
                client_ip: r.try_get("client_ip")?,
                status: rows::int(r, "status")?,
                is_write: rows::int(r, "is_write")? != 0,
                members: Vec::new(),
            });
        }
        if !entries.is_empty() {
            let ids: Vec<String> = (1..=entries.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT audit_id, member_id FROM audit_members WHERE audit_id IN ({})
                 ORDER BY member_id",
                ids.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for e in &entries {
                q = q.bind(e.id.clone());
            }
            for r in q.fetch_all(&self.pool).await? {
                let audit_id: String = r.try_get("audit_id")?;
                if let Some(e) = entries.iter_mut().find(|e| e.id == audit_id) {
                    e.members.push(r.try_get("member_id")?);
                }
            }
        }
        Ok(entries)
    }

    /// The members whose data requests in `[since, until)` read or changed, optionally only
    /// those by one actor (a key's or an account's id), most recently touched first.
    pub async fn audit_affected(
        &self,
        since: i64,
        until: i64,
        actor_id: Option<&str>,
    ) -> Result<Vec<AffectedMember>> {
        let actor = if actor_id.is_some() {
            " AND a.actor_id = $3"
        } else {
            ""
        };
        let sql = format!(
            "SELECT m.member_id, MIN(m.at) AS first_at, MAX(m.at) AS last_at,
                    CAST(SUM(1 - a.is_write) AS BIGINT) AS reads, CAST(SUM(a.is_write) AS BIGINT) AS writes,
                    MAX(mem.external_id) AS external_id
             FROM audit_members m
             JOIN audit_log a ON a.id = m.audit_id
             LEFT JOIN members mem ON mem.id = m.member_id
             WHERE m.at >= $1 AND m.at < $2{actor}
             GROUP BY m.member_id
             ORDER BY MAX(m.at) DESC, m.member_id"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(since)
            .bind(until);
        if let Some(a) = actor_id {
            q = q.bind(a.to_string());
        }
        let mut out = Vec::new();
        for r in q.fetch_all(&self.pool).await? {
            out.push(AffectedMember {
                member_id: r.try_get("member_id")?,
                external_id: r.try_get("external_id")?,
                first_at: rows::int(&r, "first_at")?,
                last_at: rows::int(&r, "last_at")?,
                reads: rows::int(&r, "reads")?,
                writes: rows::int(&r, "writes")?,
            });
        }
        Ok(out)
    }
}
