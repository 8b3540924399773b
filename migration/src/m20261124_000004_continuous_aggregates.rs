//! `session_stats_hourly`, `session_stats_daily` (built on the hourly one) and `node_performance_hourly`.
//!
//! On TimescaleDB they are continuous aggregates with real-time aggregation, which cannot be created inside a
//! transaction; in plain mode they are ordinary views over the same query with `date_trunc`. One query text serves
//! both, so the two modes answer with the same columns and the same figures.

use sea_orm_migration::prelude::*;

use crate::{mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// Duration of an ended session in milliseconds.
pub(crate) const SESSION_MS: &str = "(EXTRACT(EPOCH FROM (end_time - start_time)) * 1000)::double precision";

fn session_stats_hourly(bucket: &str) -> String {
    format!(
        "SELECT {bucket} AS bucket, workflow_id,
            count(*) AS sessions,
            count(*) FILTER (WHERE status = 'COMPLETED') AS completed,
            count(*) FILTER (WHERE status = 'FAILED') AS failed,
            count(*) FILTER (WHERE status = 'CANCELLED') AS cancelled,
            count(*) FILTER (WHERE status = 'RUNNING') AS running,
            sum({SESSION_MS}) AS duration_sum,
            count(end_time) AS duration_count,
            avg({SESSION_MS}) AS avg_duration,
            min({SESSION_MS}) AS min_duration,
            max({SESSION_MS}) AS max_duration,
            sum(total_traces)::bigint AS total_traces,
            sum(error_count)::bigint AS error_count
        FROM flow_trace_sessions
        GROUP BY {bucket}, workflow_id"
    )
}

fn session_stats_daily(bucket: &str) -> String {
    format!(
        "SELECT {bucket} AS bucket, workflow_id,
            sum(sessions)::bigint AS sessions,
            sum(completed)::bigint AS completed,
            sum(failed)::bigint AS failed,
            sum(cancelled)::bigint AS cancelled,
            sum(running)::bigint AS running,
            sum(duration_sum) AS duration_sum,
            sum(duration_count)::bigint AS duration_count,
            sum(duration_sum) / NULLIF(sum(duration_count), 0) AS avg_duration,
            min(min_duration) AS min_duration,
            max(max_duration) AS max_duration,
            sum(total_traces)::bigint AS total_traces,
            sum(error_count)::bigint AS error_count
        FROM session_stats_hourly
        GROUP BY {bucket}, workflow_id"
    )
}

pub(crate) fn node_performance_hourly(bucket: &str) -> String {
    format!(
        "SELECT {bucket} AS bucket, workflow_id, target_node_id AS node_id,
            count(*) AS trace_count,
            count(*) FILTER (WHERE status = 'ERROR') AS error_count,
            avg(duration) AS avg_duration,
            max(duration) AS max_duration,
            COALESCE(sum(data_size), 0)::bigint AS total_data_size
        FROM flow_traces
        GROUP BY {bucket}, workflow_id, target_node_id"
    )
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements = if mode::timescaledb_created(manager.get_connection()).await? {
            let cagg = |name: &str, query: String| {
                format!(
                    "CREATE MATERIALIZED VIEW IF NOT EXISTS {name}
                     WITH (timescaledb.continuous, timescaledb.materialized_only = false)
                     AS {query} WITH NO DATA"
                )
            };
            vec![
                cagg("session_stats_hourly", session_stats_hourly("time_bucket(INTERVAL '1 hour', start_time)")),
                cagg("session_stats_daily", session_stats_daily("time_bucket(INTERVAL '1 day', bucket)")),
                cagg("node_performance_hourly", node_performance_hourly("time_bucket(INTERVAL '1 hour', timestamp)")),
            ]
        } else {
            vec![
                format!(
                    "CREATE OR REPLACE VIEW session_stats_hourly AS {}",
                    session_stats_hourly("date_trunc('hour', start_time, 'UTC')")
                ),
                format!(
                    "CREATE OR REPLACE VIEW session_stats_daily AS {}",
                    session_stats_daily("date_trunc('day', bucket, 'UTC')")
                ),
                format!(
                    "CREATE OR REPLACE VIEW node_performance_hourly AS {}",
                    node_performance_hourly("date_trunc('hour', timestamp, 'UTC')")
                ),
            ]
        };
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let kind =
            if mode::timescaledb_created(manager.get_connection()).await? { "MATERIALIZED VIEW" } else { "VIEW" };
        let statements: Vec<String> = ["session_stats_daily", "session_stats_hourly", "node_performance_hourly"]
            .iter()
            .map(|name| format!("DROP {kind} IF EXISTS {name}"))
            .collect();
        let statements: Vec<&str> = statements.iter().map(String::as_str).collect();
        run_all(manager, &statements).await
    }
}
