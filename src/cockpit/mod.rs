//! The business's cockpit (issue 17): the staff home page `/staff` is a dashboard per program
//! and period, drawn from the daily figures the `cockpit` job keeps (`storage::cockpit`), never
//! from scans of the ledger at page time; `members` is the member list and page.

pub mod charts;
pub mod members;

use std::collections::HashMap;
use std::sync::Mutex;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

use crate::app::AppState;
use crate::domain::now_ms;
use crate::storage::{DAY_MS, DailyFigures, Role, StorageError, WINDOWS, day_of};
use crate::web::staff::{Refusal, Staff};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/staff", get(dashboard))
        .merge(members::router())
}

/// Join-page views not yet written: (program id, day) -> views. Flushed every second by the
/// `fetch_log` worker, so a view costs no write of its own.
#[derive(Default)]
pub struct JoinViews(Mutex<HashMap<(String, i64), i64>>);

impl JoinViews {
    pub fn count(&self, program_id: &str) {
        let mut m = self.0.lock().expect("join views");
        *m.entry((program_id.to_string(), day_of(now_ms())))
            .or_default() += 1;
    }

    /// Writes the counted views; on failure they are kept for the next flush.
    pub async fn flush(&self, store: &crate::storage::Store) -> Result<(), StorageError> {
        let taken: Vec<(String, i64, i64)> = {
            let mut m = self.0.lock().expect("join views");
            m.drain().map(|((p, d), n)| (p, d, n)).collect()
        };
        if let Err(e) = store.add_join_views(&taken).await {
            let mut m = self.0.lock().expect("join views");
            for (p, d, n) in taken {
                *m.entry((p, d)).or_default() += n;
            }
            return Err(e);
        }
        Ok(())
    }
}

/// Who is signed in, for the navigation of every staff page.
pub struct Nav {
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
}

impl Nav {
    pub fn of(staff: &Staff) -> Nav {
        Nav {
            email: staff.session.user.email.clone(),
            role: staff.session.user.role.as_str(),
            csrf: staff.session.csrf_token.clone(),
        }
    }
}

/// Roles that see the dashboard and the members.
pub const ANALYSTS: &[Role] = &[Role::Admin, Role::Marketer];

#[derive(Template, WebTemplate)]
#[template(path = "pages/staff_error.html")]
pub struct ErrorPage {
    pub email: String,
    pub role: &'static str,
    pub csrf: String,
    pub title: &'static str,
    pub message: String,
}

/// Why a cockpit page failed, shown as a page with the navigation.
pub enum PageError {
    Refused(Refusal),
    NotFound(&'static str),
    BadRequest(String),
    Internal(String),
}

impl From<StorageError> for PageError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound(what) => PageError::NotFound(what),
            e => PageError::Internal(e.to_string()),
        }
    }
}

impl From<Refusal> for PageError {
    fn from(r: Refusal) -> Self {
        PageError::Refused(r)
    }
}

impl PageError {
    pub fn page(self, staff: &Staff) -> Response {
        let nav = Nav::of(staff);
        let (status, title, message) = match self {
            PageError::Refused(Refusal::Role) => (
                StatusCode::FORBIDDEN,
                "Not for your role",
                "Your role may not open this page. The links above are the pages you can use."
                    .to_string(),
            ),
            PageError::Refused(Refusal::Csrf) => (
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form expired or did not come from this site; reload the page and try again."
                    .to_string(),
            ),
            PageError::NotFound(what) => (
                StatusCode::NOT_FOUND,
                "Not found",
                format!("There is no such {what}."),
            ),
            PageError::BadRequest(m) => (StatusCode::BAD_REQUEST, "Not understood", m),
            PageError::Internal(e) => {
                tracing::error!(error = %e, "a cockpit page failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "Something went wrong; see the server log.".to_string(),
                )
            }
        };
        (
            status,
            ErrorPage {
                email: nav.email,
                role: nav.role,
                csrf: nav.csrf,
                title,
                message,
            },
        )
            .into_response()
    }
}

/// A page for an unknown `/staff/` path with the navigation, when a staff member is signed in.
pub async fn not_found(
    parts: &mut axum::http::request::Parts,
    state: &AppState,
) -> Option<Response> {
    use axum::extract::FromRequestParts;
    let staff = Staff::from_request_parts(parts, state).await.ok()?;
    Some(PageError::NotFound("page").page(&staff))
}

