//! Delivery: runs → batches → LangSmith, with the shared retry, a rate
//! cap, and the spool when LangSmith stays away.
//!
//! The batcher cuts a batch at `batch_size` runs, `max_batch_bytes`, or
//! `flush_interval` after its first run, whichever comes first (and at
//! `/info`'s limits when they are lower). Up to `max_concurrent_requests`
//! batches are in flight; each is retried through the exporter helper's
//! `send_with_retry`. A batch that spends its retry budget goes to the
//! spool, and while the spool holds anything new batches join it there,
//! so that the replayer, which sends the oldest spooled batch first,
//! keeps their order. A refused API key also sends batches to the spool:
//! nothing is lost while the key is fixed, and the replayer probes only
//! every `auth_retry_interval` rather than spinning.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::StatusCode;
use lookout_pipelines::ExportError;
use lookout_pipelines::exporter_helper::{
    Backoff, GaveUp, RetryConfig, RetryPolicy, send_with_retry,
};
use metrics::{Counter, Gauge, counter, gauge};
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Delivered, Refusal};
use super::rate::RateLimiter;
use super::run::{Run, now_rfc3339};
use super::spool::Spool;

#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub batch_size: usize,
    pub max_batch_bytes: usize,
    pub flush_interval: Duration,
    pub max_concurrent_requests: usize,
    pub timeout: Duration,
    pub retry: RetryConfig,
    pub rate_limit: f64,
    pub auth_retry_interval: Duration,
}

/// What happened to runs, for `/api/langsmith-status` and the metrics.
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    spooled: AtomicU64,
    spool_dropped: AtomicU64,
    /// Runs accepted by `export` and not yet delivered, spooled or failed.
    buffered: AtomicUsize,
}

struct Metrics {
    sent: Counter,
    spooled: Counter,
    auth_failures: Counter,
    request_bytes: Counter,
    spool_bytes: Gauge,
    spool_runs: Gauge,
    buffered: Gauge,
    exporter: String,
}

impl Metrics {
    fn new(exporter: &str) -> Metrics {
        let label = [("exporter", exporter.to_string())];
        Metrics {
            sent: counter!("lookout_langsmith_runs_sent_total", &label),
            spooled: counter!("lookout_langsmith_runs_spooled_total", &label),
            auth_failures: counter!("lookout_langsmith_auth_failures_total", &label),
            request_bytes: counter!("lookout_langsmith_request_bytes_total", &label),
            spool_bytes: gauge!("lookout_langsmith_spool_bytes", &label),
            spool_runs: gauge!("lookout_langsmith_spool_runs", &label),
            buffered: gauge!("lookout_langsmith_buffered_runs", &label),
            exporter: exporter.to_string(),
        }
    }

    fn failed(&self, reason: &'static str, runs: usize) {
        let labels = [
            ("exporter", self.exporter.clone()),
            ("reason", reason.to_string()),
        ];
        counter!("lookout_langsmith_runs_failed_total", &labels).increment(runs as u64);
    }

    fn request(&self, outcome: &'static str) {
        let labels = [
            ("exporter", self.exporter.clone()),
            ("outcome", outcome.to_string()),
        ];
        counter!("lookout_langsmith_requests_total", &labels).increment(1);
    }
}

#[derive(Default)]
struct Connection {
    /// False after a batch spent its retry budget or a replay failed;
    /// true again at the next success.
    unreachable: bool,
    /// Set while LangSmith refuses the key, with when to try it again.
    unauthorized: Option<(StatusCode, Instant)>,
    last_success: Option<String>,
    last_error: Option<(String, String)>,
}

pub struct Delivery {
    exporter: String,
    config: DeliveryConfig,
    client: Arc<Client>,
    limiter: RateLimiter,
    spool: Option<Arc<Spool>>,
    connection: Mutex<Connection>,
    counters: Counters,
    metrics: Metrics,
    replay_wake: Notify,
    /// Ends retrying: whatever is still being sent goes to the spool.
    stop: CancellationToken,
}

