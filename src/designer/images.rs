//! Template images: uploads with their checks, draft images, and the sample pass.

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;

use super::editor::render_designer;
use super::{DESIGNERS, PageError, PageResult};
use crate::app::AppState;
use crate::domain::{Invalid, now_ms};
use crate::passes::apple::images::ImageKind;
use crate::service::cards::ServiceError;
use crate::web::staff::Staff;

/// `multipart/form-data` with `csrf`, `kind` (icon, logo, strip) and `file`; `remove` instead
/// of a file takes the image out of the draft. Answers JSON to the page's script (which sends
/// `Accept: application/json`) and the designer page otherwise.
pub(super) async fn upload(
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

pub(super) fn upload_error(detail: &str) -> String {
    format!("an image must be PNG or JPEG, at most 5 MB ({detail})")
}

/// An image file of the draft, for the preview.
pub(super) async fn draft_image(
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
pub(super) async fn sample(
    State(state): State<AppState>,
    staff: Staff,
    Path(id): Path<String>,
) -> PageResult {
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
