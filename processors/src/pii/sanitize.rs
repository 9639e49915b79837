//! Applying the detectors and actions to text, to OTLP values and to
//! attribute lists.
//!
//! Text that the combined matcher cannot match costs one DFA pass and is
//! never copied. Text with detections is rebuilt once. Text that is a JSON
//! document is rebuilt literal by literal, so it stays valid JSON, keeps
//! its key order and spacing, and values hidden behind JSON escapes are
//! still found.

use std::collections::HashSet;

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use regex::Regex;

use super::actions::{Action, ActionKind, Keys};
use super::detect::{Detection, Detector};

/// JSON inside a string inside JSON is followed this deep.
const MAX_JSON_DEPTH: u8 = 4;

/// The value a key rule with `redact` leaves.
pub const REDACTED: &str = "<REDACTED>";

/// What became of one piece of text.
#[derive(Debug, PartialEq, Eq)]
pub enum Scrubbed {
    Clean,
    Replaced(String),
    /// A detection's action is `drop`: the holder should go.
    Drop,
}

/// What may be done to the holder of the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// An attribute value or a log body: `drop` removes it.
    Removable,
    /// A span name, an event name, a status message: `drop` redacts.
    Fixed,
}

/// Key names matched by exact name, by `prefix.*`, or by any other glob.
#[derive(Debug, Default)]
pub struct KeyMatcher {
    exact: HashSet<String>,
    prefixes: Vec<String>,
    globs: Option<Regex>,
}

impl KeyMatcher {
    pub fn new<S: AsRef<str>>(globs: &[S]) -> Result<KeyMatcher, regex::Error> {
        let mut matcher = KeyMatcher::default();
        let mut patterns = Vec::new();
        for glob in globs {
            let glob = glob.as_ref();
            match glob.find('*') {
                None => {
                    matcher.exact.insert(glob.to_string());
                }
                Some(at) if at == glob.len() - 1 => matcher.prefixes.push(glob[..at].to_string()),
                Some(_) => {
                    let parts: Vec<String> = glob.split('*').map(regex::escape).collect();
                    patterns.push(format!("^{}$", parts.join(".*")));
                }
            }
        }
        if !patterns.is_empty() {
            matcher.globs = Some(Regex::new(&patterns.join("|"))?);
        }
        Ok(matcher)
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.globs.is_none()
    }

    pub fn matches(&self, key: &str) -> bool {
        self.exact.contains(key)
            || self.prefixes.iter().any(|p| key.starts_with(p.as_str()))
            || self.globs.as_ref().is_some_and(|g| g.is_match(key))
    }
}

/// What a key rule does to a whole attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    Drop,
    Redact,
}

/// Counts of what was done: per item (span, log record, resource) for the
/// audit attributes, and per payload for the counter.
#[derive(Debug)]
pub struct Tally {
    /// Per rule, per action (in `ActionKind::ALL` order).
    pub per_rule: Vec<[u64; 5]>,
    /// Key-rule drops and redactions.
    pub key_rules: [u64; 2],
    /// Changes to the current item.
    pub item_changes: u32,
    /// The rules that fired on the current item, as a bit set.
    pub item_rules: u64,
    pub item_key_rule: bool,
}

impl Tally {
    pub fn new(rules: usize) -> Tally {
        Tally {
            per_rule: vec![[0; 5]; rules],
            key_rules: [0; 2],
            item_changes: 0,
            item_rules: 0,
            item_key_rule: false,
        }
    }

    fn detection(&mut self, rule: usize, action: ActionKind) {
        self.per_rule[rule][action as usize] += 1;
        self.item_changes += 1;
        self.item_rules |= 1 << rule;
    }

    fn key_rule(&mut self, action: KeyAction) {
        self.key_rules[action as usize] += 1;
        self.item_changes += 1;
        self.item_key_rule = true;
    }

    /// Ends the current item, giving back its changes.
    pub fn take_item(&mut self) -> (u32, u64, bool) {
        let item = (self.item_changes, self.item_rules, self.item_key_rule);
        self.item_changes = 0;
        self.item_rules = 0;
        self.item_key_rule = false;
        item
    }
}

