//! The `prometheus` exporter: Lookout's product metrics on their own
//! endpoint, apart from the daemon's self-telemetry.
//!
//! ```yaml
//! exporters:
//!   prometheus:
//!     endpoint: 0.0.0.0:9464        # serves GET /metrics
//!     max_series_per_metric: 2000   # beyond it, new label sets go to one series labelled "other"
//!     max_metrics: 1000             # metric names relayed from OTLP metrics
//!     metric_expiration: 5m         # relayed series not updated for this long are dropped
//! ```
//!
//! From traces (put `genai` and `cost` before it):
//! - `lookout_llm_requests_total{agent,model,operation,provider,service,status}`
//! - `lookout_llm_tokens_total{…,type=input|output|cache_read|cache_write|reasoning}`
//! - `lookout_llm_cost_usd_total{…}`
//! - `lookout_llm_request_duration_seconds{…}` (histogram)
//! - `lookout_agent_execution_duration_seconds{agent,service}` (histogram)
//! - `lookout_workflow_duration_seconds{service,workflow}` and
//!   `lookout_workflow_cost_usd{service,workflow}` (histograms, from root
//!   spans with the cost roll-up)
//!
//! From metrics: every OTLP sum, gauge, histogram and summary, converted
//! (see `otlp_metrics`).
//!
//! Overflow into "other" is counted in the self-telemetry counter
//! `lookout_prometheus_series_overflow_total{exporter,metric}`; points
//! that cannot be converted in `lookout_prometheus_dropped_points_total`.

mod otlp_metrics;
mod registry;
mod spans;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use metrics::counter;
use serde::Deserialize;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use registry::{Limits, Registry};

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "prometheus",
        signals: &[Signal::Traces, Signal::Metrics],
        build: |id: &ComponentId, raw, _helper| {
            let config: PrometheusConfig = parse_config(raw)?;
            Ok(Box::new(PrometheusExporter::new(&id.to_string(), config)?))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrometheusConfig {
    pub endpoint: String,
    pub max_series_per_metric: usize,
    pub max_metrics: usize,
    #[serde(with = "humantime_serde")]
    pub metric_expiration: Duration,
}

impl Default for PrometheusConfig {
    fn default() -> Self {
        PrometheusConfig {
            endpoint: "0.0.0.0:9464".into(),
            max_series_per_metric: 2000,
            max_metrics: 1000,
            metric_expiration: Duration::from_secs(300),
        }
    }
}

type SharedRegistry = Arc<Mutex<Registry>>;

pub struct PrometheusExporter {
    id: String,
    endpoint: SocketAddr,
    registry: SharedRegistry,
    dropped: otlp_metrics::Dropped,
    server: Mutex<Option<(CancellationToken, JoinHandle<()>)>>,
}

impl PrometheusExporter {
    pub fn new(id: &str, config: PrometheusConfig) -> Result<PrometheusExporter, BuildError> {
        let endpoint = config.endpoint.parse().map_err(|error| {
            BuildError::at(
                &["endpoint"],
                format!("{:?} is not host:port: {error}", config.endpoint),
            )
        })?;
        if config.max_series_per_metric == 0 || config.max_metrics == 0 {
            return Err(BuildError::new(
                "max_series_per_metric and max_metrics must be at least 1",
            ));
        }
        let limits = Limits {
            max_series_per_metric: config.max_series_per_metric,
            max_metrics: config.max_metrics,
            expiration: config.metric_expiration,
        };
        let dropped = |reason: &'static str| counter!("lookout_prometheus_dropped_points_total", "exporter" => id.to_string(), "reason" => reason);
        Ok(PrometheusExporter {
            id: id.to_string(),
            endpoint,
            registry: Arc::new(Mutex::new(Registry::new(id, limits))),
            dropped: otlp_metrics::Dropped {
                unsupported: dropped("unsupported"),
                conflicting: dropped("name_conflict_or_limit"),
            },
            server: Mutex::new(None),
        })
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        lock(&self.registry)
    }
}

/// A panic while the lock was held cannot leave the registry half-written
/// in a way that matters more than losing the endpoint, so keep serving.
fn lock(registry: &SharedRegistry) -> std::sync::MutexGuard<'_, Registry> {
    registry.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn metrics_page(State(registry): State<SharedRegistry>) -> impl IntoResponse {
    let text = lock(&registry).render(Instant::now());
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

#[async_trait]
impl Exporter for PrometheusExporter {
    async fn start(&self) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.endpoint)
            .await
            .with_context(|| {
                format!("cannot listen for Prometheus scrapes on {}", self.endpoint)
            })?;
        let app = Router::new()
            .route("/metrics", get(metrics_page))
            .with_state(Arc::clone(&self.registry));
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let id = self.id.clone();
        let server = tokio::spawn(async move {
            let serve =
                axum::serve(listener, app).with_graceful_shutdown(stopped.cancelled_owned());
            if let Err(error) = serve.await {
                tracing::error!(exporter = %id, %error, "the Prometheus endpoint failed");
            }
        });
        tracing::info!(exporter = %self.id, endpoint = %self.endpoint, "serving product metrics on /metrics");
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some((stop, server));
        Ok(())
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let now = Instant::now();
        match payload {
            Payload::Traces(resources) => spans::record(&mut self.registry(), resources, now),
            Payload::Metrics(resources) => {
                otlp_metrics::record(&mut self.registry(), resources, &self.dropped, now)
            }
            Payload::Logs(_) | Payload::Alerts(_) => {}
        }
        Ok(())
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        let server = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some((stop, server)) = server {
            stop.cancel();
            // A scraper holding a connection open must not hold shutdown.
            let _ = tokio::time::timeout(Duration::from_secs(2), server).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
