//! The designer's storage: template drafts, published versions, archiving, and publish jobs.
//!
//! A template's `design` and `template_images` are what every card shows (its published
//! version); `draft` and `template_draft_images` are what a marketer edits. Publishing swaps the
//! draft in, snapshots it into `template_versions`, and starts a `publish_jobs` row that marks
//! the holders' passes changed in batches (see `publish_step`).

use sqlx::{Any, Row, Transaction};

use super::{Result, StorageError, Store, new_id, rows};
use crate::domain::{Program, Template, TemplateDesign};

/// A template as the designer lists it.
#[derive(Debug, Clone)]
pub struct TemplateSummary {
    pub template: Template,
    pub has_draft: bool,
    pub archived_at: Option<i64>,
    pub holders: i64,
}

/// What the designer edits: the draft (or the published design when there is no draft) and
/// the names of its image files.
#[derive(Debug, Clone)]
pub struct Draft {
    pub template: Template,
    pub design: TemplateDesign,
    pub has_draft: bool,
    pub archived_at: Option<i64>,
    pub image_names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: i64,
    pub published_at: i64,
    pub published_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishJob {
    pub id: String,
    pub template_id: String,
    pub version: i64,
    pub total: i64,
    pub done: i64,
    pub status: String,
    pub created_at: i64,
    pub finished_at: Option<i64>,
}

/// `PublishJob::status` from `publish_step` when another instance is stepping the job.
pub const BUSY: &str = "busy";

fn job(r: &sqlx::any::AnyRow) -> Result<PublishJob> {
    Ok(PublishJob {
        id: r.try_get("id")?,
        template_id: r.try_get("template_id")?,
        version: r.try_get("version")?,
        total: r.try_get("total")?,
        done: r.try_get("done")?,
        status: r.try_get("status")?,
        created_at: r.try_get("created_at")?,
        finished_at: r.try_get("finished_at")?,
    })
}

fn design_json(design: &TemplateDesign) -> String {
    serde_json::to_string(design).expect("design serialises")
}

impl Store {
    pub async fn list_programs(&self) -> Result<Vec<Program>> {
        let rows = sqlx::query("SELECT * FROM programs ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(rows::program).collect()
    }

    /// The program's templates, newest first, with their holder counts.
    pub async fn list_templates(&self, program_id: &str) -> Result<Vec<TemplateSummary>> {
        let rows = sqlx::query(
            "SELECT t.*, (SELECT COUNT(*) FROM passes p WHERE p.template_id = t.id) AS holders
             FROM templates t WHERE t.program_id = $1 ORDER BY t.created_at DESC, t.id DESC",
        )
        .bind(program_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TemplateSummary {
                    template: rows::template(r)?,
                    has_draft: r.try_get::<Option<String>, _>("draft")?.is_some(),
                    archived_at: r.try_get("archived_at")?,
                    holders: rows::int(r, "holders")?,
                })
            })
            .collect()
    }

