//! Request bodies, laid out as the LangSmith SDK lays them out.
//!
//! `POST /runs/multipart`: a `multipart/form-data` body in which each run
//! is a `post.<id>` part holding the run without its large fields, and
//! one `post.<id>.<field>` part per large field (`inputs`, `outputs`,
//! `extra`, `error`, `events`), each part with its own `Content-Type` and
//! `Content-Length` (`_internal/_operations.py`). With zstd the whole body
//! is compressed, never a part.
//!
//! `POST /runs/batch`: `{"post": [run, ...], "patch": []}`.

use std::io::Write;

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::run::{Run, RunCore};

/// An encoded request body and the headers that describe it.
#[derive(Debug, Clone)]
pub struct Body {
    /// Shared, so that each retry resends it without a copy.
    pub bytes: Bytes,
    pub content_type: String,
    /// Set when the body is zstd-compressed: the size before.
    pub uncompressed_len: Option<usize>,
}

/// The multipart encoding of `runs`, with a fresh random boundary.
pub fn multipart(runs: &[Run]) -> Body {
    let boundary = format!("{:032x}", fastrand::u128(..));
    let mut bytes = Vec::with_capacity(runs.iter().map(Run::wire_size).sum::<usize>() * 2);
    for run in runs {
        let id = run.core.id;
        // Serializing a struct of strings and UUIDs cannot fail.
        let core = serde_json::to_vec(&run.core).unwrap_or_default();
        part(&mut bytes, &boundary, &name(id, None), &core);
        let error = run
            .error
            .as_ref()
            .map(|error| serde_json::to_string(error).unwrap_or_else(|_| "\"error\"".to_string()));
        let fields: [(&str, Option<&str>); 5] = [
            ("inputs", Some(run.inputs.get())),
            ("outputs", run.outputs.as_deref().map(RawValue::get)),
            ("extra", Some(run.extra.get())),
            ("error", error.as_deref()),
            ("events", run.events.as_deref().map(RawValue::get)),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                part(
                    &mut bytes,
                    &boundary,
                    &name(id, Some(field)),
                    value.as_bytes(),
                );
            }
        }
    }
    bytes.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    Body {
        bytes: bytes.into(),
        content_type: format!("multipart/form-data; boundary={boundary}"),
        uncompressed_len: None,
    }
}

fn name(id: Uuid, field: Option<&str>) -> String {
    match field {
        Some(field) => format!("post.{id}.{field}"),
        None => format!("post.{id}"),
    }
}

fn part(out: &mut Vec<u8>, boundary: &str, name: &str, json: &[u8]) {
    let head = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        json.len()
    );
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(b"\r\n");
}

/// The `/runs/batch` encoding of `runs`.
pub fn batch(runs: &[Run]) -> Body {
    #[derive(Serialize)]
    struct Flat<'a> {
        #[serde(flatten)]
        core: &'a RunCore,
        inputs: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        outputs: Option<&'a RawValue>,
        extra: &'a RawValue,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        events: Option<&'a RawValue>,
    }
    #[derive(Serialize)]
    struct Batch<'a> {
        post: Vec<Flat<'a>>,
        patch: [(); 0],
    }
    let post = runs
        .iter()
        .map(|run| Flat {
            core: &run.core,
            inputs: &run.inputs,
            outputs: run.outputs.as_deref(),
            extra: &run.extra,
            error: run.error.as_deref(),
            events: run.events.as_deref(),
        })
        .collect();
    Body {
        // Strings, UUIDs and JSON that is already valid: cannot fail.
        bytes: serde_json::to_vec(&Batch { post, patch: [] })
            .unwrap_or_default()
            .into(),
        content_type: "application/json".into(),
        uncompressed_len: None,
    }
}

/// Compresses the whole body with zstd at the SDK's default level.
pub fn zstd(body: Body) -> Body {
    const LEVEL: i32 = 1;
    let uncompressed_len = body.bytes.len();
    let mut encoder = match zstd::Encoder::new(Vec::with_capacity(uncompressed_len / 4), LEVEL) {
        Ok(encoder) => encoder,
        Err(_) => return body,
    };
    let compressed = encoder
        .write_all(&body.bytes)
        .and_then(|()| encoder.finish());
    match compressed {
        Ok(bytes) => Body {
            bytes: bytes.into(),
            content_type: body.content_type,
            uncompressed_len: Some(uncompressed_len),
        },
        Err(_) => body,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::langsmith::run::RunCore;

    pub(crate) fn sample(id: u128, error: Option<&str>) -> Run {
        Run {
            core: RunCore {
                id: Uuid::from_u128(id),
                trace_id: Uuid::from_u128(1),
                parent_run_id: (id != 1).then(|| Uuid::from_u128(1)),
                dotted_order: "20240101T000000000000Z".into(),
                name: "llm".into(),
                run_type: "llm".into(),
                start_time: "2024-01-01T00:00:00.000000Z".into(),
                end_time: "2024-01-01T00:00:01.000000Z".into(),
                session_name: "default".into(),
                tags: Vec::new(),
            },
            inputs: RawValue::from_string(r#"{"messages":[]}"#.into()).unwrap(),
            outputs: Some(RawValue::from_string(r#"{"output":"ok"}"#.into()).unwrap()),
            extra: RawValue::from_string(r#"{"metadata":{}}"#.into()).unwrap(),
            error: error.map(str::to_string),
            events: None,
        }
    }

    #[test]
    fn multipart_parts_are_named_typed_and_sized() {
        let body = multipart(&[sample(1, None), sample(2, Some("Bad \"input\""))]);
        let text = String::from_utf8(body.bytes.to_vec()).unwrap();
        let boundary = body.content_type.split("boundary=").nth(1).unwrap();
        let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
        // Leading empty piece, 4 + 5 parts, and the closing `--\r\n`.
        assert_eq!(parts.len(), 1 + 4 + 5 + 1);
        assert_eq!(parts[parts.len() - 1], "--\r\n");
        for part in &parts[1..parts.len() - 1] {
            let (head, rest) = part.split_once("\r\n\r\n").unwrap();
            let value = rest.strip_suffix("\r\n").unwrap();
            assert!(head.contains("Content-Type: application/json"));
            assert!(head.contains(&format!("Content-Length: {}", value.len())));
            serde_json::from_str::<serde_json::Value>(value).unwrap();
        }
        let id = Uuid::from_u128(2);
        assert!(text.contains(&format!("name=\"post.{id}\"")));
        assert!(text.contains(&format!("name=\"post.{id}.error\"")));
        assert!(text.contains(r#""Bad \"input\"""#));
    }

    #[test]
    fn batch_is_post_and_patch_lists_of_whole_runs() {
        let body = batch(&[sample(1, None)]);
        let value: serde_json::Value = serde_json::from_slice(&body.bytes).unwrap();
        assert_eq!(value["patch"], serde_json::json!([]));
        let run = &value["post"][0];
        assert_eq!(run["id"], Uuid::from_u128(1).to_string());
        assert_eq!(run["inputs"], serde_json::json!({"messages": []}));
        assert!(run.get("parent_run_id").is_none());
        assert!(run.get("error").is_none());
    }

    #[test]
    fn zstd_round_trips() {
        let plain = multipart(&[sample(1, None)]);
        let packed = zstd(plain.clone());
        assert_eq!(packed.uncompressed_len, Some(plain.bytes.len()));
        assert_eq!(
            zstd::decode_all(packed.bytes.as_ref()).unwrap(),
            plain.bytes
        );
    }
}
