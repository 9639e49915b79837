//! One rule at run time: its groups, each with its window, its baseline or
//! day total, and its lifecycle; and the alert it sends.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use lookout_pipelines::alert::{
    Alert, AlertSeverity, AlertStatus, IncidentClass, NotificationReason,
};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::config::{
    Comparison, IncidentClasses, Label, MetricKind, QuotaUnit, RuleConfig, Source, SpanSelector,
};
use super::lifecycle::{Notify, Phase, Timing};
use super::points::{Family, PointView};
use super::sample::{Labels, SpanView};
use super::window::{SLOTS_PER_WINDOW, Sample, Spread, Window};

/// What every group of a rule shares.
pub struct Rule {
    pub name: String,
    pub metric: MetricKind,
    source: Source,
    selector: SpanSelector,
    /// Allowed values per label, indexed by `Label as usize`.
    filters: [Option<Vec<String>>; Label::COUNT],
    group_by: Vec<Label>,
    window: Duration,
    slot_width: Duration,
    comparison: Comparison,
    warning: Option<f64>,
    critical: Option<f64>,
    min_samples: u64,
    hold_for: Duration,
    runbook_url: Option<String>,
    incident_classes: Option<IncidentClasses>,
    baseline_windows: usize,
    daily_budget_usd: Option<f64>,
    quota: Option<f64>,
    quota_unit: QuotaUnit,
    max_groups: usize,
    max_examples: usize,
    groups: HashMap<u64, Group, BuildHasherDefault<KeyIsHash>>,
    pub dropped_samples: metrics::Counter,
}

struct Group {
    labels: BTreeMap<String, String>,
    fingerprint: String,
    window: Window,
    /// `cost_spike`: the sums of past whole windows, newest last.
    baseline: VecDeque<f64>,
    /// The window (slot / SLOTS_PER_WINDOW) the baseline has closed up to.
    baseline_window: Option<u64>,
    /// `daily_budget_used`: spend and samples since the day began.
    day: u64,
    day_total: f64,
    day_samples: u64,
    phase: Phase,
    last_value: Option<f64>,
    /// The most urgent class notified in this episode, which the
    /// resolution repeats.
    peak_class: Option<IncidentClass>,
}

/// A group's value at one evaluation.
struct Observation {
    value: Option<f64>,
    samples: u64,
    examples: Vec<[u8; 16]>,
}

/// The moment rules are evaluated or fed at.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    /// Time since the connector began, which numbers the slots.
    pub elapsed: Duration,
    pub wall: OffsetDateTime,
    /// Days since the connector began, in the configured time zone.
    pub day: u64,
}

impl Rule {
    pub fn new(
        config: RuleConfig,
        runbook_url: Option<&str>,
        daily_budget_usd: Option<f64>,
        max_groups: usize,
        max_examples: usize,
        connector: &str,
    ) -> Rule {
        let mut filters: [Option<Vec<String>>; Label::COUNT] = Default::default();
        for (label, values) in config.filters {
            filters[label as usize] = Some(values.into_vec());
        }
        let runbook_url = config
            .runbook_url
            .or_else(|| runbook_url.map(str::to_string))
            .map(|url| url.replace("{rule}", &config.name));
        let dropped_samples = metrics::counter!(
            "lookout_threshold_groups_dropped_samples_total",
            "connector" => connector.to_string(),
            "rule" => config.name.clone(),
        );
        Rule {
            source: config.source,
            selector: config.spans.unwrap_or(config.metric.default_spans()),
            filters,
            group_by: config.group_by,
            slot_width: config.window / SLOTS_PER_WINDOW as u32,
            window: config.window,
            comparison: config.comparison,
            warning: config.warning,
            critical: config.critical,
            min_samples: config.min_samples,
            hold_for: config.hold_for,
            runbook_url,
            incident_classes: config.incident_class,
            baseline_windows: config.baseline_windows,
            daily_budget_usd: config.daily_budget_usd.or(daily_budget_usd),
            quota: config.quota,
            quota_unit: config.quota_unit,
            max_groups,
            max_examples,
            groups: HashMap::default(),
            dropped_samples,
            name: config.name,
            metric: config.metric,
        }
    }

