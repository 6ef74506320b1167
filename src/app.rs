//! The application: shared state, the router with its layers, and `run`.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::domain::Pass;
use crate::google::Google;
use crate::passes::apple::Signers;
use crate::service::cards::Cards;
use crate::storage::Store;
use crate::supervisor::{Beat, Workers, supervise};
use crate::webservice::fetches::FetchLog;

/// Request bodies above this are refused before a handler runs. Template uploads carry up to
/// three base64 images of at most 5 MB each.
pub const BODY_LIMIT: usize = 24 * 1024 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub cards: Arc<Cards>,
    /// Pass downloads not yet written to the database.
    pub fetches: Arc<FetchLog>,
    /// Audit rows of reads and refusals not yet written (`web::audit::Pending`).
    pub audit: Arc<crate::web::audit::Pending>,
    /// Google Wallet, when configured.
    pub google: Option<Arc<Google>>,
    /// Signs and checks personal install links.
    pub links: Arc<crate::enrollment::links::LinkSigner>,
    /// Join-form submissions per client address.
    pub join_throttle: Arc<crate::ratelimit::Throttle>,
    /// Barcode lookups per staff account, API key or client address.
    pub lookup_throttle: Arc<crate::ratelimit::Throttle>,
    /// The background workers' liveness, for `/readyz`.
    pub workers: Arc<Workers>,
    /// `POST /passkit/v1/log` requests per client address.
    pub device_log_throttle: Arc<crate::ratelimit::Throttle>,
    /// Failed staff sign-ins per account and per client address.
    pub sign_in_backoff: Arc<crate::ratelimit::Backoff>,
    /// Argon2 hashes running at once: one per core, so sign-ins cannot take every core or
    /// 19 MiB each without bound.
    pub argon_slots: Arc<tokio::sync::Semaphore>,
    /// Join-link QR PNGs per program and size.
    pub qr_cache: Arc<crate::enrollment::QrCache>,
    /// Card-link e-mails per member.
    pub card_link_throttle: Arc<crate::ratelimit::Throttle>,
    /// Outgoing e-mail, when `[email]` is configured.
    pub mailer: Option<Arc<crate::email::Mailer>>,
    /// Join-page views not yet written (`cockpit::JoinViews`).
    pub join_views: Arc<crate::cockpit::JoinViews>,
}

impl AppState {
    /// Opens the signers named by the configuration and wires the services over `store`.
    pub fn new(config: Config, store: Store) -> anyhow::Result<AppState> {
        let signers = Signers::from_config(&config.apple, &config.data_dir)
            .context("loading the Apple signing identity")?;
        let links = Arc::new(
            crate::enrollment::links::LinkSigner::from_config(&config.enrollment, &config.data_dir)
                .context("loading the install-link secret")?,
        );
        let (ring, source, made) =
            crate::privacy::KeyRing::from_config(&config.privacy, &config.data_dir)
                .context("loading the key ring for personal data ([privacy])")?;
        if let (true, crate::privacy::Source::File(path)) = (made, &source) {
            tracing::warn!(
                file = %path.display(),
                "no [privacy] key configured: made a key for members' e-mail and phone in this file; \
                 back it up with the database (without it they cannot be read), and give every \
                 instance on one database the same ring"
            );
        }
        store.set_key_ring(Arc::new(ring));
        let cards = Cards::new(store.clone(), signers, config.web_service_url())
            .with_account_links(config.public_base(), links.clone());
        let google = Google::from_config(&config.google)
            .context("loading the Google Wallet configuration")?
            .map(Arc::new);
        if google.is_some() {
            store.enable_google_sync();
        }
        store.set_worker_lease(config.server.worker_lease_ms);
        let mailer = crate::email::Mailer::from_config(&config.email)
            .context("configuring e-mail")?
            .map(Arc::new);
        Ok(AppState {
            mailer,
            join_throttle: Arc::new(
                crate::ratelimit::Throttle::per_minute(config.enrollment.joins_per_minute)
                    .shared_on(&store, "join"),
            ),
            lookup_throttle: Arc::new(
                crate::ratelimit::Throttle::per_minute(config.enrollment.lookups_per_minute)
                    .shared_on(&store, "lookup"),
            ),
            device_log_throttle: Arc::new(
                crate::ratelimit::Throttle::per_minute(config.server.device_logs_per_minute)
                    .shared_on(&store, "device_log"),
            ),
            sign_in_backoff: Arc::new(
                crate::ratelimit::Backoff::new(
                    config.server.sign_in_free_attempts,
                    std::time::Duration::from_secs(config.server.sign_in_max_delay_seconds.max(1)),
                )
                .shared_on(&store),
            ),
            argon_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            qr_cache: Arc::default(),
            card_link_throttle: Arc::new(
                crate::ratelimit::Throttle::per_hour(config.email.card_links_per_hour)
                    .shared_on(&store, "card_link"),
            ),
            config: Arc::new(config),
            store,
            cards: Arc::new(cards),
            fetches: Arc::default(),
            audit: Arc::default(),
            google,
            links,
            workers: Arc::default(),
            join_views: Arc::default(),
        })
    }

    /// A member's personal install link for their card of this `generation` (how many times
    /// it was reissued: `Store::card_generations`) and when it expires (seconds since the epoch).
    pub fn install_url(&self, member_id: &str, generation: i64) -> (String, i64) {
        let expires_at = crate::domain::now_ms() / 1000
            + i64::from(self.config.enrollment.install_link_days.max(1)) * 86_400;
        let token = self
            .links
            .sign_generation(member_id, expires_at, generation);
        (
            format!("{}/card/{token}", self.config.public_base()),
            expires_at,
        )
    }

