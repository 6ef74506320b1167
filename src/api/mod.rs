//! The REST API under `/api/v1`: our public JSON. Every request carries an API key
//! (`Authorization: Bearer tsk_...`); each route names the roles it admits.

pub mod auth;
pub mod error;
mod members;
mod programs;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{get, post, put};

use crate::app::AppState;
use crate::passes::apple::CONTENT_TYPE;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/programs", post(programs::create_program))
        .route("/api/v1/programs/{program_id}", get(programs::get_program))
        .route(
            "/api/v1/programs/{program_id}/templates",
            post(programs::create_template),
        )
        .route(
            "/api/v1/templates/{template_id}",
            get(programs::get_template),
        )
        .route(
            "/api/v1/templates/{template_id}/images/{kind}",
            put(programs::put_image),
        )
        .route(
            "/api/v1/programs/{program_id}/members",
            post(members::create_member),
        )
        .route("/api/v1/members/{member_id}", get(members::get_member))
        .route(
            "/api/v1/members/{member_id}/pass",
            get(members::download_pass),
        )
}

/// A `.pkpass` response. `Last-Modified` is the pass's own change time, never "now".
pub fn pkpass_response(bytes: Vec<u8>, updated_at_ms: i64) -> Response {
    let mut response = Response::new(Body::from(bytes));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"card.pkpass\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(value) = http_date(updated_at_ms).and_then(|d| HeaderValue::from_str(&d).ok()) {
        headers.insert(header::LAST_MODIFIED, value);
    }
    response
}

/// IMF-fixdate (`Tue, 09 Aug 2016 21:57:32 GMT`), truncated to whole seconds.
pub fn http_date(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_are_imf_fixdate() {
        assert_eq!(
            super::http_date(1_470_779_852_999).unwrap(),
            "Tue, 09 Aug 2016 21:57:32 GMT"
        );
    }
}
