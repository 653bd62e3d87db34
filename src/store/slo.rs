//! SLO event counts per time slot (`slo_slots`). SQL only.

use sqlx::Row;

use super::Db;

/// Requests to non-probe routes in one slot: all of them, those answered
/// with 5xx and those slower than the latency objective.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SloCounts {
    pub requests: u64,
    pub errors: u64,
    pub slow: u64,
}

impl SloCounts {
    pub fn add(&mut self, other: &SloCounts) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.slow += other.slow;
    }
}

/// One slot's counts; `slot` is the slot's start, epoch ms.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SloSlot {
    pub slot: i64,
    pub counts: SloCounts,
}

impl Db {
    /// Adds one flush's slot deltas to this instance's rows, with the
    /// batch's id (see [`batch_written`](Self::batch_written)), in one
    /// write transaction. Rows go in the order given (callers sort by
    /// slot): one order for every writer.
    pub async fn write_slo_batch(
        &self,
        batch: &str,
        instance: &str,
        slots: &[SloSlot],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let mut tx = self.begin_write().await?;
        for s in slots {
            sqlx::query(
                "INSERT INTO slo_slots (slot, instance, requests, errors, slow) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (slot, instance) DO UPDATE SET \
                 requests = slo_slots.requests + excluded.requests, \
                 errors = slo_slots.errors + excluded.errors, \
                 slow = slo_slots.slow + excluded.slow",
            )
            .bind(s.slot)
            .bind(instance)
            .bind(s.counts.requests as i64)
            .bind(s.counts.errors as i64)
            .bind(s.counts.slow as i64)
            .execute(&mut *tx)
            .await?;
        }
        super::monitoring::commit_batch(tx, batch, instance, now).await
    }

    /// Every instance's counts per slot from `from` (epoch ms) on, summed,
    /// oldest first.
    pub async fn slo_slots_since(&self, from: i64) -> Result<Vec<SloSlot>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT slot, CAST(SUM(requests) AS BIGINT) AS requests, \
                    CAST(SUM(errors) AS BIGINT) AS errors, CAST(SUM(slow) AS BIGINT) AS slow \
             FROM slo_slots WHERE slot >= $1 GROUP BY slot ORDER BY slot",
        )
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                let n = |c: &str| r.try_get::<i64, _>(c).map(|v| v.max(0) as u64);
                Ok(SloSlot {
                    slot: r.try_get("slot")?,
                    counts: SloCounts {
                        requests: n("requests")?,
                        errors: n("errors")?,
                        slow: n("slow")?,
                    },
                })
            })
            .collect()
    }

    /// Deletes slots older than `before`; returns rows deleted.
    pub async fn prune_slo(&self, before: i64) -> Result<u64, sqlx::Error> {
        Ok(sqlx::query("DELETE FROM slo_slots WHERE slot < $1")
            .bind(before)
            .execute(self.pool())
            .await?
            .rows_affected())
    }
}
