use std::time::Duration;

use lookout_pipelines::{Payload, Processor};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use tokio::time::Instant;

use std::collections::BTreeMap;

use super::*;

fn builtin() -> PriceTable {
    build_table(&CostConfig::default(), Vec::new()).expect("the built-in table is valid")
}

fn model_of(id: &str) -> Option<String> {
    find_price(&builtin(), &[], id).map(|price| price.model.clone())
}

#[test]
fn every_builtin_entry_has_a_source_and_a_date() {
    let entries = PriceFile::parse(BUILTIN).expect("parses").entries();
    assert!(entries.len() > 100, "{} entries", entries.len());
    for entry in &entries {
        assert!(
            entry
                .source
                .as_deref()
                .is_some_and(|s| s.starts_with("https://")),
            "{}",
            entry.model
        );
        let as_of = entry.as_of.as_deref().unwrap_or_default();
        assert_eq!(as_of.len(), 10, "{}: as_of {as_of:?}", entry.model);
        assert!(entry.input > 0.0, "{} has no input price", entry.model);
    }
    for provider in [
        "openai",
        "anthropic",
        "google",
        "mistral",
        "deepseek",
        "xai",
        "cohere",
        "bedrock",
        "azure",
    ] {
        assert!(
            entries
                .iter()
                .any(|e| e.provider.as_deref() == Some(provider)),
            "{provider}"
        );
    }
}

#[test]
fn exact_ids_and_aliases_match_first() {
    assert_eq!(model_of("gpt-4o").as_deref(), Some("gpt-4o"));
    assert_eq!(model_of("GPT-4o").as_deref(), Some("gpt-4o"));
    // A dated snapshot with its own price is not reduced to the family.
    assert_eq!(
        model_of("gpt-4o-2024-05-13").as_deref(),
        Some("gpt-4o-2024-05-13")
    );
    assert_eq!(model_of("gpt-35-turbo").as_deref(), Some("gpt-3.5-turbo"));
}

#[test]
fn provider_and_region_prefixes_are_removed() {
    assert_eq!(
        model_of("openai/gpt-4o-mini").as_deref(),
        Some("gpt-4o-mini")
    );
    assert_eq!(model_of("azure/gpt-4.1").as_deref(), Some("gpt-4.1"));
    assert_eq!(
        model_of("vertex_ai/gemini-2.5-pro").as_deref(),
        Some("gemini-2.5-pro")
    );
    assert_eq!(
        model_of("openrouter/anthropic/claude-haiku-4-5").as_deref(),
        Some("claude-haiku-4-5")
    );
    assert_eq!(
        model_of("bedrock/us.anthropic.claude-3-5-sonnet-20241022-v2:0").as_deref(),
        Some("claude-3-7-sonnet"),
    );
    assert_eq!(
        model_of("eu.amazon.nova-pro-v1:0").as_deref(),
        Some("amazon.nova-pro-v1:0")
    );
    // Bedrock's global profiles of newer models cost less than regional ones.
    assert_eq!(
        model_of("global.anthropic.claude-sonnet-4-5-20250929-v1:0").as_deref(),
        Some("global.anthropic.claude-sonnet-4-5-20250929-v1:0"),
    );
    assert_eq!(
        model_of("us.anthropic.claude-sonnet-4-5-20250929-v1:0").as_deref(),
        Some("anthropic.claude-sonnet-4-5-20250929-v1:0"),
    );
}

