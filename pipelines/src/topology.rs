//! The topology: where data flows.
//!
//! ```text
//!  receiver ──┐                   one task per stage, bounded channels between
//!  receiver ──┼─▶ [chan] ─▶ processor ─▶ [chan] ─▶ processor ─▶ [chan] ─▶ fan-out
//!             │                                                          │   │
//!             └─▶ (each pipeline that lists the receiver)                ▼   ▼
//!                                                         exporter queue ... exporter queue
//!                                                           └▶ consumers ─▶ Exporter::export
//! ```
//!
//! Receivers refuse (429) when a pipeline's first channel is full, when an
//! exporter queue with `when_full: block` is full, or when the process is
//! over `service.memory_limit_mib`. An
//! exporter is started once however many pipelines list it, and its queue
//! is shared by them. Shutdown runs front to back: receivers stop
//! accepting, each stage flushes when its input closes, exporter queues
//! drain, and at `shutdown_timeout` whatever is left is dropped and counted.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::future::join_all;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::component::{ComponentId, Processor, ReceiverContext};
use crate::config::{PipelinePlan, Plan};
use crate::exporter_helper::{self, ExporterHandle, RunningExporter};
use crate::memory_limiter::MemoryLimiter;
use crate::payload::{Payload, Signal};
use crate::stage_channel::{Backpressure, Consumer, Consumers, PipelineInput, stage_channel};
use crate::telemetry::health::Health;
use crate::telemetry::metrics::{self, ProcessorMetrics};
use crate::telemetry::server::{self, StatusPages, TelemetryServer};

/// A running daemon: telemetry, exporters, pipelines and receivers.
pub struct Topology {
    health: Health,
    telemetry: TelemetryServer,
    stop_receivers: CancellationToken,
    stop_telemetry: CancellationToken,
    hard_stop: CancellationToken,
    receivers: Vec<(ComponentId, JoinHandle<anyhow::Result<()>>)>,
    stages: Vec<JoinHandle<()>>,
    exporters: Vec<RunningExporter>,
    shutdown_timeout: Duration,
}

impl Topology {
    /// Starts everything in the plan, back to front, so that no receiver
    /// accepts data before its pipelines and exporters can take it.
    pub async fn start(plan: Plan) -> anyhow::Result<Topology> {
        let health = Health::default();
        let pages = StatusPages::default();
        let stop_telemetry = CancellationToken::new();
        let telemetry = server::start(
            &plan.telemetry.metrics.endpoint,
            metrics::install(),
            health.clone(),
            pages.clone(),
            stop_telemetry.clone(),
        )
        .await?;
        let hard_stop = CancellationToken::new();

        let mut exporters = HashMap::new();
        for exporter in plan.exporters {
            let reporter = health.reporter(format!("exporter/{}", exporter.id));
            let running = exporter_helper::start(
                exporter.id.clone(),
                exporter.exporter,
                exporter.helper,
                reporter,
                hard_stop.clone(),
            )
            .await?;
            pages.add(exporter.id.clone(), running.exporter());
            exporters.insert(exporter.id, running);
        }

        let memory_limiter = plan.memory_limit_mib.map(|(limit, spike)| {
            MemoryLimiter::start(limit, spike, stop_telemetry.clone()) as Arc<dyn Backpressure>
        });
        let mut inputs: HashMap<(ComponentId, Signal), Vec<PipelineInput>> = HashMap::new();
        let mut stages = Vec::new();
        for pipeline in plan.pipelines {
            let mut spawned = spawn_pipeline(pipeline, &exporters, &hard_stop);
            spawned.input.backpressure.extend(memory_limiter.clone());
            stages.extend(spawned.tasks);
            for receiver in spawned.receivers {
                inputs
                    .entry((receiver, spawned.signal))
                    .or_default()
                    .push(spawned.input.clone());
            }
        }

        let stop_receivers = CancellationToken::new();
        let mut receivers = Vec::new();
        for (id, receiver) in plan.receivers {
            let mut consumers = Consumers::default();
            for signal in Signal::ALL {
                if let Some(senders) = inputs.remove(&(id.clone(), signal)) {
                    consumers.set(signal, Consumer::new(senders));
                }
            }
            let ctx = ReceiverContext {
                id: id.clone(),
                consumers,
                shutdown: stop_receivers.clone(),
                health: health.reporter(format!("receiver/{id}")),
            };
            let serve = receiver
                .start(ctx)
                .await
                .with_context(|| format!("receiver {id} failed to start"))?;
            receivers.push((id, tokio::spawn(serve)));
        }
        tracing::info!("everything is ready");
        Ok(Topology {
            health,
            telemetry,
            stop_receivers,
            stop_telemetry,
            hard_stop,
            receivers,
            stages,
            exporters: exporters.into_values().collect(),
            shutdown_timeout: plan.shutdown_timeout,
        })
    }

