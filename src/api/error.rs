//! The API's one error shape: `{"error": {"code", "message", "details"}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::views::{ErrorBody, ErrorDetail};
use crate::domain::Invalid;
use crate::passes::apple::SignError;
use crate::service::cards::ServiceError;
use crate::storage::StorageError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: Value::Null,
        }
    }
    pub fn unauthorized(message: &str) -> ApiError {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn not_found(what: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> ApiError {
        let details: Vec<Value> = e
            .problems
            .iter()
            .map(|p| json!({"field": p.field, "message": p.message}))
            .collect();
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "validation_failed",
            message: e.to_string(),
            details: details.into(),
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> ApiError {
        match e {
            StorageError::NotFound(what) => ApiError::not_found(what),
            StorageError::Conflict(message) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            StorageError::Stale { what, current } => ApiError {
                status: StatusCode::PRECONDITION_FAILED,
                code: "precondition_failed",
                message: format!(
                    "the {what} changed since you read it (If-Match does not name its current version); read it again"
                ),
                details: json!({ "etag": format!("\"{current}\"") }),
            },
            StorageError::IdempotencyMismatch => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with a different request; use a new key for a new request",
            ),
            StorageError::Insufficient { available } => ApiError {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                code: "insufficient_points",
                message: format!("the member has {available} points available"),
                details: json!({ "available": available }),
            },
            StorageError::Rejected(message) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "rejected", message)
            }
            StorageError::OverLimit {
                limit,
                points,
                moved_today,
            } => ApiError {
                status: StatusCode::FORBIDDEN,
                code: "over_limit",
                message: match moved_today {
                    None => format!(
                        "this operation moves {points} points; this key may move at most {limit} points in one operation. Ask a manager."
                    ),
                    Some(moved) => format!(
                        "this key may move at most {limit} points a day (UTC); {moved} moved today, and this operation moves {points}. Ask a manager."
                    ),
                },
                details: json!({ "limit": limit, "points": points, "moved_today": moved_today }),
            },
            other => {
                // 5xx bodies stay opaque; the cause goes to the log.
                tracing::error!(error = %other, "storage failure");
                ApiError::internal()
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> ApiError {
        match e {
            ServiceError::Invalid(i) => i.into(),
            ServiceError::Storage(s) => s.into(),
            ServiceError::Sign(e @ SignError::Mismatch { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "not_signable",
                e.to_string(),
            ),
            other => {
                tracing::error!(error = %other, "pass building failed");
                ApiError::internal()
            }
        }
    }
}

/// `Json<T>` whose rejections use the API's error shape.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

/// `Query<T>` whose rejections use the API's error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                rejection.body_text(),
            )),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    let (status, code) = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
        }
        JsonRejection::JsonDataError(_) => (StatusCode::BAD_REQUEST, "invalid_body"),
        JsonRejection::BytesRejection(_) => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
        _ => (StatusCode::BAD_REQUEST, "invalid_json"),
    };
    ApiError::new(status, code, r.body_text())
}
