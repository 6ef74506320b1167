//! Hygiene for every routed request, before its handler runs:
//!
//! - the body is read whole within `server.body_read_timeout_ms` (408 after) and at most
//!   `app::BODY_LIMIT` bytes (413), so a trickled body cannot hold a handler;
//! - path parameters, query parameters, and the fields of form and JSON bodies are refused with
//!   400 naming the field when they hold control characters (U+0000 to U+001F, U+007F to
//!   U+009F; bodies may keep tab, line feed and carriage return, which multi-line text needs).
//!   PostgreSQL cannot store U+0000 at all, and none belongs in a name, code or token;
//! - path and query parameters have at most [`MAX_PARAM`] characters.
//!
//! `/api/` routes answer in the API's error shape; others in plain text. CSV imports check
//! their own rows, so one bad line is reported by number and the rest imported.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::Value;

use crate::api::error::ApiError;
use crate::app::AppState;
use crate::domain::Invalid;

/// Longest path segment or query value, in characters. Identifiers, slugs, tokens, barcodes and
/// cursors are far shorter.
pub const MAX_PARAM: usize = 512;

/// A control character no text field may hold; `multiline` allows tab, LF and CR.
pub fn forbidden(c: char, multiline: bool) -> bool {
    c.is_control() && !(multiline && matches!(c, '\t' | '\n' | '\r'))
}

/// The first forbidden character of `value`, described for an error message.
pub fn control_char(value: &str, multiline: bool) -> Option<String> {
    value
        .chars()
        .position(|c| forbidden(c, multiline))
        .map(|at| {
            let c = value.chars().nth(at).unwrap_or('\0');
            format!(
                "must not contain control characters (found U+{:04X} at character {})",
                c as u32,
                at + 1
            )
        })
}

fn refuse(api: bool, status: StatusCode, field: &str, message: String) -> Response {
    if api {
        if status == StatusCode::BAD_REQUEST {
            return ApiError::from(Invalid::one(field, message)).into_response();
        }
        let code = match status {
            StatusCode::REQUEST_TIMEOUT => "request_timeout",
            StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
            _ => "invalid_request",
        };
        return ApiError::new(status, code, message).into_response();
    }
    (status, format!("{message}\n")).into_response()
}

fn check_param(field: &str, value: &str) -> Option<String> {
    if let Some(m) = control_char(value, false) {
        return Some(format!("{field} {m}"));
    }
    let n = value.chars().count();
    (n > MAX_PARAM).then(|| format!("{field} must have at most {MAX_PARAM} characters, got {n}"))
}

/// Path parameters, named by the route's pattern, and query parameters.
fn check_uri(req: &Request) -> Option<(String, String)> {
    if let Some(pattern) = req.extensions().get::<MatchedPath>() {
        for (name, raw) in pattern.as_str().split('/').zip(req.uri().path().split('/')) {
            let value = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
            let field = name
                .trim_start_matches('{')
                .trim_start_matches('*')
                .trim_end_matches('}');
            let field = if field.is_empty() { "path" } else { field };
            if let Some(m) = check_param(field, &value) {
                return Some((field.to_string(), m));
            }
        }
    }
    for (k, v) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        if let Some(m) = control_char(&k, false) {
            return Some(("query".into(), format!("a query parameter name {m}")));
        }
        if let Some(m) = check_param(&k, &v) {
            return Some((k.into_owned(), m));
        }
    }
    None
}

