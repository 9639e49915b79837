//! OTLP decode and encode, per span, on the load generator's LLM spans
//! (about 1.5 KB of protobuf each).
//!
//! cargo bench -p lookout-pipelines --bench otlp_codec

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use lookout_loadgen::workload::{Generator, WorkloadConfig};
use lookout_pipelines::{Payload, Signal, codec};

/// The daemon's allocator, so that figures match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS: usize = 100;

fn request() -> Payload {
    let mut generator = Generator::new(WorkloadConfig {
        spans_per_request: SPANS,
        ..WorkloadConfig::default()
    });
    Payload::Traces(generator.request())
}

fn codec_benches(c: &mut Criterion) {
    let payload = request();
    let protobuf = payload.encode_request();
    let mut json = Vec::new();
    codec::encode_json(&payload, &mut json).unwrap();

    let mut group = c.benchmark_group("otlp");
    group.throughput(Throughput::Elements(SPANS as u64));
    group.bench_function("decode_protobuf", |b| {
        b.iter(|| codec::decode_protobuf(Signal::Traces, &protobuf).unwrap())
    });
    group.bench_function("encode_protobuf", |b| b.iter(|| payload.encode_request()));
    group.bench_function("decode_json", |b| {
        b.iter(|| codec::decode_json(Signal::Traces, &json).unwrap())
    });
    group.bench_function("encode_json", |b| {
        b.iter(|| {
            let mut out = Vec::with_capacity(json.len());
            codec::encode_json(&payload, &mut out).unwrap();
            out
        })
    });
    group.bench_function("item_count", |b| b.iter(|| payload.item_count()));
    group.finish();
}

criterion_group!(benches, codec_benches);
criterion_main!(benches);
