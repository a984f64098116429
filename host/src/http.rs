//! The router's HTTP endpoint (`[http] listen`): what is running, for
//! operators and tools.
//!
//! - `GET /health`: 200 while the router's loops are alive, else 503.
//! - `GET /ready`: 200 when the router is doing its job (broker reachable,
//!   partitions assigned, plugins loaded, nothing held), else 503; the JSON
//!   body lists what is missing.
//! - `GET /metrics`: Prometheus metrics, OpenMetrics text format.
//! - `GET /replays`: the replays started, with their progress.
//! - `GET /routes`: every route with its sources, targets and the plugin
//!   version routing now (content hash, file, size, when it was loaded),
//!   what happens to failed records, what the route did so far, partitions
//!   held at a failed record, whether it is paused, plus hot-swap counts.
//! - `POST /routes/{name}/pause`, `/resume`, `/rollback`,
//!   `/rollback/{version}`, `/promote` and `/canary/{partitions}`: the
//!   control endpoints, which change what the router does; and `GET
//!   /routes/{name}/shadow`, the records a shadow candidate decided
//!   differently (record data: as guarded); `POST
//!   /routes/{name}/replay?to=TOPIC&from_offset=N` (or
//!   `from_timestamp_ms=MS`, maybe `&partition=P`) and `POST
//!   /replays/{id}/cancel`. Off unless
//!   `http.control_token_env` (or `_file`) names a token (403), and then
//!   only with `Authorization: Bearer <token>` (401).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, oneshot};

use crate::config::{FailurePolicy, HttpConfig};
use crate::kafka::InFlight;
use crate::metrics::Metrics;
use crate::reload::ReloadStats;
use crate::route::Route;
use crate::status::{Status, Verdict};

/// What the endpoint shows.
#[derive(Clone)]
pub struct Shown {
    /// The routes.
    pub routes: Arc<Vec<Arc<Route>>>,
    /// Hot-swap counts.
    pub reload: Option<Arc<ReloadStats>>,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub status: Arc<Status>,
    /// The producer (its queue depth is a metric).
    pub producer: Option<Arc<dyn InFlight>>,
    /// The token the control endpoints require; `None`: they are off.
    pub control_token: Option<Arc<str>>,
    /// Replays routes' records on request.
    pub replayer: Option<Arc<crate::replay::Replayer>>,
}

impl std::fmt::Debug for Shown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shown").finish_non_exhaustive()
    }
}

/// A running HTTP endpoint; dropping it stops it.
#[derive(Debug)]
pub struct HttpServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// The address it listens on (useful with port 0).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `config.listen` and serves `shown` on a thread of its own, at
/// most `config.max_connections` connections at once, each closed if its
/// client is slower than `config.header_timeout_ms` to send a request's
/// headers (or stays idle that long between requests).
pub fn serve(config: &HttpConfig, shown: Shown) -> std::io::Result<HttpServer> {
    let listener = std::net::TcpListener::bind(&config.listen)?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    let app = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/routes", get(list_routes))
        .route("/routes/{name}/pause", post(pause))
        .route("/routes/{name}/resume", post(resume))
        .route("/routes/{name}/rollback", post(rollback))
        .route("/routes/{name}/rollback/{version}", post(rollback_to))
        .route("/routes/{name}/promote", post(promote))
        .route("/routes/{name}/canary/{partitions}", post(canary))
        .route("/routes/{name}/shadow", get(shadow_samples))
        .route("/routes/{name}/replay", post(replay))
        .route("/replays", get(list_replays))
        .route("/replays/{id}/cancel", post(cancel_replay))
        .with_state(shown);
    let limits = ConnectionLimits {
        max: config.max_connections,
        header_timeout: Duration::from_millis(config.header_timeout_ms),
    };
    let thread = std::thread::Builder::new()
        .name("switchyard-http".to_owned())
        .spawn(move || {
            runtime.block_on(async move {
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(listener) => accept(listener, app, limits, stopped).await,
                    Err(e) => tracing::error!(error = %e, "cannot serve HTTP"),
                }
            });
        })?;
    tracing::info!(%addr, "HTTP endpoint listening");
    Ok(HttpServer {
        addr,
        shutdown: Some(shutdown),
        thread: Some(thread),
    })
}

#[derive(Debug, Clone, Copy)]
struct ConnectionLimits {
    max: usize,
    header_timeout: Duration,
}

