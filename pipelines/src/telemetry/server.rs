//! The telemetry endpoint: `/metrics`, `/health` and `/health/ready`.

use std::net::SocketAddr;

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::health::Health;
use super::process;

#[derive(Clone)]
struct TelemetryState {
    metrics: PrometheusHandle,
    health: Health,
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
        .with_state(TelemetryState { metrics, health });
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
