//! The REST API under `/api/v1`: our public JSON. Every request carries an API key
//! (`Authorization: Bearer tsk_...`); each route names the roles it admits.

pub mod audit;
pub mod auth;
mod enrollment;
pub mod error;
mod export;
mod google;
mod holds;
mod keys;
mod lifecycle;
mod members;
mod programs;
pub mod transactions;
pub mod views;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::SwaggerUi;

use crate::app::AppState;
use crate::passes::apple::CONTENT_TYPE;
use error::ApiError;
use views::Paged;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera API",
        description = "Loyalty programs, card templates, members, their Apple Wallet passes and the points ledger. \
            Every request needs `Authorization: Bearer <API key>`; every write to the ledger needs an `Idempotency-Key`. \
            Errors always have the shape `{\"error\": {\"code\", \"message\", \"details\"}}`."
    ),
    modifiers(&BearerKey),
    security(("api_key" = [])),
    tags(
        (name = "programs", description = "Loyalty programs and their earn, expiry and tier rules"),
        (name = "templates", description = "Card designs"),
        (name = "members", description = "Card holders, their standing and passes"),
        (name = "transactions", description = "The points ledger"),
        (name = "api-keys", description = "Keys for integrations, tills and staff"),
        (name = "enrollment", description = "Join pages, install links, CSV imports and consent records"),
        (name = "audit", description = "Who did what: every write by a staff account or an API key, every read of a member's data"),
    )
)]
struct ApiDoc;

struct BearerKey;

impl Modify for BearerKey {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .bearer_format("tsk_<id>_<secret>")
            .build();
        components.add_security_scheme("api_key", SecurityScheme::Http(scheme));
    }
}

/// Every API route, each registered with its OpenAPI description: the document cannot list a
/// route that is not served, nor miss one that is.
fn documented() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(programs::create_program))
        .routes(routes!(programs::get_program))
        .routes(routes!(programs::put_rules))
        .routes(routes!(programs::get_retention, programs::put_retention))
        .routes(routes!(programs::create_template))
        .routes(routes!(programs::get_template))
        .routes(routes!(programs::put_image))
        .routes(routes!(members::create_member, members::list_members))
        .routes(routes!(members::find_member))
        .routes(routes!(members::get_member, lifecycle::patch_member))
        .routes(routes!(members::download_pass))
        .routes(routes!(members::list_passes))
        .routes(routes!(members::google_card))
        .routes(routes!(lifecycle::end_card))
        .routes(routes!(lifecycle::reissue_card))
        .routes(routes!(lifecycle::erase_member))
        .routes(routes!(export::export_member))
        .routes(routes!(google::message_member))
        .routes(routes!(google::message_template))
        .routes(routes!(
            google::get_notify_policy,
            google::put_notify_policy
        ))
        .routes(routes!(
            transactions::post_transaction,
            transactions::list_transactions
        ))
        .routes(routes!(holds::create_hold))
        .routes(routes!(holds::get_hold))
        .routes(routes!(holds::capture_hold))
        .routes(routes!(holds::void_hold))
        .routes(routes!(
            enrollment::get_enrollment,
            enrollment::put_enrollment
        ))
        .routes(routes!(enrollment::install_link))
        .routes(routes!(enrollment::import_members))
        .routes(routes!(enrollment::consents, lifecycle::withdraw_consent))
        .routes(routes!(keys::create_key, keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(audit::list_audit))
}

/// The OpenAPI 3 document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    documented().split_for_parts().1
}

/// The API, `/api/v1/openapi.json`, and Swagger UI at `/api/v1/docs` (assets built in; works offline).
pub fn router() -> Router<AppState> {
    let (router, api) = documented().split_for_parts();
    router.merge(SwaggerUi::new("/api/v1/docs").url("/api/v1/openapi.json", api))
}

/// Cursor pagination: `?limit=50&cursor=<opaque>`; a page holds at most 100 items.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// Items per page, 1 to 100 (default 50).
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(max_length = 512)]
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

/// A page from up to `limit + 1` fetched rows: the extra row only tells that there is more.
pub fn paged<T, V: utoipa::ToSchema>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (i64, String),
    view: impl Fn(&T) -> V,
) -> Paged<V> {
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let next_cursor = rows.last().filter(|_| more).map(|last| {
        let (at, id) = key(last);
        data_encoding::BASE64URL_NOPAD.encode(format!("{at}:{id}").as_bytes())
    });
    Paged {
        items: rows.iter().map(view).collect(),
        next_cursor,
    }
}

/// A `.pkpass` response. `Last-Modified` is the pass's own change time, never "now".
pub fn pkpass_response(bytes: impl Into<Body>, updated_at_ms: i64) -> Response {
    let mut response = Response::new(bytes.into());
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
