//! Retention: a background job that deletes rows older than
//! `retention_days`, a small batch per statement, so that no delete holds
//! locks long enough to stall the writers. A trace expires with its spans
//! and agent executions, by its start time; metrics, costs and alerts by
//! their own time.

use std::sync::Arc;
use std::time::Duration;

use metrics::counter;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use super::backend::{Backend, Expiring};

#[derive(Debug, Clone)]
pub struct Retention {
    pub days: u32,
    pub interval: Duration,
    pub batch_size: u32,
}

/// The pause between two delete batches: room for the writers.
const PAUSE_BETWEEN_BATCHES: Duration = Duration::from_millis(20);

impl Retention {
    /// Rows older than this are expired.
    pub fn cutoff(&self, now: OffsetDateTime) -> OffsetDateTime {
        now - time::Duration::days(i64::from(self.days))
    }

    /// Sweeps once at start and then every `interval` until `stop`.
    pub async fn run<B: Backend>(self, backend: Arc<B>, exporter: String, stop: CancellationToken) {
        loop {
            let cutoff = self.cutoff(OffsetDateTime::now_utc());
            let sweep = tokio::select! {
                _ = stop.cancelled() => return,
                sweep = self.sweep(&*backend, cutoff, &exporter, &stop) => sweep,
            };
            match sweep {
                Ok(deleted) if deleted > 0 => {
                    tracing::info!(exporter = %exporter, deleted, days = self.days, "retention deleted expired rows");
                }
                Ok(_) => {}
                Err(err) => {
                    // The next sweep tries again; nothing is lost meanwhile.
                    tracing::warn!(exporter = %exporter, error = %err, "retention sweep failed");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// Deletes every row older than `cutoff`, batch by batch; returns how
    /// many rows went.
    pub async fn sweep<B: Backend>(
        &self,
        backend: &B,
        cutoff: OffsetDateTime,
        exporter: &str,
        stop: &CancellationToken,
    ) -> Result<u64, sqlx::Error> {
        let limit = i64::from(self.batch_size);
        let mut total = 0;
        for what in Expiring::ALL {
            loop {
                let deleted = backend.delete_expired(what, cutoff, limit).await?;
                for (table, rows) in &deleted {
                    total += rows;
                    counter!("lookout_store_rows_expired_total", "exporter" => exporter.to_string(), "table" => *table)
                        .increment(*rows);
                }
                let swept = deleted.first().map_or(0, |(_, rows)| *rows);
                if swept < limit as u64 || stop.is_cancelled() {
                    break;
                }
                tokio::time::sleep(PAUSE_BETWEEN_BATCHES).await;
            }
        }
        Ok(total)
    }
}
