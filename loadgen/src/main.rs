//! `lookout-loadgen`: sends realistic LLM traces to an OTLP endpoint and
//! reports what was accepted, refused and how long requests took.
//!
//! Requests are generated and encoded (and gzipped, over HTTP) before the
//! clock starts, and reused round-robin, so the generator spends its CPU on
//! sending. Trace and span ids therefore repeat once the pool has been sent,
//! unless `--unique-trace-ids` rewrites the trace ids of each round (a copy
//! of the request per send, for stateful processors such as the cost
//! roll-up, which would otherwise see old traces again).

mod raw_grpc;

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use lookout_loadgen::workload::{Generator, WorkloadConfig};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Protocol {
    Http,
    Grpc,
}

#[derive(Parser, Debug)]
#[command(name = "lookout-loadgen", version, about)]
struct Args {
    /// Base URL: http://host:4318 for HTTP, http://host:4317 for gRPC.
    #[arg(long)]
    endpoint: String,
    #[arg(long, value_enum, default_value = "http")]
    protocol: Protocol,
    /// Compress request bodies with gzip.
    #[arg(long)]
    gzip: bool,
    #[arg(long, default_value_t = 100)]
    spans_per_request: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Offered spans per second; without it, as fast as the server accepts.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 600)]
    prompt_bytes: usize,
    #[arg(long, default_value_t = 0.05)]
    pii_ratio: f64,
    #[arg(long, default_value_t = 0.03)]
    error_ratio: f64,
    /// Distinct pre-encoded requests, sent round-robin.
    #[arg(long, default_value_t = 200)]
    pool: usize,
    /// Give every round through the pool fresh trace ids (not with --gzip).
    #[arg(long)]
    unique_trace_ids: bool,
    /// Wait after a refusal before that worker sends again.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    refused_backoff: Duration,
    /// Also write the report as JSON to this file (`-` for stdout).
    #[arg(long)]
    json: Option<String>,
}

#[derive(Debug, Serialize)]
struct Report {
    protocol: Protocol,
    gzip: bool,
    spans_per_request: usize,
    concurrency: usize,
    duration_s: f64,
    target_spans_per_sec: Option<f64>,
    requests: u64,
    accepted_spans: u64,
    refused_spans: u64,
    error_requests: u64,
    accepted_spans_per_sec: f64,
    bytes_per_request: f64,
    latency_ms_p50: f64,
    latency_ms_p99: f64,
    latency_ms_max: f64,
    generator_cpu_seconds: f64,
}

/// What one worker saw.
struct Tally {
    requests: u64,
    accepted: u64,
    refused: u64,
    errors: u64,
    first_error: Option<String>,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            accepted: 0,
            refused: 0,
            errors: 0,
            first_error: None,
            latency_us: Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid bounds"),
        }
    }

    fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.accepted += other.accepted;
        self.refused += other.refused;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
        let _ = self.latency_us.add(&other.latency_us);
    }
}

enum Outcome {
    Accepted,
    Refused,
    Failed(String),
}

#[derive(Clone)]
enum Client {
    Http {
        client: reqwest::Client,
        url: String,
        gzip: bool,
    },
    Grpc(raw_grpc::RawTraceClient),
}

impl Client {
    async fn send(&mut self, body: Bytes) -> Outcome {
        match self {
            Client::Http { client, url, gzip } => {
                let mut request = client
                    .post(url.as_str())
                    .header("Content-Type", "application/x-protobuf");
                if *gzip {
                    request = request.header("Content-Encoding", "gzip");
                }
                match request.body(body).send().await {
                    Ok(response) if response.status().is_success() => Outcome::Accepted,
                    Ok(response) if response.status().as_u16() == 429 => Outcome::Refused,
                    Ok(response) => Outcome::Failed(format!("HTTP {}", response.status())),
                    Err(err) => Outcome::Failed(err.to_string()),
                }
            }
            Client::Grpc(client) => match client.export(body).await {
                Ok(()) => Outcome::Accepted,
                Err(status) if status.code() == tonic::Code::ResourceExhausted => Outcome::Refused,
                Err(status) => {
                    Outcome::Failed(format!("{:?}: {}", status.code(), status.message()))
                }
            },
        }
    }
}

