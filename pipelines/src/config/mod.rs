//! The YAML config, read as the collector reads its own: `receivers`,
//! `processors` and `exporters` keyed by `type[/name]`, and `service` with
//! `pipelines` keyed by `signal[/name]` and `telemetry`.
//!
//! Loading never stops at the first problem: every section, component and
//! pipeline is checked on its own, and each problem is reported with its
//! YAML path and line, so that `lookout validate` lists them all.

mod env;
mod source_map;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml::Value;

use crate::component::{
    BuildError, ComponentId, ComponentKind, Components, ConnectorContext, Exporter, Processor,
    Receiver, parse_config,
};
use crate::exporter_helper::ExporterHelperConfig;
use crate::payload::Signal;
use crate::telemetry::logging::LogsConfig;
pub use source_map::SourceMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in a config file.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub severity: Severity,
    /// The YAML path, as `receivers.otlp.protocols.http.endpoint`.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{severity}: ")?;
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Collects diagnostics and resolves their lines.
struct Report<'a> {
    source_map: &'a SourceMap,
    diagnostics: Vec<Diagnostic>,
}

impl Report<'_> {
    fn push(&mut self, severity: Severity, path: Vec<String>, message: impl Into<String>) {
        self.diagnostics.push(Diagnostic {
            severity,
            line: self.source_map.line(&path),
            path: source_map::join(&path),
            message: message.into(),
        });
    }

    fn error(&mut self, path: Vec<String>, message: impl Into<String>) {
        self.push(Severity::Error, path, message);
    }

    fn warning(&mut self, path: Vec<String>, message: impl Into<String>) {
        self.push(Severity::Warning, path, message);
    }

    fn build_error(&mut self, prefix: &[&str], err: BuildError) {
        let mut path: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
        path.extend(err.path);
        self.error(path, err.message);
    }

    fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// `traces`, `metrics/llm`: a signal and an optional name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PipelineId {
    pub signal: Signal,
    pub name: Option<String>,
}

impl PipelineId {
    pub fn parse(text: &str) -> Result<PipelineId, String> {
        let (signal, name) = match text.split_once('/') {
            Some((signal, name)) => (signal, Some(name.to_string())),
            None => (text, None),
        };
        let signal = Signal::parse(signal).ok_or_else(|| {
            format!(
                "unknown signal `{signal}` in pipeline `{text}`: expected traces, metrics, logs or alerts"
            )
        })?;
        Ok(PipelineId { signal, name })
    }
}

impl fmt::Display for PipelineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.signal, name),
            None => write!(f, "{}", self.signal),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PipelineSection {
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    exporters: Vec<String>,
}

/// `service.telemetry.metrics`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsTelemetryConfig {
    /// Where `/metrics`, `/health` and `/health/ready` are served.
    pub endpoint: String,
}

impl Default for MetricsTelemetryConfig {
    fn default() -> Self {
        MetricsTelemetryConfig {
            endpoint: "0.0.0.0:8888".to_string(),
        }
    }
}

/// `service.telemetry`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    pub logs: LogsConfig,
    pub metrics: MetricsTelemetryConfig,
}