pub struct Sanitizer {
    pub detector: Detector,
    /// Per rule of the detector.
    pub actions: Vec<Action>,
    pub keys: Keys,
    pub allowed_values: HashSet<String>,
    pub allowed_keys: KeyMatcher,
    pub drop_keys: KeyMatcher,
    pub redact_keys: KeyMatcher,
    /// Look inside strings that hold JSON documents.
    pub json: bool,
}

impl Sanitizer {
    /// Scrubs one piece of text.
    pub fn scrub(&self, text: &str, holder: Holder, tally: &mut Tally) -> Scrubbed {
        self.scrub_at_depth(text, holder, tally, 0)
    }

    fn scrub_at_depth(&self, text: &str, holder: Holder, tally: &mut Tally, depth: u8) -> Scrubbed {
        // Clean text costs the detector's prefilter and DFA pass, and no
        // allocation: an empty Vec does not allocate.
        let mut detections = self.detector.detect(text);
        if !self.allowed_values.is_empty() {
            detections.retain(|d| !self.allowed_values.contains(&text[d.start..d.end]));
        }
        if detections.is_empty() {
            return Scrubbed::Clean;
        }
        if self.json && depth < MAX_JSON_DEPTH && is_json_document(text) {
            return self.scrub_json(text, holder, tally, depth);
        }
        self.replace(text, &detections, holder, tally)
    }

    /// The action a detection gets in this holder.
    fn action_for(&self, detection: &Detection, holder: Holder) -> Action {
        let action = self.actions[detection.rule];
        match (action.kind, holder) {
            (ActionKind::Drop, Holder::Fixed) => Action {
                kind: ActionKind::Redact,
                ..action
            },
            _ => action,
        }
    }

