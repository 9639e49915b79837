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

/// Built once: the properties run thousands of cases.
static ALL: std::sync::LazyLock<Detector> = std::sync::LazyLock::new(Detector::all);

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2048))]

    /// The prefilter only ever skips text the combined matcher would not
    /// match: on prose, look-alikes and PII in any mix.
    #[test]
    fn the_prefilter_never_hides_a_match(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just("jane@example.com ".to_string()),
                proptest::strategy::Just("sk-proj-abcdefghijklmnopqrstuvwx ".to_string()),
                proptest::strategy::Just("Bearer abcdefghijklmnop1234 ".to_string()),
                proptest::strategy::Just("fe80::1 ".to_string()),
                "[a-z :/@.-]{0,12}",
                "[0-9a-fA-F:.\\- ]{0,12}",
                "\\PC{0,8}",
            ],
            0..10,
        )
    ) {
        let text = parts.concat();
        let detector = &*ALL;
        let prefilter = detector.prefilter.as_ref().unwrap();
        if detector.combined.is_match(&text) {
            proptest::prop_assert!(prefilter.may_match(&text), "{text:?}");
        }
    }
}

#[test]
fn the_prefilter_skips_prose_and_json_without_candidates() {
    let detector = Detector::all();
    let prefilter = detector.prefilter.as_ref().unwrap();
    assert!(!prefilter.may_match(r#"[{"role": "user", "content": "Summarise the call in Q3"}]"#));
    assert!(prefilter.may_match("call 415 555 2671"));
    assert!(prefilter.may_match("from 1.2.3.4"));
    assert!(prefilter.may_match("key AKIAABCDEFGHIJKLMNOP"));
    assert!(
        Detector::with_custom(
            &PiiType::ALL,
            &[CustomPattern {
                label: "X".into(),
                pattern: "x".into()
            }]
        )
        .unwrap()
        .prefilter
        .is_none()
    );
}

#[test]
fn has_digit_finds_a_digit_at_any_byte_of_a_word() {
    for byte in 0..=255u8 {
        for position in 0..8 {
            let mut bytes = [b'a'; 8];
            bytes[position] = byte;
            assert_eq!(
                has_digit(u64::from_le_bytes(bytes)),
                byte.is_ascii_digit(),
                "byte {byte:#x} at {position}"
            );
        }
    }
    assert!(has_close_digits(b"abcdefg1 2abcdefgh"));
    assert!(has_close_digits(b"abcdefg1abcdefgh1.2"));
    assert!(!has_close_digits(b"Q3 and then 4 more words, v2"));
}
