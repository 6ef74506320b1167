//! The card designer: staff pages where marketers list programs and templates, design a card
//! with a live Apple Wallet and Google Wallet preview, see the pre-publish checks next to each
//! input, and publish a version to every holder (a background job, `jobs::publish_loop`).
//!
//! Server-rendered askama pages; `templates/assets/designer.js` adds the live preview, live
//! checks (`POST …/check`, the same checks as publishing) and uploads without a reload. Every
//! form works without it.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Form, Multipart, Path, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::enrollment::{Ask, EnrollmentSettings};
use crate::domain::template::PLACEHOLDERS;
use crate::domain::template::checks::{self, Finding, Severity};
use crate::domain::{BarcodeFormat, Invalid, NewProgram, Program, TemplateDesign, now_ms};
use crate::passes::apple::images::{ImageKind, MAX_UPLOAD_BYTES};
use crate::service::cards::ServiceError;
use crate::storage::{Draft, PublishJob, Role, StorageError, TemplateSummary, VersionInfo};
use crate::web::staff::{Refusal, Staff};

pub mod form;

const DESIGNERS: &[Role] = &[Role::Admin, Role::Marketer];

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/programs", get(programs_page).post(create_program))
        .route(
            "/staff/programs/{id}",
            get(program_page).post(rename_program),
        )
        .route("/staff/programs/{id}/templates", post(create_template))
        .route("/staff/programs/{id}/enrollment", post(save_enrollment))
        .route("/staff/templates/{id}", get(designer_page).post(save))
        .route("/staff/templates/{id}/check", post(check))
        .route("/staff/templates/{id}/publish", post(publish))
        .route(
            "/staff/templates/{id}/images",
            post(upload).layer(axum::extract::DefaultBodyLimit::max(
                MAX_UPLOAD_BYTES + 64 * 1024,
            )),
        )
        .route(
            "/staff/templates/{id}/draft-images/{*file}",
            get(draft_image),
        )
        .route("/staff/templates/{id}/sample.pkpass", get(sample))
        .route("/staff/templates/{id}/duplicate", post(duplicate))
        .route("/staff/templates/{id}/archive", post(archive))
        .route(
            "/staff/templates/{id}/versions/{version}/restore",
            post(restore),
        )
        .route("/staff/publish-jobs/{id}", get(job_status))
        .route("/staff/assets/{file}", get(asset))
}

/// Why a designer page failed.
#[derive(Debug)]
pub enum PageError {
    Refused(Refusal),
    NotFound(&'static str),
    Internal(String),
}

impl From<Refusal> for PageError {
    fn from(r: Refusal) -> Self {
        PageError::Refused(r)
    }
}

impl From<StorageError> for PageError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(what) => PageError::NotFound(what),
            e => PageError::Internal(e.to_string()),
        }
    }
}

impl From<ServiceError> for PageError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Storage(s) => s.into(),
            e => PageError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        match self {
            PageError::Refused(r) => r.into_response(),
            PageError::NotFound(what) => {
                (StatusCode::NOT_FOUND, format!("{what} not found\n")).into_response()
            }
            PageError::Internal(e) => {
                tracing::error!(error = %e, "a designer page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong; see the server log\n",
                )
                    .into_response()
            }
        }
    }
}

type PageResult = Result<Response, PageError>;

fn see_other(to: String) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// The signed-in designer's form, CSRF-checked.
fn designer_form(staff: &Staff, form: &form::Submitted) -> Result<(), Refusal> {
    staff.require(DESIGNERS)?;
    staff.check_csrf(form.get("csrf"))
}

// ---- programs ----

#[derive(Template, WebTemplate)]
#[template(path = "pages/programs.html")]
struct ProgramsPage {
    csrf: String,
    email: String,
    /// The signed-in staff member's role, for the navigation.
    role: &'static str,
    is_admin: bool,
    programs: Vec<Program>,
    pass_type_identifier: String,
    team_identifier: String,
    values: HashMap<String, String>,
    errors: Vec<String>,
}

impl ProgramsPage {
    fn value(&self, name: &str) -> &str {
        self.values.get(name).map_or("", |v| v.as_str())
    }
}