fn default_shutdown_timeout() -> Duration {
    Duration::from_secs(30)
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceSection {
    pipelines: IndexMap<String, Value>,
    #[serde(default)]
    telemetry: TelemetryConfig,
    /// How long SIGTERM may take to drain queues and flush exporters.
    #[serde(default = "default_shutdown_timeout", with = "humantime_serde")]
    shutdown_timeout: Duration,
    /// Receivers refuse data while the resident memory is above this less
    /// `memory_spike_limit_mib`.
    #[serde(default)]
    memory_limit_mib: Option<u64>,
    /// Headroom for requests in flight when the limit trips; 20% of the
    /// limit by default.
    #[serde(default)]
    memory_spike_limit_mib: Option<u64>,
}

/// A pipeline with its components built.
pub struct PipelinePlan {
    pub id: PipelineId,
    pub receivers: Vec<ComponentId>,
    /// One instance per pipeline, in order.
    pub processors: Vec<(ComponentId, Box<dyn Processor>)>,
    pub exporters: Vec<ComponentId>,
}

/// An exporter built, with the helper settings taken from its config.
pub struct ExporterPlan {
    pub id: ComponentId,
    pub exporter: Box<dyn Exporter>,
    pub helper: ExporterHelperConfig,
}

/// A config that passed every check, with every used component built.
pub struct Plan {
    pub receivers: Vec<(ComponentId, Box<dyn Receiver>)>,
    pub exporters: Vec<ExporterPlan>,
    pub pipelines: Vec<PipelinePlan>,
    pub telemetry: TelemetryConfig,
    pub shutdown_timeout: Duration,
    /// `(limit, spike)` in MiB, when memory is limited.
    pub memory_limit_mib: Option<(u64, u64)>,
}

/// The outcome of loading: a plan when there was no error, and every
/// diagnostic (warnings included) either way.
pub struct Loaded {
    pub plan: Option<Plan>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn load_file(path: &Path, components: &Components) -> Loaded {
    match std::fs::read_to_string(path) {
        Ok(source) => load_str(&source, components, &|name| std::env::var(name).ok()),
        Err(err) => Loaded {
            plan: None,
            diagnostics: vec![Diagnostic {
                severity: Severity::Error,
                path: String::new(),
                line: None,
                message: format!("cannot read config file {}: {err}", path.display()),
            }],
        },
    }
}

pub fn load_str(
    source: &str,
    components: &Components,
    env: &dyn Fn(&str) -> Option<String>,
) -> Loaded {
    let source_map = SourceMap::parse(source);
    let mut report = Report {
        source_map: &source_map,
        diagnostics: Vec::new(),
    };
    let plan = resolve(source, components, env, &mut report);
    let plan = if report.has_errors() { None } else { plan };
    let mut diagnostics = report.diagnostics;
    // A processor used by several pipelines is built, and reported, once each.
    let mut seen = std::collections::HashSet::new();
    diagnostics.retain(|d| seen.insert((d.path.clone(), d.message.clone())));
    diagnostics.sort_by_key(|d| d.line.unwrap_or(0));
    Loaded { plan, diagnostics }
}

const TOP_LEVEL_KEYS: [&str; 5] = [
    "receivers",
    "processors",
    "exporters",
    "connectors",
    "service",
];

fn resolve(
    source: &str,
    components: &Components,
    env: &dyn Fn(&str) -> Option<String>,
    report: &mut Report,
) -> Option<Plan> {
    let mut document: Value = match serde_yaml::from_str(source) {
        Ok(document) => document,
        Err(err) => {
            let line = err.location().map(|l| l.line());
            report.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                path: String::new(),
                line,
                message: format!("invalid YAML: {err}"),
            });
            return None;
        }
    };
    for issue in env::expand(&mut document, env) {
        let severity = if issue.is_error {
            Severity::Error
        } else {
            Severity::Warning
        };
        report.push(severity, issue.path, issue.message);
    }
    let Value::Mapping(mut top) = document else {
        report.error(
            vec![],
            "the config must be a mapping with `receivers`, `exporters` and `service`",
        );
        return None;
    };
    for key in top.keys() {
        let key = env::key_text(key);
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            let hint = match key.as_str() {
                "extensions" => format!("`{key}` are not supported yet"),
                _ => format!("unknown top-level key `{key}`; expected one of {TOP_LEVEL_KEYS:?}"),
            };
            report.error(vec![key], hint);
        }
    }
    let mut unknown_types = HashSet::new();
    let mut declare = |kind: ComponentKind, report: &mut Report| {
        let raw = top.remove(kind.section()).unwrap_or(Value::Null);
        component_section(kind, raw, components, &mut unknown_types, report)
    };
    let receivers = declare(ComponentKind::Receiver, report);
    let processors = declare(ComponentKind::Processor, report);
    let exporters = declare(ComponentKind::Exporter, report);
    let connectors = declare(ComponentKind::Connector, report);
    let service = top.remove("service").unwrap_or(Value::Null);
    if service.is_null() {
        report.error(
            vec!["service".into()],
            "missing `service:` with at least one pipeline",
        );
        return None;
    }
    let service: ServiceSection = match parse_config(service) {
        Ok(service) => service,
        Err(err) => {
            report.build_error(&["service"], err);
            return None;
        }
    };
    if service.memory_limit_mib == Some(0) {
        report.error(
            vec!["service".into(), "memory_limit_mib".into()],
            "must be above zero; leave it out for no limit",
        );
    }
    if let (Some(spike), limit) = (service.memory_spike_limit_mib, service.memory_limit_mib)
        && limit.is_none_or(|limit| spike >= limit)
    {
        report.error(
            vec!["service".into(), "memory_spike_limit_mib".into()],
            "needs memory_limit_mib, and must be below it",
        );
    }
    if service.pipelines.is_empty() {
        report.error(
            vec!["service".into(), "pipelines".into()],
            "no pipeline is defined",
        );
    }
    let definitions = Definitions {
        unknown_types,
        receivers,
        processors,
        exporters,
        connectors,
        components,
    };
    definitions.check_connector_ids(report);
    let pipelines = service
        .pipelines
        .into_iter()
        .filter_map(|(key, raw)| resolve_pipeline(&key, raw, &definitions, report))
        .collect::<Vec<_>>();
    let used = definitions.build_used(&pipelines, report);
    Some(Plan {
        receivers: used.receivers,
        exporters: used.exporters,
        pipelines,
        telemetry: service.telemetry,
        shutdown_timeout: service.shutdown_timeout,
        memory_limit_mib: service
            .memory_limit_mib
            .map(|limit| (limit, service.memory_spike_limit_mib.unwrap_or(limit / 5))),
    })
}

