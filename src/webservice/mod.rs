//! Apple's PassKit web service (`shared/spec/apple-wallet.md` §5) under each pass's
//! `webServiceURL` (`<public_url>/passkit`): devices register for updates, ask which passes
//! changed, download them, and send their logs.
//!
//! Statuses follow Apple's reference [WS] exactly. An unknown serial answers 401 like a wrong
//! token, so tokens cannot be probed; Apple documents no 404. 401s are ordinary device behaviour
//! (a deleted pass, a stale registration) and log at debug.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{AUTHORIZATION, IF_MODIFIED_SINCE, LAST_MODIFIED};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use crate::app::AppState;
use crate::domain::{Pass, now_ms};
use crate::enrollment::{ClientAddr, too_many};
use crate::secret::constant_time_eq;
use crate::storage::StorageError;

pub mod fetches;
mod tag;

/// Largest `POST /v1/log` body accepted; Wallet sends a handful of short lines.
const LOG_BODY_LIMIT: usize = 64 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/passkit/v1/devices/{device}/registrations/{pass_type}/{serial}",
            post(register).delete(unregister),
        )
        .route(
            "/passkit/v1/devices/{device}/registrations/{pass_type}",
            get(updated),
        )
        .route("/passkit/v1/passes/{pass_type}/{serial}", get(latest_pass))
        .route(
            "/passkit/v1/log",
            post(log).layer(DefaultBodyLimit::max(LOG_BODY_LIMIT)),
        )
}

fn status(code: StatusCode) -> Response {
    code.into_response()
}

/// The pass if the request carries `Authorization: ApplePass <its token>`; else 401.
async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    pass_type: &str,
    serial: &str,
) -> Result<Pass, Response> {
    let unauthorized = |why: &str| {
        tracing::debug!(serial, why, "PassKit request not authorized");
        status(StatusCode::UNAUTHORIZED)
    };
    let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("ApplePass "))
    else {
        return Err(unauthorized("no ApplePass authorization"));
    };
    let pass = match state.store.passkit_pass(serial).await {
        Ok(p) => p,
        Err(StorageError::NotFound(_)) => return Err(unauthorized("unknown serial")),
        Err(e) => {
            tracing::error!(error = %e, "PassKit: reading the pass failed");
            return Err(status(StatusCode::INTERNAL_SERVER_ERROR));
        }
    };
    if pass.pass_type_identifier != pass_type
        || !constant_time_eq(
            pass.authentication_token.as_bytes(),
            token.trim().as_bytes(),
        )
    {
        return Err(unauthorized("wrong token or pass type"));
    }
    Ok(pass)
}