#[test]
fn date_and_version_suffixes_are_removed() {
    for (id, model) in [
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("claude-3-5-sonnet-20241022", "claude-3-7-sonnet"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        (
            "vertex_ai/claude-3-5-sonnet-v2@20241022",
            "claude-3-7-sonnet",
        ),
        ("gemini-1.5-pro-002", "gemini-1.5-pro"),
        ("gemini-2.0-flash-001", "gemini-2.0-flash"),
        ("text-embedding-004@001", "text-embedding-004"),
        ("command-r-08-2024", "command-r"),
        ("command-a-03-2025", "command-a"),
        ("o3-2025-04-16", "o3"),
        ("gpt-4-0613", "gpt-4"),
        ("mistral-large-2411", "mistral-large"),
        ("grok-4-0709", "grok-4"),
    ] {
        if model == "text-embedding-004" {
            assert_eq!(
                model_of(id),
                None,
                "{id}: not in the table, and not priced as something else"
            );
            continue;
        }
        assert_eq!(model_of(id).as_deref(), Some(model), "{id}");
    }
}

#[test]
fn unknown_models_do_not_match_anything() {
    for id in [
        "",
        "my-private-model",
        "llama-9000",
        "gpt",
        "claude",
        "-2024-07-18",
        "@001",
        "us.",
    ] {
        assert_eq!(model_of(id), None, "{id:?}");
    }
}

#[test]
fn configured_patterns_match_last() {
    let table = builtin();
    let patterns = compile_patterns(
        &[PatternConfig {
            pattern: "^ft:gpt-4o-mini".into(),
            model: "gpt-4o-mini".into(),
        }],
        &table,
    )
    .unwrap();
    let found =
        find_price(&table, &patterns, "ft:gpt-4o-mini:acme::abc123").map(|p| p.model.clone());
    assert_eq!(found.as_deref(), Some("gpt-4o-mini"));
    let missing = PatternConfig {
        pattern: "x".into(),
        model: "no-such-model".into(),
    };
    let error = compile_patterns(&[missing], &table).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("no-such-model is not in the price table"),
        "{error}"
    );
    let bad = PatternConfig {
        pattern: "(".into(),
        model: "gpt-4o".into(),
    };
    assert!(compile_patterns(&[bad], &table).is_err());
}

fn usage(input: i64, output: i64, cache_read: i64, cache_write: i64, reasoning: i64) -> Usage {
    Usage {
        input,
        output,
        cache_read,
        cache_write,
        reasoning,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn cached_and_reasoning_tokens_are_billed_at_their_own_price() {
    let table = builtin();
    let o4_mini = table.get("o4-mini").unwrap();
    // o4-mini: input 1.10, cache read 0.275, output 4.40 per million.
    let cost = o4_mini.cost(&usage(1000, 500, 400, 0, 300));
    assert!(close(cost.input, 600.0 * 1.10 / 1e6), "{cost:?}");
    assert!(close(cost.cache_read, 400.0 * 0.275 / 1e6), "{cost:?}");
    assert!(close(cost.output, 200.0 * 4.40 / 1e6), "{cost:?}");
    assert!(close(cost.reasoning, 300.0 * 4.40 / 1e6), "{cost:?}");
    assert!(close(
        cost.total(),
        (600.0 * 1.10 + 400.0 * 0.275 + 500.0 * 4.40) / 1e6
    ));

    let sonnet = table.get("claude-sonnet-4-6").unwrap();
    let cost = sonnet.cost(&usage(3000, 100, 1000, 1500, 0));
    assert!(close(cost.cache_write, 1500.0 * 3.75 / 1e6), "{cost:?}");
    assert!(close(cost.input, 500.0 * 3.0 / 1e6), "{cost:?}");
}

#[test]
fn a_long_prompt_is_billed_at_the_tier_price() {
    let table = builtin();
    let gemini = table.get("gemini-2.5-pro").unwrap();
    let short = gemini.cost(&usage(200_000, 1000, 0, 0, 0));
    assert!(close(short.input, 200_000.0 * 1.25 / 1e6), "{short:?}");
    let long = gemini.cost(&usage(200_001, 1000, 0, 0, 0));
    assert!(close(long.input, 200_001.0 * 2.5 / 1e6), "{long:?}");
    assert!(close(long.output, 1000.0 * 15.0 / 1e6), "{long:?}");
}

#[test]
fn inconsistent_counts_never_go_negative() {
    let price = builtin().get("gpt-4o").unwrap().clone();
    let cost = price.cost(&usage(10, 5, 50, 0, 9));
    assert!(cost.input >= 0.0 && cost.output >= 0.0, "{cost:?}");
}

#[test]
fn inline_entries_override_and_invalid_prices_are_refused() {
    let entries = "[{model: gpt-4o, input: 1, output: 2}, {model: my-model, input: 3, output: 4}]";
    let mut config = CostConfig {
        models: serde_yaml::from_str(entries).unwrap(),
        ..Default::default()
    };
    let table = build_table(&config, Vec::new()).unwrap();
    assert_eq!(table.get("gpt-4o").unwrap().rates.input, 1.0);
    assert_eq!(table.get("my-model").unwrap().rates.output, 4.0);
    config.models = serde_yaml::from_str("[{model: bad, input: -1}]").unwrap();
    assert!(
        build_table(&config, Vec::new())
            .unwrap_err()
            .contains("bad")
    );
    let unknown_key = serde_yaml::from_str::<Vec<PriceEntry>>("[{model: x, inptu: 1}]");
    assert!(unknown_key.is_err());
}

// ---- spans through the processor -------------------------------------------

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn int(key: &str, n: i64) -> KeyValue {
    kv(key, Value::IntValue(n))
}

fn string(key: &str, s: &str) -> KeyValue {
    kv(key, Value::StringValue(s.into()))
}

fn span(trace: u8, id: u8, parent: Option<u8>, name: &str, attributes: Vec<KeyValue>) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: vec![id; 8],
        parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: 1_000_000_000,
        end_time_unix_nano: 1_000_000_000 + u64::from(id) * 1_000_000,
        attributes,
        ..Default::default()
    }
}

