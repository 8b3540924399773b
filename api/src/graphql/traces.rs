//! Traces: `traces`, `recordTraces`, and the `Trace` type.

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::{Context, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use entity::trace;
use uuid::Uuid;

use super::pagination::{PageArgs, connection};
use super::{limits, store};
use crate::domain::TraceStatus;
use crate::error::Gql;
use crate::store::cursor::{CursorKey, SeqKey, TraceKey};
use crate::store::ingest::{NewTrace, NodeRef, Recorded};
use crate::store::traces::TraceFilter;

/// Data passed along one connection of the workflow graph.
pub struct Trace(pub trace::Model);

/// The cursor of a trace row, shared by the `traces` query and subscription.
pub fn trace_cursor(m: &trace::Model) -> String {
    TraceKey(SeqKey { at: m.timestamp, seq: m.seq }).encode()
}

/// One end of a trace: a node and one of its ports.
#[derive(SimpleObject)]
#[graphql(name = "NodeRef")]
pub struct NodeRefOut {
    pub node_id: String,
    pub node_name: Option<String>,
    pub node_type: Option<String>,
    pub port_id: Option<String>,
    pub port_name: Option<String>,
    pub port_type: Option<String>,
}

#[derive(SimpleObject)]
pub struct TraceData {
    pub payload: Option<Json<serde_json::Value>>,
    /// Bytes.
    pub size: Option<i64>,
    #[graphql(name = "type")]
    pub data_type: Option<String>,
    pub preview: Option<String>,
}

#[derive(SimpleObject, Clone)]
pub struct TraceError {
    pub message: String,
    pub code: Option<String>,
    pub stack: Option<String>,
}

impl TraceError {
    pub fn of(m: &trace::Model) -> Option<TraceError> {
        m.error_message.as_ref().map(|message| TraceError {
            message: message.clone(),
            code: m.error_code.clone(),
            stack: m.error_stack.clone(),
        })
    }
}

#[Object]
impl Trace {
    async fn id(&self) -> Uuid {
        self.0.id
    }
    async fn session_id(&self) -> Uuid {
        self.0.session_id
    }
    async fn workflow_id(&self) -> &str {
        &self.0.workflow_id
    }
    async fn timestamp(&self) -> DateTime<Utc> {
        self.0.timestamp
    }
    /// Milliseconds.
    async fn duration(&self) -> Option<f64> {
        self.0.duration
    }
    async fn status(&self) -> TraceStatus {
        TraceStatus::parse(&self.0.status).unwrap_or(TraceStatus::Success)
    }
    async fn source(&self) -> NodeRefOut {
        let m = &self.0;
        NodeRefOut {
            node_id: m.source_node_id.clone(),
            node_name: m.source_node_name.clone(),
            node_type: m.source_node_type.clone(),
            port_id: m.source_port_id.clone(),
            port_name: m.source_port_name.clone(),
            port_type: m.source_port_type.clone(),
        }
    }
    async fn target(&self) -> NodeRefOut {
        let m = &self.0;
        NodeRefOut {
            node_id: m.target_node_id.clone(),
            node_name: m.target_node_name.clone(),
            node_type: m.target_node_type.clone(),
            port_id: m.target_port_id.clone(),
            port_name: m.target_port_name.clone(),
            port_type: m.target_port_type.clone(),
        }
    }
    async fn data(&self) -> TraceData {
        let m = &self.0;
        TraceData {
            payload: m.data_payload.clone().map(Json),
            size: m.data_size,
            data_type: m.data_type.clone(),
            preview: m.data_preview.clone(),
        }
    }
    /// Present when the transfer failed.
    async fn error(&self) -> Option<TraceError> {
        TraceError::of(&self.0)
    }
    async fn graph_id(&self) -> &str {
        &self.0.graph_id
    }
    async fn graph_name(&self) -> Option<&str> {
        self.0.graph_name.as_deref()
    }
    async fn parent_trace_id(&self) -> Option<Uuid> {
        self.0.parent_trace_id
    }
    async fn depth(&self) -> i32 {
        self.0.depth
    }
    /// Server-assigned position in commit order (a 64-bit integer as a decimal string).
    async fn seq(&self) -> String {
        self.0.seq.to_string()
    }
}

#[derive(InputObject)]
pub struct NodeRefInput {
    pub node_id: String,
    pub node_name: Option<String>,
    pub node_type: Option<String>,
    pub port_id: Option<String>,
    pub port_name: Option<String>,
    pub port_type: Option<String>,
}

impl From<NodeRefInput> for NodeRef {
    fn from(n: NodeRefInput) -> Self {
        NodeRef {
            node_id: n.node_id,
            node_name: n.node_name,
            node_type: n.node_type,
            port_id: n.port_id,
            port_name: n.port_name,
            port_type: n.port_type,
        }
    }
}

#[derive(InputObject, Default)]
pub struct TraceDataInput {
    pub payload: Option<Json<serde_json::Value>>,
    /// Bytes; the payload's JSON length when absent.
    pub size: Option<i64>,
    #[graphql(name = "type")]
    pub data_type: Option<String>,
    pub preview: Option<String>,
}

#[derive(InputObject)]
pub struct TraceErrorInput {
    pub message: String,
    pub code: Option<String>,
    pub stack: Option<String>,
}

#[derive(InputObject)]
pub struct TraceInput {
    /// Client-chosen id: the idempotency key. Generated when absent.
    pub id: Option<Uuid>,
    pub timestamp: DateTime<Utc>,
    /// Milliseconds, >= 0.
    pub duration: Option<f64>,
    pub status: TraceStatus,
    pub source: NodeRefInput,
    pub target: NodeRefInput,
    pub data: Option<TraceDataInput>,
    pub error: Option<TraceErrorInput>,
    /// Defaults to `main`.
    pub graph_id: Option<String>,
    pub graph_name: Option<String>,
    pub parent_trace_id: Option<Uuid>,
    /// Subgraph nesting level, >= 0.
    pub depth: Option<i32>,
}

impl From<TraceInput> for NewTrace {
    fn from(t: TraceInput) -> Self {
        let data = t.data.unwrap_or_default();
        let (error_message, error_code, error_stack) = match t.error {
            Some(e) => (Some(e.message), e.code, e.stack),
            None => (None, None, None),
        };
        NewTrace {
            id: t.id,
            timestamp: t.timestamp,
            duration: t.duration,
            status: t.status,
            source: t.source.into(),
            target: t.target.into(),
            payload: data.payload.map(|j| j.0),
            size: data.size,
            data_type: data.data_type,
            preview: data.preview,
            error_message,
            error_code,
            error_stack,
            graph_id: t.graph_id,
            graph_name: t.graph_name,
            parent_trace_id: t.parent_trace_id,
            depth: t.depth,
        }
    }
}

/// What a record call stored.
#[derive(SimpleObject)]
pub struct RecordResult {
    /// Items stored by this call.
    pub accepted: i64,
    /// Items whose id was already stored (a retry); nothing was written for them.
    pub duplicates: i64,
}

impl From<Recorded> for RecordResult {
    fn from(r: Recorded) -> Self {
        RecordResult { accepted: r.accepted, duplicates: r.duplicates }
    }
}

/// `totalCount` of a trace list, counted only when asked for.
pub struct TraceTotal(TraceFilter);

#[Object]
impl TraceTotal {
    /// Traces matching the filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        store(ctx).count_traces(&self.0).await.gql()
    }
}

