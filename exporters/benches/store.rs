//! The `postgres` and `sqlite` exporters' write path: the load
//! benchmark's LLM traces, normalised and priced by the `genai` and `cost`
//! processors, exported through `Exporter::export` by four concurrent
//! callers (the exporter helper's consumers), every span new. Reports
//! stored spans per second.
//!
//! PostgreSQL is measured when `LOOKOUT_BENCH_POSTGRES_URL` names a
//! database (scripts/bench-store --write-path starts one); SQLite always,
//! in a temp directory.
//!
//! `cargo bench -p lookout-exporters --bench store`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lookout_exporters::store::{postgres_factory, sqlite_factory};
use lookout_loadgen::workload::{Generator, WorkloadConfig};
use lookout_pipelines::exporter_helper::ExporterHelperConfig;
use lookout_pipelines::{ComponentId, Exporter, ExporterFactory, Payload};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

// The daemon's allocator, so that the exporter's CPU is measured as it runs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const REQUESTS_PER_PAYLOAD: usize = 80;
const WRITERS: usize = 4;
/// Payloads each writer exports back to back per iteration, so that the
/// wait for the slowest writer at the end is a small part of it.
const PAYLOADS_PER_WRITER: usize = 3;

/// One batch as the batch processor hands it on: 8,000 spans, already
/// through `genai` and `cost`.
fn payload() -> Vec<ResourceSpans> {
    let mut config = WorkloadConfig::default();
    if let Some(bytes) = std::env::var("LOOKOUT_BENCH_PROMPT_BYTES")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        config.prompt_bytes = bytes;
    }
    let mut generator = Generator::new(config);
    let resources: Vec<ResourceSpans> = (0..REQUESTS_PER_PAYLOAD)
        .flat_map(|_| generator.request())
        .collect();
    lookout_processors::run_traces(
        &[("genai", "{}"), ("cost", "trace_rollup: {enabled: false}")],
        resources,
    )
    .expect("genai and cost")
}

/// A copy of `template` whose trace ids no earlier copy used.
fn fresh(template: &[ResourceSpans], round: u64) -> Payload {
    let mut resources = template.to_vec();
    for span in resources
        .iter_mut()
        .flat_map(|r| &mut r.scope_spans)
        .flat_map(|s| &mut s.spans)
    {
        if span.trace_id.len() == 16 {
            span.trace_id[..8].copy_from_slice(&round.to_be_bytes());
        }
    }
    Payload::Traces(resources)
}

fn exporter(
    factory: ExporterFactory,
    config: &str,
    runtime: &tokio::runtime::Runtime,
) -> Arc<dyn Exporter> {
    let id = ComponentId::parse(factory.kind).expect("id");
    let raw = serde_yaml::from_str(config).expect("yaml");
    let exporter: Arc<dyn Exporter> =
        Arc::from((factory.build)(&id, raw, &ExporterHelperConfig::default()).expect("build"));
    runtime.block_on(exporter.start()).expect("start");
    exporter
}

fn bench_backend(
    c: &mut Criterion,
    name: &str,
    exporter: Arc<dyn Exporter>,
    runtime: &tokio::runtime::Runtime,
) {
    let template = payload();
    let spans = Payload::Traces(template.clone()).item_count();
    let mut round = 1u64;
    let mut group = c.benchmark_group("store");
    group.throughput(Throughput::Elements(
        (spans * WRITERS * PAYLOADS_PER_WRITER) as u64,
    ));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function(name, |b| {
        b.iter_custom(|iterations| {
            let mut elapsed = Duration::ZERO;
            for _ in 0..iterations {
                let work: Vec<Vec<Payload>> = (0..WRITERS)
                    .map(|_| {
                        (0..PAYLOADS_PER_WRITER)
                            .map(|_| {
                                round += 1;
                                fresh(&template, round)
                            })
                            .collect()
                    })
                    .collect();
                let started = Instant::now();
                runtime.block_on(async {
                    let writers = work.into_iter().map(|payloads| {
                        let exporter = exporter.clone();
                        tokio::spawn(async move {
                            for payload in payloads {
                                exporter.export(&payload).await.expect("export");
                            }
                        })
                    });
                    for writer in writers.collect::<Vec<_>>() {
                        writer.await.expect("join");
                    }
                });
                elapsed += started.elapsed();
            }
            elapsed
        })
    });
    group.finish();
    runtime.block_on(exporter.shutdown()).expect("shutdown");
}

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if let Ok(url) = std::env::var("LOOKOUT_BENCH_POSTGRES_URL") {
        let config = format!("url: {url}\nretention_days: 0\n");
        let postgres = exporter(postgres_factory(), &config, &runtime);
        bench_backend(c, "postgres", postgres, &runtime);
    } else {
        eprintln!(
            "LOOKOUT_BENCH_POSTGRES_URL is not set: PostgreSQL not measured (scripts/bench-store --write-path sets it)"
        );
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let config = format!(
        "path: {}\nretention_days: 0\n",
        dir.path().join("bench.db").display()
    );
    let sqlite = exporter(sqlite_factory(), &config, &runtime);
    bench_backend(c, "sqlite", sqlite, &runtime);
}

criterion_group!(benches, store);
criterion_main!(benches);