/// How one attempt at a batch ended, beyond success.
enum Failure {
    Unauthorized(StatusCode),
    Rejected(StatusCode),
    Retryable(ExportError),
}

impl Delivery {
    pub fn new(
        exporter: &str,
        config: DeliveryConfig,
        client: Arc<Client>,
        spool: Option<Arc<Spool>>,
    ) -> Delivery {
        let delivery = Delivery {
            exporter: exporter.to_string(),
            limiter: RateLimiter::new(config.rate_limit),
            config,
            client,
            spool,
            connection: Mutex::new(Connection::default()),
            counters: Counters {
                sent: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                spooled: AtomicU64::new(0),
                spool_dropped: AtomicU64::new(0),
                buffered: AtomicUsize::new(0),
            },
            metrics: Metrics::new(exporter),
            replay_wake: Notify::new(),
            stop: CancellationToken::new(),
        };
        delivery.update_spool_gauges();
        delivery
    }

    pub fn stop_token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Counts runs handed over by `export`.
    pub fn buffered(&self, runs: usize) {
        let now = self.counters.buffered.fetch_add(runs, Ordering::Relaxed) + runs;
        self.metrics.buffered.set(now as f64);
    }

    /// Counts runs that could not become runs at all.
    pub fn unmappable(&self, spans: usize) {
        self.counters
            .failed
            .fetch_add(spans as u64, Ordering::Relaxed);
        self.metrics.failed("unmappable", spans);
    }

    fn settled(&self, runs: usize) {
        let before = self.counters.buffered.fetch_sub(runs, Ordering::Relaxed);
        self.metrics
            .buffered
            .set(before.saturating_sub(runs) as f64);
    }

    /// Forms batches from `runs` until the channel closes, sends them, and
    /// returns when every batch is delivered, spooled or failed. `permits`
    /// are released per run as batches settle.
    pub async fn run_batcher(
        self: Arc<Self>,
        mut runs: mpsc::UnboundedReceiver<Vec<Run>>,
        permits: Arc<Semaphore>,
    ) {
        let in_flight = Arc::new(Semaphore::new(self.config.max_concurrent_requests));
        let mut sending = JoinSet::new();
        let mut batch = Batch::default();
        loop {
            let deadline = batch.deadline;
            let received = tokio::select! {
                received = runs.recv() => received,
                _ = sleep_until(deadline) => {
                    self.dispatch(std::mem::take(&mut batch), &in_flight, &permits, &mut sending).await;
                    continue;
                }
            };
            let Some(received) = received else { break };
            for run in received {
                let size = run.wire_size();
                if !batch.runs.is_empty() && !self.fits(&batch, size) {
                    self.dispatch(
                        std::mem::take(&mut batch),
                        &in_flight,
                        &permits,
                        &mut sending,
                    )
                    .await;
                }
                batch.push(run, size, self.config.flush_interval);
            }
            if batch.runs.len() >= self.batch_size() {
                self.dispatch(
                    std::mem::take(&mut batch),
                    &in_flight,
                    &permits,
                    &mut sending,
                )
                .await;
            }
        }
        self.dispatch(batch, &in_flight, &permits, &mut sending)
            .await;
        self.drain(sending).await;
    }

