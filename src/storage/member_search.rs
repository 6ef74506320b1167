//! The staff member list (issue 17): search by name prefix, exact e-mail or phone (through the
//! sealed lookup hashes: the values are encrypted, so only an exact match can be found),
//! barcode or external id; filters by tier, installed or not, wallet; keyset paging by id
//! (UUIDv7, so newest first), never `OFFSET`.

use sqlx::{AssertSqlSafe, Row};

use super::{Backend, Result, Store};
use crate::privacy::Field;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberFilter {
    pub program_id: String,
    pub q: Option<String>,
    /// A tier id, or "" for members without a tier.
    pub tier: Option<String>,
    pub installed: Option<bool>,
    /// `apple` or `google`: installed in that wallet.
    pub wallet: Option<String>,
}

/// One line of the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberLine {
    pub id: String,
    pub display_name: String,
    pub external_id: Option<String>,
    pub barcode: String,
    pub points: i64,
    pub tier: Option<String>,
    pub created_at: i64,
    pub erased: bool,
    /// Devices the live card is registered on.
    pub apple_devices: i64,
    /// Google said the card is saved (its last callback was a save).
    pub google_saved: bool,
}

/// How the search text was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    Email,
    Phone,
    /// A barcode or an external id matched exactly.
    Exact,
    NamePrefix,
}

const APPLE: &str =
    "(SELECT COUNT(*) FROM passes p JOIN registrations r ON r.serial_number = p.serial_number
                      WHERE p.member_id = m.id AND p.ended_at IS NULL)";
const GOOGLE: &str = "COALESCE((SELECT CASE WHEN g.event_type = 'save' THEN 1 ELSE 0 END FROM google_events g
                      WHERE g.member_id = m.id ORDER BY g.received_at DESC, g.nonce DESC LIMIT 1), 0)";

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_prefix(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 1);
    for ch in q.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out.push('%');
    out
}

impl Store {
    /// A page of members matching `f`, newest first, with ids below `before` (the last id of
    /// the previous page). Returns how the query was read.
    pub async fn search_members(
        &self,
        f: &MemberFilter,
        before: Option<&str>,
        limit: i64,
    ) -> Result<(Vec<MemberLine>, Option<QueryKind>)> {
        let mut conds = vec!["m.program_id = $1".to_string()];
        let mut binds: Vec<String> = vec![f.program_id.clone()];
        let mut push = |conds: &mut Vec<String>, sql: &str, value: String| {
            binds.push(value);
            conds.push(sql.replace("{}", &format!("${}", binds.len())));
        };
        let mut kind = None;
        if let Some(q) = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
            let ring = self.key_ring()?;
            if q.contains('@') {
                kind = Some(QueryKind::Email);
                let email = crate::domain::enrollment::normalize_email(q).unwrap_or_default();
                let mut ors = Vec::new();
                for h in ring.lookups(Field::Email, &email) {
                    let mut c = Vec::new();
                    push(&mut c, "m.email_hash = {}", h);
                    ors.extend(c);
                }
                conds.push(format!("({})", ors.join(" OR ")));
            } else {
                // A barcode or an external id, exactly: each is one index probe.
                // Two statements: an OR of the two makes SQLite scan when it has statistics.
                let exact = sqlx::query(
                    "SELECT id FROM members WHERE barcode = $2 AND program_id = $1
                     UNION SELECT id FROM members WHERE program_id = $1 AND external_id = $2",
                )
                .bind(&f.program_id)
                .bind(q)
                .fetch_all(&self.pool)
                .await?;
                if exact.is_empty() {
                    if let Some(phone) = crate::domain::enrollment::normalize_phone(q) {
                        kind = Some(QueryKind::Phone);
                        let mut ors = Vec::new();
                        for h in ring.lookups(Field::Phone, &phone) {
                            let mut c = Vec::new();
                            push(&mut c, "m.phone_hash = {}", h);
                            ors.extend(c);
                        }
                        conds.push(format!("({})", ors.join(" OR ")));
                    } else {
                        kind = Some(QueryKind::NamePrefix);
                        if self.backend == Backend::Postgres {
                            push(
                                &mut conds,
                                "lower(m.display_name) LIKE {} ESCAPE '\\'",
                                like_prefix(&q.to_lowercase()),
                            );
                        } else {
                            push(
                                &mut conds,
                                "m.display_name LIKE {} ESCAPE '\\'",
                                like_prefix(q),
                            );
                        }
                    }
                } else {
                    kind = Some(QueryKind::Exact);
                    let mut ors = Vec::new();
                    for r in exact {
                        let mut c = Vec::new();
                        push(&mut c, "m.id = {}", r.try_get("id")?);
                        ors.extend(c);
                    }
                    conds.push(format!("({})", ors.join(" OR ")));
                }
            }
        }
        if let Some(tier) = &f.tier {
            push(&mut conds, "COALESCE(m.tier, '') = {}", tier.clone());
        }
        let apple = "EXISTS (SELECT 1 FROM passes p JOIN registrations r ON r.serial_number = p.serial_number
                     WHERE p.member_id = m.id AND p.ended_at IS NULL)"
            .to_string();
        let google = format!("{GOOGLE} = 1");
        match f.installed {
            Some(true) => conds.push(format!("({apple} OR {google})")),
            Some(false) => conds.push(format!("NOT ({apple} OR {google})")),
            None => {}
        }
        match f.wallet.as_deref() {
            Some("apple") => conds.push(apple.clone()),
            Some("google") => conds.push(google.clone()),
            _ => {}
        }
        if let Some(before) = before {
            push(&mut conds, "m.id < {}", before.to_string());
        }
        let sql = format!(
            "SELECT m.id, m.display_name, m.external_id, m.barcode, m.points, m.tier, m.created_at,
                    m.erased_at, {APPLE} AS apple_devices, {GOOGLE} AS google_saved
             FROM members m WHERE {} ORDER BY m.id DESC LIMIT {}",
            conds.join(" AND "),
            limit.clamp(1, 1000)
        );
        let mut query = sqlx::query(AssertSqlSafe(sql));
        for b in &binds {
            query = query.bind(b.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        let lines = rows
            .iter()
            .map(|r| {
                Ok(MemberLine {
                    id: r.try_get("id")?,
                    display_name: r.try_get("display_name")?,
                    external_id: r.try_get("external_id")?,
                    barcode: r.try_get("barcode")?,
                    points: r.try_get("points")?,
                    tier: r.try_get("tier")?,
                    created_at: r.try_get("created_at")?,
                    erased: r.try_get::<Option<i64>, _>("erased_at")?.is_some(),
                    apple_devices: super::rows::int(r, "apple_devices")?,
                    google_saved: super::rows::int(r, "google_saved")? == 1,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((lines, kind))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(super::like_prefix("Ad"), "Ad%");
        assert_eq!(super::like_prefix("5%_\\"), "5\\%\\_\\\\%");
    }
}
