//! OTLP/HTTP: `POST /v1/{traces,metrics,logs}` with protobuf or JSON bodies,
//! optionally gzip or deflate. Answers follow the OTLP spec: the response
//! message (with partial success) in the request's encoding on 200, and a
//! `google.rpc.Status` on errors.

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures_util::StreamExt;
use lookout_pipelines::component::ServeFuture;
use lookout_pipelines::telemetry::metrics::ReceiverMetrics;
use lookout_pipelines::{Consumers, ReceiverContext, Refused, Signal};
use prost::Message;
use tokio::net::TcpListener;

use super::HttpConfig;
use super::decode::{self, Rejected};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    fn content_type(self) -> &'static str {
        match self {
            Encoding::Protobuf => "application/x-protobuf",
            Encoding::Json => "application/json",
        }
    }
}

struct HttpState {
    consumers: Consumers,
    metrics: ReceiverMetrics,
    max_body: usize,
    retry_after: HeaderValue,
}

impl HttpState {
    fn too_many_requests(&self, encoding: Encoding) -> Response {
        let mut response = status_error(
            encoding,
            StatusCode::TOO_MANY_REQUESTS,
            "the pipeline is full; retry later",
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, self.retry_after.clone());
        response
    }
}

pub async fn start(
    config: &HttpConfig,
    retry_after: Duration,
    ctx: &ReceiverContext,
) -> anyhow::Result<ServeFuture> {
    let listener = TcpListener::bind(&config.endpoint)
        .await
        .with_context(|| format!("cannot listen for OTLP/HTTP on {}", config.endpoint))?;
    let local_addr = listener.local_addr()?;
    let retry_seconds = retry_after.as_secs().max(1);
    let state = Arc::new(HttpState {
        consumers: ctx.consumers.clone(),
        metrics: ReceiverMetrics::new(&ctx.id, "http"),
        max_body: config.max_request_body_size,
        retry_after: HeaderValue::from(retry_seconds),
    });
    let app = Router::new()
        .route(
            "/v1/traces",
            post(|s, h, b| handle(s, h, b, Signal::Traces)),
        )
        .route(
            "/v1/metrics",
            post(|s, h, b| handle(s, h, b, Signal::Metrics)),
        )
        .route("/v1/logs", post(|s, h, b| handle(s, h, b, Signal::Logs)))
        .with_state(state);
    let shutdown = ctx.shutdown.clone();
    tracing::info!(receiver = %ctx.id, endpoint = %local_addr, "OTLP/HTTP listening");
    Ok(Box::pin(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("OTLP/HTTP server failed")
    }))
}

async fn handle(
    State(state): State<Arc<HttpState>>,
    headers: HeaderMap,
    body: Body,
    signal: Signal,
) -> Response {
    let encoding = match request_encoding(&headers) {
        Some(encoding) => encoding,
        None => {
            return body_unread(plain_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported Content-Type: use application/x-protobuf or application/json",
            ));
        }
    };
    let Some(consumer) = state.consumers.get(signal) else {
        return body_unread(status_error(
            encoding,
            StatusCode::NOT_FOUND,
            &format!("no pipeline takes {signal} from this receiver"),
        ));
    };
    if !consumer.has_room() {
        state.metrics.refused_requests.increment(1);
        // Read and drop the body unbuffered: an HTTP/1.1 client still
        // writing it would see a reset instead of the 429 otherwise.
        let refusal = state.too_many_requests(encoding);
        return if discard_body(body, state.max_body).await {
            refusal
        } else {
            body_unread(refusal)
        };
    }
    let body = match read_body(&headers, body, state.max_body).await {
        Ok(body) => body,
        Err(BodyError::Unread(status, message)) => {
            return body_unread(status_error(encoding, status, &message));
        }
        Err(BodyError::Invalid(status, message)) => {
            return status_error(encoding, status, &message);
        }
    };
    let decoded = match encoding {
        Encoding::Protobuf => decode::decode_protobuf(signal, &body),
        Encoding::Json => decode::decode_json(signal, &body),
    };
    let payload = match decoded {
        Ok(payload) => payload,
        Err(message) => return status_error(encoding, StatusCode::BAD_REQUEST, &message),
    };
    match super::ingest(consumer, &state.metrics, payload) {
        Ok(rejected) => success(signal, encoding, rejected),
        Err(Refused::Full) => state.too_many_requests(encoding),
        Err(Refused::Closed) => status_error(
            encoding,
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon is shutting down",
        ),
    }
}

