//! The member list `/staff/members` (search, filters, keyset pages, CSV export) and a member's
//! page `/staff/members/{member_id}` (balance, tier, expiring points, entries in pages, devices
//! with their last push and fetch, Google sync, consents; an admin's manual adjustment).
//! Every page that shows members names them in the audit log (`web::audit::Audit`).

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, LOCATION};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::{ANALYSTS, Nav, PageError, date_text, time_text};
use crate::app::AppState;
use crate::domain::now_ms;
use crate::ledger::{Entry, Operation, Origin, PointLimits};
use crate::storage::{Actor, MemberFilter, MemberLine, QueryKind, Role, StorageError};
use crate::web::audit::Audit;
use crate::web::staff::Staff;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff/members", get(list))
        .route("/staff/members.csv", get(export))
        .route("/staff/members/{member_id}", get(member_page))
        .route("/staff/members/{member_id}/adjust", post(adjust))
}

/// Members per page of the list.
const PAGE: i64 = 50;
/// Entries per page of a member's page.
const ENTRIES: i64 = 50;
/// The most rows one CSV export holds.
pub const MAX_EXPORT: i64 = 50_000;
/// The longest reason an adjustment takes.
const MAX_REASON: usize = 500;

#[derive(Deserialize, Default, Clone)]
pub struct ListQuery {
    program: Option<String>,
    q: Option<String>,
    tier: Option<String>,
    /// `yes`, `no` or empty.
    installed: Option<String>,
    /// `apple`, `google` or empty.
    wallet: Option<String>,
    before: Option<String>,
}

impl ListQuery {
    fn filter(&self, program_id: &str) -> Result<MemberFilter, PageError> {
        let installed = match self.installed.as_deref().unwrap_or("") {
            "" => None,
            "yes" => Some(true),
            "no" => Some(false),
            _ => return Err(PageError::BadRequest("installed must be yes or no".into())),
        };
        let wallet = match self.wallet.as_deref().unwrap_or("") {
            "" => None,
            w @ ("apple" | "google") => Some(w.to_string()),
            _ => {
                return Err(PageError::BadRequest(
                    "wallet must be apple or google".into(),
                ));
            }
        };
        if self.q.as_deref().is_some_and(|q| q.chars().count() > 200) {
            return Err(PageError::BadRequest(
                "the search may have at most 200 characters".into(),
            ));
        }
        Ok(MemberFilter {
            program_id: program_id.to_string(),
            q: self.q.clone().filter(|q| !q.trim().is_empty()),
            tier: self.tier.clone().filter(|t| t != "*"),
            installed,
            wallet,
        })
    }

    /// The query string of this filter without the page cursor.
    fn link(&self, program_id: &str) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        s.append_pair("program", program_id);
        if let Some(t) = self.tier.as_deref().filter(|t| *t != "*") {
            s.append_pair("tier", t);
        }
        for (k, v) in [
            ("q", &self.q),
            ("installed", &self.installed),
            ("wallet", &self.wallet),
        ] {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                s.append_pair(k, v);
            }
        }
        s.finish()
    }
}

pub struct Line {
    pub id: String,
    pub name: String,
    pub external_id: String,
    pub points: i64,
    pub tier: String,
    pub wallets: String,
    pub joined: String,
}

