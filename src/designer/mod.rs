//! The card designer: staff pages where marketers list programs and templates, design a card
//! with a live Apple Wallet and Google Wallet preview, see the pre-publish checks next to each
//! input, and publish a version to every holder (a background job, `jobs::publish_loop`).
//!
//! Server-rendered askama pages; `templates/assets/designer.js` adds the live preview, live
//! checks (`POST …/check`, the same checks as publishing) and uploads without a reload. Every
//! form works without it.

use axum::Router;
use axum::http::StatusCode;
use axum::http::header::LOCATION;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::AppState;
use crate::passes::apple::images::MAX_UPLOAD_BYTES;
use crate::service::cards::ServiceError;
use crate::storage::{Role, StorageError};
use crate::web::staff::{Refusal, Staff};

mod editor;
pub mod form;
mod images;
mod programs;

use editor::{asset, check, designer_page, job_status, publish, restore, save};
use images::{draft_image, sample, upload};
use programs::{
    archive, create_program, create_template, duplicate, program_page, programs_page,
    rename_program, save_enrollment,
};

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
