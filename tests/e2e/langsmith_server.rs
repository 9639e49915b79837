//! A LangSmith-compatible test server: `/info`, `/runs/multipart` and
//! `/runs/batch`, as strict as the real API about what it takes. It
//! rejects runs without `trace_id` or `dotted_order`, dotted orders that
//! do not end with the run's id or start with the trace's, a malformed
//! multipart body, part names outside `<event>.<id>[.<field>]`, and parts
//! without their own `Content-Type: application/json` and a correct
//! `Content-Length`. It can answer 429s, fail a share of requests with
//! 500, refuse a key, and go down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct Faults {
    /// Answer this many requests with 429 and `Retry-After: 1`.
    pub too_many_requests: usize,
    /// Fail this share of requests with 500, before storing anything.
    pub server_error_ratio: f64,
    /// Answer 401 unless `x-api-key` is this.
    pub api_key: Option<String>,
}

#[derive(Default)]
pub struct Recorded {
    /// Stored runs by id, each the full run JSON.
    pub runs: HashMap<String, Value>,
    /// Posts of an id already stored (answered 409).
    pub duplicates: usize,
    /// `(path, status, content-encoding)` of every ingest request.
    pub requests: Vec<(String, u16, Option<String>)>,
    pub rejections: Vec<String>,
    /// Spans received on `/otel/v1/traces`, with the `x-api-key` and
    /// `Langsmith-Project` headers of their request.
    pub otel_spans: Vec<(usize, Option<String>, Option<String>)>,
}

pub struct FakeLangSmith {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<Shared>>,
    stop: CancellationToken,
}

pub struct Shared {
    pub info: Value,
    pub faults: Faults,
    pub recorded: Recorded,
}

impl FakeLangSmith {
    pub async fn start(info: Value) -> FakeLangSmith {
        let state = Arc::new(Mutex::new(Shared {
            info,
            faults: Faults::default(),
            recorded: Recorded::default(),
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = serve(listener, state.clone());
        FakeLangSmith { addr, state, stop }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening: connections are refused until `come_back`.
    pub fn go_down(&mut self) {
        self.stop.cancel();
    }

    pub async fn come_back(&mut self) {
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        };
        self.stop = serve(listener, self.state.clone());
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    pub fn runs(&self) -> HashMap<String, Value> {
        self.with(|s| s.recorded.runs.clone())
    }

    pub fn run_count(&self) -> usize {
        self.with(|s| s.recorded.runs.len())
    }
}

fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<Shared>>) -> CancellationToken {
    let stop = CancellationToken::new();
    let app = Router::new()
        .route("/info", get(info))
        .route("/runs/multipart", post(multipart))
        .route("/runs/batch", post(batch))
        .route("/otel/v1/traces", post(otel))
        .with_state(state);
    let token = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { token.cancelled().await })
            .await;
    });
    stop
}

async fn info(State(state): State<Arc<Mutex<Shared>>>) -> Response {
    axum::Json(state.lock().unwrap().info.clone()).into_response()
}

type Answer = (StatusCode, HeaderMap, String);

fn answer(status: StatusCode, body: impl Into<String>) -> Answer {
    (status, HeaderMap::new(), body.into())
}

/// Faults and the key, checked before the body is looked at.
fn gate(shared: &mut Shared, headers: &HeaderMap) -> Option<Answer> {
    if let Some(key) = &shared.faults.api_key
        && headers.get("x-api-key").and_then(|v| v.to_str().ok()) != Some(key.as_str())
    {
        return Some(answer(
            StatusCode::UNAUTHORIZED,
            r#"{"detail":"Invalid token"}"#,
        ));
    }
    if shared.faults.too_many_requests > 0 {
        shared.faults.too_many_requests -= 1;
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", "1".parse().unwrap());
        return Some((StatusCode::TOO_MANY_REQUESTS, headers, "slow down".into()));
    }
    if fastrand::f64() < shared.faults.server_error_ratio {
        return Some(answer(StatusCode::INTERNAL_SERVER_ERROR, "injected"));
    }
    None
}

fn record(state: &Arc<Mutex<Shared>>, path: &str, headers: &HeaderMap, answer: Answer) -> Response {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut shared = state.lock().unwrap();
    shared
        .recorded
        .requests
        .push((path.to_string(), answer.0.as_u16(), encoding));
    if answer.0.is_client_error() && answer.0 != StatusCode::CONFLICT {
        shared.recorded.rejections.push(answer.2.clone());
    }
    answer.into_response()
}

