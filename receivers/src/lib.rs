//! Lookout's receivers.

pub mod otlp;

use lookout_pipelines::ReceiverFactory;

/// Every receiver type this crate provides.
pub fn factories() -> Vec<ReceiverFactory> {
    vec![otlp::factory()]
}
