//! Error groups: every server error (5xx, caught panics included; shed
//! 503s excluded, they are capacity) counted under a fingerprint of its
//! route template, method, status, code and cause kind, never of its
//! values, so one bug is one group however its messages differ.
//!
//! Requests count into this instance's memory ([`ErrorTally`], one short
//! lock per error response, no database); the background flush adds the
//! deltas to the shared `error_groups` rows (one transaction, batch id
//! looked up when its answer is lost, as the rollups'), and keeps them
//! while the database is down. Reads merge what is not written yet. A
//! group whose row the database created within the alert window raises
//! `new_error` through the alert lifecycle: the database, not an instance,
//! decides that a fingerprint is new, so it is raised once.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::Monitor;
use super::alerts::{Condition, Rule, Severity};
use super::flush::failure;
use super::views::Range;
use crate::store::errors::ErrorGroupRow;
use crate::time_fmt::{now_ms, rfc3339_from_ms};

/// What identifies an error group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ErrorKey<'a> {
    /// The route template (`unmatched` for none).
    pub route: &'a str,
    pub method: &'a str,
    pub status: u16,
    pub code: &'a str,
    /// The cause kind (`ErrorReport::kind`).
    pub cause: &'a str,
}

impl ErrorKey<'_> {
    /// The first 16 hex digits of SHA-256 over the key's fields: stable
    /// across instances, versions and restarts.
    pub(crate) fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.route,
            self.method,
            &self.status.to_string(),
            self.code,
            self.cause,
        ] {
            h.update(part.as_bytes());
            // A separator no field contains: ("a", "bc") and ("ab", "c")
            // must not hash alike.
            h.update([0u8]);
        }
        hex::encode(&h.finalize()[..8])
    }
}

/// Distinct groups kept unwritten. Groups are few by construction (routes ×
/// methods × statuses × codes × cause kinds, none chosen by a client), so
/// this is reached only by a long outage of a server failing in many ways;
/// then the group seen least recently is dropped for the new one, its count
/// reported by the next flush.
pub(crate) const MAX_PENDING_GROUPS: usize = 1_000;

/// Groups one read answers at most.
pub(crate) const MAX_LISTED_GROUPS: i64 = 100;

/// The series of `huntaze_errors_total`: route, method, status, cause.
type SeriesKey = (String, String, u16, String);

#[derive(Default)]
struct Tally {
    /// Unwritten deltas by fingerprint.
    pending: HashMap<String, ErrorGroupRow>,
    /// Errors since start per fingerprint, with the metric series it
    /// counts in (several codes may share one series), for `/metrics`.
    totals: HashMap<String, (SeriesKey, u64)>,
    /// Errors dropped from `pending` for its bound since the last flush.
    dropped: u64,
}

/// This instance's error counts: unwritten group deltas and the metric's
/// totals.
#[derive(Default)]
pub struct ErrorTally {
    instance: std::sync::OnceLock<String>,
    inner: std::sync::Mutex<Tally>,
}

/// Adds `from` to `into` (the same fingerprint).
fn merge(into: &mut ErrorGroupRow, from: &ErrorGroupRow) {
    into.count += from.count;
    into.first_seen = into.first_seen.min(from.first_seen);
    if from.last_seen >= into.last_seen {
        into.last_seen = from.last_seen;
        into.last_request_id.clone_from(&from.last_request_id);
    }
    for i in &from.instances {
        if !into.instances.contains(i) {
            into.instances.push(i.clone());
        }
    }
    into.instances.sort();
}

impl Tally {
    fn add(&mut self, row: ErrorGroupRow) {
        if let Some(g) = self.pending.get_mut(&row.fingerprint) {
            merge(g, &row);
            return;
        }
        if self.pending.len() >= MAX_PENDING_GROUPS {
            let oldest = self
                .pending
                .values()
                .min_by_key(|g| (g.last_seen, g.count))
                .map(|g| g.fingerprint.clone());
            if let Some(f) = oldest
                && let Some(g) = self.pending.remove(&f)
            {
                self.dropped += g.count;
            }
        }
        self.pending.insert(row.fingerprint.clone(), row);
    }
}

