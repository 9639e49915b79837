//! Each processor, per span, on the load generator's LLM spans.
//!
//! cargo bench -p lookout-processors --bench processors

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lookout_loadgen::workload::{Generator, WorkloadConfig};
use lookout_pipelines::{Payload, Processor, Signal};
use lookout_processors::batch::{BatchConfig, BatchProcessor};
use lookout_processors::genai::{GenAiConfig, GenAiProcessor};

/// The daemon's allocator, so that figures match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS: usize = 100;

fn requests(count: usize) -> Vec<Payload> {
    let mut generator = Generator::new(WorkloadConfig {
        spans_per_request: SPANS,
        ..WorkloadConfig::default()
    });
    (0..count)
        .map(|_| Payload::Traces(generator.request()))
        .collect()
}

fn batch(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let input = requests(82);
    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Elements((input.len() * SPANS) as u64));
    group.bench_function("batch", |b| {
        b.iter_batched(
            || input.clone(),
            |input| {
                let mut processor = BatchProcessor::new(BatchConfig::default(), Signal::Traces);
                let mut out = Vec::new();
                for payload in input {
                    processor.process(payload, &mut out);
                }
                processor.flush(&mut out);
                out
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn genai(c: &mut Criterion) {
    let input = requests(20);
    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Elements((input.len() * SPANS) as u64));
    group.bench_function("genai", |b| {
        b.iter_batched(
            || input.clone(),
            |input| {
                let mut processor = GenAiProcessor::new(GenAiConfig::default());
                let mut out = Vec::new();
                for payload in input {
                    processor.process(payload, &mut out);
                }
                out
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, batch, genai);
criterion_main!(benches);
