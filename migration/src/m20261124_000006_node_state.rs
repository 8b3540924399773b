//! What `workflowStateAt` reads, so that its cost does not grow with the session (DESIGN §4).
//!
//! - Per-session node indexes: a node's latest trace in, out and in error, and its latest lifecycle event, are each one
//!   backward index step, however long the session. (Migration m20261206_000015 replaces the three trace indexes with
//!   the latest times per minute in `flow_trace_node_minutes`.)
//! - `flow_trace_node_minutes`: how many traces each node received and emitted per session and minute, kept by
//!   ingestion in the same transaction as the traces. Counts as of an instant are the sum of the whole minutes before it
//!   plus the raw traces of its own minute. Its rows follow the traces' retention (the server deletes them in both
//!   modes).

use sea_orm_migration::prelude::*;

use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                "CREATE INDEX flow_traces_session_target_idx ON flow_traces (session_id, target_node_id, timestamp, seq)",
                "CREATE INDEX flow_traces_session_source_idx ON flow_traces (session_id, source_node_id, timestamp, seq)",
                // Small: failed transfers only, so a node's last error is found without walking its successes.
                "CREATE INDEX flow_traces_session_error_idx ON flow_traces (session_id, source_node_id, timestamp, seq)
                 WHERE status = 'ERROR'",
                // event_type is included so the walk back to a node's latest START/COMPLETE/ERROR reads the index alone.
                "CREATE INDEX flow_trace_events_session_node_idx ON flow_trace_events (session_id, node_id, timestamp, seq)
                 INCLUDE (event_type)",
                "CREATE TABLE flow_trace_node_minutes (
                    session_id UUID NOT NULL,
                    node_id TEXT NOT NULL,
                    minute TIMESTAMPTZ NOT NULL,
                    inputs BIGINT NOT NULL DEFAULT 0,
                    outputs BIGINT NOT NULL DEFAULT 0,
                    PRIMARY KEY (session_id, node_id, minute)
                )",
                "CREATE INDEX flow_trace_node_minutes_minute_idx ON flow_trace_node_minutes (minute)",
                // Databases that already hold traces get their counts once, here.
                "INSERT INTO flow_trace_node_minutes (session_id, node_id, minute, inputs, outputs)
                 SELECT session_id, node_id, minute, sum(inputs), sum(outputs) FROM (
                     SELECT session_id, target_node_id AS node_id,
                         date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch') AS minute, 1 AS inputs, 0 AS outputs
                     FROM flow_traces
                     UNION ALL
                     SELECT session_id, source_node_id, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch'), 0, 1
                     FROM flow_traces
                 ) t GROUP BY session_id, node_id, minute",
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                "DROP TABLE IF EXISTS flow_trace_node_minutes",
                "DROP INDEX IF EXISTS flow_trace_events_session_node_idx",
                "DROP INDEX IF EXISTS flow_traces_session_error_idx",
                "DROP INDEX IF EXISTS flow_traces_session_source_idx",
                "DROP INDEX IF EXISTS flow_traces_session_target_idx",
            ],
        )
        .await
    }
}