#[derive(Deserialize, Default)]
pub struct DashboardQuery {
    program: Option<String>,
    /// `7`, `30`, `90` or `custom`.
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// One number of the dashboard: its key (`data-figure`), label and value as shown.
pub struct Figure {
    pub key: &'static str,
    pub label: String,
    pub value: String,
}

pub struct Group {
    pub title: &'static str,
    pub figures: Vec<Figure>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/dashboard.html")]
struct DashboardPage {
    email: String,
    role: &'static str,
    csrf: String,
    programs: Vec<(String, String)>,
    program_id: String,
    period: String,
    from: String,
    to: String,
    groups: Vec<Group>,
    charts: Vec<String>,
    computed: String,
    note: Option<String>,
    /// Webhook endpoints disabled for failing (admins only).
    disabled_webhooks: Vec<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "pages/staff_home.html")]
struct HomePage {
    email: String,
    role: &'static str,
    csrf: String,
    disabled_webhooks: Vec<String>,
}

pub fn date_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| {
            t.format(time::macros::format_description!("[year]-[month]-[day]"))
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

pub fn time_text(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .map(|t| {
            t.format(time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute] UTC"
            ))
            .unwrap_or_default()
        })
        .unwrap_or_default()
}

fn parse_day(s: &str) -> Option<i64> {
    let d = time::Date::parse(
        s.trim(),
        time::macros::format_description!("[year]-[month]-[day]"),
    )
    .ok()?;
    Some(d.midnight().assume_utc().unix_timestamp() * 1000)
}

fn percent(part: i64, whole: i64) -> String {
    if whole <= 0 {
        "—".to_string()
    } else {
        format!("{:.1} %", part as f64 * 100.0 / whole as f64)
    }
}

/// The longest custom period, in days.
const MAX_DAYS: i64 = 366;

async fn dashboard(
    State(state): State<AppState>,
    staff: Staff,
    Query(q): Query<DashboardQuery>,
) -> Response {
    if staff.require(ANALYSTS).is_err() {
        let nav = Nav::of(&staff);
        return HomePage {
            email: nav.email,
            role: nav.role,
            csrf: nav.csrf,
            disabled_webhooks: crate::web::staff::disabled_webhooks(&state, &staff).await,
        }
        .into_response();
    }
    match dashboard_page(&state, &staff, q).await {
        Ok(r) => r,
        Err(e) => e.page(&staff),
    }
}