fn payload(spans: Vec<Span>) -> Payload {
    Payload::Traces(vec![ResourceSpans {
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }])
}

fn spans_of(payloads: &[Payload]) -> Vec<Span> {
    payloads
        .iter()
        .flat_map(|p| match p {
            Payload::Traces(resources) => resources.clone(),
            _ => Vec::new(),
        })
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

fn attribute<'a>(span: &'a Span, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(crate::attributes::value_of)
}

fn double(span: &Span, key: &str) -> f64 {
    match attribute(span, key) {
        Some(Value::DoubleValue(d)) => *d,
        other => panic!("{key}: {other:?}"),
    }
}

fn status(span: &Span) -> &str {
    match attribute(span, "lookout.cost.status") {
        Some(Value::StringValue(s)) => s,
        other => panic!("status: {other:?}"),
    }
}

fn processor(yaml: &str) -> CostProcessor {
    let config: CostConfig = serde_yaml::from_str(yaml).unwrap();
    CostProcessor::new("cost", config).unwrap()
}

fn llm(trace: u8, id: u8, parent: Option<u8>, model: &str, input: i64, output: i64) -> Span {
    span(
        trace,
        id,
        parent,
        "chat",
        vec![
            string("gen_ai.operation.name", "chat"),
            string("gen_ai.response.model", model),
            int("gen_ai.usage.input_tokens", input),
            int("gen_ai.usage.output_tokens", output),
        ],
    )
}

#[test]
fn an_llm_span_gets_its_cost_and_breakdown() {
    let mut cost = processor("trace_rollup: {enabled: false}");
    let mut out = Vec::new();
    cost.process(
        payload(vec![llm(
            1,
            2,
            Some(1),
            "gpt-4o-mini-2024-07-18",
            1000,
            200,
        )]),
        &mut out,
    );
    let spans = spans_of(&out);
    let span = &spans[0];
    assert_eq!(status(span), "computed");
    assert!(close(
        double(span, "gen_ai.usage.cost"),
        (1000.0 * 0.15 + 200.0 * 0.6) / 1e6
    ));
    assert!(close(
        double(span, "lookout.cost.input_usd"),
        1000.0 * 0.15 / 1e6
    ));
    assert!(close(
        double(span, "lookout.cost.output_usd"),
        200.0 * 0.6 / 1e6
    ));
    assert_eq!(double(span, "lookout.cost.cache_read_usd"), 0.0);
    assert!(
        matches!(attribute(span, "lookout.cost.price_model"), Some(Value::StringValue(m)) if m == "gpt-4o-mini")
    );
}

#[test]
fn an_unknown_model_is_marked_not_priced_at_zero() {
    let mut cost = processor("trace_rollup: {enabled: false}");
    let mut out = Vec::new();
    cost.process(
        payload(vec![llm(1, 2, Some(1), "acme-llm-7", 1000, 200)]),
        &mut out,
    );
    let spans = spans_of(&out);
    assert_eq!(status(&spans[0]), "unknown_model");
    assert!(attribute(&spans[0], "gen_ai.usage.cost").is_none());
}