/// Longest a connection stays open, however it is used: probes and
/// scrapers reconnect freely.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// Wait after a failed accept (out of file descriptors, typically) before
/// the next one, so that the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves connections until `stopped`. A connection past the cap is closed
/// at once: the endpoint answers its probes again as soon as the clients
/// holding connections go or time out, and never holds more descriptors
/// than the cap.
async fn accept(
    listener: tokio::net::TcpListener,
    app: Router,
    limits: ConnectionLimits,
    mut stopped: oneshot::Receiver<()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max));
    let mut refused: u64 = 0;
    loop {
        let stream = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept an HTTP connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refused += 1;
            // Said once per burst: the first, then every 1,024th.
            if refused & 1023 == 1 {
                tracing::warn!(
                    max_connections = limits.max,
                    refused,
                    "HTTP connection refused: http.max_connections are open"
                );
            }
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_timeout)
                .serve_connection(TokioIo::new(stream), service);
            // A client that never reads its answer holds its connection
            // no longer than this.
            match tokio::time::timeout(CONNECTION_LIFETIME, connection).await {
                Ok(Err(e)) => tracing::debug!(error = %e, "HTTP connection ended"),
                Err(_) => tracing::debug!("HTTP connection closed: open too long"),
                Ok(Ok(())) => {}
            }
            drop(permit);
        });
    }
}

fn verdict(verdict: &Verdict) -> (StatusCode, Json<Value>) {
    let code = if verdict.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(json!(verdict)))
}

async fn health(State(shown): State<Shown>) -> (StatusCode, Json<Value>) {
    verdict(&shown.status.health())
}

async fn ready(State(shown): State<Shown>) -> (StatusCode, Json<Value>) {
    let mut body = verdict(&shown.status.ready(&shown.routes));
    body.1["partitions_assigned"] = json!(shown.status.assigned());
    body
}

async fn metrics(State(shown): State<Shown>) -> impl IntoResponse {
    let text = shown.metrics.encode(
        &shown.routes,
        &shown.status,
        shown.reload.as_deref(),
        shown.producer.as_ref().map(|p| i64::from(p.in_flight())),
    );
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

async fn list_routes(State(shown): State<Shown>) -> Json<Value> {
    let routes: Vec<Value> = shown
        .routes
        .iter()
        .map(|route| {
            let plugin = route.plugin().map(|p| {
                json!({
                    "file": p.path().display().to_string(),
                    "version": p.version(),
                    "sha256": p.sha256(),
                    "size": p.size(),
                    "loaded_at_ms": p.loaded_at_ms(),
                })
            });
            let on_failure = match route.policy() {
                FailurePolicy::DeadLetter(topic) => json!({ "dead_letter_topic": topic }),
                FailurePolicy::Skip => json!("skip"),
                FailurePolicy::Stop => json!("stop"),
            };
            let halted: Vec<Value> = route
                .halted()
                .into_iter()
                .map(|((topic, partition), halt)| {
                    json!({
                        "topic": topic,
                        "partition": partition,
                        "offset": halt.offset,
                        "reason": halt.reason,
                    })
                })
                .collect();
            json!({
                "name": route.name(),
                "source_topics": route.config.source_topics,
                "default_target": route.config.default_target,
                "plugin": plugin,
                "on_failure": on_failure,
                "stats": route.stats.snapshot(),
                "halted": halted,
                "paused": route.is_paused(),
                "earlier_versions": route.earlier_versions(),
                "rolled_back_from": route.rolled_back_from(),
                "rollout": rollout_of(route),
            })
        })
        .collect();
    let reload = shown.reload.as_ref().map(|r| {
        json!({
            "swaps": r.swaps.load(Ordering::Relaxed),
            "refused": r.failures.load(Ordering::Relaxed),
            "unreadable": r.unreadable.load(Ordering::Relaxed),
        })
    });
    Json(json!({ "routes": routes, "reload": reload }))
}

/// A route's rollout: the candidate tried now, with its figures, and the
/// decisions kept.
fn rollout_of(route: &Route) -> Value {
    if route.config.rollout.is_none() {
        return Value::Null;
    }
    let candidate = route.rollout().map(|rollout| {
        let figures = rollout.figures(route);
        json!({
            "version": rollout.candidate.version(),
            "sha256": rollout.candidate.sha256(),
            "file": rollout.candidate.path().display().to_string(),
            "mode": match rollout.canary_partitions() {
                Some(_) => "canary",
                None => "shadow",
            },
            "canary_partitions": rollout.canary_partitions(),
            "started_at_ms": rollout.started_ms(),
            "figures": figures,
            "candidate_failure_rate": figures.candidate_failure_rate(),
            "live_failure_rate": figures.live_failure_rate(),
            "shadow": rollout.shadow.as_ref().map(|s| s.counts.snapshot()),
        })
    });
    json!({
        "candidate": candidate,
        "decisions": route.rollouts.decisions(),
    })
}

async fn promote(
    State(shown): State<Shown>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::Promote)
}

