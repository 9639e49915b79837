//! The `blackhole` exporter: accepts everything and keeps nothing. The
//! exporter helper counts what it "sent", which makes it the sink for
//! benchmarks and for measuring a pipeline without a destination's cost.

use async_trait::async_trait;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::{ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal};
use serde::Deserialize;

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "blackhole",
        signals: &Signal::ALL,
        build: |_id: &ComponentId, raw, _helper| {
            let BlackholeConfig {} = parse_config(raw)?;
            Ok(Box::new(BlackholeExporter))
        },
    }
}

/// Takes no settings of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlackholeConfig {}

pub struct BlackholeExporter;

#[async_trait]
impl Exporter for BlackholeExporter {
    async fn export(&self, _payload: &Payload) -> Result<(), ExportError> {
        Ok(())
    }
}