/// Components declared in one section, keyed by id, with their raw config.
type Declared = IndexMap<ComponentId, Value>;

fn component_section(
    kind: ComponentKind,
    section: Value,
    components: &Components,
    unknown_types: &mut HashSet<(ComponentKind, ComponentId)>,
    report: &mut Report,
) -> Declared {
    let mut declared = Declared::new();
    let section_name = kind.section().to_string();
    let map = match section {
        Value::Null => return declared,
        Value::Mapping(map) => map,
        _ => {
            report.error(
                vec![section_name],
                "expected a mapping of component ids to their config",
            );
            return declared;
        }
    };
    for (key, raw) in map {
        let key = env::key_text(&key);
        let path = vec![section_name.clone(), key.clone()];
        let id = match ComponentId::parse(&key) {
            Ok(id) => id,
            Err(message) => {
                report.error(path, message);
                continue;
            }
        };
        if components.signals(kind, id.kind()).is_none() {
            report.error(
                path,
                format!(
                    "unknown {} type `{}`; known types: {}",
                    kind.as_str(),
                    id.kind(),
                    components.kinds(kind).join(", ")
                ),
            );
            unknown_types.insert((kind, id));
            continue;
        }
        declared.insert(id, raw);
    }
    declared
}

struct Definitions<'a> {
    unknown_types: HashSet<(ComponentKind, ComponentId)>,
    receivers: Declared,
    processors: Declared,
    exporters: Declared,
    connectors: Declared,
    components: &'a Components,
}

