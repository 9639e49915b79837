//! OTLP/gRPC.

use std::str::FromStr;
use std::sync::OnceLock;

use lookout_pipelines::{BuildError, ExportError, Payload};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

use super::{Compression, OtlpExporterConfig, invalid, log_partial_success};

pub struct GrpcTransport {
    endpoint: Endpoint,
    /// Made by `start`: a channel needs the runtime, which a factory,
    /// run by `lookout validate` too, does not have.
    channel: OnceLock<Channel>,
    metadata: MetadataMap,
    compression: Option<CompressionEncoding>,
}

impl GrpcTransport {
    pub fn new(config: &OtlpExporterConfig) -> Result<GrpcTransport, BuildError> {
        let endpoint = Endpoint::from_str(&config.endpoint)
            .map_err(|err| invalid("endpoint", format!("not a valid URI: {err}")))?;
        let mut metadata = MetadataMap::new();
        for (name, value) in &config.headers {
            let key = MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes())
                .map_err(|err| BuildError::at(&["headers", name], err.to_string()))?;
            let value = MetadataValue::try_from(value.as_str())
                .map_err(|err| BuildError::at(&["headers", name], err.to_string()))?;
            metadata.insert(key, value);
        }
        Ok(GrpcTransport {
            endpoint,
            channel: OnceLock::new(),
            metadata,
            compression: (config.compression == Compression::Gzip)
                .then_some(CompressionEncoding::Gzip),
        })
    }

    /// Connects on first use and reconnects by itself, so a gateway that
    /// is down at start is a transient error, not a failed start.
    pub fn start(&self) {
        let _ = self.channel.set(self.endpoint.connect_lazy());
    }

    fn request<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        *request.metadata_mut() = self.metadata.clone();
        request
    }

    pub async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let channel = self
            .channel
            .get()
            .cloned()
            .ok_or_else(|| ExportError::permanent("the exporter was not started"))?;
        match payload {
            Payload::Traces(resources) => {
                let mut client = TraceServiceClient::new(channel);
                if let Some(encoding) = self.compression {
                    client = client.send_compressed(encoding);
                }
                let request = self.request(ExportTraceServiceRequest {
                    resource_spans: resources.clone(),
                });
                let response = client.export(request).await.map_err(classify)?;
                if let Some(partial) = response.into_inner().partial_success {
                    log_partial_success(partial.rejected_spans, &partial.error_message);
                }
            }
            Payload::Metrics(resources) => {
                let mut client = MetricsServiceClient::new(channel);
                if let Some(encoding) = self.compression {
                    client = client.send_compressed(encoding);
                }
                let request = self.request(ExportMetricsServiceRequest {
                    resource_metrics: resources.clone(),
                });
                let response = client.export(request).await.map_err(classify)?;
                if let Some(partial) = response.into_inner().partial_success {
                    log_partial_success(partial.rejected_data_points, &partial.error_message);
                }
            }
            Payload::Logs(resources) => {
                let mut client = LogsServiceClient::new(channel);
                if let Some(encoding) = self.compression {
                    client = client.send_compressed(encoding);
                }
                let request = self.request(ExportLogsServiceRequest {
                    resource_logs: resources.clone(),
                });
                let response = client.export(request).await.map_err(classify)?;
                if let Some(partial) = response.into_inner().partial_success {
                    log_partial_success(partial.rejected_log_records, &partial.error_message);
                }
            }
            Payload::Alerts(_) => {
                return Err(ExportError::permanent("alerts are not an OTLP signal"));
            }
        }
        Ok(())
    }
}

/// The retryable codes of the OTLP spec; RESOURCE_EXHAUSTED only with a
/// RetryInfo, since without one the server cannot recover.
fn classify(status: Status) -> ExportError {
    let reason = format!("{:?}: {}", status.code(), status.message());
    let retry_after = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => ExportError::Transient {
            reason,
            retry_after,
        },
        Code::ResourceExhausted if retry_after.is_some() => ExportError::Transient {
            reason,
            retry_after,
        },
        _ => ExportError::permanent(reason),
    }
}