async fn programs_page(State(state): State<AppState>, staff: Staff) -> PageResult {
    staff.require(DESIGNERS)?;
    let (pass_type_identifier, team_identifier) = state.cards.signers().default_identifiers();
    Ok(ProgramsPage {
        csrf: staff.session.csrf_token.clone(),
        email: staff.session.user.email.clone(),
        role: staff.session.user.role.as_str(),
        is_admin: staff.session.user.role == Role::Admin,
        programs: state.store.list_programs().await?,
        pass_type_identifier,
        team_identifier,
        values: HashMap::new(),
        errors: Vec::new(),
    }
    .into_response())
}

async fn create_program(
    State(state): State<AppState>,
    staff: Staff,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs.clone());
    staff.require(&[Role::Admin])?;
    staff.check_csrf(f.get("csrf"))?;
    let new = NewProgram {
        slug: f.get("slug").into(),
        name: f.get("name").into(),
        pass_type_identifier: f.get("pass_type_identifier").into(),
        team_identifier: f.get("team_identifier").into(),
        organization_name: f.get("organization_name").into(),
        rules: Default::default(),
    };
    let result = match new.validate() {
        Ok(()) => match state
            .cards
            .check_program_signable(&new.pass_type_identifier, &new.team_identifier)
        {
            Ok(()) => state
                .store
                .insert_program(&new)
                .await
                .map_err(ServiceError::from),
            Err(e) => Err(e),
        },
        Err(e) => Err(e.into()),
    };
    let errors = match result {
        Ok(p) => return Ok(see_other(format!("/staff/programs/{}", p.id))),
        Err(ServiceError::Invalid(i)) => i.problems.into_iter().map(|p| p.message).collect(),
        Err(ServiceError::Storage(StorageError::Conflict(m))) => vec![m],
        Err(e) => return Err(e.into()),
    };
    Ok((
        StatusCode::UNPROCESSABLE_ENTITY,
        ProgramsPage {
            csrf: staff.session.csrf_token.clone(),
            email: staff.session.user.email.clone(),
            role: staff.session.user.role.as_str(),
            is_admin: true,
            programs: state.store.list_programs().await?,
            pass_type_identifier: new.pass_type_identifier,
            team_identifier: new.team_identifier,
            values: pairs.into_iter().collect(),
            errors,
        },
    )
        .into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/program.html")]
struct ProgramPage {
    csrf: String,
    email: String,
    /// The signed-in staff member's role, for the navigation.
    role: &'static str,
    is_admin: bool,
    program: Program,
    templates: Vec<TemplateSummary>,
    enrollment: EnrollmentSettings,
    join_url: String,
    error: Option<String>,
}

impl ProgramPage {
    fn asks(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        let e = &self.enrollment;
        [
            ("name", "Name", e.name),
            ("email", "E-mail", e.email),
            ("phone", "Phone", e.phone),
            ("birthday", "Birthday", e.birthday),
        ]
        .into_iter()
        .map(|(field, label, ask)| (field, label, ask.name()))
        .collect()
    }
}

async fn program_page_for(
    state: &AppState,
    staff: &Staff,
    id: &str,
    error: Option<String>,
) -> Result<ProgramPage, PageError> {
    let program = state.store.get_program(id).await?;
    Ok(ProgramPage {
        csrf: staff.session.csrf_token.clone(),
        email: staff.session.user.email.clone(),
        role: staff.session.user.role.as_str(),
        is_admin: staff.session.user.role == Role::Admin,
        templates: state.store.list_templates(id).await?,
        enrollment: state.store.program_enrollment(id).await?,
        join_url: format!("{}/join/{}", state.config.public_base(), program.slug),
        program,
        error,
    })
}

async fn program_page(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> PageResult {
    staff.require(DESIGNERS)?;
    Ok(program_page_for(&state, &staff, &id, None)
        .await?
        .into_response())
}

/// The program's join page settings (admin), from the program page's form.
async fn save_enrollment(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    staff.require(&[Role::Admin])?;
    staff.check_csrf(f.get("csrf"))?;
    let ask = |name: &str| match f.get(name) {
        "required" => Ask::Required,
        "absent" => Ask::Absent,
        _ => Ask::Optional,
    };
    let bonus = f.get("welcome_bonus");
    let settings = EnrollmentSettings {
        name: ask("ask.name"),
        email: ask("ask.email"),
        phone: ask("ask.phone"),
        birthday: ask("ask.birthday"),
        privacy_policy_url: Some(f.get("privacy_policy_url").to_string()).filter(|u| !u.is_empty()),
        policy_version: f.get("policy_version").into(),
        data_consent_text: f.get("data_consent_text").into(),
        marketing_consent_text: Some(f.get("marketing_consent_text").to_string())
            .filter(|t| !t.is_empty()),
        welcome_bonus: if bonus.is_empty() {
            0
        } else {
            bonus.parse().unwrap_or(-1)
        },
    };
    if let Err(e) = settings.validate() {
        let page = program_page_for(&state, &staff, &id, Some(e.to_string())).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    state.store.set_program_enrollment(&id, &settings).await?;
    Ok(see_other(format!("/staff/programs/{id}")))
}

/// Renames a program (admin); every card shows the organisation name, so its holders are told.
async fn rename_program(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    staff.require(&[Role::Admin])?;
    staff.check_csrf(f.get("csrf"))?;
    let renamed = crate::service::programs::rename(
        &state.store,
        &id,
        f.get("name"),
        f.get("organization_name"),
    )
    .await;
    match renamed {
        Ok(_) => Ok(see_other(format!("/staff/programs/{id}"))),
        Err(ServiceError::Invalid(e)) => {
            let page = program_page_for(&state, &staff, &id, Some(e.to_string())).await?;
            Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
        }
        Err(e) => Err(e.into()),
    }
}

/// A new template starts from a complete sample design, unpublished, without images.
async fn create_template(
    State(state): State<AppState>,
    staff: Staff,
    Path(program_id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    let program = state.store.get_program(&program_id).await?;
    let name = f.get("name");
    if name.is_empty() || name.chars().count() > 200 {
        let error = Some("a template needs a name of 1 to 200 characters".to_string());
        let page = program_page_for(&state, &staff, &program.id, error).await?;
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    let mut design = crate::demo::design();
    design.description = format!("{} loyalty card", program.name);
    design.logo_text = Some(program.name.clone());
    let t = state
        .store
        .insert_draft_template(&program.id, name, &design, &[])
        .await?;
    Ok(see_other(format!("/staff/templates/{}", t.id)))
}

async fn duplicate(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    let source = state.store.get_template(&id).await?;
    let name: String = format!("Copy of {}", source.name)
        .chars()
        .take(200)
        .collect();
    let copy = state.store.duplicate_template(&id, &name).await?;
    Ok(see_other(format!("/staff/templates/{}", copy.id)))
}

async fn archive(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
    let f = form::Submitted::new(pairs);
    designer_form(&staff, &f)?;
    let archived = (f.get("archived") != "0").then(now_ms);
    state.store.set_template_archived(&id, archived).await?;
    let t = state.store.get_template(&id).await?;
    Ok(see_other(format!("/staff/programs/{}", t.program_id)))
}

// ---- the designer ----

/// An image slot of the designer.
struct ImageSlot {
    kind: &'static str,
    title: &'static str,
    hint: &'static str,
    present: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/designer.html")]
struct DesignerPage {
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

fn slot_of(field: &str) -> String {
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

fn sample_json(program: &Program) -> String {
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

async fn render_designer(
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

async fn designer_page(
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
async fn save_draft(
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

async fn save(
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
async fn check(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> PageResult {
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
async fn publish(
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

/// `multipart/form-data` with `csrf`, `kind` (icon, logo, strip) and `file`; `remove` instead
/// of a file takes the image out of the draft. Answers JSON to the page's script (which sends
/// `Accept: application/json`) and the designer page otherwise.
async fn upload(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> PageResult {
    staff.require(DESIGNERS)?;
    let (mut csrf, mut kind, mut file, mut remove) = (String::new(), String::new(), None, false);
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return Ok((
                    StatusCode::BAD_REQUEST,
                    format!("{}\n", upload_error(&e.to_string())),
                )
                    .into_response());
            }
        };
        match field.name().unwrap_or("") {
            "csrf" => csrf = field.text().await.unwrap_or_default(),
            "kind" => kind = field.text().await.unwrap_or_default(),
            "remove" => remove = true,
            "file" => match field.bytes().await {
                Ok(b) => file = Some(b.to_vec()),
                Err(e) => {
                    return Ok((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("{}\n", upload_error(&e.to_string())),
                    )
                        .into_response());
                }
            },
            _ => {}
        }
    }
    staff.check_csrf(&csrf)?;
    let Some(kind) = ImageKind::parse(&kind) else {
        return Ok((
            StatusCode::BAD_REQUEST,
            "kind must be icon, logo or strip\n",
        )
            .into_response());
    };
    let result = match (remove, file) {
        (true, _) => state
            .store
            .put_draft_image(&id, kind.name(), &[])
            .await
            .map_err(ServiceError::from),
        (false, Some(bytes)) if !bytes.is_empty() => {
            state.cards.upload_draft_image(&id, kind, bytes).await
        }
        _ => Err(Invalid::one(
            format!("images.{}", kind.name()),
            format!("choose a PNG or JPEG file for the {}", kind.name()),
        )
        .into()),
    };
    let wants_json = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/json"));
    let problems = match result {
        Ok(()) => Vec::new(),
        Err(ServiceError::Invalid(i)) => i.problems,
        Err(e) => return Err(e.into()),
    };
    if wants_json {
        let status = if problems.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        let errors: Vec<_> = problems.iter().map(|p| p.message.clone()).collect();
        return Ok((status, axum::Json(serde_json::json!({"errors": errors}))).into_response());
    }
    let failed = !problems.is_empty();
    let draft = state.store.template_draft(&id).await?;
    let notice = if failed {
        "The image was not accepted; see below."
    } else {
        "Image saved to the draft."
    };
    let page = render_designer(&state, &staff, draft, problems, None, Some(notice.into())).await?;
    Ok(if failed {
        (StatusCode::UNPROCESSABLE_ENTITY, page).into_response()
    } else {
        page.into_response()
    })
}

fn upload_error(detail: &str) -> String {
    format!("an image must be PNG or JPEG, at most 5 MB ({detail})")
}

/// An image file of the draft, for the preview.
async fn draft_image(
    State(state): State<AppState>,
    staff: Staff,
    Path((id, file)): Path<(String, String)>,
) -> PageResult {
    staff.require(DESIGNERS)?;
    let files = state.store.draft_images(&id).await?;
    match files.into_iter().find(|(n, _)| *n == file) {
        Some((_, bytes)) => Ok((
            [
                (axum::http::header::CONTENT_TYPE, "image/png"),
                (axum::http::header::CACHE_CONTROL, "private, no-cache"),
            ],
            bytes,
        )
            .into_response()),
        None => Err(PageError::NotFound("image")),
    }
}

/// A real signed `.pkpass` of the saved draft for the sample member.
async fn sample(State(state): State<AppState>, staff: Staff, Path(id): Path<String>) -> PageResult {
    staff.require(DESIGNERS)?;
    let draft = state.store.template_draft(&id).await?;
    if !draft.image_names.iter().any(|n| n == "icon.png") {
        return Ok((
            StatusCode::UNPROCESSABLE_ENTITY,
            "upload an icon first: Apple Wallet does not open a pass without icon.png\n",
        )
            .into_response());
    }
    let program = state.store.get_program(&draft.template.program_id).await?;
    let mut template = draft.template.clone();
    template.design = match draft.design.clone().validate() {
        Ok(d) => d,
        Err(e) => {
            return Ok((
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("the draft breaks a wallet rule: {e}\n"),
            )
                .into_response());
        }
    };
    let files = state.store.draft_images(&id).await?;
    let bytes = state
        .cards
        .sample_pkpass(&program, &template, files)
        .await?;
    let mut r = crate::api::pkpass_response(bytes, now_ms());
    r.headers_mut().insert(
        axum::http::header::CONTENT_DISPOSITION,
        axum::http::HeaderValue::from_static("attachment; filename=\"sample.pkpass\""),
    );
    Ok(r)
}

#[derive(Deserialize)]
struct VersionPath {
    id: String,
    version: i64,
}

async fn restore(
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

async fn job_status(
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
async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
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
