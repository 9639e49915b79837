//! What a component is: an id, a factory that builds it from its config
//! without doing any I/O, and a trait per kind that the topology drives.
//!
//! Factories are plain values so that the binary decides which components
//! exist (as the collector's `components.go` does) and `lookout validate`
//! can build every component to check its config without starting anything.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::payload::{Payload, Signal};
use crate::stage_channel::Consumers;
use crate::telemetry::health::HealthReporter;

/// `type` or `type/name`, as in the collector.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ComponentId {
    kind: String,
    name: Option<String>,
}

impl ComponentId {
    pub fn parse(text: &str) -> Result<ComponentId, String> {
        let (kind, name) = match text.split_once('/') {
            Some((kind, name)) => (kind, Some(name)),
            None => (text, None),
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        };
        if !valid(kind) {
            return Err(format!(
                "invalid component id `{text}`: the type must be non-empty letters, digits, `_`, `-` or `.`"
            ));
        }
        if let Some(name) = name
            && (name.is_empty() || name.contains('/'))
        {
            return Err(format!(
                "invalid component id `{text}`: expected `type` or `type/name`"
            ));
        }
        Ok(ComponentId {
            kind: kind.to_string(),
            name: name.map(str::to_string),
        })
    }

    /// The component type, such as `otlp` in `otlp/gateway`.
    pub fn kind(&self) -> &str {
        &self.kind
    }
}

impl fmt::Display for ComponentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{}/{}", self.kind, name),
            None => f.write_str(&self.kind),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentKind {
    Receiver,
    Processor,
    Exporter,
    Connector,
}

impl ComponentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Receiver => "receiver",
            ComponentKind::Processor => "processor",
            ComponentKind::Exporter => "exporter",
            ComponentKind::Connector => "connector",
        }
    }

    /// The top-level config section that declares components of this kind.
    pub fn section(self) -> &'static str {
        match self {
            ComponentKind::Receiver => "receivers",
            ComponentKind::Processor => "processors",
            ComponentKind::Exporter => "exporters",
            ComponentKind::Connector => "connectors",
        }
    }
}

/// A component's config did not deserialize or does not make sense.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    /// Where in the component's config the problem is, as `a.b[2].c`; empty
    /// when it concerns the whole component.
    pub path: Vec<String>,
    pub message: String,
}

impl BuildError {
    pub fn new(message: impl Into<String>) -> BuildError {
        BuildError {
            path: Vec::new(),
            message: message.into(),
        }
    }

    pub fn at(path: &[&str], message: impl Into<String>) -> BuildError {
        BuildError {
            path: path.iter().map(|s| s.to_string()).collect(),
            message: message.into(),
        }
    }
}

