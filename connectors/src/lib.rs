//! Lookout's connectors: components that end one pipeline and start
//! another, as in the OTel Collector.

pub mod threshold;

use lookout_pipelines::ConnectorFactory;

/// Every connector type this crate provides.
pub fn factories() -> Vec<ConnectorFactory> {
    vec![threshold::factory()]
}