impl ErrorTally {
    fn inner(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name the unwritten groups list as their instance (set once by
    /// the monitor).
    pub(crate) fn set_instance(&self, instance: &str) {
        let _ = self.instance.set(instance.to_owned());
    }

    /// Counts one error response; returns its group's fingerprint. A group
    /// already pending costs a lookup and no allocation under the lock
    /// (an outage answers every request with an error, on every worker).
    pub(crate) fn record(&self, key: &ErrorKey<'_>, request_id: &str, at_ms: i64) -> String {
        let fingerprint = key.fingerprint();
        {
            let mut t = self.inner();
            if let Some((_, n)) = t.totals.get_mut(&fingerprint) {
                *n += 1;
                if let Some(g) = t.pending.get_mut(&fingerprint) {
                    g.count += 1;
                    g.first_seen = g.first_seen.min(at_ms);
                    if at_ms >= g.last_seen {
                        g.last_seen = at_ms;
                        g.last_request_id.clear();
                        g.last_request_id.push_str(request_id);
                    }
                    return fingerprint;
                }
                t.add(self.row(key, &fingerprint, request_id, at_ms));
                return fingerprint;
            }
        }
        let row = self.row(key, &fingerprint, request_id, at_ms);
        let series = (
            key.route.to_owned(),
            key.method.to_owned(),
            key.status,
            key.cause.to_owned(),
        );
        let mut t = self.inner();
        t.add(row);
        t.totals.entry(fingerprint.clone()).or_insert((series, 0)).1 += 1;
        fingerprint
    }

    /// A pending row for one error.
    fn row(
        &self,
        key: &ErrorKey<'_>,
        fingerprint: &str,
        request_id: &str,
        at_ms: i64,
    ) -> ErrorGroupRow {
        ErrorGroupRow {
            fingerprint: fingerprint.to_owned(),
            route: key.route.to_owned(),
            method: key.method.to_owned(),
            status: key.status,
            code: key.code.to_owned(),
            cause: key.cause.to_owned(),
            count: 1,
            first_seen: at_ms,
            last_seen: at_ms,
            last_request_id: request_id.to_owned(),
            instances: self.instance.get().cloned().into_iter().collect(),
        }
    }

    /// Every unwritten delta, leaving none, and how many errors the bound
    /// dropped since the last call.
    pub(crate) fn take_pending(&self) -> (Vec<ErrorGroupRow>, u64) {
        let mut t = self.inner();
        let rows = std::mem::take(&mut t.pending).into_values().collect();
        (rows, std::mem::take(&mut t.dropped))
    }

    /// Gives back deltas a flush could not write.
    pub(crate) fn restore(&self, rows: Vec<ErrorGroupRow>) {
        let mut t = self.inner();
        for row in rows {
            t.add(row);
        }
    }

    /// A copy of the unwritten deltas.
    pub(crate) fn pending(&self) -> Vec<ErrorGroupRow> {
        self.inner().pending.values().cloned().collect()
    }

    /// Errors since start per (route, method, status, cause).
    pub(crate) fn totals(&self) -> Vec<(SeriesKey, u64)> {
        let mut by_series: BTreeMap<SeriesKey, u64> = BTreeMap::new();
        for (series, n) in self.inner().totals.values() {
            *by_series.entry(series.clone()).or_default() += n;
        }
        by_series.into_iter().collect()
    }
}

/// An error batch whose commit is not known to have happened.
pub(super) struct InDoubtErrors {
    id: String,
    rows: Vec<ErrorGroupRow>,
}

/// The flush's state for error groups.
#[derive(Default)]
pub(super) struct ErrorFlush {
    in_doubt: std::sync::Mutex<Option<InDoubtErrors>>,
}

impl ErrorFlush {
    fn in_doubt(&self) -> std::sync::MutexGuard<'_, Option<InDoubtErrors>> {
        self.in_doubt.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// `ErrorGroup` of the API contract.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorGroup {
    /// First 16 hex digits of SHA-256 over route, method, status, code and
    /// cause: the `fingerprint` field of the server's log lines.
    pub fingerprint: String,
    /// The route template (`unmatched` when no route matched).
    pub route: String,
    pub method: String,
    pub status: u16,
    pub code: String,
    /// The cause kind: `internal`, `panic`, `database`,
    /// `database_unavailable`, `database_timeout`, `unavailable`,
    /// `upstream`, `upstream_timeout`, `deadline`.
    pub cause: String,
    /// Errors in this group since it was first seen (all time, every
    /// instance), not only within the range.
    pub count: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// The request id of the latest error: its log lines carry it.
    pub last_request_id: String,
    /// Every instance that saw this group.
    pub instances: Vec<String>,
}

impl From<ErrorGroupRow> for ErrorGroup {
    fn from(g: ErrorGroupRow) -> Self {
        Self {
            fingerprint: g.fingerprint,
            route: g.route,
            method: g.method,
            status: g.status,
            code: g.code,
            cause: g.cause,
            count: g.count,
            first_seen: rfc3339_from_ms(g.first_seen),
            last_seen: rfc3339_from_ms(g.last_seen),
            last_request_id: g.last_request_id,
            instances: g.instances,
        }
    }
}

/// Adds unwritten deltas to stored groups (`extra` are the stored rows of
/// deltas' groups outside `stored`); keeps those last seen from `from` on,
/// most recently seen first, at most `limit`.
fn merge_groups(
    stored: Vec<ErrorGroupRow>,
    extra: Vec<ErrorGroupRow>,
    unwritten: Vec<ErrorGroupRow>,
    from: i64,
    limit: usize,
) -> Vec<ErrorGroupRow> {
    let mut by_fp: HashMap<String, ErrorGroupRow> = HashMap::new();
    for g in stored.into_iter().chain(extra) {
        by_fp.entry(g.fingerprint.clone()).or_insert(g);
    }
    for d in unwritten {
        match by_fp.get_mut(&d.fingerprint) {
            Some(g) => merge(g, &d),
            None => {
                by_fp.insert(d.fingerprint.clone(), d);
            }
        }
    }
    let mut out: Vec<_> = by_fp
        .into_values()
        .filter(|g| g.last_seen >= from)
        .collect();
    out.sort_by(|a, b| {
        b.last_seen
            .cmp(&a.last_seen)
            .then_with(|| a.fingerprint.cmp(&b.fingerprint))
    });
    out.truncate(limit);
    out
}

impl Monitor {
    /// [`flush_errors`](Self::flush_errors) as one step of the monitoring
    /// flush: an unreachable database fails the flush (the rollups would
    /// fail too), but a write the database rejects (a bug) must not hold
    /// the rollups and health samples back; its deltas stay in memory.
    pub(super) async fn flush_error_groups(&self) -> Result<(), sqlx::Error> {
        match self.flush_errors().await {
            Err(e) if crate::store::classify(&e) == crate::store::Fault::Permanent => {
                tracing::error!(error = %e, "error groups could not be written; kept in memory");
                Ok(())
            }
            other => other,
        }
    }

    /// Writes the unwritten error deltas in one batch. A batch whose
    /// outcome is unknown is looked up by its id first, so no delta is
    /// added twice; what could not be written stays for the next flush.
    pub(super) async fn flush_errors(&self) -> Result<(), sqlx::Error> {
        let _gate = self.flush_gate.write().await;
        let doubt = self.error_flush.in_doubt().take();
        if let Some(doubt) = doubt {
            match tokio::time::timeout(self.flush_budget, self.db.batch_written(&doubt.id)).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => self.metrics.errors.restore(doubt.rows),
                failed => {
                    *self.error_flush.in_doubt() = Some(doubt);
                    return Err(failure(failed));
                }
            }
        }
        let (rows, dropped) = self.metrics.errors.take_pending();
        if dropped > 0 {
            tracing::warn!(
                errors = dropped,
                bound = MAX_PENDING_GROUPS,
                "error groups beyond the outage buffer were dropped (least recently seen first)"
            );
        }
        if rows.is_empty() {
            return Ok(());
        }
        let batch = uuid::Uuid::now_v7().simple().to_string();
        let write = self
            .db
            .write_error_batch(&batch, &self.instance, &rows, now_ms());
        match tokio::time::timeout(self.flush_budget, write).await {
            Ok(Ok(())) => Ok(()),
            failed => {
                *self.error_flush.in_doubt() = Some(InDoubtErrors { id: batch, rows });
                Err(failure(failed))
            }
        }
    }

    /// Error groups last seen within `range`, most recently seen first (at
    /// most [`MAX_LISTED_GROUPS`]): every instance's from the database with
    /// this instance's unwritten deltas added. While the database cannot
    /// answer, this instance's unwritten groups alone (their counts are
    /// what it saw since its last flush), rather than no answer during the
    /// outage an operator most needs them in.
    pub async fn error_groups(&self, range: Range) -> Result<Vec<ErrorGroup>, sqlx::Error> {
        let from = now_ms() - range.millis();
        let limit = MAX_LISTED_GROUPS as usize;
        let _gate = self.flush_gate.read().await;
        let unwritten = self.metrics.errors.pending();
        let stored = match self.db.error_groups_since(from, MAX_LISTED_GROUPS).await {
            Ok(stored) => stored,
            Err(e) if crate::store::classify(&e) != crate::store::Fault::Permanent => {
                tracing::debug!(error = %e, "error groups from memory: the database is unreachable");
                let mut rows = unwritten;
                if let Some(doubt) = self.error_flush.in_doubt().as_ref() {
                    rows.extend(doubt.rows.iter().cloned());
                }
                return Ok(merge_groups(Vec::new(), Vec::new(), rows, from, limit)
                    .into_iter()
                    .map(ErrorGroup::from)
                    .collect());
            }
            Err(e) => return Err(e),
        };
        // A delta's group may be stored but outside the first page (or the
        // range, until this delta): its stored count is needed all the same.
        let missing: Vec<String> = unwritten
            .iter()
            .filter(|d| !stored.iter().any(|g| g.fingerprint == d.fingerprint))
            .map(|d| d.fingerprint.clone())
            .collect();
        let extra = self.db.error_groups_by_fingerprint(&missing).await?;
        Ok(merge_groups(stored, extra, unwritten, from, limit)
            .into_iter()
            .map(ErrorGroup::from)
            .collect())
    }

    /// How long a `new_error` condition holds after its group was created:
    /// the alert window, and at least long enough to fire (pending for
    /// `HUNTAZE_ALERT_FOR_MS`, seen by two evaluations).
    fn new_error_hold_ms(&self) -> i64 {
        let eval = i64::try_from(self.evaluate_every.as_millis()).unwrap_or(i64::MAX);
        self.thresholds.window_ms.max(
            self.thresholds
                .for_ms
                .saturating_add(eval.saturating_mul(2)),
        )
    }

    /// `new_error` conditions: groups whose row the database created within
    /// the hold. Evaluated with the shared alerts only (the database
    /// decides what is new): a group first seen during an outage raises it
    /// once written, if no instance wrote it before.
    pub(super) async fn new_error_conditions(
        &self,
        now: i64,
    ) -> Result<Vec<Condition>, sqlx::Error> {
        let created = self
            .db
            .error_groups_created_since(now - self.new_error_hold_ms())
            .await?;
        Ok(created.into_iter().map(new_error_condition).collect())
    }
}

fn new_error_condition(g: ErrorGroupRow) -> Condition {
    Condition {
        rule: Rule::NewError,
        key: format!("new_error:{}", g.fingerprint),
        severity: Severity::Medium,
        summary: format!(
            "new error: {} {} answered {} {} (cause {})",
            g.method, g.route, g.status, g.code, g.cause
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(route: &'a str, cause: &'a str) -> ErrorKey<'a> {
        ErrorKey {
            route,
            method: "GET",
            status: 500,
            code: "INTERNAL_ERROR",
            cause,
        }
    }

    #[test]
    fn fingerprints_are_stable_and_tell_every_field_apart() {
        let a = key("/api/x", "panic").fingerprint();
        assert_eq!(a.len(), 16);
        assert_eq!(a, key("/api/x", "panic").fingerprint());
        assert_ne!(a, key("/api/x", "internal").fingerprint());
        assert_ne!(a, key("/api/y", "panic").fingerprint());
        let shifted = ErrorKey {
            route: "/api/xGET",
            method: "",
            ..key("", "panic")
        };
        assert_ne!(a, shifted.fingerprint());
    }

    #[test]
    fn one_group_per_fingerprint_with_exact_counts_and_the_newest_request() {
        let t = ErrorTally::default();
        t.set_instance("i1");
        for (i, at) in [30, 10, 20].into_iter().enumerate() {
            t.record(&key("/a", "panic"), &format!("req-{i}"), at);
        }
        t.record(&key("/a", "internal"), "req-x", 5);
        let (mut rows, dropped) = t.take_pending();
        assert_eq!(dropped, 0);
        rows.sort_by_key(|r| r.count);
        assert_eq!(rows.len(), 2);
        let g = &rows[1];
        assert_eq!((g.count, g.first_seen, g.last_seen), (3, 10, 30));
        assert_eq!(g.last_request_id, "req-0");
        assert_eq!(g.instances, vec!["i1".to_owned()]);
        assert!(t.take_pending().0.is_empty(), "taken");
        let totals = t.totals();
        assert_eq!(totals.iter().map(|(_, n)| n).sum::<u64>(), 4, "totals stay");
        // after a flush took it, the group starts a new delta
        t.record(&key("/a", "panic"), "req-y", 40);
        let (rows, _) = t.take_pending();
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[0].count, rows[0].first_seen), (1, 40));
        // two codes of one cause on one route: two groups, one series
        let other_code = ErrorKey {
            code: "OTHER",
            ..key("/a", "panic")
        };
        t.record(&other_code, "req-z", 50);
        let series: Vec<_> = t
            .totals()
            .into_iter()
            .filter(|((route, _, _, cause), _)| route == "/a" && cause == "panic")
            .map(|(_, n)| n)
            .collect();
        assert_eq!(series, vec![5]);
    }