#[test]
fn a_reported_cost_is_kept_unless_it_is_a_zero_for_real_tokens() {
    let mut cost = processor("trace_rollup: {enabled: false}");
    let mut reported = llm(1, 2, Some(1), "gpt-4o", 1000, 0);
    reported
        .attributes
        .push(kv("gen_ai.usage.cost", Value::DoubleValue(0.5)));
    let mut zero = llm(1, 3, Some(1), "gpt-4o", 1000, 0);
    zero.attributes
        .push(kv("gen_ai.usage.cost", Value::DoubleValue(0.0)));
    let mut openinference = llm(1, 4, Some(1), "gpt-4o", 1000, 0);
    openinference
        .attributes
        .push(kv("llm.cost.total", Value::DoubleValue(0.25)));
    let mut out = Vec::new();
    cost.process(payload(vec![reported, zero, openinference]), &mut out);
    let spans = spans_of(&out);
    assert_eq!(status(&spans[0]), "reported");
    assert_eq!(double(&spans[0], "gen_ai.usage.cost"), 0.5);
    assert_eq!(status(&spans[1]), "computed");
    assert!(close(
        double(&spans[1], "gen_ai.usage.cost"),
        1000.0 * 2.5 / 1e6
    ));
    assert_eq!(status(&spans[2]), "reported");
    assert_eq!(double(&spans[2], "gen_ai.usage.cost"), 0.25);

    let mut ignoring = processor("{reported_cost: ignore, trace_rollup: {enabled: false}}");
    let mut reported = llm(1, 2, Some(1), "gpt-4o", 1000, 0);
    reported
        .attributes
        .push(kv("gen_ai.usage.cost", Value::DoubleValue(0.5)));
    let mut out = Vec::new();
    ignoring.process(payload(vec![reported]), &mut out);
    assert_eq!(status(&spans_of(&out)[0]), "computed");
}

#[test]
fn agent_and_chain_spans_with_summed_tokens_are_not_priced_again() {
    let mut cost = processor("trace_rollup: {enabled: false}");
    let mut agent = llm(1, 2, Some(1), "gpt-4o", 1000, 10);
    agent.attributes[0] = string("gen_ai.operation.name", "invoke_agent");
    let mut out = Vec::new();
    cost.process(payload(vec![agent]), &mut out);
    assert!(attribute(&spans_of(&out)[0], "lookout.cost.status").is_none());
}

#[test]
fn tts_and_api_calls_are_priced_by_rule() {
    let mut cost = processor(
        r#"
        trace_rollup: {enabled: false}
        tts:
          - {span_name: "^tts\\.", usd_per_character: 0.000015, characters_attribute: tts.input}
        api_calls:
          - {tool: web_search, usd_per_call: 0.01}
          - {span_name: "^POST", attributes: {server.address: api.twilio.com}, usd_per_call: 0.0085}
        "#,
    );
    let spans = vec![
        span(
            1,
            2,
            Some(1),
            "tts.synthesize",
            vec![string("tts.input", "Hello, world")],
        ),
        span(
            1,
            3,
            Some(1),
            "execute_tool",
            vec![string("gen_ai.tool.name", "web_search")],
        ),
        span(
            1,
            4,
            Some(1),
            "POST",
            vec![string("server.address", "api.twilio.com")],
        ),
        span(
            1,
            5,
            Some(1),
            "POST",
            vec![string("server.address", "example.com")],
        ),
        span(1, 6, Some(1), "tts.synthesize", vec![]),
    ];
    let mut out = Vec::new();
    cost.process(payload(spans), &mut out);
    let spans = spans_of(&out);
    assert!(close(
        double(&spans[0], "lookout.cost.tts_usd"),
        12.0 * 0.000015
    ));
    assert!(close(
        double(&spans[0], "gen_ai.usage.cost"),
        12.0 * 0.000015
    ));
    assert_eq!(double(&spans[1], "lookout.cost.api_usd"), 0.01);
    assert_eq!(double(&spans[2], "lookout.cost.api_usd"), 0.0085);
    assert!(attribute(&spans[3], "lookout.cost.status").is_none());
    assert_eq!(status(&spans[4]), "unknown_usage");
    assert!(
        CostProcessor::new(
            "cost",
            serde_yaml::from_str("api_calls: [{usd_per_call: 1}]").unwrap()
        )
        .is_err()
    );
}

fn agent(trace: u8, id: u8, parent: u8, name: &str) -> Span {
    span(
        trace,
        id,
        Some(parent),
        &format!("invoke_agent {name}"),
        vec![
            string("gen_ai.operation.name", "invoke_agent"),
            string("gen_ai.agent.name", name),
        ],
    )
}