    /// The slot that `now` falls in.
    pub fn slot(&self, now: &Now) -> u64 {
        (now.elapsed.as_nanos() / self.slot_width.as_nanos().max(1)) as u64
    }

    /// Feeds one span, if it is a sample of this rule.
    pub fn add(&mut self, span: &SpanView, slot: u64, day: u64) {
        if self.source != Source::Spans || !span.is(self.selector) {
            return;
        }
        if let Some(sample) = self.sample(span) {
            self.record(&span.labels, sample, slot, day);
        }
    }

    /// Feeds one histogram data point's calls, if this rule reads metrics.
    pub fn add_point(&mut self, point: &PointView, slot: u64, day: u64) {
        if self.source != Source::Metrics {
            return;
        }
        let calls = point.count as f64;
        let tokens = (point.sum, point.sum, Spread::One(point.sum));
        let (sum, max, spread) = match (self.metric, point.family) {
            (MetricKind::ErrorRate | MetricKind::RequestCount, Family::Duration) => {
                (calls, 1.0, Spread::One(1.0))
            }
            (MetricKind::ApiQuotaUsed, Family::Duration)
                if self.quota_unit == QuotaUnit::Requests =>
            {
                (calls, 1.0, Spread::One(1.0))
            }
            (MetricKind::LatencyAvg | MetricKind::LatencyP95, Family::Duration) => (
                point.sum * 1000.0,
                point.max.unwrap_or_default() * 1000.0,
                Spread::Buckets {
                    bounds: &point.bounds,
                    counts: &point.bucket_counts,
                    scale: 1000.0,
                },
            ),
            (MetricKind::TokensPerHour, Family::TokenUsage) => tokens,
            (MetricKind::ApiQuotaUsed, Family::TokenUsage)
                if self.quota_unit == QuotaUnit::Tokens =>
            {
                tokens
            }
            _ => return,
        };
        let sample = Sample {
            count: point.count,
            failed: if point.failed { point.count } else { 0 },
            sum,
            max,
            spread,
            notable: false,
            trace_id: &[],
        };
        self.record(&point.labels, sample, slot, day);
    }

    fn record(&mut self, labels: &Labels, sample: Sample, slot: u64, day: u64) {
        if !self.passes_filters(labels) {
            return;
        }
        let Some(key) = self.group_key(labels) else {
            return;
        };
        // One lookup per sample on the common path: the group exists.
        if let Some(group) = self.groups.get_mut(&key) {
            group.add(self.metric, self.baseline_windows, sample, slot, day);
            return;
        }
        if self.groups.len() >= self.max_groups {
            self.dropped_samples.increment(1);
            return;
        }
        let mut group = self.new_group(labels);
        group.add(self.metric, self.baseline_windows, sample, slot, day);
        self.groups.insert(key, group);
    }

    fn passes_filters(&self, labels: &Labels) -> bool {
        self.filters.iter().enumerate().all(|(index, allowed)| {
            allowed.as_ref().is_none_or(|values| {
                labels[index].is_some_and(|value| values.iter().any(|v| v == value))
            })
        })
    }

