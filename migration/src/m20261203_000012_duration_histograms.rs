//! Percentile-ready aggregates beside the others: `edge_duration_histograms_hourly` (per workflow, hour and edge, the
//! durations of the traces that crossed it) and `session_duration_histograms_hourly` (per workflow and hour of
//! start, the durations of the sessions that ended), each as the fixed log-scale `histogram`, which queries merge
//! over any range.
//!
//! They are new aggregates rather than new columns of `edge_stats_hourly` and `session_stats_hourly`: a continuous
//! aggregate cannot gain a column, and making those again would lose the history they keep beyond the raw rows'
//! retention. The histograms start from the raw rows still held. On TimescaleDB they are continuous with real-time
//! aggregation and a refresh policy whose first run is one interval away (a policy added without it runs at once);
//! in plain mode they are views, counting with an aggregate of our own the way `histogram` does.

use sea_orm_migration::prelude::*;

use crate::m20261124_000004_continuous_aggregates::SESSION_MS;
use crate::policies::Policies;
use crate::{histogram, mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

const EDGE: &str = "workflow_id, source_node_id, source_port_id, target_node_id, target_port_id";

/// The two aggregates' queries, by name, with `bucket` (an expression of `{t}`, the row's time) and the histogram
/// aggregate of the mode.
fn aggregates(bucket: &str, aggregate: &str) -> [(&'static str, String); 2] {
    let hour = |t: &str| bucket.replace("{t}", t);
    [
        (
            "edge_duration_histograms_hourly",
            format!(
                "SELECT {b} AS bucket, {EDGE}, {h} AS duration_histogram FROM flow_traces GROUP BY {b}, {EDGE}",
                b = hour("timestamp"),
                h = histogram::of(aggregate, "duration")
            ),
        ),
        (
            "session_duration_histograms_hourly",
            format!(
                "SELECT {b} AS bucket, workflow_id, {h} AS duration_histogram FROM flow_trace_sessions
                 GROUP BY {b}, workflow_id",
                b = hour("start_time"),
                h = histogram::of(aggregate, SESSION_MS)
            ),
        ),
    ]
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let mut statements = Vec::new();
        if mode::timescaledb_created(conn).await? {
            let policies = Policies::default();
            for (name, query) in aggregates("time_bucket(INTERVAL '1 hour', {t})", "histogram") {
                statements.push(format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {name}
                     WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {query} WITH NO DATA"
                ));
                if let Some(a) = policies.aggregates.iter().find(|a| a.view == name) {
                    statements.push(format!(
                        "SELECT add_continuous_aggregate_policy('{name}', start_offset => INTERVAL '{}',
                            end_offset => INTERVAL '{}', schedule_interval => INTERVAL '{every}',
                            initial_start => now() + INTERVAL '{every}', if_not_exists => true)",
                        a.start_offset,
                        a.end_offset,
                        every = policies.refresh_every
                    ));
                }
            }
        } else {
            statements.extend(histogram::PLAIN_AGGREGATE.map(str::to_owned));
            for (name, query) in aggregates("date_trunc('hour', {t}, 'UTC')", "flowtrace_histogram") {
                statements.push(format!("CREATE VIEW {name} AS {query}"));
            }
        }
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let kind = if mode::timescaledb_created(conn).await? { "MATERIALIZED VIEW" } else { "VIEW" };
        let mut statements: Vec<String> = ["edge_duration_histograms_hourly", "session_duration_histograms_hourly"]
            .map(|name| format!("DROP {kind} IF EXISTS {name}"))
            .into();
        statements.extend(histogram::DROP_PLAIN_AGGREGATE.map(str::to_owned));
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }
}