/// Whether `body` may hold an escaped or raw control character: `\u` escapes in JSON, `%00`
/// to `%1F`, `%7F` and raw bytes below 0x20 in forms, and raw U+0080 to U+009F (`C2 80`–`C2 9F`)
/// in either. Most bodies have none, and are not parsed twice.
fn may_hold_controls(body: &[u8]) -> bool {
    body.windows(2).any(|w| {
        (w[0] == b'\\' && w[1] == b'u')
            || (w[0] == b'%' && matches!(w[1], b'0' | b'1' | b'7' | b'c' | b'C'))
            || (w[0] == 0xC2 && (0x80..=0x9F).contains(&w[1]))
    }) || body
        .iter()
        .any(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r'))
}

/// The first JSON string (or key) with a forbidden character, named by its path.
fn check_json(value: &Value, path: &str) -> Option<(String, String)> {
    let name = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{k}")
        }
    };
    match value {
        Value::String(s) => {
            control_char(s, true).map(|m| (path.to_string(), format!("{path} {m}")))
        }
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| check_json(v, &format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, v)| {
            if let Some(m) = control_char(k, false) {
                return Some((name(k), format!("a key of {} {m}", name(""))));
            }
            check_json(v, &name(k))
        }),
        _ => None,
    }
}

fn check_form(body: &[u8]) -> Option<(String, String)> {
    form_urlencoded::parse(body).find_map(|(k, v)| {
        if let Some(m) = control_char(&k, false) {
            return Some(("form".into(), format!("a form field name {m}")));
        }
        control_char(&v, true).map(|m| (k.to_string(), format!("{k} {m}")))
    })
}

fn has_body(req: &Request) -> bool {
    req.headers().contains_key(TRANSFER_ENCODING)
        || req
            .headers()
            .get(CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// The middleware: see the module documentation.
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/");
    let passkit = req.uri().path().starts_with("/passkit/");
    if let Some((field, message)) = check_uri(&req) {
        tracing::info!(field = %field, "request refused: bad path or query parameter");
        return refuse(api, StatusCode::BAD_REQUEST, &field, message);
    }
    if !has_body(&req) {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let timeout = Duration::from_millis(state.config.server.body_read_timeout_ms.max(1));
    let limit = crate::app::BODY_LIMIT;
    let bytes: Bytes =
        match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
            Ok(Ok(collected)) => collected.to_bytes(),
            Ok(Err(e)) if e.is::<LengthLimitError>() => {
                return refuse(
                    api,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body",
                    format!("the request body must have at most {limit} bytes"),
                );
            }
            Ok(Err(_)) => {
                return refuse(
                    api,
                    StatusCode::BAD_REQUEST,
                    "body",
                    "the request body could not be read".into(),
                );
            }
            Err(_) => {
                tracing::info!("request refused: the body arrived too slowly");
                return refuse(
                    api,
                    StatusCode::REQUEST_TIMEOUT,
                    "body",
                    format!(
                        "the request body did not arrive within {} ms",
                        timeout.as_millis()
                    ),
                );
            }
        };
    if may_hold_controls(&bytes) {
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let found = if content_type.contains("json") || passkit {
            serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| check_json(&v, ""))
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            check_form(&bytes)
        } else {
            None
        };
        if let Some((field, message)) = found {
            tracing::info!(field = %field, "request refused: a control character in the body");
            return refuse(api, StatusCode::BAD_REQUEST, &field, message);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_found_and_named() {
        assert_eq!(control_char("ab", false), None);
        assert!(
            control_char("a\u{0}b", false)
                .unwrap()
                .contains("U+0000 at character 2")
        );
        assert!(control_char("a\nb", false).is_some());
        assert_eq!(control_char("a\r\n\tb", true), None);
        assert!(control_char("a\u{85}", true).unwrap().contains("U+0085"));
        let v: Value =
            serde_json::from_str(r#"{"design": {"fields": [{"label": "a\u0000"}]}}"#).unwrap();
        let (field, message) = check_json(&v, "").unwrap();
        assert_eq!(field, "design.fields[0].label");
        assert!(
            message.starts_with("design.fields[0].label must not"),
            "{message}"
        );
        assert_eq!(
            check_form(b"csrf=x&name=a%00b").map(|(f, _)| f).as_deref(),
            Some("name")
        );
        assert!(check_form(b"notes=a%0D%0Ab").is_none());
        assert!(may_hold_controls(b"name=a%00b") && may_hold_controls(br#"{"a":"\u0000"}"#));
        assert!(!may_hold_controls(br#"{"display_name": "Ada"}"#));
    }
}