    /// The sample's value, or `None` when the span has nothing to measure.
    fn sample<'a>(&self, span: &SpanView<'a>) -> Option<Sample<'a>> {
        let value = match self.metric {
            MetricKind::ErrorRate | MetricKind::RequestCount => 1.0,
            MetricKind::LatencyAvg | MetricKind::LatencyP95 => span.duration_ms,
            MetricKind::CostPerHour | MetricKind::DailyBudgetUsed | MetricKind::CostSpike => {
                span.cost?
            }
            MetricKind::CostPerCall => span.trace_cost.or(span.cost)?,
            MetricKind::TokensPerHour => span.tokens?,
            MetricKind::ApiQuotaUsed => match self.quota_unit {
                QuotaUnit::Requests => 1.0,
                QuotaUnit::Tokens => span.tokens?,
            },
        };
        let notable = match self.metric {
            MetricKind::ErrorRate => span.failed,
            MetricKind::LatencyAvg | MetricKind::LatencyP95 | MetricKind::CostPerCall => self
                .warning
                .or(self.critical)
                .is_some_and(|t| self.comparison.holds(value, t)),
            _ => value > 0.0,
        };
        Some(Sample::one(value, span.failed, notable, span.trace_id))
    }

    /// A hash of the group's label values; `None` when one is missing.
    fn group_key(&self, labels: &Labels) -> Option<u64> {
        let mut hash = Fnv::default();
        for label in &self.group_by {
            hash.write(labels[*label as usize]?.as_bytes());
            hash.write(&[0xff]);
        }
        Some(hash.0)
    }

    fn new_group(&self, values: &Labels) -> Group {
        let labels: BTreeMap<String, String> = self
            .group_by
            .iter()
            .map(|label| {
                let value = values[*label as usize].unwrap_or_default();
                (label.as_str().to_string(), value.to_string())
            })
            .collect();
        let mut fingerprint = Fnv::default();
        fingerprint.write(self.name.as_bytes());
        for (key, value) in &labels {
            fingerprint.write(&[0xff]);
            fingerprint.write(key.as_bytes());
            fingerprint.write(&[0xfe]);
            fingerprint.write(value.as_bytes());
        }
        Group {
            labels,
            fingerprint: format!("{:016x}", fingerprint.0),
            window: Window::new(self.metric == MetricKind::LatencyP95, self.max_examples),
            baseline: VecDeque::new(),
            baseline_window: None,
            day: 0,
            day_total: 0.0,
            day_samples: 0,
            phase: Phase::Inactive,
            last_value: None,
            peak_class: None,
        }
    }

    /// Evaluates every group; returns the notifications due.
    pub fn evaluate(&mut self, now: &Now, timing: &Timing) -> Vec<Alert> {
        let slot = self.slot(now);
        let mut alerts = Vec::new();
        // Out of `self` while they step, so that the rule's settings can be
        // read beside each group; quiet groups are forgotten on the way.
        let mut groups = std::mem::take(&mut self.groups);
        groups.retain(|_, group| {
            if let Some(alert) = self.step(group, slot, now, timing) {
                alerts.push(alert);
            }
            !self.is_idle(group, slot)
        });
        self.groups = groups;
        alerts
    }

    /// Samples in the window now, summed over the groups.
    #[cfg(test)]
    pub fn summary_for_test(&self, now: &Now) -> u64 {
        let slot = self.slot(now);
        self.groups
            .values()
            .map(|g| g.window.summary(slot).count)
            .sum()
    }

    /// Observes one group, moves its lifecycle on, and returns the
    /// notification due, if any.
    fn step(&self, group: &mut Group, slot: u64, now: &Now, timing: &Timing) -> Option<Alert> {
        let observation = self.observe(group, slot, now.day);
        let level = observation.value.and_then(|value| self.level(value));
        if let Some(value) = observation.value {
            group.last_value = Some(value);
        }
        let notify = group
            .phase
            .step(level, self.hold_for, timing, now.instant, now.wall)?;
        let alert = self.alert(group, &observation, notify, now.wall);
        // P1 is the most urgent, and the smallest.
        let class = alert.incident_class;
        group.peak_class = match alert.status {
            AlertStatus::Firing => Some(group.peak_class.map_or(class, |peak| peak.min(class))),
            AlertStatus::Resolved => None,
        };
        Some(alert)
    }

    pub fn firing_count(&self) -> usize {
        self.groups.values().filter(|g| g.phase.is_firing()).count()
    }

    /// A quiet group is forgotten, unless its baseline or day total is
    /// still needed.
    fn is_idle(&self, group: &Group, slot: u64) -> bool {
        matches!(group.phase, Phase::Inactive)
            && group.window.is_empty_at(slot)
            && group.baseline.iter().all(|sum| *sum == 0.0)
            && group.day_total == 0.0
    }

    fn observe(&self, group: &mut Group, slot: u64, day: u64) -> Observation {
        if self.metric == MetricKind::CostSpike {
            group.close_baseline(slot, self.baseline_windows);
        }
        if self.metric == MetricKind::DailyBudgetUsed {
            group.roll_day(day);
        }
        let summary = group.window.summary(slot);
        let samples = if self.metric == MetricKind::DailyBudgetUsed {
            group.day_samples
        } else {
            summary.count
        };
        let per_hour = 3600.0 / self.window.as_secs_f64();
        let value = if samples < self.min_samples || samples == 0 {
            None
        } else {
            match self.metric {
                MetricKind::ErrorRate => Some(summary.failed as f64 / summary.count as f64),
                MetricKind::LatencyAvg => Some(summary.sum / summary.count as f64),
                MetricKind::LatencyP95 => summary.sketch.as_ref().and_then(|s| s.quantile(0.95)),
                MetricKind::CostPerHour | MetricKind::TokensPerHour => Some(summary.sum * per_hour),
                MetricKind::CostPerCall => Some(summary.max),
                MetricKind::DailyBudgetUsed => {
                    self.daily_budget_usd.map(|budget| group.day_total / budget)
                }
                MetricKind::CostSpike => group.spike_ratio(summary.sum, self.baseline_windows),
                MetricKind::ApiQuotaUsed => self.quota.map(|quota| summary.sum / quota),
                MetricKind::RequestCount => Some(summary.count as f64),
            }
        };
        Observation {
            value,
            samples,
            examples: summary.examples,
        }
    }

    fn level(&self, value: f64) -> Option<AlertSeverity> {
        let meets =
            |threshold: Option<f64>| threshold.is_some_and(|t| self.comparison.holds(value, t));
        if meets(self.critical) {
            Some(AlertSeverity::Critical)
        } else if meets(self.warning) {
            Some(AlertSeverity::Warning)
        } else {
            None
        }
    }

    fn threshold(&self, severity: AlertSeverity) -> f64 {
        let threshold = match severity {
            AlertSeverity::Critical => self.critical.or(self.warning),
            AlertSeverity::Warning => self.warning.or(self.critical),
        };
        threshold.unwrap_or_default()
    }

    /// The operational procedures' classes: by error rate (over 25% P1,
    /// 15–25% P2, 5–15% P3, under 5% P4), an exceeded quota is P2, and
    /// otherwise critical is P2 and warning P3, unless the rule says.
    fn incident_class(&self, severity: AlertSeverity, value: f64) -> IncidentClass {
        let configured = self.incident_classes.and_then(|c| match severity {
            AlertSeverity::Warning => c.warning,
            AlertSeverity::Critical => c.critical,
        });
        if let Some(class) = configured {
            return class;
        }
        match (self.metric, severity) {
            (MetricKind::ErrorRate, _) if value > 0.25 => IncidentClass::P1,
            (MetricKind::ErrorRate, _) if value >= 0.15 => IncidentClass::P2,
            (MetricKind::ErrorRate, _) if value >= 0.05 => IncidentClass::P3,
            (MetricKind::ErrorRate, _) => IncidentClass::P4,
            (_, AlertSeverity::Critical) => IncidentClass::P2,
            (_, AlertSeverity::Warning) => IncidentClass::P3,
        }
    }

    fn alert(
        &self,
        group: &Group,
        observation: &Observation,
        notify: Notify,
        wall: OffsetDateTime,
    ) -> Alert {
        let resolved = notify.reason == NotificationReason::Resolved;
        let observed = observation.value.or(group.last_value).unwrap_or_default();
        let threshold = self.threshold(notify.severity);
        let window = humantime::format_duration(self.window).to_string();
        let summary = if resolved {
            match observation.value {
                Some(value) => format!(
                    "{} is back to {} over {window}",
                    self.metric.as_str(),
                    self.format_value(value)
                ),
                None => format!(
                    "{}: too few samples in the last {window} ({} of {})",
                    self.metric.as_str(),
                    observation.samples,
                    self.min_samples
                ),
            }
        } else {
            format!(
                "{} is {} ({} {} {}) over {window}, {} samples",
                self.metric.as_str(),
                self.format_value(observed),
                notify.severity,
                self.comparison.as_str(),
                self.format_value(threshold),
                observation.samples
            )
        };
        Alert {
            status: if resolved {
                AlertStatus::Resolved
            } else {
                AlertStatus::Firing
            },
            reason: notify.reason,
            rule: self.name.clone(),
            metric: self.metric.as_str().to_string(),
            severity: notify.severity,
            routes: notify.routes,
            incident_class: match (resolved, group.peak_class) {
                (true, Some(class)) => class,
                _ => self.incident_class(notify.severity, observed),
            },
            group_labels: group.labels.clone(),
            summary,
            observed,
            threshold,
            observed_text: self.format_value(observed),
            threshold_text: self.format_value(threshold),
            comparison: self.comparison.as_str().to_string(),
            window,
            runbook_url: self.runbook_url.clone(),
            example_trace_ids: observation.examples.iter().map(hex).collect(),
            fingerprint: group.fingerprint.clone(),
            starts_at: notify.starts_at,
            ends_at: resolved.then_some(wall),
            receivers: Vec::new(),
        }
    }

    fn format_value(&self, value: f64) -> String {
        match self.metric {
            MetricKind::ErrorRate | MetricKind::DailyBudgetUsed | MetricKind::ApiQuotaUsed => {
                format!("{:.1}%", value * 100.0)
            }
            MetricKind::LatencyAvg | MetricKind::LatencyP95 => format!("{value:.0} ms"),
            MetricKind::CostPerHour => format!("${value:.2}/h"),
            MetricKind::CostPerCall => format!("${value:.4}"),
            MetricKind::TokensPerHour => format!("{value:.0} tokens/h"),
            MetricKind::CostSpike => format!("{value:.2}x the baseline"),
            MetricKind::RequestCount => format!("{value:.0}"),
        }
    }
}

