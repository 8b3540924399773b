//! `flow_trace_events`: a log line, error or state change reported by a node.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, sqlx::FromRow)]
#[sea_orm(table_name = "flow_trace_events")]
pub struct Model {
    /// Opaque text (see `flowtrace::store::ids`); stored at most once per session.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Part of the key: the table is partitioned on it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub timestamp: DateTimeUtc,
    /// Server-assigned; increases in commit order within a workflow, like traces.
    pub seq: i64,
    /// First column of the key `(session_id, id, timestamp)`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    pub workflow_id: String,
    pub node_id: String,
    pub port_id: Option<String>,
    pub event_type: crate::status::EventType,
    pub data: Option<Json>,
    pub duration: Option<f64>,
    pub metadata: Option<Json>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
