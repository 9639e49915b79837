//! LangSmith runs: the `Run` that is sent, and the `Draft` a span becomes
//! before the trace window knows where it sits in its tree.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A run as LangSmith ingests it. The large fields are kept as encoded
/// JSON: they go out unchanged as multipart parts, and the spool stores
/// them as they are.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub core: RunCore,
    pub inputs: Box<RawValue>,
    pub outputs: Option<Box<RawValue>>,
    pub extra: Box<RawValue>,
    pub error: Option<String>,
    pub events: Option<Box<RawValue>>,
}

/// The fields of a run that the multipart `post.<id>` part carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunCore {
    pub id: Uuid,
    pub trace_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_run_id: Option<Uuid>,
    pub dotted_order: String,
    pub name: String,
    pub run_type: String,
    pub start_time: String,
    pub end_time: String,
    pub session_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub tags: Vec<String>,
}

impl PartialEq for Run {
    fn eq(&self, other: &Run) -> bool {
        let text = |raw: &Option<Box<RawValue>>| raw.as_ref().map(|raw| raw.get().to_string());
        self.core == other.core
            && self.inputs.get() == other.inputs.get()
            && text(&self.outputs) == text(&other.outputs)
            && self.extra.get() == other.extra.get()
            && self.error == other.error
            && text(&self.events) == text(&other.events)
    }
}

impl Run {
    /// About how many bytes the run takes on the wire, for batch limits.
    pub fn wire_size(&self) -> usize {
        const CORE_FIELDS: usize = 260;
        let core = &self.core;
        CORE_FIELDS
            + core.dotted_order.len()
            + core.name.len()
            + core.session_name.len()
            + core.tags.iter().map(|tag| tag.len() + 3).sum::<usize>()
            + self.inputs.get().len()
            + self.outputs.as_ref().map_or(0, |raw| raw.get().len())
            + self.extra.get().len()
            + self.error.as_ref().map_or(0, |error| error.len() + 2)
            + self.events.as_ref().map_or(0, |raw| raw.get().len())
    }
}

/// A run whose place in its trace is not known yet: its ids and dotted
/// order are filled in by the trace window.
#[derive(Debug, Clone)]
pub struct Draft {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// `None` for a root span.
    pub parent_span_id: Option<[u8; 8]>,
    pub start_unix_nano: u64,
    /// Ids the instrumentation set itself (`langsmith.span.id` and the
    /// rest), which win over derived ones.
    pub given: GivenIds,
    pub name: String,
    pub run_type: &'static str,
    pub end_unix_nano: u64,
    pub session_name: String,
    pub tags: Vec<String>,
    pub inputs: Box<RawValue>,
    pub outputs: Option<Box<RawValue>>,
    pub extra: Box<RawValue>,
    pub error: Option<String>,
    pub events: Option<Box<RawValue>>,
}

/// `langsmith.trace.id`, `langsmith.span.id`, `langsmith.span.parent_id`
/// and `langsmith.span.dotted_order`, as the LangSmith SDK's OTel mode
/// writes them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GivenIds {
    pub trace_id: Option<Uuid>,
    pub run_id: Option<Uuid>,
    pub parent_run_id: Option<Uuid>,
    pub dotted_order: Option<String>,
}

impl GivenIds {
    /// All four: the run needs no trace window.
    pub fn complete(&self) -> bool {
        self.trace_id.is_some() && self.run_id.is_some() && self.dotted_order.is_some()
    }
}

impl Draft {
    /// The run id: the given one, else derived from the trace and span ids
    /// so that a retried or replayed span gets the same id.
    pub fn derived_run_id(&self) -> Uuid {
        self.given
            .run_id
            .unwrap_or_else(|| derive_run_id(&self.trace_id, &self.span_id))
    }

    /// `<start time><run id>`: one segment of a dotted order.
    pub fn segment(&self, run_id: Uuid) -> String {
        dotted_segment(self.start_unix_nano, run_id)
    }

    pub fn into_run(
        self,
        id: Uuid,
        trace_id: Uuid,
        parent_run_id: Option<Uuid>,
        dotted_order: String,
    ) -> Run {
        Run {
            core: RunCore {
                id,
                trace_id,
                parent_run_id,
                dotted_order,
                name: self.name,
                run_type: self.run_type.to_string(),
                start_time: rfc3339_micros(self.start_unix_nano),
                end_time: rfc3339_micros(self.end_unix_nano.max(self.start_unix_nano)),
                session_name: self.session_name,
                tags: self.tags,
            },
            inputs: self.inputs,
            outputs: self.outputs,
            extra: self.extra,
            error: self.error,
            events: self.events,
        }
    }

    /// A draft that carries its own ids and dotted order becomes a run
    /// as it is.
    pub fn into_given_run(self) -> Option<Run> {
        let given = self.given.clone();
        Some(self.into_run(
            given.run_id?,
            given.trace_id?,
            given.parent_run_id,
            given.dotted_order?,
        ))
    }
}

/// A LangSmith trace id is the root run's id, and the OTLP trace id is
/// 16 bytes: the same bytes make the UUID, as the LangSmith SDK maps them.
pub fn trace_uuid(trace_id: &[u8; 16]) -> Uuid {
    Uuid::from_bytes(*trace_id)
}

/// A version-8 (custom) UUID from SHA-256 of trace id and span id.
pub fn derive_run_id(trace_id: &[u8; 16], span_id: &[u8; 8]) -> Uuid {
    let mut context = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    context.update(trace_id);
    context.update(span_id);
    let digest = context.finish();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// `strftime("%Y%m%dT%H%M%S%fZ") + str(run_id)`, as
/// `run_trees.py::_create_current_dotted_order` builds it.
pub fn dotted_segment(start_unix_nano: u64, run_id: Uuid) -> String {
    let stamp: String = rfc3339_micros(start_unix_nano)
        .chars()
        .filter(|c| !matches!(c, '-' | ':' | '.'))
        .collect();
    format!("{stamp}{run_id}")
}

/// `2026-11-21T10:00:00.123456Z`: microseconds, as LangSmith stores times.
pub fn rfc3339_micros(unix_nano: u64) -> String {
    let time = UNIX_EPOCH + Duration::from_nanos(unix_nano);
    humantime::format_rfc3339_micros(time).to_string()
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_segments_are_the_sdks() {
        let run_id = Uuid::parse_str("0192f6a2-1c3b-7d4e-8f5a-6b7c8d9e0f1a").unwrap();
        // 2024-11-05T12:34:56.789012Z
        let nanos = 1_730_810_096_789_012_345;
        assert_eq!(
            dotted_segment(nanos, run_id),
            "20241105T123456789012Z0192f6a2-1c3b-7d4e-8f5a-6b7c8d9e0f1a"
        );
        assert_eq!(rfc3339_micros(nanos), "2024-11-05T12:34:56.789012Z");
    }

    #[test]
    fn derived_ids_are_stable_versioned_and_distinct() {
        let trace = [7u8; 16];
        let a = derive_run_id(&trace, &[1; 8]);
        assert_eq!(a, derive_run_id(&trace, &[1; 8]));
        assert_ne!(a, derive_run_id(&trace, &[2; 8]));
        assert_ne!(a, derive_run_id(&[8; 16], &[1; 8]));
        assert_eq!(a.get_version_num(), 8);
        assert_eq!(trace_uuid(&trace).as_bytes(), &trace);
    }
}
