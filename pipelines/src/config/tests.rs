use super::*;
use crate::component::{ConnectorFactory, ExporterFactory, ProcessorFactory, ReceiverFactory};

/// Stand-in factories: the config module only needs their types and signals.
fn components() -> Components {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Endpoint {
        endpoint: Option<String>,
    }
    struct Nothing;
    #[async_trait::async_trait]
    impl Receiver for Nothing {
        async fn start(
            self: Box<Self>,
            _ctx: crate::component::ReceiverContext,
        ) -> anyhow::Result<crate::component::ServeFuture> {
            Ok(Box::pin(async { Ok(()) }))
        }
    }
    impl Processor for Nothing {
        fn process(&mut self, payload: crate::Payload, out: &mut Vec<crate::Payload>) {
            out.push(payload);
        }
    }
    #[async_trait::async_trait]
    impl Exporter for Nothing {
        async fn export(&self, _payload: &crate::Payload) -> Result<(), crate::ExportError> {
            Ok(())
        }
    }
    Components {
        receivers: vec![ReceiverFactory {
            kind: "otlp",
            signals: &Signal::ALL,
            build: |_, raw| {
                let _: Endpoint = parse_config(raw)?;
                Ok(Box::new(Nothing))
            },
        }],
        processors: vec![ProcessorFactory {
            kind: "batch",
            signals: &Signal::ALL,
            build: |_, raw, _| {
                let _: Endpoint = parse_config(raw)?;
                Ok(Box::new(Nothing))
            },
        }],
        exporters: vec![ExporterFactory {
            kind: "debug",
            signals: &[Signal::Traces, Signal::Logs, Signal::Alerts],
            build: |_, raw, _| {
                let _: Endpoint = parse_config(raw)?;
                Ok(Box::new(Nothing))
            },
        }],
        connectors: vec![ConnectorFactory {
            kind: "threshold",
            consumes: &[Signal::Traces],
            emits: &[Signal::Alerts],
            build: |_, raw, context| {
                let _: Endpoint = parse_config(raw)?;
                assert_eq!(context.downstream_exporters.len(), 1);
                Ok(crate::component::Connector {
                    exporter: Box::new(Nothing),
                    receiver: Box::new(Nothing),
                })
            },
        }],
    }
}

fn load(yaml: &str) -> Loaded {
    load_str(yaml, &components(), &|name| {
        (name == "PORT").then(|| "4318".into())
    })
}

fn errors(loaded: &Loaded) -> Vec<String> {
    loaded
        .diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(ToString::to_string)
        .collect()
}

const VALID: &str = "\
receivers:
  otlp:
    endpoint: 0.0.0.0:${env:PORT}
processors:
  batch:
exporters:
  debug:
  debug/second:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug, debug/second]
    logs/audit:
      receivers: [otlp]
      exporters: [debug]
";

