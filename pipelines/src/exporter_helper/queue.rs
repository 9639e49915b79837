//! The sending queue between a pipeline and an exporter's consumers.
//!
//! The `Queue` trait is the seam for a durable queue: the topology and the
//! consumers only see the trait, so a disk-backed queue can take the
//! in-memory one's place without any exporter changing. A request keeps
//! its room in the queue until `done`, so that what is being sent counts
//! against the bound too, and so that a durable queue knows when it may
//! forget a request.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::Deserialize;
use tokio::sync::Notify;

use crate::payload::Payload;

/// What a queue's size counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sizer {
    Requests,
    /// Spans, metric data points or log records.
    #[default]
    Items,
    /// Bytes of the payload encoded as protobuf.
    Bytes,
}

impl Sizer {
    pub fn measure(self, payload: &Payload, items: usize) -> usize {
        match self {
            Sizer::Requests => 1,
            Sizer::Items => items,
            Sizer::Bytes => payload.encoded_len(),
        }
    }
}

/// What a full queue does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Push back on the clients: while the queue is full, the receivers of
    /// every pipeline that feeds it refuse new data (429 /
    /// RESOURCE_EXHAUSTED). What is already inside those pipelines still
    /// enters, so the queue may pass its capacity by at most what the
    /// pipelines' channels hold. The fan-out never waits, so the other
    /// exporters of the pipeline keep receiving. Nothing is lost.
    #[default]
    Block,
    /// Refuse the request, count it as `enqueue_failed`, and go on.
    DropNewest,
}

/// One request in a queue.
#[derive(Debug, Clone)]
pub struct QueuedRequest {
    pub payload: Arc<Payload>,
    /// Spans, data points or log records, for the counters.
    pub items: usize,
    /// Its size in the queue's sizer unit.
    pub size: usize,
}

#[derive(Debug)]
pub enum PushError {
    Full(QueuedRequest),
    Closed(QueuedRequest),
}

#[async_trait]
pub trait Queue: Send + Sync {
    /// Adds a request. Never waits for room: a `block` queue takes it past
    /// its capacity, a `drop_newest` queue refuses it.
    async fn push(&self, request: QueuedRequest) -> Result<(), PushError>;

    /// At or past capacity. Receivers refuse data while a `block` queue
    /// they feed is full.
    fn is_full(&self) -> bool;

    /// The oldest request not yet handed out; `None` once the queue is
    /// closed and empty.
    async fn pop(&self) -> Option<QueuedRequest>;

    /// A popped request was delivered or given up: free its room.
    fn done(&self, request: &QueuedRequest);

    /// No more pushes; pops drain what is left.
    fn close(&self);

    /// Takes every request not yet popped, for counting at a hard stop.
    fn take_remaining(&self) -> Vec<QueuedRequest>;

    /// Room in use, popped-but-not-done requests included.
    fn size(&self) -> usize;

    fn capacity(&self) -> usize;
}

struct State {
    waiting: VecDeque<QueuedRequest>,
    used: usize,
    closed: bool,
}

/// A bounded in-memory queue.
pub struct MemoryQueue {
    state: Mutex<State>,
    capacity: usize,
    when_full: WhenFull,
    has_requests: Notify,
}

impl MemoryQueue {
    pub fn new(capacity: usize, when_full: WhenFull) -> MemoryQueue {
        MemoryQueue {
            state: Mutex::new(State {
                waiting: VecDeque::new(),
                used: 0,
                closed: false,
            }),
            capacity,
            when_full,
            has_requests: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn push(&self, request: QueuedRequest) -> Result<(), PushError> {
        let mut state = self.state();
        if state.closed {
            return Err(PushError::Closed(request));
        }
        // An empty queue takes a request larger than its capacity, or such
        // a request could never be sent.
        let fits = state.used == 0 || state.used + request.size <= self.capacity;
        if !fits && self.when_full == WhenFull::DropNewest {
            return Err(PushError::Full(request));
        }
        state.used += request.size;
        state.waiting.push_back(request);
        drop(state);
        self.has_requests.notify_one();
        Ok(())
    }

    fn is_full(&self) -> bool {
        self.state().used >= self.capacity
    }

    async fn pop(&self) -> Option<QueuedRequest> {
        loop {
            let ready = self.has_requests.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(request) = state.waiting.pop_front() {
                    let more = !state.waiting.is_empty();
                    drop(state);
                    if more {
                        // Wake the next consumer, since notify_one may
                        // have coalesced several pushes into one wake-up.
                        self.has_requests.notify_one();
                    }
                    return Some(request);
                }
                if state.closed {
                    return None;
                }
            }
            ready.await;
        }
    }

    fn done(&self, request: &QueuedRequest) {
        let mut state = self.state();
        state.used = state.used.saturating_sub(request.size);
    }

    fn close(&self) {
        self.state().closed = true;
        self.has_requests.notify_waiters();
    }

    fn take_remaining(&self) -> Vec<QueuedRequest> {
        let mut state = self.state();
        let remaining: Vec<_> = state.waiting.drain(..).collect();
        state.used -= remaining
            .iter()
            .map(|r| r.size)
            .sum::<usize>()
            .min(state.used);
        remaining
    }

    fn size(&self) -> usize {
        self.state().used
    }

    fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(size: usize) -> QueuedRequest {
        QueuedRequest {
            payload: Arc::new(Payload::Traces(vec![])),
            items: size,
            size,
        }
    }

    #[tokio::test]
    async fn drop_newest_refuses_when_full() {
        let queue = MemoryQueue::new(10, WhenFull::DropNewest);
        queue.push(request(6)).await.unwrap();
        assert!(matches!(
            queue.push(request(6)).await,
            Err(PushError::Full(_))
        ));
        queue.push(request(4)).await.unwrap();
        assert_eq!(queue.size(), 10);
    }

    #[tokio::test]
    async fn an_oversized_request_enters_an_empty_queue() {
        let queue = MemoryQueue::new(10, WhenFull::DropNewest);
        queue.push(request(50)).await.unwrap();
        assert!(matches!(
            queue.push(request(1)).await,
            Err(PushError::Full(_))
        ));
    }

    #[tokio::test]
    async fn block_takes_past_capacity_and_reports_full_until_done() {
        let queue = MemoryQueue::new(10, WhenFull::Block);
        queue.push(request(8)).await.unwrap();
        assert!(!queue.is_full());
        queue.push(request(5)).await.unwrap();
        assert!(queue.is_full());
        let popped = queue.pop().await.unwrap();
        assert!(queue.is_full(), "a request in flight still holds its room");
        queue.done(&popped);
        assert!(!queue.is_full());
        assert_eq!(queue.size(), 5);
    }

    #[tokio::test]
    async fn close_lets_consumers_drain_then_end() {
        let queue = MemoryQueue::new(10, WhenFull::Block);
        queue.push(request(1)).await.unwrap();
        queue.close();
        assert!(matches!(
            queue.push(request(1)).await,
            Err(PushError::Closed(_))
        ));
        assert!(queue.pop().await.is_some());
        assert!(queue.pop().await.is_none());
    }

    #[tokio::test]
    async fn take_remaining_frees_their_room() {
        let queue = MemoryQueue::new(10, WhenFull::Block);
        queue.push(request(3)).await.unwrap();
        queue.push(request(4)).await.unwrap();
        let remaining = queue.take_remaining();
        assert_eq!(remaining.len(), 2);
        assert_eq!(queue.size(), 0);
    }
}
