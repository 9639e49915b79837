//! Finding personal data and secrets in text, the first part of the `pii`
//! processor (issue #5).
//!
//! One combined regular expression scans each string once; each of its
//! groups is one detector. A candidate is then validated where the format
//! allows it (Luhn for cards, mod-97 for IBANs, the SSA's rules for SSNs,
//! a real parse for IPv6), so that order numbers, timestamps, UUIDs, git
//! SHAs, versions and prices are left alone.

use std::net::Ipv6Addr;

use aho_corasick::{AhoCorasick, MatchKind};
use regex::Regex;

/// What a built-in detector finds; in config, its snake_case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiType {
    PrivateKey,
    Jwt,
    UrlCredentials,
    Secret,
    BearerToken,
    Email,
    Iban,
    Card,
    Ssn,
    Ipv6,
    Ipv4,
    Phone,
}

impl PiiType {
    pub const ALL: [PiiType; 12] = [
        PiiType::PrivateKey,
        PiiType::Jwt,
        PiiType::UrlCredentials,
        PiiType::Secret,
        PiiType::BearerToken,
        PiiType::Email,
        PiiType::Iban,
        PiiType::Card,
        PiiType::Ssn,
        PiiType::Ipv6,
        PiiType::Ipv4,
        PiiType::Phone,
    ];

    /// The placeholder name, as in `<EMAIL>`.
    pub fn label(self) -> &'static str {
        match self {
            PiiType::PrivateKey => "PRIVATE_KEY",
            PiiType::Jwt => "JWT",
            PiiType::UrlCredentials => "URL_CREDENTIALS",
            PiiType::Secret => "SECRET",
            PiiType::BearerToken => "BEARER_TOKEN",
            PiiType::Email => "EMAIL",
            PiiType::Iban => "IBAN",
            PiiType::Card => "CARD",
            PiiType::Ssn => "SSN",
            PiiType::Ipv6 => "IPV6",
            PiiType::Ipv4 => "IPV4",
            PiiType::Phone => "PHONE",
        }
    }

    /// The pattern of candidates, in the order they are tried at one
    /// position: the most specific first.
    fn pattern(self) -> &'static str {
        match self {
            PiiType::PrivateKey => {
                r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
            }
            PiiType::Jwt => r"\beyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}",
            PiiType::UrlCredentials => r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s:/@]+:[^\s/@]+@",
            PiiType::Secret => concat!(
                r"\b(?:sk-(?:proj-|ant-(?:api\d\d-)?)?[A-Za-z0-9_-]{20,}",
                r"|AKIA[0-9A-Z]{16}",
                r"|gh[pousr]_[A-Za-z0-9]{36}",
                r"|github_pat_[A-Za-z0-9_]{22,}",
                r"|xox[abprs]-[A-Za-z0-9-]{10,})"
            ),
            PiiType::BearerToken => r"\b[Bb]earer[ \t]+[A-Za-z0-9._~+/=-]{16,}",
            PiiType::Email => {
                r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}\b"
            }
            PiiType::Iban => r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b",
            // Only the ways cards are printed: 13–19 digits in one run, or
            // 4-4-4-4(-3), 4-4-4-1, 4-6-5, 4-6-4, 4-4-5. Dates in model
            // names (`-2024-07-18`) then never reach validation.
            PiiType::Card => concat!(
                r"\b(?:\d{13,19}",
                r"|\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{4}(?:[ -]\d{3})?",
                r"|\d{4}[ -]\d{4}[ -]\d{4}[ -]\d",
                r"|\d{4}[ -]\d{6}[ -]\d{4,5}",
                r"|\d{4}[ -]\d{4}[ -]\d{5})\b"
            ),
            PiiType::Ssn => r"\b\d{3}[- ]\d{2}[- ]\d{4}\b",
            PiiType::Ipv6 => {
                r"(?i)(?:\b[0-9a-f]{1,4})?(?::{1,2}[0-9a-f]{1,4}){2,7}(?:::)?|::(?:[0-9a-f]{1,4}:){0,6}[0-9a-f]{1,4}\b"
            }
            PiiType::Ipv4 => {
                r"\b(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?:\.(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}\b"
            }
            PiiType::Phone => concat!(
                r"\+[1-9]\d{0,2}[ .-]?\(?\d{1,4}\)?(?:[ .-]?\d{2,4}){1,4}\b",
                r"|\(\d{3}\)[ .-]?\d{3}[ .-]\d{4}\b",
                r"|\b\d{3}[.-]\d{3}[.-]\d{4}\b",
                r"|\b0\d{2,4} \d{3,4} \d{3,4}\b"
            ),
        }
    }
}

