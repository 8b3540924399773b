//! `flow_traces`: data passed along one connection of the workflow graph.

use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, serde::Serialize, sqlx::FromRow)]
#[sea_orm(table_name = "flow_traces")]
pub struct Model {
    /// Opaque text (see `flowtrace::store::ids`); stored at most once per session.
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    /// Part of the key: the table is partitioned on it.
    #[sea_orm(primary_key, auto_increment = false)]
    pub timestamp: DateTimeUtc,
    /// Server-assigned; increases in commit order within a workflow (see `store::ingest`).
    pub seq: i64,
    /// First column of the key `(session_id, id, timestamp)`.
    #[sea_orm(primary_key, auto_increment = false)]
    pub session_id: String,
    pub workflow_id: String,
    pub duration: Option<f64>,
    pub status: crate::status::TraceStatus,
    pub source_node_id: String,
    pub source_node_name: Option<String>,
    pub source_node_type: Option<String>,
    pub source_port_id: Option<String>,
    pub source_port_name: Option<String>,
    pub source_port_type: Option<String>,
    pub target_node_id: String,
    pub target_node_name: Option<String>,
    pub target_node_type: Option<String>,
    pub target_port_id: Option<String>,
    pub target_port_name: Option<String>,
    pub target_port_type: Option<String>,
    pub data_payload: Option<Json>,
    pub data_size: Option<i64>,
    pub data_type: Option<String>,
    pub data_preview: Option<String>,
    pub error_message: Option<String>,
    pub error_code: Option<String>,
    pub error_stack: Option<String>,
    pub graph_id: String,
    pub graph_name: Option<String>,
    pub parent_trace_id: Option<String>,
    pub depth: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
