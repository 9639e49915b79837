//! The labelled corpus of the PII detectors: generated cases and
//! hand-written edge cases, and how a detector scores on it. The unit tests
//! hold the detectors to it; `examples/pii_compare.rs` scores Lookout and
//! Presidio on the same cases.

use std::collections::BTreeMap;

use super::detect::{Detector, PiiType, luhn};

/// A text and the values in it that must be found, with their type.
pub struct Case {
    pub text: String,
    pub expected: Vec<(PiiType, String)>,
}

fn case(text: impl Into<String>, expected: &[(PiiType, &str)]) -> Case {
    Case {
        text: text.into(),
        expected: expected.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

fn luhn_complete(prefix: &str, length: usize, rng: &mut fastrand::Rng) -> String {
    let mut digits: Vec<u8> = prefix.bytes().map(|b| b - b'0').collect();
    while digits.len() < length - 1 {
        digits.push(rng.u8(0..10));
    }
    for check in 0..10 {
        let mut candidate = digits.clone();
        candidate.push(check);
        if luhn(&candidate) {
            return candidate.iter().map(|d| (b'0' + d) as char).collect();
        }
    }
    unreachable!("one check digit always completes a Luhn number")
}

fn grouped(number: &str, groups: &[usize], separator: char) -> String {
    let mut out = String::new();
    let mut at = 0;
    for (i, len) in groups.iter().enumerate() {
        if i > 0 {
            out.push(separator);
        }
        out.push_str(&number[at..at + len]);
        at += len;
    }
    out
}

fn iban_for(country: &str, bban: &str) -> String {
    // Check digits: 98 - (BBAN + country + "00") mod 97.
    let rearranged = format!("{bban}{country}00");
    let mut remainder = 0u32;
    for byte in rearranged.bytes() {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            _ => u32::from(byte - b'A') + 10,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    format!("{country}{:02}{bban}", 98 - remainder)
}

fn digits_string(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n).map(|_| (b'0' + rng.u8(0..10)) as char).collect()
}

fn token(rng: &mut fastrand::Rng, n: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..n)
        .map(|_| ALPHABET[rng.usize(0..ALPHABET.len())] as char)
        .collect()
}

pub fn generated(rng: &mut fastrand::Rng) -> Vec<Case> {
    let mut cases = Vec::new();
    for i in 0..200 {
        let (prefix, length, groups): (&str, usize, &[usize]) = match i % 5 {
            0 => ("4", 16, &[4, 4, 4, 4]),
            1 => ("5", 16, &[4, 4, 4, 4]),
            2 => ("37", 15, &[4, 6, 5]),
            3 => ("6011", 16, &[4, 4, 4, 4]),
            _ => ("2221", 16, &[4, 4, 4, 4]),
        };
        let prefix = if prefix == "5" {
            ["51", "52", "53", "54", "55"][i % 5]
        } else {
            prefix
        };
        let number = luhn_complete(prefix, length, rng);
        let written = match i % 3 {
            0 => number.clone(),
            1 => grouped(&number, groups, ' '),
            _ => grouped(&number, groups, '-'),
        };
        cases.push(case(
            format!("Charge card {written} for the order."),
            &[(PiiType::Card, &written)],
        ));
    }
    for i in 0..100 {
        let (country, bban) = match i % 4 {
            0 => ("DE", digits_string(rng, 18)),
            1 => ("GB", format!("NWBK{}", digits_string(rng, 14))),
            2 => ("FR", digits_string(rng, 23)),
            _ => ("NL", format!("ABNA{}", digits_string(rng, 10))),
        };
        let iban = iban_for(country, &bban);
        let written = if i % 2 == 0 {
            iban.as_bytes()
                .chunks(4)
                .map(|c| std::str::from_utf8(c).unwrap())
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            iban
        };
        cases.push(case(
            format!("Wire to {written} today"),
            &[(PiiType::Iban, &written)],
        ));
    }
    for i in 0..100 {
        let area = loop {
            let area = rng.u32(1..900);
            if area != 666 {
                break area;
            }
        };
        let separator = if i % 2 == 0 { '-' } else { ' ' };
        let ssn = format!(
            "{area:03}{separator}{:02}{separator}{:04}",
            rng.u32(1..100),
            rng.u32(1..10000)
        );
        cases.push(case(format!("SSN {ssn} on file"), &[(PiiType::Ssn, &ssn)]));
    }
    for i in 0..100 {
        let email = format!(
            "{}.{}{}@{}.{}",
            token(rng, 5).to_lowercase(),
            token(rng, 4).to_lowercase(),
            i,
            token(rng, 6).to_lowercase(),
            ["com", "io", "co.uk", "de"][i % 4]
        );
        cases.push(case(
            format!("Contact {email}, thanks"),
            &[(PiiType::Email, &email)],
        ));
    }
    for i in 0..200 {
        let phone = match i % 5 {
            0 => format!(
                "+1 {} {} {}",
                rng.u32(200..1000),
                rng.u32(200..1000),
                digits_string(rng, 4)
            ),
            1 => format!("+44 20 {} {}", digits_string(rng, 4), digits_string(rng, 4)),
            2 => format!("+49{}", digits_string(rng, 10)),
            3 => format!(
                "({}) {}-{}",
                rng.u32(200..1000),
                rng.u32(200..1000),
                digits_string(rng, 4)
            ),
            _ => format!(
                "{}-{}-{}",
                rng.u32(200..1000),
                rng.u32(200..1000),
                digits_string(rng, 4)
            ),
        };
        cases.push(case(
            format!("Call me at {phone} tomorrow"),
            &[(PiiType::Phone, &phone)],
        ));
    }
    for _ in 0..100 {
        let ip = format!(
            "{}.{}.{}.{}",
            rng.u8(1..=255),
            rng.u8(0..=255),
            rng.u8(0..=255),
            rng.u8(1..=255)
        );
        cases.push(case(
            format!("request from {ip} refused"),
            &[(PiiType::Ipv4, &ip)],
        ));
        let groups: Vec<String> = (0..8).map(|_| format!("{:x}", rng.u16(..))).collect();
        let ip6 = groups.join(":");
        cases.push(case(
            format!("peer {ip6} connected"),
            &[(PiiType::Ipv6, &ip6)],
        ));
    }
    for i in 0..50 {
        let secret = match i % 6 {
            0 => format!("sk-proj-{}", token(rng, 48)),
            1 => format!("sk-ant-api03-{}", token(rng, 40)),
            2 => format!("AKIA{}", token(rng, 16).to_uppercase()),
            3 => format!("ghp_{}", token(rng, 36)),
            4 => format!("github_pat_{}", token(rng, 40)),
            _ => format!("xoxb-{}-{}", digits_string(rng, 12), token(rng, 24)),
        };
        cases.push(case(
            format!("key={secret} in env"),
            &[(PiiType::Secret, &secret)],
        ));
    }
    cases
}

pub fn hand_written() -> Vec<Case> {
    use PiiType::*;
    vec![
        case(
            r#"{"messages":[{"role":"user","content":"my card is 4111 1111 1111 1111"}]}"#,
            &[(Card, "4111 1111 1111 1111")],
        ),
        case(
            r#"{"api_key":"sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"}"#,
            &[(Secret, "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789")],
        ),
        case(
            "IBAN GB82 WEST 1234 5698 7654 32 please",
            &[(Iban, "GB82 WEST 1234 5698 7654 32")],
        ),
        case(
            "Authorization: Bearer abcdefghijklmnop1234567890",
            &[(BearerToken, "Bearer abcdefghijklmnop1234567890")],
        ),
        case(
            "token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            &[(
                Jwt,
                "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            )],
        ),
        case(
            "db at postgres://admin:hunter2@db.internal:5432/app",
            &[(UrlCredentials, "postgres://admin:hunter2@")],
        ),
        case(
            "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            &[(
                PrivateKey,
                "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
            )],
        ),
        case(
            "server 8.8.8.8 and 2001:db8::1",
            &[(Ipv4, "8.8.8.8"), (Ipv6, "2001:db8::1")],
        ),
        case(
            "email: Jane.Doe+llm@example.co.uk",
            &[(Email, "Jane.Doe+llm@example.co.uk")],
        ),
        case("Amex 3782 822463 10005", &[(Card, "3782 822463 10005")]),
        // Look-alikes: nothing to find.
        case("order 4111 1111 1111 1112 (fails Luhn)", &[]),
        case("invoice INV-2024-000123 and order ORD-88123456", &[]),
        case("at 2024-07-18T12:30:45.123Z, epoch 1721305845123", &[]),
        case("request 550e8400-e29b-41d4-a716-446655440000", &[]),
        case("commit 3f786850e387550fdab836ed7e6dc881de23001b", &[]),
        case("upgrade to v1.2.3 or version 10.0.19041.1 or v4.2.1.0", &[]),
        case("it costs $1,234.56 or €99.99", &[]),
        case("invalid SSNs 000-12-3456, 666-12-3456, 912-34-5678", &[]),
        case(
            "models gpt-4o-mini-2024-07-18 and claude-3-5-sonnet-20241022",
            &[],
        ),
        case("meeting at 12:30:45, MAC 00:1a:2b:3c:4d:5e", &[]),
        case(
            "tracking 1Z999AA10123456784 and ISBN 978-3-16-148410-0",
            &[],
        ),
        case("latency p99 123.45 ms, 16 cores, 4096 MiB", &[]),
    ]
}

