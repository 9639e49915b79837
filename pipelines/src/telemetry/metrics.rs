//! Self-telemetry metrics, named after the collector's (`otelcol_*` becomes
//! `lookout_*`). Components hold pre-registered handles so that the hot path
//! does not look metrics up by name.

use std::sync::OnceLock;

use metrics::{Counter, Gauge, Unit, counter, describe_counter, describe_gauge, gauge};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::component::ComponentId;
use crate::payload::Signal;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder once and returns its handle.
/// Later calls (tests that start several daemons in one process) share it.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            describe_all();
            handle
        })
        .clone()
}

fn describe_all() {
    for signal in Signal::ALL {
        let items = signal.item_name();
        let help = |what: &str| format!("Number of {} {what}", items.replace('_', " "));
        describe_counter!(
            format!("lookout_receiver_accepted_{items}_total"),
            Unit::Count,
            help("successfully pushed into the pipeline")
        );
        describe_counter!(
            format!("lookout_receiver_refused_{items}_total"),
            Unit::Count,
            help("that could not be pushed into the pipeline (full, or shutting down)")
        );
        describe_counter!(
            format!("lookout_receiver_rejected_{items}_total"),
            Unit::Count,
            help("rejected as invalid and reported to the client as a partial success")
        );
        describe_counter!(
            format!("lookout_exporter_sent_{items}_total"),
            Unit::Count,
            help("successfully sent to destination")
        );
        describe_counter!(
            format!("lookout_exporter_send_failed_{items}_total"),
            Unit::Count,
            help(
                "that failed to be sent: permanent errors, retries exhausted, or shutdown deadline"
            )
        );
        describe_counter!(
            format!("lookout_exporter_enqueue_failed_{items}_total"),
            Unit::Count,
            help("that failed to be added to the sending queue")
        );
        describe_counter!(
            format!("lookout_pipeline_shutdown_dropped_{items}_total"),
            Unit::Count,
            help("still inside a pipeline when the shutdown deadline passed")
        );
        describe_counter!(
            format!("lookout_processor_incoming_{items}_total"),
            Unit::Count,
            help("passed to the processor")
        );
        describe_counter!(
            format!("lookout_processor_outgoing_{items}_total"),
            Unit::Count,
            help("emitted by the processor")
        );
    }
    describe_counter!(
        "lookout_receiver_refused_requests_total",
        Unit::Count,
        "Requests refused before their body was read, because a pipeline was full"
    );
    describe_gauge!(
        "lookout_exporter_queue_size",
        "Current size of the exporter's sending queue, in the queue's sizer unit"
    );
    describe_gauge!(
        "lookout_exporter_queue_capacity",
        "Capacity of the exporter's sending queue, in the queue's sizer unit"
    );
    describe_gauge!(
        "lookout_memory_limit_exceeded",
        "1 while the resident memory is over service.memory_limit_mib and receivers refuse data"
    );
    describe_gauge!(
        "lookout_memory_limit_bytes",
        Unit::Bytes,
        "The configured service.memory_limit_mib, in bytes"
    );
    describe_counter!(
        "lookout_exporter_retries_total",
        Unit::Count,
        "Number of export attempts that failed transiently and were retried"
    );
}

/// Counters of one receiver on one transport.
#[derive(Clone)]
pub struct ReceiverMetrics {
    /// Requests refused before their body was read, so their items were
    /// never counted.
    pub refused_requests: Counter,
    accepted: [Counter; 4],
    refused: [Counter; 4],
    rejected: [Counter; 4],
}

impl ReceiverMetrics {
    pub fn new(receiver: &ComponentId, transport: &'static str) -> ReceiverMetrics {
        let make = |what: &str| {
            Signal::ALL.map(|signal| {
                counter!(
                    format!("lookout_receiver_{what}_{}_total", signal.item_name()),
                    "receiver" => receiver.to_string(),
                    "transport" => transport,
                )
            })
        };
        ReceiverMetrics {
            refused_requests: counter!(
                "lookout_receiver_refused_requests_total",
                "receiver" => receiver.to_string(),
                "transport" => transport,
            ),
            accepted: make("accepted"),
            refused: make("refused"),
            rejected: make("rejected"),
        }
    }

    pub fn accepted(&self, signal: Signal, items: usize) {
        self.accepted[signal as usize].increment(items as u64);
    }

    pub fn refused(&self, signal: Signal, items: usize) {
        self.refused[signal as usize].increment(items as u64);
    }

    pub fn rejected(&self, signal: Signal, items: usize) {
        self.rejected[signal as usize].increment(items as u64);
    }
}

/// Counters and gauges of one exporter.
#[derive(Clone)]
pub struct ExporterMetrics {
    sent: [Counter; 4],
    send_failed: [Counter; 4],
    enqueue_failed: [Counter; 4],
    pub retries: Counter,
    pub queue_size: Gauge,
    pub queue_capacity: Gauge,
}

impl ExporterMetrics {
    pub fn new(exporter: &ComponentId) -> ExporterMetrics {
        let name = exporter.to_string();
        let make = |what: &str| {
            Signal::ALL.map(|signal| {
                counter!(
                    format!("lookout_exporter_{what}_{}_total", signal.item_name()),
                    "exporter" => name.clone(),
                )
            })
        };
        ExporterMetrics {
            sent: make("sent"),
            send_failed: make("send_failed"),
            enqueue_failed: make("enqueue_failed"),
            retries: counter!("lookout_exporter_retries_total", "exporter" => name.clone()),
            queue_size: gauge!("lookout_exporter_queue_size", "exporter" => name.clone()),
            queue_capacity: gauge!("lookout_exporter_queue_capacity", "exporter" => name),
        }
    }

    pub fn sent(&self, signal: Signal, items: usize) {
        self.sent[signal as usize].increment(items as u64);
    }

    pub fn send_failed(&self, signal: Signal, items: usize) {
        self.send_failed[signal as usize].increment(items as u64);
    }

    pub fn enqueue_failed(&self, signal: Signal, items: usize) {
        self.enqueue_failed[signal as usize].increment(items as u64);
    }
}

/// Counters of one processor instance in one pipeline.
#[derive(Clone)]
pub struct ProcessorMetrics {
    pub incoming: Counter,
    pub outgoing: Counter,
}

impl ProcessorMetrics {
    pub fn new(processor: &ComponentId, pipeline: &str, signal: Signal) -> ProcessorMetrics {
        let make = |what: &str| {
            counter!(
                format!("lookout_processor_{what}_{}_total", signal.item_name()),
                "processor" => processor.to_string(),
                "pipeline" => pipeline.to_string(),
            )
        };
        ProcessorMetrics {
            incoming: make("incoming"),
            outgoing: make("outgoing"),
        }
    }
}

/// Counts data that was inside a pipeline's stages when the shutdown
/// deadline passed.
pub fn pipeline_dropped(pipeline: &str, signal: crate::payload::Signal, items: usize) {
    counter!(
        format!("lookout_pipeline_shutdown_dropped_{}_total", signal.item_name()),
        "pipeline" => pipeline.to_string(),
    )
    .increment(items as u64);
}
