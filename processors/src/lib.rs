//! Lookout's processors.

pub mod batch;

use lookout_pipelines::ProcessorFactory;

/// Every processor type this crate provides.
pub fn factories() -> Vec<ProcessorFactory> {
    vec![batch::factory()]
}