    /// Waits for the batches in flight; after `timeout` the rest stop
    /// retrying and go to the spool.
    async fn drain(&self, mut sending: JoinSet<()>) {
        let drained = tokio::time::timeout(self.config.timeout, async {
            while sending.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            self.stop.cancel();
            while sending.join_next().await.is_some() {}
        }
        self.stop.cancel();
    }

    fn batch_size(&self) -> usize {
        let info = self.client.info();
        info.size_limit.map_or(self.config.batch_size, |limit| {
            limit.min(self.config.batch_size)
        })
    }

    fn fits(&self, batch: &Batch, size: usize) -> bool {
        let info = self.client.info();
        let max_bytes = info
            .size_limit_bytes
            .map_or(self.config.max_batch_bytes, |limit| {
                limit.min(self.config.max_batch_bytes)
            });
        batch.runs.len() < self.batch_size() && batch.bytes + size <= max_bytes
    }

    async fn dispatch(
        self: &Arc<Self>,
        batch: Batch,
        in_flight: &Arc<Semaphore>,
        permits: &Arc<Semaphore>,
        sending: &mut JoinSet<()>,
    ) {
        if batch.runs.is_empty() {
            return;
        }
        while sending.try_join_next().is_some() {}
        // The semaphore is never closed.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let this = self.clone();
        let permits = permits.clone();
        sending.spawn(async move {
            let runs = batch.runs.len();
            this.deliver(batch.runs).await;
            this.settled(runs);
            permits.add_permits(runs);
            drop(slot);
        });
    }

    /// Sends one batch with retries, or spools it.
    async fn deliver(&self, runs: Vec<Run>) {
        if self.stop.is_cancelled() || self.spool_first() {
            self.to_spool(runs).await;
            return;
        }
        let (path, body) = self.client.encode(&runs);
        let policy = RetryPolicy {
            retry: &self.config.retry,
            // The request has its own timeout; this one also covers the
            // wait for a rate-limit token.
            timeout: self.config.timeout + Duration::from_secs(60),
            stop: &self.stop,
        };
        let on_retry = |reason: &str, wait: Duration| {
            tracing::warn!(exporter = %self.exporter, reason, wait = ?wait, "LangSmith request failed; will retry");
            self.record_error(reason.to_string());
        };
        let attempt = || async {
            match self.attempt(path, &body).await {
                Ok(()) => Ok(()),
                Err(Failure::Retryable(err)) => Err(err),
                Err(Failure::Unauthorized(status)) => Err(ExportError::permanent(format!(
                    "LangSmith refused the API key ({status})"
                ))),
                Err(Failure::Rejected(status)) => Err(ExportError::permanent(format!(
                    "LangSmith answered {status}"
                ))),
            }
        };
        match send_with_retry(&policy, on_retry, attempt).await {
            Ok(()) => self.delivered(runs.len()),
            Err(GaveUp::Permanent(_)) if self.lock().unauthorized.is_some() => {
                self.to_spool(runs).await
            }
            Err(GaveUp::Permanent(reason)) => {
                tracing::error!(exporter = %self.exporter, runs = runs.len(), reason, "LangSmith rejected a batch; it will not be retried");
                self.record_error(format!("{reason}: the batch was rejected"));
                self.failed(runs.len(), "rejected");
            }
            Err(gave_up) => {
                tracing::warn!(exporter = %self.exporter, runs = runs.len(), reason = %gave_up, "LangSmith unreachable; spooling the batch");
                self.lock().unreachable = true;
                self.to_spool(runs).await;
            }
        }
    }

    /// One request: a rate-limit token, then the POST.
    async fn attempt(&self, path: &str, body: &super::wire::Body) -> Result<(), Failure> {
        self.limiter.acquire().await;
        self.metrics
            .request_bytes
            .increment(body.bytes.len() as u64);
        match self.client.send(path, body, self.config.timeout).await {
            Ok(Delivered::Accepted) => {
                self.metrics.request("accepted");
                Ok(())
            }
            Ok(Delivered::Duplicate) => {
                self.metrics.request("duplicate");
                Ok(())
            }
            Err(Ok(Refusal::Unauthorized(status))) => {
                self.metrics.request("unauthorized");
                self.refused_key(status);
                Err(Failure::Unauthorized(status))
            }
            Err(Ok(Refusal::Rejected(status))) => {
                self.metrics.request("rejected");
                Err(Failure::Rejected(status))
            }
            Err(Err(err)) => {
                self.metrics.request("retryable");
                Err(Failure::Retryable(err))
            }
        }
    }

    /// New batches go to the spool while it holds older ones (to keep
    /// their order) or while the key is refused.
    fn spool_first(&self) -> bool {
        let Some(spool) = &self.spool else {
            return false;
        };
        self.lock().unauthorized.is_some() || !spool.is_empty()
    }

    async fn to_spool(&self, runs: Vec<Run>) {
        let count = runs.len();
        let Some(spool) = &self.spool else {
            tracing::error!(exporter = %self.exporter, runs = count, "LangSmith could not take a batch and the spool is off; the runs are dropped");
            self.failed(count, "undeliverable");
            return;
        };
        let spool = spool.clone();
        let pushed = tokio::task::spawn_blocking(move || spool.push(&runs)).await;
        match pushed.unwrap_or_else(|err| Err(std::io::Error::other(err))) {
            Ok(pushed) => {
                self.counters
                    .spooled
                    .fetch_add(count as u64, Ordering::Relaxed);
                self.metrics.spooled.increment(count as u64);
                if pushed.dropped_runs > 0 {
                    self.counters
                        .spool_dropped
                        .fetch_add(pushed.dropped_runs as u64, Ordering::Relaxed);
                    tracing::error!(exporter = %self.exporter, runs = pushed.dropped_runs, "the LangSmith spool is full; its oldest runs were dropped");
                    self.failed(pushed.dropped_runs, "spool_full");
                }
            }
            Err(err) => {
                tracing::error!(exporter = %self.exporter, runs = count, error = %err, "cannot write to the LangSmith spool; the runs are dropped");
                self.failed(count, "spool_error");
            }
        }
        self.update_spool_gauges();
        self.replay_wake.notify_one();
    }

    /// Sends spooled batches, oldest first, until `stop`.
    pub async fn run_replayer(self: Arc<Self>) {
        let Some(spool) = self.spool.clone() else {
            return;
        };
        let mut backoff = Backoff::new(&self.config.retry);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            let reader = spool.clone();
            let Ok(oldest) = tokio::task::spawn_blocking(move || reader.oldest()).await else {
                return;
            };
            let (sequence, runs) = match oldest {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    tokio::select! {
                        _ = self.replay_wake.notified() => {}
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = self.stop.cancelled() => return,
                    }
                    continue;
                }
                Err(unreadable) => {
                    tracing::error!(exporter = %self.exporter, runs = unreadable.runs, reason = %unreadable.reason, "a spooled LangSmith batch cannot be read back; it is dropped");
                    self.failed(unreadable.runs, "spool_unreadable");
                    self.update_spool_gauges();
                    continue;
                }
            };
            let wait = match self.replay(&runs).await {
                Ok(()) => {
                    spool.remove(sequence);
                    self.update_spool_gauges();
                    self.delivered(runs.len());
                    backoff = Backoff::new(&self.config.retry);
                    continue;
                }
                Err(Failure::Rejected(status)) => {
                    spool.remove(sequence);
                    self.update_spool_gauges();
                    tracing::error!(exporter = %self.exporter, runs = runs.len(), %status, "LangSmith rejected a spooled batch; it is dropped");
                    self.failed(runs.len(), "rejected");
                    continue;
                }
                Err(Failure::Unauthorized(_)) => self.config.auth_retry_interval,
                Err(Failure::Retryable(err)) => {
                    self.record_error(err.to_string());
                    self.lock().unreachable = true;
                    let retry_after = match err {
                        ExportError::Transient { retry_after, .. } => retry_after,
                        ExportError::Permanent { .. } => None,
                    };
                    backoff.next_wait().max(retry_after.unwrap_or_default())
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.cancelled() => return,
            }
        }
    }