/// One detection: a byte range of the text, and the index of the rule
/// (see [`Detector::rules`]) that found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Detection {
    pub start: usize,
    pub end: usize,
    pub rule: usize,
}

/// What the detector looks for: a built-in type, or a custom rule from
/// config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The placeholder name, as in `<EMAIL>` or `<EMPLOYEE_ID>`.
    pub label: String,
    /// `None` for a custom rule.
    pub builtin: Option<PiiType>,
}

/// A custom rule: a label and a regular expression.
#[derive(Debug, Clone)]
pub struct CustomPattern {
    pub label: String,
    pub pattern: String,
}

/// The combined matcher over the enabled detectors and custom rules.
pub struct Detector {
    /// Only without custom rules, which may match anything.
    prefilter: Option<Prefilter>,
    combined: Regex,
    rules: Vec<Rule>,
    /// The capture group that wraps each rule's alternative: custom
    /// patterns may hold groups of their own, which shift the numbering.
    group_of_rule: Vec<usize>,
}

impl Detector {
    pub fn new(enabled: &[PiiType]) -> Result<Detector, regex::Error> {
        Detector::with_custom(enabled, &[])
    }

    pub fn with_custom(
        enabled: &[PiiType],
        custom: &[CustomPattern],
    ) -> Result<Detector, regex::Error> {
        let builtins = PiiType::ALL
            .into_iter()
            .filter(|kind| enabled.contains(kind))
            .map(|kind| {
                let rule = Rule {
                    label: kind.label().to_string(),
                    builtin: Some(kind),
                };
                (rule, kind.pattern())
            });
        let customs = custom.iter().map(|c| {
            let rule = Rule {
                label: c.label.clone(),
                builtin: None,
            };
            (rule, c.pattern.as_str())
        });
        let mut rules = Vec::new();
        let mut alternatives = Vec::new();
        let mut group_of_rule = Vec::new();
        let mut next_group = 1;
        for (rule, pattern) in builtins.chain(customs) {
            let inner_groups = Regex::new(pattern)?.captures_len() - 1;
            group_of_rule.push(next_group);
            next_group += 1 + inner_groups;
            alternatives.push(format!("({pattern})"));
            rules.push(rule);
        }
        let combined = if alternatives.is_empty() {
            // Matches nothing.
            Regex::new(r"[^\s\S]")?
        } else {
            Regex::new(&alternatives.join("|"))?
        };
        Ok(Detector {
            prefilter: custom.is_empty().then(Prefilter::new),
            combined,
            rules,
            group_of_rule,
        })
    }

    pub fn all() -> Detector {
        Detector::new(&PiiType::ALL).expect("the built-in patterns compile")
    }

    /// The rules, indexed by [`Detection::rule`].
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Whether `text` may hold a detection: the prefilter, then one pass of
    /// the DFA; the whole cost of scanning text with no candidate in it.
    fn may_match(&self, text: &str) -> bool {
        self.prefilter.as_ref().is_none_or(|p| p.may_match(text)) && self.combined.is_match(text)
    }

