//! Each processor, per span, on the load generator's LLM spans.
//!
//! cargo bench -p lookout-processors --bench processors

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use lookout_loadgen::workload::{Generator, WorkloadConfig};
use lookout_pipelines::{Payload, Processor, Signal};
use lookout_processors::batch::{BatchConfig, BatchProcessor};
use lookout_processors::cost::{CostConfig, CostProcessor};
use lookout_processors::genai::{GenAiConfig, GenAiProcessor};
use lookout_processors::pii::detect::Detector;
use lookout_processors::pii::{PiiConfig, PiiProcessor};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

/// The daemon's allocator, so that figures match what it does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS: usize = 100;

fn payloads(count: usize) -> Vec<Payload> {
    let mut generator = Generator::new(WorkloadConfig {
        spans_per_request: SPANS,
        ..WorkloadConfig::default()
    });
    (0..count)
        .map(|_| Payload::Traces(generator.request()))
        .collect()
}

/// Times `make()`'s processor over `requests` payloads, per span,
/// including the flush at the end (which releases what it holds).
fn bench_processor<P: Processor>(
    c: &mut Criterion,
    name: &str,
    requests: usize,
    make: impl Fn() -> P,
) {
    let input = payloads(requests);
    let mut group = c.benchmark_group("processor");
    group.throughput(Throughput::Elements((requests * SPANS) as u64));
    group.bench_function(name, |b| {
        b.iter_batched(
            // Built outside the timing: the cost processor parses its
            // price table once, at startup.
            || (input.clone(), make()),
            |(input, mut processor)| {
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

fn batch(c: &mut Criterion) {
    // The batch processor reads the clock for its timeout.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    bench_processor(c, "batch", 82, || {
        BatchProcessor::new(BatchConfig::default(), Signal::Traces)
    });
}

fn genai(c: &mut Criterion) {
    bench_processor(c, "genai", 20, || {
        GenAiProcessor::new(GenAiConfig::default())
    });
}

fn cost(c: &mut Criterion) {
    bench_processor(c, "cost", 20, || {
        CostProcessor::new("cost", CostConfig::default()).expect("the default config builds")
    });
}

/// The two LLM processors as a pipeline runs them: genai, then cost.
struct GenAiThenCost {
    genai: GenAiProcessor,
    cost: CostProcessor,
    between: Vec<Payload>,
}

impl Processor for GenAiThenCost {
    fn process(&mut self, payload: Payload, out: &mut Vec<Payload>) {
        self.genai.process(payload, &mut self.between);
        for payload in self.between.drain(..) {
            self.cost.process(payload, out);
        }
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        self.cost.flush(out);
    }
}

fn genai_then_cost(c: &mut Criterion) {
    bench_processor(c, "genai+cost", 20, || GenAiThenCost {
        genai: GenAiProcessor::new(GenAiConfig::default()),
        cost: CostProcessor::new("cost", CostConfig::default()).expect("the default config builds"),
        between: Vec::new(),
    });
}

fn pii(c: &mut Criterion) {
    bench_processor(c, "pii", 20, || {
        PiiProcessor::new(PiiConfig::default()).expect("the default config builds")
    });
}

/// Prompt-like text with no PII: with a few numbers in it ("Q3", "120"),
/// which the prefilter cannot rule out, and without; and text dense with
/// PII (about one value in every 25 bytes).
fn pii_texts() -> [(&'static str, String); 3] {
    let prose = "You are a helpful assistant for the sales team. Summarise the call notes below \
        in three bullet points, list the follow-up actions with owners and due dates, and flag \
        any risk to the renewal this quarter. Keep it short and use plain language. "
        .repeat(200);
    let clean = "You are a helpful assistant for the sales team. Summarise the call notes below \
        in three bullet points, list the follow-up actions with owners and due dates, and flag \
        any risk to the renewal in Q3. Keep it under 120 words and use plain language. "
        .repeat(200);
    let dense = "Reach Jane at jane.doe@example.com or +1 415 555 2671; card 4111 1111 1111 1111, \
        IBAN GB82 WEST 1234 5698 7654 32, SSN 123-45-6789, from 10.0.0.12, key sk-proj-abcdefghijklmnopqrstuvwx. "
        .repeat(200);
    [
        ("clean", clean),
        ("clean_no_numbers", prose),
        ("dense", dense),
    ]
}

/// The detectors alone over the texts, in bytes per second.
fn pii_detect(c: &mut Criterion) {
    let detector = Detector::all();
    let mut group = c.benchmark_group("pii_detect");
    for (name, text) in pii_texts() {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| detector.detect(&text)));
    }
    group.finish();
}

/// The whole processor over the texts, held by one span attribute: detect,
/// replace, audit.
fn pii_sanitize(c: &mut Criterion) {
    let mut processor = PiiProcessor::new(PiiConfig::default()).expect("the default config builds");
    let mut group = c.benchmark_group("pii_sanitize");
    for (name, text) in pii_texts() {
        let span = Span {
            name: "chat".into(),
            attributes: vec![KeyValue {
                key: "gen_ai.prompt".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(text.clone())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let resources = vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }];
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| {
            b.iter_batched(
                || resources.clone(),
                |mut resources| {
                    processor.sanitize_traces(&mut resources);
                    resources
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    batch,
    genai,
    cost,
    genai_then_cost,
    pii,
    pii_detect,
    pii_sanitize
);
criterion_main!(benches);
