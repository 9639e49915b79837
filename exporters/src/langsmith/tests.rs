use super::*;

fn build(yaml: &str, env: &[(&str, &str)]) -> Result<LangSmithExporter, BuildError> {
    let raw: serde_yaml::Value = serde_yaml::from_str(yaml).unwrap();
    let config: LangSmithConfig = parse_config(raw)?;
    let id = ComponentId::parse("langsmith").unwrap();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    LangSmithExporter::new(&id, config, &ExporterHelperConfig::default(), &|name| {
        env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

#[test]
fn the_environment_fills_in_endpoint_key_and_project() {
    let exporter = build(
        "{}",
        &[
            ("LANGSMITH_ENDPOINT", "http://127.0.0.1:9/"),
            ("LANGSMITH_PROJECT", "agents"),
        ],
    )
    .unwrap();
    let Inner::Runs(runs) = &exporter.inner else {
        panic!()
    };
    assert_eq!(runs.client.endpoint(), "http://127.0.0.1:9");
    assert_eq!(runs.project, "agents");
    let exporter = build("project: mine", &[("LANGSMITH_PROJECT", "agents")]).err();
    // The hosted API without a key is refused, naming the setting.
    let err = exporter.unwrap();
    assert_eq!(err.path, ["api_key"]);
    assert!(err.message.contains("LANGSMITH_API_KEY"), "{}", err.message);
}

#[test]
fn bad_settings_are_build_errors() {
    let local = [("LANGSMITH_ENDPOINT", "http://127.0.0.1:9")];
    for (yaml, key) in [
        ("batch_size: 0", "batch_size"),
        ("rate_limit: -1", "rate_limit"),
        ("flush_interval: 0s", "flush_interval"),
        (
            "trace_window: {hold_for: 10s, forget_after: 1s}",
            "forget_after",
        ),
        ("spool: {max_bytes: 0}", "max_bytes"),
        ("endpoint: ftp://x", "endpoint"),
    ] {
        let message = build(yaml, &local)
            .err()
            .map(|e| format!("{}: {}", e.path.join("."), e.message))
            .unwrap_or_default();
        assert!(message.contains(key), "{yaml}: {message}");
    }
    let message = build("batchsize: 5", &local).err().unwrap().to_string();
    assert!(message.contains("unknown field"), "{message}");
}

#[test]
fn otlp_mode_builds_without_a_runtime() {
    let exporter = build("mode: otlp\napi_key: k\nproject: p", &[]).unwrap();
    assert!(matches!(exporter.inner, Inner::Otlp(_)));
    assert!(exporter.status().is_none());
}
