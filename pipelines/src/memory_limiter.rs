//! `service.memory_limit_mib`: the collector's memory_limiter, folded into
//! the receivers' admission check. A sampler reads the resident set size
//! every 50 ms; while it is above the soft limit (the limit less
//! `memory_spike_limit_mib`, 20% by default, as in the collector), every
//! receiver refuses new data (429 / RESOURCE_EXHAUSTED) and what is inside
//! drains. The spike allowance is room for the requests already being read
//! when the limiter trips.
//!
//! Refusing at the door rather than dropping inside keeps the promise that
//! nothing accepted is lost, and costs one atomic load per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::stage_channel::Backpressure;
use crate::telemetry::process;

const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Default)]
pub struct MemoryLimiter {
    over_limit: AtomicBool,
}

impl Backpressure for MemoryLimiter {
    fn is_full(&self) -> bool {
        self.over_limit.load(Ordering::Relaxed)
    }
}

impl MemoryLimiter {
    /// Starts sampling until `stop` is cancelled. Refuses above
    /// `limit_mib - spike_mib`.
    pub fn start(limit_mib: u64, spike_mib: u64, stop: CancellationToken) -> Arc<MemoryLimiter> {
        let limiter = Arc::new(MemoryLimiter::default());
        let limit = limit_mib.saturating_sub(spike_mib) * 1024 * 1024;
        let gauge = metrics::gauge!("lookout_memory_limit_exceeded");
        metrics::gauge!("lookout_memory_limit_bytes").set((limit_mib * 1024 * 1024) as f64);
        let sampler = limiter.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SAMPLE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.cancelled() => return,
                }
                let Some(rss) = process::rss_bytes() else {
                    continue;
                };
                let over = rss > limit;
                if sampler.over_limit.swap(over, Ordering::Relaxed) != over {
                    gauge.set(if over { 1.0 } else { 0.0 });
                    if over {
                        tracing::warn!(
                            rss,
                            limit,
                            "memory limit exceeded: refusing new data until it drains"
                        );
                    } else {
                        tracing::info!(
                            rss,
                            soft_limit = limit,
                            "memory back under the limit: accepting data"
                        );
                    }
                }
            }
        });
        limiter
    }
}
