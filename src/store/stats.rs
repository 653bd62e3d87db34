//! Aggregate figures shown on the landing page.

use super::Db;

/// Live figures for the landing page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SiteFigures {
    pub creators: i64,
    pub connected_platforms: i64,
}

impl Db {
    /// The figures: from Redis when another instance loaded them recently
    /// (so every instance shows the same), else from the database.
    pub async fn site_figures(&self) -> Result<SiteFigures, sqlx::Error> {
        if let Some(tier) = self.shared()
            && let Some(f) = tier.landing_get::<SiteFigures>().await
        {
            return Ok(f);
        }
        let f = self
            .read("site_figures", || self.load_site_figures())
            .await?;
        if let Some(tier) = self.shared() {
            tier.landing_fill(&f).await;
        }
        Ok(f)
    }

    /// A write changed what the figures count: this instance's landing page
    /// re-renders soon, and so does every other's (through Redis).
    pub async fn figures_changed(&self) {
        self.invalidate(crate::redis_tier::Invalidation::Landing)
            .await;
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
