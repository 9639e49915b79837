//! Lookout's half of the Presidio comparison (`scripts/pii-compare`):
//! writes the labelled corpus, Lookout's detections on it, and Lookout's
//! throughput over it, as one JSON document on standard output.
//!
//! cargo run --release -p lookout-processors --features corpus --example pii_compare

use std::time::Instant;

use lookout_processors::pii::corpus::labelled;
use lookout_processors::pii::detect::Detector;
use serde_json::json;

/// The corpus is small; it is scanned this many times for the timing.
const ROUNDS: usize = 200;

fn main() {
    let cases = labelled(5);
    let detector = Detector::all();
    let label = |rule: usize| detector.rules()[rule].label.to_ascii_lowercase();
    let cases_json: Vec<_> = cases
        .iter()
        .map(|case| {
            let expected: Vec<_> = case
                .expected
                .iter()
                .map(|(kind, value)| json!([kind.label().to_ascii_lowercase(), value]))
                .collect();
            let found: Vec<_> = detector
                .detect(&case.text)
                .iter()
                .map(|d| {
                    // Character offsets, as Python and Presidio count.
                    let start = case.text[..d.start].chars().count();
                    let end = start + case.text[d.start..d.end].chars().count();
                    json!([label(d.rule), start, end])
                })
                .collect();
            json!({ "text": case.text, "expected": expected, "lookout": found })
        })
        .collect();

    let bytes: usize = cases.iter().map(|c| c.text.len()).sum();
    let started = Instant::now();
    let mut found = 0;
    for _ in 0..ROUNDS {
        for case in &cases {
            found += detector.detect(&case.text).len();
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let report = json!({
        "cases": cases_json,
        "lookout_seconds_per_pass": seconds / ROUNDS as f64,
        "lookout_detections": found / ROUNDS,
        "bytes": bytes,
    });
    println!("{report}");
}
