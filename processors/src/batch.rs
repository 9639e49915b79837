//! The `batch` processor: groups payloads so that exporters send fewer,
//! larger requests.
//!
//! ```yaml
//! processors:
//!   batch:
//!     send_batch_size: 8192   # items (spans, data points, log records) that trigger a send
//!     timeout: 200ms          # the longest an item waits for a batch to fill
//! ```
//!
//! A batch is sent as soon as it holds `send_batch_size` items, or when
//! its oldest item has waited `timeout`. Requests are not split, so one
//! request larger than `send_batch_size` goes out as one batch.

use std::time::Duration;

use lookout_pipelines::component::parse_config;
use lookout_pipelines::{BuildError, ComponentId, Payload, Processor, ProcessorFactory, Signal};
use serde::Deserialize;
use tokio::time::Instant;

pub fn factory() -> ProcessorFactory {
    ProcessorFactory {
        kind: "batch",
        signals: &Signal::OTLP,
        build: |_id: &ComponentId, raw, signal| {
            let config: BatchConfig = parse_config(raw)?;
            config.check()?;
            Ok(Box::new(BatchProcessor::new(config, signal)))
        },
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    pub send_batch_size: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            timeout: Duration::from_millis(200),
        }
    }
}

impl BatchConfig {
    fn check(&self) -> Result<(), BuildError> {
        if self.send_batch_size == 0 {
            return Err(BuildError::at(&["send_batch_size"], "must be at least 1"));
        }
        if self.timeout.is_zero() {
            return Err(BuildError::at(&["timeout"], "must be above zero"));
        }
        Ok(())
    }
}

pub struct BatchProcessor {
    config: BatchConfig,
    signal: Signal,
    pending: Payload,
    pending_items: usize,
    /// When the oldest pending item must go out.
    deadline: Option<Instant>,
}

impl BatchProcessor {
    pub fn new(config: BatchConfig, signal: Signal) -> BatchProcessor {
        BatchProcessor {
            config,
            signal,
            pending: Payload::empty(signal),
            pending_items: 0,
            deadline: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<Payload>) {
        self.deadline = None;
        if self.pending_items == 0 {
            return;
        }
        self.pending_items = 0;
        out.push(std::mem::replace(
            &mut self.pending,
            Payload::empty(self.signal),
        ));
    }
}

impl Processor for BatchProcessor {
    fn process(&mut self, payload: Payload, out: &mut Vec<Payload>) {
        let items = payload.item_count();
        if items == 0 {
            return;
        }
        if let Err(other) = self.pending.append(payload) {
            // The topology only routes one signal into a pipeline.
            out.push(other);
            return;
        }
        self.pending_items += items;
        if self.deadline.is_none() {
            self.deadline = Some(Instant::now() + self.config.timeout);
        }
        if self.pending_items >= self.config.send_batch_size {
            self.emit(out);
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn on_deadline(&mut self, now: Instant, out: &mut Vec<Payload>) {
        if self.deadline.is_some_and(|deadline| deadline <= now) {
            self.emit(out);
        }
    }

    fn flush(&mut self, out: &mut Vec<Payload>) {
        self.emit(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn spans(count: usize) -> Payload {
        Payload::Traces(vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); count],
                ..Default::default()
            }],
            ..Default::default()
        }])
    }

    fn batcher(send_batch_size: usize) -> BatchProcessor {
        let config = BatchConfig {
            send_batch_size,
            timeout: Duration::from_millis(200),
        };
        BatchProcessor::new(config, Signal::Traces)
    }

    #[tokio::test(start_paused = true)]
    async fn sends_when_the_batch_is_full() {
        let mut batch = batcher(10);
        let mut out = Vec::new();
        batch.process(spans(6), &mut out);
        assert!(out.is_empty());
        batch.process(spans(6), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item_count(), 12);
        assert_eq!(batch.next_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn sends_a_partial_batch_when_the_oldest_item_times_out() {
        let mut batch = batcher(100);
        let mut out = Vec::new();
        batch.process(spans(3), &mut out);
        let deadline = batch.next_deadline().unwrap();
        tokio::time::advance(Duration::from_millis(100)).await;
        batch.process(spans(2), &mut out);
        assert_eq!(
            batch.next_deadline(),
            Some(deadline),
            "the oldest item sets the deadline"
        );
        batch.on_deadline(Instant::now(), &mut out);
        assert!(out.is_empty(), "not due yet");
        tokio::time::advance(Duration::from_millis(100)).await;
        batch.on_deadline(Instant::now(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item_count(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn flush_sends_what_is_held_and_nothing_when_empty() {
        let mut batch = batcher(100);
        let mut out = Vec::new();
        batch.flush(&mut out);
        assert!(out.is_empty());
        batch.process(spans(1), &mut out);
        batch.flush(&mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn zero_batch_size_is_rejected() {
        let raw = serde_yaml::from_str("send_batch_size: 0").unwrap();
        assert!(
            (factory().build)(&ComponentId::parse("batch").unwrap(), raw, Signal::Traces).is_err()
        );
    }
}
