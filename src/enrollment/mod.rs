//! How cards reach people: the public join page per program (`/join/<slug>`), its QR codes for
//! posters, and the personal card page (`/card/<signed token>`) that offers Apple Wallet, Google
//! Wallet, or both and a QR code to continue on the phone.
//!
//! The join form asks for what the program configures, records consent exactly as shown, and
//! credits the welcome bonus once. A join whose e-mail or phone matches a member makes no
//! duplicate and never hands over that member's card: the card link is e-mailed to the
//! member's stored address (`crate::email`), and the visitor gets the same page whatever
//! matched. Submissions are throttled per client address.
//!
//! With e-mail configured, a join that gives an address is confirmed first (double opt-in):
//! the visitor always sees "check your e-mail", whether or not the address is a member's, and
//! nothing is made until the link sent to that address is opened (`/join/<slug>/confirm/…`).
//! So the page tells a stranger nothing, and nobody can take a card in someone else's name.

use std::net::SocketAddr;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Path, Query, State};
use axum::http::header::{
    ACCEPT_LANGUAGE, CACHE_CONTROL, CONTENT_TYPE, LOCATION, RETRY_AFTER, SET_COOKIE, USER_AGENT,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::enrollment::{Ask, EnrollmentSettings, JoinInput};
use crate::domain::{Invalid, Member, Program, barcode, now_ms};
use crate::email::{CardLink, Lang};
use crate::ledger::{Operation, Origin};
use crate::secret::{constant_time_eq, random_token};
use crate::storage::{ConsentRecord, JoinMatch, PendingJoin, StorageError};
use crate::web::staff::{cookie, set_cookie};

pub mod account;
pub mod import;
pub mod links;

const JOIN_CSRF_COOKIE: &str = "tessera_join";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/join/{slug}", get(join_page).post(join))
        .route(
            "/join/{slug}/confirm/{token}",
            get(confirm_page).post(confirm),
        )
        .route("/join/{slug}/qr.svg", get(qr_svg))
        .route("/join/{slug}/qr.png", get(qr_png))
        .route("/join/{slug}/logo.png", get(logo))
        .route("/card/{token}", get(card_page))
        .route(
            "/me/{token}",
            get(account::account_page).post(account::account_action),
        )
}

/// The client's address, for throttles: behind a trusted proxy the one it forwarded
/// (`proxy::client_ip`), else the peer's, IPv6 by its /64 (`proxy::throttle_key`); `unknown`
/// when the server runs without connect info.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        if let Some(crate::proxy::ClientIp(ip)) = parts.extensions.get() {
            return Ok(ClientAddr(crate::proxy::throttle_key(*ip)));
        }
        Ok(ClientAddr(
            parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map_or_else(
                    || "unknown".into(),
                    |c| crate::proxy::throttle_key(c.0.ip()),
                ),
        ))
    }
}

/// 429 with `Retry-After`, for a throttled request.
pub fn too_many(wait: std::time::Duration, text: &str) -> Response {
    let secs = wait.as_secs().max(1).to_string();
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(RETRY_AFTER, secs)],
        format!("{text}\n"),
    )
        .into_response()
}

fn page_error(e: StorageError) -> Response {
    match e {
        StorageError::NotFound(_) => (StatusCode::NOT_FOUND, "no such program\n").into_response(),
        e => {
            tracing::error!(error = %e, "a join page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong; please try again\n",
            )
                .into_response()
        }
    }
}

/// A program whose join page is open: it exists, has a published template and a privacy
/// policy to link the consent boxes to.
struct Open {
    program: Program,
    settings: EnrollmentSettings,
    template: crate::domain::Template,
    policy_url: String,
}

