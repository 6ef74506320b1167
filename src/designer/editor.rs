//! The template editor: the designer page, drafts, live checks, publishing, versions.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::{DESIGNERS, PageError, PageResult, designer_form, form};
use crate::app::AppState;
use crate::domain::template::PLACEHOLDERS;
use crate::domain::template::checks::{self, Finding, Severity};
use crate::domain::{BarcodeFormat, Invalid, Program, TemplateDesign, barcode, now_ms};
use crate::service::cards::ServiceError;
use crate::storage::{Draft, PublishJob, StorageError, VersionInfo};
use crate::web::staff::Staff;

/// An image slot of the designer.
pub(super) struct ImageSlot {
    kind: &'static str,
    title: &'static str,
    hint: &'static str,
    present: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/designer.html")]
pub(super) struct DesignerPage {
    csrf: String,
    email: String,
    /// The signed-in staff member's role, for the navigation.
    role: &'static str,
    program: Program,
    template_id: String,
    name: String,
    version: i64,
    has_draft: bool,
    archived: bool,
    design: TemplateDesign,
    rows: form::FormRows,
    images: Vec<ImageSlot>,
    /// Each finding, under the input it concerns.
    findings: Vec<(String, Finding)>,
    notice: Option<String>,
    job: Option<PublishJob>,
    versions: Vec<VersionInfo>,
    sample_json: String,
    /// The sample member's code in each barcode format (format name, SVG), for the preview.
    sample_barcodes: Vec<(&'static str, String)>,
}

/// Inputs the checks are shown at; a finding goes to the longest one its field starts with.
const CHECK_SLOTS: &[&str] = &[
    "name",
    "description",
    "logo_text",
    "colors.background",
    "colors.foreground",
    "colors.label",
    "images.icon",
    "images.logo",
    "images.strip",
    "header_fields",
    "primary_fields",
    "secondary_fields",
    "auxiliary_fields",
    "back_fields",
    "barcode",
    "apple",
    "info",
    "info.stores",
    "info.website",
    "info.social",
    "info.support_email",
    "info.support_phone",
    "info.offers",
    "info.terms",
    "locations",
    "translations",
];

pub(super) fn slot_of(field: &str) -> String {
    CHECK_SLOTS
        .iter()
        .filter(|s| field == **s || field.starts_with(&format!("{s}.")))
        .max_by_key(|s| s.len())
        .map_or("general", |s| s)
        .to_string()
}

impl DesignerPage {
    fn checks_at(&self, slot: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|(s, _)| s == slot)
            .map(|(_, f)| f)
            .collect()
    }

    fn error_count(&self) -> usize {
        self.findings
            .iter()
            .filter(|(_, f)| f.severity == Severity::Error)
            .count()
    }

    fn placeholders(&self) -> &'static [&'static str] {
        PLACEHOLDERS
    }

    fn barcode_formats(&self) -> Vec<(&'static str, &'static str, bool)> {
        BarcodeFormat::ALL
            .iter()
            .map(|f| {
                let label = match f {
                    BarcodeFormat::Qr => "QR code",
                    BarcodeFormat::Pdf417 => "PDF417",
                    BarcodeFormat::Aztec => "Aztec",
                    BarcodeFormat::Code128 => "Code 128",
                };
                (f.name(), label, *f == self.design.barcode.format)
            })
            .collect()
    }

