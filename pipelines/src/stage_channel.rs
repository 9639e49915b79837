//! Bounded channels between stages, and the handle a receiver pushes into.
//!
//! Receivers never wait for room: when a pipeline is full they refuse the
//! request at once, so the client hears 429 / RESOURCE_EXHAUSTED and backs
//! off, and the daemon holds no more than its channels' capacity.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::payload::{Payload, Signal};

/// How many payloads a channel between two stages holds. With requests of
/// up to the receiver's body limit, this bounds what each stage can queue.
pub const STAGE_CHANNEL_CAPACITY: usize = 64;

pub fn stage_channel() -> (mpsc::Sender<Payload>, mpsc::Receiver<Payload>) {
    mpsc::channel(STAGE_CHANNEL_CAPACITY)
}

/// Why a payload was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A pipeline is full. The client should retry later.
    #[error("the pipeline is full; retry later")]
    Full,
    /// The daemon is shutting down.
    #[error("the daemon is shutting down")]
    Closed,
}

/// Something downstream of a pipeline that can ask its receivers to refuse
/// data for a while: an exporter queue with `when_full: block`.
pub trait Backpressure: Send + Sync {
    fn is_full(&self) -> bool;
}

/// The input of one pipeline, as a receiver sees it.
#[derive(Clone)]
pub struct PipelineInput {
    pub sender: mpsc::Sender<Payload>,
    pub backpressure: Vec<Arc<dyn Backpressure>>,
}

/// Feeds every pipeline of one signal that lists a receiver. A payload goes
/// to all of them or to none, so that a client's retry never duplicates
/// data in the pipelines that did take it.
#[derive(Clone)]
pub struct Consumer {
    pipelines: Arc<[PipelineInput]>,
}

impl Consumer {
    pub fn new(pipelines: Vec<PipelineInput>) -> Consumer {
        Consumer {
            pipelines: pipelines.into(),
        }
    }

    /// Whether a payload would be taken now. Receivers ask before reading
    /// a request body, so that refusing under overload costs next to
    /// nothing; `try_send` still has the last word.
    pub fn has_room(&self) -> bool {
        self.pipelines
            .iter()
            .all(|p| p.sender.capacity() > 0 && !p.backpressure.iter().any(|b| b.is_full()))
    }

    pub fn try_send(&self, payload: Payload) -> Result<(), Refused> {
        let pushing_back = self
            .pipelines
            .iter()
            .flat_map(|p| &p.backpressure)
            .any(|b| b.is_full());
        if pushing_back {
            return Err(Refused::Full);
        }
        let mut permits = Vec::with_capacity(self.pipelines.len());
        for PipelineInput { sender, .. } in self.pipelines.iter() {
            match sender.try_reserve() {
                Ok(permit) => permits.push(permit),
                Err(mpsc::error::TrySendError::Full(())) => return Err(Refused::Full),
                Err(mpsc::error::TrySendError::Closed(())) => return Err(Refused::Closed),
            }
        }
        let last = permits.pop();
        for permit in permits {
            permit.send(payload.clone());
        }
        if let Some(permit) = last {
            permit.send(payload);
        }
        Ok(())
    }
}

/// The consumers of one receiver, one per signal that a pipeline takes from it.
#[derive(Clone, Default)]
pub struct Consumers {
    pub traces: Option<Consumer>,
    pub metrics: Option<Consumer>,
    pub logs: Option<Consumer>,
    pub alerts: Option<Consumer>,
}

impl Consumers {
    pub fn get(&self, signal: Signal) -> Option<&Consumer> {
        match signal {
            Signal::Traces => self.traces.as_ref(),
            Signal::Metrics => self.metrics.as_ref(),
            Signal::Logs => self.logs.as_ref(),
            Signal::Alerts => self.alerts.as_ref(),
        }
    }

    pub fn set(&mut self, signal: Signal, consumer: Consumer) {
        match signal {
            Signal::Traces => self.traces = Some(consumer),
            Signal::Metrics => self.metrics = Some(consumer),
            Signal::Logs => self.logs = Some(consumer),
            Signal::Alerts => self.alerts = Some(consumer),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn input(sender: mpsc::Sender<Payload>) -> PipelineInput {
        PipelineInput {
            sender,
            backpressure: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_full_pipeline_refuses_for_all_so_none_gets_a_duplicate() {
        let (roomy, mut roomy_rx) = mpsc::channel(4);
        let (tight, _tight_rx) = mpsc::channel(1);
        let consumer = Consumer::new(vec![input(roomy), input(tight)]);
        consumer.try_send(Payload::Traces(vec![])).unwrap();
        assert_eq!(
            consumer.try_send(Payload::Traces(vec![])),
            Err(Refused::Full)
        );
        assert!(roomy_rx.recv().await.is_some());
        assert!(
            roomy_rx.try_recv().is_err(),
            "the refused payload must not reach any pipeline"
        );
    }

    #[tokio::test]
    async fn a_closed_pipeline_is_reported() {
        let (sender, receiver) = mpsc::channel(1);
        drop(receiver);
        let consumer = Consumer::new(vec![input(sender)]);
        assert_eq!(
            consumer.try_send(Payload::Logs(vec![])),
            Err(Refused::Closed)
        );
    }

    struct Flag(AtomicBool);

    impl Backpressure for Flag {
        fn is_full(&self) -> bool {
            self.0.load(Ordering::Relaxed)
        }
    }

    #[tokio::test]
    async fn a_full_blocking_exporter_queue_refuses_at_the_receiver() {
        let (sender, _receiver) = mpsc::channel(4);
        let flag = Arc::new(Flag(AtomicBool::new(true)));
        let consumer = Consumer::new(vec![PipelineInput {
            sender,
            backpressure: vec![flag.clone()],
        }]);
        assert!(!consumer.has_room());
        assert_eq!(consumer.try_send(Payload::Logs(vec![])), Err(Refused::Full));
        flag.0.store(false, Ordering::Relaxed);
        assert!(consumer.has_room());
        assert_eq!(consumer.try_send(Payload::Logs(vec![])), Ok(()));
    }
}
