//! Starting and stopping the daemon, and reading what it wrote.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use lookout_pipelines::{Payload, Signal, codec};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tempfile::TempDir;
use tokio::time::Instant;

pub fn lookout_bin() -> &'static str {
    env!("CARGO_BIN_EXE_lookout")
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The Python of the test venv, which `scripts/test` creates. A test that
/// needs it fails, loudly, without it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("LOOKOUT_TEST_PYTHON").map(PathBuf::from).expect(
        "LOOKOUT_TEST_PYTHON is not set: run the tests with scripts/test, which installs the Python clients",
    );
    assert!(
        path.exists(),
        "LOOKOUT_TEST_PYTHON={} does not exist",
        path.display()
    );
    path
}

pub fn python_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/python")
        .join(name)
}

/// Runs `tests/python/<script>` with `args` in the test venv; fails the
/// test with the script's output if it fails.
pub fn run_python(script: &str, args: &[&str]) {
    let output = Command::new(python())
        .arg(python_script(script))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "the Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub struct Daemon {
    child: Option<Child>,
    pub dir: TempDir,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub telemetry: SocketAddr,
    /// A spare free address, for `{extra}` (a component's own endpoint).
    pub extra: SocketAddr,
    log_path: PathBuf,
}

impl Daemon {
    /// Starts the daemon on `config`, in which `{http}`, `{grpc}`,
    /// `{telemetry}`, `{extra}` and `{dir}` are replaced by free loopback addresses
    /// and the temp directory, and waits until it is ready.
    ///
    /// A port found free can be taken by a parallel test before the daemon
    /// binds it, so a start that fails with "Address already in use" is
    /// tried again on fresh ports.
    pub async fn start(config: &str) -> Daemon {
        Daemon::start_with_env(config, &[]).await
    }

    /// As `start`, with these variables in the daemon's environment.
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        const ATTEMPTS: usize = 5;
        for _ in 1..ATTEMPTS {
            match Daemon::try_start(config, env).await {
                Ok(daemon) => return daemon,
                Err(log) if log.contains("Address already in use") => continue,
                Err(log) => panic!("lookout did not become ready:\n{log}"),
            }
        }
        Daemon::try_start(config, env)
            .await
            .unwrap_or_else(|log| panic!("lookout did not become ready:\n{log}"))
    }

    /// Starts one daemon; the error is its log.
    async fn try_start(config: &str, env: &[(&str, &str)]) -> Result<Daemon, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let addr = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let (http, grpc, telemetry) = (addr(free_port()), addr(free_port()), addr(free_port()));
        let extra = addr(free_port());
        let config = config
            .replace("{extra}", &extra.to_string())
            .replace("{http}", &http.to_string())
            .replace("{grpc}", &grpc.to_string())
            .replace("{telemetry}", &telemetry.to_string())
            .replace("{dir}", &dir.path().display().to_string());
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let log_path = dir.path().join("lookout.log");
        let log = std::fs::File::create(&log_path).expect("log file");
        let child = Command::new(lookout_bin())
            .args(["run", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start lookout");
        let mut daemon = Daemon {
            child: Some(child),
            dir,
            http,
            grpc,
            telemetry,
            extra,
            log_path,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// Waits for `/health/ready`; the error is the log of a daemon that
    /// exited or never became ready.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let client = reqwest::Client::new();
        let url = format!("http://{}/health/ready", self.telemetry);
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            let child = self.child.as_mut().expect("running");
            if child.try_wait().expect("wait").is_some() {
                self.child = None;
                return Err(self.log());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.log())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// POSTs a protobuf OTLP traces body to the daemon's HTTP receiver.
    pub async fn post_traces(&self, body: Vec<u8>) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.http_url("/v1/traces"))
            .header("Content-Type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("the daemon answers")
    }

    /// The daemon's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.telemetry))
            .await
            .expect("the telemetry endpoint answers")
            .text()
            .await
            .expect("a text body")
    }

    /// Resident memory of the daemon, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace()
            .nth(1)
            .unwrap()
            .parse::<u64>()
            .unwrap()
            * 1024
    }

    /// Sends SIGTERM and waits for the exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill only sends a signal to our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("lookout did not exit after SIGTERM:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every payload the file exporter wrote, one per line.
pub fn read_file_output(path: &Path) -> Vec<Payload> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
            let signal = if value.get("resourceSpans").is_some() {
                Signal::Traces
            } else if value.get("resourceMetrics").is_some() {
                Signal::Metrics
            } else {
                Signal::Logs
            };
            codec::decode_json(signal, line.as_bytes()).expect("an OTLP/JSON request")
        })
        .collect()
}

/// How many times each span id occurs in the file exporter's output.
pub fn span_id_counts(payloads: &[Payload]) -> HashMap<Vec<u8>, usize> {
    let mut counts = HashMap::new();
    for payload in payloads {
        if let Payload::Traces(resources) = payload {
            for span in resources
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                *counts.entry(span.span_id.clone()).or_default() += 1;
            }
        }
    }
    counts
}

/// The value of one series (`name{labels}`) in Prometheus text.
pub fn metric_value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// Polls until `check` holds, for at most `timeout`.
pub async fn eventually(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

pub fn string_attribute(key: &str, value: impl Into<String>) -> KeyValue {
    attribute(key, any_value::Value::StringValue(value.into()))
}

pub fn attribute(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// `count` spans with unique ids derived from `batch`, each carrying a
/// prompt of `prompt_bytes` bytes.
pub fn spans(batch: u64, count: u64, prompt_bytes: usize) -> Vec<ResourceSpans> {
    let spans = (0..count)
        .map(|i| {
            let id = batch * 1_000_000 + i + 1;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&batch.wrapping_add(1).to_be_bytes());
            trace_id[8..].copy_from_slice(&id.to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                name: "chat gpt-4o-mini".into(),
                kind: 3,
                start_time_unix_nano: 1_700_000_000_000_000_000 + id,
                end_time_unix_nano: 1_700_000_000_500_000_000 + id,
                attributes: vec![
                    string_attribute("gen_ai.request.model", "gpt-4o-mini"),
                    string_attribute("gen_ai.prompt", "p".repeat(prompt_bytes)),
                ],
                ..Default::default()
            }
        })
        .collect();
    resource_spans("e2e", spans)
}

/// `spans` under one resource of service `service`.
pub fn resource_spans(service: &str, spans: Vec<Span>) -> Vec<ResourceSpans> {
    vec![ResourceSpans {
        resource: Some(Resource {
            attributes: vec![string_attribute("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }]
}

/// A protobuf OTLP/HTTP traces body.
pub fn traces_body(resource_spans: Vec<ResourceSpans>) -> Vec<u8> {
    Payload::Traces(resource_spans).encode_request()
}

/// The daemon config most tests start from: OTLP in, batch, file out.
pub const FILE_PIPELINE: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
      grpc:
        endpoint: {grpc}
processors:
  batch:
    timeout: 50ms
exporters:
  file:
    path: {dir}/out.jsonl
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
    metrics:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [file]
  telemetry:
    metrics:
      endpoint: {telemetry}
";
