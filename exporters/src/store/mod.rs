//! The `postgres` and `sqlite` exporters: traces, agent executions,
//! costs and performance metrics in the tables of the design documents
//! ("Database Schema Extensions"), plus a `spans` table for drill-down.
//!
//! ```yaml
//! exporters:
//!   postgres:
//!     url: postgres://lookout:${env:PGPASSWORD}@db:5432/monitoring
//!     max_connections: 4          # the pool; default 4
//!   sqlite:
//!     path: ./data/lookout.db     # created with its directory
//!   # both:
//!     retention_days: 30          # 0 keeps everything; default 30, per the design documents
//!     retention_interval: 1h      # how often expired rows are deleted
//!     retention_batch_size: 1000  # rows per DELETE
//!     call_id_attributes: [call_id, call.id, gen_ai.conversation.id, session.id, ...]
//! ```
//!
//! Put the `genai` and `cost` processors before it: it reads their names.
//!
//! **Tables.** One `workflow_traces` row per trace, merged as its spans
//! arrive: the root span names it and gives its status (`running` until
//! then, `completed` or `error`), and `total_cost` is the sum of its spans'
//! costs. One `agent_executions` row per agent or model-call span, one
//! `cost_details` row per priced span (`llm`, `tts` or `api`), and one
//! `performance_metrics` row per workflow (`workflow_latency_ms`, from the
//! root span): an execution's latency and tokens are its own columns, and
//! repeating them as metric rows cost a quarter of the write path. `spans`
//! keeps every span with its attributes (prompts and completions that became
//! an agent execution's input and output are not stored twice).
//! `alert_history` gets one row per alert episode from the alerts pipeline.
//!
//! **Idempotent.** Trace id + span id key every span: a span stored
//! before adds nothing to any table, so retries and replays are harmless.
//!
//! **Failures.** A database that is down or restarting is a transient
//! error: the exporter helper keeps the data queued and retries. Wrong
//! credentials, a missing database or a schema this version does not know
//! fail the start with a clear message. A database that is unreachable at
//! start is not an error: the schema is applied once it answers.
//!
//! `backend.rs` holds what both databases share (migrations, the write
//! path, retention's deletes, error classes); `postgres.rs` and
//! `sqlite.rs` only their SQL; `rows.rs` the mapping; `query.rs` the read
//! side.

mod alerts;
mod backend;
pub mod postgres;
pub mod query;
mod retention;
mod rows;
pub mod sqlite;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use metrics::{Counter, counter};
use serde::Deserialize;
use sqlx::postgres::PgConnectOptions;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use alerts::AlertRow;
pub use backend::{Backend, StoreError, Written, write};
use lookout_pipelines::alert::Alert;
use postgres::PostgresBackend;
use retention::Retention;
pub use rows::{DEFAULT_CALL_ID_ATTRIBUTES, Mapping};
use sqlite::SqliteBackend;

/// The config of both exporters; `url` is PostgreSQL's, `path` SQLite's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://user:password@host:port/database`, with libpq's query
    /// parameters (`sslmode`, `options`, …).
    pub url: Option<String>,
    /// The SQLite database file.
    pub path: Option<PathBuf>,
    /// PostgreSQL connections in the pool.
    pub max_connections: u32,
    /// Rows older than this many days are deleted; 0 keeps everything.
    pub retention_days: u32,
    #[serde(with = "humantime_serde")]
    pub retention_interval: Duration,
    pub retention_batch_size: u32,
    /// Span, then resource, attributes that carry the call id, first
    /// present wins; a trace without one uses its trace id.
    pub call_id_attributes: Vec<String>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            path: None,
            max_connections: 4,
            retention_days: 30,
            retention_interval: Duration::from_secs(3600),
            retention_batch_size: 1000,
            call_id_attributes: DEFAULT_CALL_ID_ATTRIBUTES.map(String::from).to_vec(),
        }
    }
}

