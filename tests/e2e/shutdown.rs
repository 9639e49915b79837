//! Done-when 6: SIGTERM with data still queued: every accepted span reaches
//! the file exporter before the daemon exits.

use reqwest::StatusCode;

use crate::harness::{Daemon, FILE_PIPELINE, read_file_output, span_id_counts, spans, traces_body};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_every_accepted_span_to_the_file() {
    // A batch timeout far longer than the test: only the shutdown flush can
    // deliver what the batch processor holds.
    let config = FILE_PIPELINE
        .replace(
            "    timeout: 50ms",
            "    send_batch_size: 100000\n    timeout: 1h",
        )
        .replace("  telemetry:", "  shutdown_timeout: 20s\n  telemetry:");
    let mut daemon = Daemon::start(&config).await;
    let mut accepted = 0;
    for batch in 0..50 {
        let response = daemon
            .post_traces(traces_body(spans(batch, 100, 200)))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        accepted += 100;
    }
    assert!(
        read_file_output(&daemon.path("out.jsonl")).is_empty(),
        "nothing is written before the shutdown flush"
    );
    let status = daemon.terminate().await;
    assert!(status.success(), "clean shutdown:\n{}", daemon.log());
    let counts = span_id_counts(&read_file_output(&daemon.path("out.jsonl")));
    assert_eq!(counts.len(), accepted);
    assert!(counts.values().all(|&n| n == 1));
    assert!(daemon.log().contains("shutdown complete"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_client_cannot_hold_shutdown_past_the_deadline() {
    use tokio::io::AsyncWriteExt;
    let config = crate::harness::FILE_PIPELINE
        .replace("  telemetry:", "  shutdown_timeout: 2s\n  telemetry:");
    let mut daemon = Daemon::start(&config).await;
    let mut stalled = tokio::net::TcpStream::connect(daemon.http).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\nContent-Length: 1000\r\n\r\nhalf a body",
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let began = std::time::Instant::now();
    let status = daemon.terminate().await;
    assert!(
        began.elapsed() < std::time::Duration::from_secs(8),
        "took {:?}",
        began.elapsed()
    );
    assert_eq!(status.code(), Some(2), "a deadline that passed is reported");
    assert!(
        daemon
            .log()
            .contains("receiver still busy at the shutdown deadline")
    );
    drop(stalled);
}