pub type TraceConnection = Connection<String, Trace, TraceTotal, EmptyFields>;

pub async fn traces_page(
    ctx: &Context<'_>,
    filter: TraceFilter,
    args: PageArgs,
) -> async_graphql::Result<TraceConnection> {
    let page = args.page::<TraceKey>(limits(ctx))?;
    let rows = store(ctx).traces(&filter, &page).await.gql()?;
    Ok(connection(rows, trace_cursor, Trace, TraceTotal(filter)))
}

#[derive(Default)]
pub struct TracesQuery;

#[Object]
impl TracesQuery {
    /// Traces of a session or a workflow, oldest first (by timestamp, then commit order). `from`/`to` are
    /// inclusive; `nodeId` matches either end.
    #[expect(clippy::too_many_arguments, reason = "one GraphQL argument each")]
    #[graphql(complexity = "super::pagination::cost(first, last, child_complexity)")]
    async fn traces(
        &self,
        ctx: &Context<'_>,
        session_id: Option<Uuid>,
        workflow_id: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        node_id: Option<String>,
        status: Option<TraceStatus>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<TraceConnection> {
        let filter = TraceFilter { session_id, workflow_id, from, to, node_id, status };
        traces_page(ctx, filter, PageArgs { first, after, last, before }).await
    }
}

#[derive(Default)]
pub struct TracesMutation;

#[Object]
impl TracesMutation {
    /// Stores a batch of traces of one session, all or nothing, and updates the session's summary in the same
    /// transaction. Retrying with the same ids stores nothing twice.
    async fn record_traces(
        &self,
        ctx: &Context<'_>,
        session_id: Uuid,
        traces: Vec<TraceInput>,
    ) -> async_graphql::Result<RecordResult> {
        let traces = traces.into_iter().map(NewTrace::from).collect();
        store(ctx).record_traces(limits(ctx), session_id, traces).await.gql().map(RecordResult::from)
    }
}