#[tokio::test(start_paused = true)]
async fn the_root_carries_the_trace_totals_and_the_agents() {
    let mut cost = processor("trace_rollup: {grace_period: 1s}");
    let mut out = Vec::new();
    let mut failed = llm(7, 5, Some(4), "gpt-4o", 100, 10);
    failed.status = Some(Status {
        code: 2,
        ..Default::default()
    });
    // Children end first; the root arrives last.
    cost.process(
        payload(vec![
            llm(7, 3, Some(2), "gpt-4o", 1000, 100),
            agent(7, 2, 1, "researcher"),
        ]),
        &mut out,
    );
    cost.process(payload(vec![failed, agent(7, 4, 1, "writer")]), &mut out);
    assert_eq!(spans_of(&out).len(), 4, "children pass on at once");
    let root = span(7, 1, None, "workflow", vec![]);
    cost.process(payload(vec![root]), &mut out);
    assert_eq!(
        spans_of(&out).len(),
        4,
        "the root waits for the grace period"
    );
    let due = cost.next_deadline().unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    assert!(due <= Instant::now());
    cost.on_deadline(Instant::now(), &mut out);
    let spans = spans_of(&out);
    let root = spans
        .iter()
        .find(|s| s.parent_span_id.is_empty())
        .expect("the root");
    let expected = (1000.0 * 2.5 + 100.0 * 10.0 + 100.0 * 2.5 + 10.0 * 10.0) / 1e6;
    assert!(close(double(root, "lookout.trace.cost_usd"), expected));
    assert_eq!(
        attribute(root, "lookout.trace.input_tokens"),
        Some(&Value::IntValue(1100))
    );
    assert_eq!(
        attribute(root, "lookout.trace.output_tokens"),
        Some(&Value::IntValue(110))
    );
    assert_eq!(
        attribute(root, "lookout.trace.llm_calls"),
        Some(&Value::IntValue(2))
    );
    assert_eq!(
        attribute(root, "lookout.trace.errors"),
        Some(&Value::IntValue(1))
    );
    let Some(Value::StringValue(agents)) = attribute(root, "lookout.trace.agents") else {
        panic!()
    };
    let agents: BTreeMap<String, AgentTotals> = serde_json::from_str(agents).unwrap();
    assert_eq!(agents.keys().collect::<Vec<_>>(), ["researcher", "writer"]);
    assert!(close(
        agents["researcher"].cost_usd,
        (1000.0 * 2.5 + 100.0 * 10.0) / 1e6
    ));
    assert_eq!(agents["researcher"].input_tokens, 1000);
    assert_eq!(agents["writer"].llm_calls, 1);
    assert_eq!(agents["writer"].duration_ms, 4.0);
    assert_eq!(cost.next_deadline(), None, "nothing is left open");
}

#[tokio::test(start_paused = true)]
async fn open_traces_are_bounded_and_flushed_oldest_first() {
    let mut cost = processor("trace_rollup: {max_traces: 2, grace_period: 10s}");
    let mut out = Vec::new();
    for trace in 1..=3u8 {
        cost.process(
            payload(vec![
                llm(trace, 2, Some(1), "gpt-4o", 10, 1),
                span(trace, 1, None, "root", vec![]),
            ]),
            &mut out,
        );
    }
    let roots: Vec<Span> = spans_of(&out)
        .into_iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "the oldest trace was finished early");
    assert_eq!(roots[0].trace_id, vec![1; 16]);
    assert!(attribute(&roots[0], "lookout.trace.cost_usd").is_some());
    let mut flushed = Vec::new();
    cost.flush(&mut flushed);
    assert_eq!(
        spans_of(&flushed).len(),
        2,
        "shutdown releases every held root"
    );
}