async fn multipart(
    State(state): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gated = gate(&mut state.lock().unwrap(), &headers);
    let answer = match gated {
        Some(answer) => answer,
        None => match parse_multipart(&headers, body).await {
            Ok(runs) => store(&state, runs),
            Err(reason) => answer(StatusCode::UNPROCESSABLE_ENTITY, reason),
        },
    };
    record(&state, "/runs/multipart", &headers, answer)
}

async fn batch(
    State(state): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let gated = gate(&mut state.lock().unwrap(), &headers);
    let answer = match gated {
        Some(answer) => answer,
        None => match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(mut object)) => {
                let posts = match object.remove("post") {
                    Some(Value::Array(posts)) => posts,
                    _ => vec![],
                };
                store(&state, posts)
            }
            _ => answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                "body is not a batch object",
            ),
        },
    };
    record(&state, "/runs/batch", &headers, answer)
}

/// LangSmith's OTLP/HTTP endpoint: gzip or plain protobuf.
async fn otel(
    State(state): State<Arc<Mutex<Shared>>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let body = if header("content-encoding").as_deref() == Some("gzip") {
        let mut plain = Vec::new();
        let decoded = std::io::Read::read_to_end(
            &mut flate2::read::GzDecoder::new(body.as_ref()),
            &mut plain,
        );
        if decoded.is_err() {
            return StatusCode::BAD_REQUEST;
        }
        Bytes::from(plain)
    } else {
        body
    };
    let Ok(lookout_pipelines::Payload::Traces(resources)) =
        lookout_pipelines::codec::decode_protobuf(lookout_pipelines::Signal::Traces, &body)
    else {
        return StatusCode::BAD_REQUEST;
    };
    let spans = resources
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let entry = (spans, header("x-api-key"), header("langsmith-project"));
    state.lock().unwrap().recorded.otel_spans.push(entry);
    StatusCode::OK
}

/// Validates and stores runs: all or nothing, like one request should.
fn store(state: &Arc<Mutex<Shared>>, runs: Vec<Value>) -> Answer {
    for run in &runs {
        if let Err(reason) = validate(run) {
            return answer(StatusCode::UNPROCESSABLE_ENTITY, reason);
        }
    }
    let mut shared = state.lock().unwrap();
    let mut duplicate = false;
    for run in runs {
        let id = run["id"].as_str().unwrap_or_default().to_string();
        match shared.recorded.runs.entry(id) {
            std::collections::hash_map::Entry::Occupied(_) => {
                shared.recorded.duplicates += 1;
                duplicate = true;
            }
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(run);
            }
        }
    }
    if duplicate {
        answer(StatusCode::CONFLICT, "payload already received")
    } else {
        answer(StatusCode::ACCEPTED, r#"{"message":"Runs batch ingested"}"#)
    }
}

const RUN_TYPES: [&str; 7] = [
    "tool",
    "chain",
    "llm",
    "retriever",
    "embedding",
    "prompt",
    "parser",
];

fn validate(run: &Value) -> Result<(), String> {
    let field = |name: &str| run.get(name).and_then(Value::as_str);
    let id = field("id").ok_or("run without id")?;
    let trace_id = field("trace_id").ok_or_else(|| format!("run {id} without trace_id"))?;
    let dotted = field("dotted_order").ok_or_else(|| format!("run {id} without dotted_order"))?;
    field("name").ok_or_else(|| format!("run {id} without name"))?;
    field("start_time").ok_or_else(|| format!("run {id} without start_time"))?;
    let run_type = field("run_type").unwrap_or("chain");
    if !RUN_TYPES.contains(&run_type) {
        return Err(format!("run {id}: run_type {run_type}"));
    }
    let segments: Vec<&str> = dotted.split('.').collect();
    for segment in &segments {
        let ok = segment.len() == 22 + 36
            && segment.as_bytes()[8] == b'T'
            && segment.as_bytes()[21] == b'Z'
            && uuid::Uuid::parse_str(&segment[22..]).is_ok();
        if !ok {
            return Err(format!(
                "run {id}: malformed dotted_order segment {segment}"
            ));
        }
    }
    if !segments.last().unwrap().ends_with(id) {
        return Err(format!(
            "run {id}: dotted_order does not end with the run id"
        ));
    }
    if !segments[0].ends_with(trace_id) {
        return Err(format!(
            "run {id}: dotted_order does not start with the trace id"
        ));
    }
    match (
        run.get("parent_run_id").and_then(Value::as_str),
        segments.len(),
    ) {
        (None, 1) => Ok(()),
        (Some(parent), n) if n >= 2 && segments[n - 2].ends_with(parent) => Ok(()),
        _ => Err(format!(
            "run {id}: parent_run_id does not match dotted_order"
        )),
    }
}

