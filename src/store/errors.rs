//! Error groups: counts of server errors per fingerprint, summed over every
//! instance, and which instances saw each. SQL only.

use sqlx::Row;

use super::Db;

/// One error group, or one instance's unwritten delta of it (then `count`
/// is what it saw since its last flush and `instances` is itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorGroupRow {
    pub fingerprint: String,
    pub route: String,
    pub method: String,
    pub status: u16,
    pub code: String,
    pub cause: String,
    pub count: u64,
    /// Epoch ms.
    pub first_seen: i64,
    pub last_seen: i64,
    pub last_request_id: String,
    /// Instance names, sorted.
    pub instances: Vec<String>,
}

const GROUP_COLUMNS: &str = "fingerprint, route, method, status, code, cause, count, first_seen, last_seen, last_request_id";

fn group_from(r: &sqlx::any::AnyRow) -> Result<ErrorGroupRow, sqlx::Error> {
    let status: i64 = r.try_get("status")?;
    let count: i64 = r.try_get("count")?;
    Ok(ErrorGroupRow {
        fingerprint: r.try_get("fingerprint")?,
        route: r.try_get("route")?,
        method: r.try_get("method")?,
        status: u16::try_from(status).unwrap_or(500),
        code: r.try_get("code")?,
        cause: r.try_get("cause")?,
        count: count.max(0) as u64,
        first_seen: r.try_get("first_seen")?,
        last_seen: r.try_get("last_seen")?,
        last_request_id: r.try_get("last_request_id")?,
        instances: Vec::new(),
    })
}

impl Db {
    /// Adds one instance's error group deltas in one transaction, with the
    /// batch's id in `monitoring_batches` so that a flush whose answer was
    /// lost can tell ([`batch_written`](Self::batch_written)) whether it
    /// committed. Counts add up; first_seen is the earliest, last_seen and
    /// last_request_id the newest of every writer. A group's `created_at`
    /// is `now` of the write that inserted it, and never changes after.
    ///
    /// Rows are written in fingerprint order (one order for every writer:
    /// two instances' transactions never wait on each other's rows in
    /// opposite orders).
    pub async fn write_error_batch(
        &self,
        batch: &str,
        instance: &str,
        groups: &[ErrorGroupRow],
        now: i64,
    ) -> Result<(), sqlx::Error> {
        let mut sorted: Vec<&ErrorGroupRow> = groups.iter().collect();
        sorted.sort_by(|a, b| a.fingerprint.cmp(&b.fingerprint));
        let mut tx = self.begin_write().await?;
        for g in sorted {
            // Every SET expression reads the row as it was before this
            // statement (both backends), so the CASEs compare old and new.
            sqlx::query(
                "INSERT INTO error_groups (fingerprint, route, method, status, code, cause, count, \
                 first_seen, last_seen, last_request_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
                 ON CONFLICT (fingerprint) DO UPDATE SET count = error_groups.count + excluded.count, \
                 first_seen = CASE WHEN excluded.first_seen < error_groups.first_seen \
                     THEN excluded.first_seen ELSE error_groups.first_seen END, \
                 last_request_id = CASE WHEN excluded.last_seen >= error_groups.last_seen \
                     THEN excluded.last_request_id ELSE error_groups.last_request_id END, \
                 last_seen = CASE WHEN excluded.last_seen > error_groups.last_seen \
                     THEN excluded.last_seen ELSE error_groups.last_seen END",
            )
            .bind(&g.fingerprint)
            .bind(&g.route)
            .bind(&g.method)
            .bind(i64::from(g.status))
            .bind(&g.code)
            .bind(&g.cause)
            .bind(g.count as i64)
            .bind(g.first_seen)
            .bind(g.last_seen)
            .bind(&g.last_request_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO error_group_instances (fingerprint, instance, count, last_seen) \
                 VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (fingerprint, instance) DO UPDATE SET \
                 count = error_group_instances.count + excluded.count, \
                 last_seen = CASE WHEN excluded.last_seen > error_group_instances.last_seen \
                     THEN excluded.last_seen ELSE error_group_instances.last_seen END",
            )
            .bind(&g.fingerprint)
            .bind(instance)
            .bind(g.count as i64)
            .bind(g.last_seen)
            .execute(&mut *tx)
            .await?;
        }
        super::monitoring::commit_batch(tx, batch, instance, now).await
    }

    /// Groups last seen at or after `from`, most recently seen first, at
    /// most `limit`, each with the instances that saw it.
    pub async fn error_groups_since(
        &self,
        from: i64,
        limit: i64,
    ) -> Result<Vec<ErrorGroupRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM error_groups WHERE last_seen >= $1 \
             ORDER BY last_seen DESC, fingerprint LIMIT $2"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .bind(limit)
            .fetch_all(self.pool())
            .await?;
        let mut groups = rows.iter().map(group_from).collect::<Result<Vec<_>, _>>()?;
        self.add_instances(&mut groups, from).await?;
        Ok(groups)
    }

    /// The groups with these fingerprints (those that exist), with their
    /// instances.
    pub async fn error_groups_by_fingerprint(
        &self,
        fingerprints: &[String],
    ) -> Result<Vec<ErrorGroupRow>, sqlx::Error> {
        let sql = format!("SELECT {GROUP_COLUMNS} FROM error_groups WHERE fingerprint = $1");
        let mut groups = Vec::new();
        for f in fingerprints {
            if let Some(r) = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
                .bind(f)
                .fetch_optional(self.pool())
                .await?
            {
                groups.push(group_from(&r)?);
            }
        }
        let from = groups.iter().map(|g| g.last_seen).min().unwrap_or(0);
        self.add_instances(&mut groups, from).await?;
        Ok(groups)
    }

    /// Fills in `instances` of groups last seen at or after `from`.
    async fn add_instances(
        &self,
        groups: &mut [ErrorGroupRow],
        from: i64,
    ) -> Result<(), sqlx::Error> {
        if groups.is_empty() {
            return Ok(());
        }
        let rows = sqlx::query(
            "SELECT i.fingerprint, i.instance FROM error_group_instances i \
             JOIN error_groups g ON g.fingerprint = i.fingerprint \
             WHERE g.last_seen >= $1 ORDER BY i.instance",
        )
        .bind(from)
        .fetch_all(self.pool())
        .await?;
        let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        let fingerprints: Vec<String> = groups.iter().map(|g| g.fingerprint.clone()).collect();
        for (i, f) in fingerprints.iter().enumerate() {
            index.insert(f.as_str(), i);
        }
        for r in rows {
            let f: String = r.try_get("fingerprint")?;
            if let Some(&i) = index.get(f.as_str()) {
                groups[i].instances.push(r.try_get("instance")?);
            }
        }
        Ok(())
    }

    /// Groups whose row was created at or after `from`: the fingerprints
    /// that are new to every instance.
    pub async fn error_groups_created_since(
        &self,
        from: i64,
    ) -> Result<Vec<ErrorGroupRow>, sqlx::Error> {
        let sql = format!(
            "SELECT {GROUP_COLUMNS} FROM error_groups WHERE created_at >= $1 ORDER BY fingerprint"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(from)
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(group_from).collect()
    }

    /// Deletes groups last seen before `before`; returns rows deleted.
    pub async fn prune_error_groups(&self, before: i64) -> Result<u64, sqlx::Error> {
        let mut n = 0;
        for sql in [
            "DELETE FROM error_group_instances WHERE last_seen < $1",
            "DELETE FROM error_groups WHERE last_seen < $1",
        ] {
            n += sqlx::query(sql)
                .bind(before)
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        Ok(n)
    }
}
