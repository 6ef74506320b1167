//! A local stand-in for Google's token endpoint and Wallet REST API that checks what Google
//! checks (`google-wallet.md` §8), for tests and demos: the JWT-bearer grant (signature with
//! the service account's public key, audience, scope, lifetime), the Bearer token on every call,
//! resource ids, required fields, insert/409, patch/404, merge-on-PATCH and replace-on-PUT, and
//! the 3-notifications-per-24 h quota. Tests inject outages (503), refusals (400) and lost
//! classes (remove one from `Recorded::classes`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use openssl::pkey::{PKey, Public};
use serde::Deserialize;
use serde_json::{Value, json};

use super::jwt;

/// One Wallet API request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// `notifyPreference` of the body, which Google does not store.
    pub notify: Option<String>,
}

#[derive(Default)]
pub struct Recorded {
    pub token_requests: usize,
    pub issued: Vec<String>,
    pub classes: HashMap<String, Value>,
    pub objects: HashMap<String, Value>,
    pub calls: Vec<Call>,
    /// Notifying updates per object (count within the stand-in's lifetime, well under 24 h).
    pub notifications: HashMap<String, usize>,
    /// Answer the next this-many Wallet calls with 503.
    pub fail_next: usize,
    /// Answer the next this-many Wallet calls with 400 (`invalidArgument`), as Google answers
    /// a resource it will not take.
    pub refuse_next: usize,
    /// Answer every `addMessage` with 400.
    pub refuse_messages: bool,
    /// What `GET /keys` serves: Google's callback root keys document.
    pub root_keys: Value,
}

struct Shared {
    key: PKey<Public>,
    client_email: String,
    issuer_id: String,
    token_url: String,
    expires_in: u64,
    recorded: Mutex<Recorded>,
}

