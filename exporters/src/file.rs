//! The `file` exporter: one OTLP/JSON `Export*ServiceRequest` per line, as
//! the collector's file exporter writes it, appended to `path`.
//!
//! ```yaml
//! exporters:
//!   file:
//!     path: ./data/otlp.jsonl
//! ```
//!
//! Lines are encoded on the async side and written on a blocking thread,
//! one `write` per batch, so a slow disk never stalls a runtime worker.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use async_trait::async_trait;
use lookout_pipelines::component::parse_config;
use lookout_pipelines::{
    BuildError, ComponentId, ExportError, Exporter, ExporterFactory, Payload, Signal, codec,
};
use serde::Deserialize;

pub fn factory() -> ExporterFactory {
    ExporterFactory {
        kind: "file",
        signals: &Signal::OTLP,
        build: |_id: &ComponentId, raw, _helper| {
            let config: FileConfig = parse_config(raw)?;
            if config.path.as_os_str().is_empty() {
                return Err(BuildError::at(&["path"], "must not be empty"));
            }
            Ok(Box::new(FileExporter {
                config,
                file: Arc::new(Mutex::new(None)),
            }))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Created with its parent directories if missing; appended to if present.
    pub path: PathBuf,
}

pub struct FileExporter {
    config: FileConfig,
    /// Opened by `start`.
    file: Arc<Mutex<Option<File>>>,
}

#[async_trait]
impl Exporter for FileExporter {
    async fn start(&self) -> anyhow::Result<()> {
        let path = &self.config.path;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create directory {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {} for appending", path.display()))?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Some(file);
        Ok(())
    }

    async fn export(&self, payload: &Payload) -> Result<(), ExportError> {
        let mut line = Vec::with_capacity(payload.encoded_len() * 2);
        codec::encode_json(payload, &mut line)
            .map_err(|err| ExportError::permanent(format!("cannot encode as JSON: {err}")))?;
        line.push(b'\n');
        let file = self.file.clone();
        let path = self.config.path.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = file.lock().unwrap_or_else(PoisonError::into_inner);
            let file = guard
                .as_mut()
                .ok_or_else(|| ExportError::permanent("the file is not open"))?;
            let cannot_write = |err: std::io::Error| {
                // A full or failing disk may recover: let the helper retry.
                ExportError::transient(format!("cannot write to {}: {err}", path.display()))
            };
            let length_before = file.metadata().map_err(cannot_write)?.len();
            file.write_all(&line).map_err(|err| {
                // Cut a half-written line, so that a retry leaves valid JSON lines.
                let _ = file.set_len(length_before);
                cannot_write(err)
            })
        })
        .await
        .map_err(|err| ExportError::transient(format!("writer task failed: {err}")))?
    }

    async fn shutdown(&self) -> anyhow::Result<()> {
        let file = self
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(file) = file {
            tokio::task::spawn_blocking(move || file.sync_all())
                .await?
                .context("cannot sync the file to disk")?;
        }
        Ok(())
    }
}
