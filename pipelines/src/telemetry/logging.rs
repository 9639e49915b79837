//! Log output: text or JSON on stderr, level from config unless `RUST_LOG`
//! is set.

use serde::Deserialize;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    #[default]
    Text,
    Json,
}

/// `service.telemetry.logs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// A level (`info`) or a filter (`info,lookout_exporters=debug`).
    pub level: String,
    pub encoding: LogEncoding,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig {
            level: "info".to_string(),
            encoding: LogEncoding::Text,
        }
    }
}

/// Installs the global subscriber. Safe to call more than once: later calls
/// are ignored.
pub fn init(config: &LogsConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.encoding {
        LogEncoding::Text => builder.try_init(),
        LogEncoding::Json => builder.json().flatten_event(true).try_init(),
    };
}