    /// A template made in the designer: version 0 (nothing published, so no member gets it)
    /// with `design` as its draft.
    pub async fn insert_draft_template(
        &self,
        program_id: &str,
        name: &str,
        design: &TemplateDesign,
        images: &[(String, Vec<u8>)],
    ) -> Result<Template> {
        let now = crate::domain::now_ms();
        let id = new_id();
        let json = design_json(design);
        let (_turn, mut tx) = self.write_tx().await?;
        sqlx::query(
            "INSERT INTO templates (id, program_id, name, version, design, draft, created_at, updated_at)
             VALUES ($1, $2, $3, 0, $4, $4, $5, $5)",
        )
        .bind(&id)
        .bind(program_id)
        .bind(name)
        .bind(&json)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(d) if d.is_foreign_key_violation() => {
                StorageError::NotFound("program")
            }
            e => e.into(),
        })?;
        put_draft_files(&mut tx, &id, images).await?;
        let row = sqlx::query("SELECT * FROM templates WHERE id = $1")
            .bind(&id)
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        rows::template(&row)
    }

    pub async fn template_draft(&self, id: &str) -> Result<Draft> {
        let mut conn = self.pool.acquire().await?;
        draft_in(&mut conn, id, "").await
    }

    /// The image files of the draft (or of the published version when there is no draft).
    pub async fn draft_images(&self, id: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let draft = self.template_draft(id).await?;
        if !draft.has_draft {
            return self.template_images(id).await;
        }
        let rows = sqlx::query(
            "SELECT file_name, bytes FROM template_draft_images WHERE template_id = $1 ORDER BY file_name",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("file_name")?, r.try_get("bytes")?)))
            .collect()
    }

    pub async fn template_image_names(&self, id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT file_name FROM template_images WHERE template_id = $1")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("file_name")?)).collect()
    }

    /// Saves the draft design (and the template's name, which no card shows). The first change
    /// after a publish starts the draft from the published images.
    pub async fn save_draft(&self, id: &str, name: &str, design: &TemplateDesign) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        begin_draft(&mut tx, id).await?;
        sqlx::query("UPDATE templates SET draft = $2, name = $3 WHERE id = $1")
            .bind(id)
            .bind(design_json(design))
            .bind(name)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces the draft's files for one image (`icon.png`, `icon@2x.png`, … as rendered), or
    /// removes every file of `prefix` (`strip`) when `files` is empty.
    pub async fn put_draft_image(
        &self,
        id: &str,
        prefix: &str,
        files: &[(String, Vec<u8>)],
    ) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        begin_draft(&mut tx, id).await?;
        for name in [
            format!("{prefix}.png"),
            format!("{prefix}@2x.png"),
            format!("{prefix}@3x.png"),
        ] {
            sqlx::query(
                "DELETE FROM template_draft_images WHERE template_id = $1 AND file_name = $2",
            )
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        let google = match prefix {
            "icon" => Some(crate::passes::apple::images::GOOGLE_LOGO.0),
            "strip" => Some(crate::passes::apple::images::GOOGLE_HERO.0),
            _ => None,
        };
        if let Some(name) = google {
            sqlx::query(
                "DELETE FROM template_draft_images WHERE template_id = $1 AND file_name = $2",
            )
            .bind(id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
        }
        put_draft_files(&mut tx, id, files).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Makes the template's draft and its images the next version, snapshots it, and starts
    /// the job that tells every holder's card. The draft is read and given to `check` inside
    /// the transaction, under the template's lock, so what is checked is what is published;
    /// `check` returns the design to publish or why not. Returns the template as published
    /// and the job.
    pub async fn publish_template<E>(
        &self,
        id: &str,
        check: impl FnOnce(&Draft) -> std::result::Result<TemplateDesign, E>,
        by: &str,
        now: i64,
    ) -> Result<std::result::Result<(Template, PublishJob), E>> {
        let (_turn, mut tx) = self.write_tx().await?;
        let lock = self.for_update();
        let draft = draft_in(&mut tx, id, lock).await?;
        let version = draft.template.version;
        let had_draft = draft.has_draft;
        if !had_draft && version > 0 {
            return Err(StorageError::Conflict(
                "nothing to publish: the draft is the published version".into(),
            ));
        }
        let design = match check(&draft) {
            Ok(design) => design,
            Err(refused) => return Ok(Err(refused)),
        };
        let next = version + 1;
        let json = design_json(&design);
        sqlx::query(
            "UPDATE templates SET design = $2, draft = NULL, version = $3, updated_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(&json)
        .bind(next)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if had_draft {
            for sql in [
                "DELETE FROM template_images WHERE template_id = $1",
                "INSERT INTO template_images (template_id, file_name, bytes)
                 SELECT template_id, file_name, bytes FROM template_draft_images WHERE template_id = $1",
                "DELETE FROM template_draft_images WHERE template_id = $1",
            ] {
                sqlx::query(sql).bind(id).execute(&mut *tx).await?;
            }
        }
        snapshot_version(&mut tx, id, next, &json, Some(by), now).await?;
        let job_id = start_publish_job(&mut tx, id, next, now).await?;
        let template = rows::template(
            &sqlx::query("SELECT * FROM templates WHERE id = $1")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?,
        )?;
        let job = self.publish_job_in(&mut tx, &job_id).await?;
        tx.commit().await?;
        Ok(Ok((template, job)))
    }

    /// One batch of a running publish job: the next `batch` holders' passes (by serial, past
    /// the job's cursor) are marked changed and queued for a push, and the job advances, in one
    /// transaction. Returns the job as it stands after the step.
    pub async fn publish_step(&self, job_id: &str, batch: i64, now: i64) -> Result<PublishJob> {
        self.yield_to_postings().await;
        let (_turn, mut tx) = self.write_tx().await?;
        // Two steps of one job never take the same holders: SQLite's writers are serialised,
        // and on PostgreSQL the job row is locked for the step's transaction. Another instance
        // stepping the same job skips it (`SKIP LOCKED`) instead of queueing behind it: the
        // step is this instance's claim, and it ends with the transaction, crash or not.
        let lock = match self.backend {
            super::Backend::Sqlite => "",
            super::Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT * FROM publish_jobs WHERE id = $1{lock}"
        )))
        .bind(job_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            drop(tx);
            // Held by another instance's step (or gone): report it as it stands.
            return self.publish_job(job_id).await.map(|mut j| {
                j.status = BUSY.into();
                j
            });
        };
        let current = job(&row)?;
        if current.status != "running" {
            return Ok(current);
        }
        let after: String = row.try_get("after_serial")?;
        let passes = sqlx::query(
            "SELECT serial_number, member_id FROM passes
             WHERE template_id = $1 AND serial_number > $2 ORDER BY serial_number LIMIT $3",
        )
        .bind(&current.template_id)
        .bind(&after)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        let members = passes
            .iter()
            .map(|r| r.try_get("member_id"))
            .collect::<Result<Vec<String>, _>>()?;
        let last: String = match passes.last() {
            Some(r) => r.try_get("serial_number")?,
            None => after.clone(),
        };
        self.cards_changed(
            &mut tx,
            &members,
            super::changes::TEMPLATE_CHANGED,
            &serde_json::json!({ "template_id": current.template_id, "version": current.version })
                .to_string(),
            now,
        )
        .await?;
        let finished = (passes.len() as i64) < batch;
        sqlx::query(
            "UPDATE publish_jobs SET done = done + $2, after_serial = $3, status = $4, finished_at = $5
             WHERE id = $1",
        )
        .bind(job_id)
        .bind(passes.len() as i64)
        .bind(&last)
        .bind(if finished { "done" } else { "running" })
        .bind(finished.then_some(now))
        .execute(&mut *tx)
        .await?;
        let after_step = self.publish_job_in(&mut tx, job_id).await?;
        tx.commit().await?;
        if !passes.is_empty() {
            self.forget(super::cache::Stale::Members(members));
            self.committed();
        }
        Ok(after_step)
    }

    async fn publish_job_in(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
    ) -> Result<PublishJob> {
        let row = sqlx::query("SELECT * FROM publish_jobs WHERE id = $1")
            .bind(id)
            .fetch_one(&mut **tx)
            .await?;
        job(&row)
    }

    pub async fn publish_job(&self, id: &str) -> Result<PublishJob> {
        let row = sqlx::query("SELECT * FROM publish_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StorageError::NotFound("publish job"))?;
        job(&row)
    }

    pub async fn running_publish_jobs(&self) -> Result<Vec<PublishJob>> {
        let rows = sqlx::query(
            "SELECT * FROM publish_jobs WHERE status = 'running' ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job).collect()
    }

    pub async fn latest_publish_job(&self, template_id: &str) -> Result<Option<PublishJob>> {
        let row = sqlx::query(
            "SELECT * FROM publish_jobs WHERE template_id = $1 ORDER BY created_at DESC, id DESC LIMIT 1",
        )
        .bind(template_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(job).transpose()
    }

    /// Published versions, newest first.
    pub async fn template_versions(&self, template_id: &str) -> Result<Vec<VersionInfo>> {
        let rows = sqlx::query(
            "SELECT version, published_at, published_by FROM template_versions
             WHERE template_id = $1 ORDER BY version DESC",
        )
        .bind(template_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(VersionInfo {
                    version: r.try_get("version")?,
                    published_at: r.try_get("published_at")?,
                    published_by: r.try_get("published_by")?,
                })
            })
            .collect()
    }

    /// Puts a published version's design and images back into the draft, to be published again.
    pub async fn restore_version(&self, template_id: &str, version: i64) -> Result<()> {
        let (_turn, mut tx) = self.write_tx().await?;
        let row = sqlx::query(
            "SELECT design FROM template_versions WHERE template_id = $1 AND version = $2",
        )
        .bind(template_id)
        .bind(version)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StorageError::NotFound("template version"))?;
        let design: String = row.try_get("design")?;
        sqlx::query("UPDATE templates SET draft = $2 WHERE id = $1")
            .bind(template_id)
            .bind(design)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM template_draft_images WHERE template_id = $1")
            .bind(template_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO template_draft_images (template_id, file_name, bytes)
             SELECT template_id, file_name, bytes FROM template_version_images
             WHERE template_id = $1 AND version = $2",
        )
        .bind(template_id)
        .bind(version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A new, unpublished template with a copy of this one's draft (or published design) and
    /// images.
    pub async fn duplicate_template(&self, id: &str, name: &str) -> Result<Template> {
        let draft = self.template_draft(id).await?;
        let images = self.draft_images(id).await?;
        self.insert_draft_template(&draft.template.program_id, name, &draft.design, &images)
            .await
    }

    /// Renames a program (and its organisation name, which every card shows): one publish job
    /// per published template tells the holders, as a new template version would.
    pub async fn rename_program(
        &self,
        id: &str,
        name: &str,
        organization: &str,
    ) -> Result<Program> {
        let now = crate::domain::now_ms();
        let (_turn, mut tx) = self.write_tx().await?;
        let done =
            sqlx::query("UPDATE programs SET name = $2, organization_name = $3 WHERE id = $1")
                .bind(id)
                .bind(name)
                .bind(organization)
                .execute(&mut *tx)
                .await?;
        if done.rows_affected() == 0 {
            return Err(StorageError::NotFound("program"));
        }
        republish_program(&mut tx, id, now).await?;
        tx.commit().await?;
        self.get_program(id).await
    }

    /// Archives (or restores) a template: an archived template is offered to no new member;
    /// the cards already issued on it keep working and updating.
    pub async fn set_template_archived(&self, id: &str, archived_at: Option<i64>) -> Result<()> {
        let r = sqlx::query("UPDATE templates SET archived_at = $2 WHERE id = $1")
            .bind(id)
            .bind(archived_at)
            .execute(&self.pool)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StorageError::NotFound("template"));
        }
        Ok(())
    }
}

/// The draft as `template_draft` returns it, read on `conn` (`lock`: a row-lock clause).
async fn draft_in(conn: &mut sqlx::AnyConnection, id: &str, lock: &str) -> Result<Draft> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT * FROM templates WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StorageError::NotFound("template"))?;
    let template = rows::template(&row)?;
    let draft: Option<String> = row.try_get("draft")?;
    let design = match &draft {
        Some(json) => serde_json::from_str(json)
            .map_err(|e| StorageError::Corrupt(format!("template draft: {e}")))?,
        None => template.design.clone(),
    };
    let table = if draft.is_some() {
        "template_draft_images"
    } else {
        "template_images"
    };
    let names = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT file_name FROM {table} WHERE template_id = $1 ORDER BY file_name"
    )))
    .bind(id)
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get("file_name"))
    .collect::<Result<Vec<String>, _>>()?;
    Ok(Draft {
        template,
        design,
        has_draft: draft.is_some(),
        archived_at: row.try_get("archived_at")?,
        image_names: names,
    })
}