pub struct GoogleStandIn {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

impl GoogleStandIn {
    /// Serves on a free local port; trusts assertions signed by `key` for `client_email`.
    pub async fn start(
        key: PKey<Public>,
        client_email: &str,
        issuer_id: &str,
        expires_in: u64,
    ) -> GoogleStandIn {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("stand-in set-up");
        let addr = listener.local_addr().expect("stand-in set-up");
        let shared = Arc::new(Shared {
            key,
            client_email: client_email.into(),
            issuer_id: issuer_id.into(),
            token_url: format!("http://{addr}/token"),
            expires_in,
            recorded: Mutex::default(),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/keys", get(keys))
            .route("/walletobjects/v1/{kind}", post(insert))
            .route(
                "/walletobjects/v1/{kind}/{id}",
                get(fetch).put(replace).patch(merge),
            )
            .route(
                "/walletobjects/v1/{kind}/{id}/addMessage",
                post(add_message),
            )
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        GoogleStandIn { addr, shared }
    }

    pub fn token_url(&self) -> String {
        self.shared.token_url.clone()
    }

    /// Where the callback root keys are published (`recorded().root_keys`).
    pub fn keys_url(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    pub fn api_base(&self) -> String {
        format!("http://{}/walletobjects/v1", self.addr)
    }

    pub fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.shared.recorded.lock().expect("stand-in lock")
    }

    /// Forgets every access token issued, as if they expired early.
    pub fn revoke_tokens(&self) {
        self.recorded().issued.clear();
    }
}

/// A refusal in Google's error envelope.
pub struct Refuse {
    status: StatusCode,
    reason: &'static str,
    message: String,
}

impl IntoResponse for Refuse {
    fn into_response(self) -> Response {
        let code = self.status.as_u16();
        (
            self.status,
            Json(json!({"error": {"code": code, "message": self.message,
                "errors": [{"message": self.message, "domain": "walletobjects", "reason": self.reason}]}})),
        )
            .into_response()
    }
}

fn error(status: StatusCode, reason: &'static str, message: &str) -> Refuse {
    Refuse {
        status,
        reason,
        message: message.into(),
    }
}

async fn keys(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(s.recorded.lock().expect("stand-in lock").root_keys.clone())
}

#[derive(Deserialize)]
struct Grant {
    grant_type: String,
    assertion: String,
}

async fn token(State(s): State<Arc<Shared>>, Form(g): Form<Grant>) -> Response {
    let bad = |why: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if g.grant_type != "urn:ietf:params:oauth:grant-type:jwt-bearer" {
        return bad("unsupported grant_type");
    }
    let Some((_, claims)) = jwt::verify_rs256(&s.key, &g.assertion) else {
        return bad("Invalid JWT Signature.");
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let (iat, exp) = (claims["iat"].as_i64(), claims["exp"].as_i64());
    if claims["iss"] != s.client_email.as_str()
        || !claims["scope"]
            .as_str()
            .is_some_and(|sc| sc.contains("wallet_object.issuer"))
        || claims["aud"] != s.token_url.as_str()
        || claims.get("sub").is_some()
    {
        return bad("Invalid JWT: iss, scope, aud or sub");
    }
    match (iat, exp) {
        (Some(iat), Some(exp)) if iat <= now + 5 && exp > now && exp - iat <= 3600 => {}
        _ => return bad("Invalid JWT: Token must be a short-lived token (60 minutes)"),
    }
    let mut r = s.recorded.lock().expect("stand-in lock");
    r.token_requests += 1;
    let access = format!("ya29.standin-{}", r.token_requests);
    r.issued.push(access.clone());
    Json(json!({"access_token": access, "expires_in": s.expires_in, "token_type": "Bearer"}))
        .into_response()
}

/// Checks the Bearer token and the kind; records the call. `Err` is the refusal.
fn admit(
    s: &Shared,
    headers: &HeaderMap,
    method: &str,
    kind: &str,
    id: Option<&str>,
    body: Option<&Value>,
) -> Result<(), Refuse> {
    let mut r = s.recorded.lock().expect("stand-in lock");
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !bearer.is_some_and(|b| r.issued.iter().any(|t| t == b)) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Invalid Credentials",
        ));
    }
    r.calls.push(Call {
        method: method.into(),
        path: format!("/{kind}{}", id.map(|i| format!("/{i}")).unwrap_or_default()),
        notify: body
            .and_then(|b| {
                b["notifyPreference"]
                    .as_str()
                    .or(b["message"]["messageType"]
                        .as_str()
                        .filter(|t| *t == "TEXT_AND_NOTIFY"))
            })
            .map(String::from),
    });
    if r.fail_next > 0 {
        r.fail_next -= 1;
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "backendError",
            "Backend Error",
        ));
    }
    if r.refuse_next > 0 {
        r.refuse_next -= 1;
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "Invalid value for the request (injected by the stand-in)",
        ));
    }
    if kind != "loyaltyClass" && kind != "loyaltyObject" {
        return Err(error(
            StatusCode::NOT_FOUND,
            "notFound",
            "no such resource kind",
        ));
    }
    Ok(())
}

fn valid_id(s: &Shared, id: &str) -> bool {
    id.split_once('.').is_some_and(|(issuer, rest)| {
        issuer == s.issuer_id
            && !rest.is_empty()
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    })
}

