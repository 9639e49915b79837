//! The `langsmith` exporter: spans, already normalised, costed and
//! sanitised, become LangSmith runs, sent as the LangSmith SDK sends them.
//!
//! ```yaml
//! exporters:
//!   langsmith:
//!     endpoint: https://api.smith.langchain.com  # default: $LANGSMITH_ENDPOINT, else this
//!     api_key: ${env:LANGSMITH_API_KEY}          # default: $LANGSMITH_API_KEY
//!     project: my-agents                         # default: $LANGSMITH_PROJECT, else "default"
//!     workspace_id: ""                           # X-Tenant-Id; default: $LANGSMITH_WORKSPACE_ID
//!     mode: runs                                 # runs | otlp (forward to {endpoint}/otel/v1/traces)
//!     batch_size: 100                            # runs per request (or /info's size_limit if lower)
//!     flush_interval: 5s                         # a batch waits at most this long
//!     max_batch_bytes: 20971520                  # per request (or /info's size_limit_bytes if lower)
//!     rate_limit: 10                             # requests per second; 0: no cap
//!     max_concurrent_requests: 4
//!     max_buffered_runs: 100000                  # runs held before export pushes back
//!     info_refresh_interval: 5m                  # how often GET /info is read again
//!     auth_retry_interval: 60s                   # how often a refused key is tried again
//!     trace_window:
//!       hold_for: 30s                            # how long a run waits for a parent that may never come
//!       forget_after: 2m                         # a trace's placed runs are forgotten when idle this long
//!       remembered_roots: 100000
//!     spool:
//!       enabled: true
//!       directory: ./lookout-data/langsmith-spool/langsmith   # default: per exporter name
//!       max_bytes: 1073741824
//!     # and the helper's: timeout (per request), retry_on_failure, sending_queue
//! ```
//!
//! Layout: `mapping` and `messages` turn a span into a draft run,
//! `window` gives it its ids and dotted order, `delivery` batches and
//! sends with the helper's retries, `rate` caps requests, `spool` keeps
//! what LangSmith could not take, `client` speaks HTTP and `wire` lays
//! out bodies. `/api/langsmith-status` on the telemetry endpoint shows
//! the connection.

mod client;
mod delivery;
mod mapping;
mod rate;
mod run;
mod spool;
mod window;
mod wire;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use metrics::counter;
use serde::Deserialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::otlp::http::HttpTransport;
use crate::otlp::{Compression, OtlpExporterConfig, Protocol};
use client::Client;
use delivery::{Delivery, DeliveryConfig};
use run::Run;
use spool::Spool;
use window::{TraceWindow, WindowConfig};

pub use mapping::{Context as MappingContext, draft};
pub use run::{Draft, RunCore, derive_run_id, dotted_segment, trace_uuid};

pub const STATUS_PAGE: &str = "langsmith-status";
const HOSTED_DOMAIN: &str = "smith.langchain.com";

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "langsmith",
        signals: &[Signal::Traces],
        build: |id: &ComponentId, raw, helper| {
            let config: LangSmithConfig = parse_config(raw)?;
            let exporter = LangSmithExporter::new(id, config, helper, &|name| {
                std::env::var(name).ok().filter(|value| !value.is_empty())
            })?;
            Ok(Box::new(exporter))
        },
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Runs over `/runs/multipart` or `/runs/batch`.
    #[default]
    Runs,
    /// OTLP/HTTP to LangSmith's own OTel endpoint.
    Otlp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LangSmithConfig {
    pub endpoint: Option<String>,
    pub api_key: Option<String>,
    pub project: Option<String>,
    pub workspace_id: Option<String>,
    pub mode: Mode,
    pub batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub max_batch_bytes: usize,
    pub rate_limit: f64,
    pub max_concurrent_requests: usize,
    pub max_buffered_runs: usize,
    #[serde(with = "humantime_serde")]
    pub info_refresh_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub auth_retry_interval: Duration,
    pub trace_window: TraceWindowConfig,
    pub spool: SpoolConfig,
}