    /// Every validated detection in `text`, in order, not overlapping.
    pub fn detect(&self, text: &str) -> Vec<Detection> {
        let mut found = Vec::new();
        if !self.may_match(text) {
            return found;
        }
        for captures in self.combined.captures_iter(text) {
            let matched = self
                .group_of_rule
                .iter()
                .enumerate()
                .find_map(|(rule, &group)| captures.get(group).map(|g| (rule, g)));
            let Some((rule, group)) = matched else {
                continue;
            };
            let validated = match self.rules[rule].builtin {
                Some(kind) => valid(kind, text, group.start(), group.end()),
                None => true,
            };
            if validated && group.start() < group.end() {
                found.push(Detection {
                    start: group.start(),
                    end: group.end(),
                    rule,
                });
            }
        }
        found
    }
}

/// A test that text cannot hold a built-in detection, several times faster
/// than the combined DFA on prose. Every built-in pattern needs one of:
/// - two digits at most two bytes apart (cards, IBANs, SSNs, phones, and
///   IPv4's `1.2.3.4`);
/// - an `@` (emails);
/// - a `:` before a hex digit, `:` or `/` (IPv6, `scheme://user:pass@`);
///   JSON's `"key": "value"` has none;
/// - a literal prefix of a secret, a JWT, a bearer token or a PEM block.
struct Prefilter {
    literals: AhoCorasick,
}

/// The fixed prefixes of the `secret`, `jwt`, `bearer_token` and
/// `private_key` patterns.
const PREFIX_LITERALS: &[&str] = &[
    "sk-",
    "AKIA",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "eyJ",
    "Bearer",
    "bearer",
    "-----BEGIN",
];

impl Prefilter {
    fn new() -> Prefilter {
        // Leftmost semantics let the crate use its SIMD (Teddy) searcher.
        let literals = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostFirst)
            .build(PREFIX_LITERALS)
            .expect("fixed literals build");
        Prefilter { literals }
    }

    fn may_match(&self, text: &str) -> bool {
        let bytes = text.as_bytes();
        memchr::memchr(b'@', bytes).is_some()
            || memchr::memchr_iter(b':', bytes).any(|at| {
                bytes
                    .get(at + 1)
                    .is_some_and(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'/'))
            })
            || has_close_digits(bytes)
            || self.literals.is_match(text)
    }
}

/// Whether two ASCII digits stand at most two bytes apart. Prose has few
/// digits, so eight bytes at a time are tested for any digit at all, and
/// only the words that have one are looked at closely.
fn has_close_digits(bytes: &[u8]) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    let mut at: usize = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().expect("chunks of 8"));
        if has_digit(word) {
            // The neighbours two bytes either side decide, so look at the
            // word widened by two bytes on each side.
            let window = &bytes[at.saturating_sub(2)..(at + 10).min(bytes.len())];
            if close_digits_in(window) {
                return true;
            }
        }
        at += 8;
    }
    close_digits_in(&bytes[at.saturating_sub(2)..])
}

/// Whether any byte of `word` is an ASCII digit (0x30–0x39), without a
/// branch per byte (Bit Twiddling Hacks, "determine if a word has a byte
/// between m and n").
fn has_digit(word: u64) -> bool {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES * 0x80;
    let (below, above) = (0x2f_u64, 0x3a_u64);
    let low7 = word & (ONES * 0x7f);
    let ascii = !word;
    ((ONES * (0x7f + above)).wrapping_sub(low7) & ascii & low7.wrapping_add(ONES * (0x7f - below)))
        & HIGH
        != 0
}

fn close_digits_in(bytes: &[u8]) -> bool {
    let mut since_digit = u32::MAX;
    for byte in bytes {
        since_digit = since_digit.saturating_add(1);
        if byte.is_ascii_digit() {
            if since_digit <= 2 {
                return true;
            }
            since_digit = 0;
        }
    }
    false
}

fn valid(kind: PiiType, text: &str, start: usize, end: usize) -> bool {
    let candidate = &text[start..end];
    match kind {
        PiiType::Card => card(candidate),
        PiiType::Iban => iban(candidate),
        PiiType::Ssn => ssn(candidate),
        PiiType::Ipv6 => ipv6(candidate),
        PiiType::Ipv4 => !looks_like_version(text, start),
        PiiType::Phone => phone(candidate) && !looks_like_version(text, start),
        _ => true,
    }
}

