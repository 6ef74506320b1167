//! Public pages: the home page, health, and the pass download link customers open.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;

pub mod audit;
pub mod guard;
pub mod metrics;
pub mod staff;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(staff::router())
        .merge(audit::router())
        .route("/", get(home))
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::metrics))
        .route("/passes/{file}", get(download))
        .route(
            "/google/images/{template_id}/{version}/{file}",
            get(google_image),
        )
        .route(
            "/google/callback",
            axum::routing::post(google_callback)
                .layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
        )
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/home.html")]
struct Home {
    version: &'static str,
    dev_signing: bool,
}

async fn home(State(state): State<AppState>) -> Home {
    Home {
        version: env!("CARGO_PKG_VERSION"),
        dev_signing: state.cards.signers().is_dev(),
    }
}

/// Liveness: the process answers. Costs nothing, so probes may be frequent.
async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Readiness: 200 when the database answers and every background worker is running, else
/// 503; the body names each worker with its last successful round.
async fn ready(State(state): State<AppState>) -> Response {
    let database = match state.store.ping().await {
        Ok(()) => "ok".to_string(),
        Err(e) => {
            tracing::error!(error = %e, "readiness: database unreachable");
            "unreachable".to_string()
        }
    };
    let ready = database == "ok" && state.workers.all_alive();
    let body = serde_json::json!({
        "ready": ready,
        "database": database,
        "workers": state.workers.snapshot(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

#[derive(Deserialize)]
struct Token {
    token: Option<String>,
}

/// `GET /passes/<serial>.pkpass?token=<authentication token>`: a plain link that adds the card.
/// A wrong token and an unknown serial both answer 404, so neither can be probed.
async fn download(
    State(state): State<AppState>,
    Path(file): Path<String>,
    Query(q): Query<Token>,
) -> Response {
    let not_found = || (StatusCode::NOT_FOUND, "no such pass\n").into_response();
    let (Some(serial), Some(token)) = (file.strip_suffix(".pkpass"), q.token) else {
        return not_found();
    };
    match state.cards.pkpass_with_token(serial, &token).await {
        Ok(Some(signed)) => crate::api::pkpass_response(signed.bytes, signed.pass.updated_at),
        Ok(None) => not_found(),
        Err(e) => {
            tracing::error!(error = %e, "building a pass for download failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the pass could not be built; see the server log\n",
            )
                .into_response()
        }
    }
}

/// The template's images for Google Wallet: the program logo (`logo.png`, from the logo upload
/// where there is one, else the icon), the wide logo (`wide-logo.png`) and the hero image
/// (`hero.png`). Google fetches them from this public URL and caches them, so the URL carries
/// the template version: a new version is a new URL, and Google fetches the new image.
async fn google_image(
    State(state): State<AppState>,
    Path((template_id, _version, file)): Path<(String, i64, String)>,
) -> Response {
    // Google's own renditions first; templates made before they existed fall back to the
    // largest icon, square as Google's circular logo mask needs.
    let candidates: &[&str] = match file.as_str() {
        "logo.png" => &[
            "google/program-logo.png",
            "google/logo.png",
            "icon@3x.png",
            "icon@2x.png",
            "icon.png",
        ],
        "hero.png" => &["google/hero.png"],
        "wide-logo.png" => &["google/wide-logo.png"],
        _ => return (StatusCode::NOT_FOUND, "no such image\n").into_response(),
    };
    match state.store.template_images(&template_id).await {
        Ok(files) => {
            let best = candidates
                .iter()
                .find_map(|name| files.iter().find(|(n, _)| n == name));
            match best {
                Some((_, bytes)) => (
                    [
                        (axum::http::header::CONTENT_TYPE, "image/png"),
                        (
                            axum::http::header::CACHE_CONTROL,
                            "public, max-age=31536000, immutable",
                        ),
                    ],
                    bytes.clone(),
                )
                    .into_response(),
                None => (StatusCode::NOT_FOUND, "the template has no such image\n").into_response(),
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "reading template images failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// `POST /google/callback`: Google's signed save/delete events. Verified events are recorded
/// once per nonce; a replay gets 200 and changes nothing, so Google stops retrying.
async fn google_callback(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let Some(google) = &state.google else {
        return (StatusCode::NOT_FOUND, "Google Wallet is not configured\n").into_response();
    };
    let now = crate::domain::now_ms();
    let event = match google.callbacks.verify(&body, now).await {
        Ok(e) => e,
        Err(crate::google::callback::CallbackError::Keys(e)) => {
            tracing::error!(error = %e, "Google callback: fetching the root keys failed");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
        Err(e) => {
            tracing::warn!(error = %e, "Google callback refused");
            return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response();
        }
    };
    match state
        .store
        .record_google_event(&event.nonce, &event.object_id, &event.event_type, now)
        .await
    {
        Ok(fresh) => {
            tracing::info!(object = %event.object_id, event = %event.event_type, replay = !fresh, "Google callback");
            StatusCode::OK.into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "Google callback: recording failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}
