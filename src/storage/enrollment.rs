//! Joining and importing members: join-page settings, finding a returning customer, consent
//! records, the CSV import's bulk path, and the points a cashier moved today.

use sqlx::Row;

use super::{Result, StorageError, Store, new_id, rows};
use crate::domain::enrollment::{EnrollmentSettings, Join};
use crate::domain::{Member, NewMember, Pass, Program, Template};
use crate::ledger::{Operation, Origin};
use crate::privacy::Field;

/// One consent as recorded: what was shown and what was answered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConsentRecord {
    /// `data` (processing, required to join) or `marketing`.
    pub kind: String,
    pub granted: bool,
    pub policy_version: String,
    pub policy_url: Option<String>,
    /// The exact label next to the box.
    pub text_shown: String,
    /// Where it was given: `join`.
    pub source: String,
    pub recorded_at: i64,
}

/// One member row of an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRow {
    pub external_id: String,
    pub name: String,
    pub email: Option<String>,
    pub phone: Option<String>,
    pub points: i64,
}

/// What one import batch did: members created, and rows whose external id existed (left as
/// they were, so a second run changes nothing), each with its member id.
#[derive(Debug, Default)]
pub struct ImportBatch {
    pub created: Vec<(String, String)>,
    pub existing: Vec<(String, String)>,
}

impl Store {
    pub async fn program_enrollment(&self, program_id: &str) -> Result<EnrollmentSettings> {
        let row = sqlx::query("SELECT enrollment FROM programs WHERE id = $1")
            .bind(program_id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("program"))?;
        let json: String = row.try_get("enrollment")?;
        serde_json::from_str(&json)
            .map_err(|e| StorageError::Corrupt(format!("program enrollment: {e}")))
    }

