//! `flow_trace_events`, partitioned on `timestamp` in 1-day chunks.

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
                "CREATE SEQUENCE flow_trace_event_seq",
                r#"CREATE TABLE flow_trace_events (
                    id uuid NOT NULL,
                    timestamp timestamptz NOT NULL,
                    seq bigint NOT NULL,
                    session_id uuid NOT NULL,
                    workflow_id text NOT NULL,
                    node_id text NOT NULL,
                    port_id text,
                    event_type text NOT NULL
                        CHECK (event_type IN ('INPUT', 'OUTPUT', 'ERROR', 'LOG', 'START', 'COMPLETE')),
                    data jsonb,
                    duration double precision,
                    metadata jsonb,
                    PRIMARY KEY (id, timestamp)
                )"#,
                "CREATE INDEX flow_trace_events_session_idx ON flow_trace_events (session_id, timestamp, seq)",
                "CREATE INDEX flow_trace_events_session_seq_idx ON flow_trace_events (session_id, seq)",
                "CREATE INDEX flow_trace_events_node_idx ON flow_trace_events (node_id, timestamp)",
            ],
        )
        .await?;
        if mode::timescaledb_created(manager.get_connection()).await? {
            run_all(
                manager,
                &["SELECT create_hypertable('flow_trace_events', by_range('timestamp', INTERVAL '1 day'))"],
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE IF EXISTS flow_trace_events", "DROP SEQUENCE IF EXISTS flow_trace_event_seq"])
            .await
    }
}
