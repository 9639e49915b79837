//! Component health, as served on `/health/ready`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Starting,
    Ok,
    /// Working, but the last attempt failed; `message` says why.
    Degraded,
    Stopping,
    Failed,
}

#[derive(Debug, Clone, Serialize)]
pub struct ComponentHealth {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The health of every component, keyed `receiver/otlp`, `exporter/file/x`.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, ComponentHealth>>>,
}

#[derive(Debug, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub components: BTreeMap<String, ComponentHealth>,
}

impl Health {
    pub fn reporter(&self, component: String) -> HealthReporter {
        let reporter = HealthReporter {
            health: self.clone(),
            component,
        };
        reporter.set(Status::Starting, None);
        reporter
    }

    /// Ready when every component is up: degraded counts as up, because an
    /// exporter that is retrying still accepts data into its queue.
    pub fn readiness(&self) -> Readiness {
        let components = self
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let ready = components
            .values()
            .all(|c| matches!(c.status, Status::Ok | Status::Degraded));
        Readiness { ready, components }
    }
}

/// One component's handle for reporting its own health.
#[derive(Clone)]
pub struct HealthReporter {
    health: Health,
    component: String,
}

impl HealthReporter {
    pub fn set(&self, status: Status, message: Option<String>) {
        let mut components = self
            .health
            .components
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        components.insert(self.component.clone(), ComponentHealth { status, message });
    }

    pub fn ok(&self) {
        self.set(Status::Ok, None);
    }

    pub fn degraded(&self, message: impl Into<String>) {
        self.set(Status::Degraded, Some(message.into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is_up() {
        let health = Health::default();
        let receiver = health.reporter("receiver/otlp".into());
        let exporter = health.reporter("exporter/file".into());
        assert!(!health.readiness().ready);
        receiver.ok();
        exporter.degraded("503 from upstream");
        assert!(health.readiness().ready);
        exporter.set(Status::Stopping, None);
        assert!(!health.readiness().ready);
    }
}
