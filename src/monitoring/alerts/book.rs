//! The alert lifecycle (pending → firing → resolved, or cancelled when a
//! condition stops holding before it fired), kept in the database or, while
//! the database is unreachable, in this instance's memory.

use std::collections::HashMap;

use super::{Condition, Thresholds};
use crate::store::Db;
use crate::store::monitoring::AlertRow;

pub(crate) use crate::store::monitoring::AlertState;

/// What a notification announces; sent as [`as_str`](Self::as_str).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NotificationStatus {
    Firing,
    Resolved,
}

impl NotificationStatus {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            NotificationStatus::Firing => "firing",
            NotificationStatus::Resolved => "resolved",
        }
    }
}

/// Where the alert lifecycle is kept: the database normally, this
/// instance's memory while the database is unreachable.
#[async_trait::async_trait]
pub(crate) trait AlertBook: Send + Sync {
    async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error>;
    async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error>;
    async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error>;
}

#[async_trait::async_trait]
impl AlertBook for Db {
    async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error> {
        Db::open_alerts(self).await
    }
    async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        Db::insert_alert(self, a).await
    }
    async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        Db::update_alert(self, a).await
    }
}

/// Alerts this instance raised on its own while the database was
/// unreachable; handed to the database when it returns. Finished ones are
/// kept (bounded) so that the history shows them afterwards.
#[derive(Default)]
pub(crate) struct LocalAlerts {
    rows: std::sync::Mutex<Vec<AlertRow>>,
}

/// Finished local alerts kept for the history beyond this are dropped.
const MAX_LOCAL_ALERTS: usize = 1_000;

impl LocalAlerts {
    fn rows(&self) -> std::sync::MutexGuard<'_, Vec<AlertRow>> {
        self.rows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every alert, to hand over to the database.
    pub(crate) fn all(&self) -> Vec<AlertRow> {
        self.rows().clone()
    }

    /// Forgets one the database has taken.
    pub(crate) fn remove(&self, id: &str) {
        self.rows().retain(|r| r.id != id);
    }

    /// Pending and firing ones.
    pub(crate) fn open(&self) -> Vec<AlertRow> {
        self.rows()
            .iter()
            .filter(|a| a.state.is_open())
            .cloned()
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.rows().is_empty()
    }
}

#[async_trait::async_trait]
impl AlertBook for LocalAlerts {
    async fn open_alerts(&self) -> Result<Vec<AlertRow>, sqlx::Error> {
        Ok(self.open())
    }
    async fn insert_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        self.rows().push(a.clone());
        Ok(())
    }
    async fn update_alert(&self, a: &AlertRow) -> Result<(), sqlx::Error> {
        let mut rows = self.rows();
        if let Some(row) = rows.iter_mut().find(|r| r.id == a.id) {
            *row = a.clone();
        }
        // Cancelled ones never fired: nothing to keep.
        rows.retain(|r| r.state != AlertState::Cancelled);
        let resolved = |r: &AlertRow| r.state == AlertState::Resolved;
        let finished = rows.iter().filter(|r| resolved(r)).count();
        if finished > MAX_LOCAL_ALERTS {
            let mut drop = finished - MAX_LOCAL_ALERTS;
            rows.retain(|r| {
                let old = resolved(r) && drop > 0;
                drop -= usize::from(old);
                !old
            });
        }
        Ok(())
    }
}

/// A notification about one alert.
#[derive(Clone, Debug)]
pub(crate) struct Notification {
    pub status: NotificationStatus,
    pub alert: AlertRow,
}

/// Moves every alert one step given the conditions that hold now; returns
/// the notifications to send.
pub(crate) async fn advance(
    db: &dyn AlertBook,
    t: &Thresholds,
    holding: &[Condition],
    now: i64,
) -> Result<Vec<Notification>, sqlx::Error> {
    let mut notes = Vec::new();
    let open = db.open_alerts().await?;
    let mut open_by_key: HashMap<String, AlertRow> =
        open.into_iter().map(|a| (a.alert_key.clone(), a)).collect();
    for c in holding {
        match open_by_key.remove(&c.key) {
            None => {
                let a = AlertRow {
                    id: uuid::Uuid::now_v7().simple().to_string(),
                    rule: c.rule.as_str().into(),
                    alert_key: c.key.clone(),
                    severity: c.severity.as_str().into(),
                    state: AlertState::Pending,
                    summary: c.summary.clone(),
                    started_at: now,
                    fired_at: None,
                    resolved_at: None,
                    last_notified_at: None,
                    notifications: 0,
                };
                db.insert_alert(&a).await?;
                if t.for_ms == 0 {
                    fire(db, a, now, &mut notes).await?;
                }
            }
            Some(mut a) => {
                a.summary = c.summary.clone();
                if a.state == AlertState::Pending && now - a.started_at >= t.for_ms {
                    fire(db, a, now, &mut notes).await?;
                } else if a.state == AlertState::Firing
                    && a.last_notified_at.is_some_and(|l| now - l >= t.repeat_ms)
                {
                    notify(db, a, NotificationStatus::Firing, now, &mut notes).await?;
                } else {
                    db.update_alert(&a).await?;
                }
            }
        }
    }
    // Whatever is still open no longer holds.
    for (_, mut a) in open_by_key {
        if a.state == AlertState::Firing {
            a.state = AlertState::Resolved;
            a.resolved_at = Some(now);
            notify(db, a, NotificationStatus::Resolved, now, &mut notes).await?;
        } else {
            a.state = AlertState::Cancelled;
            a.resolved_at = Some(now);
            db.update_alert(&a).await?;
        }
    }
    Ok(notes)
}

async fn fire(
    db: &dyn AlertBook,
    mut a: AlertRow,
    now: i64,
    notes: &mut Vec<Notification>,
) -> Result<(), sqlx::Error> {
    a.state = AlertState::Firing;
    a.fired_at = Some(now);
    notify(db, a, NotificationStatus::Firing, now, notes).await
}

/// Records that `a` is announced now (`status`) and queues the announcement:
/// the firing, each repeat while it fires, and the resolution.
async fn notify(
    db: &dyn AlertBook,
    mut a: AlertRow,
    status: NotificationStatus,
    now: i64,
    notes: &mut Vec<Notification>,
) -> Result<(), sqlx::Error> {
    a.last_notified_at = Some(now);
    a.notifications += 1;
    db.update_alert(&a).await?;
    notes.push(Notification { status, alert: a });
    Ok(())
}
