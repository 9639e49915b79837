//! The exporter helper, shared by every exporter as the collector's
//! `exporterhelper` is: a bounded sending queue, consumers that send from
//! it, a timeout per attempt, and retries with backoff that honour the
//! server's Retry-After. Exporters implement only `Exporter::export`.

pub mod queue;
pub mod retry;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_yaml::Value;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::component::{BuildError, ComponentId, ExportError, Exporter, parse_config, split_keys};
use crate::payload::Payload;
use crate::stage_channel::Backpressure;
use crate::telemetry::health::{HealthReporter, Status};
use crate::telemetry::metrics::ExporterMetrics;
pub use queue::{MemoryQueue, PushError, Queue, QueuedRequest, Sizer, WhenFull};
pub use retry::{Backoff, RetryConfig};

/// `sending_queue`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Off: no buffering beyond the requests being sent, and the pipeline
    /// waits for the exporter.
    pub enabled: bool,
    /// Requests sent concurrently.
    pub num_consumers: usize,
    /// Capacity in `sizer` units.
    pub queue_size: usize,
    pub sizer: Sizer,
    pub when_full: WhenFull,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            enabled: true,
            num_consumers: 10,
            queue_size: 20_000,
            sizer: Sizer::Items,
            when_full: WhenFull::Block,
        }
    }
}

fn default_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The helper's part of an exporter's config: `timeout`, `sending_queue`
/// and `retry_on_failure`, as in the collector.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterHelperConfig {
    /// Per attempt.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(default)]
    pub sending_queue: QueueConfig,
    #[serde(default)]
    pub retry_on_failure: RetryConfig,
}

impl Default for ExporterHelperConfig {
    fn default() -> Self {
        ExporterHelperConfig {
            timeout: default_timeout(),
            sending_queue: QueueConfig::default(),
            retry_on_failure: RetryConfig::default(),
        }
    }
}

const HELPER_KEYS: [&str; 3] = ["timeout", "sending_queue", "retry_on_failure"];

impl ExporterHelperConfig {
    /// Takes the helper's keys out of an exporter's raw config and returns
    /// them parsed, with the rest for the exporter's own factory.
    pub fn split_from(raw: Value) -> Result<(ExporterHelperConfig, Value), BuildError> {
        let (helper, own) = split_keys(raw, &HELPER_KEYS)?;
        let config: ExporterHelperConfig = parse_config(helper)?;
        config.check()?;
        Ok((config, own))
    }

    fn check(&self) -> Result<(), BuildError> {
        if self.timeout.is_zero() {
            return Err(BuildError::at(&["timeout"], "must be above zero"));
        }
        if self.sending_queue.num_consumers == 0 {
            return Err(BuildError::at(
                &["sending_queue", "num_consumers"],
                "must be at least 1",
            ));
        }
        if self.sending_queue.queue_size == 0 {
            return Err(BuildError::at(
                &["sending_queue", "queue_size"],
                "must be at least 1",
            ));
        }
        self.retry_on_failure
            .check()
            .map_err(|message| BuildError::at(&["retry_on_failure"], message))
    }

    /// The queue, its sizer and what it does when full. Without a queue,
    /// the exporter holds no more than the requests being sent, and pushes
    /// back on the receivers beyond that.
    fn queue(&self) -> (Arc<dyn Queue>, Sizer, WhenFull) {
        let queue = &self.sending_queue;
        if queue.enabled {
            let memory = MemoryQueue::new(queue.queue_size, queue.when_full);
            (Arc::new(memory), queue.sizer, queue.when_full)
        } else {
            let memory = MemoryQueue::new(queue.num_consumers, WhenFull::Block);
            (Arc::new(memory), Sizer::Requests, WhenFull::Block)
        }
    }
}

/// What pipelines hold to hand payloads to an exporter. Cloned into every
/// pipeline that lists the exporter.
#[derive(Clone)]
pub struct ExporterHandle {
    pub id: ComponentId,
    queue: Arc<dyn Queue>,
    sizer: Sizer,
    when_full: WhenFull,
    metrics: ExporterMetrics,
    hard_stop: CancellationToken,
}

