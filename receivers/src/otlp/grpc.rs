//! OTLP/gRPC: the collector services for traces, metrics and logs. A
//! service is registered only for signals that some pipeline takes from
//! this receiver; the others answer UNIMPLEMENTED.

use std::time::Duration;

use anyhow::Context;
use http::HeaderValue;
use lookout_pipelines::component::ServeFuture;
use lookout_pipelines::telemetry::metrics::ReceiverMetrics;
use lookout_pipelines::{Consumer, Payload, ReceiverContext, Refused, Signal};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tower::util::MapResponseLayer;

use super::GrpcConfig;
use super::decode::Rejected;

/// One signal's service: the consumer it feeds and how it counts.
#[derive(Clone)]
struct Ingest {
    consumer: Consumer,
    metrics: ReceiverMetrics,
    retry_after: Duration,
}

impl Ingest {
    fn push(&self, payload: Payload) -> Result<Rejected, Status> {
        super::ingest(&self.consumer, &self.metrics, payload).map_err(|refused| match refused {
            Refused::Full => self.resource_exhausted(),
            Refused::Closed => Status::unavailable("the daemon is shutting down"),
        })
    }

    fn resource_exhausted(&self) -> Status {
        Status::with_error_details(
            Code::ResourceExhausted,
            "the pipeline is full; retry later",
            ErrorDetails::with_retry_info(Some(self.retry_after)),
        )
    }

    /// Runs on the request headers, before tonic decodes the message, so
    /// that refusing under overload costs next to nothing.
    fn admission(&self) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
        let ingest = self.clone();
        move |request| {
            if ingest.consumer.has_room() {
                Ok(request)
            } else {
                ingest.metrics.refused_requests.increment(1);
                Err(ingest.resource_exhausted())
            }
        }
    }
}

pub async fn start(
    config: &GrpcConfig,
    retry_after: Duration,
    ctx: &ReceiverContext,
) -> anyhow::Result<ServeFuture> {
    let listener = TcpListener::bind(&config.endpoint)
        .await
        .with_context(|| format!("cannot listen for OTLP/gRPC on {}", config.endpoint))?;
    let local_addr = listener.local_addr()?;
    let limit = config.max_recv_msg_size_mib * 1024 * 1024;
    let metrics = ReceiverMetrics::new(&ctx.id, "grpc");
    let ingest = |signal: Signal| {
        ctx.consumers.get(signal).map(|consumer| Ingest {
            consumer: consumer.clone(),
            metrics: metrics.clone(),
            retry_after,
        })
    };
    let traces = ingest(Signal::Traces).map(|i| {
        let admission = i.admission();
        let server = TraceServiceServer::new(i)
            .max_decoding_message_size(limit)
            .accept_compressed(CompressionEncoding::Gzip);
        InterceptedService::new(server, admission)
    });
    let metrics_service = ingest(Signal::Metrics).map(|i| {
        let admission = i.admission();
        let server = MetricsServiceServer::new(i)
            .max_decoding_message_size(limit)
            .accept_compressed(CompressionEncoding::Gzip);
        InterceptedService::new(server, admission)
    });
    let logs = ingest(Signal::Logs).map(|i| {
        let admission = i.admission();
        let server = LogsServiceServer::new(i)
            .max_decoding_message_size(limit)
            .accept_compressed(CompressionEncoding::Gzip);
        InterceptedService::new(server, admission)
    });
    let shutdown = ctx.shutdown.clone();
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    tracing::info!(receiver = %ctx.id, endpoint = %local_addr, "OTLP/gRPC listening");
    Ok(Box::pin(async move {
        tonic::transport::Server::builder()
            .layer(MapResponseLayer::new(too_large_is_resource_exhausted))
            .add_optional_service(traces)
            .add_optional_service(metrics_service)
            .add_optional_service(logs)
            .serve_with_incoming_shutdown(incoming, async move { shutdown.cancelled().await })
            .await
            .context("OTLP/gRPC server failed")
    }))
}

/// tonic answers an over-long message with OUT_OF_RANGE; OTLP clients and
/// the collector expect RESOURCE_EXHAUSTED. The refusal happens before any
/// handler runs, as a trailers-only response, so its status is a header.
fn too_large_is_resource_exhausted<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|status| status == "11");
    let too_large = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .is_some_and(|m| m.contains("too%20large") || m.contains("too large"));
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
    response
}

#[tonic::async_trait]
impl TraceService for Ingest {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let rejected = self.push(Payload::Traces(request.into_inner().resource_spans))?;
        Ok(Response::new(rejected.into_trace_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for Ingest {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let rejected = self.push(Payload::Metrics(request.into_inner().resource_metrics))?;
        Ok(Response::new(rejected.into_metrics_response()))
    }
}

#[tonic::async_trait]
impl LogsService for Ingest {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let rejected = self.push(Payload::Logs(request.into_inner().resource_logs))?;
        Ok(Response::new(rejected.into_logs_response()))
    }
}