fn digits(text: &str) -> Vec<u8> {
    text.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

/// A payment card: 13–19 digits from a card network's range, separated
/// (if at all) the way cards are printed, passing the Luhn check.
fn card(candidate: &str) -> bool {
    let number = digits(candidate);
    if !(13..=19).contains(&number.len()) || !luhn(&number) {
        return false;
    }
    let separators: Vec<char> = candidate.chars().filter(|c| !c.is_ascii_digit()).collect();
    if separators.windows(2).any(|pair| pair[0] != pair[1]) {
        return false;
    }
    if !separators.is_empty() {
        let groups: Vec<usize> = candidate.split([' ', '-']).map(str::len).collect();
        let printed = matches!(
            groups.as_slice(),
            [4, 4, 4, 4] | [4, 6, 5] | [4, 6, 4] | [4, 4, 4, 4, 3] | [4, 4, 4, 1] | [4, 4, 5]
        );
        if !printed {
            return false;
        }
    }
    let prefix = |n: usize| {
        number[..n]
            .iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(*d))
    };
    match number[0] {
        4 => true,
        5 => (51..=55).contains(&prefix(2)),
        2 => (2221..=2720).contains(&prefix(4)),
        3 => matches!(prefix(2), 34 | 37 | 36 | 38 | 30) || (3528..=3589).contains(&prefix(4)),
        6 => matches!(prefix(2), 62 | 65) || prefix(4) == 6011 || (644..=649).contains(&prefix(3)),
        _ => false,
    }
}

pub(crate) fn luhn(number: &[u8]) -> bool {
    let sum: u32 = number
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 { doubled - 9 } else { doubled }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// An IBAN: 15–34 characters whose check digits pass mod 97.
fn iban(candidate: &str) -> bool {
    let compact: Vec<u8> = candidate.bytes().filter(|b| *b != b' ').collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u32 = 0;
    for &byte in tail.iter().chain(head) {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            b'A'..=b'Z' => u32::from(byte - b'A') + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// A US SSN with one kind of separator, outside the areas never issued
/// (000, 666, 900–999) and without an all-zero group or serial.
fn ssn(candidate: &str) -> bool {
    let separators: Vec<char> = candidate.chars().filter(|c| !c.is_ascii_digit()).collect();
    if separators.first() != separators.last() {
        return false;
    }
    let number = digits(candidate);
    let area = u32::from(number[0]) * 100 + u32::from(number[1]) * 10 + u32::from(number[2]);
    let group = &number[3..5];
    let serial = &number[5..9];
    area != 0 && area != 666 && area < 900 && group != [0, 0] && serial != [0, 0, 0, 0]
}

/// An IPv6 address: the candidate parses as one, and it is not a time of
/// day or a MAC address (which do not parse).
fn ipv6(candidate: &str) -> bool {
    candidate.contains(':') && candidate.parse::<Ipv6Addr>().is_ok() && candidate.len() > 4
}

/// A phone number has 8 to 15 digits (E.164's bounds, with national
/// formats at 10).
fn phone(candidate: &str) -> bool {
    (8..=15).contains(&digits(candidate).len())
}

/// Dotted numbers written as versions (`v1.2.3.4`, `version 10.0.1.2`)
/// are not addresses.
fn looks_like_version(text: &str, start: usize) -> bool {
    let before = &text[..start];
    if before.ends_with(['v', 'V']) {
        return true;
    }
    let word = before
        .trim_end()
        .rsplit(char::is_whitespace)
        .next()
        .unwrap_or_default()
        .trim_end_matches(':')
        .to_ascii_lowercase();
    matches!(word.as_str(), "version" | "ver" | "build" | "v")
}

#[cfg(test)]
mod tests;