#[test]
fn a_valid_config_builds_one_processor_per_pipeline() {
    let loaded = load(VALID);
    assert!(loaded.diagnostics.is_empty(), "{:?}", errors(&loaded));
    let plan = loaded.plan.unwrap();
    assert_eq!(plan.receivers.len(), 1);
    assert_eq!(plan.exporters.len(), 2);
    assert_eq!(plan.pipelines.len(), 2);
    assert_eq!(plan.pipelines[1].id.to_string(), "logs/audit");
    assert_eq!(plan.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(plan.telemetry.metrics.endpoint, "0.0.0.0:8888");
}

#[test]
fn every_error_is_listed_with_its_path_and_line() {
    let loaded = load(
        "\
receivers:
  otlp:
    endpont: x
  kafka:
exporters:
  debug:
    sending_queue:
      queue_size: 0
service:
  pipelines:
    traces:
      receivers: [otlp, kafka]
      exporters: [debug, missing]
    metrics:
      receivers: [otlp]
      exporters: [debug]
",
    );
    assert!(loaded.plan.is_none());
    let errors = errors(&loaded);
    let expected = [
        "error: line 3: receivers.otlp.endpont: unknown field `endpont`",
        "error: line 4: receivers.kafka: unknown receiver type `kafka`",
        "error: line 8: exporters.debug.sending_queue.queue_size: must be at least 1",
        "error: line 13: service.pipelines.traces.exporters[1]: exporter `missing` is used but not defined",
        "error: line 16: service.pipelines.metrics.exporters[0]: exporter `debug` does not support metrics",
    ];
    for (error, expected) in errors.iter().zip(expected) {
        assert!(
            error.starts_with(expected),
            "{error}\n  expected: {expected}"
        );
    }
    assert_eq!(errors.len(), expected.len(), "{errors:#?}");
}

#[test]
fn unused_components_are_warnings() {
    let yaml =
        format!("{VALID}\n").replace("  debug/second:\n", "  debug/second:\n  debug/spare:\n");
    let loaded = load(&yaml);
    assert!(loaded.plan.is_some());
    let warning = &loaded.diagnostics[0];
    assert_eq!(warning.severity, Severity::Warning);
    assert_eq!(warning.path, "exporters.debug/spare");
    assert_eq!(warning.line, Some(9));
}

#[test]
fn top_level_and_syntax_problems_are_reported() {
    let loaded = load("receivers: {}\nextensions: {}\nservice:\n  pipelines: {}\n");
    let errors = errors(&loaded);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`extensions` are not supported yet"))
    );
    assert!(errors.iter().any(|e| e.contains("no pipeline is defined")));
    let loaded = load("receivers: [\n");
    assert!(errors_contain(&loaded, "invalid YAML"));
}

fn errors_contain(loaded: &Loaded, text: &str) -> bool {
    errors(loaded).iter().any(|e| e.contains(text))
}

#[test]
fn pipelines_need_a_receiver_and_an_exporter() {
    let loaded = load(
        "receivers:\n  otlp:\nexporters:\n  debug:\nservice:\n  pipelines:\n    traces:\n      receivers: []\n      exporters: []\n",
    );
    assert!(errors_contain(&loaded, "at least one receiver"));
    assert!(errors_contain(&loaded, "at least one exporter"));
}

const WITH_CONNECTOR: &str = "\
receivers:
  otlp:
exporters:
  debug:
connectors:
  threshold:
    sending_queue:
      num_consumers: 2
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug, threshold]
    alerts:
      receivers: [threshold]
      exporters: [debug]
";

#[test]
fn a_connector_ends_one_pipeline_and_starts_another() {
    let loaded = load(WITH_CONNECTOR);
    assert!(errors(&loaded).is_empty(), "{:?}", errors(&loaded));
    let plan = loaded.plan.unwrap();
    let threshold = ComponentId::parse("threshold").unwrap();
    assert!(plan.receivers.iter().any(|(id, _)| *id == threshold));
    let exporter = plan.exporters.iter().find(|e| e.id == threshold).unwrap();
    assert_eq!(exporter.helper.sending_queue.num_consumers, 2);
    assert_eq!(plan.pipelines[1].id.signal, Signal::Alerts);
}

#[test]
fn connector_misuse_is_reported() {
    let one_sided =
        WITH_CONNECTOR.replace("      receivers: [threshold]", "      receivers: [otlp]");
    assert!(errors_contain(
        &load(&one_sided),
        "connector `threshold` ends a pipeline, but no pipeline lists it under `receivers`"
    ));
    let wrong_signal = WITH_CONNECTOR.replace("    traces:", "    logs:");
    assert!(errors_contain(
        &load(&wrong_signal),
        "connector `threshold` does not consume logs"
    ));
    let wrong_output = WITH_CONNECTOR.replace("    alerts:", "    traces/out:");
    assert!(errors_contain(
        &load(&wrong_output),
        "connector `threshold` does not emit traces"
    ));
    let clashing = WITH_CONNECTOR.replace(
        "exporters:\n  debug:\n",
        "exporters:\n  debug:\n  threshold:\n",
    );
    assert!(!errors(&load(&clashing)).is_empty());
}
