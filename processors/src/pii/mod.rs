//! The `pii` processor: removes personal data and secrets from spans and
//! log records before any exporter sees them.
//!
//! ```yaml
//! processors:
//!   pii:
//!     default_action: redact        # redact | mask | hash | encrypt | drop
//!     detectors:                    # every detector is on unless switched off
//!       email: { action: hash }
//!       card: { action: mask, keep_last: 4 }
//!       ipv4: { enabled: false }
//!     rules:                        # custom detectors
//!       - name: employee_id         # placeholder <EMPLOYEE_ID>
//!         pattern: '\bEMP-\d{6}\b'
//!         action: redact
//!     allow:
//!       values: [support@example.com]   # detections equal to these stay
//!       keys: [user.email_domain]       # attributes never scanned (globs)
//!     key_rules:                    # whole attributes, by key glob
//!       - keys: ["app.customer.*"]
//!         action: drop              # drop | redact
//!     metadata_only: false          # true: drop every prompt and completion
//!     json: true                    # look inside strings holding JSON
//!     hash_key: ${env:LOOKOUT_PII_HASH_KEY}             # for hash (16+ bytes)
//!     encryption_key: ${env:LOOKOUT_PII_ENCRYPTION_KEY} # for encrypt (32 bytes, hex or base64)
//! ```
//!
//! Detectors: `email`, `phone`, `card` (Luhn), `iban` (mod-97), `ssn`
//! (valid areas), `ipv4`, `ipv6`, `secret` (OpenAI, Anthropic, AWS,
//! GitHub, Slack keys), `jwt`, `bearer_token`, `private_key` (PEM blocks),
//! `url_credentials` (`scheme://user:pass@`).
//!
//! Where it looks: span names, attributes (arrays and key-value lists
//! included, and JSON documents inside strings), events (names and
//! attributes), links, status messages, resource and scope attributes; log
//! record bodies and attributes. Metrics pass untouched.
//!
//! Audit: a changed span or log record gets `lookout.pii.redactions` (how
//! many values were changed) and `lookout.pii.types` (which detectors
//! fired, plus `key_rule`); a changed resource gets them on the resource.
//! `lookout_pii_detections_total{type,action}` counts every change. No raw
//! value is ever logged or put in a label.

pub mod actions;
#[cfg(any(test, feature = "corpus"))]
#[doc(hidden)]
pub mod corpus;
pub mod detect;
pub mod sanitize;

use std::collections::BTreeMap;

use lookout_pipelines::component::{BuildError, parse_config};
use lookout_pipelines::{ComponentId, Payload, Processor, ProcessorFactory, Signal};
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};
use serde::Deserialize;

use crate::attributes::set_attribute;
use actions::{Action, ActionKind, Keys};
use detect::{CustomPattern, Detector, PiiType};
use sanitize::{KeyMatcher, Sanitizer, Tally};

pub const REDACTIONS_ATTRIBUTE: &str = "lookout.pii.redactions";
pub const TYPES_ATTRIBUTE: &str = "lookout.pii.types";

/// Built-in detectors and custom rules share a 64-bit set per item.
const MAX_CUSTOM_RULES: usize = 64 - PiiType::ALL.len();

pub use lookout_pipelines::genai::CONTENT_KEYS;

/// Event attributes that carry a message in the per-message GenAI events
/// (`gen_ai.user.message`, `gen_ai.choice`, …).
const EVENT_CONTENT_KEYS: &[&str] = &["content", "message", "body"];

