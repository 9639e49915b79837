//! What the threshold connector's exporter end costs per span: the load
//! benchmark's LLM traces, through `genai` and `cost`, ingested by the
//! default rules.
//!
//!     cargo bench -p lookout-connectors --bench threshold

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lookout_connectors::threshold::{Clock, Evaluator, ThresholdConfig};
use lookout_loadgen::workload::{Generator, WorkloadConfig};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn payload() -> Vec<ResourceSpans> {
    let mut generator = Generator::new(WorkloadConfig::default());
    let resources: Vec<ResourceSpans> = (0..80).flat_map(|_| generator.request()).collect();
    lookout_processors::run_traces(&[("genai", "{}"), ("cost", "{}")], resources)
        .expect("genai and cost")
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