/// Deserializes a component's config, keeping the path of the first error
/// so that it can be reported with its YAML line. A missing config (`otlp:`
/// with nothing under it) means all defaults.
pub fn parse_config<T: DeserializeOwned>(raw: serde_yaml::Value) -> Result<T, BuildError> {
    let raw = match raw {
        serde_yaml::Value::Null => serde_yaml::Value::Mapping(Default::default()),
        other => other,
    };
    serde_path_to_error::deserialize(raw).map_err(|err| {
        let mut path: Vec<String> = err
            .path()
            .iter()
            .filter_map(|segment| match segment {
                serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                serde_path_to_error::Segment::Enum { variant } => Some(variant.clone()),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let message = err.into_inner().to_string();
        if let Some(field) = unknown_field_name(&message)
            && path.last().map(String::as_str) != Some(field)
        {
            path.push(field.to_string());
        }
        BuildError { path, message }
    })
}

/// Splits `keys` out of a component's raw config: the first value holds
/// them, the second the rest. Shared settings (the exporter helper's, the
/// alert routing) are taken this way before the component's own struct,
/// with its `deny_unknown_fields`, sees the remainder.
pub fn split_keys(
    raw: serde_yaml::Value,
    keys: &[&str],
) -> Result<(serde_yaml::Value, serde_yaml::Value), BuildError> {
    let mut own = match raw {
        serde_yaml::Value::Null => serde_yaml::Mapping::new(),
        serde_yaml::Value::Mapping(map) => map,
        _ => return Err(BuildError::new("expected a mapping")),
    };
    let mut taken = serde_yaml::Mapping::new();
    for key in keys {
        if let Some(value) = own.remove(*key) {
            taken.insert(serde_yaml::Value::String(key.to_string()), value);
        }
    }
    Ok((
        serde_yaml::Value::Mapping(taken),
        serde_yaml::Value::Mapping(own),
    ))
}

/// serde reports an unknown field at the path of the struct that holds it;
/// the field itself is only named in the message.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.split('`').next()
}

pub type ServeFuture = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;

/// Everything a receiver needs to run.
pub struct ReceiverContext {
    pub id: ComponentId,
    /// One consumer per signal that some pipeline takes from this receiver.
    pub consumers: Consumers,
    /// Cancelled when the daemon stops accepting data.
    pub shutdown: CancellationToken,
    pub health: HealthReporter,
}

/// A source of data, such as the OTLP receiver.
#[async_trait]
pub trait Receiver: Send {
    /// Binds listeners, so that a port in use fails the start, and returns
    /// the future that serves until `ctx.shutdown` is cancelled and every
    /// request in flight is answered.
    async fn start(self: Box<Self>, ctx: ReceiverContext) -> anyhow::Result<ServeFuture>;
}

/// A stage that transforms payloads. Processors are synchronous: the stage
/// task that drives them owns the channels, timers and metrics, so a
/// processor is plain logic that can be tested without a runtime.
pub trait Processor: Send + 'static {
    /// Takes one payload and pushes zero or more payloads to `out`.
    fn process(&mut self, payload: Payload, out: &mut Vec<Payload>);

    /// When the processor next wants `on_deadline` called, if ever.
    fn next_deadline(&self) -> Option<Instant> {
        None
    }

    fn on_deadline(&mut self, _now: Instant, _out: &mut Vec<Payload>) {}

    /// The input has closed: push whatever is held.
    fn flush(&mut self, _out: &mut Vec<Payload>) {}
}

/// Why an export attempt failed, which decides whether it is retried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ExportError {
    /// Worth retrying: a timeout, a 5xx, a 429. `retry_after` is the
    /// server's own hint, which the retry loop honours.
    #[error("{reason}")]
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: a 400, an authentication failure.
    #[error("{reason}")]
    Permanent { reason: String },
}

impl ExportError {
    pub fn transient(reason: impl Into<String>) -> ExportError {
        ExportError::Transient {
            reason: reason.into(),
            retry_after: None,
        }
    }

    pub fn permanent(reason: impl Into<String>) -> ExportError {
        ExportError::Permanent {
            reason: reason.into(),
        }
    }
}

/// A destination. The exporter helper owns the queue, retries and timeouts;
/// an exporter only knows how to send one payload once.
#[async_trait]
pub trait Exporter: Send + Sync + 'static {
    /// Opens files or connections. Called once before any export.
    async fn start(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// Sends one payload. It may be called again with the same payload after
    /// a transient error, and concurrently from several queue consumers.
    async fn export(&self, payload: &Payload) -> Result<(), ExportError>;

    /// Flushes and closes. Called once after the last export.
    async fn shutdown(&self) -> anyhow::Result<()> {
        Ok(())
    }

    /// A JSON status page served on the telemetry endpoint at
    /// `/api/<name>`, with the page's name. Called per request.
    fn status(&self) -> Option<(&'static str, serde_json::Value)> {
        None
    }
}

type BuildFn<T> = fn(&ComponentId, serde_yaml::Value) -> Result<T, BuildError>;

/// Processors are built per pipeline, so they learn its signal.
type ProcessorBuildFn =
    fn(&ComponentId, serde_yaml::Value, Signal) -> Result<Box<dyn Processor>, BuildError>;

/// Builds receivers of one type.
pub struct ReceiverFactory {
    pub kind: &'static str,
    pub signals: &'static [Signal],
    pub build: BuildFn<Box<dyn Receiver>>,
}

/// Builds processors of one type. A pipeline gets its own instance, so the
/// factory runs once per pipeline that lists the processor.
pub struct ProcessorFactory {
    pub kind: &'static str,
    pub signals: &'static [Signal],
    pub build: ProcessorBuildFn,
}

/// Exporters are built after the helper has taken its keys out of their
/// config; an exporter that sends through its own batching (as `langsmith`
/// does) reads the helper's timeout and retry settings from the second
/// argument.
type ExporterBuildFn = fn(
    &ComponentId,
    serde_yaml::Value,
    &crate::exporter_helper::ExporterHelperConfig,
) -> Result<Box<dyn Exporter>, BuildError>;

