//! The price table: the built-in data file, a user file and inline
//! entries, merged into one lookup by model ID.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

/// The table that ships with Lookout.
pub const BUILTIN: &str = include_str!("../../prices/builtin.yaml");

/// Token counts of one call, as the OTel GenAI conventions define them:
/// cache reads and writes are part of `input`, reasoning is part of
/// `output`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub input: i64,
    pub output: i64,
    pub cache_read: i64,
    pub cache_write: i64,
    pub reasoning: i64,
}

/// What one call cost, in USD, by kind of token.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Breakdown {
    pub input: f64,
    pub output: f64,
    pub cache_read: f64,
    pub cache_write: f64,
    pub reasoning: f64,
}

impl Breakdown {
    pub fn total(&self) -> f64 {
        self.input + self.output + self.cache_read + self.cache_write + self.reasoning
    }
}

/// USD per million tokens. A missing cache price bills those tokens as
/// input, a missing reasoning price as output.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
}

/// Rates that replace the base rates for a whole call whose input (cache
/// included) exceeds `above_input_tokens`.
#[derive(Debug, Clone, PartialEq)]
pub struct Tier {
    pub above_input_tokens: i64,
    pub rates: Rates,
}

/// A tier as written in a price file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierEntry {
    pub above_input_tokens: i64,
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
}

/// One model's prices, with where they come from.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    pub model: String,
    pub provider: String,
    pub source: Option<String>,
    pub as_of: Option<String>,
    pub rates: Rates,
    /// Highest threshold first.
    pub tiers: Vec<Tier>,
}

impl Price {
    pub fn cost(&self, usage: &Usage) -> Breakdown {
        let rates = self
            .tiers
            .iter()
            .find(|tier| usage.input > tier.above_input_tokens)
            .map_or(&self.rates, |tier| &tier.rates);
        // Inconsistent counts (cache above input) bill what was reported
        // under its own price and never go negative.
        let cached = usage.cache_read + usage.cache_write;
        let plain_input = (usage.input - cached).max(0);
        let plain_output = (usage.output - usage.reasoning).max(0);
        let per_token = |tokens: i64, per_million: f64| tokens as f64 * per_million / 1e6;
        Breakdown {
            input: per_token(plain_input, rates.input),
            output: per_token(plain_output, rates.output),
            cache_read: per_token(usage.cache_read, rates.cache_read.unwrap_or(rates.input)),
            cache_write: per_token(usage.cache_write, rates.cache_write.unwrap_or(rates.input)),
            reasoning: per_token(usage.reasoning, rates.reasoning.unwrap_or(rates.output)),
        }
    }
}

/// An entry as written in a price file or inline in the config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub model: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub provider: Option<String>,
    pub source: Option<String>,
    pub as_of: Option<String>,
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    pub cache_read: Option<f64>,
    pub cache_write: Option<f64>,
    pub reasoning: Option<f64>,
    #[serde(default)]
    pub tiers: Vec<TierEntry>,
}

impl PriceEntry {
    fn rates(&self) -> Rates {
        Rates {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
            reasoning: self.reasoning,
        }
    }
}

impl TierEntry {
    fn tier(&self) -> Tier {
        Tier {
            above_input_tokens: self.above_input_tokens,
            rates: Rates {
                input: self.input,
                output: self.output,
                cache_read: self.cache_read,
                cache_write: self.cache_write,
                reasoning: self.reasoning,
            },
        }
    }
}

/// A price file: entries grouped by provider, each group with its source.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceFile {
    pub providers: HashMap<String, ProviderEntries>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntries {
    pub source: Option<String>,
    #[serde(default)]
    pub models: Vec<PriceEntry>,
}

impl PriceFile {
    pub fn parse(text: &str) -> Result<PriceFile, String> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let path = error.path().to_string();
            format!("{path}: {}", error.into_inner())
        })
    }

    /// The entries with their provider and source filled in.
    pub fn entries(self) -> Vec<PriceEntry> {
        let mut entries = Vec::new();
        for (provider, group) in self.providers {
            for mut entry in group.models {
                entry.provider.get_or_insert_with(|| provider.clone());
                if entry.source.is_none() {
                    entry.source.clone_from(&group.source);
                }
                entries.push(entry);
            }
        }
        entries
    }
}

/// Every known ID (lower case) to its price.
#[derive(Debug, Default, Clone)]
pub struct PriceTable {
    by_id: HashMap<String, Arc<Price>>,
}

impl PriceTable {
    /// Builds the table; later entries replace earlier ones with the same
    /// ID, so pass the built-in entries first and overrides last.
    pub fn build(entries: impl IntoIterator<Item = PriceEntry>) -> Result<PriceTable, String> {
        let mut by_id = HashMap::new();
        for entry in entries {
            let price = Arc::new(entry_price(&entry)?);
            for id in std::iter::once(&entry.model).chain(&entry.aliases) {
                by_id.insert(id.to_ascii_lowercase(), Arc::clone(&price));
            }
        }
        Ok(PriceTable { by_id })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Price>> {
        self.by_id.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.by_id.contains_key(id)
    }

    /// How many IDs and aliases the table knows.
    pub fn id_count(&self) -> usize {
        self.by_id.len()
    }
}

fn entry_price(entry: &PriceEntry) -> Result<Price, String> {
    let model = &entry.model;
    let mut tiers: Vec<Tier> = entry.tiers.iter().map(TierEntry::tier).collect();
    let rates = entry.rates();
    for rates in std::iter::once(&rates).chain(tiers.iter().map(|t| &t.rates)) {
        let values = [rates.input, rates.output].into_iter().chain(
            [rates.cache_read, rates.cache_write, rates.reasoning]
                .into_iter()
                .flatten(),
        );
        if values.into_iter().any(|v| !v.is_finite() || v < 0.0) {
            return Err(format!("{model}: prices must be finite and not negative"));
        }
    }
    tiers.sort_by_key(|tier| std::cmp::Reverse(tier.above_input_tokens));
    Ok(Price {
        model: model.clone(),
        provider: entry.provider.clone().unwrap_or_default(),
        source: entry.source.clone(),
        as_of: entry.as_of.clone(),
        rates,
        tiers,
    })
}