impl Definitions<'_> {
    fn declared(&self, kind: ComponentKind) -> &Declared {
        match kind {
            ComponentKind::Receiver => &self.receivers,
            ComponentKind::Processor => &self.processors,
            ComponentKind::Exporter => &self.exporters,
            ComponentKind::Connector => &self.connectors,
        }
    }

    /// A connector is listed as a receiver or an exporter by its id, so
    /// that id must not also name a receiver or an exporter.
    fn check_connector_ids(&self, report: &mut Report) {
        for id in self.connectors.keys() {
            if self.receivers.contains_key(id) || self.exporters.contains_key(id) {
                report.error(
                    vec!["connectors".into(), id.to_string()],
                    format!("`{id}` is also declared as a receiver or an exporter; rename one"),
                );
            }
        }
    }

    /// The signals a connector can take at this end of a pipeline: what it
    /// consumes when listed as an exporter, what it emits as a receiver.
    fn connector_signals(&self, kind: ComponentKind, id: &ComponentId) -> Option<&[Signal]> {
        if !self.connectors.contains_key(id) {
            return None;
        }
        let factory = self.components.connector(id.kind())?;
        match kind {
            ComponentKind::Receiver => Some(factory.emits),
            ComponentKind::Exporter => Some(factory.consumes),
            _ => None,
        }
    }

    /// Resolves one reference from a pipeline's list: it must be declared
    /// and support the pipeline's signal.
    fn reference(
        &self,
        kind: ComponentKind,
        text: &str,
        signal: Signal,
        path: Vec<String>,
        report: &mut Report,
    ) -> Option<ComponentId> {
        let id = match ComponentId::parse(text) {
            Ok(id) => id,
            Err(message) => {
                report.error(path, message);
                return None;
            }
        };
        if let Some(signals) = self.connector_signals(kind, &id) {
            if !signals.contains(&signal) {
                let end = if kind == ComponentKind::Receiver {
                    "emit"
                } else {
                    "consume"
                };
                report.error(path, format!("connector `{id}` does not {end} {signal}"));
                return None;
            }
            return Some(id);
        }
        if !self.declared(kind).contains_key(&id) {
            // One declared with an unknown type was reported where it is declared.
            if !self.unknown_types.contains(&(kind, id.clone()))
                && !self
                    .unknown_types
                    .contains(&(ComponentKind::Connector, id.clone()))
            {
                report.error(
                    path,
                    format!(
                        "{} `{id}` is used but not defined under `{}:`",
                        kind.as_str(),
                        kind.section()
                    ),
                );
            }
            return None;
        }
        let signals = self.components.signals(kind, id.kind()).unwrap_or_default();
        if !signals.contains(&signal) {
            report.error(
                path,
                format!("{} `{id}` does not support {signal}", kind.as_str()),
            );
            return None;
        }
        Some(id)
    }

    /// Builds every used receiver and exporter once, and warns about the
    /// declared ones that no pipeline uses.
    fn build_used(&self, pipelines: &[PipelinePlan], report: &mut Report) -> UsedComponents {
        let used = |kind: ComponentKind, id: &ComponentId| {
            pipelines.iter().any(|p| match kind {
                ComponentKind::Receiver => p.receivers.contains(id),
                ComponentKind::Processor => p.processors.iter().any(|(pid, _)| pid == id),
                ComponentKind::Exporter => p.exporters.contains(id),
                ComponentKind::Connector => p.receivers.contains(id) || p.exporters.contains(id),
            })
        };
        for kind in [
            ComponentKind::Receiver,
            ComponentKind::Processor,
            ComponentKind::Exporter,
            ComponentKind::Connector,
        ] {
            for id in self.declared(kind).keys() {
                if !used(kind, id) {
                    report.warning(
                        vec![kind.section().to_string(), id.to_string()],
                        format!(
                            "{} `{id}` is defined but not used in any pipeline",
                            kind.as_str()
                        ),
                    );
                }
            }
        }
        let mut receivers = Vec::new();
        for (id, raw) in &self.receivers {
            if !used(ComponentKind::Receiver, id) {
                continue;
            }
            let Some(factory) = self.components.receiver(id.kind()) else {
                continue;
            };
            match (factory.build)(id, raw.clone()) {
                Ok(receiver) => receivers.push((id.clone(), receiver)),
                Err(err) => report.build_error(&["receivers", &id.to_string()], err),
            }
        }
        let mut exporters = Vec::new();
        for (id, raw) in &self.exporters {
            if !used(ComponentKind::Exporter, id) {
                continue;
            }
            let Some(factory) = self.components.exporter(id.kind()) else {
                continue;
            };
            let prefix = ["exporters", &id.to_string()];
            let (helper, own) = match ExporterHelperConfig::split_from(raw.clone()) {
                Ok(split) => split,
                Err(err) => {
                    report.build_error(&prefix, err);
                    continue;
                }
            };
            match (factory.build)(id, own, &helper) {
                Ok(exporter) => exporters.push(ExporterPlan {
                    id: id.clone(),
                    exporter,
                    helper,
                }),
                Err(err) => report.build_error(&prefix, err),
            }
        }
        self.build_connectors(pipelines, report, &mut receivers, &mut exporters);
        UsedComponents {
            receivers,
            exporters,
        }
    }

    /// Builds every connector that both ends and starts a pipeline: its
    /// receiver end joins the receivers, its exporter end the exporters.
    fn build_connectors(
        &self,
        pipelines: &[PipelinePlan],
        report: &mut Report,
        receivers: &mut Vec<(ComponentId, Box<dyn Receiver>)>,
        exporters: &mut Vec<ExporterPlan>,
    ) {
        for (id, raw) in &self.connectors {
            let as_exporter = pipelines.iter().any(|p| p.exporters.contains(id));
            let as_receiver = pipelines.iter().any(|p| p.receivers.contains(id));
            let path = vec!["connectors".to_string(), id.to_string()];
            match (as_exporter, as_receiver) {
                (false, false) => continue,
                (true, false) => {
                    report.error(path, format!("connector `{id}` ends a pipeline, but no pipeline lists it under `receivers`"));
                    continue;
                }
                (false, true) => {
                    report.error(path, format!("connector `{id}` starts a pipeline, but no pipeline lists it under `exporters`"));
                    continue;
                }
                (true, true) => {}
            }
            let Some(factory) = self.components.connector(id.kind()) else {
                continue;
            };
            let prefix = ["connectors", &id.to_string()];
            let (helper, own) = match ExporterHelperConfig::split_from(raw.clone()) {
                Ok(split) => split,
                Err(err) => {
                    report.build_error(&prefix, err);
                    continue;
                }
            };
            let context = ConnectorContext {
                downstream_exporters: pipelines
                    .iter()
                    .filter(|p| p.receivers.contains(id))
                    .flat_map(|p| p.exporters.iter().cloned())
                    .collect(),
            };
            match (factory.build)(id, own, &context) {
                Ok(connector) => {
                    receivers.push((id.clone(), connector.receiver));
                    exporters.push(ExporterPlan {
                        id: id.clone(),
                        exporter: connector.exporter,
                        helper,
                    });
                }
                Err(err) => report.build_error(&prefix, err),
            }
        }
    }
}