    /// One attempt at a spooled batch, encoded for what `/info` says now.
    /// While the key is refused, it waits for the next probe time first.
    async fn replay(&self, runs: &[Run]) -> Result<(), Failure> {
        let probe_at = self.lock().unauthorized.map(|(_, at)| at);
        if let Some(at) = probe_at {
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = self.stop.cancelled() => return Err(Failure::Retryable(ExportError::transient("stopping"))),
            }
        }
        let (path, body) = self.client.encode(runs);
        self.attempt(path, &body).await
    }

    fn delivered(&self, runs: usize) {
        self.counters.sent.fetch_add(runs as u64, Ordering::Relaxed);
        self.metrics.sent.increment(runs as u64);
        let mut connection = self.lock();
        if connection.unauthorized.take().is_some() {
            tracing::info!(exporter = %self.exporter, "LangSmith accepts the API key again");
        }
        if std::mem::take(&mut connection.unreachable) {
            tracing::info!(exporter = %self.exporter, "LangSmith is reachable again");
        }
        connection.last_success = Some(now_rfc3339());
    }

    fn failed(&self, runs: usize, reason: &'static str) {
        self.counters
            .failed
            .fetch_add(runs as u64, Ordering::Relaxed);
        self.metrics.failed(reason, runs);
    }

    fn record_error(&self, message: String) {
        self.lock().last_error = Some((now_rfc3339(), message));
    }

    /// Logs a refused key once per outage, with the setting to fix.
    fn refused_key(&self, status: StatusCode) {
        self.metrics.auth_failures.increment(1);
        let next_probe = Instant::now() + self.config.auth_retry_interval;
        let mut connection = self.lock();
        let first = connection.unauthorized.is_none();
        connection.unauthorized = Some((status, next_probe));
        let message = format!(
            "LangSmith refused the API key ({status}): set exporters.{}.api_key (or LANGSMITH_API_KEY) to a valid key{}",
            self.exporter,
            if status == StatusCode::FORBIDDEN {
                ", and workspace_id to a workspace it may write to"
            } else {
                ""
            }
        );
        connection.last_error = Some((now_rfc3339(), message.clone()));
        drop(connection);
        if first {
            let retry = humantime::format_duration(self.config.auth_retry_interval);
            tracing::error!(exporter = %self.exporter, %status, "{message}; runs are kept in the spool and the key is tried again every {retry}");
        }
    }

    fn update_spool_gauges(&self) {
        if let Some(spool) = &self.spool {
            let size = spool.size();
            self.metrics.spool_bytes.set(size.bytes as f64);
            self.metrics.spool_runs.set(size.runs as f64);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The body of `/api/langsmith-status`.
    pub fn status(&self, held_runs: usize) -> Value {
        let connection = self.lock();
        let authorized = connection.unauthorized.is_none();
        let reachable = !connection.unreachable;
        let info = self.client.info();
        let spool = self.spool.as_ref().map(|spool| {
            let size = spool.size();
            json!({
                "batches": size.batches,
                "runs": size.runs,
                "bytes": size.bytes,
                "max_bytes": spool.max_bytes(),
                "dropped_runs": self.counters.spool_dropped.load(Ordering::Relaxed),
            })
        });
        json!({
            "ok": reachable && authorized,
            "reachable": reachable,
            "authorized": authorized,
            "endpoint": self.client.endpoint(),
            "transport": if info.use_multipart { "multipart" } else { "batch" },
            "compression": if info.use_multipart && info.zstd { "zstd" } else { "none" },
            "last_success": connection.last_success,
            "last_error": connection.last_error.as_ref().map(|(at, message)| json!({"at": at, "message": message})),
            "queue": {
                "buffered_runs": self.counters.buffered.load(Ordering::Relaxed),
                "held_for_parents": held_runs,
            },
            "spool": spool,
            "runs_sent": self.counters.sent.load(Ordering::Relaxed),
            "runs_failed": self.counters.failed.load(Ordering::Relaxed),
            "runs_spooled": self.counters.spooled.load(Ordering::Relaxed),
        })
    }
}

#[derive(Default)]
struct Batch {
    runs: Vec<Run>,
    bytes: usize,
    deadline: Option<Instant>,
}

impl Batch {
    fn push(&mut self, run: Run, size: usize, flush_interval: Duration) {
        if self.runs.is_empty() {
            self.deadline = Some(Instant::now() + flush_interval);
        }
        self.bytes += size;
        self.runs.push(run);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