impl Default for LangSmithConfig {
    fn default() -> Self {
        LangSmithConfig {
            endpoint: None,
            api_key: None,
            project: None,
            workspace_id: None,
            mode: Mode::Runs,
            batch_size: 100,
            flush_interval: Duration::from_secs(5),
            // The SDK's `_SIZE_LIMIT_BYTES`.
            max_batch_bytes: 20_971_520,
            rate_limit: 10.0,
            max_concurrent_requests: 4,
            max_buffered_runs: 100_000,
            info_refresh_interval: Duration::from_secs(300),
            auth_retry_interval: Duration::from_secs(60),
            trace_window: TraceWindowConfig::default(),
            spool: SpoolConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceWindowConfig {
    #[serde(with = "humantime_serde")]
    pub hold_for: Duration,
    #[serde(with = "humantime_serde")]
    pub forget_after: Duration,
    pub remembered_roots: usize,
}

impl Default for TraceWindowConfig {
    fn default() -> Self {
        TraceWindowConfig {
            hold_for: Duration::from_secs(30),
            forget_after: Duration::from_secs(120),
            remembered_roots: 100_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    pub enabled: bool,
    pub directory: Option<PathBuf>,
    pub max_bytes: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            enabled: true,
            directory: None,
            max_bytes: 1 << 30,
        }
    }
}

/// The settings after defaults from the environment are applied.
struct Resolved {
    endpoint: String,
    api_key: Option<String>,
    project: String,
    workspace_id: Option<String>,
}

fn resolve(
    config: &LangSmithConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Resolved, BuildError> {
    let first = |keys: &[&str]| keys.iter().find_map(|key| env(key));
    let given = |value: &Option<String>| value.clone().filter(|v| !v.trim().is_empty());
    let endpoint = given(&config.endpoint)
        .or_else(|| first(&["LANGSMITH_ENDPOINT", "LANGCHAIN_ENDPOINT"]))
        .unwrap_or_else(|| format!("https://api.{HOSTED_DOMAIN}"));
    let api_key =
        given(&config.api_key).or_else(|| first(&["LANGSMITH_API_KEY", "LANGCHAIN_API_KEY"]));
    if api_key.is_none() && endpoint.contains(HOSTED_DOMAIN) {
        return Err(BuildError::at(
            &["api_key"],
            "LangSmith's hosted API needs a key: set api_key (for example ${env:LANGSMITH_API_KEY}) or the LANGSMITH_API_KEY variable",
        ));
    }
    Ok(Resolved {
        endpoint: endpoint
            .trim()
            .trim_matches('"')
            .trim_end_matches('/')
            .to_string(),
        api_key,
        project: given(&config.project)
            .or_else(|| first(&["LANGSMITH_PROJECT", "LANGCHAIN_PROJECT"]))
            .unwrap_or_else(|| "default".to_string()),
        workspace_id: given(&config.workspace_id).or_else(|| first(&["LANGSMITH_WORKSPACE_ID"])),
    })
}

fn check(config: &LangSmithConfig) -> Result<(), BuildError> {
    let positive = |value: usize, key: &str| {
        if value == 0 {
            Err(BuildError::at(&[key], "must be at least 1"))
        } else {
            Ok(())
        }
    };
    positive(config.batch_size, "batch_size")?;
    positive(config.max_batch_bytes, "max_batch_bytes")?;
    positive(config.max_concurrent_requests, "max_concurrent_requests")?;
    positive(config.max_buffered_runs, "max_buffered_runs")?;
    if config.max_buffered_runs > Semaphore::MAX_PERMITS {
        return Err(BuildError::at(&["max_buffered_runs"], "is too large"));
    }
    if !(config.rate_limit.is_finite() && config.rate_limit >= 0.0) {
        return Err(BuildError::at(
            &["rate_limit"],
            "must be a number of requests per second, 0 for no cap",
        ));
    }
    for (value, key) in [
        (config.flush_interval, "flush_interval"),
        (config.info_refresh_interval, "info_refresh_interval"),
        (config.auth_retry_interval, "auth_retry_interval"),
    ] {
        if value.is_zero() {
            return Err(BuildError::at(&[key], "must be above zero"));
        }
    }
    if config.trace_window.forget_after < config.trace_window.hold_for {
        return Err(BuildError::at(
            &["trace_window", "forget_after"],
            "must be at least trace_window.hold_for",
        ));
    }
    if config.spool.enabled && config.spool.max_bytes == 0 {
        return Err(BuildError::at(
            &["spool", "max_bytes"],
            "must be above zero",
        ));
    }
    Ok(())
}

pub struct LangSmithExporter {
    inner: Inner,
}

enum Inner {
    Runs(Box<RunsExporter>),
    Otlp(HttpTransport),
}

impl LangSmithExporter {
    pub fn new(
        id: &ComponentId,
        config: LangSmithConfig,
        helper: &ExporterHelperConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<LangSmithExporter, BuildError> {
        check(&config)?;
        let resolved = resolve(&config, env)?;
        let inner = match config.mode {
            Mode::Otlp => Inner::Otlp(otlp_transport(&resolved)?),
            Mode::Runs => Inner::Runs(Box::new(RunsExporter::new(id, config, helper, resolved)?)),
        };
        Ok(LangSmithExporter { inner })
    }
}

/// `mode: otlp`: OTLP/HTTP protobuf to `{endpoint}/otel/v1/traces`, with
/// the headers LangSmith's OTel endpoint reads.
fn otlp_transport(resolved: &Resolved) -> Result<HttpTransport, BuildError> {
    let mut headers = std::collections::BTreeMap::new();
    if let Some(key) = &resolved.api_key {
        headers.insert("x-api-key".to_string(), key.clone());
    }
    if let Some(workspace) = &resolved.workspace_id {
        headers.insert("x-tenant-id".to_string(), workspace.clone());
    }
    headers.insert("langsmith-project".to_string(), resolved.project.clone());
    let config = OtlpExporterConfig {
        endpoint: format!("{}/otel", resolved.endpoint),
        protocol: Protocol::HttpProtobuf,
        compression: Compression::Gzip,
        headers,
    };
    HttpTransport::new(&config).map_err(|err| {
        // Never echo a header value: it holds the key.
        if err.to_string().contains("headers") {
            BuildError::at(&["api_key"], "holds characters an HTTP header cannot carry")
        } else {
            err
        }
    })
}

/// `mode: runs`.
struct RunsExporter {
    id: String,
    config: LangSmithConfig,
    project: String,
    timeout: Duration,
    retry: lookout_pipelines::exporter_helper::RetryConfig,
    client: Arc<Client>,
    handoff: Arc<Handoff>,
    /// Runs in memory, from `export` until their batch settles.
    permits: Arc<Semaphore>,
    pending: Mutex<Option<mpsc::UnboundedReceiver<Vec<Run>>>>,
    delivery: OnceLock<Arc<Delivery>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    batcher: Mutex<Option<JoinHandle<()>>>,
    /// Ends the window ticker and the `/info` refresher.
    background: CancellationToken,
}

impl RunsExporter {
    fn new(
        id: &ComponentId,
        config: LangSmithConfig,
        helper: &ExporterHelperConfig,
        resolved: Resolved,
    ) -> Result<RunsExporter, BuildError> {
        let client = Client::new(
            &resolved.endpoint,
            resolved.api_key.as_deref(),
            resolved.workspace_id.as_deref(),
        )?;
        let window = TraceWindow::new(WindowConfig {
            hold_for: config.trace_window.hold_for,
            max_held_runs: config.max_buffered_runs / 2,
            forget_after: config.trace_window.forget_after,
            remembered_roots: config.trace_window.remembered_roots,
        });
        let (sender, receiver) = mpsc::unbounded_channel();
        Ok(RunsExporter {
            id: id.to_string(),
            project: resolved.project,
            timeout: helper.timeout,
            retry: helper.retry_on_failure.clone(),
            client: Arc::new(client),
            handoff: Arc::new(Handoff {
                id: id.to_string(),
                window: Mutex::new(window),
                runs: Mutex::new(Some(sender)),
            }),
            permits: Arc::new(Semaphore::new(config.max_buffered_runs)),
            pending: Mutex::new(Some(receiver)),
            delivery: OnceLock::new(),
            tasks: Mutex::new(Vec::new()),
            batcher: Mutex::new(None),
            background: CancellationToken::new(),
            config,
        })
    }

    fn spool_directory(&self) -> PathBuf {
        self.config.spool.directory.clone().unwrap_or_else(|| {
            let name: String = self
                .id
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            PathBuf::from("lookout-data/langsmith-spool").join(name)
        })
    }

    async fn start(&self) -> anyhow::Result<()> {
        let spool = if self.config.spool.enabled {
            let directory = self.spool_directory();
            let spool =
                Spool::open(&directory, self.config.spool.max_bytes).with_context(|| {
                    format!(
                        "cannot open the LangSmith spool directory {}",
                        directory.display()
                    )
                })?;
            let size = spool.size();
            if size.runs > 0 {
                tracing::info!(exporter = %self.id, runs = size.runs, batches = size.batches, "replaying runs spooled before the last stop");
            }
            Some(Arc::new(spool))
        } else {
            None
        };
        let delivery = Arc::new(Delivery::new(
            &self.id,
            DeliveryConfig {
                batch_size: self.config.batch_size,
                max_batch_bytes: self.config.max_batch_bytes,
                flush_interval: self.config.flush_interval,
                max_concurrent_requests: self.config.max_concurrent_requests,
                timeout: self.timeout,
                retry: self.retry.clone(),
                rate_limit: self.config.rate_limit,
                auth_retry_interval: self.config.auth_retry_interval,
            },
            self.client.clone(),
            spool,
        ));
        let _ = self.delivery.set(delivery.clone());
        self.read_info().await;
        let receiver = lock(&self.pending).take();
        if let Some(receiver) = receiver {
            let batcher =
                tokio::spawn(delivery.clone().run_batcher(receiver, self.permits.clone()));
            *lock(&self.batcher) = Some(batcher);
        }
        let mut tasks = lock(&self.tasks);
        tasks.push(tokio::spawn(delivery.run_replayer()));
        tasks.push(tokio::spawn(
            self.handoff
                .clone()
                .tick_every_second(self.background.clone()),
        ));
        tasks.push(tokio::spawn(refresh_info(
            self.client.clone(),
            self.config.info_refresh_interval,
            self.timeout,
            self.background.clone(),
        )));
        Ok(())
    }

    async fn read_info(&self) {
        match self.client.refresh_info(self.timeout).await {
            Ok(info) => tracing::info!(
                exporter = %self.id,
                endpoint = %self.client.endpoint(),
                project = %self.project,
                multipart = info.use_multipart,
                zstd = info.zstd,
                "LangSmith ingestion settings read"
            ),
            Err(reason) => tracing::warn!(
                exporter = %self.id,
                endpoint = %self.client.endpoint(),
                %reason,
                "cannot read LangSmith's /info; sending multipart without compression until it answers"
            ),
        }
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let Payload::Traces(resources) = payload else {
            return Ok(());
        };
        let spans: usize = resources
            .iter()
            .flat_map(|resource| &resource.scope_spans)
            .map(|scope| scope.spans.len())
            .sum();
        if spans == 0 {
            return Ok(());
        }
        // Wait for room before changing anything, so that a timeout here
        // and the helper's retry cannot add the same spans twice.
        let wanted = spans.min(self.config.max_buffered_runs) as u32;
        let permits = self
            .permits
            .acquire_many(wanted)
            .await
            .map_err(|_| ExportError::permanent("the exporter is shut down"))?;
        permits.forget();
        let mut drafts = Vec::with_capacity(spans);
        let mut unmappable = 0;
        for resource in resources {
            let attributes = resource.resource.as_ref().map(|r| r.attributes.as_slice());
            for scope in &resource.scope_spans {
                let context = mapping::Context {
                    resource: attributes.unwrap_or_default(),
                    scope_name: scope.scope.as_ref().map_or("", |s| s.name.as_str()),
                    default_project: &self.project,
                };
                for span in &scope.spans {
                    match mapping::draft(span, &context) {
                        Ok(draft) => drafts.push(draft),
                        Err(err) => {
                            unmappable += 1;
                            tracing::debug!(exporter = %self.id, error = %err, "span skipped");
                        }
                    }
                }
            }
        }
        let delivery = self.delivery()?;
        if unmappable > 0 {
            delivery.unmappable(unmappable);
            self.permits.add_permits(unmappable.min(wanted as usize));
        }
        delivery.buffered(drafts.len());
        self.handoff.add(drafts)
    }

    fn delivery(&self) -> Result<&Arc<Delivery>, ExportError> {
        self.delivery
            .get()
            .ok_or_else(|| ExportError::permanent("the exporter was not started"))
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        self.background.cancel();
        self.handoff.flush_and_close();
        let batcher = lock(&self.batcher).take();
        if let Some(batcher) = batcher {
            let _ = batcher.await;
        }
        if let Some(delivery) = self.delivery.get() {
            delivery.stop_token().cancel();
        }
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        for task in tasks {
            let _ = task.await;
        }
        Ok(())
    }

    fn status(&self) -> Option<serde_json::Value> {
        let delivery = self.delivery.get()?;
        let held = lock(&self.handoff.window).held();
        let mut status = delivery.status(held);
        status["project"] = self.project.clone().into();
        status["mode"] = "runs".into();
        Some(status)
    }
}

/// The trace window and the channel to the batcher, shared by `export`
/// and the ticker that releases runs which waited long enough.
struct Handoff {
    id: String,
    window: Mutex<TraceWindow>,
    runs: Mutex<Option<mpsc::UnboundedSender<Vec<Run>>>>,
}

impl Handoff {
    fn add(&self, drafts: Vec<Draft>) -> Result<(), ExportError> {
        let mut ready = Vec::with_capacity(drafts.len());
        let now = Instant::now();
        {
            let mut window = lock(&self.window);
            for draft in drafts {
                window.add(draft, now, &mut ready);
            }
            self.count_orphans(&mut window);
        }
        self.hand_over(ready)
    }

    fn hand_over(&self, runs: Vec<Run>) -> Result<(), ExportError> {
        if runs.is_empty() {
            return Ok(());
        }
        match lock(&self.runs).as_ref() {
            Some(sender) if sender.send(runs).is_ok() => Ok(()),
            _ => Err(ExportError::permanent("the exporter is shut down")),
        }
    }

    fn count_orphans(&self, window: &mut TraceWindow) {
        let orphans = window.take_orphans();
        if orphans > 0 {
            counter!("lookout_langsmith_orphan_runs_total", "exporter" => self.id.clone())
                .increment(orphans);
        }
    }

    /// Releases runs that waited `hold_for` for a parent, every second,
    /// so that a quiet pipeline still lets them go.
    async fn tick_every_second(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(Duration::from_secs(1));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stop.cancelled() => return,
            }
            let mut ready = Vec::new();
            {
                let mut window = lock(&self.window);
                window.expire(Instant::now(), &mut ready);
                self.count_orphans(&mut window);
            }
            let _ = self.hand_over(ready);
        }
    }

    /// Releases everything held and closes the channel: at shutdown.
    fn flush_and_close(&self) {
        let mut ready = Vec::new();
        {
            let mut window = lock(&self.window);
            window.flush(&mut ready);
            self.count_orphans(&mut window);
        }
        let _ = self.hand_over(ready);
        lock(&self.runs).take();
    }
}

async fn refresh_info(
    client: Arc<Client>,
    every: Duration,
    timeout: Duration,
    stop: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        if let Err(reason) = client.refresh_info(timeout).await {
            tracing::debug!(%reason, "LangSmith /info not refreshed; keeping the last settings");
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl Exporter for LangSmithExporter {
    async fn start(&self) -> anyhow::Result<()> {
        let Inner::Runs(runs) = &self.inner else {
            return Ok(());
        };
        runs.start().await
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        match &self.inner {
            Inner::Runs(runs) => runs.export(payload).await,
            Inner::Otlp(transport) => transport.export(payload).await,
        }
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        match &self.inner {
            Inner::Runs(runs) => runs.shutdown().await,
            Inner::Otlp(_) => Ok(()),
        }
    }

    fn status(&self) -> Option<(&'static str, serde_json::Value)> {
        match &self.inner {
            Inner::Runs(runs) => Some((STATUS_PAGE, runs.status()?)),
            Inner::Otlp(_) => None,
        }
    }
}

#[cfg(test)]
mod tests;