pub fn factory() -> ProcessorFactory {
    ProcessorFactory {
        kind: "pii",
        signals: &[Signal::Traces, Signal::Logs],
        build: |_id: &ComponentId, raw, _signal| {
            let config: PiiConfig = parse_config(raw)?;
            Ok(Box::new(PiiProcessor::new(config)?))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    pub default_action: ActionKind,
    pub detectors: BTreeMap<PiiType, DetectorConfig>,
    pub rules: Vec<CustomRuleConfig>,
    pub allow: AllowConfig,
    pub key_rules: Vec<KeyRuleConfig>,
    pub metadata_only: bool,
    pub json: bool,
    pub hash_key: Option<String>,
    pub encryption_key: Option<String>,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            default_action: ActionKind::Redact,
            detectors: BTreeMap::new(),
            rules: Vec::new(),
            allow: AllowConfig::default(),
            key_rules: Vec::new(),
            metadata_only: false,
            json: true,
            hash_key: None,
            encryption_key: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    pub enabled: bool,
    /// The processor's `default_action` when absent.
    pub action: Option<ActionKind>,
    pub keep_last: usize,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        DetectorConfig {
            enabled: true,
            action: None,
            keep_last: 4,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRuleConfig {
    /// Lower-case letters, digits and `_`; the placeholder is its upper case.
    pub name: String,
    pub pattern: String,
    pub action: Option<ActionKind>,
    #[serde(default = "default_keep_last")]
    pub keep_last: usize,
}

fn default_keep_last() -> usize {
    4
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowConfig {
    /// Detected values left as they are, compared exactly.
    pub values: Vec<String>,
    /// Attribute keys (globs with `*`) whose values are never scanned.
    pub keys: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRuleAction {
    Drop,
    Redact,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRuleConfig {
    /// Attribute keys, as globs with `*`.
    pub keys: Vec<String>,
    pub action: KeyRuleAction,
}

pub struct PiiProcessor {
    sanitizer: Sanitizer,
    metadata_only: bool,
    /// `lookout.pii.types` values per rule: the lower-case label.
    type_names: Vec<String>,
    tally: Tally,
}

impl PiiProcessor {
    pub fn new(config: PiiConfig) -> Result<PiiProcessor, BuildError> {
        let sanitizer = build_sanitizer(&config)?;
        let type_names: Vec<String> = sanitizer
            .detector
            .rules()
            .iter()
            .map(|rule| rule.label.to_ascii_lowercase())
            .collect();
        let tally = Tally::new(type_names.len());
        Ok(PiiProcessor {
            sanitizer,
            metadata_only: config.metadata_only,
            type_names,
            tally,
        })
    }

    pub fn sanitize_traces(&mut self, resources: &mut [ResourceSpans]) {
        for resource_spans in resources {
            let scopes = resource_spans
                .scope_spans
                .iter_mut()
                .map(|s| s.scope.as_mut());
            self.sanitize_envelope(resource_spans.resource.as_mut(), scopes);
            let spans = resource_spans
                .scope_spans
                .iter_mut()
                .flat_map(|s| s.spans.iter_mut());
            for span in spans {
                self.sanitize_span(span);
                self.audit(&mut span.attributes);
            }
        }
        self.publish();
    }

    /// Scrubs a resource and its scopes; the audit of either goes on the
    /// resource.
    fn sanitize_envelope<'a>(
        &mut self,
        resource: Option<&mut Resource>,
        scopes: impl Iterator<Item = Option<&'a mut InstrumentationScope>>,
    ) {
        for scope in scopes.flatten() {
            self.sanitizer
                .scrub_attributes(&mut scope.attributes, &mut self.tally);
        }
        if let Some(resource) = resource {
            self.sanitizer
                .scrub_attributes(&mut resource.attributes, &mut self.tally);
            self.audit(&mut resource.attributes);
        } else {
            self.tally.take_item();
        }
    }

    fn sanitize_span(&mut self, span: &mut Span) {
        let (sanitizer, tally) = (&self.sanitizer, &mut self.tally);
        sanitizer.scrub_fixed(&mut span.name, tally);
        sanitizer.scrub_attributes(&mut span.attributes, tally);
        for event in &mut span.events {
            sanitizer.scrub_fixed(&mut event.name, tally);
            if self.metadata_only && event.name.starts_with("gen_ai.") {
                drop_event_content(sanitizer, &mut event.attributes, tally);
            }
            sanitizer.scrub_attributes(&mut event.attributes, tally);
        }
        for link in &mut span.links {
            sanitizer.scrub_attributes(&mut link.attributes, tally);
        }
        if let Some(status) = span.status.as_mut() {
            sanitizer.scrub_fixed(&mut status.message, tally);
        }
    }

    pub fn sanitize_logs(&mut self, resources: &mut [ResourceLogs]) {
        for resource_logs in resources {
            let scopes = resource_logs
                .scope_logs
                .iter_mut()
                .map(|s| s.scope.as_mut());
            self.sanitize_envelope(resource_logs.resource.as_mut(), scopes);
            let records = resource_logs
                .scope_logs
                .iter_mut()
                .flat_map(|s| s.log_records.iter_mut());
            for record in records {
                self.sanitize_log(record);
                self.audit(&mut record.attributes);
            }
        }
        self.publish();
    }

    fn sanitize_log(&mut self, record: &mut LogRecord) {
        let (sanitizer, tally) = (&self.sanitizer, &mut self.tally);
        if self.metadata_only && is_genai_event(record) && record.body.is_some() {
            record.body = None;
            sanitizer.drop_content(tally);
        }
        if let Some(body) = record.body.as_mut()
            && sanitizer.scrub_value(body, tally)
        {
            record.body = None;
        }
        sanitizer.scrub_attributes(&mut record.attributes, tally);
    }

    /// Writes the audit attributes of the item just scrubbed, if it changed.
    fn audit(&mut self, attributes: &mut Vec<KeyValue>) {
        let (changes, rules, key_rule) = self.tally.take_item();
        if changes == 0 {
            return;
        }
        let mut types: Vec<AnyValue> = (0..self.type_names.len())
            .filter(|rule| rules & (1 << rule) != 0)
            .map(|rule| string_value(&self.type_names[rule]))
            .collect();
        if key_rule {
            types.push(string_value("key_rule"));
        }
        set_attribute(
            attributes,
            None,
            REDACTIONS_ATTRIBUTE,
            Value::IntValue(i64::from(changes)),
        );
        set_attribute(
            attributes,
            None,
            TYPES_ATTRIBUTE,
            Value::ArrayValue(ArrayValue { values: types }),
        );
    }

    /// Adds this payload's counts to `lookout_pii_detections_total`.
    fn publish(&mut self) {
        for (rule, per_action) in self.tally.per_rule.iter_mut().enumerate() {
            for (action, count) in ActionKind::ALL.iter().zip(per_action.iter_mut()) {
                if *count > 0 {
                    detections_counter(&self.type_names[rule], action.as_str()).increment(*count);
                    *count = 0;
                }
            }
        }
        for (action, count) in ["drop", "redact"].iter().zip(&mut self.tally.key_rules) {
            if *count > 0 {
                detections_counter("key_rule", action).increment(*count);
                *count = 0;
            }
        }
    }
}

impl Processor for PiiProcessor {
    fn process(&mut self, mut payload: Payload, out: &mut Vec<Payload>) {
        match &mut payload {
            Payload::Traces(resources) => self.sanitize_traces(resources),
            Payload::Logs(resources) => self.sanitize_logs(resources),
            Payload::Metrics(_) | Payload::Alerts(_) => {}
        }
        out.push(payload);
    }
}

fn detections_counter(kind: &str, action: &'static str) -> metrics::Counter {
    metrics::counter!("lookout_pii_detections_total", "type" => kind.to_string(), "action" => action)
}

fn string_value(text: &str) -> AnyValue {
    AnyValue {
        value: Some(Value::StringValue(text.to_string())),
    }
}

fn drop_event_content(sanitizer: &Sanitizer, attributes: &mut Vec<KeyValue>, tally: &mut Tally) {
    attributes.retain(|attribute| {
        let content = EVENT_CONTENT_KEYS.contains(&attribute.key.as_str());
        if content {
            sanitizer.drop_content(tally);
        }
        !content
    });
}

/// A log record that is an OTel GenAI event, whose body is the message.
fn is_genai_event(record: &LogRecord) -> bool {
    record.event_name.starts_with("gen_ai.")
        || record.attributes.iter().any(|a| {
            a.key == "event.name"
                && matches!(
                    a.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(Value::StringValue(name)) if name.starts_with("gen_ai.")
                )
        })
}

fn build_sanitizer(config: &PiiConfig) -> Result<Sanitizer, BuildError> {
    let builtin_action = |kind: PiiType| {
        let detector = config.detectors.get(&kind).cloned().unwrap_or_default();
        let action = Action {
            kind: detector.action.unwrap_or(config.default_action),
            keep_last: detector.keep_last,
        };
        detector.enabled.then_some((kind, action))
    };
    let builtins: Vec<(PiiType, Action)> = PiiType::ALL
        .into_iter()
        .filter_map(builtin_action)
        .collect();
    let custom = custom_rules(config)?;
    let enabled: Vec<PiiType> = builtins.iter().map(|(kind, _)| *kind).collect();
    let patterns: Vec<CustomPattern> = custom.iter().map(|(p, _)| p.clone()).collect();
    let detector = Detector::with_custom(&enabled, &patterns)
        .map_err(|e| BuildError::at(&["rules"], format!("a pattern does not compile: {e}")))?;
    // The detector orders its rules built-ins first, in `PiiType::ALL`
    // order, then custom rules in config order: the same order as here.
    let actions: Vec<Action> = builtins
        .iter()
        .map(|(_, action)| *action)
        .chain(custom.iter().map(|(_, action)| *action))
        .collect();
    let keys = Keys::new(config.hash_key.as_deref(), config.encryption_key.as_deref())
        .map_err(|e| BuildError::new(e.to_string()))?;
    keys.check(actions.iter().map(|a| a.kind))
        .map_err(|e| BuildError::new(e.to_string()))?;
    let (drop_keys, redact_keys) = key_rules(config)?;
    let allowed_keys = KeyMatcher::new(&config.allow.keys)
        .map_err(|e| BuildError::at(&["allow", "keys"], e.to_string()))?;
    Ok(Sanitizer {
        detector,
        actions,
        keys,
        allowed_values: config.allow.values.iter().cloned().collect(),
        allowed_keys,
        drop_keys,
        redact_keys,
        json: config.json,
    })
}

fn custom_rules(config: &PiiConfig) -> Result<Vec<(CustomPattern, Action)>, BuildError> {
    if config.rules.len() > MAX_CUSTOM_RULES {
        return Err(BuildError::at(
            &["rules"],
            format!("at most {MAX_CUSTOM_RULES} custom rules"),
        ));
    }
    let mut rules = Vec::new();
    for (index, rule) in config.rules.iter().enumerate() {
        let at = format!("[{index}]");
        let well_named = rule.name.starts_with(|c: char| c.is_ascii_lowercase())
            && rule
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !well_named {
            return Err(BuildError::at(
                &["rules", &at, "name"],
                "a rule name is lower-case letters, digits and _, starting with a letter",
            ));
        }
        let label = rule.name.to_ascii_uppercase();
        if PiiType::ALL.iter().any(|kind| kind.label() == label) {
            return Err(BuildError::at(
                &["rules", &at, "name"],
                format!(
                    "`{}` is a built-in detector; configure it under detectors",
                    rule.name
                ),
            ));
        }
        if let Err(e) = regex::Regex::new(&rule.pattern) {
            return Err(BuildError::at(&["rules", &at, "pattern"], e.to_string()));
        }
        let pattern = CustomPattern {
            label,
            pattern: rule.pattern.clone(),
        };
        let action = Action {
            kind: rule.action.unwrap_or(config.default_action),
            keep_last: rule.keep_last,
        };
        rules.push((pattern, action));
    }
    Ok(rules)
}

fn key_rules(config: &PiiConfig) -> Result<(KeyMatcher, KeyMatcher), BuildError> {
    let mut drop: Vec<&str> = Vec::new();
    let mut redact: Vec<&str> = Vec::new();
    if config.metadata_only {
        drop.extend(CONTENT_KEYS);
    }
    for rule in &config.key_rules {
        let keys = rule.keys.iter().map(String::as_str);
        match rule.action {
            KeyRuleAction::Drop => drop.extend(keys),
            KeyRuleAction::Redact => redact.extend(keys),
        }
    }
    let matcher = |keys: &[&str]| {
        KeyMatcher::new(keys).map_err(|e| BuildError::at(&["key_rules"], e.to_string()))
    };
    Ok((matcher(&drop)?, matcher(&redact)?))
}

#[cfg(test)]
mod tests;
