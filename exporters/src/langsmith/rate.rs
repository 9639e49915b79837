//! A token bucket that caps requests per second.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// `rate` requests per second on average, bursts of up to `rate` (at
/// least one). A rate of zero means no cap.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
}

impl RateLimiter {
    pub fn new(rate: f64) -> RateLimiter {
        let burst = rate.max(1.0);
        RateLimiter {
            rate,
            burst,
            state: Mutex::new(Bucket {
                tokens: burst,
                refilled: Instant::now(),
            }),
        }
    }

    /// Waits for a token. Callers queue fairly: each takes its token (the
    /// bucket may go negative) and sleeps off its own debt.
    pub async fn acquire(&self) {
        if self.rate <= 0.0 {
            return;
        }
        let wait = {
            let mut bucket = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
            bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
            bucket.refilled = now;
            bucket.tokens -= 1.0;
            (bucket.tokens < 0.0).then(|| Duration::from_secs_f64(-bucket.tokens / self.rate))
        };
        if let Some(wait) = wait {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn spaces_requests_after_the_burst() {
        let limiter = RateLimiter::new(2.0);
        let start = Instant::now();
        for _ in 0..6 {
            limiter.acquire().await;
        }
        // Two in the burst, then one every half second.
        let elapsed = start.elapsed().as_secs_f64();
        assert!((1.9..2.1).contains(&elapsed), "{elapsed}");
    }

    #[tokio::test(start_paused = true)]
    async fn zero_means_no_cap() {
        let limiter = RateLimiter::new(0.0);
        let start = Instant::now();
        for _ in 0..100 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
