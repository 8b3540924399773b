//! `flow_trace_sessions`: one execution of a workflow.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, sqlx::FromRow)]
#[sea_orm(table_name = "flow_trace_sessions")]
pub struct Model {
    /// Opaque text (see `flowtrace::store::ids`).
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Part of the key: the table is partitioned on it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub start_time: DateTimeUtc,
    pub workflow_id: String,
    pub workflow_version_id: Option<String>,
    pub workflow_name: String,
    pub user_id: Option<String>,
    pub end_time: Option<DateTimeUtc>,
    pub status: crate::status::SessionStatus,
    pub total_traces: i64,
    pub success_count: i64,
    pub error_count: i64,
    pub warning_count: i64,
    pub total_data_size: i64,
    /// Sum of trace durations, so the average stays exact as batches arrive.
    pub total_duration: f64,
    pub timed_traces: i64,
    pub metadata: Option<Json>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