    pub async fn set_program_enrollment(
        &self,
        program_id: &str,
        settings: &EnrollmentSettings,
    ) -> Result<()> {
        let done = sqlx::query("UPDATE programs SET enrollment = $2 WHERE id = $1")
            .bind(program_id)
            .bind(serde_json::to_string(settings).expect("settings serialise"))
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("program"));
        }
        Ok(())
    }

    /// Joins a customer: the member with the same e-mail or phone in the program if there is
    /// one, else a new member and pass on `template` with the consents, in one transaction. An
    /// existing member's consents are left as they are. Returns the member, their pass, and
    /// whether they are new.
    pub async fn join_member(
        &self,
        program: &Program,
        template: &Template,
        join: &Join,
        consents: &[ConsentRecord],
        welcome: Option<(&Operation, &Origin)>,
    ) -> Result<(Member, Pass, bool)> {
        let now = crate::domain::now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        if self.backend == super::Backend::Postgres {
            // Serialises joins per program, so two taps on "Join" make one member. SQLite's
            // BEGIN IMMEDIATE already does.
            sqlx::query("SELECT id FROM programs WHERE id = $1 FOR UPDATE")
                .bind(&program.id)
                .execute(&mut *tx)
                .await?;
        }
        let existing = match self.contact_match(join)? {
            None => None,
            Some((sql, hashes)) => {
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&program.id);
                for h in hashes {
                    q = q.bind(h);
                }
                q.fetch_optional(&mut *tx).await?
            }
        };
        let (member_id, created) = match existing {
            Some(r) => (r.try_get::<String, _>("id")?, false),
            None => {
                let new = NewMember {
                    display_name: join.name.clone(),
                    external_id: None,
                };
                let (member, pass) =
                    super::members::new_member_and_pass(program, template, &new, now);
                self.insert_member_rows(
                    &mut tx,
                    &member,
                    &pass,
                    Some((&join.email, &join.phone, &join.birthday)),
                )
                .await?;
                // The welcome bonus commits with the member: a crash can lose neither alone.
                if let Some((op, origin)) = welcome {
                    let by = super::Actor {
                        id: Some("system:welcome"),
                        ..Default::default()
                    };
                    self.post_in_tx(&mut tx, &member.id, op, origin, by, now)
                        .await?;
                }
                (member.id, true)
            }
        };
        // An existing member's consents are theirs to give: a visitor who only typed their
        // e-mail or phone has not proved to be them, so the visitor's choices are not recorded.
        let consents = if created { consents } else { &[] };
        for c in consents {
            sqlx::query(
                "INSERT INTO consents (id, member_id, kind, granted, policy_version, policy_url, text_shown, source, recorded_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(new_id())
            .bind(&member_id)
            .bind(&c.kind)
            .bind(c.granted as i64)
            .bind(&c.policy_version)
            .bind(&c.policy_url)
            .bind(&c.text_shown)
            .bind(&c.source)
            .bind(c.recorded_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        if created && welcome.is_some() {
            self.committed();
        }
        let member = self.get_member(&member_id).await?;
        let pass = self.pass_for_member(&member_id).await?;
        Ok((member, pass, created))
    }

    /// The query finding the program's member whose e-mail or phone is the join's, by the keyed
    /// hashes under every key of the ring (a rotation may be under way): its SQL (`$1` the
    /// program) and the hashes to bind after it; `None` when the join gives neither.
    fn contact_match(&self, join: &Join) -> Result<Option<(String, Vec<String>)>> {
        let ring = self.key_ring()?;
        let mut hashes = Vec::new();
        if let Some(e) = &join.email {
            hashes.extend(
                ring.lookups(Field::Email, e)
                    .into_iter()
                    .map(|h| ("email_hash", h)),
            );
        }
        if let Some(p) = &join.phone {
            hashes.extend(
                ring.lookups(Field::Phone, p)
                    .into_iter()
                    .map(|h| ("phone_hash", h)),
            );
        }
        if hashes.is_empty() {
            return Ok(None);
        }
        let matches = hashes
            .iter()
            .enumerate()
            .map(|(k, (column, _))| format!("{column} = ${}", k + 2))
            .collect::<Vec<_>>()
            .join(" OR ");
        Ok(Some((
            format!(
                "SELECT id FROM members WHERE program_id = $1 AND ({matches})
                 ORDER BY created_at LIMIT 1"
            ),
            hashes.into_iter().map(|(_, h)| h).collect(),
        )))
    }

    /// The id of the program's member a join's e-mail or phone matches, if any (what
    /// `join_member` would find, read outside its transaction).
    pub async fn member_matching(&self, program_id: &str, join: &Join) -> Result<Option<String>> {
        let Some((sql, hashes)) = self.contact_match(join)? else {
            return Ok(None);
        };
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(program_id);
        for h in hashes {
            q = q.bind(h);
        }
        Ok(match q.fetch_optional(&self.pool).await? {
            Some(r) => Some(r.try_get("id")?),
            None => None,
        })
    }

    /// Keeps a join until its e-mailed link is opened: `payload` (the form as submitted) sealed
    /// by the key ring, bound to `token_hash`.
    pub async fn add_pending_join(
        &self,
        token_hash: &str,
        program_id: &str,
        payload: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<()> {
        let sealed = self
            .key_ring()?
            .seal(Field::PendingJoin, token_hash, payload);
        sqlx::query(
            "INSERT INTO pending_joins (token_hash, program_id, payload, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(program_id)
        .bind(sealed)
        .bind(now)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A join waiting for confirmation under `token_hash`, not expired at `now`: its program
    /// and its payload, opened. It stays until it expires, so a second click on the link finds
    /// it again (and `join_member` finds the member the first made).
    pub async fn pending_join(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT program_id, payload FROM pending_joins WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let sealed: String = row.try_get("payload")?;
        let payload = self
            .key_ring()?
            .open(Field::PendingJoin, token_hash, &sealed)
            .map_err(|e| StorageError::Corrupt(format!("a pending join: {e}")))?;
        Ok(Some((row.try_get("program_id")?, payload)))
    }

    /// Deletes joins whose link expired before `now`; returns how many.
    pub async fn purge_pending_joins(&self, now: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM pending_joins WHERE expires_at <= $1")
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// A member's consents, oldest first.
    pub async fn consents(&self, member_id: &str) -> Result<Vec<ConsentRecord>> {
        let rows =
            sqlx::query("SELECT * FROM consents WHERE member_id = $1 ORDER BY recorded_at, id")
                .bind(member_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(ConsentRecord {
                    kind: r.try_get("kind")?,
                    granted: rows::int(r, "granted")? != 0,
                    policy_version: r.try_get("policy_version")?,
                    policy_url: r.try_get("policy_url")?,
                    text_shown: r.try_get("text_shown")?,
                    source: r.try_get("source")?,
                    recorded_at: r.try_get("recorded_at")?,
                })
            })
            .collect()
    }

    /// A program's member count, the sum of their balances, the sum of their ledger entries and
    /// of their lots' remaining points: after any import the last three are equal.
    pub async fn program_totals(&self, program_id: &str) -> Result<[i64; 4]> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM members WHERE program_id = $1) AS n,
                    (SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) FROM members WHERE program_id = $1) AS balance,
                    (SELECT CAST(COALESCE(SUM(e.points), 0) AS BIGINT) FROM ledger_entries e JOIN members m ON m.id = e.member_id WHERE m.program_id = $1) AS entries,
                    (SELECT CAST(COALESCE(SUM(l.remaining), 0) AS BIGINT) FROM point_lots l JOIN members m ON m.id = l.member_id WHERE m.program_id = $1) AS lots",
        )
        .bind(program_id)
        .fetch_one(&self.pool)
        .await?;
        Ok([
            rows::int(&row, "n")?,
            rows::int(&row, "balance")?,
            rows::int(&row, "entries")?,
            rows::int(&row, "lots")?,
        ])
    }

    /// A member's e-mail, phone (opened) and birthday.
    pub async fn member_contact(
        &self,
        member_id: &str,
    ) -> Result<(Option<String>, Option<String>, Option<String>)> {
        let r = sqlx::query(
            "SELECT email, email_hash, phone, phone_hash, birthday FROM members WHERE id = $1",
        )
        .bind(member_id)
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StorageError::NotFound("member"))?;
        let (email, phone): (Option<String>, Option<String>) =
            (r.try_get("email")?, r.try_get("phone")?);
        let (email, phone) = if email.is_none() && phone.is_none() {
            (None, None)
        } else {
            let ring = self.key_ring()?;
            let email_hash: Option<String> = r.try_get("email_hash")?;
            let phone_hash: Option<String> = r.try_get("phone_hash")?;
            (
                Self::open(&ring, Field::Email, member_id, email, email_hash.as_deref())?,
                Self::open(&ring, Field::Phone, member_id, phone, phone_hash.as_deref())?,
            )
        };
        Ok((email, phone, r.try_get("birthday")?))
    }

    /// Imports one batch of members in one transaction. Rows whose external id exists in the
    /// program are left untouched. A new member's balance is an `adjust` entry ("imported
    /// balance") with its lot, so the balance is the sum of the entries from the start.
    pub async fn import_members(
        &self,
        program: &Program,
        template: &Template,
        batch: &[ImportRow],
    ) -> Result<ImportBatch> {
        let now = crate::domain::now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        let mut out = ImportBatch::default();
        let mut existing = std::collections::HashMap::new();
        for chunk in batch.chunks(500) {
            // One equality lookup per external id on the (program_id, external_id) unique index.
            // An `IN (…)` list was planned as a scan of the whole program filtered by the list
            // whenever PostgreSQL had no fresh statistics (an import outruns autovacuum): 1 s a
            // batch at 100,000 members. A correlated lookup on both columns has no such plan.
            let values = (0..chunk.len())
                .map(|k| format!("(${})", k + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT v.column1 AS external_id,
                        (SELECT m.id FROM members m WHERE m.program_id = $1 AND m.external_id = v.column1) AS id
                 FROM (VALUES {values}) AS v"
            )))
            .bind(&program.id);
            for r in chunk {
                q = q.bind(&r.external_id);
            }
            for r in q.fetch_all(&mut *tx).await? {
                if let Some(id) = r.try_get::<Option<String>, _>("id")? {
                    existing.insert(r.try_get::<String, _>("external_id")?, id);
                }
            }
        }
        let expires_at = program
            .rules
            .expiry_days
            .map(|d| crate::ledger::expiry_at(now, d));
        let mut seen = std::collections::HashSet::new();
        let mut fresh = Vec::new();
        for r in batch {
            if let Some(id) = existing.get(&r.external_id) {
                out.existing.push((r.external_id.clone(), id.clone()));
            } else if seen.insert(r.external_id.clone()) {
                let new = NewMember {
                    display_name: r.name.clone(),
                    external_id: Some(r.external_id.clone()),
                };
                let (m, p) = super::members::new_member_and_pass(program, template, &new, now);
                fresh.push((r, m, p));
            }
        }
        let ring = if fresh
            .iter()
            .any(|(r, _, _)| r.email.is_some() || r.phone.is_some())
        {
            Some(self.key_ring()?)
        } else {
            None
        };
        for chunk in fresh.chunks(super::members::BULK_CHUNK / 2) {
            let values = super::members::values_list(chunk.len(), 10, "$1");
            let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO members (id, program_id, display_name, external_id, barcode, email, email_hash, phone, phone_hash, points, created_at) VALUES {values}"
            )))
            .bind(now);
            for (r, m, _) in chunk {
                let ((email, email_hash), (phone, phone_hash)) = match &ring {
                    Some(ring) => (
                        Self::seal(ring, Field::Email, &m.id, r.email.as_deref()),
                        Self::seal(ring, Field::Phone, &m.id, r.phone.as_deref()),
                    ),
                    None => ((None, None), (None, None)),
                };
                q = q
                    .bind(&m.id)
                    .bind(&m.program_id)
                    .bind(&m.display_name)
                    .bind(&m.external_id)
                    .bind(&m.barcode)
                    .bind(email)
                    .bind(email_hash)
                    .bind(phone)
                    .bind(phone_hash)
                    .bind(r.points);
            }
            q.execute(&mut *tx).await?;
            super::members::insert_passes(&mut tx, chunk.iter().map(|(_, _, p)| p), now).await?;
            let credited: Vec<_> = chunk.iter().filter(|(r, _, _)| r.points > 0).collect();
            if !credited.is_empty() {
                let entries: Vec<(String, &str, i64)> = credited
                    .iter()
                    .map(|(r, m, _)| (new_id(), m.id.as_str(), r.points))
                    .collect();
                let values = super::members::values_list(
                    entries.len(),
                    3,
                    "'adjust', 'imported balance', 'import', $1",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO ledger_entries (id, member_id, points, kind, reason, api_key_id, created_at) VALUES {values}"
                )))
                .bind(now);
                for (id, member, points) in &entries {
                    q = q.bind(id).bind(*member).bind(*points);
                }
                q.execute(&mut *tx).await?;
                let values = super::members::values_list(entries.len(), 6, "$1");
                let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "INSERT INTO point_lots (id, member_id, entry_id, points, remaining, expires_at, earned_at) VALUES {values}"
                )))
                .bind(now);
                for (id, member, points) in &entries {
                    q = q
                        .bind(new_id())
                        .bind(*member)
                        .bind(id)
                        .bind(*points)
                        .bind(*points)
                        .bind(expires_at);
                }
                q.execute(&mut *tx).await?;
            }
            self.queue_google(&mut tx, chunk.iter().map(|(_, m, _)| m.id.as_str()), now)
                .await?;
            out.created.extend(
                chunk
                    .iter()
                    .map(|(r, m, _)| (r.external_id.clone(), m.id.clone())),
            );
        }
        tx.commit().await?;
        drop(_turn);
        // A CLI import runs no server workers: keep the WAL from growing batch after batch.
        self.checkpoint().await?;
        Ok(out)
    }
}