async fn dashboard_page(
    state: &AppState,
    staff: &Staff,
    q: DashboardQuery,
) -> Result<Response, PageError> {
    let programs = state.store.list_programs().await?;
    let nav = Nav::of(staff);
    let Some(program) = (match &q.program {
        Some(id) => Some(
            programs
                .iter()
                .find(|p| &p.id == id)
                .ok_or(PageError::NotFound("program"))?,
        ),
        None => programs.first(),
    }) else {
        return Ok(DashboardPage {
            email: nav.email,
            role: nav.role,
            csrf: nav.csrf,
            programs: Vec::new(),
            program_id: String::new(),
            period: "30".into(),
            from: String::new(),
            to: String::new(),
            groups: Vec::new(),
            charts: Vec::new(),
            computed: String::new(),
            note: Some("No program yet: create one under Programs.".into()),
            disabled_webhooks: crate::web::staff::disabled_webhooks(state, staff).await,
        }
        .into_response());
    };
    let today = day_of(now_ms());
    let period = q.period.clone().unwrap_or_else(|| "30".into());
    let (from, to) = match period.as_str() {
        "7" | "30" | "90" => {
            let n: i64 = period.parse().expect("a listed period");
            (today - (n - 1) * DAY_MS, today)
        }
        "custom" => {
            let from = q.from.as_deref().and_then(parse_day);
            let to = q.to.as_deref().and_then(parse_day);
            match (from, to) {
                (Some(f), Some(t)) if f <= t && t - f < MAX_DAYS * DAY_MS => (f, t),
                _ => {
                    return Err(PageError::BadRequest(format!(
                        "A custom period needs from and to as YYYY-MM-DD, from no later than to, at most {MAX_DAYS} days."
                    )));
                }
            }
        }
        _ => {
            return Err(PageError::BadRequest(
                "period must be 7, 30, 90 or custom".into(),
            ));
        }
    };
    let days = state.store.daily_figures(&program.id, from, to).await?;
    let cum = state.store.cumulative_figures(&program.id, to).await?;
    let span = (to - from) / DAY_MS + 1;
    let figures = Figures::of(&days, &cum, span);
    let tier_names: HashMap<&str, &str> = program
        .rules
        .tiers
        .levels
        .iter()
        .map(|t| (t.id.as_str(), t.name.as_str()))
        .collect();
    let groups = figures.groups(&tier_names);
    // One slot per day of the period, zero where the job wrote no row.
    let labels: Vec<String> = (0..span).map(|k| date_text(from + k * DAY_MS)).collect();
    let per_day = |f: fn(&DailyFigures) -> i64| -> Vec<i64> {
        let by_day: HashMap<i64, i64> = days.iter().map(|d| (d.day, f(d))).collect();
        (0..span)
            .map(|k| by_day.get(&(from + k * DAY_MS)).copied().unwrap_or(0))
            .collect()
    };
    use charts::Series;
    let charts = vec![
        charts::bars(
            "Points per day",
            &labels,
            &[
                Series {
                    label: "earned",
                    colour: "#0a58ca",
                    values: per_day(|d| d.earned),
                },
                Series {
                    label: "redeemed",
                    colour: "#d93025",
                    values: per_day(|d| d.redeemed),
                },
            ],
        ),
        charts::bars(
            "Members and installs per day",
            &labels,
            &[
                Series {
                    label: "new members",
                    colour: "#188038",
                    values: per_day(|d| d.new_members),
                },
                Series {
                    label: "installs",
                    colour: "#f59e0b",
                    values: per_day(|d| d.apple_installs + d.google_installs),
                },
            ],
        ),
    ];
    let computed = days
        .iter()
        .map(|d| d.computed_at)
        .max()
        .map(time_text)
        .unwrap_or_default();
    Ok(DashboardPage {
        email: nav.email,
        role: nav.role,
        csrf: nav.csrf,
        programs: programs
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect(),
        program_id: program.id.clone(),
        period,
        from: date_text(from),
        to: date_text(to),
        groups,
        charts,
        computed,
        note: days.is_empty().then(|| {
            "No figures for this period yet: the dashboard's job computes them every minute.".into()
        }),
        disabled_webhooks: crate::web::staff::disabled_webhooks(state, staff).await,
    }
    .into_response())
}

/// The dashboard's numbers over a period: sums of its days, figures "now" as of its last day.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Figures {
    pub sums: DailyFigures,
    pub cum: crate::storage::Cumulative,
    /// Distinct members with a purchase in the period and with two or more, when the period is
    /// one the job keeps (7, 30 or 90 days).
    pub active: Option<(i64, i64)>,
    /// Members with a purchase once, none in the 90 days to the period's end.
    pub lapsed: Option<i64>,
    pub tiers: Option<std::collections::BTreeMap<String, i64>>,
}

impl Figures {
    pub fn of(days: &[DailyFigures], cum: &crate::storage::Cumulative, span: i64) -> Figures {
        let mut s = DailyFigures::default();
        for d in days {
            s.issued += d.issued;
            s.new_members += d.new_members;
            s.joins += d.joins;
            s.join_views += d.join_views;
            s.apple_installs += d.apple_installs;
            s.apple_removals += d.apple_removals;
            s.google_installs += d.google_installs;
            s.google_removals += d.google_removals;
            s.first_installs += d.first_installs;
            s.first_purchases += d.first_purchases;
            s.first_redemptions += d.first_redemptions;
            s.purchases += d.purchases;
            s.earned += d.earned;
            s.redeemed += d.redeemed;
            s.expired += d.expired;
            s.points_delta += d.points_delta;
            s.pushes_sent += d.pushes_sent;
            s.pushes_failed += d.pushes_failed;
            s.fetched_after_push += d.fetched_after_push;
        }
        let last = days.last();
        let window = WINDOWS.iter().position(|w| *w == span);
        let active = window.and_then(|k| {
            let d = last?;
            Some((d.active[k]?, d.repeat[k]?))
        });
        let lapsed = last
            .and_then(|d| d.active[2])
            .map(|a90| cum.members_purchased - a90);
        Figures {
            sums: s,
            cum: cum.clone(),
            active,
            lapsed,
            tiers: last.and_then(|d| d.tiers.clone()),
        }
    }

