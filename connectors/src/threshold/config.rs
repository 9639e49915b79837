//! The `threshold` connector's config and the default rule set.
//!
//! The defaults are the design documents' values (TR-003.2, the
//! environment's PERF_* and COST_* variables, the operational procedures'
//! ALERT_THRESHOLDS). Rules that need a figure only the deployment knows
//! (`daily_budget_usd`, `api_quota_per_minute`) stay off until it is set.

use std::collections::BTreeMap;
use std::time::Duration;

use lookout_pipelines::BuildError;
use lookout_pipelines::alert::{AlertSeverity, IncidentClass};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdConfig {
    /// How often rules are evaluated. Alerts can fire no sooner.
    #[serde(with = "humantime_serde")]
    pub evaluation_interval: Duration,
    /// How long a new alert waits before its first notification, so that
    /// one that clears at once is never sent (Alertmanager's 30s).
    #[serde(with = "humantime_serde")]
    pub group_wait: Duration,
    /// How often a still-firing alert is sent again (Alertmanager's 4h).
    #[serde(with = "humantime_serde")]
    pub repeat_interval: Duration,
    /// A warning still firing after this is sent to the critical route
    /// (ALERT_ESCALATION_TIMEOUT, 300 s). Takes `5m` or, as the design
    /// documents' variable has it, a number of seconds.
    #[serde(deserialize_with = "seconds_or_duration")]
    pub escalation_timeout: Duration,
    /// Include the design documents' rules. `rules` adds to them; a rule
    /// with a default's name replaces it.
    pub default_rules: bool,
    pub rules: Vec<RuleConfig>,
    /// Turns on the default `daily_budget` rule.
    pub daily_budget_usd: Option<f64>,
    /// Requests per minute the provider allows; turns on the default
    /// `api_quota` rule.
    pub api_quota_per_minute: Option<f64>,
    /// Where the daily budget's day starts and ends: an IANA name.
    pub time_zone: String,
    /// A runbook link for every alert; `{rule}` is replaced by the rule's
    /// name. A rule's own `runbook_url` wins.
    pub runbook_url: Option<String>,
    /// Trace ids carried by each alert as examples.
    pub example_traces: usize,
    /// Alert groups one rule may track; samples of further groups are
    /// counted in `lookout_threshold_groups_dropped_total` and ignored.
    pub max_groups_per_rule: usize,
    /// The operational procedures' NOTIFICATION_CHANNELS: exporter ids per
    /// severity. When set, an alert goes only to its route's exporters;
    /// when not, each alerts-pipeline exporter picks by its `severities`.
    pub routes: BTreeMap<AlertSeverity, Vec<String>>,
}

impl Default for ThresholdConfig {
    fn default() -> Self {
        ThresholdConfig {
            evaluation_interval: Duration::from_secs(15),
            group_wait: Duration::from_secs(30),
            repeat_interval: Duration::from_secs(4 * 3600),
            escalation_timeout: Duration::from_secs(300),
            default_rules: true,
            rules: Vec::new(),
            daily_budget_usd: None,
            api_quota_per_minute: None,
            time_zone: "UTC".into(),
            runbook_url: None,
            example_traces: 3,
            max_groups_per_rule: 1000,
            routes: BTreeMap::new(),
        }
    }
}

fn seconds_or_duration<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
        Raw::Text(text) => match text.trim().parse::<u64>() {
            Ok(seconds) => Ok(Duration::from_secs(seconds)),
            Err(_) => humantime::parse_duration(&text).map_err(serde::de::Error::custom),
        },
    }
}

/// What a rule measures over its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MetricKind {
    /// Failed samples over all samples, 0 to 1.
    ErrorRate,
    /// Mean duration, milliseconds.
    LatencyAvg,
    /// 95th percentile duration, milliseconds (1% relative error).
    LatencyP95,
    /// USD spent in the window, scaled to an hour.
    CostPerHour,
    /// The most expensive sample in the window, USD: a root span's trace
    /// cost, so a "call" is a whole workflow.
    CostPerCall,
    /// Input plus output tokens in the window, scaled to an hour.
    TokensPerHour,
    /// USD spent since midnight over `daily_budget_usd`, 0 to 1+.
    DailyBudgetUsed,
    /// USD spent in the window over the mean of the previous
    /// `baseline_windows` windows.
    CostSpike,
    /// Requests (or tokens) in the window over `quota`, 0 to 1+.
    ApiQuotaUsed,
    /// Samples in the window.
    RequestCount,
}

