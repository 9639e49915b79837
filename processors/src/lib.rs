//! Lookout's processors.

mod attributes;
pub mod batch;
pub mod cost;
pub mod genai;
pub mod pii;

use lookout_pipelines::{BuildError, ComponentId, Payload, ProcessorFactory, Signal};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

/// Every processor type this crate provides.
pub fn factories() -> Vec<ProcessorFactory> {
    vec![
        batch::factory(),
        genai::factory(),
        cost::factory(),
        pii::factory(),
    ]
}

/// Runs spans through a chain of processors, each `(type, YAML config)`,
/// as a traces pipeline would, and flushes each. For benchmarks and tests
/// of what comes after the processors.
pub fn run_traces(
    chain: &[(&str, &str)],
    mut resources: Vec<ResourceSpans>,
) -> Result<Vec<ResourceSpans>, BuildError> {
    let factories = factories();
    for (kind, config) in chain {
        let factory = factories
            .iter()
            .find(|f| f.kind == *kind)
            .ok_or_else(|| BuildError::new(format!("no processor `{kind}`")))?;
        let id = ComponentId::parse(kind).map_err(BuildError::new)?;
        let raw = serde_yaml::from_str(config).map_err(|err| BuildError::new(err.to_string()))?;
        let mut processor = (factory.build)(&id, raw, Signal::Traces)?;
        let mut out = Vec::new();
        processor.process(Payload::Traces(resources), &mut out);
        processor.flush(&mut out);
        resources = out
            .into_iter()
            .flat_map(|payload| match payload {
                Payload::Traces(r) => r,
                _ => Vec::new(),
            })
            .collect();
    }
    Ok(resources)
}