    #[test]
    fn the_buffer_is_bounded_and_drops_the_least_recently_seen() {
        let t = ErrorTally::default();
        let routes: Vec<String> = (0..=MAX_PENDING_GROUPS).map(|i| format!("/r{i}")).collect();
        t.record(&key(&routes[0], "panic"), "old", 1);
        t.record(&key(&routes[0], "panic"), "old", 2);
        for (i, r) in routes.iter().enumerate().skip(1) {
            t.record(&key(r, "panic"), "new", 100 + i as i64);
        }
        let (rows, dropped) = t.take_pending();
        assert_eq!(rows.len(), MAX_PENDING_GROUPS);
        assert_eq!(dropped, 2, "the oldest group's two errors");
        assert!(rows.iter().all(|r| r.route != "/r0"));
    }

    #[test]
    fn reads_add_unwritten_deltas_and_keep_the_newest_first() {
        let row = |f: &str, count, first, last, inst: &str| ErrorGroupRow {
            fingerprint: f.into(),
            route: "/a".into(),
            method: "GET".into(),
            status: 500,
            code: "INTERNAL_ERROR".into(),
            cause: "panic".into(),
            count,
            first_seen: first,
            last_seen: last,
            last_request_id: format!("{f}-{last}"),
            instances: vec![inst.into()],
        };
        let stored = vec![row("a", 5, 10, 50, "i1"), row("b", 1, 40, 40, "i2")];
        let extra = vec![row("c", 7, 1, 2, "i2")];
        let unwritten = vec![row("b", 2, 60, 70, "i1"), row("c", 1, 80, 80, "i1")];
        let out = merge_groups(stored, extra, unwritten, 30, 10);
        let summary: Vec<_> = out
            .iter()
            .map(|g| {
                (
                    g.fingerprint.as_str(),
                    g.count,
                    g.first_seen,
                    g.instances.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![("c", 8, 1, 2), ("b", 3, 40, 2), ("a", 5, 10, 1)]
        );
        assert_eq!(out[1].last_request_id, "b-70");
        let out = merge_groups(vec![row("a", 5, 10, 20, "i1")], vec![], vec![], 30, 10);
        assert!(out.is_empty(), "last seen before the range");
    }
}
