//! Finding a model's price: the exact ID first, then the ID with provider
//! and region prefixes and date or version suffixes removed one at a time,
//! then the configured patterns.

use std::sync::Arc;

use regex::Regex;

use super::prices::{Price, PriceTable};

/// Routers and SDKs name the provider before the model
/// (`openai/gpt-4o`, `bedrock/…`, `vertex_ai/…`, `openrouter/x/y`).
fn strip_provider_prefix(id: &str) -> Option<&str> {
    id.rsplit_once('/').map(|(_, model)| model)
}

/// Bedrock cross-region inference profiles: `us.anthropic.claude-…`.
const REGION_PREFIXES: &[&str] = &[
    "us.",
    "eu.",
    "apac.",
    "global.",
    "jp.",
    "au.",
    "ca.",
    "us-gov.",
    "regional.",
];

/// Bedrock model IDs name the vendor: `anthropic.claude-…`, `meta.llama…`.
const VENDOR_PREFIXES: &[&str] = &[
    "anthropic.",
    "amazon.",
    "meta.",
    "mistral.",
    "cohere.",
    "ai21.",
    "deepseek.",
    "openai.",
    "qwen.",
    "google.",
    "writer.",
    "nvidia.",
];

fn strip_any_prefix<'a>(id: &'a str, prefixes: &[&str]) -> Option<&'a str> {
    prefixes
        .iter()
        .find_map(|prefix| id.strip_prefix(prefix))
        .filter(|rest| !rest.is_empty())
}

/// Removes one date or version suffix: `@001`, `-v2:0`, `:0`, `-latest`,
/// `-2024-07-18`, `-20241022`, `-08-2024`, `-0613`, `-001`, `-v2`.
fn strip_version_suffix(id: &str) -> Option<&str> {
    if let Some((model, _)) = id.rsplit_once('@') {
        return Some(model);
    }
    if let Some(model) = id.strip_suffix("-latest") {
        return Some(model);
    }
    if let Some((model, version)) = id.rsplit_once(':')
        && is_digits(version)
    {
        return Some(model);
    }
    let (model, last) = id.rsplit_once('-')?;
    let numbered = |len: usize| last.len() == len && is_digits(last);
    // `-YYYY-MM-DD` and `-MM-YYYY` end in a run the single split above
    // cannot see whole.
    for (len, parts) in [(10, 3), (7, 2)] {
        if let Some(start) = id.len().checked_sub(len + 1)
            && let Some(tail) = id.get(start..)
            && let Some(date) = tail.strip_prefix('-')
            && date.split('-').count() == parts
            && date.split('-').all(is_digits)
        {
            return Some(&id[..start]);
        }
    }
    let version = last.strip_prefix('v').is_some_and(is_digits);
    (numbered(8) || numbered(4) || numbered(3) || version).then_some(model)
}

fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// A configured pattern: model IDs it matches are priced as `model`.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub regex: Regex,
    pub model: String,
}

/// The price of `model`, if any entry or pattern matches it.
pub fn find_price(table: &PriceTable, patterns: &[Pattern], model: &str) -> Option<Arc<Price>> {
    let id = model.trim().to_ascii_lowercase();
    reduce(table, &id)
        .or_else(|| {
            patterns
                .iter()
                .find(|pattern| pattern.regex.is_match(model))
                .and_then(|pattern| table.get(&pattern.model.to_ascii_lowercase()))
        })
        .cloned()
}

fn reduce<'t>(table: &'t PriceTable, id: &str) -> Option<&'t Arc<Price>> {
    let mut current = id;
    if let Some(price) = table.get(current) {
        return Some(price);
    }
    let prefix_steps: [fn(&str) -> Option<&str>; 3] = [
        strip_provider_prefix,
        |id| strip_any_prefix(id, REGION_PREFIXES),
        |id| strip_any_prefix(id, VENDOR_PREFIXES),
    ];
    for step in prefix_steps {
        if let Some(shorter) = step(current) {
            current = shorter;
            if let Some(price) = table.get(current) {
                return Some(price);
            }
        }
    }
    while let Some(shorter) = strip_version_suffix(current) {
        current = shorter;
        if let Some(price) = table.get(current) {
            return Some(price);
        }
    }
    None
}
