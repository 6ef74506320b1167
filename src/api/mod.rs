//! The REST API under `/api/v1`: our public JSON. Every request carries an API key
//! (`Authorization: Bearer tsk_...`); each route names the roles it admits.

pub mod auth;
pub mod error;
mod keys;
mod members;
mod programs;
pub mod transactions;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::app::AppState;
use crate::passes::apple::CONTENT_TYPE;
use error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/programs", post(programs::create_program))
        .route("/api/v1/programs/{program_id}", get(programs::get_program))
        .route(
            "/api/v1/programs/{program_id}/rules",
            put(programs::put_rules),
        )
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
            post(members::create_member).get(members::list_members),
        )
        .route("/api/v1/members", get(members::find_member))
        .route("/api/v1/members/{member_id}", get(members::get_member))
        .route(
            "/api/v1/members/{member_id}/pass",
            get(members::download_pass),
        )
        .route(
            "/api/v1/members/{member_id}/passes",
            get(members::list_passes),
        )
        .route(
            "/api/v1/members/{member_id}/transactions",
            post(transactions::post_transaction).get(transactions::list_transactions),
        )
        .route(
            "/api/v1/api-keys",
            post(keys::create_key).get(keys::list_keys),
        )
        .route("/api/v1/api-keys/{key_id}", delete(keys::revoke_key))
}

/// Cursor pagination: `?limit=50&cursor=<opaque>`; a page holds at most 100 items.
#[derive(Debug, Deserialize)]
pub struct Page {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl Page {
    /// The decoded cursor `(created_at, id)` and the limit.
    pub fn parse(&self) -> Result<(Option<(i64, String)>, i64), ApiError> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=100).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and 100, got {limit}"
            )));
        }
        let after = match &self.cursor {
            None => None,
            Some(c) => {
                let bad = || ApiError::bad_request("cursor is not one this API returned");
                let raw = data_encoding::BASE64URL_NOPAD
                    .decode(c.as_bytes())
                    .map_err(|_| bad())?;
                let text = String::from_utf8(raw).map_err(|_| bad())?;
                let (at, id) = text.split_once(':').ok_or_else(bad)?;
                Some((at.parse().map_err(|_| bad())?, id.to_string()))
            }
        };
        Ok((after, limit))
    }
}

/// `{"items": [...], "next_cursor": ...}` from up to `limit + 1` fetched rows.
pub fn page_json<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (i64, String),
    render: impl Fn(&T) -> Value,
) -> Value {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next = rows.last().filter(|_| more).map(|last| {
        let (at, id) = key(last);
        data_encoding::BASE64URL_NOPAD.encode(format!("{at}:{id}").as_bytes())
    });
    json!({"items": rows.iter().map(render).collect::<Vec<_>>(), "next_cursor": next})
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
