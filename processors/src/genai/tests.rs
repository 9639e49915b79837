use super::*;
use opentelemetry_proto::tonic::common::v1::AnyValue;

fn attribute(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(key: &str, value: &str) -> KeyValue {
    attribute(key, Value::StringValue(value.into()))
}

fn i(key: &str, value: i64) -> KeyValue {
    attribute(key, Value::IntValue(value))
}

fn normalised(attributes: Vec<KeyValue>, config: GenAiConfig) -> Vec<KeyValue> {
    let mut span = Span {
        attributes,
        ..Default::default()
    };
    GenAiProcessor::new(config).normalise(&mut span);
    span.attributes
}

fn get<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    let found: Vec<_> = attributes.iter().filter(|a| a.key == key).collect();
    assert!(found.len() <= 1, "{key} written twice");
    found.first()?.value.as_ref()?.value.as_ref()
}

fn string_at(attributes: &[KeyValue], key: &str) -> Option<String> {
    match get(attributes, key)? {
        Value::StringValue(s) => Some(s.clone()),
        other => panic!("{key} is {other:?}"),
    }
}

fn int_at(attributes: &[KeyValue], key: &str) -> Option<i64> {
    match get(attributes, key)? {
        Value::IntValue(n) => Some(*n),
        other => panic!("{key} is {other:?}"),
    }
}