fn valid_device(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

#[derive(Deserialize)]
struct RegisterBody {
    #[serde(rename = "pushToken")]
    push_token: String,
}

/// `POST /v1/devices/{device}/registrations/{passType}/{serial}`: 201 new, 200 already
/// registered (push token updated), 401 not authorized [WS].
async fn register(
    State(state): State<AppState>,
    Path((device, pass_type, serial)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let pass = match authorize(&state, &headers, &pass_type, &serial).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(RegisterBody { push_token }) = serde_json::from_slice::<RegisterBody>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be {\"pushToken\": \"<hex>\"}\n",
        )
            .into_response();
    };
    // APNs device tokens are hex; anything else could never be pushed to.
    if !valid_device(&device)
        || !(1..=200).contains(&push_token.len())
        || !push_token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return (
            StatusCode::BAD_REQUEST,
            "malformed device identifier or push token\n",
        )
            .into_response();
    }
    match state
        .store
        .register_device(&device, &push_token, &pass.serial_number, now_ms())
        .await
    {
        Ok(true) => status(StatusCode::CREATED),
        Ok(false) => status(StatusCode::OK),
        Err(e) => {
            tracing::error!(error = %e, "PassKit: registration failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// `DELETE /v1/devices/{device}/registrations/{passType}/{serial}`: 200, or 401 [WS]. Apple's
/// reference says 200, not 204.
async fn unregister(
    State(state): State<AppState>,
    Path((device, pass_type, serial)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    let pass = match authorize(&state, &headers, &pass_type, &serial).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    match state
        .store
        .unregister_device(&device, &pass.serial_number)
        .await
    {
        Ok(()) => status(StatusCode::OK),
        Err(e) => {
            tracing::error!(error = %e, "PassKit: unregistration failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

#[derive(Deserialize)]
struct Since {
    #[serde(rename = "passesUpdatedSince")]
    passes_updated_since: Option<String>,
}

/// `GET /v1/devices/{device}/registrations/{passType}?passesUpdatedSince=<tag>`: 200 with the
/// serials changed since the tag and `lastUpdated` (a JSON string: a number breaks Wallet), or
/// 204 when none [WS, UPD]. No authorization: the device id is the credential [UPD]. The tag
/// records the version of each registered pass (`tag`), so the list is exact whatever order
/// changes committed in; an unreadable tag counts as absent.
async fn updated(
    State(state): State<AppState>,
    Path((device, pass_type)): Path<(String, String)>,
    Query(q): Query<Since>,
) -> Response {
    let since = tag::parse(q.passes_updated_since.as_deref());
    match state.store.registered_versions(&device, &pass_type).await {
        Ok(passes) => {
            let serials = tag::changed(&since, &passes);
            if serials.is_empty() {
                return status(StatusCode::NO_CONTENT);
            }
            let last = tag::tag(&passes, now_ms());
            axum::Json(json!({"serialNumbers": serials, "lastUpdated": last})).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "PassKit: listing updated passes failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// `GET /v1/passes/{passType}/{serial}`: the current pass with `Last-Modified` equal to the
/// pass's own change time (never "now"), or 304 when `If-Modified-Since` is at or after it, or
/// 401 [WS, §5.4]. An unchanged pass is served from signed bytes, not signed again.
async fn latest_pass(
    State(state): State<AppState>,
    Path((pass_type, serial)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let pass = match authorize(&state, &headers, &pass_type, &serial).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let changed_secs = pass.updated_at.div_euclid(1000);
    let since = headers
        .get(IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_http_date);
    if since.is_some_and(|s| changed_secs <= s) {
        let mut r = status(StatusCode::NOT_MODIFIED);
        if let Some(v) =
            crate::api::http_date(pass.updated_at).and_then(|d| HeaderValue::from_str(&d).ok())
        {
            r.headers_mut().insert(LAST_MODIFIED, v);
        }
        return r;
    }
    match state.cards.pkpass_cached(&pass).await {
        Ok(bytes) => {
            state.fetches.record(&pass.serial_number, now_ms());
            crate::api::pkpass_response(bytes, pass.updated_at)
        }
        Err(e) => {
            tracing::error!(error = %e, "PassKit: building the pass failed");
            status(StatusCode::INTERNAL_SERVER_ERROR)
        }
    }
}

/// Parses an IMF-fixdate (`Tue, 09 Aug 2016 21:57:32 GMT`) into seconds since the epoch.
fn parse_http_date(s: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s.trim(), &format).ok()?;
    Some(t.assume_utc().unix_timestamp())
}

#[derive(Deserialize)]
struct Logs {
    logs: Vec<String>,
}

/// Lines of one `POST /v1/log` logged, and characters of each line.
const LOG_LINES: usize = 20;
const LOG_LINE_CHARS: usize = 500;

/// One device message as one log line: newlines, quotes and control characters escaped
/// (`\n`, `\"`, `\0`, `\u{1b}`), cut to [`LOG_LINE_CHARS`], so a device cannot forge log lines.
pub fn escape_device_line(line: &str) -> String {
    let mut out: String = line
        .chars()
        .take(LOG_LINE_CHARS)
        .flat_map(char::escape_debug)
        .collect();
    if line.chars().count() > LOG_LINE_CHARS {
        out.push_str("[cut]");
    }
    out
}

/// `POST /v1/log`: Wallet's error messages about this service, written to our log [WS]. The
/// endpoint is unauthenticated (Apple specifies no token), so it is throttled per client
/// address and each request logs at most [`LOG_LINES`] escaped lines.
async fn log(State(state): State<AppState>, ClientAddr(addr): ClientAddr, body: Bytes) -> Response {
    if let Err(wait) = state.device_log_throttle.check(&addr).await {
        tracing::debug!(client = %addr, "device log throttled");
        return too_many(wait, "too many device logs from this address");
    }
    let Ok(Logs { logs }) = serde_json::from_slice::<Logs>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            "body must be {\"logs\": [\"...\"]}\n",
        )
            .into_response();
    };
    for line in logs.iter().take(LOG_LINES) {
        tracing::info!(
            target: "tessera::passkit_device",
            client = %addr,
            "device log: \"{}\"",
            escape_device_line(line)
        );
    }
    status(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_dates_round_trip() {
        let text = crate::api::http_date(1_470_779_852_999).unwrap();
        assert_eq!(super::parse_http_date(&text), Some(1_470_779_852));
        assert_eq!(super::parse_http_date("yesterday"), None);
    }

    #[test]
    fn device_lines_are_escaped_onto_one_line_and_cut() {
        let forged = "x\n2026-12-03T08:00:00Z ERROR tessera: FORGED admin login\u{0}\u{1b}[31m";
        let line = super::escape_device_line(forged);
        assert!(!line.chars().any(char::is_control), "{line}");
        assert!(
            line.starts_with("x\\n2026") && line.ends_with("\\0\\u{1b}[31m"),
            "{line}"
        );
        let long = super::escape_device_line(&"a".repeat(10_000));
        assert_eq!(long.len(), super::LOG_LINE_CHARS + "[cut]".len());
    }
}
