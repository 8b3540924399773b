//! `flow_traces`, partitioned on `timestamp` in 1-day chunks, and the sequence behind `seq`.

use sea_orm_migration::prelude::*;

use crate::{mode, run_all};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(
            manager,
            &[
                // One sequence for all traces: ingest takes it under a per-workflow lock, so within a workflow `seq`
                // grows in commit order and a cursor on it never skips a row that committed late.
                "CREATE SEQUENCE flow_trace_seq",
                r#"CREATE TABLE flow_traces (
                    id uuid NOT NULL,
                    timestamp timestamptz NOT NULL,
                    seq bigint NOT NULL,
                    session_id uuid NOT NULL,
                    workflow_id text NOT NULL,
                    duration double precision,
                    status text NOT NULL CHECK (status IN ('SUCCESS', 'ERROR', 'WARNING')),
                    source_node_id text NOT NULL,
                    source_node_name text,
                    source_node_type text,
                    source_port_id text,
                    source_port_name text,
                    source_port_type text,
                    target_node_id text NOT NULL,
                    target_node_name text,
                    target_node_type text,
                    target_port_id text,
                    target_port_name text,
                    target_port_type text,
                    data_payload jsonb,
                    data_size bigint,
                    data_type text,
                    data_preview text,
                    error_message text,
                    error_code text,
                    error_stack text,
                    graph_id text NOT NULL DEFAULT 'main',
                    graph_name text,
                    parent_trace_id uuid,
                    depth integer NOT NULL DEFAULT 0,
                    PRIMARY KEY (id, timestamp)
                )"#,
                "CREATE INDEX flow_traces_session_idx ON flow_traces (session_id, timestamp, seq)",
                "CREATE INDEX flow_traces_session_seq_idx ON flow_traces (session_id, seq)",
                "CREATE INDEX flow_traces_workflow_idx ON flow_traces (workflow_id, timestamp, seq)",
                "CREATE INDEX flow_traces_workflow_seq_idx ON flow_traces (workflow_id, seq)",
                "CREATE INDEX flow_traces_target_idx ON flow_traces (target_node_id, timestamp)",
                "CREATE INDEX flow_traces_source_idx ON flow_traces (source_node_id, timestamp)",
            ],
        )
        .await?;
        if mode::timescaledb_created(manager.get_connection()).await? {
            run_all(manager, &["SELECT create_hypertable('flow_traces', by_range('timestamp', INTERVAL '1 day'))"])
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE IF EXISTS flow_traces", "DROP SEQUENCE IF EXISTS flow_trace_seq"]).await
    }
}