#[test]
fn current_otel_attributes_stay_as_they_are() {
    let out = normalised(
        vec![
            s("gen_ai.provider.name", "openai"),
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "gpt-4o-mini"),
            s("gen_ai.response.model", "gpt-4o-mini-2024-07-18"),
            i("gen_ai.usage.input_tokens", 1200),
            i("gen_ai.usage.output_tokens", 300),
            i("gen_ai.usage.cache_read.input_tokens", 400),
            i("gen_ai.usage.reasoning.output_tokens", 64),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.input_tokens"),
        Some(1200),
        "spec counts are cache-inclusive"
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.cache_read.input_tokens"),
        Some(400)
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.reasoning.output_tokens"),
        Some(64)
    );
    assert_eq!(
        string_at(&out, "gen_ai.response.model").as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(string_at(&out, KIND_ATTRIBUTE).as_deref(), Some("chat"));
    assert_eq!(get(&out, CACHE_ADDED_ATTRIBUTE), None);
    assert_eq!(out.len(), 9, "only the kind is added");
}

#[test]
fn old_openllmetry_names_are_mapped_and_their_exclusive_input_is_fixed() {
    let out = normalised(
        vec![
            s("gen_ai.system", "Anthropic"),
            s("llm.request.type", "chat"),
            s("gen_ai.request.model", "claude-3-5-sonnet-20241022"),
            i("gen_ai.usage.prompt_tokens", 100),
            i("gen_ai.usage.completion_tokens", 20),
            i("gen_ai.usage.cache_read_input_tokens", 1000),
            i("gen_ai.usage.cache_creation_input_tokens", 50),
            i("llm.usage.total_tokens", 1170),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&out, "gen_ai.provider.name").as_deref(),
        Some("anthropic")
    );
    assert_eq!(
        string_at(&out, "gen_ai.operation.name").as_deref(),
        Some("chat")
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.input_tokens"),
        Some(1150),
        "100 + 1000 read + 50 written"
    );
    assert_eq!(int_at(&out, "gen_ai.usage.output_tokens"), Some(20));
    assert_eq!(
        int_at(&out, "gen_ai.usage.cache_read.input_tokens"),
        Some(1000)
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.cache_creation.input_tokens"),
        Some(50)
    );
    assert_eq!(
        get(&out, CACHE_ADDED_ATTRIBUTE),
        Some(&Value::BoolValue(true))
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.prompt_tokens"),
        Some(100),
        "originals are kept"
    );
}

#[test]
fn openinference_attributes_are_mapped_with_inclusive_cache_counts() {
    let out = normalised(
        vec![
            s("openinference.span.kind", "LLM"),
            s("llm.provider", "openai"),
            s("llm.model_name", "gpt-4o"),
            i("llm.token_count.prompt", 2000),
            i("llm.token_count.completion", 150),
            i("llm.token_count.prompt_details.cache_read", 1024),
            i("llm.token_count.completion_details.reasoning", 30),
            s("session.id", "call-42"),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(int_at(&out, "gen_ai.usage.input_tokens"), Some(2000));
    assert_eq!(
        int_at(&out, "gen_ai.usage.cache_read.input_tokens"),
        Some(1024)
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.reasoning.output_tokens"),
        Some(30)
    );
    assert_eq!(
        string_at(&out, "gen_ai.request.model").as_deref(),
        Some("gpt-4o")
    );
    assert_eq!(
        string_at(&out, "gen_ai.conversation.id").as_deref(),
        Some("call-42")
    );
    assert_eq!(string_at(&out, KIND_ATTRIBUTE).as_deref(), Some("llm"));
    assert_eq!(
        string_at(&out, "gen_ai.operation.name").as_deref(),
        Some("text_completion")
    );
}

#[test]
fn openlit_attributes_are_mapped() {
    let out = normalised(
        vec![
            s("gen_ai.system", "openai"),
            s("gen_ai.operation.name", "chat"),
            s("gen_ai.request.model", "o3-mini"),
            i("gen_ai.usage.input_tokens", 500),
            i("gen_ai.usage.output_tokens", 900),
            i("gen_ai.usage.reasoning_tokens", 700),
            i("gen_ai.usage.prompt_tokens_details.cached_tokens", 128),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&out, "gen_ai.provider.name").as_deref(),
        Some("openai")
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.reasoning.output_tokens"),
        Some(700)
    );
    assert_eq!(
        int_at(&out, "gen_ai.usage.cache_read.input_tokens"),
        Some(128)
    );
    assert_eq!(int_at(&out, "gen_ai.usage.input_tokens"), Some(500));
}

#[test]
fn langsmith_attributes_are_mapped() {
    let out = normalised(
        vec![
            s("langsmith.span.kind", "retriever"),
            s("langsmith.metadata.ls_provider", "cohere"),
            s("langsmith.metadata.ls_model_name", "embed-english-v3.0"),
            s("langsmith.trace.session_id", "session-7"),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&out, "gen_ai.provider.name").as_deref(),
        Some("cohere")
    );
    assert_eq!(
        string_at(&out, "gen_ai.request.model").as_deref(),
        Some("embed-english-v3.0")
    );
    assert_eq!(
        string_at(&out, KIND_ATTRIBUTE).as_deref(),
        Some("retriever")
    );
    assert_eq!(
        string_at(&out, "gen_ai.operation.name").as_deref(),
        Some("retrieval")
    );
    assert_eq!(
        string_at(&out, "gen_ai.conversation.id").as_deref(),
        Some("session-7")
    );
}

#[test]
fn traceloop_entities_become_agents_or_tools_by_kind() {
    let agent = normalised(
        vec![
            s("traceloop.span.kind", "agent"),
            s("traceloop.entity.name", "qualifier"),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&agent, "gen_ai.agent.name").as_deref(),
        Some("qualifier")
    );
    assert_eq!(
        string_at(&agent, "gen_ai.operation.name").as_deref(),
        Some("invoke_agent")
    );
    let tool = normalised(
        vec![
            s("traceloop.span.kind", "tool"),
            s("traceloop.entity.name", "search_crm"),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&tool, "gen_ai.tool.name").as_deref(),
        Some("search_crm")
    );
    assert_eq!(get(&tool, "gen_ai.agent.name"), None);
    let workflow = normalised(
        vec![
            s("traceloop.span.kind", "workflow"),
            s("traceloop.workflow.name", "lead_qualification"),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&workflow, "gen_ai.workflow.name").as_deref(),
        Some("lead_qualification")
    );
    assert_eq!(
        string_at(&workflow, KIND_ATTRIBUTE).as_deref(),
        Some("chain")
    );
}

#[test]
fn the_best_ranked_source_wins_whatever_the_order() {
    let out = normalised(
        vec![
            s("llm.system", "azure"),
            s("gen_ai.system", "openai"),
            s("gen_ai.provider.name", "azure.ai.openai"),
            i("llm.token_count.prompt", 1),
            i("gen_ai.usage.input_tokens", 7),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(
        string_at(&out, "gen_ai.provider.name").as_deref(),
        Some("azure.ai.openai")
    );
    assert_eq!(int_at(&out, "gen_ai.usage.input_tokens"), Some(7));
}

#[test]
fn counts_sent_as_doubles_or_strings_are_read() {
    let out = normalised(
        vec![
            attribute("gen_ai.usage.prompt_tokens", Value::DoubleValue(41.9)),
            s("gen_ai.usage.completion_tokens", " 12 "),
            s("gen_ai.usage.reasoning_tokens", "not a number"),
        ],
        GenAiConfig::default(),
    );
    assert_eq!(int_at(&out, "gen_ai.usage.input_tokens"), Some(42));
    assert_eq!(int_at(&out, "gen_ai.usage.output_tokens"), Some(12));
    assert_eq!(get(&out, "gen_ai.usage.reasoning.output_tokens"), None);
}

#[test]
fn drop_original_keeps_only_the_otel_names() {
    let out = normalised(
        vec![
            s("http.method", "POST"),
            s("gen_ai.system", "openai"),
            i("llm.token_count.prompt", 10),
            i("gen_ai.usage.output_tokens", 5),
        ],
        GenAiConfig {
            drop_original: true,
            ..Default::default()
        },
    );
    let keys: Vec<&str> = out.iter().map(|a| a.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "http.method",
            "gen_ai.usage.output_tokens",
            "gen_ai.provider.name",
            "gen_ai.usage.input_tokens",
            "gen_ai.operation.name",
            KIND_ATTRIBUTE
        ]
    );
}

#[test]
fn the_cache_reading_can_be_forced() {
    let attributes = vec![
        i("gen_ai.usage.input_tokens", 100),
        i("gen_ai.usage.cache_read.input_tokens", 60),
    ];
    let excluded = normalised(
        attributes.clone(),
        GenAiConfig {
            cache_tokens_in_input: CacheTokens::Excluded,
            ..Default::default()
        },
    );
    assert_eq!(int_at(&excluded, "gen_ai.usage.input_tokens"), Some(160));
    let old_names = vec![
        i("gen_ai.usage.prompt_tokens", 100),
        i("gen_ai.usage.cache_read_input_tokens", 60),
    ];
    let included = normalised(
        old_names,
        GenAiConfig {
            cache_tokens_in_input: CacheTokens::Included,
            ..Default::default()
        },
    );
    assert_eq!(int_at(&included, "gen_ai.usage.input_tokens"), Some(100));
}

#[test]
fn a_span_without_llm_attributes_is_untouched() {
    let attributes = vec![s("http.method", "GET"), i("http.status_code", 200)];
    assert_eq!(
        normalised(attributes.clone(), GenAiConfig::default()),
        attributes
    );
}

#[test]
fn unknown_config_keys_are_rejected() {
    let raw = serde_yaml::from_str("drop_originals: true").unwrap();
    let id = ComponentId::parse("genai").unwrap();
    assert!((factory().build)(&id, raw, Signal::Traces).is_err());
}

fn named(name: &str, attributes: Vec<KeyValue>, config: GenAiConfig) -> Vec<KeyValue> {
    let mut span = Span {
        name: name.into(),
        attributes,
        ..Default::default()
    };
    GenAiProcessor::new(config).normalise(&mut span);
    span.attributes
}

#[test]
fn a_langgraph_node_span_is_an_agent() {
    let metadata = r#"{"langgraph_step": 1, "langgraph_node": "researcher", "langgraph_path": ["__pregel_pull", "researcher"]}"#;
    let node = vec![
        s("openinference.span.kind", "CHAIN"),
        s("metadata", metadata),
    ];
    let out = named("researcher", node.clone(), GenAiConfig::default());
    assert_eq!(
        string_at(&out, "gen_ai.agent.name").as_deref(),
        Some("researcher")
    );
    assert_eq!(string_at(&out, KIND_ATTRIBUTE).as_deref(), Some("agent"));
    assert_eq!(
        get(&out, "metadata"),
        get(&node, "metadata"),
        "metadata is kept"
    );

    // A model call inside the node keeps its kind.
    let inside = vec![s("openinference.span.kind", "LLM"), s("metadata", metadata)];
    let out = named("FakeChat", inside, GenAiConfig::default());
    assert_eq!(string_at(&out, KIND_ATTRIBUTE).as_deref(), Some("llm"));
    assert_eq!(string_at(&out, "gen_ai.agent.name"), None);

    let langsmith = vec![
        s("langsmith.span.kind", "chain"),
        s("langsmith.metadata.langgraph_node", "writer"),
    ];
    let out = named("writer", langsmith, GenAiConfig::default());
    assert_eq!(
        string_at(&out, "gen_ai.agent.name").as_deref(),
        Some("writer")
    );

    let off = GenAiConfig {
        langgraph_nodes_as_agents: false,
        drop_original: true,
        ..Default::default()
    };
    let out = named("researcher", node, off);
    assert_eq!(string_at(&out, KIND_ATTRIBUTE).as_deref(), Some("chain"));
    assert!(
        get(&out, "metadata").is_some(),
        "drop_original keeps the metadata"
    );
}