fn line(m: &MemberLine, tier_name: &dyn Fn(Option<&str>) -> String) -> Line {
    let mut wallets = Vec::new();
    if m.apple_devices > 0 {
        wallets.push(format!("Apple ({})", m.apple_devices));
    }
    if m.google_saved {
        wallets.push("Google".to_string());
    }
    Line {
        id: m.id.clone(),
        name: if m.erased {
            "(erased)".into()
        } else {
            m.display_name.clone()
        },
        external_id: m.external_id.clone().unwrap_or_default(),
        points: m.points,
        tier: tier_name(m.tier.as_deref()),
        wallets: if wallets.is_empty() {
            "not installed".into()
        } else {
            wallets.join(", ")
        },
        joined: date_text(m.created_at),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/members.html")]
struct ListPage {
    email: String,
    role: &'static str,
    csrf: String,
    programs: Vec<(String, String)>,
    program_id: String,
    tiers: Vec<(String, String)>,
    q: String,
    tier: String,
    installed: String,
    wallet: String,
    lines: Vec<Line>,
    how: &'static str,
    next: Option<String>,
    export: String,
}

async fn list(
    State(state): State<AppState>,
    staff: Staff,
    audit: Audit,
    Query(q): Query<ListQuery>,
) -> Response {
    match list_page(&state, &staff, &audit, q).await {
        Ok(r) => r,
        Err(e) => e.page(&staff),
    }
}

/// The program the query names, or the first one.
async fn program_of(
    state: &AppState,
    id: Option<&str>,
) -> Result<(Vec<crate::domain::Program>, Option<crate::domain::Program>), PageError> {
    let programs = state.store.list_programs().await?;
    let chosen = match id.filter(|i| !i.is_empty()) {
        Some(id) => Some(
            programs
                .iter()
                .find(|p| p.id == id)
                .cloned()
                .ok_or(PageError::NotFound("program"))?,
        ),
        None => programs.first().cloned(),
    };
    Ok((programs, chosen))
}

fn tier_namer(program: &crate::domain::Program) -> impl Fn(Option<&str>) -> String + '_ {
    move |id: Option<&str>| match id {
        None => String::new(),
        Some(id) => program
            .rules
            .tiers
            .levels
            .iter()
            .find(|t| t.id == id)
            .map_or(id.to_string(), |t| t.name.clone()),
    }
}

async fn list_page(
    state: &AppState,
    staff: &Staff,
    audit: &Audit,
    q: ListQuery,
) -> Result<Response, PageError> {
    staff.require(ANALYSTS)?;
    let nav = Nav::of(staff);
    let (programs, program) = program_of(state, q.program.as_deref()).await?;
    let mut page = ListPage {
        email: nav.email,
        role: nav.role,
        csrf: nav.csrf,
        programs: programs
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect(),
        program_id: String::new(),
        tiers: Vec::new(),
        q: q.q.clone().unwrap_or_default(),
        tier: q.tier.clone().unwrap_or_else(|| "*".into()),
        installed: q.installed.clone().unwrap_or_default(),
        wallet: q.wallet.clone().unwrap_or_default(),
        lines: Vec::new(),
        how: "",
        next: None,
        export: String::new(),
    };
    let Some(program) = program else {
        return Ok(page.into_response());
    };
    let filter = q.filter(&program.id)?;
    let (members, kind) = state
        .store
        .search_members(&filter, q.before.as_deref(), PAGE + 1)
        .await?;
    let shown = &members[..members.len().min(PAGE as usize)];
    audit.members(shown.iter().map(|m| m.id.as_str()));
    let link = q.link(&program.id);
    page.next = (members.len() as i64 > PAGE).then(|| {
        format!(
            "/staff/members?{link}&before={}",
            shown.last().map_or("", |m| m.id.as_str())
        )
    });
    page.export = format!("/staff/members.csv?{link}");
    let namer = tier_namer(&program);
    page.lines = shown.iter().map(|m| line(m, &namer)).collect();
    page.how = match kind {
        Some(QueryKind::Email) => {
            "by e-mail address, exactly (addresses are encrypted, so only the whole address is found)"
        }
        Some(QueryKind::Phone) => {
            "by phone number, exactly (numbers are encrypted, so only the whole number is found)"
        }
        Some(QueryKind::Exact) => "by barcode or external id, exactly",
        Some(QueryKind::NamePrefix) => "by the start of the name",
        None => "",
    };
    page.tiers = program
        .rules
        .tiers
        .levels
        .iter()
        .map(|t| (t.id.clone(), t.name.clone()))
        .collect();
    page.program_id = program.id.clone();
    Ok(page.into_response())
}

/// The filtered list as CSV (no contact details), at most `MAX_EXPORT` rows.
async fn export(
    State(state): State<AppState>,
    staff: Staff,
    audit: Audit,
    Query(q): Query<ListQuery>,
) -> Response {
    match export_csv(&state, &staff, &audit, q).await {
        Ok(r) => r,
        Err(e) => e.page(&staff),
    }
}

async fn export_csv(
    state: &AppState,
    staff: &Staff,
    audit: &Audit,
    q: ListQuery,
) -> Result<Response, PageError> {
    staff.require(ANALYSTS)?;
    let (_, program) = program_of(state, q.program.as_deref()).await?;
    let program = program.ok_or(PageError::NotFound("program"))?;
    let filter = q.filter(&program.id)?;
    let mut all: Vec<MemberLine> = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let (page, _) = state
            .store
            .search_members(&filter, before.as_deref(), 1000)
            .await?;
        let done = page.len() < 1000;
        before = page.last().map(|m| m.id.clone());
        all.extend(page);
        if all.len() as i64 > MAX_EXPORT {
            return Err(PageError::BadRequest(format!(
                "an export holds at most {MAX_EXPORT} members; narrow the search or the filters"
            )));
        }
        if done {
            break;
        }
    }
    audit.members(all.iter().map(|m| m.id.as_str()));
    let namer = tier_namer(&program);
    let mut w = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| PageError::Internal(e.to_string());
    w.write_record([
        "id",
        "name",
        "external_id",
        "barcode",
        "points",
        "tier",
        "apple_devices",
        "google_saved",
        "joined",
    ])
    .map_err(io)?;
    for m in &all {
        w.write_record([
            m.id.as_str(),
            // A name starting with = + - @ would be a formula in a spreadsheet.
            &defuse(if m.erased { "" } else { &m.display_name }),
            &defuse(m.external_id.as_deref().unwrap_or("")),
            &m.barcode,
            &m.points.to_string(),
            &namer(m.tier.as_deref()),
            &m.apple_devices.to_string(),
            if m.google_saved { "yes" } else { "no" },
            &date_text(m.created_at),
        ])
        .map_err(io)?;
    }
    let bytes = w
        .into_inner()
        .map_err(|e| PageError::Internal(e.to_string()))?;
    Ok((
        [
            (CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                CONTENT_DISPOSITION,
                format!("attachment; filename=\"members-{}.csv\"", program.slug),
            ),
        ],
        bytes,
    )
        .into_response())
}

