//! The `otlp` exporter: forwards to another collector over OTLP/gRPC or
//! OTLP/HTTP, for agent → gateway set-ups.
//!
//! ```yaml
//! exporters:
//!   otlp/gateway:
//!     endpoint: http://gateway:4317   # gRPC: the server; HTTP: the base URL, /v1/<signal> is appended
//!     protocol: grpc                  # grpc | http/protobuf
//!     compression: gzip               # gzip | none
//!     headers:
//!       x-api-key: ${env:GATEWAY_KEY}
//!     # and the helper's: timeout, sending_queue, retry_on_failure
//! ```
//!
//! Retryable answers follow the OTLP spec: gRPC UNAVAILABLE, RESOURCE_EXHAUSTED
//! (with RetryInfo) and friends; HTTP 429, 502, 503 and 504 with Retry-After.

mod grpc;
pub(crate) mod http;

use std::collections::BTreeMap;

use async_trait::async_trait;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal,
};
use serde::Deserialize;

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "otlp",
        signals: &Signal::OTLP,
        build: |_id: &ComponentId, raw, _helper| {
            let config: OtlpExporterConfig = parse_config(raw)?;
            let transport = match config.protocol {
                Protocol::Grpc => Transport::Grpc(Box::new(grpc::GrpcTransport::new(&config)?)),
                Protocol::HttpProtobuf => Transport::Http(http::HttpTransport::new(&config)?),
            };
            Ok(Box::new(OtlpExporter { transport }))
        },
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Protocol {
    #[default]
    #[serde(rename = "grpc")]
    Grpc,
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpExporterConfig {
    pub endpoint: String,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub compression: Compression,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn invalid(field: &str, message: impl Into<String>) -> BuildError {
    BuildError::at(&[field], message)
}

enum Transport {
    Grpc(Box<grpc::GrpcTransport>),
    Http(http::HttpTransport),
}

pub struct OtlpExporter {
    transport: Transport,
}

#[async_trait]
impl Exporter for OtlpExporter {
    async fn start(&self) -> anyhow::Result<()> {
        if let Transport::Grpc(grpc) = &self.transport {
            grpc.start();
        }
        Ok(())
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        match &self.transport {
            Transport::Grpc(grpc) => grpc.export(payload).await,
            Transport::Http(http) => http.export(payload).await,
        }
    }
}

/// A server that accepted the request but rejected part of it: retrying
/// would not help, so it is logged and the rest counts as sent.
fn log_partial_success(rejected: i64, message: &str) {
    if rejected > 0 {
        tracing::warn!(rejected, reason = %message, "the OTLP server rejected part of a request");
    }
}
