//! Programs, their rules, and their templates with images.

use sqlx::{Any, Row, Transaction};

use super::{Result, StorageError, Store, conflict, designer, new_id, rows};
use crate::domain::{NewProgram, Program, Template, TemplateDesign, now_ms};
use crate::ledger::LoyaltyRules;

impl Store {
    pub async fn insert_program(&self, p: &NewProgram) -> Result<Program> {
        let program = Program {
            id: new_id(),
            slug: p.slug.clone(),
            name: p.name.clone(),
            pass_type_identifier: p.pass_type_identifier.clone(),
            team_identifier: p.team_identifier.clone(),
            organization_name: p.organization_name.clone(),
            rules: p.rules.clone(),
            created_at: now_ms(),
        };
        sqlx::query(
            "INSERT INTO programs (id, slug, name, pass_type_identifier, team_identifier, organization_name, created_at, rules)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&program.id)
        .bind(&program.slug)
        .bind(&program.name)
        .bind(&program.pass_type_identifier)
        .bind(&program.team_identifier)
        .bind(&program.organization_name)
        .bind(program.created_at)
        .bind(serde_json::to_string(&program.rules).expect("rules serialise"))
        .execute(&self.pool)
        .await
        .map_err(|e| conflict(e, || format!("a program with slug {:?} exists already", p.slug)))?;
        Ok(program)
    }

    pub async fn get_program(&self, id: &str) -> Result<Program> {
        let row = sqlx::query("SELECT * FROM programs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::program(&row.ok_or(StorageError::NotFound("program"))?)
    }

    /// Replaces a program's loyalty rules (validated by the caller). Cards show tiers and
    /// expiry, so one publish job per published template tells every holder, as a new
    /// template version would.
    /// Replaces a program's rules with what `prepare` makes of the current ones, read in the
    /// same transaction with the program row locked: on PostgreSQL postings hold that row
    /// `FOR KEY SHARE`, so no posting promotes a member to a tier under rules being replaced,
    /// and the check of held tiers below sees every promotion.
    pub async fn update_program_rules<E>(
        &self,
        id: &str,
        prepare: impl FnOnce(&LoyaltyRules) -> std::result::Result<LoyaltyRules, E>,
    ) -> Result<std::result::Result<Program, E>> {
        let now = now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        let lock = self.for_update();
        let current = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT rules FROM programs WHERE id = $1{lock}"
        )))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StorageError::NotFound("program"))?;
        let rules = match prepare(&rows::rules(&current)?) {
            Ok(rules) => rules,
            Err(refused) => return Ok(Err(refused)),
        };
        // A tier that members hold may be renamed (same id), never dropped from under them.
        let held = sqlx::query(
            "SELECT tier, COUNT(*) AS n FROM members WHERE program_id = $1 AND tier IS NOT NULL GROUP BY tier",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await?;
        for row in &held {
            let tier: String = row.try_get("tier")?;
            if rules.tier(Some(&tier)).is_none() {
                return Err(StorageError::Rejected(format!(
                    "{} members hold tier id {tier:?}, which these rules drop; keep a level with \"id\": {tier:?} (rename it by changing its name)",
                    rows::int(row, "n")?
                )));
            }
        }
        sqlx::query("UPDATE programs SET rules = $2 WHERE id = $1")
            .bind(id)
            .bind(serde_json::to_string(&rules).expect("rules serialise"))
            .execute(&mut *tx)
            .await?;
        designer::republish_program(&mut tx, id, now).await?;
        tx.commit().await?;
        Ok(Ok(self.get_program(id).await?))
    }

    pub async fn find_program_by_slug(&self, slug: &str) -> Result<Option<Program>> {
        let row = sqlx::query("SELECT * FROM programs WHERE slug = $1")
            .bind(slug)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(rows::program).transpose()
    }

    // ---- templates ----

    /// Stores a validated design and its rendered images as version 1 of a new template.
    pub async fn insert_template(
        &self,
        program_id: &str,
        name: &str,
        design: &TemplateDesign,
        images: &[(String, Vec<u8>)],
    ) -> Result<Template> {
        let now = now_ms();
        let template = Template {
            id: new_id(),
            program_id: program_id.into(),
            name: name.into(),
            version: 1,
            design: design.clone(),
            updated_at: now,
        };
        let design_json = serde_json::to_string(design).expect("design serialises");
        let (_turn, mut tx) = self.write_tx().await?;
        let exists = sqlx::query("SELECT 1 FROM programs WHERE id = $1")
            .bind(program_id)
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Err(StorageError::NotFound("program"));
        }
        sqlx::query(
            "INSERT INTO templates (id, program_id, name, version, design, created_at, updated_at)
             VALUES ($1, $2, $3, 1, $4, $5, $5)",
        )
        .bind(&template.id)
        .bind(program_id)
        .bind(name)
        .bind(&design_json)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        upsert_images(&mut tx, &template.id, images).await?;
        designer::snapshot_version(&mut tx, &template.id, 1, &design_json, None, now).await?;
        tx.commit().await?;
        Ok(template)
    }

    pub async fn get_template(&self, id: &str) -> Result<Template> {
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        rows::template(&row.ok_or(StorageError::NotFound("template"))?)
    }

    /// The program's most recently created template that is published and not archived,
    /// which new members get.
    pub async fn latest_template(&self, program_id: &str) -> Result<Option<Template>> {
        let row = sqlx::query(
            "SELECT * FROM templates WHERE program_id = $1 AND version > 0 AND archived_at IS NULL
             ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(program_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(rows::template).transpose()
    }

    /// Replaces some of a template's image files and bumps its version; a publish job tells
    /// every holder in batches, so the change never holds the write lock over all of them.
    pub async fn replace_template_images(
        &self,
        template_id: &str,
        images: &[(String, Vec<u8>)],
    ) -> Result<Template> {
        let now = now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        let updated = sqlx::query(
            "UPDATE templates SET version = version + 1, updated_at = $2 WHERE id = $1",
        )
        .bind(template_id)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(StorageError::NotFound("template"));
        }
        upsert_images(&mut tx, template_id, images).await?;
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(template_id)
            .fetch_one(&mut *tx)
            .await?;
        let template = rows::template(&row)?;
        let design_json = serde_json::to_string(&template.design).expect("design serialises");
        designer::snapshot_version(
            &mut tx,
            template_id,
            template.version,
            &design_json,
            None,
            now,
        )
        .await?;
        designer::start_publish_job(&mut tx, template_id, template.version, now).await?;
        tx.commit().await?;
        Ok(template)
    }

    pub async fn template_images(&self, template_id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let rows = sqlx::query("SELECT file_name, bytes FROM template_images WHERE template_id = $1 ORDER BY file_name")
            .bind(template_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("file_name")?, r.try_get("bytes")?)))
            .collect()
    }
}

async fn upsert_images(
    tx: &mut Transaction<'static, Any>,
    template_id: &str,
    images: &[(String, Vec<u8>)],
) -> Result<()> {
    for (name, bytes) in images {
        sqlx::query("DELETE FROM template_images WHERE template_id = $1 AND file_name = $2")
            .bind(template_id)
            .bind(name)
            .execute(&mut **tx)
            .await?;
        sqlx::query(
            "INSERT INTO template_images (template_id, file_name, bytes) VALUES ($1, $2, $3)",
        )
        .bind(template_id)
        .bind(name)
        .bind(bytes.as_slice())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}