impl Group {
    fn add(
        &mut self,
        metric: MetricKind,
        baseline_windows: usize,
        sample: Sample,
        slot: u64,
        day: u64,
    ) {
        if metric == MetricKind::CostSpike {
            self.close_baseline(slot, baseline_windows);
        }
        if metric == MetricKind::DailyBudgetUsed {
            self.roll_day(day);
            self.day_total += sample.sum;
            self.day_samples += sample.count;
        }
        self.window.add(slot, sample);
    }

    /// Pushes the sums of the whole windows that ended before `slot`'s
    /// window into the baseline. Called before `slot` is written, so the
    /// previous window's slots are still in the ring.
    fn close_baseline(&mut self, slot: u64, keep: usize) {
        let current = slot / SLOTS_PER_WINDOW;
        let Some(mut closed) = self.baseline_window else {
            self.baseline_window = Some(current);
            return;
        };
        // After a long silence, only the last `keep` windows matter.
        if current > closed + keep as u64 + 1 {
            closed = current - keep as u64 - 1;
        }
        while closed < current {
            let sum = self.window.sum_of_window_from(closed * SLOTS_PER_WINDOW);
            self.baseline.push_back(sum);
            if self.baseline.len() > keep {
                self.baseline.pop_front();
            }
            closed += 1;
        }
        self.baseline_window = Some(current);
    }

    /// The current window over the baseline's mean, once the baseline
    /// holds a third of its windows (at least one) and is not zero.
    fn spike_ratio(&self, current: f64, keep: usize) -> Option<f64> {
        let needed = keep.div_ceil(3).max(1);
        if self.baseline.len() < needed {
            return None;
        }
        let mean = self.baseline.iter().sum::<f64>() / self.baseline.len() as f64;
        (mean > 0.0).then(|| current / mean)
    }

    fn roll_day(&mut self, day: u64) {
        if self.day != day {
            self.day = day;
            self.day_total = 0.0;
            self.day_samples = 0;
        }
    }
}

fn hex(id: &[u8; 16]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

/// The groups' keys are FNV hashes already: hashing them again per span
/// would be wasted work.
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 << 8) | u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// FNV-1a: stable across builds and platforms, so fingerprints survive
/// restarts and upgrades; the standard hasher promises neither.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
