//! The router's HTTP endpoint (`[http] listen`): what is running, for
//! operators and tools.
//!
//! - `GET /health`: 200 while the router's loops are alive, else 503.
//! - `GET /ready`: 200 when the router is doing its job (broker reachable,
//!   partitions assigned, plugins loaded, nothing held), else 503; the JSON
//!   body lists what is missing.
//! - `GET /metrics`: Prometheus metrics, OpenMetrics text format.
//! - `GET /routes`: every route with its sources, targets and the plugin
//!   version routing now (content hash, file, size, when it was loaded),
//!   what happens to failed records, what the route did so far, partitions
//!   held at a failed record, plus hot-swap counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
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