    fn date(&self, ms: &i64) -> String {
        let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        t.format(&time::macros::format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default()
    }
}

pub(super) fn sample_json(program: &Program) -> String {
    let s = checks::sample_substitutions(&program.name, now_ms());
    let expiry = s
        .standing
        .next_expiry
        .map(|(at, _)| crate::domain::template::w3c_date(at));
    let values = serde_json::json!({
        "balance": s.balance,
        "tier": s.tier,
        "member_name": s.member_name,
        "member_number": s.external_id,
        "external_id": s.external_id,
        "barcode": s.barcode,
        "program_name": s.program_name,
        "next_tier": s.standing.next_tier,
        "points_to_next_tier": s.standing.points_to_next_tier,
        "next_expiry_date": expiry,
        "next_expiry_points": s.standing.next_expiry.map_or(0, |(_, p)| p),
    });
    // Inside <script type="application/json">: `<` is escaped so no text can close the tag.
    serde_json::json!({"values": values, "organization": program.organization_name})
        .to_string()
        .replace('<', "\\u003c")
}

pub(super) async fn render_designer(
    state: &AppState,
    staff: &Staff,
    draft: Draft,
    extra: Vec<crate::domain::Problem>,
    raw_locations: Option<Vec<form::LocationRow>>,
    notice: Option<String>,
) -> Result<DesignerPage, PageError> {
    let program = state.store.get_program(&draft.template.program_id).await?;
    let mut findings: Vec<Finding> = state.cards.draft_findings(&draft).await;
    findings.extend(extra.into_iter().map(|p| Finding {
        field: p.field,
        message: p.message,
        severity: Severity::Error,
    }));
    let has = |prefix: &str| {
        draft
            .image_names
            .iter()
            .any(|n| n == &format!("{prefix}.png"))
    };
    let images = vec![
        ImageSlot {
            kind: "icon",
            title: "Icon (required)",
            hint: "square, at least 29×29 px; also Google Wallet's round logo",
            present: has("icon"),
        },
        ImageSlot {
            kind: "logo",
            title: "Logo",
            hint: "fits 160×50 pt; at least 50×20 px",
            present: has("logo"),
        },
        ImageSlot {
            kind: "strip",
            title: "Strip",
            hint: "375×144 pt behind the primary field; also Google Wallet's hero image",
            present: has("strip"),
        },
    ];
    Ok(DesignerPage {
        csrf: staff.session.csrf_token.clone(),
        email: staff.session.user.email.clone(),
        role: staff.session.user.role.as_str(),
        sample_json: sample_json(&program),
        sample_barcodes: sample_barcodes(),
        program,
        template_id: draft.template.id.clone(),
        name: draft.template.name.clone(),
        version: draft.template.version,
        has_draft: draft.has_draft,
        archived: draft.archived_at.is_some(),
        rows: form::rows(&draft.design, raw_locations),
        design: draft.design,
        images,
        findings: findings
            .into_iter()
            .map(|f| (slot_of(&f.field), f))
            .collect(),
        notice,
        job: state.store.latest_publish_job(&draft.template.id).await?,
        versions: state.store.template_versions(&draft.template.id).await?,
    })
}

/// The sample member's code drawn in every format, so the preview switches format without a
/// round trip; each is what the card page draws for that format.
fn sample_barcodes() -> Vec<(&'static str, String)> {
    let code = crate::domain::template::checks::sample_substitutions("", 0).barcode;
    BarcodeFormat::ALL
        .into_iter()
        .filter_map(|f| Some((f.name(), barcode::svg(f, code, 120).ok()?)))
        .collect()
}

pub(super) async fn designer_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> PageResult {
    staff.require(DESIGNERS)?;
    let draft = state.store.template_draft(&id).await?;
    Ok(
        render_designer(&state, &staff, draft, Vec::new(), None, None)
            .await?
            .into_response(),
    )
}

/// Saves the submitted draft. Problems reading it (a latitude that is no number) keep the
/// draft unsaved and show the form as typed; rule violations are saved with the draft and
/// shown, and block only publishing.
pub(super) async fn save_draft(
    state: &AppState,
    staff: &Staff,
    id: &str,
    f: &form::Submitted,
) -> Result<Result<(), Response>, PageError> {
    let parsed = form::parse(f);
    let name = if parsed.name.is_empty() {
        state.store.get_template(id).await?.name
    } else {
        parsed.name.chars().take(200).collect()
    };
    if !parsed.problems.is_empty() {
        let mut draft = state.store.template_draft(id).await?;
        draft.design = parsed.design;
        let page = render_designer(
            state,
            staff,
            draft,
            parsed.problems,
            Some(parsed.raw_locations),
            Some("Not saved: correct the inputs marked below.".into()),
        )
        .await?;
        return Ok(Err((StatusCode::UNPROCESSABLE_ENTITY, page).into_response()));
    }
    state.store.save_draft(id, &name, &parsed.design).await?;
    Ok(Ok(()))
}

pub(super) async fn save(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    if let Err(page) = save_draft(&state, &staff, &id, &f).await? {
        return Ok(page);
    }
    let draft = state.store.template_draft(&id).await?;
    Ok(render_designer(
        &state,
        &staff,
        draft,
        Vec::new(),
        None,
        Some("Draft saved.".into()),
    )
    .await?
    .into_response())
}

/// The checks for the form as it stands, unsaved: what the page shows live.
pub(super) async fn check(
    State(state): State<AppState>,
    staff: Staff,
    audit: crate::web::audit::Audit,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    // Checks a draft without saving it: nothing for the audit log.
    audit.read_only();
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    let mut draft = state.store.template_draft(&id).await?;
    let parsed = form::parse(&f);
    draft.design = parsed.design;
    let mut findings = state.cards.draft_findings(&draft).await;
    findings.extend(parsed.problems.into_iter().map(|p| Finding {
        field: p.field,
        message: p.message,
        severity: Severity::Error,
    }));
    let body: Vec<_> = findings
        .into_iter()
        .map(|f| serde_json::json!({"slot": slot_of(&f.field), "field": f.field, "message": f.message, "severity": f.severity}))
        .collect();
    Ok(axum::Json(serde_json::json!({ "findings": body })).into_response())
}

/// Saves the form, then publishes the draft if no check finds an error.
pub(super) async fn publish(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    if let Err(page) = save_draft(&state, &staff, &id, &f).await? {
        return Ok(page);
    }
    let by = staff.session.user.email.clone();
    let notice = match state.cards.publish_draft(&id, &by).await {
        Ok((t, job)) => Ok(format!(
            "Version {} published; updating {} card{}.",
            t.version,
            job.total,
            if job.total == 1 { "" } else { "s" }
        )),
        Err(ServiceError::Invalid(Invalid { .. })) => {
            Err("Not published: correct the errors marked below first.".to_string())
        }
        Err(ServiceError::Storage(StorageError::Conflict(m))) => {
            Err(format!("Not published: {m}."))
        }
        Err(e) => return Err(e.into()),
    };
    let draft = state.store.template_draft(&id).await?;
    let failed = notice.is_err();
    let page = render_designer(
        &state,
        &staff,
        draft,
        Vec::new(),
        None,
        Some(notice.unwrap_or_else(|e| e)),
    )
    .await?;
    Ok(if failed {
        (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
    } else {
        page.into_response()
    })
}

#[derive(Deserialize)]
pub(super) struct VersionPath {
    id: String,
    version: i64,
}

pub(super) async fn restore(
    State(state): State<AppState>,
    staff: Staff,
    Path(p): Path<VersionPath>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    state.store.restore_version(&p.id, p.version).await?;
    let draft = state.store.template_draft(&p.id).await?;
    let notice = format!(
        "Version {} is back in the draft; publish it to show it on every card.",
        p.version
    );
    Ok(
        render_designer(&state, &staff, draft, Vec::new(), None, Some(notice))
            .await?
            .into_response(),
    )
}

pub(super) async fn job_status(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> PageResult {
    staff.require(DESIGNERS)?;
    let job = state.store.publish_job(&id).await?;
    Ok(axum::Json(serde_json::json!({
        "id": job.id, "version": job.version, "total": job.total, "done": job.done,
        "status": job.status,
    }))
    .into_response())
}

/// The designer's script and style sheet, built into the binary.
pub(super) async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    let (body, kind): (&'static str, &'static str) = match file.as_str() {
        "designer.js" => (
            include_str!("../../templates/assets/designer.js"),
            "text/javascript",
        ),
        "staff.css" => (include_str!("../../templates/assets/staff.css"), "text/css"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    use sha2::Digest;
    let digest = sha2::Sha256::digest(body.as_bytes());
    let etag = format!("\"{}\"", data_encoding::HEXLOWER.encode(&digest[..12]));
    if headers
        .get(axum::http::header::IF_NONE_MATCH)
        .is_some_and(|v| v.as_bytes() == etag.as_bytes())
    {
        return StatusCode::NOT_MODIFIED.into_response();
    }
    (
        [
            (axum::http::header::CONTENT_TYPE, kind.to_string()),
            (axum::http::header::CACHE_CONTROL, "no-cache".to_string()),
            (axum::http::header::ETAG, etag),
        ],
        body,
    )
        .into_response()
}