impl MetricKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricKind::ErrorRate => "error_rate",
            MetricKind::LatencyAvg => "latency_avg",
            MetricKind::LatencyP95 => "latency_p95",
            MetricKind::CostPerHour => "cost_per_hour",
            MetricKind::CostPerCall => "cost_per_call",
            MetricKind::TokensPerHour => "tokens_per_hour",
            MetricKind::DailyBudgetUsed => "daily_budget_used",
            MetricKind::CostSpike => "cost_spike",
            MetricKind::ApiQuotaUsed => "api_quota_used",
            MetricKind::RequestCount => "request_count",
        }
    }

    /// Which spans are samples unless the rule says otherwise. Costs are
    /// written only on priced spans, so summing over all spans counts each
    /// dollar once; tokens are read from model calls only, since some
    /// instrumentations repeat them on the enclosing agent.
    pub fn default_spans(self) -> SpanSelector {
        match self {
            MetricKind::ErrorRate | MetricKind::LatencyAvg | MetricKind::LatencyP95 => {
                SpanSelector::Agent
            }
            MetricKind::CostPerHour | MetricKind::DailyBudgetUsed | MetricKind::CostSpike => {
                SpanSelector::All
            }
            MetricKind::CostPerCall => SpanSelector::Root,
            MetricKind::TokensPerHour | MetricKind::ApiQuotaUsed | MetricKind::RequestCount => {
                SpanSelector::Llm
            }
        }
    }
}

/// What a rule reads: spans, or the OTel GenAI client metrics that SDKs
/// export (`gen_ai.client.operation.duration` for calls, errors and
/// latency; `gen_ai.client.token.usage` for tokens). An application that
/// sends both would be counted twice, so each rule reads one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    #[default]
    Spans,
    Metrics,
}

/// Which spans a rule samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpanSelector {
    All,
    /// Agent invocations (`invoke_agent`).
    Agent,
    /// Model calls: chat, completion, embeddings.
    Llm,
    Tool,
    /// Spans without a parent: whole workflows.
    Root,
}

/// A label that rules filter and group on, read from the normalised
/// attributes: `gen_ai.agent.name`, the response (else request) model,
/// `gen_ai.provider.name`, the resource's `service.name` and
/// `gen_ai.operation.name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    Agent,
    Model,
    Provider,
    Service,
    Operation,
}

impl Label {
    pub const COUNT: usize = 5;

    pub fn as_str(self) -> &'static str {
        match self {
            Label::Agent => "agent",
            Label::Model => "model",
            Label::Provider => "provider",
            Label::Service => "service",
            Label::Operation => "operation",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum Comparison {
    #[default]
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
}

impl Comparison {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtLeast => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtMost => value <= threshold,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtLeast => ">=",
            Comparison::Below => "<",
            Comparison::AtMost => "<=",
        }
    }
}

/// One value or a list, so that `agent: qualifier` and
/// `agent: [qualifier, closer]` both read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(value) => vec![value],
            OneOrMany::Many(values) => values,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaUnit {
    #[default]
    Requests,
    Tokens,
}

/// Incident classes per severity, overriding the defaults.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IncidentClasses {
    pub warning: Option<IncidentClass>,
    pub critical: Option<IncidentClass>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub metric: MetricKind,
    #[serde(default)]
    pub source: Source,
    /// Which spans are samples; each metric has a default.
    #[serde(default)]
    pub spans: Option<SpanSelector>,
    /// Only spans whose label has one of these values are samples.
    #[serde(default)]
    pub filters: BTreeMap<Label, OneOrMany>,
    /// One alert per combination of these labels' values. A span missing
    /// one of them is not a sample of this rule.
    #[serde(default)]
    pub group_by: Vec<Label>,
    #[serde(default = "default_window", with = "humantime_serde")]
    pub window: Duration,
    #[serde(default)]
    pub comparison: Comparison,
    pub warning: Option<f64>,
    pub critical: Option<f64>,
    /// Fewer samples in the window than this, and the rule holds its peace.
    #[serde(default = "default_min_samples")]
    pub min_samples: u64,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", with = "humantime_serde")]
    pub hold_for: Duration,
    #[serde(default)]
    pub runbook_url: Option<String>,
    #[serde(default)]
    pub incident_class: Option<IncidentClasses>,
    /// `cost_spike`: how many past windows make the baseline.
    #[serde(default = "default_baseline_windows")]
    pub baseline_windows: usize,
    /// `daily_budget_used`: the budget; the connector's when unset.
    #[serde(default)]
    pub daily_budget_usd: Option<f64>,
    /// `api_quota_used`: what the provider allows per window.
    #[serde(default)]
    pub quota: Option<f64>,
    #[serde(default)]
    pub quota_unit: QuotaUnit,
}

