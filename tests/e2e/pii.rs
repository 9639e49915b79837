//! The `pii` processor in the daemon: spans and log records full of
//! personal data, sent by the real OpenTelemetry Python SDK, reach the file
//! exporter with none of it left; hash pseudonyms survive a restart, and
//! `lookout decrypt` opens what `encrypt` sealed.

use std::process::Command;
use std::time::Duration;

use lookout_pipelines::Payload;

use crate::cost::{all_spans, text};
use crate::harness::{Daemon, eventually, lookout_bin, python, python_script, read_file_output};

const HASH_KEY: &str = "e2e hash key that is long enough";
const ENCRYPTION_KEY: &str = "8f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

const PII_PIPELINE: &str = "\
receivers:
  otlp:
    protocols:
      http:
        endpoint: {http}
processors:
  pii:
    hash_key: ${env:LOOKOUT_PII_HASH_KEY}
    encryption_key: ${env:LOOKOUT_PII_ENCRYPTION_KEY}
    detectors:
      email: { action: hash }
      ssn: { action: encrypt }
      card: { action: mask, keep_last: 4 }
exporters:
  file:
    path: {dir}/out.jsonl
service:
  telemetry:
    metrics:
      endpoint: {telemetry}
  pipelines:
    traces:
      receivers: [otlp]
      processors: [pii]
      exporters: [file]
    logs:
      receivers: [otlp]
      processors: [pii]
      exporters: [file]
";

const KEYS: &[(&str, &str)] = &[
    ("LOOKOUT_PII_HASH_KEY", HASH_KEY),
    ("LOOKOUT_PII_ENCRYPTION_KEY", ENCRYPTION_KEY),
];

struct Run {
    output: String,
    payloads: Vec<Payload>,
    raw: Vec<String>,
    metrics: String,
    log: String,
}

/// Starts a daemon, has the Python SDK send its spans and logs, and
/// collects what came out.
async fn run_once() -> Run {
    let mut daemon = Daemon::start_with_env(PII_PIPELINE, KEYS).await;
    let raw_path = daemon.path("raw.json");
    let status = Command::new(python())
        .arg(python_script("send_pii.py"))
        .args(["--endpoint", &format!("http://{}", daemon.http)])
        .arg("--raw")
        .arg(&raw_path)
        .status()
        .expect("run send_pii.py");
    assert!(status.success(), "send_pii.py failed\n{}", daemon.log());
    let out = daemon.path("out.jsonl");
    let complete = || {
        let payloads = read_file_output(&out);
        let logs = payloads
            .iter()
            .filter(|p| matches!(p, Payload::Logs(_)))
            .count();
        all_spans(&payloads).len() == 3 && logs == 2
    };
    assert!(
        eventually(Duration::from_secs(10), complete).await,
        "3 spans and 2 log records expected in {}",
        std::fs::read_to_string(&out).unwrap_or_default()
    );
    let metrics = daemon.metrics().await;
    daemon.terminate().await;
    let raw: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&raw_path).expect("raw values")).unwrap();
    Run {
        output: std::fs::read_to_string(&out).unwrap(),
        payloads: read_file_output(&out),
        raw,
        metrics,
        log: daemon.log(),
    }
}

fn assert_none_of(raw: &[String], text: &str, what: &str) {
    for value in raw {
        let compact: String = value.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
        assert!(
            !text.contains(value.as_str()),
            "{value:?} leaked into the {what}:\n{text}"
        );
        if compact.len() >= 12 && compact.chars().all(|c| c.is_ascii_alphanumeric()) {
            assert!(
                !text.contains(&compact),
                "{compact:?} leaked into the {what}:\n{text}"
            );
        }
    }
}

/// The pseudonym the email got in the LLM span's messages.
fn email_pseudonym(run: &Run) -> String {
    let spans = all_spans(&run.payloads);
    let llm = spans
        .iter()
        .find(|s| s.name == "chat gpt-4o-mini")
        .expect("the LLM span");
    let messages = text(llm, "gen_ai.input.messages").expect("messages kept");
    let parsed: serde_json::Value = serde_json::from_str(messages).expect("messages still JSON");
    let content = parsed[1]["parts"][0]["content"]
        .as_str()
        .unwrap()
        .to_string();
    let start = content.find("<EMAIL:").expect("a pseudonym");
    content[start..start + "<EMAIL:".len() + 17].to_string()
}

#[tokio::test]
async fn no_personal_data_reaches_the_exporter_and_pseudonyms_survive_a_restart() {
    let first = run_once().await;
    assert_eq!(first.raw.len(), 13);
    assert_none_of(&first.raw, &first.output, "file output");
    assert_none_of(&first.raw, &first.metrics, "metrics");
    assert_none_of(&first.raw, &first.log, "daemon log");

    let spans = all_spans(&first.payloads);
    let llm = spans.iter().find(|s| s.name == "chat gpt-4o-mini").unwrap();
    let output_messages = text(llm, "gen_ai.output.messages").unwrap();
    let parsed: serde_json::Value = serde_json::from_str(output_messages).expect("still JSON");
    assert_eq!(parsed[0]["content"], "Refund sent to <IBAN>");
    assert!(first.output.contains("**** **** **** 1111"), "masked card");
    assert!(first.output.contains("<SSN:enc:"), "encrypted SSN");
    assert!(first.output.contains("ORD-2024-000123"), "look-alikes stay");
    assert!(first.output.contains("lookout.pii.redactions"));
    assert!(
        spans
            .iter()
            .any(|s| s.name.starts_with("support ticket from <EMAIL:"))
    );
    assert!(
        first
            .metrics
            .lines()
            .any(|l| l.starts_with("lookout_pii_detections_total")
                && l.contains("type=\"email\"")
                && l.contains("action=\"hash\"")),
        "{}",
        first.metrics
    );

    let pseudonym = email_pseudonym(&first);
    let second = run_once().await;
    assert_eq!(
        email_pseudonym(&second),
        pseudonym,
        "the same key gives the same pseudonym"
    );

    let decrypt = |key: &str| {
        let out_path =
            std::env::temp_dir().join(format!("lookout-pii-{}.jsonl", std::process::id()));
        std::fs::write(&out_path, &first.output).unwrap();
        let output = Command::new(lookout_bin())
            .args(["decrypt", "--json"])
            .arg(&out_path)
            .env("LOOKOUT_PII_ENCRYPTION_KEY", key)
            .output()
            .expect("run lookout decrypt");
        let _ = std::fs::remove_file(&out_path);
        output
    };
    let opened = decrypt(ENCRYPTION_KEY);
    assert!(
        opened.status.success(),
        "{}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let opened = String::from_utf8(opened.stdout).unwrap();
    assert!(opened.contains("123-45-6789"), "the SSN is back");
    assert!(!opened.contains("<SSN:enc:"));
    for line in opened.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .expect("decrypted output is still JSON lines");
    }
    let wrong = decrypt(&"0".repeat(64));
    assert!(!wrong.status.success(), "a wrong key fails");
    assert!(!String::from_utf8_lossy(&wrong.stdout).contains("123-45-6789"));
}