/// Prefixes a value a spreadsheet would run as a formula with `'`.
fn defuse(v: &str) -> String {
    if v.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{v}")
    } else {
        v.to_string()
    }
}

pub struct EntryLine {
    pub at: String,
    pub kind: String,
    pub points: i64,
    pub detail: String,
}

pub struct DeviceLine {
    pub registered: String,
    pub last_push: String,
}

pub struct ConsentLine {
    pub at: String,
    pub kind: String,
    pub granted: bool,
    pub source: String,
    pub policy: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/member.html")]
struct MemberPage {
    email: String,
    role: &'static str,
    csrf: String,
    id: String,
    name: String,
    program_name: String,
    program_id: String,
    external_id: String,
    barcode: String,
    contact_email: String,
    contact_phone: String,
    points: i64,
    tier: String,
    next_tier: String,
    next_expiry: String,
    card: String,
    last_fetch: String,
    devices: Vec<DeviceLine>,
    google: String,
    consents: Vec<ConsentLine>,
    entries: Vec<EntryLine>,
    more_entries: Option<String>,
    can_adjust: bool,
    adjust_key: String,
    message: Option<String>,
}

#[derive(Deserialize, Default)]
struct MemberQuery {
    /// The cursor of the entries: `<created_at>.<id>` of the last one shown.
    after: Option<String>,
    /// Set after an adjustment: what happened.
    adjusted: Option<String>,
}

async fn member_page(
    State(state): State<AppState>,
    staff: Staff,
    audit: Audit,
    Path(member_id): Path<String>,
    Query(q): Query<MemberQuery>,
) -> Response {
    match member_view(&state, &staff, &audit, &member_id, q).await {
        Ok(r) => r,
        Err(e) => e.page(&staff),
    }
}

fn entry_line(e: &Entry) -> EntryLine {
    let mut detail = Vec::new();
    if let Some(a) = e.amount_minor {
        detail.push(format!("amount {a}"));
    }
    if let Some(c) = &e.origin.channel {
        detail.push(format!("via {c}"));
    }
    if let Some(r) = &e.reason {
        detail.push(r.clone());
    }
    EntryLine {
        at: time_text(e.created_at),
        kind: e.kind.as_str().to_string(),
        points: e.points,
        detail: detail.join(" · "),
    }
}

async fn member_view(
    state: &AppState,
    staff: &Staff,
    audit: &Audit,
    member_id: &str,
    q: MemberQuery,
) -> Result<Response, PageError> {
    staff.require(ANALYSTS)?;
    let member = state.store.get_member(member_id).await?;
    audit.members([member.id.as_str()]);
    let program = state.store.get_program(&member.program_id).await?;
    let now = now_ms();
    let standing = state
        .store
        .member_standing(&member.id, &program.rules, now)
        .await?;
    let contact = state.store.member_contact(&member.id).await?;
    let after = match q.after.as_deref() {
        None | Some("") => None,
        Some(c) => {
            let (at, id) = c
                .split_once('.')
                .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id.to_string())))
                .ok_or_else(|| PageError::BadRequest("after is not an entries cursor".into()))?;
            Some((at, id))
        }
    };
    let entries = state
        .store
        .list_entries(&member.id, after, ENTRIES + 1)
        .await?;
    let shown = &entries[..entries.len().min(ENTRIES as usize)];
    let more_entries = (entries.len() as i64 > ENTRIES).then(|| {
        let last = shown.last().expect("a full page");
        format!(
            "/staff/members/{}?after={}.{}",
            member.id, last.created_at, last.id
        )
    });
    let pass = state.store.pass_for_member(&member.id).await.ok();
    let devices = match &pass {
        Some(p) => state
            .store
            .registrations(&p.serial_number)
            .await?
            .iter()
            .map(|r| DeviceLine {
                registered: time_text(r.created_at),
                last_push: match (&r.last_push_result, r.last_push_at) {
                    (Some(result), Some(at)) => format!("{result} at {}", time_text(at)),
                    _ => "no push yet".into(),
                },
            })
            .collect(),
        None => Vec::new(),
    };
    let google = if state.google.is_some() {
        let saved = state.store.google_saved(&member.id).await?;
        let sync = state.store.google_sync_status(&member.id).await?;
        let saved = match saved {
            Some(true) => "saved in Google Wallet",
            Some(false) => "deleted from Google Wallet",
            None => "Google has not reported a save",
        };
        let sync = if sync.pending {
            match &sync.last_error {
                Some(e) => format!("update waiting after {} failed tries: {e}", sync.attempts),
                None => "update waiting".into(),
            }
        } else {
            "up to date".into()
        };
        format!("{saved}; {sync}")
    } else {
        "Google Wallet is not configured".into()
    };
    let consents = state
        .store
        .consents(&member.id)
        .await?
        .into_iter()
        .map(|c| ConsentLine {
            at: time_text(c.recorded_at),
            kind: c.kind,
            granted: c.granted,
            source: c.source,
            policy: c.policy_version,
        })
        .collect();
    let namer = tier_namer(&program);
    let next = program.rules.next_tier(member.tier.as_deref());
    let nav = Nav::of(staff);
    let (contact_email, contact_phone) =
        (contact.0.unwrap_or_default(), contact.1.unwrap_or_default());
    Ok(MemberPage {
        email: nav.email,
        role: nav.role,
        csrf: nav.csrf,
        id: member.id.clone(),
        name: if member.display_name.is_empty() {
            "(no name: erased)".into()
        } else {
            member.display_name.clone()
        },
        program_name: program.name.clone(),
        program_id: program.id.clone(),
        external_id: member.external_id.clone().unwrap_or_default(),
        barcode: member.barcode.clone(),
        contact_email,
        contact_phone,
        points: member.points,
        tier: namer(member.tier.as_deref()),
        next_tier: next.map_or(String::new(), |t| {
            format!(
                "{} more to {}",
                (t.threshold - standing.qualifying).max(0),
                t.name
            )
        }),
        next_expiry: standing.next_expiry.map_or(String::new(), |(at, points)| {
            format!("{points} points on {}", date_text(at))
        }),
        card: match &pass {
            Some(p) if p.ended_at.is_some() => "ended".into(),
            Some(_) => "live".into(),
            None => "none".into(),
        },
        last_fetch: pass
            .as_ref()
            .and_then(|p| p.last_fetched_at)
            .map_or("never".into(), time_text),
        devices,
        google,
        consents,
        entries: shown.iter().map(entry_line).collect(),
        more_entries,
        can_adjust: staff.session.user.role == Role::Admin,
        adjust_key: crate::secret::random_token(16),
        message: q.adjusted.map(|a| match a.as_str() {
            "done" => "The adjustment was recorded.".to_string(),
            _ => "The adjustment was already recorded.".to_string(),
        }),
    }
    .into_response())
}

