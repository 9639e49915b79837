//! The detectors against the labelled corpus (`../corpus.rs`).

use super::*;
use crate::pii::corpus::{labelled, score};

#[test]
fn precision_and_recall_on_the_labelled_corpus() {
    let detector = Detector::all();
    let report = score(&detector, &labelled(5));
    let table = report.table();
    let misses = report.misses.join("\n");
    println!("{table}");
    for kind in [
        PiiType::Card,
        PiiType::Iban,
        PiiType::Ssn,
        PiiType::Email,
        PiiType::Secret,
    ] {
        assert_eq!(
            report.scores[&kind].recall(),
            1.0,
            "{kind:?}\n{table}\n{misses}"
        );
    }
    for kind in [PiiType::Phone, PiiType::Ipv4, PiiType::Ipv6] {
        assert!(
            report.scores[&kind].recall() >= 0.99,
            "{kind:?}\n{table}\n{misses}"
        );
    }
    let precision = report.overall().precision();
    assert!(
        precision >= 0.99,
        "precision {precision}\n{table}\n{misses}"
    );
    assert!(report.misses.is_empty(), "{misses}");
}
#[test]
fn text_without_candidates_finds_nothing() {
    let detector = Detector::all();
    let prompt =
        "You are a helpful assistant. Summarise the quarterly report in three bullet points.";
    assert!(detector.detect(prompt).is_empty());
    assert!(detector.detect("").is_empty());
}

#[test]
fn disabled_detectors_find_nothing() {
    let only_email = Detector::new(&[PiiType::Email]).unwrap();
    let found = only_email.detect("jane@example.com 4111 1111 1111 1111");
    assert_eq!(found.len(), 1);
    assert_eq!(
        only_email.rules()[found[0].rule].builtin,
        Some(PiiType::Email)
    );
    assert!(
        Detector::new(&[])
            .unwrap()
            .detect("jane@example.com")
            .is_empty()
    );
}

#[test]
fn custom_rules_with_groups_of_their_own_keep_their_labels() {
    let custom = [
        CustomPattern {
            label: "EMPLOYEE_ID".into(),
            pattern: r"\bEMP-(\d{6})\b".into(),
        },
        CustomPattern {
            label: "TICKET".into(),
            pattern: r"\b(?:TCK)-(\d+)-(\w+)\b".into(),
        },
    ];
    let detector = Detector::with_custom(&[PiiType::Email], &custom).unwrap();
    let text = "TCK-12-ab for EMP-123456 at jane@example.com";
    let labels: Vec<(&str, &str)> = detector
        .detect(text)
        .iter()
        .map(|d| {
            (
                detector.rules()[d.rule].label.as_str(),
                &text[d.start..d.end],
            )
        })
        .collect();
    assert_eq!(
        labels,
        [
            ("TICKET", "TCK-12-ab"),
            ("EMPLOYEE_ID", "EMP-123456"),
            ("EMAIL", "jane@example.com")
        ]
    );
}