/// Every published template of a program gets a publish job at its current version: the
/// program's name or rules changed, and every card shows them. Google classes show the
/// program's names, so they are marked to be sent again.
pub(super) async fn republish_program(
    tx: &mut Transaction<'static, Any>,
    program_id: &str,
    now: i64,
) -> Result<()> {
    let templates =
        sqlx::query("SELECT id, version FROM templates WHERE program_id = $1 AND version > 0")
            .bind(program_id)
            .fetch_all(&mut **tx)
            .await?;
    for t in &templates {
        let template_id: String = t.try_get("id")?;
        start_publish_job(tx, &template_id, t.try_get("version")?, now).await?;
    }
    sqlx::query(
        "UPDATE google_classes SET version = -1
         WHERE template_id IN (SELECT id FROM templates WHERE program_id = $1)",
    )
    .bind(program_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Starts the job that tells every holder of `template_id` about `version`, superseding a
/// running one (the new job covers the same holders). Returns the job's id.
pub(super) async fn start_publish_job(
    tx: &mut Transaction<'static, Any>,
    template_id: &str,
    version: i64,
    now: i64,
) -> Result<String> {
    sqlx::query(
        "UPDATE publish_jobs SET status = 'superseded', finished_at = $2
         WHERE template_id = $1 AND status = 'running'",
    )
    .bind(template_id)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let total = rows::int(
        &sqlx::query("SELECT COUNT(*) AS n FROM passes WHERE template_id = $1")
            .bind(template_id)
            .fetch_one(&mut **tx)
            .await?,
        "n",
    )?;
    let job_id = new_id();
    // With no holders there is nothing to tell: the job is done as it starts.
    let status = if total == 0 { "done" } else { "running" };
    sqlx::query(
        "INSERT INTO publish_jobs (id, template_id, version, total, status, created_at, finished_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&job_id)
    .bind(template_id)
    .bind(version)
    .bind(total)
    .bind(status)
    .bind(now)
    .bind((total == 0).then_some(now))
    .execute(&mut **tx)
    .await?;
    Ok(job_id)
}

/// Starts a draft from the published design and images, unless one exists.
async fn begin_draft(tx: &mut Transaction<'static, Any>, id: &str) -> Result<()> {
    let started =
        sqlx::query("UPDATE templates SET draft = design WHERE id = $1 AND draft IS NULL")
            .bind(id)
            .execute(&mut **tx)
            .await?;
    if started.rows_affected() > 0 {
        sqlx::query(
            "INSERT INTO template_draft_images (template_id, file_name, bytes)
             SELECT template_id, file_name, bytes FROM template_images WHERE template_id = $1",
        )
        .bind(id)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let exists = sqlx::query("SELECT 1 FROM templates WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
    exists.map(|_| ()).ok_or(StorageError::NotFound("template"))
}

async fn put_draft_files(
    tx: &mut Transaction<'static, Any>,
    id: &str,
    files: &[(String, Vec<u8>)],
) -> Result<()> {
    for (name, bytes) in files {
        sqlx::query(
            "INSERT INTO template_draft_images (template_id, file_name, bytes) VALUES ($1, $2, $3)",
        )
        .bind(id)
        .bind(name)
        .bind(bytes.as_slice())
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Records a published version (design and current images) for history and restore.
pub(super) async fn snapshot_version(
    tx: &mut Transaction<'static, Any>,
    template_id: &str,
    version: i64,
    design_json: &str,
    by: Option<&str>,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO template_versions (template_id, version, design, published_at, published_by)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(template_id)
    .bind(version)
    .bind(design_json)
    .bind(now)
    .bind(by)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "INSERT INTO template_version_images (template_id, version, file_name, bytes)
         SELECT template_id, $2, file_name, bytes FROM template_images WHERE template_id = $1",
    )
    .bind(template_id)
    .bind(version)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
