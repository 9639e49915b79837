//! Costs that are not tokens: speech synthesis per character, and a flat
//! price per call of a named tool or external API.

use std::collections::BTreeMap;

use lookout_pipelines::BuildError;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use regex::Regex;
use serde::Deserialize;

use super::set_status;
use crate::attributes::{set_attribute, text, value_of};

/// Which spans a rule prices: every condition given must hold.
/// `span_name` is a regular expression on the span name, `tool` the
/// `gen_ai.tool.name` value, and `attributes` string values the span must
/// carry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsRule {
    pub span_name: Option<String>,
    pub tool: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub usd_per_character: f64,
    /// An int attribute with the character count, or a string attribute
    /// whose characters are counted.
    #[serde(default = "default_characters_attribute")]
    pub characters_attribute: String,
}

fn default_characters_attribute() -> String {
    "tts.characters".to_string()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CallRule {
    pub span_name: Option<String>,
    pub tool: Option<String>,
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    pub usd_per_call: f64,
}

struct Matcher {
    span_name: Option<Regex>,
    tool: Option<String>,
    attributes: Vec<(String, String)>,
}

impl Matcher {
    fn compile(
        span_name: Option<&str>,
        tool: Option<&String>,
        attributes: &BTreeMap<String, String>,
        path: &[&str],
    ) -> Result<Matcher, BuildError> {
        if span_name.is_none() && tool.is_none() && attributes.is_empty() {
            return Err(BuildError::at(
                path,
                "give span_name, tool or attributes to say which spans this prices",
            ));
        }
        let span_name = span_name
            .map(Regex::new)
            .transpose()
            .map_err(|error| BuildError::at(path, format!("span_name: {error}")))?;
        Ok(Matcher {
            span_name,
            tool: tool.cloned(),
            attributes: attributes.clone().into_iter().collect(),
        })
    }

    fn matches(&self, span: &Span, tool: Option<&str>) -> bool {
        self.tool
            .as_deref()
            .is_none_or(|wanted| tool == Some(wanted))
            && self
                .span_name
                .as_ref()
                .is_none_or(|regex| regex.is_match(&span.name))
            && self.attributes.iter().all(|(key, wanted)| {
                span.attributes.iter().any(|a| {
                    a.key == *key
                        && matches!(value_of(a), Some(Value::StringValue(v)) if v == wanted)
                })
            })
    }
}

enum Charge {
    PerCharacter { usd: f64, attribute: String },
    PerCall { usd: f64 },
}

pub struct Rules {
    rules: Vec<(Matcher, Charge)>,
}

fn check_price(usd: f64, path: &[&str]) -> Result<f64, BuildError> {
    if usd.is_finite() && usd >= 0.0 {
        Ok(usd)
    } else {
        Err(BuildError::at(
            path,
            "must be a finite amount, not negative",
        ))
    }
}

impl Rules {
    pub fn compile(tts: &[TtsRule], calls: &[CallRule]) -> Result<Rules, BuildError> {
        let mut rules = Vec::new();
        for (i, rule) in tts.iter().enumerate() {
            let index = i.to_string();
            let matcher = Matcher::compile(
                rule.span_name.as_deref(),
                rule.tool.as_ref(),
                &rule.attributes,
                &["tts", &index],
            )?;
            let usd = check_price(
                rule.usd_per_character,
                &["tts", &index, "usd_per_character"],
            )?;
            let attribute = rule.characters_attribute.clone();
            rules.push((matcher, Charge::PerCharacter { usd, attribute }));
        }
        for (i, rule) in calls.iter().enumerate() {
            let index = i.to_string();
            let matcher = Matcher::compile(
                rule.span_name.as_deref(),
                rule.tool.as_ref(),
                &rule.attributes,
                &["api_calls", &index],
            )?;
            let usd = check_price(rule.usd_per_call, &["api_calls", &index, "usd_per_call"])?;
            rules.push((matcher, Charge::PerCall { usd }));
        }
        Ok(Rules { rules })
    }

    /// Prices `span` by the first rule that matches it, writing the cost
    /// attributes; `None` when no rule matches.
    /// `tool_at` is where the span's `gen_ai.tool.name` is.
    pub fn price(&self, span: &mut Span, tool_at: Option<usize>) -> Option<f64> {
        let tool = tool_at
            .and_then(|at| span.attributes.get(at))
            .and_then(value_of)
            .and_then(text);
        let (_, charge) = self.rules.iter().find(|(m, _)| m.matches(span, tool))?;
        let attributes = &mut span.attributes;
        let (cost_type, key, usd) = match charge {
            Charge::PerCall { usd } => ("api", "lookout.cost.api_usd", *usd),
            Charge::PerCharacter { usd, attribute } => {
                let characters = attributes
                    .iter()
                    .find(|a| a.key == *attribute)
                    .and_then(value_of)
                    .and_then(characters);
                let Some(characters) = characters else {
                    set_status(attributes, false, "tts", "unknown_usage");
                    return None;
                };
                ("tts", "lookout.cost.tts_usd", characters as f64 * usd)
            }
        };
        set_attribute(attributes, None, key, Value::DoubleValue(usd));
        set_attribute(
            attributes,
            None,
            "gen_ai.usage.cost",
            Value::DoubleValue(usd),
        );
        set_status(attributes, false, cost_type, "computed");
        Some(usd)
    }
}

/// A character count, or the characters of the text itself.
fn characters(value: &Value) -> Option<u64> {
    match value {
        Value::IntValue(n) if *n >= 0 => Some(*n as u64),
        Value::StringValue(text) => Some(text.chars().count() as u64),
        _ => None,
    }
}
