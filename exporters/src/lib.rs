//! Lookout's exporters. Each one implements only `Exporter::export`; the
//! queue, retries and timeouts come from the shared exporter helper.

pub mod alerting;
mod attributes;
pub mod blackhole;
pub mod debug;
pub mod file;
pub mod langsmith;
mod messages;
pub mod otlp;
pub mod prometheus;
pub mod store;

use lookout_pipelines::ExporterFactory;

/// Every exporter type this crate provides.
pub fn factories() -> Vec<ExporterFactory> {
    vec![
        alerting::email::factory(),
        alerting::slack::factory(),
        alerting::webhook::factory(),
        blackhole::factory(),
        debug::factory(),
        file::factory(),
        langsmith::factory(),
        otlp::factory(),
        prometheus::factory(),
        store::postgres_factory(),
        store::sqlite_factory(),
    ]
}
