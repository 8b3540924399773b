//! Plain mode's retention: without TimescaleDB's policies, the server deletes expired rows itself.

use std::time::Duration;

use migration::Policies;

use super::{Store, StoreResult};

impl Store {
    /// Deletes rows older than each table's retention; returns how many went.
    pub async fn delete_expired(&self, policies: &Policies) -> StoreResult<u64> {
        let mut deleted = 0;
        for (table, column) in
            [("flow_traces", "timestamp"), ("flow_trace_events", "timestamp"), ("flow_trace_sessions", "start_time")]
        {
            let Some(policy) = policies.table(table) else {
                continue;
            };
            // Table and column names are ours; the interval is bound.
            let sql = format!("DELETE FROM {table} WHERE {column} < now() - $1::interval");
            deleted += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&policy.retain_for)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        Ok(deleted)
    }
}

/// Runs `delete_expired` every `every` until the process ends; failures are logged and retried next round.
pub async fn run_plain_retention(store: Store, policies: Policies, every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        match store.delete_expired(&policies).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "plain-mode retention deleted expired rows"),
            Err(err) => tracing::warn!(%err, "plain-mode retention failed; retrying next round"),
        }
    }
}