fn default_window() -> Duration {
    Duration::from_secs(300)
}

fn default_min_samples() -> u64 {
    1
}

fn default_baseline_windows() -> usize {
    24
}

impl RuleConfig {
    fn new(name: &str, metric: MetricKind, window_secs: u64) -> RuleConfig {
        RuleConfig {
            name: name.into(),
            metric,
            source: Source::Spans,
            spans: None,
            filters: BTreeMap::new(),
            group_by: Vec::new(),
            window: Duration::from_secs(window_secs),
            comparison: Comparison::Above,
            warning: None,
            critical: None,
            min_samples: default_min_samples(),
            hold_for: Duration::ZERO,
            runbook_url: None,
            incident_class: None,
            baseline_windows: default_baseline_windows(),
            daily_budget_usd: None,
            quota: None,
            quota_unit: QuotaUnit::Requests,
        }
    }

    fn levels(mut self, warning: Option<f64>, critical: Option<f64>) -> RuleConfig {
        self.warning = warning;
        self.critical = critical;
        self
    }

    fn grouped(mut self, labels: &[Label]) -> RuleConfig {
        self.group_by = labels.to_vec();
        self
    }
}

/// The design documents' thresholds as rules.
pub fn default_rules(config: &ThresholdConfig) -> Vec<RuleConfig> {
    use MetricKind::*;
    let mut rules = vec![
        // ALERT_THRESHOLDS.error_rate: 5% / 15%, per agent; 20 samples so
        // that one failure in three calls is not an incident.
        RuleConfig {
            min_samples: 20,
            ..RuleConfig::new("agent_error_rate", ErrorRate, 300)
                .levels(Some(0.05), Some(0.15))
                .grouped(&[Label::Agent])
        },
        RuleConfig {
            spans: Some(SpanSelector::Llm),
            min_samples: 20,
            ..RuleConfig::new("model_error_rate", ErrorRate, 300)
                .levels(Some(0.05), Some(0.15))
                .grouped(&[Label::Provider, Label::Model])
        },
        // PERF_AGENT_WARNING_MS / PERF_AGENT_CRITICAL_MS.
        RuleConfig {
            min_samples: 10,
            ..RuleConfig::new("agent_latency", LatencyP95, 300)
                .levels(Some(500.0), Some(1000.0))
                .grouped(&[Label::Agent])
        },
        // PERF_WORKFLOW_ALERT_MS.
        RuleConfig {
            spans: Some(SpanSelector::Root),
            min_samples: 10,
            ..RuleConfig::new("workflow_latency", LatencyP95, 300)
                .levels(Some(2000.0), None)
                .grouped(&[Label::Service])
        },
        RuleConfig::new("cost_per_hour", CostPerHour, 3600).levels(Some(10.0), Some(25.0)),
        RuleConfig::new("tokens_per_hour", TokensPerHour, 3600)
            .levels(Some(100_000.0), Some(500_000.0)),
        // COST_CALL_LIMIT_DOLLARS.
        RuleConfig::new("cost_per_call", CostPerCall, 300)
            .levels(Some(0.10), None)
            .grouped(&[Label::Service]),
        // COST_SPIKE_MULTIPLIER: the last hour against the day before it.
        RuleConfig::new("cost_spike", CostSpike, 3600).levels(Some(2.0), None),
    ];
    if config.daily_budget_usd.is_some() {
        // COST_DAILY_BUDGET_ALERT_PERCENT, and critical once it is spent.
        rules.push(
            RuleConfig::new("daily_budget", DailyBudgetUsed, 86_400).levels(Some(0.8), Some(1.0)),
        );
    }
    if let Some(quota) = config.api_quota_per_minute {
        rules.push(RuleConfig {
            quota: Some(quota),
            ..RuleConfig::new("api_quota", ApiQuotaUsed, 60)
                .levels(Some(0.80), Some(0.95))
                .grouped(&[Label::Provider])
        });
    }
    rules
}

