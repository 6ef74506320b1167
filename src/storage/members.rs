//! Members and their passes.

use sqlx::{Any, Transaction};

use super::{Result, StorageError, Store, conflict, new_id, rows};
use crate::domain::{Member, NewMember, Pass, Program, Template, now_ms};
use crate::secret::{random_barcode, random_token};

impl Store {
    /// Creates many members and their passes on `template` in one transaction, a few hundred
    /// rows per statement: imports and load tests. Barcodes, serials and tokens are random as
    /// in `insert_member`.
    pub async fn insert_members_bulk(
        &self,
        program: &Program,
        template: &Template,
        new: &[NewMember],
    ) -> Result<Vec<(Member, Pass)>> {
        let now = now_ms();
        let made: Vec<(Member, Pass)> = new
            .iter()
            .map(|m| new_member_and_pass(program, template, m, now))
            .collect();
        let (_turn, mut tx) = self.write_tx().await?;
        for chunk in made.chunks(BULK_CHUNK) {
            let members = values_list(chunk.len(), 5, "0, $1");
            let sql = format!(
                "INSERT INTO members (id, program_id, display_name, external_id, barcode, points, created_at) VALUES {members}"
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(now);
            for (m, _) in chunk {
                q = q
                    .bind(&m.id)
                    .bind(&m.program_id)
                    .bind(&m.display_name)
                    .bind(&m.external_id)
                    .bind(&m.barcode);
            }
            q.execute(&mut *tx).await.map_err(|e| {
                conflict(e, || {
                    "a member with one of these external_ids exists already in this program".into()
                })
            })?;
            insert_passes(&mut tx, chunk.iter().map(|(_, p)| p), now).await?;
            let created: Vec<_> = chunk
                .iter()
                .map(|(m, _)| (m.id.clone(), created_payload(m, "api", 0)))
                .collect();
            self.record_program_events(
                &mut tx,
                &program.id,
                super::events::kinds::MEMBER_CREATED,
                &created,
                now,
            )
            .await?;
            self.queue_google(&mut tx, chunk.iter().map(|(m, _)| m.id.as_str()), now)
                .await?;
        }
        tx.commit().await?;
        Ok(made)
    }

    /// Creates a member with an unguessable barcode and their pass on `template`, together.
    pub async fn insert_member(
        &self,
        program: &Program,
        template: &Template,
        m: &NewMember,
    ) -> Result<(Member, Pass)> {
        let (member, pass) = new_member_and_pass(program, template, m, now_ms());
        let (_turn, mut tx) = self.write_tx().await?;
        self.insert_member_rows(&mut tx, &member, &pass, None, "api")
            .await?;
        tx.commit().await?;
        Ok((member, pass))
    }

    /// Inserts a member (with contact details, if any), their pass, and their Google queue row.
    pub(super) async fn insert_member_rows(
        &self,
        tx: &mut Transaction<'static, Any>,
        member: &Member,
        pass: &Pass,
        contact: Option<(&Option<String>, &Option<String>, &Option<String>)>,
        source: &str,
    ) -> Result<()> {
        let (email, phone, birthday) = contact.unwrap_or((&None, &None, &None));
        let ((email, email_hash), (phone, phone_hash)) = if email.is_some() || phone.is_some() {
            let ring = self.key_ring()?;
            let seal =
                |field, v: &Option<String>| Self::seal(&ring, field, &member.id, v.as_deref());
            (
                seal(crate::privacy::Field::Email, email),
                seal(crate::privacy::Field::Phone, phone),
            )
        } else {
            ((None, None), (None, None))
        };
        sqlx::query(
            "INSERT INTO members (id, program_id, display_name, external_id, barcode, points, created_at, email, phone, birthday, email_hash, phone_hash)
             VALUES ($1, $2, $3, $4, $5, 0, $6, $7, $8, $9, $10, $11)",
        )
        .bind(&member.id)
        .bind(&member.program_id)
        .bind(&member.display_name)
        .bind(&member.external_id)
        .bind(&member.barcode)
        .bind(member.created_at)
        .bind(email)
        .bind(phone)
        .bind(birthday)
        .bind(email_hash)
        .bind(phone_hash)
        .execute(&mut **tx)
        .await
        .map_err(|e| {
            conflict(e, || {
                format!("a member with external_id {:?} exists already in this program", member.external_id.as_deref().unwrap_or(""))
            })
        })?;
        insert_pass(tx, pass).await?;
        let created = super::events::NewEvent::new(
            super::events::kinds::MEMBER_CREATED,
            &member.id,
            created_payload(member, source, 0),
        );
        self.record_events(tx, &[created], member.created_at)
            .await?;
        self.queue_google(tx, std::iter::once(member.id.as_str()), pass.created_at)
            .await
    }

    pub async fn get_member(&self, id: &str) -> Result<Member> {
        let row = sqlx::query("SELECT * FROM members WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::member(&row.ok_or(StorageError::NotFound("member"))?)
    }

    pub async fn find_member_by_external_id(
        &self,
        program_id: &str,
        external_id: &str,
    ) -> Result<Option<Member>> {
        let row = sqlx::query("SELECT * FROM members WHERE program_id = $1 AND external_id = $2")
            .bind(program_id)
            .bind(external_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::member).transpose()
    }

    pub async fn find_member_by_barcode(&self, barcode: &str) -> Result<Option<Member>> {
        let row = sqlx::query("SELECT * FROM members WHERE barcode = $1")
            .bind(barcode)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::member).transpose()
    }

    /// A program's members in creation order, after the cursor `(created_at, id)`.
    pub async fn list_members(
        &self,
        program_id: &str,
        after: Option<(i64, String)>,
        limit: i64,
    ) -> Result<Vec<Member>> {
        let (at, id) = after.unwrap_or((i64::MIN, String::new()));
        let rows = sqlx::query(
            "SELECT * FROM members WHERE program_id = $1 AND (created_at > $2 OR (created_at = $2 AND id > $3))
             ORDER BY created_at, id LIMIT $4",
        )
        .bind(program_id)
        .bind(at)
        .bind(id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::member).collect()
    }

    /// The member's card: the live pass, or when the card was ended, the newest ended one.
    pub async fn pass_for_member(&self, member_id: &str) -> Result<Pass> {
        let row = sqlx::query(
            "SELECT * FROM passes WHERE member_id = $1
             ORDER BY CASE WHEN ended_at IS NULL THEN 0 ELSE 1 END, created_at DESC, serial_number LIMIT 1",
        )
            .bind(member_id)
            .fetch_optional(&self.pool)
            .await?;
        rows::pass(&row.ok_or(StorageError::NotFound("pass"))?)
    }

    pub async fn get_pass(&self, serial_number: &str) -> Result<Pass> {
        let row = sqlx::query("SELECT * FROM passes WHERE serial_number = $1")
            .bind(serial_number)
            .fetch_optional(&self.pool)
            .await?;
        rows::pass(&row.ok_or(StorageError::NotFound("pass"))?)
    }

    /// `get_pass` for the PassKit web service, from its cache when it holds the pass
    /// (`cache`). Everything a device is answered from is current; `last_fetched_at` may lag
    /// (the fetch log's flush does not forget passes).
    pub async fn passkit_pass(&self, serial_number: &str) -> Result<Pass> {
        if let Some(pass) = self.cache.pass(serial_number) {
            return Ok(pass);
        }
        let generation = self.cache.generation();
        let pass = self.get_pass(serial_number).await?;
        if let Some(g) = generation {
            self.cache.keep_passes(g, [&pass]);
        }
        Ok(pass)
    }

    /// The sum of a member's ledger entries (what the stored balance must always equal).
    pub async fn ledger_sum(&self, member_id: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT CAST(COALESCE(SUM(points), 0) AS BIGINT) AS total FROM ledger_entries WHERE member_id = $1",
        )
        .bind(member_id)
        .fetch_one(&self.pool)
        .await?;
        rows::int(&row, "total")
    }
}

