//! Aggregate figures shown on the landing page.

use super::Db;

/// Live figures for the landing page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteFigures {
    pub creators: i64,
    pub connected_platforms: i64,
}

impl Db {
    /// The figures, with retries.
    pub async fn site_figures(&self) -> Result<SiteFigures, sqlx::Error> {
        self.read("site_figures", || self.load_site_figures()).await
    }

    async fn load_site_figures(&self) -> Result<SiteFigures, sqlx::Error> {
        let creators = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
            .fetch_one(self.pool())
            .await?;
        let connected_platforms = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM platform_connections WHERE status = 'connected'",
        )
        .fetch_one(self.pool())
        .await?;
        Ok(SiteFigures {
            creators,
            connected_platforms,
        })
    }
}