impl ExporterHandle {
    /// Queues a payload. Never waits; a refusal is counted, never silent.
    pub async fn enqueue(&self, payload: Arc<Payload>) {
        let items = payload.item_count();
        let size = self.sizer.measure(&payload, items);
        let request = QueuedRequest {
            payload,
            items,
            size,
        };
        match self.queue.push(request).await {
            Ok(()) => self.metrics.queue_size.set(self.queue.size() as f64),
            Err(PushError::Full(request)) => {
                self.metrics
                    .enqueue_failed(request.payload.signal(), request.items);
                tracing::debug!(exporter = %self.id, items = request.items, "sending queue full; data dropped");
            }
            Err(PushError::Closed(request)) => {
                self.metrics
                    .enqueue_failed(request.payload.signal(), request.items);
                tracing::error!(exporter = %self.id, items = request.items, "sending queue closed; data dropped");
            }
        }
    }

    /// Whether the receivers feeding this exporter should refuse data now.
    pub fn backpressure(&self) -> Option<Arc<dyn Backpressure>> {
        (self.when_full == WhenFull::Block)
            .then(|| Arc::new(QueueBackpressure(self.queue.clone())) as Arc<dyn Backpressure>)
    }
}

struct QueueBackpressure(Arc<dyn Queue>);

impl Backpressure for QueueBackpressure {
    fn is_full(&self) -> bool {
        self.0.is_full()
    }
}

/// An exporter with its queue and consumers running.
pub struct RunningExporter {
    handle: ExporterHandle,
    exporter: Arc<dyn Exporter>,
    consumers: Vec<JoinHandle<()>>,
    health: HealthReporter,
}

/// Starts the exporter and the consumers of its queue.
pub async fn start(
    id: ComponentId,
    exporter: Box<dyn Exporter>,
    config: ExporterHelperConfig,
    health: HealthReporter,
    hard_stop: CancellationToken,
) -> anyhow::Result<RunningExporter> {
    let exporter: Arc<dyn Exporter> = Arc::from(exporter);
    exporter
        .start()
        .await
        .map_err(|err| err.context(format!("exporter {id} failed to start")))?;
    let (queue, sizer, when_full) = config.queue();
    let metrics = ExporterMetrics::new(&id);
    metrics.queue_capacity.set(queue.capacity() as f64);
    metrics.queue_size.set(0.0);
    let handle = ExporterHandle {
        id: id.clone(),
        queue,
        sizer,
        when_full,
        metrics,
        hard_stop,
    };
    let sender = Arc::new(Sender {
        handle: handle.clone(),
        exporter: exporter.clone(),
        timeout: config.timeout,
        retry: config.retry_on_failure,
        health: health.clone(),
    });
    let consumers = (0..config.sending_queue.num_consumers)
        .map(|_| tokio::spawn(sender.clone().consume()))
        .collect();
    health.ok();
    Ok(RunningExporter {
        handle,
        exporter,
        consumers,
        health,
    })
}

impl RunningExporter {
    pub fn handle(&self) -> ExporterHandle {
        self.handle.clone()
    }

    pub fn exporter(&self) -> Arc<dyn Exporter> {
        self.exporter.clone()
    }

    /// Closes the queue, lets the consumers send what is left until the
    /// hard stop, counts anything still unsent, and shuts the exporter down.
    pub async fn stop(self) {
        let handle = &self.handle;
        self.health.set(Status::Stopping, None);
        handle.queue.close();
        for consumer in self.consumers {
            let _ = consumer.await;
        }
        let remaining = handle.queue.take_remaining();
        if !remaining.is_empty() {
            let items: usize = remaining.iter().map(|r| r.items).sum();
            for request in &remaining {
                handle
                    .metrics
                    .send_failed(request.payload.signal(), request.items);
            }
            tracing::error!(exporter = %handle.id, items, "shutdown deadline passed; queued data not delivered");
        }
        handle.metrics.queue_size.set(0.0);
        if let Err(err) = self.exporter.shutdown().await {
            tracing::error!(exporter = %handle.id, error = %err, "exporter failed to shut down cleanly");
        }
    }
}

/// Sends requests from the queue, one at a time per consumer.
struct Sender {
    handle: ExporterHandle,
    exporter: Arc<dyn Exporter>,
    timeout: Duration,
    retry: RetryConfig,
    health: HealthReporter,
}