async fn open_program(state: &AppState, slug: &str) -> Result<Open, Response> {
    let closed = |why: &str| (StatusCode::NOT_FOUND, format!("{why}\n")).into_response();
    let program = match state.store.find_program_by_slug(slug).await {
        Ok(Some(p)) => p,
        Ok(None) => return Err(closed("no such program")),
        Err(e) => return Err(page_error(e)),
    };
    let settings = state
        .store
        .program_enrollment(&program.id)
        .await
        .map_err(page_error)?;
    let template = match state.store.latest_template(&program.id).await {
        Ok(Some(t)) => t,
        Ok(None) => return Err(closed("this program has no published card yet")),
        Err(e) => return Err(page_error(e)),
    };
    let Some(policy_url) = settings.privacy_policy_url.clone() else {
        return Err(closed(
            "joining is not open yet: the program has no privacy policy to agree to",
        ));
    };
    Ok(Open {
        program,
        settings,
        template,
        policy_url,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/join.html")]
struct JoinPage {
    slug: String,
    program_name: String,
    background: String,
    foreground: String,
    csrf: String,
    settings: EnrollmentSettings,
    policy_url: String,
    input: JoinInput,
    errors: Vec<(String, String)>,
}

impl JoinPage {
    fn shows(&self, ask: &Ask) -> bool {
        *ask != Ask::Absent
    }
    fn required(&self, ask: &Ask) -> bool {
        *ask == Ask::Required
    }
    fn error(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }
}

fn join_page_for(
    open: &Open,
    csrf: String,
    input: JoinInput,
    errors: Vec<(String, String)>,
) -> JoinPage {
    let colors = &open.template.design.colors;
    JoinPage {
        slug: open.program.slug.clone(),
        program_name: open.program.name.clone(),
        background: colors.background.clone(),
        foreground: colors.foreground.clone(),
        csrf,
        settings: open.settings.clone(),
        policy_url: open.policy_url.clone(),
        input,
        errors,
    }
}

async fn join_page(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    let open = match open_program(&state, &slug).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    state.join_views.count(&open.program.id);
    let csrf = random_token(32);
    let mut r =
        join_page_for(&open, csrf.clone(), JoinInput::default(), Vec::new()).into_response();
    r.headers_mut().insert(
        SET_COOKIE,
        set_cookie(&state, JOIN_CSRF_COOKIE, &csrf, 3600),
    );
    r
}

#[derive(Deserialize)]
struct JoinForm {
    csrf: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    phone: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    birthday: String,
    data_consent: Option<String>,
    marketing_consent: Option<String>,
}

async fn join(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
    Form(f): Form<JoinForm>,
) -> Response {
    if let Err(wait) = state.join_throttle.check(&addr).await {
        tracing::info!(client = %addr, "join form throttled");
        return too_many(
            wait,
            "too many attempts from your network; please wait a minute and try again",
        );
    }
    let open = match open_program(&state, &slug).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if !cookie(&headers, JOIN_CSRF_COOKIE)
        .is_some_and(|c| constant_time_eq(c.as_bytes(), f.csrf.as_bytes()))
    {
        return (
            StatusCode::FORBIDDEN,
            "this form expired or did not come from this site; reload the page and try again\n",
        )
            .into_response();
    }
    let input = JoinInput {
        name: f.name,
        phone: f.phone,
        email: f.email,
        birthday: f.birthday,
        data_consent: f.data_consent.is_some(),
        marketing_consent: f.marketing_consent.is_some(),
    };
    let today = time::OffsetDateTime::now_utc().date();
    let checked = match input.check(&open.settings, today) {
        Ok(j) => j,
        Err(Invalid { problems }) => {
            let errors = problems.into_iter().map(|p| (p.field, p.message)).collect();
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                join_page_for(&open, f.csrf, input, errors),
            )
                .into_response();
        }
    };
    let lang = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::from_accept_language);
    let consents = consents_shown(&open, &checked, now_ms());
    if let (Some(mailer), Some(email)) = (state.mailer.clone(), checked.email.clone()) {
        // Double opt-in: the same answer whatever the address is, decided and sent off the
        // answer's path so it also takes as long.
        confirm_by_email(&state, &open.program, mailer, checked, consents, lang);
        return JoinCheckPage {
            program_name: open.program.name.clone(),
            background: open.template.design.colors.background.clone(),
            foreground: open.template.design.colors.foreground.clone(),
            email,
            valid_hours: CONFIRM_HOURS,
        }
        .into_response();
    }
    // Where e-mails are confirmed, a join without one (a phone only) cannot be: it is always a
    // new card, and an unconfirmed phone never finds, nor takes the place of, a member.
    let how = if state.mailer.is_some() {
        JoinMatch::Unverified
    } else {
        JoinMatch::Contacts
    };
    joined(&state, &open, &checked, &consents, lang, how).await
}

/// Answers a join the visitor may see the outcome of: a new member goes to their card; a
/// returning one is e-mailed their card link at their stored address and sees a page that says
/// so, whatever matched.
async fn joined(
    state: &AppState,
    open: &Open,
    join: &crate::domain::enrollment::Join,
    consents: &[ConsentRecord],
    lang: Lang,
    how: JoinMatch<'_>,
) -> Response {
    match join_member(state, open, join, consents, how).await {
        Ok((member, true)) => {
            // A new member: their first card. `?welcome` greets them and names the welcome
            // bonus on the card page.
            let (url, _) = state.install_url(&member.id, 0);
            redirect_to(state, &format!("{url}?welcome=1"))
        }
        Ok((member, false)) => {
            // Typing someone's e-mail or phone proves nothing: the card link goes to the
            // address the member registered with, and the visitor sees the same page whatever
            // matched and whether the member has an address at all.
            send_card_link(state, &open.program, member, lang);
            sent_page(state, open)
        }
        Err(e) => page_error(e),
    }
}

fn sent_page(state: &AppState, open: &Open) -> Response {
    JoinSentPage {
        program_name: open.program.name.clone(),
        background: open.template.design.colors.background.clone(),
        foreground: open.template.design.colors.foreground.clone(),
        emailed: state.mailer.is_some(),
    }
    .into_response()
}

/// 303 to `url`, made relative to the public base.
fn redirect_to(state: &AppState, url: &str) -> Response {
    let path = url
        .strip_prefix(state.config.public_base())
        .unwrap_or(url)
        .to_string();
    (StatusCode::SEE_OTHER, [(LOCATION, path)]).into_response()
}

/// How long the link confirming a join works.
const CONFIRM_HOURS: u32 = 24;

/// A join waiting for its address to be confirmed, as kept (sealed) in `pending_joins`.
#[derive(serde::Serialize, serde::Deserialize)]
struct PendingForm {
    join: crate::domain::enrollment::Join,
    /// The consents as shown and answered on the form, recorded if the join is confirmed.
    consents: Vec<ConsentRecord>,
    fr: bool,
}

/// Sends the visitor's address either a link confirming the join (a new address) or, when the
/// e-mail or phone matches a member, that member their card link at their own stored address.
/// Runs in the background; per address, confirmations share the card-link budget per hour.
fn confirm_by_email(
    state: &AppState,
    program: &Program,
    mailer: std::sync::Arc<crate::email::Mailer>,
    join: crate::domain::enrollment::Join,
    consents: Vec<ConsentRecord>,
    lang: Lang,
) {
    let state = state.clone();
    let program = program.clone();
    tokio::spawn(async move {
        let Some(to) = join.email.clone() else { return };
        // Matched on the typed address only: the one mail goes to that address either way, so
        // the submitter's inbox tells them nothing about anyone else (a phone proves nothing).
        let by_email = crate::domain::enrollment::Join {
            phone: None,
            ..join.clone()
        };
        match state.store.member_matching(&program.id, &by_email).await {
            Ok(Some(member_id)) => {
                match state.store.get_member(&member_id).await {
                    Ok(member) => send_card_link(&state, &program, member, lang),
                    Err(e) => tracing::error!(error = %e, "loading a returning member failed"),
                }
                return;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "matching a join failed");
                return;
            }
        }
        match state.store.email_key(&to) {
            Ok(key)
                if state
                    .card_link_throttle
                    .check(&format!("join:{key}"))
                    .await
                    .is_ok() => {}
            Ok(_) => {
                tracing::info!(program = %program.id, "join confirmation e-mail throttled");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "naming an address for the throttle failed");
                return;
            }
        }
        let token = random_token(32);
        let now = now_ms();
        let pending = PendingForm {
            join,
            consents,
            fr: lang == Lang::Fr,
        };
        let payload = serde_json::to_string(&pending).expect("a pending join serialises");
        if let Err(e) = state
            .store
            .add_pending_join(
                &crate::secret::token_hash(&token),
                &program.id,
                &payload,
                now,
                now + i64::from(CONFIRM_HOURS) * 3_600_000,
            )
            .await
        {
            tracing::error!(error = %e, "keeping a join for confirmation failed");
            return;
        }
        let mail = crate::email::JoinConfirm {
            program_name: program.name.clone(),
            link: format!(
                "{}/join/{}/confirm/{token}",
                state.config.public_base(),
                program.slug
            ),
            valid_hours: CONFIRM_HOURS,
        };
        match mailer.send_join_confirm(&to, &mail, lang).await {
            Ok(()) => tracing::info!(program = %program.id, "join confirmation e-mailed"),
            Err(e) => {
                tracing::warn!(program = %program.id, error = %e, "sending a join confirmation failed")
            }
        }
    });
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/join_check.html")]
struct JoinCheckPage {
    program_name: String,
    background: String,
    foreground: String,
    /// The address the visitor typed, shown back to them.
    email: String,
    valid_hours: u32,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/join_confirm.html")]
struct JoinConfirmPage {
    program_name: String,
    background: String,
    foreground: String,
    /// The form posts back to the link itself: opening the link (or a mail scanner fetching it)
    /// changes nothing; the button makes the card.
    action: String,
    /// What was typed with this address, shown to its owner before they confirm; `None` once
    /// the link was used (its form is gone): the button then has the card link e-mailed.
    details: Option<(String, String, Option<String>)>,
}

/// What a confirmation link holds now.
enum Link {
    Open(PendingForm),
    /// Used by this member.
    Used(String),
}

/// The link's join, if it is one of this program's and has not expired.
async fn pending_for(state: &AppState, open: &Open, token: &str) -> Result<Link, Response> {
    let expired = || {
        (
            StatusCode::NOT_FOUND,
            [(CACHE_CONTROL, "no-store")],
            "this link has expired or is not one of ours; please join again\n",
        )
            .into_response()
    };
    let found = state
        .store
        .pending_join(&crate::secret::token_hash(token), now_ms())
        .await
        .map_err(page_error)?;
    match found {
        Some(PendingJoin::Open {
            program_id,
            payload,
        }) if program_id == open.program.id => {
            serde_json::from_str(&payload).map(Link::Open).map_err(|e| {
                tracing::error!(error = %e, "a pending join does not read back");
                expired()
            })
        }
        Some(PendingJoin::Used {
            program_id,
            member_id,
        }) if program_id == open.program.id => Ok(Link::Used(member_id)),
        _ => Err(expired()),
    }
}

async fn confirm_page(
    State(state): State<AppState>,
    Path((slug, token)): Path<(String, String)>,
) -> Response {
    let open = match open_program(&state, &slug).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let details = match pending_for(&state, &open, &token).await {
        Ok(Link::Open(p)) => Some((p.join.name, p.join.email.unwrap_or_default(), p.join.phone)),
        Ok(Link::Used(_)) => None,
        Err(r) => return r,
    };
    let mut r = JoinConfirmPage {
        program_name: open.program.name.clone(),
        background: open.template.design.colors.background.clone(),
        foreground: open.template.design.colors.foreground.clone(),
        action: format!("/join/{}/confirm/{token}", open.program.slug),
        details,
    }
    .into_response();
    let headers = r.headers_mut();
    headers.insert(CACHE_CONTROL, "no-store".parse().expect("a header value"));
    headers.insert(
        axum::http::header::REFERRER_POLICY,
        "no-referrer".parse().expect("a header value"),
    );
    r
}

/// Confirms a join from its e-mailed link, once: the address is the visitor's, so a new member
/// gets their card, and so does the member registered with that very address (the only one it
/// can match). A used link (a second click, a forwarded mail) hands over nothing: it has the
/// card link e-mailed to the member's own address again.
async fn confirm(
    State(state): State<AppState>,
    Path((slug, token)): Path<(String, String)>,
    ClientAddr(addr): ClientAddr,
    headers: HeaderMap,
) -> Response {
    if let Err(wait) = state.join_throttle.check(&addr).await {
        return too_many(
            wait,
            "too many attempts from your network; please wait a minute and try again",
        );
    }
    let open = match open_program(&state, &slug).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    let lang = headers
        .get(ACCEPT_LANGUAGE)
        .and_then(|v| v.to_str().ok())
        .map_or(Lang::En, Lang::from_accept_language);
    let form = match pending_for(&state, &open, &token).await {
        Ok(Link::Open(p)) => p,
        Ok(Link::Used(member_id)) => return resend(&state, &open, &member_id, lang).await,
        Err(r) => return r,
    };
    let lang = if form.fr { Lang::Fr } else { Lang::En };
    let how = JoinMatch::ConfirmedEmail {
        token_hash: &crate::secret::token_hash(&token),
    };
    let (member, created) = match join_member(&state, &open, &form.join, &form.consents, how).await
    {
        Ok(j) => j,
        // Another click used the link first.
        Err(StorageError::Conflict(_)) => {
            return match pending_for(&state, &open, &token).await {
                Ok(Link::Used(member_id)) => resend(&state, &open, &member_id, lang).await,
                Ok(Link::Open(_)) | Err(_) => {
                    page_error(StorageError::Conflict("this link was already used".into()))
                }
            };
        }
        Err(e) => return page_error(e),
    };
    let generation = if created {
        0
    } else {
        match state
            .store
            .card_generations(std::slice::from_ref(&member.id))
            .await
        {
            Ok(g) => g.get(&member.id).copied().unwrap_or(0),
            Err(e) => return page_error(e),
        }
    };
    let (url, _) = state.install_url(&member.id, generation);
    if created {
        redirect_to(&state, &format!("{url}?welcome=1"))
    } else {
        redirect_to(&state, &url)
    }
}

/// A used link: the member's card link goes to their own stored address (within its hourly
/// budget), and the page says so.
async fn resend(state: &AppState, open: &Open, member_id: &str, lang: Lang) -> Response {
    match state.store.get_member(member_id).await {
        Ok(member) => {
            send_card_link(state, &open.program, member, lang);
            sent_page(state, open)
        }
        Err(e) => page_error(e),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/join_sent.html")]
struct JoinSentPage {
    program_name: String,
    background: String,
    foreground: String,
    /// E-mail is configured: a member with an address has been sent their link.
    emailed: bool,
}

/// Sends `member` their card link at their stored address, in the background so the answer
/// takes as long whether or not anything is sent. Nothing is sent without e-mail configured or
/// to a member without an address.
fn send_card_link(state: &AppState, program: &Program, member: Member, lang: Lang) {
    let Some(mailer) = state.mailer.clone() else {
        return;
    };
    let state = state.clone();
    let program_name = program.name.clone();
    tokio::spawn(async move {
        // Counted per member (across instances on PostgreSQL), so repeated joins cannot fill
        // a member's inbox; decided off the answer's path, which takes as long either way.
        if state.card_link_throttle.check(&member.id).await.is_err() {
            tracing::info!(member = %member.id, "card link e-mail throttled");
            return;
        }
        let to = match state.store.member_contact(&member.id).await {
            Ok((Some(email), _, _)) => email,
            Ok(_) => {
                tracing::info!(member = %member.id, "returning member has no e-mail address; nothing sent");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "loading a member's contact failed");
                return;
            }
        };
        let generation = match state
            .store
            .card_generations(std::slice::from_ref(&member.id))
            .await
        {
            Ok(g) => g.get(&member.id).copied().unwrap_or(0),
            Err(e) => {
                tracing::error!(error = %e, "reading a member's card failed");
                return;
            }
        };
        let (link, _) = state.install_url(&member.id, generation);
        let mail = CardLink {
            program_name,
            member_name: member.display_name,
            link,
            valid_days: state.config.enrollment.install_link_days.max(1),
        };
        match mailer.send_card_link(&to, &mail, lang).await {
            Ok(()) => {
                tracing::info!(member = %member.id, "card link e-mailed to a returning member")
            }
            Err(e) => tracing::warn!(member = %member.id, error = %e, "sending a card link failed"),
        }
    });
}

/// The consents a join form showed, as answered: data processing (required to join) and, when
/// the program asks, marketing.
fn consents_shown(
    open: &Open,
    join: &crate::domain::enrollment::Join,
    now: i64,
) -> Vec<ConsentRecord> {
    let s = &open.settings;
    let mut consents = vec![ConsentRecord {
        kind: "data".into(),
        granted: true,
        policy_version: s.policy_version.clone(),
        policy_url: Some(open.policy_url.clone()),
        text_shown: s.data_consent_text.clone(),
        source: "join".into(),
        recorded_at: now,
    }];
    if let Some(text) = &s.marketing_consent_text {
        consents.push(ConsentRecord {
            kind: "marketing".into(),
            granted: join.marketing_consent,
            policy_version: s.policy_version.clone(),
            policy_url: Some(open.policy_url.clone()),
            text_shown: text.clone(),
            source: "join".into(),
            recorded_at: now,
        });
    }
    consents
}

/// Records the join: a new member with the consents as shown and the welcome bonus (credited
/// once), or finds the member it matches (`how`), changing nothing of theirs.
async fn join_member(
    state: &AppState,
    open: &Open,
    join: &crate::domain::enrollment::Join,
    consents: &[ConsentRecord],
    how: JoinMatch<'_>,
) -> Result<(Member, bool), StorageError> {
    let s = &open.settings;
    let welcome = Operation::EarnPoints {
        points: s.welcome_bonus,
    };
    let origin = Origin {
        channel: Some("join".into()),
        ..Origin::default()
    };
    let (member, _, created) = state
        .store
        .join_member(
            &open.program,
            &open.template,
            join,
            consents,
            (s.welcome_bonus > 0).then_some((&welcome, &origin)),
            how,
        )
        .await?;
    tracing::info!(member = %member.id, created, "joined");
    Ok((member, created))
}

/// Which buttons the card page leads with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Apple,
    Android,
    Desktop,
}

/// iPhone, iPad and Mac open `.pkpass` in Wallet; Android has Google Wallet; anything else
/// gets both and a QR code to continue on the phone.
pub fn platform(user_agent: &str) -> Platform {
    if user_agent.contains("Android") {
        Platform::Android
    } else if ["iPhone", "iPad", "iPod"]
        .iter()
        .any(|d| user_agent.contains(d))
    {
        Platform::Apple
    } else {
        Platform::Desktop
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/card.html")]
struct CardPage {
    program_name: String,
    member_name: String,
    background: String,
    foreground: String,
    label: String,
    /// The card's logo as a `data:` URI, when the template has one.
    logo: Option<String>,
    balance: i64,
    tier: Option<String>,
    /// The member's code in the template's barcode format (SVG), what the cashier scans; a QR
    /// code when that format cannot carry the code, nothing when no format can.
    barcode_svg: Option<String>,
    /// The format drawn (`qr`, `pdf417`, `aztec`, `code128`).
    barcode_format: &'static str,
    barcode_value: String,
    apple_url: Option<String>,
    /// Android without Google Wallet configured: the `.pkpass` file is offered with how to open it.
    pkpass_on_android: bool,
    google_url: Option<String>,
    qr_svg: Option<String>,
    welcome: bool,
    /// Points credited on joining, mentioned on the welcome page.
    welcome_bonus: Option<i64>,
}

#[derive(Deserialize)]
struct CardQuery {
    welcome: Option<String>,
}

/// The member's own card page, from a personal install link.
async fn card_page(
    State(state): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<CardQuery>,
    headers: HeaderMap,
) -> Response {
    let claimed = links::LinkSigner::member_of(&token)
        .unwrap_or_default()
        .to_string();
    let generation = match state
        .store
        .card_generations(std::slice::from_ref(&claimed))
        .await
    {
        Ok(g) => g.get(&claimed).copied().unwrap_or(0),
        Err(e) => return page_error(e),
    };
    // Signed for the card's generation: a link sent before a reissue does not open the new card.
    let member_id = match state
        .links
        .verify_generation(&token, now_ms() / 1000, generation)
    {
        Ok(m) => m,
        Err(e) => return (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    };
    let loaded = async {
        let member = state.store.get_member(&member_id).await?;
        let program = state.store.get_program(&member.program_id).await?;
        let pass = state.store.pass_for_member(&member.id).await?;
        let template = state.store.get_template(&pass.template_id).await?;
        Ok::<_, StorageError>((member, program, pass, template))
    };
    let (member, program, pass, template) = match loaded.await {
        Ok(x) => x,
        Err(e) => return page_error(e),
    };
    if pass.ended_at.is_some() {
        return (StatusCode::NOT_FOUND, "this card has ended\n").into_response();
    }
    let ua = headers
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let platform = platform(ua);
    let google_url = match (&state.google, platform) {
        (Some(g), Platform::Android | Platform::Desktop) => {
            match g
                .save_link(&state.store, &member.id, state.config.public_base())
                .await
            {
                Ok((_, url)) => Some(url),
                Err(e) => {
                    tracing::warn!(error = %e, "no Google Wallet link for the card page this time");
                    None
                }
            }
        }
        _ => None,
    };
    let page_url = format!("{}/card/{token}", state.config.public_base());
    let colors = &template.design.colors;
    let welcome = q.welcome.is_some();
    let extras = async {
        let images = state.store.template_images(&template.id).await?;
        let bonus = if welcome {
            state
                .store
                .program_enrollment(&program.id)
                .await?
                .welcome_bonus
        } else {
            0
        };
        Ok::<_, StorageError>((images, bonus))
    };
    let (images, bonus) = match extras.await {
        Ok(x) => x,
        Err(e) => return page_error(e),
    };
    let logo = ["logo@2x.png", "logo.png"].iter().find_map(|want| {
        images.iter().find(|(n, _)| n == want).map(|(_, bytes)| {
            format!(
                "data:image/png;base64,{}",
                data_encoding::BASE64.encode(bytes)
            )
        })
    });
    let drawn = barcode::svg_or_qr(template.design.barcode.format, &member.barcode, 240);
    if let Some(why) = drawn.as_ref().and_then(|d| d.fallback.as_ref()) {
        tracing::warn!(member = %member.id, format = template.design.barcode.format.name(), reason = %why, "the card page shows a QR code instead of the template's barcode");
    }
    // Android wallet apps open `.pkpass` files too: without Google Wallet, that is the offer.
    let pkpass_on_android = platform == Platform::Android && state.google.is_none();
    CardPage {
        tier: program
            .rules
            .tier_name(member.tier.as_deref())
            .map(str::to_string),
        program_name: program.name,
        background: colors.background.clone(),
        foreground: colors.foreground.clone(),
        label: colors.label.clone(),
        logo,
        balance: member.points,
        barcode_format: drawn.as_ref().map_or("", |d| d.format.name()),
        barcode_svg: drawn.map(|d| d.svg),
        barcode_value: member.barcode.clone(),
        member_name: member.display_name,
        apple_url: (platform != Platform::Android || pkpass_on_android)
            .then(|| state.pass_url(&pass)),
        pkpass_on_android,
        google_url,
        qr_svg: (platform == Platform::Desktop).then(|| qr_svg_of(&page_url, 240)),
        welcome,
        welcome_bonus: (bonus > 0).then_some(bonus),
    }
    .into_response()
}

/// An SVG QR code of `text`, at least `size` pixels square, with a quiet zone.
pub fn qr_svg_of(text: &str, size: u32) -> String {
    let code = qrcode::QrCode::new(text.as_bytes()).expect("a URL fits a QR code");
    code.render::<qrcode::render::svg::Color>()
        .min_dimensions(size, size)
        .build()
}

/// A PNG QR code of `text`, at least `size` pixels square.
pub fn qr_png_of(text: &str, size: u32) -> Vec<u8> {
    let code = qrcode::QrCode::new(text.as_bytes()).expect("a URL fits a QR code");
    let img = code
        .render::<image::Luma<u8>>()
        .min_dimensions(size, size)
        .build();
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageLuma8(img)
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding into memory cannot fail");
    out.into_inner()
}

fn join_url(state: &AppState, slug: &str) -> String {
    format!("{}/join/{slug}", state.config.public_base())
}

async fn known_slug(state: &AppState, slug: &str) -> Result<(), Response> {
    match state.store.find_program_by_slug(slug).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err((StatusCode::NOT_FOUND, "no such program\n").into_response()),
        Err(e) => Err(page_error(e)),
    }
}

/// The join link as an SVG QR code, for print.
async fn qr_svg(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    if let Err(r) = known_slug(&state, &slug).await {
        return r;
    }
    (
        [
            (CONTENT_TYPE, "image/svg+xml"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        qr_svg_of(&join_url(&state, &slug), 512),
    )
        .into_response()
}

#[derive(Deserialize)]
struct Size {
    size: Option<u32>,
}

/// Largest PNG QR code served: an A2 poster at 150 dpi.
const MAX_QR_PX: u32 = 4000;
/// Sizes are rounded up to a multiple of this, so one program has at most 40 distinct PNGs.
const QR_STEP_PX: u32 = 100;
/// PNGs kept; past it the cache starts over.
const QR_CACHE_ENTRIES: usize = 64;

/// Rendered join-link PNGs per (program slug, size), so a poster link opened a thousand times
/// renders once; renders run one at a time, so they cannot take every core.
#[derive(Default)]
pub struct QrCache {
    pngs: std::sync::Mutex<std::collections::HashMap<(String, u32), axum::body::Bytes>>,
    render: tokio::sync::Mutex<()>,
}

impl QrCache {
    async fn png(&self, slug: &str, url: String, size: u32) -> axum::body::Bytes {
        let key = (slug.to_string(), size);
        if let Some(png) = self.pngs.lock().expect("QR cache lock").get(&key) {
            return png.clone();
        }
        let _one = self.render.lock().await;
        if let Some(png) = self.pngs.lock().expect("QR cache lock").get(&key) {
            return png.clone();
        }
        let png: axum::body::Bytes = tokio::task::spawn_blocking(move || qr_png_of(&url, size))
            .await
            .expect("QR rendering panicked")
            .into();
        let mut pngs = self.pngs.lock().expect("QR cache lock");
        if pngs.len() >= QR_CACHE_ENTRIES {
            pngs.clear();
        }
        pngs.insert(key, png.clone());
        png
    }
}

/// The join link as a PNG QR code: `?size=` pixels (default 2000, poster size; at most 4000;
/// rounded up to a multiple of 100).
async fn qr_png(
    State(state): State<AppState>,
    Path(slug): Path<String>,
    Query(q): Query<Size>,
) -> Response {
    if let Err(r) = known_slug(&state, &slug).await {
        return r;
    }
    let size = q.size.unwrap_or(2000);
    if !(64..=MAX_QR_PX).contains(&size) {
        return (
            StatusCode::BAD_REQUEST,
            format!("size must be between 64 and {MAX_QR_PX} pixels\n"),
        )
            .into_response();
    }
    let size = size.div_ceil(QR_STEP_PX) * QR_STEP_PX;
    let png = state
        .qr_cache
        .png(&slug, join_url(&state, &slug), size)
        .await;
    (
        [
            (CONTENT_TYPE, "image/png"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        png,
    )
        .into_response()
}

/// The program's logo for its join page: the newest template's logo, else its icon.
async fn logo(State(state): State<AppState>, Path(slug): Path<String>) -> Response {
    let found = async {
        let Some(program) = state.store.find_program_by_slug(&slug).await? else {
            return Ok(None);
        };
        let Some(template) = state.store.latest_template(&program.id).await? else {
            return Ok(None);
        };
        let files = state.store.template_images(&template.id).await?;
        Ok::<_, StorageError>(
            ["logo@2x.png", "logo.png", "icon@3x.png"]
                .iter()
                .find_map(|n| files.iter().find(|(f, _)| f == n).map(|(_, b)| b.clone())),
        )
    };
    match found.await {
        Ok(Some(bytes)) => (
            [
                (CONTENT_TYPE, "image/png"),
                (CACHE_CONTROL, "public, max-age=300"),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => (StatusCode::NOT_FOUND, "no logo\n").into_response(),
        Err(e) => page_error(e),
    }
}
