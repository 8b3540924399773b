//! Where webhook delivery got to in the session change log.

use super::{Store, StoreResult};

impl Store {
    /// The change-log mark up to which every change was delivered. The first time, the current one: enabling
    /// webhooks delivers what happens from then on, not the past day.
    pub async fn webhook_mark(&self) -> StoreResult<String> {
        sqlx::query(
            "INSERT INTO flow_webhook_state (id, mark) VALUES (1, pg_current_snapshot()::text) ON CONFLICT DO NOTHING",
        )
        .execute(&self.pool)
        .await?;
        Ok(sqlx::query_scalar("SELECT mark FROM flow_webhook_state WHERE id = 1").fetch_one(&self.pool).await?)
    }

    pub async fn save_webhook_mark(&self, mark: &str) -> StoreResult<()> {
        sqlx::query("UPDATE flow_webhook_state SET mark = $1, updated_at = now() WHERE id = 1")
            .bind(mark)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
