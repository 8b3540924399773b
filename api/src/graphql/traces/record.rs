//! `recordTraces` and its input types.

use async_graphql::{Context, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::super::{limits, store};
use crate::domain::TraceStatus;
use crate::error::Gql;
use crate::store::ingest::{NewTrace, NodeRef, Recorded};

/// A node and one of its ports, as the engine names them.
#[derive(InputObject)]
pub struct NodeRefInput {
    /// The node's id in the workflow graph.
    pub node_id: String,
    /// The node's display name.
    pub node_name: Option<String>,
    /// The node's type (its kind in the engine).
    pub node_type: Option<String>,
    /// The port's id on the node.
    pub port_id: Option<String>,
    /// The port's display name.
    pub port_name: Option<String>,
    /// The port's direction or type as the engine names it (e.g. `input`, `output`).
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

/// The data a trace carries.
#[derive(InputObject, Default)]
pub struct TraceDataInput {
    /// The data passed, as JSON.
    pub payload: Option<Json<serde_json::Value>>,
    /// Bytes; the payload's JSON length when absent.
    pub size: Option<i64>,
    /// The data's type, as the engine names it.
    #[graphql(name = "type")]
    pub data_type: Option<String>,
    /// A short text rendering for lists.
    pub preview: Option<String>,
}

/// Why a transfer failed.
#[derive(InputObject)]
pub struct TraceErrorInput {
    /// What went wrong.
    pub message: String,
    /// A machine-readable code, e.g. ETIMEDOUT.
    pub code: Option<String>,
    /// The stack trace.
    pub stack: Option<String>,
}

/// A trace to record: data passed from one node's output port to another's input.
#[derive(InputObject)]
pub struct TraceInput {
    /// Client-chosen id: the idempotency key, stored at most once per session whatever the timestamp (a repeat is
    /// counted as a duplicate and changes nothing). 1 to 128 characters, none a control character (U+0000–U+001F,
    /// U+007F–U+009F). Generated (UUIDv7, sorting by time) when absent.
    pub id: Option<ID>,
    /// When the data passed (2000–2100).
    pub timestamp: DateTime<Utc>,
    /// Milliseconds, >= 0.
    pub duration: Option<f64>,
    /// Outcome of the transfer.
    pub status: TraceStatus,
    /// The node and output port the data left.
    pub source: NodeRefInput,
    /// The node and input port the data reached.
    pub target: NodeRefInput,
    /// What was passed.
    pub data: Option<TraceDataInput>,
    /// The error, when the transfer failed or warned.
    pub error: Option<TraceErrorInput>,
    /// Defaults to `main`.
    pub graph_id: Option<String>,
    /// Display name of the (sub)graph.
    pub graph_name: Option<String>,
    /// The id of the trace this one came from (any id by the same rule as `id`; not checked to exist).
    pub parent_trace_id: Option<ID>,
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
            id: t.id.map(|id| id.0),
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
            parent_trace_id: t.parent_trace_id.map(|id| id.0),
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

#[derive(Default)]
pub struct TracesMutation;

#[Object]
impl TracesMutation {
    /// Stores a batch of traces of one session, all or nothing, and updates the session's summary in the same
    /// transaction. Retrying with the same ids stores nothing twice, also when their timestamps changed.
    async fn record_traces(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        traces: Vec<TraceInput>,
    ) -> async_graphql::Result<RecordResult> {
        let traces = traces.into_iter().map(NewTrace::from).collect();
        let result = store(ctx).record_traces(limits(ctx), &session_id, traces).await;
        crate::metrics::ingest("traces", &result);
        result.gql().map(RecordResult::from)
    }
}