/// Parses a (possibly zstd-compressed) multipart body into runs.
async fn parse_multipart(headers: &HeaderMap, body: Bytes) -> Result<Vec<Value>, String> {
    let body = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        Some("zstd") => {
            let plain = zstd::decode_all(body.as_ref()).map_err(|e| format!("bad zstd: {e}"))?;
            let declared = headers
                .get("x-pre-compressed-size")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared != Some(plain.len()) {
                return Err("X-Pre-Compressed-Size does not match".into());
            }
            Bytes::from(plain)
        }
        Some(other) => return Err(format!("unsupported content-encoding {other}")),
        None => body,
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .ok_or("no content-type")?;
    let boundary =
        multer::parse_boundary(content_type).map_err(|e| format!("not multipart: {e}"))?;
    let stream = futures_util::stream::once(async move { Ok::<Bytes, std::io::Error>(body) });
    let mut multipart = multer::Multipart::new(stream, boundary);
    let mut runs: Vec<(String, Map<String, Value>)> = Vec::new();
    let mut fields: Vec<(String, String, Value)> = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| format!("malformed multipart: {e}"))?
    {
        let name = field.name().ok_or("a part without a name")?.to_string();
        let content_type = field.content_type().map(|m| m.essence_str().to_string());
        if content_type.as_deref() != Some("application/json") {
            return Err(format!("part {name} is not application/json"));
        }
        let declared: Option<usize> = field
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let data = field
            .bytes()
            .await
            .map_err(|e| format!("malformed multipart: {e}"))?;
        if declared != Some(data.len()) {
            return Err(format!("part {name}: Content-Length missing or wrong"));
        }
        let value: Value =
            serde_json::from_slice(&data).map_err(|e| format!("part {name}: {e}"))?;
        let pieces: Vec<&str> = name.split('.').collect();
        let (event, id, field_name) = match pieces.as_slice() {
            [event, id] => (*event, *id, None),
            [event, id, field] => (*event, *id, Some(*field)),
            _ => return Err(format!("part name {name} is not <event>.<id>[.<field>]")),
        };
        if !["post", "patch", "feedback", "attachment"].contains(&event)
            || uuid::Uuid::parse_str(id).is_err()
        {
            return Err(format!("part name {name} is not <event>.<id>[.<field>]"));
        }
        match field_name {
            None => match value {
                Value::Object(object) => runs.push((id.to_string(), object)),
                _ => return Err(format!("part {name} is not an object")),
            },
            Some(f)
                if [
                    "inputs",
                    "outputs",
                    "events",
                    "extra",
                    "error",
                    "serialized",
                ]
                .contains(&f) =>
            {
                fields.push((id.to_string(), f.to_string(), value))
            }
            Some(f) => return Err(format!("part {name}: unknown field {f}")),
        }
    }
    for (id, field, value) in fields {
        let run = runs
            .iter_mut()
            .find(|(run_id, _)| *run_id == id)
            .ok_or_else(|| format!("a {field} part for a run that has no post part: {id}"))?;
        run.1.insert(field, value);
    }
    Ok(runs
        .into_iter()
        .map(|(_, run)| Value::Object(run))
        .collect())
}

/// What `/info` says by default: multipart, no compression.
pub fn default_info() -> Value {
    json!({
        "version": "0.11.0",
        "license_expiration_time": null,
        "batch_ingest_config": {
            "use_multipart_endpoint": true,
            "scale_up_qsize_trigger": 1000,
            "scale_up_nthreads_limit": 16,
            "scale_down_nempty_trigger": 4,
            "size_limit": 100,
            "size_limit_bytes": 20971520
        },
        "instance_flags": {"zstd_compression_enabled": false}
    })
}