    fn groups(&self, tier_names: &HashMap<&str, &str>) -> Vec<Group> {
        let s = &self.sums;
        let c = &self.cum;
        let f = |key: &'static str, label: &str, value: String| Figure {
            key,
            label: label.to_string(),
            value,
        };
        let n = |v: i64| v.to_string();
        let mut members = vec![
            f("new_members", "New members", n(s.new_members)),
            f(
                "active",
                "Active members (a purchase in the period)",
                self.active.map_or("—".into(), |a| n(a.0)),
            ),
            f(
                "repeat_rate",
                "Repeat-purchase rate (two purchases or more, of active)",
                self.active.map_or("—".into(), |a| percent(a.1, a.0)),
            ),
            f(
                "lapsed",
                "Lapsed (purchased before, none in the last 90 days)",
                self.lapsed.map_or("—".into(), n),
            ),
        ];
        if let Some(tiers) = &self.tiers {
            for (id, count) in tiers {
                let name = if id.is_empty() {
                    "No tier".to_string()
                } else {
                    format!(
                        "Tier {}",
                        tier_names.get(id.as_str()).copied().unwrap_or(id)
                    )
                };
                members.push(Figure {
                    key: "tier",
                    label: name,
                    value: n(*count),
                });
            }
        }
        vec![
            Group {
                title: "Cards",
                figures: vec![
                    f("issued", "Cards issued", n(s.issued)),
                    f(
                        "apple_installs",
                        "Apple Wallet installs (devices)",
                        n(s.apple_installs),
                    ),
                    f(
                        "apple_removals",
                        "Apple Wallet removals (devices)",
                        n(s.apple_removals),
                    ),
                    f(
                        "google_installs",
                        "Google Wallet saves",
                        n(s.google_installs),
                    ),
                    f(
                        "google_removals",
                        "Google Wallet deletions",
                        n(s.google_removals),
                    ),
                    f(
                        "apple_installed",
                        "Installed now in Apple Wallet (devices)",
                        n(c.apple_installed),
                    ),
                    f(
                        "google_installed",
                        "Installed now in Google Wallet",
                        n(c.google_installed),
                    ),
                    f(
                        "never_installed",
                        "Members who never installed their card",
                        n(c.members - c.members_installed),
                    ),
                ],
            },
            Group {
                title: "Funnel",
                figures: vec![
                    f("join_views", "Join-page views", n(s.join_views)),
                    f("joins", "Joins", n(s.joins)),
                    f("first_installs", "First installs", n(s.first_installs)),
                    f("first_purchases", "First purchases", n(s.first_purchases)),
                    f(
                        "first_redemptions",
                        "First redemptions",
                        n(s.first_redemptions),
                    ),
                ],
            },
            Group {
                title: "Points",
                figures: vec![
                    f("earned", "Earned", n(s.earned)),
                    f("redeemed", "Redeemed", n(s.redeemed)),
                    f("expired", "Expired", n(s.expired)),
                    f(
                        "outstanding",
                        "Outstanding (liability) at the period's end",
                        n(c.points_outstanding),
                    ),
                    f(
                        "redemption_rate",
                        "Redemption rate (redeemed / earned)",
                        percent(s.redeemed, s.earned),
                    ),
                    f("purchases", "Purchases", n(s.purchases)),
                ],
            },
            Group {
                title: "Members",
                figures: members,
            },
            Group {
                title: "Pushes",
                figures: vec![
                    f("pushes_sent", "Pushes delivered to Apple", n(s.pushes_sent)),
                    f("pushes_failed", "Pushes failed", n(s.pushes_failed)),
                    f(
                        "fetched_after_push",
                        "Cards fetched after a push",
                        n(s.fetched_after_push),
                    ),
                ],
            },
        ]
    }
}
