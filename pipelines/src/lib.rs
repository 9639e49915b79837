//! The core of Lookout: the data model, the component traits, configuration,
//! the topology that wires components into pipelines, the bounded channels
//! between stages, the exporter helper shared by every exporter, and the
//! daemon's own telemetry.

pub mod alert;
pub mod codec;
pub mod component;
pub mod config;
pub mod exporter_helper;
pub mod genai;
pub mod memory_limiter;
pub mod payload;
pub mod stage_channel;
pub mod telemetry;
pub mod topology;

pub use component::{
    BuildError, ComponentId, ComponentKind, Components, Connector, ConnectorContext,
    ConnectorFactory, ExportError, Exporter, ExporterFactory, Processor, ProcessorFactory,
    Receiver, ReceiverContext, ReceiverFactory,
};
pub use payload::{Payload, Signal};
pub use stage_channel::{Backpressure, Consumer, Consumers, PipelineInput, Refused};