async fn canary(
    State(shown): State<Shown>,
    Path((name, partitions)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::Canary(partitions))
}

async fn shadow_samples(
    State(shown): State<Shown>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::ShadowSamples)
}

async fn replay(
    State(shown): State<Shown>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if let Err(refused) = authorized(&shown, &headers) {
        return refused;
    }
    let request = match replay_request(query.as_deref().unwrap_or_default()) {
        Ok(request) => request,
        Err(why) => return (StatusCode::BAD_REQUEST, Json(json!({ "error": why }))),
    };
    // Starting one may ask the broker about the target: off the thread
    // that answers /health and /ready.
    tokio::task::spawn_blocking(move || control(&shown, &name, &headers, &Action::Replay(request)))
        .await
        .unwrap_or_else(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({ "error": format!("the replay request failed: {e}") })),
            )
        })
}

/// A replay asked for in a query string: `to=TOPIC`, and `from_offset=N`
/// or `from_timestamp_ms=MS`, and maybe `partition=P`.
fn replay_request(query: &str) -> Result<crate::replay::Request, String> {
    use crate::replay::{From, Request};
    let (mut to, mut from, mut partition) = (None, None, None);
    let number = |key: &str, value: &str| {
        value
            .parse::<i64>()
            .map_err(|_| format!("{key}: '{value}' is not a whole number"))
    };
    let mut seen = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let start = matches!(key, "from_offset" | "from_timestamp_ms");
        if seen.contains(&key) || (start && from.is_some()) {
            return Err(format!(
                "'{key}' given twice, or with another start: give one of each"
            ));
        }
        seen.push(key);
        let at_least_zero = |key: &str, value: &str| {
            let n = number(key, value)?;
            if n < 0 {
                return Err(format!("{key}: '{value}' is negative"));
            }
            Ok(n)
        };
        match key {
            "to" => to = Some(value.to_owned()),
            "from_offset" => from = Some(From::Offset(at_least_zero(key, value)?)),
            "from_timestamp_ms" => from = Some(From::TimestampMs(at_least_zero(key, value)?)),
            "partition" => {
                partition = Some(
                    i32::try_from(number(key, value)?)
                        .map_err(|_| format!("partition: '{value}' is out of range"))?,
                );
            }
            other => {
                return Err(format!(
                    "unknown parameter '{other}': give to, from_offset or from_timestamp_ms, and maybe partition"
                ));
            }
        }
    }
    Ok(Request {
        to: to.ok_or("give the topic to replay into: to=TOPIC")?,
        from: from.ok_or("give where to start: from_offset=N or from_timestamp_ms=MS")?,
        partition,
    })
}

async fn list_replays(State(shown): State<Shown>) -> Json<Value> {
    let replays: Vec<Value> = shown
        .replayer
        .iter()
        .flat_map(|r| r.replays())
        .map(|r| r.to_json())
        .collect();
    Json(json!({ "replays": replays }))
}

async fn cancel_replay(
    State(shown): State<Shown>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    if let Err(refused) = authorized(&shown, &headers) {
        return refused;
    }
    let found = shown
        .replayer
        .iter()
        .flat_map(|r| r.replays())
        .find(|r| r.id.to_string() == id);
    match found {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": format!("no replay {id}") })),
        ),
        Some(replay) if !replay.running() => (
            StatusCode::CONFLICT,
            Json(
                json!({ "error": format!("replay {id} is not running"), "replay": replay.to_json() }),
            ),
        ),
        Some(replay) => {
            replay.cancel();
            (
                StatusCode::OK,
                Json(json!({ "replay": id, "cancelled": true })),
            )
        }
    }
}

async fn pause(
    State(shown): State<Shown>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::Pause(true))
}

async fn resume(
    State(shown): State<Shown>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::Pause(false))
}

