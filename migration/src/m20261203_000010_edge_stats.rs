//! `edge_stats_hourly`: per workflow, hour and observed edge (source node and port → target node and port), the
//! traces that crossed it, how many failed, their durations and bytes. It replaces the aggregate behind
//! `node_performance_hourly`, which counted a failed trace against the node that received it; the node that emitted
//! it is the one that failed (NodeStatus rule 2). `node_performance_hourly` stays, as a plain view over the edges in
//! both modes: traces, durations and bytes by the receiving node, errors by the emitting one.
//!
//! On TimescaleDB the edge aggregate is continuous with real-time aggregation (created outside a transaction); in
//! plain mode it is an ordinary view over the same query.

use sea_orm_migration::prelude::*;

use crate::policies::Policies;
use crate::{mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// `extra` adds columns (a later migration's), each with its leading comma.
pub(crate) fn edge_stats_hourly(bucket: &str, extra: &str) -> String {
    format!(
        "SELECT {bucket} AS bucket, workflow_id, source_node_id, source_port_id, target_node_id, target_port_id,
            count(*) AS trace_count,
            count(*) FILTER (WHERE status = 'ERROR') AS error_count,
            sum(duration) AS duration_sum,
            count(duration) AS duration_count,
            max(duration) AS max_duration,
            COALESCE(sum(data_size), 0)::bigint AS total_data_size{extra}
        FROM flow_traces
        GROUP BY {bucket}, workflow_id, source_node_id, source_port_id, target_node_id, target_port_id"
    )
}

/// The columns `node_performance_hourly` always had, now computed from the edges.
pub(crate) const NODE_PERFORMANCE: &str = "CREATE VIEW node_performance_hourly AS
    SELECT bucket, workflow_id, node_id,
        sum(received)::bigint AS trace_count,
        sum(failed)::bigint AS error_count,
        sum(duration_sum) / NULLIF(sum(duration_count), 0) AS avg_duration,
        max(max_duration) AS max_duration,
        sum(bytes)::bigint AS total_data_size
    FROM (
        SELECT bucket, workflow_id, target_node_id AS node_id, trace_count AS received, 0::bigint AS failed,
            duration_sum, duration_count, max_duration, total_data_size AS bytes
        FROM edge_stats_hourly
        UNION ALL
        SELECT bucket, workflow_id, source_node_id, 0, error_count, NULL, 0, NULL, 0
        FROM edge_stats_hourly WHERE error_count > 0
    ) e
    GROUP BY bucket, workflow_id, node_id";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if mode::timescaledb_created(conn).await? {
            let edges = edge_stats_hourly("time_bucket(INTERVAL '1 hour', timestamp)", "");
            run_all(
                manager,
                &[
                    "DROP MATERIALIZED VIEW IF EXISTS node_performance_hourly",
                    &format!(
                        "CREATE MATERIALIZED VIEW IF NOT EXISTS edge_stats_hourly
                         WITH (timescaledb.continuous, timescaledb.materialized_only = false)
                         AS {edges} WITH NO DATA"
                    ),
                    NODE_PERFORMANCE,
                ],
            )
            .await?;
            // The edge aggregate's refresh policy, which migration 5 could not add before the aggregate existed.
            Policies::default().apply(conn).await?;
            Ok(())
        } else {
            let edges = edge_stats_hourly("date_trunc('hour', timestamp, 'UTC')", "");
            run_all(
                manager,
                &[
                    "DROP VIEW IF EXISTS node_performance_hourly",
                    &format!("CREATE VIEW edge_stats_hourly AS {edges}"),
                    NODE_PERFORMANCE,
                ],
            )
            .await
        }
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        let (kind, bucket, create) = if mode::timescaledb_created(conn).await? {
            (
                "MATERIALIZED VIEW",
                "time_bucket(INTERVAL '1 hour', timestamp)",
                "CREATE MATERIALIZED VIEW node_performance_hourly
                 WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS {query} WITH NO DATA",
            )
        } else {
            ("VIEW", "date_trunc('hour', timestamp, 'UTC')", "CREATE VIEW node_performance_hourly AS {query}")
        };
        // The aggregate as migration 4 built it.
        let query = crate::m20261124_000004_continuous_aggregates::node_performance_hourly(bucket);
        run_all(
            manager,
            &[
                "DROP VIEW IF EXISTS node_performance_hourly",
                &format!("DROP {kind} IF EXISTS edge_stats_hourly"),
                &create.replace("{query}", &query),
            ],
        )
        .await
    }
}
