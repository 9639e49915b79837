//! Lookout's processors.

mod attributes;
pub mod batch;
pub mod cost;
pub mod genai;
pub mod pii;

use lookout_pipelines::ProcessorFactory;

/// Every processor type this crate provides.
pub fn factories() -> Vec<ProcessorFactory> {
    vec![
        batch::factory(),
        genai::factory(),
        cost::factory(),
        pii::factory(),
    ]
}