    /// The plain-GET link that downloads a member's pass: its download token, never the PassKit
    /// token (both rotate on reissue).
    pub fn pass_url(&self, pass: &Pass) -> String {
        format!(
            "{}/passes/{}.pkpass?token={}",
            self.config.public_base(),
            pass.serial_number,
            pass.download_token
        )
    }
}

pub fn router(state: AppState) -> Router {
    router_with(state, Router::new())
}

/// `router` with `extra` routes behind the same layers (the benchmarks' baseline handler).
pub fn router_with(state: AppState, extra: Router<AppState>) -> Router {
    Router::new()
        .merge(extra)
        .merge(crate::api::router())
        .merge(crate::web::router())
        .merge(crate::cockpit::router())
        .merge(crate::designer::router())
        .merge(crate::enrollment::router())
        .merge(crate::scanning::router())
        .merge(crate::webservice::router())
        .fallback(no_route)
        // After routing too: records who did what to which target (`web::audit`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::web::audit::record,
        ))
        // Runs after routing, so it can name path parameters.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::web::guard::guard,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Requests by route and status, and their latency (`/metrics`).
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::web::metrics::record,
        ))
        // A bug that panics answers 500 (and is logged) instead of dropping the connection.
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            std::time::Duration::from_millis(state.config.server.request_timeout_ms.max(1)),
        ))
        // The span names the route, never the full URI: query strings carry pass tokens.
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let route = req.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
            tracing::info_span!("http", method = %req.method(), route = route.as_deref().unwrap_or("unmatched"))
        }))
        .with_state(state)
}

/// Unknown paths: the API's error shape under `/api/`, so clients parse every answer alike.
/// The code differs from a handler's `not_found`, which names a missing resource.
/// Under `/staff/` a signed-in staff member gets a page with the navigation.
async fn no_route(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (mut parts, _) = req.into_parts();
    let uri = parts.uri.clone();
    if uri.path().starts_with("/staff/")
        && let Some(page) = crate::cockpit::not_found(&mut parts, &state).await
    {
        return page;
    }
    if uri.path().starts_with("/api/") {
        crate::api::error::ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "no_route",
            "no such API route",
        )
        .into_response()
    } else {
        (axum::http::StatusCode::NOT_FOUND, "not found\n").into_response()
    }
}

/// Starts the background workers under supervision (`supervisor`): the ledger jobs, the
/// fetch log, publish jobs, and when configured the push dispatcher and the Google sync. Abort
/// the handles to stop them.
pub fn spawn_workers(state: &AppState) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let w = &state.workers;
    let mut workers = vec![
        supervise(w, "ledger", with_state(state, crate::jobs::ledger_loop)),
        supervise(
            w,
            "fetch_log",
            with_state(state, crate::jobs::fetch_log_loop),
        ),
        supervise(w, "publish", with_state(state, crate::jobs::publish_loop)),
        supervise(
            w,
            "retention",
            with_state(state, crate::jobs::retention_loop),
        ),
        supervise(w, "memory", crate::jobs::memory_loop),
        supervise(w, "cockpit", with_state(state, crate::jobs::cockpit_loop)),
    ];
    if state.store.backend() == crate::storage::Backend::Postgres {
        workers.push(supervise(
            w,
            "notifications",
            with_state(state, crate::jobs::notifications_loop),
        ));
    }
    if state.store.backend() == crate::storage::Backend::Sqlite {
        workers.push(supervise(
            w,
            "checkpoint",
            with_state(state, crate::jobs::checkpoint_loop),
        ));
    }
    let deliverer = crate::webhooks::Deliverer::new(state.store.clone(), &state.config.events)
        .context("configuring webhooks")?;
    workers.push(supervise(w, "webhooks", move |beat| {
        let d = deliverer.clone();
        async move { d.run(beat).await }
    }));
    let dispatcher = crate::push::dispatcher::Dispatcher::from_config(
        state.store.clone(),
        state.cards.shared_signers(),
        &state.config.push,
    )
    .context("configuring push")?;
    if let Some(google) = &state.google {
        let worker = Arc::new(crate::google::sync::Worker {
            google: google.clone(),
            store: state.store.clone(),
            public_base: state.config.public_base().to_string(),
            retry_base_ms: state.config.google.retry_base_ms.max(1),
            poll: std::time::Duration::from_millis(state.config.google.poll_interval_ms.max(10)),
        });
        workers.push(supervise(w, "google_sync", move |beat| {
            let worker = worker.clone();
            async move { worker.run(beat).await }
        }));
    }
    match dispatcher {
        Some(d) => {
            let d = Arc::new(d);
            workers.push(supervise(w, "push", move |beat| {
                let d = d.clone();
                async move { d.run(beat).await }
            }));
        }
        None => tracing::info!("APNs push is off (development identity and no push.apns_url)"),
    }
    Ok(workers)
}

/// A worker made from a job over the state, started afresh after each stop.
fn with_state<F, Fut>(state: &AppState, job: F) -> impl Fn(Beat) -> Fut + Send + 'static
where
    F: Fn(AppState, Beat) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let state = state.clone();
    move |beat| job(state.clone(), beat)
}

/// Serves until `shutdown` resolves, then finishes in-flight requests.
pub async fn run(
    state: AppState,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // Client addresses (feeding the throttles) come from `server::serve`.
    let limits = state.config.server.clone();
    crate::server::serve(listener, router(state), &limits, shutdown)
        .await
        .context("serving HTTP")
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