/// The receivers and exporters that some pipeline uses, built.
struct UsedComponents {
    receivers: Vec<(ComponentId, Box<dyn Receiver>)>,
    exporters: Vec<ExporterPlan>,
}

fn resolve_pipeline(
    key: &str,
    raw: Value,
    definitions: &Definitions,
    report: &mut Report,
) -> Option<PipelinePlan> {
    let base = vec![
        "service".to_string(),
        "pipelines".to_string(),
        key.to_string(),
    ];
    let id = match PipelineId::parse(key) {
        Ok(id) => id,
        Err(message) => {
            report.error(base, message);
            return None;
        }
    };
    let section: PipelineSection = match parse_config(raw) {
        Ok(section) => section,
        Err(err) => {
            report.build_error(&["service", "pipelines", key], err);
            return None;
        }
    };
    let mut references = |kind: ComponentKind, list: &[String]| {
        let mut resolved: Vec<ComponentId> = Vec::new();
        for (index, text) in list.iter().enumerate() {
            let mut path = base.clone();
            path.push(kind.section().to_string());
            path.push(format!("[{index}]"));
            if let Some(id) = definitions.reference(kind, text, id.signal, path.clone(), report) {
                if resolved.contains(&id) {
                    report.error(path, format!("{} `{id}` is listed twice", kind.as_str()));
                } else {
                    resolved.push(id);
                }
            }
        }
        resolved
    };
    let receivers = references(ComponentKind::Receiver, &section.receivers);
    let processor_ids = references(ComponentKind::Processor, &section.processors);
    let exporters = references(ComponentKind::Exporter, &section.exporters);
    if section.receivers.is_empty() {
        report.error(base.clone(), "a pipeline needs at least one receiver");
    }
    if section.exporters.is_empty() {
        report.error(base.clone(), "a pipeline needs at least one exporter");
    }
    let mut processors = Vec::new();
    for pid in processor_ids {
        let Some(factory) = definitions.components.processor(pid.kind()) else {
            continue;
        };
        let raw = definitions
            .processors
            .get(&pid)
            .cloned()
            .unwrap_or(Value::Null);
        match (factory.build)(&pid, raw, id.signal) {
            Ok(processor) => processors.push((pid, processor)),
            // Reported once per pipeline that uses it: the config is shared,
            // but the message names the processor's own section.
            Err(err) => report.build_error(&["processors", &pid.to_string()], err),
        }
    }
    Some(PipelinePlan {
        id,
        receivers,
        processors,
        exporters,
    })
}

#[cfg(test)]
mod tests;