enum Outcome {
    Sent,
    Failed(String),
}

impl Sender {
    async fn consume(self: Arc<Self>) {
        let queue = &self.handle.queue;
        loop {
            let request = tokio::select! {
                request = queue.pop() => request,
                _ = self.handle.hard_stop.cancelled() => None,
            };
            let Some(request) = request else { break };
            let signal = request.payload.signal();
            match self.deliver(&request.payload).await {
                Outcome::Sent => {
                    self.handle.metrics.sent(signal, request.items);
                    self.health.ok();
                }
                Outcome::Failed(reason) => {
                    self.handle.metrics.send_failed(signal, request.items);
                    tracing::error!(exporter = %self.handle.id, items = request.items, reason = %reason, "dropping data that could not be sent");
                    self.health.degraded(reason);
                }
            }
            queue.done(&request);
            self.handle.metrics.queue_size.set(queue.size() as f64);
        }
    }

    async fn deliver(&self, payload: &Payload) -> Outcome {
        let policy = RetryPolicy {
            retry: &self.retry,
            timeout: self.timeout,
            stop: &self.handle.hard_stop,
        };
        let on_retry = |reason: &str, wait: Duration| {
            tracing::warn!(exporter = %self.handle.id, reason = %reason, wait = ?wait, "export failed; will retry");
            self.handle.metrics.retries.increment(1);
            self.health.degraded(reason.to_string());
        };
        match send_with_retry(&policy, on_retry, || self.exporter.export(payload)).await {
            Ok(()) => Outcome::Sent,
            Err(gave_up) => Outcome::Failed(gave_up.to_string()),
        }
    }
}

/// How `send_with_retry` retries: the helper's `retry_on_failure`, its
/// per-attempt `timeout`, and a token that ends waiting at a hard stop.
pub struct RetryPolicy<'a> {
    pub retry: &'a RetryConfig,
    pub timeout: Duration,
    pub stop: &'a CancellationToken,
}

/// Why `send_with_retry` stopped trying.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GaveUp {
    #[error("permanent error: {0}")]
    Permanent(String),
    #[error("{reason} (retries disabled)")]
    RetriesDisabled { reason: String },
    #[error("{reason}; gave up after {elapsed:?}")]
    BudgetSpent { reason: String, elapsed: Duration },
    #[error("shutdown deadline passed")]
    Stopped,
}

/// Runs `attempt` until it succeeds, fails permanently, or the retry
/// budget or the stop token ends it. Each wait is the backoff's next step,
/// or the server's Retry-After when that is longer; `on_retry` hears of
/// each failure that will be retried. Every exporter's retries go through
/// here, whether its requests come from the sending queue or from batches
/// it forms itself.
pub async fn send_with_retry<F, Fut>(
    policy: &RetryPolicy<'_>,
    mut on_retry: impl FnMut(&str, Duration),
    mut attempt: F,
) -> Result<(), GaveUp>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), ExportError>>,
{
    let started = Instant::now();
    let mut backoff = Backoff::new(policy.retry);
    loop {
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(policy.timeout, attempt()) => outcome,
            _ = policy.stop.cancelled() => return Err(GaveUp::Stopped),
        };
        let (reason, retry_after) = match outcome {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(ExportError::Permanent { reason })) => return Err(GaveUp::Permanent(reason)),
            Ok(Err(ExportError::Transient {
                reason,
                retry_after,
            })) => (reason, retry_after),
            Err(_) => (format!("timed out after {:?}", policy.timeout), None),
        };
        if !policy.retry.enabled {
            return Err(GaveUp::RetriesDisabled { reason });
        }
        let wait = backoff.next_wait().max(retry_after.unwrap_or_default());
        if let Some(max_elapsed) = policy.retry.max_elapsed()
            && started.elapsed() + wait > max_elapsed
        {
            let elapsed = started.elapsed();
            return Err(GaveUp::BudgetSpent { reason, elapsed });
        }
        on_retry(&reason, wait);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = policy.stop.cancelled() => return Err(GaveUp::Stopped),
        }
    }
}

#[cfg(test)]
mod tests;