/// What Google requires of a whole resource (§8).
fn check(s: &Shared, kind: &str, v: &Value, r: &Recorded) -> Result<(), Refuse> {
    let bad = |why: &str| Err(error(StatusCode::BAD_REQUEST, "invalidArgument", why));
    let id = v["id"].as_str().unwrap_or_default();
    if !valid_id(s, id) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalidResource",
            &format!("Invalid resource ID: {id}"),
        ));
    }
    if kind == "loyaltyClass" {
        if v["issuerName"].as_str().is_none_or(str::is_empty)
            || v["programName"].as_str().is_none_or(str::is_empty)
        {
            return bad("issuerName and programName are required");
        }
        if !v["programLogo"]["sourceUri"]["uri"]
            .as_str()
            .is_some_and(|u| u.contains("://"))
        {
            return bad("programLogo.sourceUri.uri must be a URI with a scheme");
        }
        if let Some(color) = v.get("hexBackgroundColor") {
            let hex = color.as_str().and_then(|c| c.strip_prefix('#'));
            if !hex.is_some_and(|h| {
                matches!(h.len(), 3 | 6) && h.bytes().all(|b| b.is_ascii_hexdigit())
            }) {
                return bad(&format!(
                    "hexBackgroundColor must be #rrggbb or #rgb, got {color}"
                ));
            }
        }
        if !matches!(v["reviewStatus"].as_str(), Some("DRAFT" | "UNDER_REVIEW")) {
            return bad("reviewStatus must be DRAFT or UNDER_REVIEW");
        }
        return Ok(());
    }
    let class = v["classId"].as_str().unwrap_or_default();
    match r.classes.get(class) {
        None => {
            return Err(error(
                StatusCode::NOT_FOUND,
                "classNotFound",
                &format!("Wallet Object Class {class} not found."),
            ));
        }
        Some(c) if c["reviewStatus"] == "DRAFT" => return bad("the class is a DRAFT"),
        _ => {}
    }
    if !matches!(
        v["state"].as_str(),
        Some("ACTIVE" | "COMPLETED" | "EXPIRED" | "INACTIVE")
    ) {
        return bad("state must be ACTIVE, COMPLETED, EXPIRED or INACTIVE");
    }
    for points in ["loyaltyPoints", "secondaryLoyaltyPoints"] {
        if let Some(balance) = v[points].get("balance") {
            let keys: Vec<&String> = balance
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            let one_of =
                keys.len() == 1 && ["string", "int", "double", "money"].contains(&keys[0].as_str());
            if !one_of || (keys[0] == "int" && !balance["int"].is_i64()) {
                return bad(&format!(
                    "{points}.balance must have exactly one of string, int, double, money"
                ));
            }
        }
    }
    const TYPES: &[&str] = &[
        "AZTEC",
        "CODE_39",
        "CODE_128",
        "CODABAR",
        "DATA_MATRIX",
        "EAN_8",
        "EAN_13",
        "ITF_14",
        "PDF_417",
        "QR_CODE",
        "UPC_A",
        "TEXT_ONLY",
    ];
    if let Some(t) = v["barcode"].get("type")
        && !t.as_str().is_some_and(|t| TYPES.contains(&t))
    {
        return bad("barcode.type is not a barcode type");
    }
    if v["messages"].as_array().is_some_and(|m| m.len() > 10) {
        return bad("at most 10 messages");
    }
    if v["textModulesData"].as_array().is_some_and(|m| {
        m.iter()
            .any(|t| t["id"].as_str().is_some_and(|i| i.contains('.')))
    }) {
        return bad("textModulesData ids may not contain dots");
    }
    Ok(())
}

fn store_of<'a>(r: &'a mut Recorded, kind: &str) -> &'a mut HashMap<String, Value> {
    if kind == "loyaltyClass" {
        &mut r.classes
    } else {
        &mut r.objects
    }
}

/// Counts a notifying update or message; the fourth within the window is refused, as Google
/// does (one budget for both).
fn spend_notice(r: &mut Recorded, kind: &str, id: &str, body: &Value) -> Result<(), Refuse> {
    let notifying = body["notifyPreference"] == "NOTIFY_ON_UPDATE"
        || body["message"]["messageType"] == "TEXT_AND_NOTIFY";
    if kind == "loyaltyObject" && notifying {
        let n = r.notifications.entry(id.to_string()).or_default();
        if *n >= 3 {
            return Err(error(
                StatusCode::TOO_MANY_REQUESTS,
                "quotaExceeded",
                "QuotaExceededException: notification quota exceeded for this object",
            ));
        }
        *n += 1;
    }
    Ok(())
}

/// Stored without `notifyPreference` (Google does not keep it) and, for classes, with
/// `UNDER_REVIEW` approved at once.
fn stored(kind: &str, mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.remove("notifyPreference");
        if kind == "loyaltyClass" && o.get("reviewStatus").is_some_and(|s| s == "UNDER_REVIEW") {
            o.insert("reviewStatus".into(), "APPROVED".into());
        }
    }
    v
}