    fn replace(
        &self,
        text: &str,
        detections: &[Detection],
        holder: Holder,
        tally: &mut Tally,
    ) -> Scrubbed {
        let drops = detections
            .iter()
            .any(|d| self.action_for(d, holder).kind == ActionKind::Drop);
        if drops {
            for detection in detections {
                tally.detection(detection.rule, ActionKind::Drop);
            }
            return Scrubbed::Drop;
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for detection in detections {
            let action = self.action_for(detection, holder);
            let label = &self.detector.rules()[detection.rule].label;
            out.push_str(&text[last..detection.start]);
            let value = &text[detection.start..detection.end];
            self.keys.replace(action, label, value, &mut out);
            tally.detection(detection.rule, action.kind);
            last = detection.end;
        }
        out.push_str(&text[last..]);
        Scrubbed::Replaced(out)
    }

    /// Rebuilds a JSON document: each string literal is scrubbed as text
    /// (decoded first if it holds escapes) and written back encoded; a
    /// number that is a detection becomes a string. Everything else is
    /// copied byte for byte.
    fn scrub_json(&self, text: &str, holder: Holder, tally: &mut Tally, depth: u8) -> Scrubbed {
        let bytes = text.as_bytes();
        let mut out = String::with_capacity(text.len());
        let mut copied = 0;
        let mut at = 0;
        while at < bytes.len() {
            let token_end = if bytes[at] == b'"' {
                string_literal_end(bytes, at)
            } else if bytes[at] == b'-' || bytes[at].is_ascii_digit() {
                number_end(bytes, at)
            } else {
                at += 1;
                continue;
            };
            let token = &text[at..token_end];
            let scrubbed = if bytes[at] == b'"' {
                self.scrub_json_string(token, tally, depth)
            } else {
                self.scrub_json_number(token, tally)
            };
            match scrubbed {
                Scrubbed::Clean => {}
                Scrubbed::Drop if holder == Holder::Removable => return Scrubbed::Drop,
                // A drop where nothing can go: the whole text is redacted.
                Scrubbed::Drop => return Scrubbed::Replaced(REDACTED.to_string()),
                Scrubbed::Replaced(replacement) => {
                    out.push_str(&text[copied..at]);
                    out.push_str(&serde_json::to_string(&replacement).expect("strings encode"));
                    copied = token_end;
                }
            }
            at = token_end;
        }
        if copied == 0 {
            return Scrubbed::Clean;
        }
        out.push_str(&text[copied..]);
        Scrubbed::Replaced(out)
    }

    fn scrub_json_string(&self, literal: &str, tally: &mut Tally, depth: u8) -> Scrubbed {
        let inner = &literal[1..literal.len() - 1];
        if !inner.contains('\\') {
            return self.scrub_at_depth(inner, Holder::Removable, tally, depth + 1);
        }
        match serde_json::from_str::<String>(literal) {
            Ok(decoded) => self.scrub_at_depth(&decoded, Holder::Removable, tally, depth + 1),
            // Checked as valid JSON before; cannot happen, but never leak.
            Err(_) => Scrubbed::Replaced(REDACTED.to_string()),
        }
    }

    fn scrub_json_number(&self, number: &str, tally: &mut Tally) -> Scrubbed {
        let detections = self.detector.detect(number);
        // Only a detection of the whole number (less its sign) counts:
        // the digits of a card, say; never part of a float.
        let whole = detections
            .iter()
            .find(|d| d.end == number.len() && number[..d.start].bytes().all(|b| b == b'-'));
        match whole {
            Some(detection) if !self.allowed_values.contains(&number[detection.start..]) => {
                self.replace(number, &[*detection], Holder::Removable, tally)
            }
            _ => Scrubbed::Clean,
        }
    }

    /// Scrubs every string in `value`, arrays and key-value lists included.
    /// Returns true if the value should be dropped.
    pub fn scrub_value(&self, value: &mut AnyValue, tally: &mut Tally) -> bool {
        match value.value.as_mut() {
            Some(Value::StringValue(text)) => match self.scrub(text, Holder::Removable, tally) {
                Scrubbed::Clean => false,
                Scrubbed::Replaced(replacement) => {
                    *text = replacement;
                    false
                }
                Scrubbed::Drop => true,
            },
            Some(Value::ArrayValue(array)) => {
                let mut drop = false;
                for element in &mut array.values {
                    drop |= self.scrub_value(element, tally);
                }
                drop
            }
            Some(Value::KvlistValue(list)) => {
                let mut drop = false;
                for entry in &mut list.values {
                    if let Some(value) = entry.value.as_mut() {
                        drop |= self.scrub_value(value, tally);
                    }
                }
                drop
            }
            _ => false,
        }
    }

    /// Scrubs a string that cannot be removed.
    pub fn scrub_fixed(&self, text: &mut String, tally: &mut Tally) {
        if let Scrubbed::Replaced(replacement) = self.scrub(text, Holder::Fixed, tally) {
            *text = replacement;
        }
    }

    /// Applies key rules, then scrubs every value whose key is not
    /// allowed; removes what is to be dropped.
    pub fn scrub_attributes(&self, attributes: &mut Vec<KeyValue>, tally: &mut Tally) {
        attributes.retain_mut(|attribute| self.keep_attribute(attribute, tally));
    }

    fn keep_attribute(&self, attribute: &mut KeyValue, tally: &mut Tally) -> bool {
        if self.drop_keys.matches(&attribute.key) {
            tally.key_rule(KeyAction::Drop);
            return false;
        }
        if self.redact_keys.matches(&attribute.key) {
            tally.key_rule(KeyAction::Redact);
            attribute.value = Some(AnyValue {
                value: Some(Value::StringValue(REDACTED.to_string())),
            });
            return true;
        }
        if self.allowed_keys.matches(&attribute.key) {
            return true;
        }
        match attribute.value.as_mut() {
            Some(value) => !self.scrub_value(value, tally),
            None => true,
        }
    }

    /// Drops the whole value under a key rule.
    pub fn drop_content(&self, tally: &mut Tally) {
        tally.key_rule(KeyAction::Drop);
    }
}

/// A JSON object or array, as a whole and valid. Checked only for text
/// that has detections.
fn is_json_document(text: &str) -> bool {
    let trimmed = text.trim_start();
    (trimmed.starts_with('{') || trimmed.starts_with('['))
        && serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

/// The end of the string literal that opens at `start`, past its quote.
fn string_literal_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return at + 1,
            _ => at += 1,
        }
    }
    bytes.len()
}

fn number_end(bytes: &[u8], start: usize) -> usize {
    let mut at = start + 1;
    while at < bytes.len() && matches!(bytes[at], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') {
        at += 1;
    }
    at
}