    pub fn telemetry_addr(&self) -> SocketAddr {
        self.telemetry.local_addr
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Stops accepting, drains, flushes. Returns false when the deadline
    /// passed and data was dropped (and counted).
    pub async fn shutdown(self) -> bool {
        let deadline = Instant::now() + self.shutdown_timeout;
        let hard_stop = self.hard_stop.clone();
        let timer = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            tracing::error!("shutdown deadline passed; dropping what is left");
            hard_stop.cancel();
        });
        tracing::info!(timeout = ?self.shutdown_timeout, "shutting down: no longer accepting data");
        self.stop_receivers.cancel();
        for (id, mut task) in self.receivers {
            // A client holding a request open must not hold the daemon
            // past its deadline.
            let finished = tokio::select! {
                finished = &mut task => finished,
                _ = self.hard_stop.cancelled() => {
                    task.abort();
                    tracing::error!(receiver = %id, "receiver still busy at the shutdown deadline; stopped");
                    continue;
                }
            };
            match finished {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(receiver = %id, error = %err, "receiver failed"),
                Err(err) => tracing::error!(receiver = %id, error = %err, "receiver task panicked"),
            }
        }
        for stage in self.stages {
            let _ = stage.await;
        }
        join_all(self.exporters.into_iter().map(RunningExporter::stop)).await;
        let clean = !self.hard_stop.is_cancelled();
        timer.abort();
        self.stop_telemetry.cancel();
        let _ = self.telemetry.task.await;
        tracing::info!(clean, "shutdown complete");
        clean
    }
}

/// A pipeline's running stages and the receivers that feed its input.
struct SpawnedPipeline {
    input: PipelineInput,
    signal: Signal,
    receivers: Vec<ComponentId>,
    tasks: Vec<JoinHandle<()>>,
}

/// Spawns one task per processor and one fan-out task, chained by bounded
/// channels.
fn spawn_pipeline(
    pipeline: PipelinePlan,
    exporters: &HashMap<ComponentId, RunningExporter>,
    hard_stop: &CancellationToken,
) -> SpawnedPipeline {
    let name = pipeline.id.to_string();
    let signal = pipeline.id.signal;
    let (input, mut next) = stage_channel();
    let mut tasks = Vec::new();
    for (processor_id, processor) in pipeline.processors {
        let (output, following) = stage_channel();
        let stage = ProcessorStage {
            processor,
            output,
            metrics: ProcessorMetrics::new(&processor_id, &name, signal),
            pipeline: name.clone(),
            hard_stop: hard_stop.clone(),
        };
        tasks.push(tokio::spawn(stage.run(next)));
        next = following;
    }
    let handles: Vec<ExporterHandle> = pipeline
        .exporters
        .iter()
        .filter_map(|id| exporters.get(id).map(RunningExporter::handle))
        .collect();
    let backpressure = handles
        .iter()
        .filter_map(ExporterHandle::backpressure)
        .collect();
    tasks.push(tokio::spawn(fan_out(
        next,
        handles,
        name,
        hard_stop.clone(),
    )));
    SpawnedPipeline {
        input: PipelineInput {
            sender: input,
            backpressure,
        },
        signal,
        receivers: pipeline.receivers,
        tasks,
    }
}

struct ProcessorStage {
    processor: Box<dyn Processor>,
    output: mpsc::Sender<Payload>,
    metrics: ProcessorMetrics,
    pipeline: String,
    hard_stop: CancellationToken,
}

impl ProcessorStage {
    async fn run(mut self, mut input: mpsc::Receiver<Payload>) {
        let mut produced = Vec::new();
        loop {
            let deadline = self.processor.next_deadline();
            tokio::select! {
                received = input.recv() => match received {
                    Some(payload) => {
                        self.metrics.incoming.increment(payload.item_count() as u64);
                        self.processor.process(payload, &mut produced);
                    }
                    None => {
                        self.processor.flush(&mut produced);
                        self.forward(&mut produced).await;
                        return;
                    }
                },
                _ = sleep_until_some(deadline) => {
                    self.processor.on_deadline(Instant::now(), &mut produced);
                }
                _ = self.hard_stop.cancelled() => {
                    self.processor.flush(&mut produced);
                    count_dropped(&self.pipeline, produced.drain(..), &mut input);
                    return;
                }
            }
            self.forward(&mut produced).await;
        }
    }

    async fn forward(&mut self, produced: &mut Vec<Payload>) {
        for payload in produced.drain(..) {
            let items = payload.item_count();
            let signal = payload.signal();
            tokio::select! {
                sent = self.output.send(payload) => {
                    if sent.is_ok() {
                        self.metrics.outgoing.increment(items as u64);
                    } else {
                        metrics::pipeline_dropped(&self.pipeline, signal, items);
                    }
                }
                _ = self.hard_stop.cancelled() => metrics::pipeline_dropped(&self.pipeline, signal, items),
            }
        }
    }
}

async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Hands each payload to every exporter of the pipeline. The payload is
/// shared, not copied, and no enqueue waits: a full queue pushes back at
/// the receivers instead, so one stuck exporter never holds up another.
async fn fan_out(
    mut input: mpsc::Receiver<Payload>,
    exporters: Vec<ExporterHandle>,
    pipeline: String,
    hard_stop: CancellationToken,
) {
    loop {
        let payload = tokio::select! {
            payload = input.recv() => payload,
            _ = hard_stop.cancelled() => {
                count_dropped(&pipeline, std::iter::empty(), &mut input);
                return;
            }
        };
        let Some(payload) = payload else { return };
        let payload = Arc::new(payload);
        for exporter in &exporters {
            exporter.enqueue(payload.clone()).await;
        }
    }
}

fn count_dropped(
    pipeline: &str,
    held: impl Iterator<Item = Payload>,
    input: &mut mpsc::Receiver<Payload>,
) {
    input.close();
    let mut dropped = 0;
    let mut record = |payload: Payload| {
        let items = payload.item_count();
        dropped += items;
        metrics::pipeline_dropped(pipeline, payload.signal(), items);
    };
    held.for_each(&mut record);
    while let Ok(payload) = input.try_recv() {
        record(payload);
    }
    if dropped > 0 {
        tracing::error!(
            pipeline,
            items = dropped,
            "shutdown deadline passed; data inside the pipeline dropped"
        );
    }
}
