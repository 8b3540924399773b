//! Retention the server applies itself: every table in plain mode (no TimescaleDB policies there), and in both modes
//! the per-minute node counts, which go once their minute's traces have, and the session change log (kept for a day).

use std::time::Duration;

use migration::Policies;

use super::{Store, StoreResult};

impl Store {
    /// Deletes rows older than their table's retention (`plain`: the three main tables too); returns how many went.
    pub async fn delete_expired(&self, policies: &Policies, plain: bool) -> StoreResult<u64> {
        let mut jobs = Vec::new();
        if plain {
            jobs.extend([
                ("flow_traces", "timestamp", "flow_traces"),
                ("flow_trace_events", "timestamp", "flow_trace_events"),
                ("flow_trace_sessions", "start_time", "flow_trace_sessions"),
            ]);
        }
        jobs.push(("flow_trace_node_minutes", "minute", "flow_traces"));
        let mut deleted = 0;
        for (table, column, policy_of) in jobs {
            let Some(policy) = policies.table(policy_of) else {
                continue;
            };
            // Table and column names are ours; the interval is bound.
            let mut sql = format!("DELETE FROM {table} WHERE {column} < {}", plain_cut(table));
            if table == "flow_trace_node_minutes" {
                // A minute row goes only once every trace of its minute has: TimescaleDB drops whole chunks later
                // than the cut. Time travel counts a node's traces from these rows.
                sql.push_str(
                    " AND minute < COALESCE((SELECT date_bin('1 minute', min(timestamp), TIMESTAMPTZ 'epoch')
                        FROM flow_traces), 'infinity')",
                );
            }
            deleted += sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(&policy.retain_for)
                .execute(&self.pool)
                .await?
                .rows_affected();
        }
        // Only subscribers out of sync and webhook delivery resuming after a restart read the change log (see its
        // migration); a day is far longer than the first lasts, and bounds what a server down for longer delivers.
        deleted += sqlx::query("DELETE FROM flow_session_changes WHERE at < now() - INTERVAL '1 day'")
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(deleted)
    }
}

/// Where the server's retention cuts `table`, as SQL of the retention interval `$1`: rows before it go. Traces go by
/// whole minutes, so that no minute row is left counting traces that are gone.
pub(super) fn plain_cut(table: &str) -> &'static str {
    if table == "flow_traces" {
        "date_bin('1 minute', now() - $1::interval, TIMESTAMPTZ 'epoch')"
    } else {
        "now() - $1::interval"
    }
}

/// One round of `delete_expired`, logged; a failure is logged and left to the next round.
pub async fn retention_round(store: &Store, policies: &Policies, plain: bool) {
    match store.delete_expired(policies, plain).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "retention deleted expired rows"),
        Err(err) => tracing::warn!(%err, "retention failed; retrying next round"),
    }
}

/// Runs a round every `every`, the first after `every`: the server runs one before it accepts requests, so that no
/// round races the first writes after a start.
pub async fn run_retention(store: Store, policies: Policies, plain: bool, every: Duration) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tick.tick().await;
        retention_round(&store, &policies, plain).await;
    }
}