fn request_encoding(headers: &HeaderMap) -> Option<Encoding> {
    let content_type = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media_type = content_type.split(';').next()?.trim();
    if media_type.eq_ignore_ascii_case("application/x-protobuf") {
        Some(Encoding::Protobuf)
    } else if media_type.eq_ignore_ascii_case("application/json") {
        Some(Encoding::Json)
    } else {
        None
    }
}

/// Why a body was not read into a payload. `Unread` answers leave part of
/// the body on the connection, which therefore cannot be reused.
enum BodyError {
    Unread(StatusCode, String),
    Invalid(StatusCode, String),
}

/// Reads and decompresses the body, refusing anything over `limit` bytes
/// before or after decompression.
async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, BodyError> {
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if !matches!(
        content_encoding.as_str(),
        "" | "identity" | "gzip" | "x-gzip" | "deflate"
    ) {
        return Err(BodyError::Unread(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported Content-Encoding `{content_encoding}`: use gzip, deflate or none"),
        ));
    }
    let too_large = format!("request body is larger than the limit of {limit} bytes");
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(BodyError::Unread(StatusCode::PAYLOAD_TOO_LARGE, too_large));
    }
    let raw: Bytes = axum::body::to_bytes(body, limit).await.map_err(|err| {
        if is_length_limit(&err) {
            BodyError::Unread(StatusCode::PAYLOAD_TOO_LARGE, too_large.clone())
        } else {
            BodyError::Unread(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {err}"),
            )
        }
    })?;
    let decoder: Box<dyn Read + '_> = match content_encoding.as_str() {
        "gzip" | "x-gzip" => Box::new(flate2::read::GzDecoder::new(&raw[..])),
        "deflate" => Box::new(flate2::read::ZlibDecoder::new(&raw[..])),
        _ => return Ok(raw),
    };
    let mut decompressed = Vec::with_capacity(raw.len() * 4);
    decoder
        .take(limit as u64 + 1)
        .read_to_end(&mut decompressed)
        .map_err(|err| {
            BodyError::Invalid(
                StatusCode::BAD_REQUEST,
                format!("malformed {content_encoding} body: {err}"),
            )
        })?;
    if decompressed.len() > limit {
        return Err(BodyError::Invalid(StatusCode::PAYLOAD_TOO_LARGE, too_large));
    }
    Ok(decompressed.into())
}

/// An answer given before the body was read to its end: the connection
/// cannot carry another request, so the client is told to close it rather
/// than find out by reusing it.
fn body_unread(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Reads a body to its end, up to `limit` bytes, keeping none of it.
/// Returns whether it reached the end.
async fn discard_body(body: Body, limit: usize) -> bool {
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return false };
        seen += chunk.len();
        if seen > limit {
            return false;
        }
    }
    true
}

/// axum reads bodies through http-body-util's `Limited`, whose error says
/// the limit was hit; anything else is a broken body.
fn is_length_limit(err: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(current) = source {
        if current.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = current.source();
    }
    false
}

fn success(signal: Signal, encoding: Encoding, rejected: Rejected) -> Response {
    let body = match signal {
        Signal::Traces => encode_response(encoding, &rejected.into_trace_response()),
        Signal::Metrics => encode_response(encoding, &rejected.into_metrics_response()),
        // The OTLP routes are the only callers, so this is the logs route.
        Signal::Logs | Signal::Alerts => encode_response(encoding, &rejected.into_logs_response()),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

fn encode_response<M: Message + serde::Serialize>(encoding: Encoding, message: &M) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(message).unwrap_or_else(|_| b"{}".to_vec()),
    }
}

/// An error as the OTLP spec asks: a `google.rpc.Status` in the request's
/// encoding, whose message is one line a person can read.
fn status_error(encoding: Encoding, status: StatusCode, message: &str) -> Response {
    let code = grpc_code(status) as i32;
    let body = match encoding {
        Encoding::Protobuf => tonic_types::Status {
            code,
            message: message.to_string(),
            details: Vec::new(),
        }
        .encode_to_vec(),
        Encoding::Json => serde_json::json!({ "code": code, "message": message })
            .to_string()
            .into_bytes(),
    };
    (
        status,
        [(header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// When the content type itself is unknown, a Status cannot be encoded in it.
fn plain_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response()
}

fn grpc_code(status: StatusCode) -> tonic::Code {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            tonic::Code::InvalidArgument
        }
        StatusCode::NOT_FOUND => tonic::Code::Unimplemented,
        StatusCode::PAYLOAD_TOO_LARGE | StatusCode::TOO_MANY_REQUESTS => {
            tonic::Code::ResourceExhausted
        }
        StatusCode::SERVICE_UNAVAILABLE => tonic::Code::Unavailable,
        _ => tonic::Code::Internal,
    }
}
