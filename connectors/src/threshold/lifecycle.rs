//! One alert group's lifecycle, with Alertmanager's semantics: inactive →
//! pending (for `for`) → firing → resolved; the first notification after
//! `group_wait`, and nothing at all for an alert that clears before it;
//! repeats every `repeat_interval`; a raised severity at once; a warning
//! still firing after `escalation_timeout` re-sent to the critical route;
//! and one resolved notification once it clears.

use std::time::Duration;

use lookout_pipelines::alert::{AlertSeverity, NotificationReason};
use time::OffsetDateTime;
use tokio::time::Instant;

/// The connector's timings, shared by every rule.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub group_wait: Duration,
    pub repeat_interval: Duration,
    /// Zero turns escalation off.
    pub escalation_timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub enum Phase {
    #[default]
    Inactive,
    Pending {
        since: Instant,
    },
    Firing(Firing),
}

#[derive(Debug, Clone)]
pub struct Firing {
    pub since: Instant,
    pub starts_at: OffsetDateTime,
    /// `None` until the first notification has gone out.
    pub last_sent: Option<Instant>,
    pub sent_severity: AlertSeverity,
    /// The highest severity sent: what the resolution reports.
    pub peak_severity: AlertSeverity,
    pub escalated: bool,
    /// The routes that have heard it fire, which hear it resolve.
    pub heard: Vec<AlertSeverity>,
}

/// What to send now.
#[derive(Debug, Clone, PartialEq)]
pub struct Notify {
    pub reason: NotificationReason,
    pub severity: AlertSeverity,
    pub routes: Vec<AlertSeverity>,
    pub starts_at: OffsetDateTime,
}

impl Phase {
    pub fn is_firing(&self) -> bool {
        matches!(self, Phase::Firing(_))
    }

    /// Moves the group on, given the severity its condition meets now
    /// (`None`: the condition does not hold).
    pub fn step(
        &mut self,
        level: Option<AlertSeverity>,
        hold_for: Duration,
        timing: &Timing,
        now: Instant,
        wall: OffsetDateTime,
    ) -> Option<Notify> {
        let Some(level) = level else {
            return self.clear();
        };
        if let Phase::Inactive = self {
            *self = Phase::Pending { since: now };
        }
        if let Phase::Pending { since } = *self {
            if now.duration_since(since) < hold_for {
                return None;
            }
            *self = Phase::Firing(Firing {
                since: now,
                starts_at: wall,
                last_sent: None,
                sent_severity: level,
                peak_severity: level,
                escalated: false,
                heard: Vec::new(),
            });
        }
        match self {
            Phase::Firing(firing) => firing.step(level, timing, now),
            _ => None,
        }
    }

    fn clear(&mut self) -> Option<Notify> {
        let previous = std::mem::take(self);
        match previous {
            Phase::Firing(firing) if firing.last_sent.is_some() => Some(Notify {
                reason: NotificationReason::Resolved,
                severity: firing.peak_severity,
                routes: firing.heard,
                starts_at: firing.starts_at,
            }),
            _ => None,
        }
    }
}

impl Firing {
    fn step(&mut self, level: AlertSeverity, timing: &Timing, now: Instant) -> Option<Notify> {
        let firing_for = now.duration_since(self.since);
        let (reason, route) = match self.last_sent {
            None if firing_for < timing.group_wait => return None,
            None => (NotificationReason::Firing, level),
            Some(_) if level > self.sent_severity => (NotificationReason::SeverityRaised, level),
            // One that the critical route has already heard needs no
            // escalation, even if it has since eased to a warning.
            Some(_)
                if level == AlertSeverity::Warning
                    && !self.escalated
                    && !self.heard.contains(&AlertSeverity::Critical)
                    && !timing.escalation_timeout.is_zero()
                    && firing_for >= timing.escalation_timeout =>
            {
                self.escalated = true;
                (NotificationReason::Escalation, AlertSeverity::Critical)
            }
            Some(last) if now.duration_since(last) >= timing.repeat_interval => {
                let route = if self.escalated {
                    AlertSeverity::Critical
                } else {
                    level
                };
                (NotificationReason::Repeat, route)
            }
            Some(_) => return None,
        };
        self.last_sent = Some(now);
        self.sent_severity = level;
        self.peak_severity = self.peak_severity.max(level);
        if !self.heard.contains(&route) {
            self.heard.push(route);
            self.heard.sort();
        }
        Some(Notify {
            reason,
            severity: level,
            routes: vec![route],
            starts_at: self.starts_at,
        })
    }
}