async fn rollback(
    State(shown): State<Shown>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::Rollback(None))
}

async fn rollback_to(
    State(shown): State<Shown>,
    Path((name, version)): Path<(String, String)>,
    headers: HeaderMap,
) -> (StatusCode, Json<Value>) {
    control(&shown, &name, &headers, &Action::Rollback(Some(version)))
}

/// What a control endpoint does to a route.
enum Action {
    /// Pause (`true`) or resume it.
    Pause(bool),
    /// Return to an earlier plugin version (the previous one if `None`),
    /// or end the rollout running.
    Rollback(Option<String>),
    /// Promote the candidate tried now.
    Promote,
    /// Set how many partitions of each source topic the canary routes.
    Canary(String),
    /// Show what a shadow candidate decided differently.
    ShadowSamples,
    /// Replay the route's records into a topic.
    Replay(crate::replay::Request),
}

/// Does `action` to route `name` for a caller that gave the control
/// token.
fn control(
    shown: &Shown,
    name: &str,
    headers: &HeaderMap,
    action: &Action,
) -> (StatusCode, Json<Value>) {
    let refuse = |code, error: &str| (code, Json(json!({ "error": error })));
    if let Err(refused) = authorized(shown, headers) {
        return refused;
    }
    let Some(route) = shown.routes.iter().find(|r| r.name() == name) else {
        return refuse(StatusCode::NOT_FOUND, &format!("no route named '{name}'"));
    };
    match action {
        Action::Pause(paused) => {
            let changed = route.set_paused(*paused);
            (
                StatusCode::OK,
                Json(json!({ "route": name, "paused": paused, "changed": changed })),
            )
        }
        Action::Rollback(version) => match route.roll_back(version.as_deref()) {
            Ok((from, to)) => (
                StatusCode::OK,
                Json(json!({ "route": name, "from": from, "to": to })),
            ),
            Err(why) => refuse(StatusCode::CONFLICT, &why),
        },
        Action::Promote => match route.promote() {
            Ok((from, to)) => (
                StatusCode::OK,
                Json(json!({ "route": name, "from": from, "to": to })),
            ),
            Err(why) => refuse(StatusCode::CONFLICT, &why),
        },
        Action::Canary(partitions) => {
            let Ok(partitions) = partitions.parse::<u32>() else {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    &format!("'{partitions}' is not a number of partitions"),
                );
            };
            match route.set_canary(partitions) {
                Ok((from, to)) => (
                    StatusCode::OK,
                    Json(json!({ "route": name, "from": from, "to": to })),
                ),
                Err(why) => refuse(StatusCode::CONFLICT, &why),
            }
        }
        Action::ShadowSamples => {
            let Some(shadow) = route.rollout().and_then(|r| {
                r.shadow
                    .as_ref()
                    .map(|s| (r.candidate.version().to_owned(), s.counts.clone()))
            }) else {
                return refuse(StatusCode::CONFLICT, "no shadow candidate is being tried");
            };
            let (version, counts) = shadow;
            (
                StatusCode::OK,
                Json(json!({
                    "route": name,
                    "candidate": version,
                    "counts": counts.snapshot(),
                    "samples": counts.samples(),
                })),
            )
        }
        Action::Replay(request) => {
            let Some(replayer) = &shown.replayer else {
                return refuse(StatusCode::CONFLICT, "this router does not replay");
            };
            match replayer.start(route, &shown.routes, request.clone()) {
                Ok(replay) => (StatusCode::OK, Json(replay.to_json())),
                Err(why) => refuse(StatusCode::CONFLICT, &why),
            }
        }
    }
}

/// Whether the caller gave the control token (and the control endpoints
/// are on); else the answer to give.
fn authorized(shown: &Shown, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let refuse = |code, error: &str| Err((code, Json(json!({ "error": error }))));
    let Some(token) = &shown.control_token else {
        return refuse(
            StatusCode::FORBIDDEN,
            "the control endpoints are off: set http.control_token_env",
        );
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !given.is_some_and(|given| same_secret(given.as_bytes(), token.as_bytes())) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "give the control token: Authorization: Bearer <token>",
        );
    }
    Ok(())
}

/// Compares two secrets in a time that depends only on their lengths.
fn same_secret(given: &[u8], expected: &[u8]) -> bool {
    given.len() == expected.len()
        && given
            .iter()
            .zip(expected)
            .fold(0_u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}
