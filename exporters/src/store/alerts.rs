//! Alerts as `alert_history` rows: one row per firing episode of an alert
//! group, written when it first fires, updated when its severity changes
//! or it escalates, and given `resolved_at` when it clears.

use lookout_pipelines::alert::{Alert, AlertStatus};
use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

/// The design documents' `alert_type` width.
const ALERT_TYPE_WIDTH: usize = 50;

#[derive(Debug, Clone, PartialEq)]
pub struct AlertRow {
    /// The episode: fingerprint and start. PostgreSQL keys on it as a
    /// UUID, SQLite's integer key takes its first half.
    pub episode: [u8; 16],
    pub alert_type: String,
    pub severity: String,
    pub message: String,
    pub triggered_at: OffsetDateTime,
    pub resolved_at: Option<OffsetDateTime>,
    pub metadata: String,
}

impl AlertRow {
    pub fn of(alert: &Alert) -> AlertRow {
        let fingerprint = u64::from_str_radix(&alert.fingerprint, 16).unwrap_or_else(|_| {
            // Not ours: hash it rather than lose the row.
            alert
                .fingerprint
                .bytes()
                .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                    (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
                })
        });
        let start = alert.starts_at.unix_timestamp_nanos() as u64;
        let mut episode = [0; 16];
        episode[..8].copy_from_slice(&fingerprint.to_be_bytes());
        episode[8..].copy_from_slice(&start.to_be_bytes());
        AlertRow {
            episode,
            alert_type: alert.rule.chars().take(ALERT_TYPE_WIDTH).collect(),
            severity: alert.severity.as_str().to_string(),
            message: alert.summary.clone(),
            triggered_at: alert.starts_at,
            resolved_at: match alert.status {
                AlertStatus::Resolved => Some(alert.ends_at.unwrap_or(alert.starts_at)),
                AlertStatus::Firing => None,
            },
            metadata: json!({
                "rule": alert.rule,
                "metric": alert.metric,
                "fingerprint": alert.fingerprint,
                "incident_class": alert.incident_class,
                "group_labels": alert.group_labels,
                "observed": alert.observed,
                "threshold": alert.threshold,
                "comparison": alert.comparison,
                "window": alert.window,
                "reason": alert.reason,
                "routes": alert.routes,
                "example_trace_ids": alert.example_trace_ids,
                "runbook_url": alert.runbook_url,
            })
            .to_string(),
        }
    }

    pub fn uuid(&self) -> Uuid {
        uuid::Builder::from_custom_bytes(self.episode).into_uuid()
    }

    /// SQLite's rowid: positive, from the episode's fingerprint and start.
    pub fn integer_id(&self) -> i64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for byte in self.episode {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
        (hash >> 1) as i64
    }
}

/// The upsert both dialects share: a firing notification writes the
/// current severity and summary; a resolution only sets `resolved_at`
/// (or inserts the whole row, if the store never saw the alert fire).
pub const UPSERT_TAIL: &str = "ON CONFLICT (id) DO UPDATE SET \
     severity = CASE WHEN excluded.resolved_at IS NULL THEN excluded.severity ELSE alert_history.severity END, \
     message = CASE WHEN excluded.resolved_at IS NULL THEN excluded.message ELSE alert_history.message END, \
     metadata = CASE WHEN excluded.resolved_at IS NULL THEN excluded.metadata ELSE alert_history.metadata END, \
     resolved_at = excluded.resolved_at";

#[cfg(test)]
mod tests {
    use super::*;
    use lookout_pipelines::alert::NotificationReason;

    #[test]
    fn one_episode_one_key_whatever_the_notification() {
        let firing = AlertRow::of(&Alert::example());
        let mut resolved = Alert::example();
        resolved.status = AlertStatus::Resolved;
        resolved.reason = NotificationReason::Resolved;
        resolved.ends_at = Some(OffsetDateTime::UNIX_EPOCH + time::Duration::minutes(5));
        let resolved = AlertRow::of(&resolved);
        assert_eq!(firing.uuid(), resolved.uuid());
        assert_eq!(firing.integer_id(), resolved.integer_id());
        assert!(firing.integer_id() >= 0);
        assert_eq!(firing.resolved_at, None);
        assert!(resolved.resolved_at.is_some());
        let mut later = Alert::example();
        later.starts_at += time::Duration::hours(1);
        assert_ne!(AlertRow::of(&later).uuid(), firing.uuid());
    }
}
