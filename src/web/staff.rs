//! Staff sign-in for the web UI: accounts with roles, Argon2id passwords, session cookies and
//! CSRF tokens on every form.
//!
//! - The session cookie holds 256 random bits; the database keeps only its SHA-256, so a leaked
//!   database holds no usable session. It is `HttpOnly`, `SameSite=Lax`, and `Secure` whenever
//!   the public URL is https.
//! - Every form carries a CSRF token: per session once signed in; before that (the sign-in form
//!   itself) a double-submit cookie. Tokens are compared in constant time.
//! - A wrong password and an unknown e-mail answer alike, in the same time: an unknown e-mail is
//!   still checked against a dummy hash.
//! - After `server.sign_in_free_attempts` wrong passwords for an account, or from a client
//!   address, each further attempt must wait (429 with `Retry-After`), the wait doubling up to
//!   `server.sign_in_max_delay_seconds`; no hash is computed meanwhile. Argon2 (19 MiB) runs on
//!   at most one thread per core at a time.

use std::sync::OnceLock;

use argon2::Argon2;
use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::now_ms;
use crate::enrollment::ClientAddr;
use crate::secret::{constant_time_eq, random_token, token_hash};
use crate::storage::{Role, StaffSession, StaffUser, StorageError, Store};

pub const SESSION_COOKIE: &str = "tessera_session";
pub const CSRF_COOKIE: &str = "tessera_csrf";
const SESSION_MS: i64 = 12 * 3600 * 1000;
/// Shortest password `tessera user create` accepts.
pub const MIN_PASSWORD: usize = 12;
/// Longest password and e-mail the sign-in form takes (Argon2 hashes whatever it is given).
pub const MAX_PASSWORD: usize = 1024;
pub const MAX_EMAIL: usize = 254;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/login", get(login_page).post(login))
        .route("/staff/logout", post(logout))
}

#[derive(Debug, thiserror::Error)]
pub enum StaffError {
    #[error("a password must have at least {MIN_PASSWORD} characters")]
    WeakPassword,
    #[error("staff roles are admin, marketer and cashier; integration is for API keys")]
    Role,
    #[error("the e-mail address must contain @ and have at most 254 characters")]
    Email,
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Hashes a password with Argon2id (the crate's defaults: 19 MiB, 2 passes, a random salt), as a
/// PHC string.
pub fn hash_password(password: &str) -> Result<String, StaffError> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| StaffError::Hash(e.to_string()))
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Checked against when the e-mail is unknown, so both failures cost the same.
fn dummy_hash() -> &'static str {
    static DUMMY: OnceLock<String> = OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_token(16)).expect("hashing a dummy password"))
}

/// Creates a staff account (`tessera user create`).
pub async fn create_user(
    store: &Store,
    email: &str,
    role: Role,
    password: &str,
) -> Result<StaffUser, StaffError> {
    if role == Role::Integration {
        return Err(StaffError::Role);
    }
    if !email.contains('@') || email.trim().len() > 254 {
        return Err(StaffError::Email);
    }
    if password.chars().count() < MIN_PASSWORD {
        return Err(StaffError::WeakPassword);
    }
    let password = password.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| StaffError::Hash(e.to_string()))??;
    Ok(store
        .insert_staff_user(email, role, &hash, now_ms())
        .await?)
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

pub(crate) fn set_cookie(
    state: &AppState,
    name: &str,
    value: &str,
    max_age_secs: i64,
) -> HeaderValue {
    let secure = if state.config.public_base().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .expect("cookie values are base32")
}

fn see_other(to: &'static str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to)]).into_response()
}

/// A signed-in staff member; pages that take it send everyone else to the sign-in form.
pub struct Staff {
    pub session: StaffSession,
    token_hash: String,
}

impl Staff {
    /// Refuses a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, token: &str) -> Result<(), Refusal> {
        if constant_time_eq(token.as_bytes(), self.session.csrf_token.as_bytes()) {
            Ok(())
        } else {
            Err(Refusal::Csrf)
        }
    }

    /// Refuses staff whose role is not among `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), Refusal> {
        if roles.contains(&self.session.user.role) {
            Ok(())
        } else {
            Err(Refusal::Role)
        }
    }
}

/// Why a signed-in request was refused (403).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The form's CSRF token is missing or not the session's.
    Csrf,
    /// The staff member's role may not do this.
    Role,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let text = match self {
            Refusal::Csrf => {
                "this form expired or did not come from this site; reload the page and try again\n"
            }
            Refusal::Role => "your role may not open this page\n",
        };
        (StatusCode::FORBIDDEN, text).into_response()
    }
}

fn forbidden() -> Response {
    Refusal::Csrf.into_response()
}

impl FromRequestParts<AppState> for Staff {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Staff, Response> {
        let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(see_other("/staff/login"));
        };
        let hash = token_hash(token);
        match state.store.staff_session(&hash, now_ms()).await {
            Ok(Some(session)) => {
                crate::web::audit::note_actor(parts, audit_actor(&session.user));
                Ok(Staff {
                    session,
                    token_hash: hash,
                })
            }
            Ok(None) => Err(see_other("/staff/login")),
            Err(e) => {
                tracing::error!(error = %e, "reading a staff session failed");
                Err(StatusCode::INTERNAL_SERVER_ERROR.into_response())
            }
        }
    }
}

