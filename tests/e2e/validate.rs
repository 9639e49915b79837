//! Done-when 7: `lookout validate` names the path and line of a typo'd key
//! and exits non-zero; the shipped config.yaml is valid.

use std::path::Path;
use std::process::Command;

use crate::harness::lookout_bin;

/// Runs `lookout <command> --config` on `yaml` written to a temp file.
fn lookout_on(command: &str, yaml: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, yaml).unwrap();
    Command::new(lookout_bin())
        .args([command, "--config"])
        .arg(&config)
        .output()
        .unwrap()
}

#[test]
fn a_typo_is_reported_with_its_path_and_line() {
    let output = lookout_on(
        "validate",
        "\
receivers:
  otlp:
    protocols:
      http:
        endpiont: 0.0.0.0:4318
exporters:
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
",
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("line 5: receivers.otlp.protocols.http.endpiont: unknown field `endpiont`"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_to_start_on_a_broken_config() {
    let output = lookout_on("run", "receivers: {}\nservice:\n  pipelines: {}\n");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not starting"));
}

#[test]
fn version_is_printed() {
    let output = Command::new(lookout_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("lookout "));
}

#[test]
fn every_component_type_validates_without_starting() {
    let output = lookout_on(
        "validate",
        "\
receivers:
  otlp:
    protocols:
      grpc:
processors:
  batch:
exporters:
  otlp/grpc:
    endpoint: http://127.0.0.1:1
  otlp/http:
    endpoint: http://127.0.0.1:1
    protocol: http/protobuf
  file:
    path: /nonexistent/dir/out.jsonl
  debug:
  blackhole:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [otlp/grpc, otlp/http, file, debug, blackhole]
",
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_shipped_configs_are_valid() {
    for file in ["config.yaml", "deploy/lookout.yaml"] {
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
        let output = Command::new(lookout_bin())
            .args(["validate", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