async fn insert(
    State(s): State<Arc<Shared>>,
    Path(kind): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = admit(&s, &headers, "POST", &kind, None, Some(&body)) {
        return r.into_response();
    }
    let mut r = s.recorded.lock().expect("stand-in lock");
    if let Err(e) = check(&s, &kind, &body, &r) {
        return e.into_response();
    }
    let id = body["id"].as_str().unwrap_or_default().to_string();
    if store_of(&mut r, &kind).contains_key(&id) {
        return error(
            StatusCode::CONFLICT,
            "duplicate",
            &format!("Resource {id} already exists."),
        )
        .into_response();
    }
    let v = stored(&kind, body);
    store_of(&mut r, &kind).insert(id, v.clone());
    Json(v).into_response()
}

async fn fetch(
    State(s): State<Arc<Shared>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&s, &headers, "GET", &kind, Some(&id), None) {
        return r.into_response();
    }
    let mut r = s.recorded.lock().expect("stand-in lock");
    match store_of(&mut r, &kind).get(&id) {
        Some(v) => Json(v.clone()).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "resourceNotFound",
            &format!("{id} not found."),
        )
        .into_response(),
    }
}

async fn replace(
    State(s): State<Arc<Shared>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    write(s, "PUT", kind, id, headers, body, false).await
}

async fn merge(
    State(s): State<Arc<Shared>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    write(s, "PATCH", kind, id, headers, body, true).await
}

fn deep_merge(into: &mut Value, from: &Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                deep_merge(a.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

async fn write(
    s: Arc<Shared>,
    method: &str,
    kind: String,
    id: String,
    headers: HeaderMap,
    body: Value,
    patch: bool,
) -> Response {
    if let Err(r) = admit(&s, &headers, method, &kind, Some(&id), Some(&body)) {
        return r.into_response();
    }
    let mut r = s.recorded.lock().expect("stand-in lock");
    if body.get("id").is_some_and(|b| b != id.as_str()) {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidResource",
            "the body id differs from the path",
        )
        .into_response();
    }
    let Some(current) = store_of(&mut r, &kind).get(&id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "resourceNotFound",
            &format!("{id} not found."),
        )
        .into_response();
    };
    let next = if patch {
        let mut merged = current;
        deep_merge(&mut merged, &body);
        merged
    } else {
        body.clone()
    };
    if let Err(e) = check(&s, &kind, &next, &r) {
        return e.into_response();
    }
    if let Err(e) = spend_notice(&mut r, &kind, &id, &body) {
        return e.into_response();
    }
    let v = stored(&kind, next);
    store_of(&mut r, &kind).insert(id, v.clone());
    Json(v).into_response()
}

/// `addMessage`: appends to `messages` (at most 10) and counts a `TEXT_AND_NOTIFY` against the
/// object's notification quota.
async fn add_message(
    State(s): State<Arc<Shared>>,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    if let Err(r) = admit(
        &s,
        &headers,
        "POST",
        &kind,
        Some(&format!("{id}/addMessage")),
        Some(&body),
    ) {
        return r.into_response();
    }
    let mut r = s.recorded.lock().expect("stand-in lock");
    if r.refuse_messages {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "Message refused (injected by the stand-in)",
        )
        .into_response();
    }
    let message = body["message"].clone();
    if message["header"].as_str().is_none() || message["body"].as_str().is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "message.header and message.body are required",
        )
        .into_response();
    }
    let Some(current) = store_of(&mut r, &kind).get(&id).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            "resourceNotFound",
            &format!("{id} not found."),
        )
        .into_response();
    };
    if let Err(e) = spend_notice(&mut r, &kind, &id, &body) {
        return e.into_response();
    }
    let mut next = current;
    let messages = next["messages"].as_array().cloned().unwrap_or_default();
    if messages.len() >= 10 {
        return error(
            StatusCode::BAD_REQUEST,
            "invalidArgument",
            "at most 10 messages",
        )
        .into_response();
    }
    let mut messages = messages;
    messages.push(message);
    next["messages"] = Value::Array(messages);
    store_of(&mut r, &kind).insert(id, next.clone());
    Json(json!({"resource": next})).into_response()
}