/// A pre-encoded request, and where the varying half of each trace id
/// (the generator's trace counter) sits in it.
struct Pooled {
    body: Bytes,
    trace_counters: Vec<usize>,
}

impl Pooled {
    fn new(body: Bytes, seed: u64) -> Pooled {
        // A trace id is field 1, 16 bytes (tag 0x0a, length 0x10) in spans
        // and links; its first half is the seed's, its second a counter.
        let mut pattern = vec![0x0a, 0x10];
        pattern.extend_from_slice(&seed.wrapping_add(1).to_be_bytes());
        let trace_counters = body
            .windows(pattern.len())
            .enumerate()
            .filter(|(_, window)| *window == pattern.as_slice())
            .map(|(at, _)| at + pattern.len())
            .filter(|at| at + 8 <= body.len())
            .collect();
        Pooled {
            body,
            trace_counters,
        }
    }

    /// The body for round `round` through the pool: round 0 as encoded,
    /// later rounds with every trace counter moved by `round << 32`.
    fn for_round(&self, round: u64) -> Bytes {
        if round == 0 || self.trace_counters.is_empty() {
            return self.body.clone();
        }
        let mut body = self.body.to_vec();
        for &at in &self.trace_counters {
            let mut counter = [0u8; 8];
            counter.copy_from_slice(&body[at..at + 8]);
            let moved = u64::from_be_bytes(counter).wrapping_add(round << 32);
            body[at..at + 8].copy_from_slice(&moved.to_be_bytes());
        }
        body.into()
    }
}

fn encode_pool(args: &Args) -> Vec<Bytes> {
    let mut generator = Generator::new(WorkloadConfig {
        seed: args.seed,
        spans_per_request: args.spans_per_request,
        prompt_bytes: args.prompt_bytes,
        pii_ratio: args.pii_ratio,
        error_ratio: args.error_ratio,
    });
    (0..args.pool)
        .map(|_| {
            let resource_spans = generator.request();
            let body = encode_request(&resource_spans);
            if args.gzip && args.protocol == Protocol::Http {
                gzip(&body).into()
            } else {
                body.into()
            }
        })
        .collect()
}

/// An `ExportTraceServiceRequest`: its one field is the resources, tag 1.
fn encode_request(
    resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans],
) -> Vec<u8> {
    let mut buf = Vec::new();
    for resource in resource_spans {
        prost::encoding::message::encode(1, resource, &mut buf);
    }
    buf
}

fn gzip(body: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(body).expect("writing to a Vec");
    encoder.finish().expect("writing to a Vec")
}

fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(close) = stat.rfind(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a system constant.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    (ticks(11) + ticks(12)) / per_second
}

async fn worker(
    mut client: Client,
    pool: std::sync::Arc<Vec<Pooled>>,
    index: usize,
    args: std::sync::Arc<Args>,
    start: Instant,
    deadline: Instant,
) -> Tally {
    let mut tally = Tally::new();
    let interval = args.rate.map(|rate| {
        Duration::from_secs_f64(args.concurrency as f64 * args.spans_per_request as f64 / rate)
    });
    let mut next_send = start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(index as f64 / args.concurrency as f64)
        });
    let mut position = index;
    while Instant::now() < deadline {
        if let Some(interval) = interval {
            tokio::time::sleep_until(next_send).await;
            next_send += interval;
        }
        let pooled = &pool[position % pool.len()];
        let body = if args.unique_trace_ids {
            pooled.for_round((position / pool.len()) as u64)
        } else {
            pooled.body.clone()
        };
        position += args.concurrency;
        let sent_at = Instant::now();
        let outcome = client.send(body).await;
        let micros = sent_at.elapsed().as_micros().max(1) as u64;
        let _ = tally.latency_us.record(micros.min(120_000_000));
        tally.requests += 1;
        match outcome {
            Outcome::Accepted => tally.accepted += args.spans_per_request as u64,
            Outcome::Refused => {
                tally.refused += args.spans_per_request as u64;
                if interval.is_none() {
                    tokio::time::sleep(args.refused_backoff).await;
                }
            }
            Outcome::Failed(reason) => {
                tally.errors += 1;
                tally.first_error.get_or_insert(reason);
            }
        }
    }
    tally
}

