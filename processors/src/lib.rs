//! Lookout's processors.

pub mod batch;
pub mod genai;

use lookout_pipelines::ProcessorFactory;

/// Every processor type this crate provides.
pub fn factories() -> Vec<ProcessorFactory> {
    vec![batch::factory(), genai::factory()]
}
