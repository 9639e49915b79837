//! Exponential backoff with jitter, as the collector's `retry_on_failure`.

use std::time::Duration;

use serde::Deserialize;

/// `retry_on_failure`. Defaults are the collector's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    #[serde(with = "humantime_serde")]
    pub initial_interval: Duration,
    #[serde(with = "humantime_serde")]
    pub max_interval: Duration,
    /// How long to keep retrying one request; `0s` means forever.
    #[serde(with = "humantime_serde")]
    pub max_elapsed_time: Duration,
    pub multiplier: f64,
    /// Each wait is the interval times a random factor in `1 ± this`.
    pub randomization_factor: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_secs(5),
            max_interval: Duration::from_secs(30),
            max_elapsed_time: Duration::from_secs(300),
            multiplier: 1.5,
            randomization_factor: 0.5,
        }
    }
}

impl RetryConfig {
    pub fn check(&self) -> Result<(), String> {
        if self.multiplier < 1.0 {
            return Err("retry_on_failure.multiplier must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.randomization_factor) {
            return Err("retry_on_failure.randomization_factor must be between 0 and 1".into());
        }
        if self.initial_interval.is_zero() || self.initial_interval > self.max_interval {
            return Err(
                "retry_on_failure.initial_interval must be above zero and at most max_interval"
                    .into(),
            );
        }
        Ok(())
    }

    pub fn max_elapsed(&self) -> Option<Duration> {
        (!self.max_elapsed_time.is_zero()).then_some(self.max_elapsed_time)
    }
}

/// The waits between attempts of one request.
pub struct Backoff<'a> {
    config: &'a RetryConfig,
    interval: Duration,
}

impl<'a> Backoff<'a> {
    pub fn new(config: &'a RetryConfig) -> Backoff<'a> {
        Backoff {
            config,
            interval: config.initial_interval,
        }
    }

    /// The next wait: the current interval, jittered; the interval grows.
    pub fn next_wait(&mut self) -> Duration {
        let spread = self.config.randomization_factor;
        let factor = 1.0 - spread + 2.0 * spread * fastrand::f64();
        let wait = self.interval.mul_f64(factor);
        self.interval = self
            .interval
            .mul_f64(self.config.multiplier)
            .min(self.config.max_interval);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_within_the_jitter() {
        let config = RetryConfig {
            initial_interval: Duration::from_secs(1),
            max_interval: Duration::from_secs(4),
            multiplier: 2.0,
            randomization_factor: 0.5,
            ..Default::default()
        };
        let mut backoff = Backoff::new(&config);
        for expected in [1.0, 2.0, 4.0, 4.0] {
            let wait = backoff.next_wait().as_secs_f64();
            assert!(
                wait >= expected * 0.5 && wait <= expected * 1.5,
                "{wait} vs {expected}"
            );
        }
    }

    #[test]
    fn rejects_nonsense() {
        let config = RetryConfig {
            multiplier: 0.5,
            ..Default::default()
        };
        assert!(config.check().is_err());
        assert!(RetryConfig::default().check().is_ok());
    }
}
