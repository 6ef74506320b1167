//! The CSV import of existing members (say, from plastic cards) with their balances:
//! `tessera import members.csv --program SLUG` and `POST /api/v1/programs/{id}/imports`.
//!
//! Columns (a header row, any order, names case-insensitive): `external_id` and `name`
//! (required), `email`, `phone`, `points` (a whole number, 0 if absent). The import is
//! idempotent on `external_id`: a member that exists is left as it is, so a second run changes
//! nothing. A bad row is reported by its line number and skipped; the others go in. Every row
//! that names a member, new or existing, gets a personal install link for the campaign.

use std::collections::HashSet;

use crate::app::AppState;
use crate::domain::Program;
use crate::domain::enrollment::{normalize_email, normalize_phone};
use crate::ledger::MAX_AMOUNT;
use crate::storage::{ImportRow, StorageError};

/// Rows per transaction.
const BATCH: usize = 1000;
const COLUMNS: [&str; 5] = ["external_id", "name", "email", "phone", "points"];

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// The line in the file, counting the header as line 1.
    pub line: u64,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct MemberLink {
    pub line: u64,
    pub external_id: String,
    pub member_id: String,
    /// The member's personal install link.
    pub url: String,
    /// Seconds since the epoch.
    pub expires_at: i64,
}

#[derive(Debug, Default, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct ImportReport {
    /// Rows read, the header not counted.
    pub rows: usize,
    pub created: usize,
    /// Rows whose external_id was already a member: left as they were.
    pub unchanged: usize,
    pub errors: Vec<RowError>,
    pub links: Vec<MemberLink>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file as a whole is unusable (no header, a missing required column).
    #[error("{0}")]
    File(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// A CSV file read: the rows that pass the checks with their line numbers, and the errors of
/// the rest.
pub struct Parsed {
    pub rows: Vec<(u64, ImportRow)>,
    pub errors: Vec<RowError>,
}

pub fn parse(input: impl std::io::Read) -> Result<Parsed, ImportError> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::All)
        .from_reader(input);
    let headers = reader
        .headers()
        .map_err(|e| ImportError::File(format!("the file has no readable header row: {e}")))?
        .clone();
    let names: Vec<String> = headers.iter().map(|h| h.trim().to_lowercase()).collect();
    let unknown: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !COLUMNS.contains(n))
        .collect();
    if !unknown.is_empty() {
        return Err(ImportError::File(format!(
            "unknown column(s) {}; the columns are {}",
            unknown.join(", "),
            COLUMNS.join(", ")
        )));
    }
    let col = |name: &str| names.iter().position(|n| n == name);
    let (Some(ext_col), Some(name_col)) = (col("external_id"), col("name")) else {
        return Err(ImportError::File(
            "the header must name the columns external_id and name (email, phone and points are optional)".into(),
        ));
    };
    let (email_col, phone_col, points_col) = (col("email"), col("phone"), col("points"));
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut seen = HashSet::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                errors.push(RowError {
                    line,
                    message: format!("unreadable row: {e}"),
                });
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let get = |c: Option<usize>| c.and_then(|c| record.get(c)).unwrap_or("").trim();
        let fail = |message: String| RowError { line, message };
        let external_id = get(Some(ext_col));
        let name = get(Some(name_col));
        let row = (|| {
            // PostgreSQL cannot store U+0000, and no control character belongs in these.
            for (column, value) in names.iter().zip(record.iter()) {
                if let Some(m) = crate::web::guard::control_char(value, false) {
                    return Err(fail(format!("{column} {m}")));
                }
            }
            if external_id.is_empty() || external_id.chars().count() > 200 {
                return Err(fail("external_id must have 1 to 200 characters".into()));
            }
            if name.is_empty() || name.chars().count() > 200 {
                return Err(fail("name must have 1 to 200 characters".into()));
            }
            let email = match get(email_col) {
                "" => None,
                e => Some(
                    normalize_email(e)
                        .ok_or_else(|| fail(format!("email {e:?} is not an e-mail address")))?,
                ),
            };
            let phone = match get(phone_col) {
                "" => None,
                p => Some(normalize_phone(p).ok_or_else(|| {
                    fail(format!(
                        "phone {p:?} is not a phone number of 7 to 15 digits"
                    ))
                })?),
            };
            let points = match get(points_col) {
                "" => 0,
                p => p
                    .parse::<i64>()
                    .ok()
                    .filter(|n| (0..=MAX_AMOUNT).contains(n))
                    .ok_or_else(|| {
                        fail(format!(
                            "points {p:?} must be a whole number from 0 to {MAX_AMOUNT}"
                        ))
                    })?,
            };
            if !seen.insert(external_id.to_string()) {
                return Err(fail(format!(
                    "external_id {external_id:?} appears earlier in the file"
                )));
            }
            Ok(ImportRow {
                external_id: external_id.to_string(),
                name: name.to_string(),
                email,
                phone,
                points,
            })
        })();
        match row {
            Ok(r) => rows.push((line, r)),
            Err(e) => errors.push(e),
        }
    }
    Ok(Parsed { rows, errors })
}

