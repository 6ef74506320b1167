//! Row to domain mapping.

use sqlx::any::AnyRow;
use sqlx::{FromRow, Row};

use super::{ApiKeyRecord, Result, StorageError};
use crate::domain::{Member, Pass, Program, Template};
use crate::ledger::{Entry, EntryKind, LoyaltyRules, Origin};

pub fn rules(r: &AnyRow) -> Result<LoyaltyRules> {
    let text: String = r.try_get("rules")?;
    let mut rules: LoyaltyRules = serde_json::from_str(&text)
        .map_err(|e| StorageError::Corrupt(format!("program rules: {e}")))?;
    // Rules stored before tiers had ids: members hold the tier's name, so the name is the id.
    rules.assign_tier_ids(None);
    Ok(rules)
}

pub fn entry(r: &AnyRow) -> Result<Entry> {
    let kind: String = r.try_get("kind")?;
    Ok(Entry {
        id: r.try_get("id")?,
        member_id: r.try_get("member_id")?,
        kind: EntryKind::parse(&kind)
            .ok_or_else(|| StorageError::Corrupt(format!("entry kind {kind:?}")))?,
        points: r.try_get("points")?,
        amount_minor: r.try_get("amount_minor")?,
        origin: Origin {
            external_ref: r.try_get("external_ref")?,
            channel: r.try_get("channel")?,
            store_id: r.try_get("store_id")?,
            partner_id: r.try_get("partner_id")?,
        },
        reason: r.try_get("reason")?,
        reverses_entry_id: r.try_get("reverses_entry_id")?,
        created_at: r.try_get("created_at")?,
    })
}

pub fn int(row: &AnyRow, col: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(col)?)
}

pub fn program(r: &AnyRow) -> Result<Program> {
    Ok(Program {
        id: r.try_get("id")?,
        slug: r.try_get("slug")?,
        name: r.try_get("name")?,
        pass_type_identifier: r.try_get("pass_type_identifier")?,
        team_identifier: r.try_get("team_identifier")?,
        organization_name: r.try_get("organization_name")?,
        rules: rules(r)?,
        created_at: r.try_get("created_at")?,
    })
}

pub fn template(r: &AnyRow) -> Result<Template> {
    let design: String = r.try_get("design")?;
    Ok(Template {
        id: r.try_get("id")?,
        program_id: r.try_get("program_id")?,
        name: r.try_get("name")?,
        version: r.try_get("version")?,
        design: serde_json::from_str(&design)
            .map_err(|e| StorageError::Corrupt(format!("template design: {e}")))?,
        updated_at: r.try_get("updated_at")?,
    })
}

/// Columns named as `Member`'s fields (`#[derive(FromRow)]`).
pub fn member(r: &AnyRow) -> Result<Member> {
    Ok(Member::from_row(r)?)
}

/// Columns named as `Pass`'s fields (`#[derive(FromRow)]`).
pub fn pass(r: &AnyRow) -> Result<Pass> {
    Ok(Pass::from_row(r)?)
}

pub fn api_key(r: &AnyRow) -> Result<ApiKeyRecord> {
    let role: String = r.try_get("role")?;
    Ok(ApiKeyRecord {
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        role: role.parse().map_err(StorageError::Corrupt)?,
        secret_hash: r.try_get("secret_hash")?,
        revoked: r.try_get::<Option<i64>, _>("revoked_at")?.is_some(),
        limits: crate::ledger::PointLimits {
            per_operation: r.try_get("max_points")?,
            per_day: r.try_get("max_points_per_day")?,
        },
    })
}