impl StoreConfig {
    fn check_common(&self) -> Result<(), BuildError> {
        if self.retention_days > 0 && self.retention_interval.is_zero() {
            return Err(BuildError::at(
                &["retention_interval"],
                "must be above zero",
            ));
        }
        if self.retention_batch_size == 0 {
            return Err(BuildError::at(
                &["retention_batch_size"],
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn retention(&self) -> Retention {
        Retention {
            days: self.retention_days,
            interval: self.retention_interval,
            batch_size: self.retention_batch_size,
        }
    }

    fn mapping(&self) -> Mapping {
        Mapping {
            call_id_attributes: self.call_id_attributes.clone(),
        }
    }
}

pub fn postgres_factory() -> ExporterFactory {
    ExporterFactory {
        kind: "postgres",
        signals: &[Signal::Traces, Signal::Alerts],
        build: |id, raw, helper| {
            let config: StoreConfig = parse_config(raw)?;
            config.check_common()?;
            if config.path.is_some() {
                return Err(BuildError::at(
                    &["path"],
                    "`path` is the sqlite exporter's; postgres takes `url`",
                ));
            }
            let url = config
                .url
                .as_deref()
                .filter(|u| !u.is_empty())
                .ok_or_else(|| {
                    BuildError::at(
                        &["url"],
                        "required: postgres://user:password@host:port/database",
                    )
                })?;
            // The parser's message may quote the URL, password included.
            let options = PgConnectOptions::from_str(url).map_err(|_| {
                BuildError::at(
                    &["url"],
                    "not a PostgreSQL URL (postgres://user:password@host:port/database)",
                )
            })?;
            if config.max_connections == 0 {
                return Err(BuildError::at(&["max_connections"], "must be at least 1"));
            }
            let target = format!(
                "postgres {}:{}/{}",
                options.get_host(),
                options.get_port(),
                options.get_database().unwrap_or_default()
            );
            let (connections, acquire) = (config.max_connections, helper.timeout);
            let open = move || PostgresBackend::open(options.clone(), connections, acquire);
            Ok(Box::new(StoreExporter::new(id, &config, target, open)))
        },
    }
}

pub fn sqlite_factory() -> ExporterFactory {
    ExporterFactory {
        kind: "sqlite",
        signals: &[Signal::Traces, Signal::Alerts],
        build: |id, raw, helper: &ExporterHelperConfig| {
            let config: StoreConfig = parse_config(raw)?;
            config.check_common()?;
            if config.url.is_some() {
                return Err(BuildError::at(
                    &["url"],
                    "`url` is the postgres exporter's; sqlite takes `path`",
                ));
            }
            let path = config
                .path
                .clone()
                .filter(|p| !p.as_os_str().is_empty())
                .ok_or_else(|| BuildError::at(&["path"], "required: the database file"))?;
            let target = format!("sqlite {}", path.display());
            let busy_timeout = helper.timeout;
            let open = move || {
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    // A failure shows as the open error that follows.
                    let _ = std::fs::create_dir_all(parent);
                }
                SqliteBackend::open(&path, busy_timeout)
            };
            Ok(Box::new(StoreExporter::new(id, &config, target, open)))
        },
    }
}

/// Either store, driven by the exporter helper.
pub struct StoreExporter<B: Backend> {
    id: String,
    /// Where the data goes, without credentials, for logs and errors.
    target: String,
    /// Pools need a runtime, which `lookout validate` does not start.
    open: Box<dyn Fn() -> B + Send + Sync>,
    backend: OnceLock<Arc<B>>,
    schema: OnceCell<()>,
    mapping: Mapping,
    retention: Retention,
    retention_task: Mutex<Option<JoinHandle<()>>>,
    stop: CancellationToken,
    counts: SpanCounters,
}

struct SpanCounters {
    stored: Counter,
    duplicate: Counter,
    skipped: Counter,
}

impl<B: Backend> StoreExporter<B> {
    fn new(
        id: &ComponentId,
        config: &StoreConfig,
        target: String,
        open: impl Fn() -> B + Send + Sync + 'static,
    ) -> Self {
        let spans = |result: &'static str| counter!("lookout_store_spans_total", "exporter" => id.to_string(), "result" => result);
        StoreExporter {
            id: id.to_string(),
            target,
            open: Box::new(open),
            backend: OnceLock::new(),
            schema: OnceCell::new(),
            mapping: config.mapping(),
            retention: config.retention(),
            retention_task: Mutex::new(None),
            stop: CancellationToken::new(),
            counts: SpanCounters {
                stored: spans("stored"),
                duplicate: spans("duplicate"),
                skipped: spans("skipped"),
            },
        }
    }

    fn backend(&self) -> Result<&Arc<B>, ExportError> {
        self.backend
            .get()
            .ok_or_else(|| ExportError::permanent("the store was not started"))
    }

    /// Applies the migrations once, then starts retention; until that
    /// succeeds, every export tries again first.
    async fn ensure_schema(&self) -> Result<(), StoreError> {
        let backend = self
            .backend
            .get()
            .ok_or_else(|| StoreError::Schema("the store was not started".into()))?;
        self.schema
            .get_or_try_init(|| async {
                backend.migrate().await?;
                tracing::info!(exporter = %self.id, target = %self.target, "store schema is up to date");
                self.start_retention(backend.clone());
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// Every notification, whatever its route: the history is complete.
    /// Retried notifications rewrite the same row.
    async fn record_alerts(&self, alerts: &[Alert]) -> Result<(), ExportError> {
        let backend = self.backend()?;
        for alert in alerts {
            backend
                .record_alert(&AlertRow::of(alert))
                .await
                .map_err(|err| StoreError::from(err).into_export_error())?;
        }
        Ok(())
    }

    fn start_retention(&self, backend: Arc<B>) {
        if self.retention.days == 0 {
            return;
        }
        let task = self
            .retention
            .clone()
            .run(backend, self.id.clone(), self.stop.clone());
        *self
            .retention_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(tokio::spawn(task));
    }
}

#[async_trait]
impl<B: Backend> Exporter for StoreExporter<B> {
    async fn start(&self) -> anyhow::Result<()> {
        self.backend.get_or_init(|| Arc::new((self.open)()));
        match self.ensure_schema().await {
            Ok(()) => Ok(()),
            Err(err) if err.is_transient() => {
                tracing::warn!(exporter = %self.id, target = %self.target, error = %err,
                    "database unreachable at start; data waits in the queue until it answers");
                Ok(())
            }
            Err(err) => Err(anyhow!("cannot use {}: {err}", self.target)),
        }
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        self.ensure_schema()
            .await
            .map_err(StoreError::into_export_error)?;
        let resources = match payload {
            Payload::Traces(resources) => resources,
            Payload::Alerts(alerts) => return self.record_alerts(alerts).await,
            _ => return Ok(()),
        };
        let batch = self.mapping.batch(resources);
        if batch.skipped > 0 {
            self.counts.skipped.increment(batch.skipped as u64);
            tracing::debug!(exporter = %self.id, spans = batch.skipped, "spans without a valid trace or span id not stored");
        }
        let written = write(&**self.backend()?, &batch)
            .await
            .map_err(|err| StoreError::from(err).into_export_error())?;
        self.counts.stored.increment(written.stored as u64);
        self.counts.duplicate.increment(written.duplicates as u64);
        Ok(())
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        self.stop.cancel();
        let task = self
            .retention_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        if let Some(backend) = self.backend.get() {
            backend.pool().close().await;
        }
        Ok(())
    }
}