#[derive(Deserialize)]
struct AdjustForm {
    csrf: String,
    key: String,
    points: String,
    reason: String,
}

/// An admin's manual adjustment with a reason, through the service path every posting takes
/// (`service::points::post`), keyed by the form's idempotency key so a resubmitted form is
/// recorded once.
async fn adjust(
    State(state): State<AppState>,
    staff: Staff,
    audit: Audit,
    Path(member_id): Path<String>,
    Form(f): Form<AdjustForm>,
) -> Response {
    match adjust_member(&state, &staff, &audit, &member_id, f).await {
        Ok(r) => r,
        Err(e) => e.page(&staff),
    }
}

async fn adjust_member(
    state: &AppState,
    staff: &Staff,
    audit: &Audit,
    member_id: &str,
    f: AdjustForm,
) -> Result<Response, PageError> {
    staff.check_csrf(&f.csrf)?;
    staff.require(&[Role::Admin])?;
    let member = state.store.get_member(member_id).await?;
    audit.members([member.id.as_str()]);
    let key = f.key.trim();
    if !(8..=255).contains(&key.len()) {
        return Err(PageError::BadRequest(
            "the form's key must have 8 to 255 characters; reload the page".into(),
        ));
    }
    let reason = f.reason.trim();
    if reason.is_empty() || reason.chars().count() > MAX_REASON {
        return Err(PageError::BadRequest(format!(
            "an adjustment needs a reason of at most {MAX_REASON} characters"
        )));
    }
    let points: i64 = match f.points.trim().parse() {
        Ok(p)
            if p != 0 && (-crate::ledger::MAX_POINTS..=crate::ledger::MAX_POINTS).contains(&p) =>
        {
            p
        }
        _ => {
            return Err(PageError::BadRequest(format!(
                "points must be a whole number other than 0, at most {} either way",
                crate::ledger::MAX_POINTS
            )));
        }
    };
    let user = &staff.session.user;
    let actor = format!("staff:{}", user.id);
    let canonical = serde_json::json!({
        "member_id": member.id, "kind": "adjust", "points": points, "reason": reason,
    });
    let idempotency = crate::service::points::idempotency(&actor, key, &canonical);
    let op = Operation::Adjust {
        points,
        reason: reason.to_string(),
    };
    let origin = Origin {
        channel: Some("staff".into()),
        ..Origin::default()
    };
    let by = Actor {
        id: Some(&actor),
        limits: PointLimits {
            per_operation: user.max_points_per_operation,
            per_day: user.max_points_per_day,
        },
    };
    match crate::service::points::post(
        &state.store,
        &member.id,
        &op,
        &origin,
        by,
        Some(&idempotency),
    )
    .await
    {
        Ok((_, replayed)) => {
            tracing::info!(member = %member.id, staff = %user.id, points, replayed, "manual adjustment");
            Ok((
                StatusCode::SEE_OTHER,
                [(
                    LOCATION,
                    format!(
                        "/staff/members/{}?adjusted={}",
                        member.id,
                        if replayed { "again" } else { "done" }
                    ),
                )],
            )
                .into_response())
        }
        Err(StorageError::Insufficient { available }) => Err(PageError::BadRequest(format!(
            "the member has {available} points; an adjustment cannot take the balance below 0"
        ))),
        Err(StorageError::IdempotencyMismatch) => Err(PageError::BadRequest(
            "this form was already submitted with other values; reload the page to make a new adjustment".into(),
        )),
        Err(e) => Err(e.into()),
    }
}
