//! Audit log: SQL only.

use sqlx::Row;

use super::Db;

#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRow {
    pub id: String,
    /// Epoch milliseconds.
    #[serde(skip)]
    pub at: i64,
    pub event: String,
    pub user_id: Option<String>,
    /// What the event is about when there is no user (an email that failed).
    pub subject: Option<String>,
    pub ip: String,
    pub user_agent: String,
    pub request_id: String,
    /// JSON text.
    #[serde(skip)]
    pub details: Option<String>,
}

pub(crate) async fn insert<'e, E>(executor: E, a: &AuditRow) -> Result<(), sqlx::Error>
where
    E: sqlx::Executor<'e, Database = sqlx::Any>,
{
    sqlx::query(
        "INSERT INTO audit_events (id, at, event, user_id, subject, ip, user_agent, request_id, details) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&a.id)
    .bind(a.at)
    .bind(&a.event)
    .bind(&a.user_id)
    .bind(&a.subject)
    .bind(&a.ip)
    .bind(&a.user_agent)
    .bind(&a.request_id)
    .bind(&a.details)
    .execute(executor)
    .await?;
    Ok(())
}

impl Db {
    pub async fn insert_audit(&self, a: &AuditRow) -> Result<(), sqlx::Error> {
        insert(self.pool(), a).await
    }

    /// Newest first; `before` is an event id (ids are UUIDv7, time-ordered).
    pub async fn audit_page(
        &self,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, sqlx::Error> {
        // Two statements rather than `$1 IS NULL OR …`: PostgreSQL cannot
        // infer the type of a parameter that is only compared with NULL.
        let rows =
            match before {
                Some(before) => sqlx::query(
                    "SELECT id, at, event, user_id, subject, ip, user_agent, request_id, details \
                     FROM audit_events WHERE id < $1 ORDER BY id DESC LIMIT $2",
                )
                .bind(before)
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
                None => sqlx::query(
                    "SELECT id, at, event, user_id, subject, ip, user_agent, request_id, details \
                     FROM audit_events ORDER BY id DESC LIMIT $1",
                )
                .bind(limit)
                .fetch_all(self.pool())
                .await?,
            };
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    id: r.try_get("id")?,
                    at: r.try_get("at")?,
                    event: r.try_get("event")?,
                    user_id: r.try_get("user_id")?,
                    subject: r.try_get("subject")?,
                    ip: r.try_get("ip")?,
                    user_agent: r.try_get("user_agent")?,
                    request_id: r.try_get("request_id")?,
                    details: r.try_get("details")?,
                })
            })
            .collect()
    }
}