/// A new member with an unguessable barcode (128 bits) and their pass (a 128-bit serial and a
/// 256-bit token), not yet stored.
pub(super) fn new_member_and_pass(
    program: &Program,
    template: &Template,
    m: &NewMember,
    now: i64,
) -> (Member, Pass) {
    let member = Member {
        id: new_id(),
        program_id: program.id.clone(),
        display_name: m.display_name.clone(),
        external_id: m.external_id.clone(),
        barcode: random_barcode(16),
        points: 0,
        tier: None,
        created_at: now,
    };
    let pass = new_pass(&member.id, &template.id, &program.pass_type_identifier, now);
    (member, pass)
}

/// New passes, created and updated at `now`, in one multi-row INSERT (at most `BULK_CHUNK`).
pub(super) async fn insert_passes(
    tx: &mut Transaction<'static, Any>,
    passes: impl ExactSizeIterator<Item = &Pass>,
    now: i64,
) -> Result<()> {
    let values = values_list(passes.len(), 6, "$1, $1");
    let mut q = sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO passes (serial_number, member_id, template_id, pass_type_identifier, authentication_token, download_token, created_at, updated_at) VALUES {values}"
    )))
    .bind(now);
    for p in passes {
        q = q
            .bind(&p.serial_number)
            .bind(&p.member_id)
            .bind(&p.template_id)
            .bind(&p.pass_type_identifier)
            .bind(&p.authentication_token)
            .bind(&p.download_token);
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// One new pass, created and updated at its `created_at`.
pub(super) async fn insert_pass(tx: &mut Transaction<'static, Any>, pass: &Pass) -> Result<()> {
    sqlx::query(
        "INSERT INTO passes (serial_number, member_id, template_id, pass_type_identifier, authentication_token, download_token, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
    )
    .bind(&pass.serial_number)
    .bind(&pass.member_id)
    .bind(&pass.template_id)
    .bind(&pass.pass_type_identifier)
    .bind(&pass.authentication_token)
    .bind(&pass.download_token)
    .bind(pass.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A fresh pass for a member: new serial (128 bits), PassKit token and download token (256
/// bits each), not yet stored.
pub(super) fn new_pass(member_id: &str, template_id: &str, pass_type: &str, now: i64) -> Pass {
    Pass {
        serial_number: random_token(16),
        member_id: member_id.to_string(),
        template_id: template_id.to_string(),
        pass_type_identifier: pass_type.to_string(),
        authentication_token: random_token(32),
        created_at: now,
        updated_at: now,
        last_fetched_at: None,
        download_token: random_token(32),
        ended_at: None,
    }
}

/// `member.created`'s payload: ids and the opening balance, never contact details.
pub(super) fn created_payload(m: &Member, source: &str, balance: i64) -> serde_json::Value {
    serde_json::json!({
        "source": source,
        "external_id": m.external_id,
        "balance": balance,
        "tier": serde_json::Value::Null,
    })
}

/// Rows per multi-row INSERT of `insert_members_bulk` (at most 6 parameters each, under SQLite's
/// 32,766 and PostgreSQL's 65,535).
pub(super) const BULK_CHUNK: usize = 500;

/// `($2, $3, …, tail), (…)`: `rows` tuples of `per_row` numbered parameters after the shared
/// `$1`, each followed by `tail`.
pub(super) fn values_list(rows: usize, per_row: usize, tail: &str) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (0..per_row)
                .map(|k| format!("${}", 2 + r * per_row + k))
                .collect();
            format!("({}, {tail})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}
