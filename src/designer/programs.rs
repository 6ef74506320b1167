//! The programs list and a program's page: create, rename, enrollment settings, templates.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;

use super::{DESIGNERS, PageError, PageResult, designer_form, form, see_other};
use crate::app::AppState;
use crate::domain::enrollment::{Ask, EnrollmentSettings};
use crate::domain::{NewProgram, Program, now_ms};
use crate::service::cards::ServiceError;
use crate::storage::{Role, StorageError, TemplateSummary};
use crate::web::staff::Staff;

#[derive(Template, WebTemplate)]
#[template(path = "pages/programs.html")]
pub(super) struct ProgramsPage {
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

pub(super) async fn programs_page(State(state): State<AppState>, staff: Staff) -> PageResult {
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

pub(super) async fn create_program(
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
pub(super) struct ProgramPage {
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

pub(super) async fn program_page_for(
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

pub(super) async fn program_page(
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
pub(super) async fn save_enrollment(
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
pub(super) async fn rename_program(
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
pub(super) async fn create_template(
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

pub(super) async fn duplicate(
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

pub(super) async fn archive(
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