/// A staff account as the audit log names it.
fn audit_actor(user: &crate::storage::StaffUser) -> crate::web::audit::AuditActor {
    crate::web::audit::AuditActor {
        kind: "staff",
        id: user.id.clone(),
        label: user.email.clone(),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/staff_login.html")]
struct LoginPage {
    csrf: String,
    email: String,
    error: Option<&'static str>,
}

/// The sign-in form, with a fresh double-submit CSRF token.
async fn login_page(State(state): State<AppState>) -> Response {
    let csrf = random_token(32);
    let mut r = LoginPage {
        csrf: csrf.clone(),
        email: String::new(),
        error: None,
    }
    .into_response();
    r.headers_mut()
        .insert(SET_COOKIE, set_cookie(&state, CSRF_COOKIE, &csrf, 3600));
    r
}

#[derive(Deserialize)]
struct LoginForm {
    email: String,
    password: String,
    csrf: String,
}

async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    audit: crate::web::audit::Audit,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let Some(expected) = cookie(&headers, CSRF_COOKIE) else {
        return forbidden();
    };
    if !constant_time_eq(expected.as_bytes(), f.csrf.as_bytes()) {
        return forbidden();
    }
    let email = f.email.trim().to_ascii_lowercase();
    let too_long = if email.chars().count() > MAX_EMAIL {
        Some(format!("email must have at most {MAX_EMAIL} characters"))
    } else if f.password.chars().count() > MAX_PASSWORD {
        Some(format!(
            "password must have at most {MAX_PASSWORD} characters"
        ))
    } else {
        None
    };
    if let Some(message) = too_long {
        return (StatusCode::BAD_REQUEST, format!("{message}\n")).into_response();
    }
    let user = match state.store.staff_user_by_email(&f.email).await {
        Ok(u) => u,
        Err(e) => {
            tracing::error!(error = %e, "staff sign-in: reading the account failed");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    // The account is keyed by its id once found, so spellings the lookup folds together
    // (case, Unicode look-alikes) share one count; an unknown address by what was typed.
    let account = match &user {
        Some(u) => format!("account:{}", u.id),
        None => format!("account:{email}"),
    };
    let keys = [account, format!("address:{addr}")];
    let keys = [keys[0].as_str(), keys[1].as_str()];
    let attempt = match state.sign_in_backoff.attempt(&keys).await {
        Ok(attempt) => attempt,
        Err(wait) => {
            tracing::info!(client = %addr, "staff sign-in throttled");
            return crate::enrollment::too_many(
                wait,
                "too many wrong passwords for this account or from your network; wait and try again",
            );
        }
    };
    let hash = user
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| dummy_hash().to_string());
    let password = f.password;
    let ok = {
        // One Argon2 hash per core at a time; the rest queue here.
        let _slot = state.argon_slots.acquire().await;
        tokio::task::spawn_blocking(move || verify_password(&hash, &password))
            .await
            .unwrap_or(false)
    };
    // The audit records sign-ins, refused ones too, to accounts that exist (what a stranger
    // types for an unknown account is not kept).
    if let Some(u) = &user {
        audit.actor(audit_actor(u));
    }
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(client = %addr, "staff sign-in refused");
        let mut r = (
            StatusCode::UNAUTHORIZED,
            LoginPage {
                csrf: f.csrf.clone(),
                email: f.email,
                error: Some("Wrong e-mail or password."),
            },
        )
            .into_response();
        r.headers_mut()
            .insert(SET_COOKIE, set_cookie(&state, CSRF_COOKIE, &f.csrf, 3600));
        return r;
    };
    state
        .sign_in_backoff
        .succeed(&attempt, &keys[..1], &keys[1..])
        .await;
    let token = random_token(32);
    let now = now_ms();
    if let Err(e) = state
        .store
        .insert_staff_session(
            &token_hash(&token),
            &user.id,
            &random_token(32),
            now,
            now + SESSION_MS,
        )
        .await
    {
        tracing::error!(error = %e, "staff sign-in: storing the session failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    tracing::info!(user = %user.id, role = user.role.as_str(), "staff signed in");
    let mut r = see_other("/staff");
    r.headers_mut().append(
        SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, SESSION_MS / 1000),
    );
    r.headers_mut()
        .append(SET_COOKIE, set_cookie(&state, CSRF_COOKIE, "", 0));
    r
}

/// Webhook endpoints disabled for failing, for an admin's home page: description and host,
/// never the whole URL (it may carry the receiver's token). Empty for other roles.
pub async fn disabled_webhooks(state: &AppState, staff: &Staff) -> Vec<String> {
    if staff.session.user.role != Role::Admin {
        return Vec::new();
    }
    match state.store.list_webhooks().await {
        Ok(hooks) => hooks
            .into_iter()
            .filter(|w| w.disabled_at.is_some())
            .map(|w| {
                let host = reqwest::Url::parse(&w.url)
                    .ok()
                    .and_then(|u| u.host_str().map(String::from))
                    .unwrap_or_default();
                format!("{} ({host}, id {})", w.description, w.id)
            })
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "listing webhooks for the staff page failed");
            Vec::new()
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(state): State<AppState>, staff: Staff, Form(f): Form<CsrfForm>) -> Response {
    if let Err(r) = staff.check_csrf(&f.csrf) {
        return r.into_response();
    }
    if let Err(e) = state.store.delete_staff_session(&staff.token_hash).await {
        tracing::error!(error = %e, "staff sign-out failed");
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    let mut r = see_other("/staff/login");
    r.headers_mut()
        .insert(SET_COOKIE, set_cookie(&state, SESSION_COOKIE, "", 0));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_verify_only_against_their_hash() {
        let hash = super::hash_password("correct horse battery").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(super::verify_password(&hash, "correct horse battery"));
        assert!(!super::verify_password(&hash, "correct horse battery "));
        assert!(!super::verify_password("not a hash", "x"));
    }
}