/// Every case, generated from `seed` then hand-written.
pub fn labelled(seed: u64) -> Vec<Case> {
    let mut rng = fastrand::Rng::with_seed(seed);
    generated(&mut rng)
        .into_iter()
        .chain(hand_written())
        .collect()
}

#[derive(Default, Debug, Clone, Copy)]
pub struct Score {
    pub true_positives: usize,
    pub false_negatives: usize,
    pub false_positives: usize,
}

impl Score {
    pub fn recall(&self) -> f64 {
        self.true_positives as f64 / (self.true_positives + self.false_negatives).max(1) as f64
    }

    pub fn precision(&self) -> f64 {
        self.true_positives as f64 / (self.true_positives + self.false_positives).max(1) as f64
    }

    pub fn add(&mut self, other: &Score) {
        self.true_positives += other.true_positives;
        self.false_negatives += other.false_negatives;
        self.false_positives += other.false_positives;
    }
}

/// Scores per type, and a line for each miss and false find.
pub struct Report {
    pub scores: BTreeMap<PiiType, Score>,
    pub misses: Vec<String>,
}

impl Report {
    pub fn overall(&self) -> Score {
        let mut total = Score::default();
        for score in self.scores.values() {
            total.add(score);
        }
        total
    }

    pub fn table(&self) -> String {
        self.scores
            .iter()
            .map(|(kind, s)| {
                format!(
                    "{kind:?}: recall {:.3} precision {:.3} ({s:?})",
                    s.recall(),
                    s.precision()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Scores `detector` on `cases`: a find counts only with the right type
/// and the exact span.
pub fn score(detector: &Detector, cases: &[Case]) -> Report {
    let mut scores: BTreeMap<PiiType, Score> = BTreeMap::new();
    let mut misses = Vec::new();
    for case in cases {
        let found: Vec<(PiiType, &str)> = detector
            .detect(&case.text)
            .iter()
            .filter_map(|d| {
                let kind = detector.rules()[d.rule].builtin?;
                Some((kind, &case.text[d.start..d.end]))
            })
            .collect();
        for (kind, value) in &case.expected {
            let score = scores.entry(*kind).or_default();
            if found.contains(&(*kind, value.as_str())) {
                score.true_positives += 1;
            } else {
                score.false_negatives += 1;
                misses.push(format!(
                    "missed {kind:?} {value:?} in {:?}: found {found:?}",
                    case.text
                ));
            }
        }
        for (kind, value) in &found {
            if !case.expected.iter().any(|(k, v)| k == kind && v == value) {
                scores.entry(*kind).or_default().false_positives += 1;
                misses.push(format!("false {kind:?} {value:?} in {:?}", case.text));
            }
        }
    }
    Report { scores, misses }
}
