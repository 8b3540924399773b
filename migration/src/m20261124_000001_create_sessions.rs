//! `flow_trace_sessions`, partitioned on `start_time` in 7-day chunks. Creates the TimescaleDB extension when it can
//! be used, so the migrations after this one only ask whether it exists.

use sea_orm_migration::prelude::*;

use crate::mode::{self, StorageMode};
use crate::run_all;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let conn = manager.get_connection();
        if let StorageMode::TimescaleDb { .. } = mode::possible(conn).await? {
            conn.execute_unprepared("CREATE EXTENSION IF NOT EXISTS timescaledb").await?;
        }
        run_all(
            manager,
            &[
                r#"CREATE TABLE flow_trace_sessions (
                    id uuid NOT NULL,
                    start_time timestamptz NOT NULL,
                    workflow_id text NOT NULL,
                    workflow_version_id text,
                    workflow_name text NOT NULL,
                    user_id text,
                    end_time timestamptz,
                    status text NOT NULL DEFAULT 'RUNNING'
                        CHECK (status IN ('RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
                    total_traces bigint NOT NULL DEFAULT 0,
                    success_count bigint NOT NULL DEFAULT 0,
                    error_count bigint NOT NULL DEFAULT 0,
                    warning_count bigint NOT NULL DEFAULT 0,
                    total_data_size bigint NOT NULL DEFAULT 0,
                    total_duration double precision NOT NULL DEFAULT 0,
                    timed_traces bigint NOT NULL DEFAULT 0,
                    metadata jsonb,
                    created_at timestamptz NOT NULL DEFAULT now(),
                    updated_at timestamptz NOT NULL DEFAULT now(),
                    -- TimescaleDB requires the partitioning column in every unique index.
                    PRIMARY KEY (id, start_time)
                )"#,
                "CREATE INDEX flow_trace_sessions_workflow_idx ON flow_trace_sessions (workflow_id, start_time DESC)",
                "CREATE INDEX flow_trace_sessions_status_idx ON flow_trace_sessions (status, start_time DESC)",
                "CREATE INDEX flow_trace_sessions_start_idx ON flow_trace_sessions (start_time DESC, id DESC)",
            ],
        )
        .await?;
        if mode::timescaledb_created(conn).await? {
            conn.execute_unprepared(
                "SELECT create_hypertable('flow_trace_sessions', by_range('start_time', INTERVAL '7 days'))",
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_all(manager, &["DROP TABLE IF EXISTS flow_trace_sessions"]).await
    }
}