#[tokio::test(start_paused = true)]
async fn a_trace_without_a_root_is_forgotten_after_the_timeout() {
    let mut cost = processor("trace_rollup: {timeout: 5s}");
    let mut out = Vec::new();
    cost.process(payload(vec![llm(1, 2, Some(1), "gpt-4o", 10, 1)]), &mut out);
    assert_eq!(spans_of(&out).len(), 1);
    tokio::time::advance(Duration::from_secs(5)).await;
    cost.on_deadline(Instant::now(), &mut out);
    assert_eq!(cost.rollup.next_deadline(), None);
    assert_eq!(spans_of(&out).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_prices_file_is_reloaded_when_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prices.yaml");
    let write = |input: f64| {
        let text = format!(
            "providers: {{acme: {{source: https://acme.example/pricing, models: [{{model: acme-1, as_of: 2026-11-01, input: {input}, output: 1}}]}}}}"
        );
        std::fs::write(&path, text).unwrap();
    };
    write(1.0);
    let yaml = format!(
        "{{prices_file: {}, reload_interval: 1s, trace_rollup: {{enabled: false}}}}",
        path.display()
    );
    let mut cost = processor(&yaml);
    let price_now = |cost: &mut CostProcessor| {
        let mut out = Vec::new();
        cost.process(
            payload(vec![llm(1, 2, Some(1), "acme-1", 1_000_000, 0)]),
            &mut out,
        );
        double(&spans_of(&out)[0], "gen_ai.usage.cost")
    };
    assert_eq!(price_now(&mut cost), 1.0);
    // A different length makes the change visible even within one mtime tick.
    write(20.0);
    tokio::time::advance(Duration::from_secs(1)).await;
    let due = cost.next_deadline().unwrap();
    cost.on_deadline(due, &mut Vec::new());
    assert_eq!(price_now(&mut cost), 20.0);
    std::fs::write(&path, "providers: [oops").unwrap();
    tokio::time::advance(Duration::from_secs(1)).await;
    let due = cost.next_deadline().unwrap();
    cost.on_deadline(due, &mut Vec::new());
    assert_eq!(
        price_now(&mut cost),
        20.0,
        "an invalid file keeps the previous table"
    );
    let missing = format!("{{prices_file: {}/nope.yaml}}", dir.path().display());
    let error = CostProcessor::new("cost", serde_yaml::from_str(&missing).unwrap())
        .err()
        .unwrap();
    assert!(error.to_string().contains("cannot read"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn without_a_grace_period_the_root_is_finished_in_its_payload() {
    let mut cost = processor("trace_rollup: {grace_period: 0s}");
    let mut out = Vec::new();
    // The root comes first in the payload; its children still count.
    let spans = vec![
        span(3, 1, None, "workflow", vec![]),
        llm(3, 2, Some(1), "gpt-4o", 1000, 100),
        agent(3, 4, 1, "writer"),
    ];
    cost.process(payload(spans), &mut out);
    assert_eq!(out.len(), 1, "nothing is held");
    let spans = spans_of(&out);
    assert_eq!(spans.len(), 3);
    let root = &spans[0];
    assert!(close(
        double(root, "lookout.trace.cost_usd"),
        (1000.0 * 2.5 + 100.0 * 10.0) / 1e6
    ));
    assert_eq!(
        attribute(root, "lookout.trace.llm_calls"),
        Some(&Value::IntValue(1))
    );
    assert_eq!(
        cost.rollup.next_deadline().map(|_| ()),
        Some(()),
        "a stale entry is left for the next tick"
    );
    cost.on_deadline(Instant::now(), &mut out);
    assert_eq!(cost.rollup.next_deadline(), None);

    // A child after its root finished is late: counted, not reopened.
    let mut late = Vec::new();
    cost.process(payload(vec![llm(3, 5, Some(1), "gpt-4o", 1, 1)]), &mut late);
    assert_eq!(spans_of(&late).len(), 1, "a late child still passes on");
    assert_eq!(cost.rollup.next_deadline(), None, "and opens no trace");
}

#[tokio::test(start_paused = true)]
async fn remembered_traces_are_bounded() {
    let mut cost = processor("trace_rollup: {grace_period: 0s, max_traces: 3}");
    let mut out = Vec::new();
    for trace in 1..=10u8 {
        cost.process(
            payload(vec![span(trace, 1, None, "root", vec![])]),
            &mut out,
        );
    }
    assert!(
        cost.rollup.remembered() <= 3,
        "{}",
        cost.rollup.remembered()
    );
}

#[tokio::test(start_paused = true)]
async fn over_the_limit_the_oldest_trace_finishes_even_after_a_tick() {
    let mut cost = processor("trace_rollup: {max_traces: 2, grace_period: 10s}");
    let mut out = Vec::new();
    cost.process(
        payload(vec![
            llm(1, 2, Some(1), "gpt-4o", 10, 1),
            span(1, 1, None, "root", vec![]),
        ]),
        &mut out,
    );
    // A tick must not lose the oldest trace's place in line.
    tokio::time::advance(Duration::from_secs(1)).await;
    cost.on_deadline(Instant::now(), &mut out);
    cost.process(payload(vec![llm(2, 2, Some(1), "gpt-4o", 10, 1)]), &mut out);
    cost.process(payload(vec![llm(3, 2, Some(1), "gpt-4o", 10, 1)]), &mut out);
    let roots: Vec<Span> = spans_of(&out)
        .into_iter()
        .filter(|s| s.parent_span_id.is_empty())
        .collect();
    assert_eq!(roots.len(), 1, "trace 1, the oldest, finished early");
    assert!(close(
        double(&roots[0], "lookout.trace.cost_usd"),
        (10.0 * 2.5 + 1.0 * 10.0) / 1e6
    ));
}