impl ThresholdConfig {
    /// The rules in force: the defaults (when on) with `rules` added, a
    /// rule of the same name replacing a default.
    pub fn effective_rules(&self) -> Vec<RuleConfig> {
        let mut rules = if self.default_rules {
            default_rules(self)
        } else {
            Vec::new()
        };
        for rule in &self.rules {
            match rules.iter_mut().find(|r| r.name == rule.name) {
                Some(existing) => *existing = rule.clone(),
                None => rules.push(rule.clone()),
            }
        }
        rules
    }

    pub fn check(&self) -> Result<(), BuildError> {
        for (key, value) in [
            ("evaluation_interval", self.evaluation_interval),
            ("repeat_interval", self.repeat_interval),
        ] {
            if value.is_zero() {
                return Err(BuildError::at(&[key], "must be above zero"));
            }
        }
        if self.max_groups_per_rule == 0 {
            return Err(BuildError::at(
                &["max_groups_per_rule"],
                "must be at least 1",
            ));
        }
        if let Some(budget) = self.daily_budget_usd
            && !(budget > 0.0 && budget.is_finite())
        {
            return Err(BuildError::at(
                &["daily_budget_usd"],
                "must be a positive amount",
            ));
        }
        if let Some(quota) = self.api_quota_per_minute
            && !(quota > 0.0 && quota.is_finite())
        {
            return Err(BuildError::at(
                &["api_quota_per_minute"],
                "must be above zero",
            ));
        }
        jiff::tz::TimeZone::get(&self.time_zone).map_err(|err| {
            BuildError::at(
                &["time_zone"],
                format!("unknown time zone `{}`: {err}", self.time_zone),
            )
        })?;
        let mut names = std::collections::HashSet::new();
        for (index, rule) in self.rules.iter().enumerate() {
            let at = format!("[{index}]");
            if !names.insert(rule.name.as_str()) {
                return Err(BuildError::at(
                    &["rules", &at, "name"],
                    format!("rule `{}` is defined twice", rule.name),
                ));
            }
            rule.check(self)
                .map_err(|(key, message)| BuildError::at(&["rules", &at, key], message))?;
        }
        Ok(())
    }
}

impl RuleConfig {
    fn check(&self, connector: &ThresholdConfig) -> Result<(), (&'static str, String)> {
        if self.name.trim().is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        if self.warning.is_none() && self.critical.is_none() {
            return Err((
                "warning",
                "a rule needs `warning`, `critical` or both".into(),
            ));
        }
        for (key, level) in [("warning", self.warning), ("critical", self.critical)] {
            if level.is_some_and(|l| !l.is_finite()) {
                return Err((key, "must be a finite number".into()));
            }
        }
        if let (Some(warning), Some(critical)) = (self.warning, self.critical)
            && self.comparison.holds(warning, critical)
        {
            return Err((
                "critical",
                format!(
                    "with `{}`, critical ({critical}) must be beyond warning ({warning})",
                    self.comparison.as_str()
                ),
            ));
        }
        if self.window < Duration::from_secs(1) {
            return Err(("window", "must be at least 1s".into()));
        }
        if self.metric == MetricKind::CostSpike && self.baseline_windows == 0 {
            return Err(("baseline_windows", "must be at least 1".into()));
        }
        if self.metric == MetricKind::DailyBudgetUsed
            && self
                .daily_budget_usd
                .or(connector.daily_budget_usd)
                .is_none_or(|b| b <= 0.0)
        {
            return Err((
                "daily_budget_usd",
                "daily_budget_used needs a positive `daily_budget_usd` here or on the connector"
                    .into(),
            ));
        }
        if self.source == Source::Metrics {
            if !matches!(
                self.metric,
                MetricKind::ErrorRate
                    | MetricKind::RequestCount
                    | MetricKind::LatencyAvg
                    | MetricKind::LatencyP95
                    | MetricKind::TokensPerHour
                    | MetricKind::ApiQuotaUsed
            ) {
                return Err((
                    "source",
                    format!(
                        "{} is measured from spans only: the GenAI client metrics carry no cost",
                        self.metric.as_str()
                    ),
                ));
            }
            if self.spans.is_some() {
                return Err((
                    "spans",
                    "selects spans; a metrics rule reads model calls".into(),
                ));
            }
        }
        if self.metric == MetricKind::ApiQuotaUsed && self.quota.is_none_or(|q| q <= 0.0) {
            return Err((
                "quota",
                "api_quota_used needs a positive `quota` per window".into(),
            ));
        }
        Ok(())
    }
}
