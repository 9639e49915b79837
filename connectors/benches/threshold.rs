//! What the threshold connector's exporter end costs per span: the load
//! benchmark's LLM traces, through `genai` and `cost`, ingested by the
//! default rules.
//!
//!     cargo bench -p lookout-connectors --bench threshold

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lookout_connectors::threshold::{Clock, Evaluator, ThresholdConfig};
use lookout_loadgen::workload::{Generator, WorkloadConfig};
use lookout_pipelines::{ComponentId, Payload, Signal};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn payload() -> Vec<ResourceSpans> {
    let mut generator = Generator::new(WorkloadConfig::default());
    let mut resources: Vec<ResourceSpans> = (0..80).flat_map(|_| generator.request()).collect();
    let processors = lookout_processors::factories();
    for kind in ["genai", "cost"] {
        let factory = processors.iter().find(|f| f.kind == kind).expect(kind);
        let id = ComponentId::parse(kind).expect("id");
        let mut processor =
            (factory.build)(&id, serde_yaml::Value::Null, Signal::Traces).expect("build");
        let mut out = Vec::new();
        processor.process(Payload::Traces(resources), &mut out);
        processor.flush(&mut out);
        resources = out
            .into_iter()
            .flat_map(|p| match p {
                Payload::Traces(r) => r,
                _ => Vec::new(),
            })
            .collect();
    }
    resources
}

fn ingest(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _guard = runtime.enter();
    let resources = payload();
    let spans: usize = resources
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let mut group = c.benchmark_group("threshold");
    group.throughput(Throughput::Elements(spans as u64));
    for (name, defaults) in [("default_rules", true), ("no_rules", false)] {
        let config = ThresholdConfig {
            default_rules: defaults,
            ..ThresholdConfig::default()
        };
        let mut evaluator =
            Evaluator::new("threshold", &config, Clock::starting_now()).expect("evaluator");
        group.bench_function(name, |b| {
            b.iter(|| evaluator.ingest(&resources, tokio::time::Instant::now()))
        });
    }
    group.finish();
}

criterion_group!(benches, ingest);
criterion_main!(benches);