async fn connect(args: &Args) -> anyhow::Result<Client> {
    Ok(match args.protocol {
        Protocol::Http => Client::Http {
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(args.concurrency)
                .build()?,
            url: format!("{}/v1/traces", args.endpoint.trim_end_matches('/')),
            gzip: args.gzip,
        },
        Protocol::Grpc => Client::Grpc(
            raw_grpc::RawTraceClient::connect(&args.endpoint, args.gzip)
                .await
                .with_context(|| format!("cannot connect to {}", args.endpoint))?,
        ),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = std::sync::Arc::new(Args::parse());
    if args.spans_per_request == 0 || args.concurrency == 0 || args.pool == 0 {
        bail!("--spans-per-request, --concurrency and --pool must be at least 1");
    }
    if args.unique_trace_ids && args.gzip {
        bail!("--unique-trace-ids rewrites bodies in place, which --gzip bodies cannot take");
    }
    let pool: Vec<Pooled> = encode_pool(&args)
        .into_iter()
        .map(|body| Pooled::new(body, args.seed))
        .collect();
    let pool = std::sync::Arc::new(pool);
    let bytes_per_request =
        pool.iter().map(|p| p.body.len()).sum::<usize>() as f64 / pool.len() as f64;
    let client = connect(&args).await?;

    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let deadline = start + args.duration;
    let workers: Vec<_> = (0..args.concurrency)
        .map(|i| {
            tokio::spawn(worker(
                client.clone(),
                pool.clone(),
                i,
                args.clone(),
                start,
                deadline,
            ))
        })
        .collect();
    let mut tally = Tally::new();
    for worker in workers {
        tally.merge(worker.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let quantile_ms = |q: f64| tally.latency_us.value_at_quantile(q) as f64 / 1000.0;
    let report = Report {
        protocol: args.protocol,
        gzip: args.gzip,
        spans_per_request: args.spans_per_request,
        concurrency: args.concurrency,
        duration_s: elapsed,
        target_spans_per_sec: args.rate,
        requests: tally.requests,
        accepted_spans: tally.accepted,
        refused_spans: tally.refused,
        error_requests: tally.errors,
        accepted_spans_per_sec: tally.accepted as f64 / elapsed,
        bytes_per_request,
        latency_ms_p50: quantile_ms(0.5),
        latency_ms_p99: quantile_ms(0.99),
        latency_ms_max: tally.latency_us.max() as f64 / 1000.0,
        generator_cpu_seconds: cpu_seconds() - cpu_before,
    };
    println!(
        "{:?}{} c={} {}/req: accepted {:.0} spans/s ({} spans), refused {} spans, {} failed requests, latency p50 {:.2} ms p99 {:.2} ms max {:.2} ms",
        report.protocol,
        if report.gzip { "+gzip" } else { "" },
        report.concurrency,
        report.spans_per_request,
        report.accepted_spans_per_sec,
        report.accepted_spans,
        report.refused_spans,
        report.error_requests,
        report.latency_ms_p50,
        report.latency_ms_p99,
        report.latency_ms_max,
    );
    if let Some(reason) = &tally.first_error {
        eprintln!("first failure: {reason}");
    }
    match args.json.as_deref() {
        Some("-") => println!("{}", serde_json::to_string(&report)?),
        Some(path) => std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("cannot write {path}"))?,
        None => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message;

    use super::*;

    fn trace_ids(body: &[u8]) -> Vec<Vec<u8>> {
        let request = ExportTraceServiceRequest::decode(body).expect("a valid request");
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
            .map(|span| span.trace_id.clone())
            .collect()
    }

    #[test]
    fn each_round_gets_fresh_trace_ids_and_keeps_traces_whole() {
        let mut generator = Generator::new(WorkloadConfig::default());
        let body: Bytes = encode_request(&generator.request()).into();
        let pooled = Pooled::new(body, WorkloadConfig::default().seed);
        let first = trace_ids(&pooled.for_round(0));
        let second = trace_ids(&pooled.for_round(1));
        assert_eq!(first.len(), second.len());
        let old: HashSet<_> = first.iter().collect();
        assert!(second.iter().all(|id| !old.contains(id)), "every id is new");
        // Spans of one trace still share their (new) id.
        let distinct = |ids: &[Vec<u8>]| ids.iter().collect::<HashSet<_>>().len();
        assert_eq!(distinct(&first), distinct(&second));
    }
}