/// Builds exporters of one type. The keys `sending_queue`, `retry_on_failure`
/// and `timeout` are taken by the exporter helper before `build` sees the
/// config.
pub struct ExporterFactory {
    pub kind: &'static str,
    pub signals: &'static [Signal],
    pub build: ExporterBuildFn,
}

/// Both ends of a connector, as in the collector: an exporter at the end
/// of the pipelines that list it under `exporters`, and a receiver at the
/// start of those that list it under `receivers`. Both share whatever state
/// the connector keeps between them.
pub struct Connector {
    pub exporter: Box<dyn Exporter>,
    pub receiver: Box<dyn Receiver>,
}

/// Builds connectors of one type. The exporter end gets the exporter
/// helper like any exporter, so `sending_queue` and `timeout` apply.
pub struct ConnectorFactory {
    pub kind: &'static str,
    /// The signals of the pipelines it ends.
    pub consumes: &'static [Signal],
    /// The signals of the pipelines it starts.
    pub emits: &'static [Signal],
    pub build: ConnectorBuildFn,
}

/// What a connector may check its config against: the exporters of the
/// pipelines it starts (a `routes` list naming one that is not there is a
/// config error, not silence at run time).
#[derive(Debug, Clone, Default)]
pub struct ConnectorContext {
    pub downstream_exporters: Vec<ComponentId>,
}

type ConnectorBuildFn =
    fn(&ComponentId, serde_yaml::Value, &ConnectorContext) -> Result<Connector, BuildError>;

/// Every component type the binary knows.
#[derive(Default)]
pub struct Components {
    pub receivers: Vec<ReceiverFactory>,
    pub processors: Vec<ProcessorFactory>,
    pub exporters: Vec<ExporterFactory>,
    pub connectors: Vec<ConnectorFactory>,
}

impl Components {
    pub fn receiver(&self, kind: &str) -> Option<&ReceiverFactory> {
        self.receivers.iter().find(|f| f.kind == kind)
    }

    pub fn processor(&self, kind: &str) -> Option<&ProcessorFactory> {
        self.processors.iter().find(|f| f.kind == kind)
    }

    pub fn exporter(&self, kind: &str) -> Option<&ExporterFactory> {
        self.exporters.iter().find(|f| f.kind == kind)
    }

    pub fn connector(&self, kind: &str) -> Option<&ConnectorFactory> {
        self.connectors.iter().find(|f| f.kind == kind)
    }

    pub fn kinds(&self, kind: ComponentKind) -> Vec<&'static str> {
        match kind {
            ComponentKind::Receiver => self.receivers.iter().map(|f| f.kind).collect(),
            ComponentKind::Processor => self.processors.iter().map(|f| f.kind).collect(),
            ComponentKind::Exporter => self.exporters.iter().map(|f| f.kind).collect(),
            ComponentKind::Connector => self.connectors.iter().map(|f| f.kind).collect(),
        }
    }

    /// The signals a component type takes in; for a connector, the
    /// signals of the pipelines it ends.
    pub fn signals(&self, kind: ComponentKind, type_name: &str) -> Option<&'static [Signal]> {
        match kind {
            ComponentKind::Receiver => self.receiver(type_name).map(|f| f.signals),
            ComponentKind::Processor => self.processor(type_name).map(|f| f.signals),
            ComponentKind::Exporter => self.exporter(type_name).map(|f| f.signals),
            ComponentKind::Connector => self.connector(type_name).map(|f| f.consumes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[test]
    fn parses_component_ids() {
        let id = ComponentId::parse("otlp/gateway").unwrap();
        assert_eq!(id.kind(), "otlp");
        assert_eq!(id.to_string(), "otlp/gateway");
        assert_eq!(ComponentId::parse("batch").unwrap().to_string(), "batch");
        assert!(ComponentId::parse("").is_err());
        assert!(ComponentId::parse("otlp/").is_err());
        assert!(ComponentId::parse("a/b/c").is_err());
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        endpoint: String,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        http: Inner,
    }

    #[test]
    fn config_errors_carry_the_path_of_an_unknown_key() {
        let raw: serde_yaml::Value = serde_yaml::from_str("http:\n  endpont: x\n").unwrap();
        let err = parse_config::<Outer>(raw).unwrap_err();
        assert_eq!(err.path, vec!["http", "endpont"]);
        assert!(err.message.contains("unknown field `endpont`"));
    }
}
