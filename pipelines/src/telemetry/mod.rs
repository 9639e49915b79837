//! The daemon's own telemetry: Prometheus metrics, health, logs, and the
//! HTTP endpoint that serves the first two.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod process;
pub mod server;