/// Imports `input` into the program's newest published template, calling `progress` with the
/// rows handled so far after each batch.
pub async fn run(
    state: &AppState,
    program: &Program,
    input: impl std::io::Read,
    progress: impl Fn(usize, usize),
) -> Result<ImportReport, ImportError> {
    let Parsed { rows, errors } = parse(input)?;
    let template = state
        .store
        .latest_template(&program.id)
        .await?
        .ok_or_else(|| {
            ImportError::File("the program has no published card template yet".into())
        })?;
    let mut report = ImportReport {
        rows: rows.len() + errors.len(),
        errors,
        ..ImportReport::default()
    };
    let total = rows.len();
    let mut done = 0;
    for chunk in rows.chunks(BATCH) {
        let batch: Vec<ImportRow> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let result = state
            .store
            .import_members(program, &template, &batch)
            .await?;
        report.created += result.created.len();
        report.unchanged += result.existing.len();
        // New members hold their first card; existing ones may hold a reissued one.
        let existing: Vec<String> = result.existing.iter().map(|(_, m)| m.clone()).collect();
        let generations = state.store.card_generations(&existing).await?;
        let ids: std::collections::HashMap<_, _> =
            result.created.into_iter().chain(result.existing).collect();
        for (line, r) in chunk {
            if let Some(member_id) = ids.get(&r.external_id) {
                let generation = generations.get(member_id).copied().unwrap_or(0);
                let (url, expires_at) = state.install_url(member_id, generation);
                report.links.push(MemberLink {
                    line: *line,
                    external_id: r.external_id.clone(),
                    member_id: member_id.clone(),
                    url,
                    expires_at,
                });
            }
        }
        done += chunk.len();
        progress(done, total);
    }
    report.errors.sort_by_key(|e| e.line);
    Ok(report)
}

/// The links as CSV: `external_id,member_id,install_url,expires_at`.
pub fn links_csv(report: &ImportReport) -> Result<Vec<u8>, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["external_id", "member_id", "install_url", "expires_at"])?;
    for l in &report.links {
        w.write_record([
            l.external_id.as_str(),
            l.member_id.as_str(),
            l.url.as_str(),
            &l.expires_at.to_string(),
        ])?;
    }
    w.into_inner().map_err(|e| e.into_error().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_rows_are_reported_by_line_and_the_rest_kept() {
        let csv = "External_ID,name,email,phone,points\n\
                   c1,Ada,ADA@example.com,+31 20 123 4567,120\n\
                   ,Nobody,,,\n\
                   c2,Grace,not-an-email,,5\n\
                   c3,Linus,,,-4\n\
                   c1,Ada again,,,1\n\
                   c4,Barbara,,,\n";
        let Parsed { rows, errors } = parse(csv.as_bytes()).unwrap();
        let lines: Vec<_> = rows
            .iter()
            .map(|(l, r)| (*l, r.external_id.as_str(), r.points))
            .collect();
        assert_eq!(lines, [(2, "c1", 120), (7, "c4", 0)]);
        assert_eq!(rows[0].1.email.as_deref(), Some("ada@example.com"));
        assert_eq!(rows[0].1.phone.as_deref(), Some("+31201234567"));
        let bad: Vec<_> = errors.iter().map(|e| e.line).collect();
        assert_eq!(bad, [3, 4, 5, 6]);
        assert!(errors[3].message.contains("appears earlier in the file"));
        assert!(errors[2].message.contains("whole number from 0"));
    }

    #[test]
    fn the_header_must_name_the_columns() {
        let e = parse("id,name\n1,a\n".as_bytes()).err().unwrap();
        assert!(e.to_string().contains("unknown column(s) id"), "{e}");
        let e = parse("name,email\na,b@c.de\n".as_bytes()).err().unwrap();
        assert!(
            e.to_string()
                .contains("must name the columns external_id and name"),
            "{e}"
        );
    }
}
