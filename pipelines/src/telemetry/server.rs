//! The telemetry endpoint: `/metrics`, `/health`, `/health/ready`, and
//! the status pages of exporters at `/api/<page>` (such as
//! `/api/langsmith-status`).

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use anyhow::Context;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::process;
use crate::component::{ComponentId, Exporter};

#[derive(Clone)]
struct TelemetryState {
    metrics: PrometheusHandle,
    health: Health,
    pages: StatusPages,
}

type PageServers = Vec<(ComponentId, Arc<dyn Exporter>)>;

/// The exporters that serve a status page, filled in as they start.
#[derive(Clone, Default)]
pub struct StatusPages {
    exporters: Arc<RwLock<PageServers>>,
}

impl StatusPages {
    pub fn add(&self, id: ComponentId, exporter: Arc<dyn Exporter>) {
        if exporter.status().is_some() {
            let mut exporters = self
                .exporters
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            exporters.push((id, exporter));
        }
    }

    /// The named page of every exporter that serves it, with `component`
    /// added to each.
    fn render(&self, page: &str) -> Vec<serde_json::Value> {
        let exporters = self
            .exporters
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        exporters
            .iter()
            .filter_map(|(id, exporter)| {
                let (name, mut body) = exporter.status()?;
                if name != page {
                    return None;
                }
                if let Some(object) = body.as_object_mut() {
                    object.insert("component".into(), id.to_string().into());
                }
                Some(body)
            })
            .collect()
    }
}

/// A running telemetry server. It keeps serving while the pipelines drain,
/// so that shutdown can be watched, and stops when `shutdown` is cancelled.
pub struct TelemetryServer {
    pub local_addr: SocketAddr,
    pub task: tokio::task::JoinHandle<()>,
}

pub async fn start(
    endpoint: &str,
    metrics: PrometheusHandle,
    health: Health,
    pages: StatusPages,
    shutdown: CancellationToken,
) -> anyhow::Result<TelemetryServer> {
    let listener = TcpListener::bind(endpoint)
        .await
        .with_context(|| format!("cannot listen on the telemetry endpoint {endpoint}"))?;
    let local_addr = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(render_metrics))
        .route("/health", get(|| async { "ok\n" }))
        .route("/health/ready", get(readiness))
        .route("/api/{page}", get(status_page))
        .with_state(TelemetryState {
            metrics,
            health,
            pages,
        });
    let task = tokio::spawn(async move {
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(err) = serve.await {
            tracing::error!(error = %err, "telemetry server failed");
        }
    });
    tracing::info!(endpoint = %local_addr, "telemetry endpoint listening");
    Ok(TelemetryServer { local_addr, task })
}

async fn render_metrics(State(state): State<TelemetryState>) -> Response {
    let mut body = state.metrics.render();
    body.push_str(&process::render());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn readiness(State(state): State<TelemetryState>) -> Response {
    let readiness = state.health.readiness();
    let status = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(readiness)).into_response()
}

/// One exporter's page as it is; several as `{"components": [...]}`.
/// 503 when any page says `"ok": false`, so that a probe can use it; 404
/// when no exporter serves the page.
async fn status_page(State(state): State<TelemetryState>, Path(page): Path<String>) -> Response {
    let mut bodies = state.pages.render(&page);
    if bodies.is_empty() {
        let error = serde_json::json!({"error": format!("no exporter serves /api/{page}")});
        return (StatusCode::NOT_FOUND, axum::Json(error)).into_response();
    }
    let ok = bodies
        .iter()
        .all(|body| body.get("ok").and_then(serde_json::Value::as_bool) != Some(false));
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = if bodies.len() == 1 {
        bodies.remove(0)
    } else {
        serde_json::json!({ "components": bodies })
    };
    (status, axum::Json(body)).into_response()
}
