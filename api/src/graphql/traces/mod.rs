//! Traces: `traces` and the `Trace` type; `record` holds `recordTraces`.

mod page;
mod record;
#[cfg(test)]
mod tests;

pub use page::TraceConnection;

use async_graphql::{Context, ID, InputObject, InputType, Json, Object, ServerResult, SimpleObject, Value};
use chrono::{DateTime, Utc};
use entity::trace;

use super::one_pass::{self, OnePass, Selected};
use super::pagination::{PageArgs, connection};
use super::{id_arg, limits, reveals, store};
use crate::domain::TraceStatus;
use crate::error::Gql;
use crate::store::cursor::{CursorKey, PageOf, SeqKey, TraceKey};
use crate::store::traces::{TraceFilter, TraceSearch};

/// Data passed along one connection of the workflow graph. Resolved in one pass (see `one_pass`): a page holds
/// hundreds of traces and each field is a plain value of the row. `TraceType` declares it to the schema.
pub struct Trace(pub trace::Model);

/// The cursor of a trace row, shared by the `traces` query and subscription.
pub fn trace_cursor(m: &trace::Model) -> String {
    TraceKey(SeqKey { at: m.timestamp, seq: m.seq }).encode()
}

/// One end of a trace: a node and one of its ports.
#[derive(SimpleObject)]
#[graphql(name = "NodeRef")]
pub struct NodeRefOut {
    /// The node's id in the workflow graph.
    pub node_id: String,
    /// The node's display name, as the engine reported it.
    pub node_name: Option<String>,
    /// The node's kind (e.g. a transform or an HTTP call), as the engine reported it.
    pub node_type: Option<String>,
    /// The port the data left or entered by.
    pub port_id: Option<String>,
    /// The port's display name.
    pub port_name: Option<String>,
    /// The port's data type.
    pub port_type: Option<String>,
}

/// What a trace passed.
#[derive(SimpleObject)]
pub struct TraceData {
    /// The data passed, as JSON; null when the engine sent none, or when it is withheld from this caller
    /// (`redacted`).
    pub payload: Option<Json<serde_json::Value>>,
    /// True when there is a payload this caller may not see: it needs the reveal scope (a `service_role` token, a
    /// write or reveal API key, or the reveal claim). `preview`, `size` and `type` stay visible.
    pub redacted: bool,
    /// Bytes.
    pub size: Option<i64>,
    /// The data's type, as the engine named it.
    #[graphql(name = "type")]
    pub data_type: Option<String>,
    /// A short text rendering for lists.
    pub preview: Option<String>,
}

/// Why a transfer failed.
#[derive(SimpleObject, Clone)]
pub struct TraceError {
    /// What went wrong.
    pub message: String,
    /// A machine-readable code, e.g. ETIMEDOUT.
    pub code: Option<String>,
    /// The stack trace, when the engine sent one and this caller may see it (`redacted`).
    pub stack: Option<String>,
    /// True when there is a stack this caller may not see (see `TraceData.redacted`).
    pub redacted: bool,
}

impl TraceError {
    /// The error of a row, its stack withheld unless `reveal`.
    pub fn of(m: &trace::Model, reveal: bool) -> Option<TraceError> {
        m.error_message.as_ref().map(|message| TraceError {
            message: message.clone(),
            code: m.error_code.clone(),
            stack: m.error_stack.clone().filter(|_| reveal),
            redacted: !reveal && m.error_stack.is_some(),
        })
    }
}

one_pass::output_type!(Trace, TraceType);

impl OnePass for Trace {
    const TYPE_NAME: &'static str = "Trace";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let m = &self.0;
        Ok(match field.name() {
            "id" => m.id.to_value(),
            "sessionId" => m.session_id.to_value(),
            "workflowId" => m.workflow_id.to_value(),
            "timestamp" => m.timestamp.to_value(),
            "duration" => m.duration.to_value(),
            "status" => m.status.to_value(),
            "source" => field.nested(&Port::source(m))?,
            "target" => field.nested(&Port::target(m))?,
            "data" => field.nested(&DataOf(m))?,
            "error" => match m.error_message {
                Some(_) => field.nested(&ErrorOf(m))?,
                None => Value::Null,
            },
            "graphId" => m.graph_id.to_value(),
            "graphName" => m.graph_name.to_value(),
            "parentTraceId" => m.parent_trace_id.to_value(),
            "depth" => m.depth.to_value(),
            "seq" => Value::String(m.seq.to_string()),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// `Trace.source` or `Trace.target` of a row, borrowed.
struct Port<'a> {
    node_id: &'a String,
    node_name: &'a Option<String>,
    node_type: &'a Option<String>,
    port_id: &'a Option<String>,
    port_name: &'a Option<String>,
    port_type: &'a Option<String>,
}

impl Port<'_> {
    fn source(m: &trace::Model) -> Port<'_> {
        Port {
            node_id: &m.source_node_id,
            node_name: &m.source_node_name,
            node_type: &m.source_node_type,
            port_id: &m.source_port_id,
            port_name: &m.source_port_name,
            port_type: &m.source_port_type,
        }
    }

    fn target(m: &trace::Model) -> Port<'_> {
        Port {
            node_id: &m.target_node_id,
            node_name: &m.target_node_name,
            node_type: &m.target_node_type,
            port_id: &m.target_port_id,
            port_name: &m.target_port_name,
            port_type: &m.target_port_type,
        }
    }
}

impl From<Port<'_>> for NodeRefOut {
    fn from(p: Port<'_>) -> NodeRefOut {
        NodeRefOut {
            node_id: p.node_id.clone(),
            node_name: p.node_name.clone(),
            node_type: p.node_type.clone(),
            port_id: p.port_id.clone(),
            port_name: p.port_name.clone(),
            port_type: p.port_type.clone(),
        }
    }
}

impl OnePass for Port<'_> {
    const TYPE_NAME: &'static str = "NodeRef";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        Ok(match field.name() {
            "nodeId" => self.node_id.to_value(),
            "nodeName" => self.node_name.to_value(),
            "nodeType" => self.node_type.to_value(),
            "portId" => self.port_id.to_value(),
            "portName" => self.port_name.to_value(),
            "portType" => self.port_type.to_value(),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// `Trace.data` of a row.
struct DataOf<'a>(&'a trace::Model);

impl OnePass for DataOf<'_> {
    const TYPE_NAME: &'static str = "TraceData";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let m = self.0;
        Ok(match field.name() {
            // As `Json` resolves: the payload serialised into a GraphQL value.
            "payload" if reveals(field.ctx()) => {
                m.data_payload.as_ref().map_or(Value::Null, |p| async_graphql::to_value(p).unwrap_or_default())
            }
            "payload" => Value::Null,
            "redacted" => Value::Boolean(m.data_payload.is_some() && !reveals(field.ctx())),
            "size" => m.data_size.to_value(),
            "type" => m.data_type.to_value(),
            "preview" => m.data_preview.to_value(),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// `Trace.error` of a row that has one.
struct ErrorOf<'a>(&'a trace::Model);

impl OnePass for ErrorOf<'_> {
    const TYPE_NAME: &'static str = "TraceError";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let m = self.0;
        Ok(match field.name() {
            "message" => m.error_message.to_value(),
            "code" => m.error_code.to_value(),
            "stack" if reveals(field.ctx()) => m.error_stack.to_value(),
            "stack" => Value::Null,
            "redacted" => Value::Boolean(m.error_stack.is_some() && !reveals(field.ctx())),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// The schema's declaration of `Trace` (its fields, their types and descriptions), and the reference the one-pass
/// resolution is tested against: a test runs both over the same rows and queries and compares the answers.
pub struct TraceType(pub trace::Model);

/// Data passed along one connection of the workflow graph.
#[Object(name = "Trace")]
impl TraceType {
    /// The id the client gave, or the generated one (UUIDv7).
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    /// The session it belongs to.
    async fn session_id(&self) -> ID {
        ID(self.0.session_id.clone())
    }
    /// The workflow of the trace's session (denormalised).
    async fn workflow_id(&self) -> &str {
        &self.0.workflow_id
    }
    /// When the data passed.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.0.timestamp
    }
    /// Milliseconds.
    async fn duration(&self) -> Option<f64> {
        self.0.duration
    }
    /// Outcome of the transfer.
    async fn status(&self) -> TraceStatus {
        self.0.status
    }
    /// The node and output port the data left.
    async fn source(&self) -> NodeRefOut {
        Port::source(&self.0).into()
    }
    /// The node and input port the data reached.
    async fn target(&self) -> NodeRefOut {
        Port::target(&self.0).into()
    }
    /// What was passed.
    async fn data(&self, ctx: &Context<'_>) -> TraceData {
        let m = &self.0;
        let reveal = reveals(ctx);
        TraceData {
            payload: m.data_payload.clone().filter(|_| reveal).map(Json),
            redacted: !reveal && m.data_payload.is_some(),
            size: m.data_size,
            data_type: m.data_type.clone(),
            preview: m.data_preview.clone(),
        }
    }
    /// Present when the transfer failed.
    async fn error(&self, ctx: &Context<'_>) -> Option<TraceError> {
        TraceError::of(&self.0, reveals(ctx))
    }
    /// The (sub)graph the connection belongs to (`main` unless the client said otherwise).
    async fn graph_id(&self) -> &str {
        &self.0.graph_id
    }
    /// Display name of the (sub)graph.
    async fn graph_name(&self) -> Option<&str> {
        self.0.graph_name.as_deref()
    }
    /// The id of the trace this one came from, as the client gave it.
    async fn parent_trace_id(&self) -> Option<ID> {
        self.0.parent_trace_id.clone().map(ID)
    }
    /// Nesting depth of the subgraph (0 for the main graph).
    async fn depth(&self) -> i32 {
        self.0.depth
    }
    /// Server-assigned position in commit order (a 64-bit integer as a decimal string).
    async fn seq(&self) -> String {
        self.0.seq.to_string()
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

pub async fn traces_page(
    ctx: &Context<'_>,
    filter: TraceFilter,
    args: PageArgs,
) -> async_graphql::Result<TraceConnection> {
    let page = args.page::<TraceKey>(limits(ctx))?;
    let rows = store(ctx).traces(&filter, &page).await.gql()?;
    Ok(trace_connection(rows, filter))
}

/// A page of the traces `filter` selects.
pub fn trace_connection(rows: PageOf<trace::Model>, filter: TraceFilter) -> TraceConnection {
    TraceConnection(connection(rows, trace_cursor, Trace, TraceTotal(filter)))
}

/// Narrower filters for a trace search, all of which must match.
#[derive(InputObject, Default)]
pub struct TraceSearchInput {
    /// Any of these statuses.
    pub statuses: Option<Vec<TraceStatus>>,
    /// At least this many milliseconds (traces without a duration never match a duration bound).
    pub min_duration: Option<f64>,
    /// At most this many milliseconds.
    pub max_duration: Option<f64>,
    /// This error code.
    pub error_code: Option<String>,
    /// In this graph (`graphId`).
    pub graph_id: Option<String>,
    /// The subgraph traces of this trace: those whose `parentTraceId` it is.
    pub parent_trace_id: Option<ID>,
    /// At this nesting depth (0 is the top-level graph).
    pub depth: Option<i32>,
}

impl TraceSearchInput {
    fn into_search(self) -> async_graphql::Result<TraceSearch> {
        Ok(TraceSearch {
            statuses: self.statuses.unwrap_or_default(),
            min_duration: self.min_duration,
            max_duration: self.max_duration,
            error_code: self.error_code,
            graph_id: self.graph_id,
            parent_trace_id: self.parent_trace_id.map(|id| id_arg("search.parentTraceId", id)).transpose()?,
            depth: self.depth,
        })
    }
}

#[derive(Default)]
pub struct TracesQuery;

#[Object]
impl TracesQuery {
    /// Traces of a session or a workflow, oldest first (by timestamp, then commit order). `from`/`to` are
    /// inclusive; `nodeId` matches either end; `search` narrows further (duration, error code, graph, parent trace,
    /// depth, statuses).
    #[expect(clippy::too_many_arguments, reason = "one GraphQL argument each")]
    #[graphql(complexity = "super::pagination::cost(first, last, child_complexity)")]
    async fn traces(
        &self,
        ctx: &Context<'_>,
        session_id: Option<ID>,
        workflow_id: Option<String>,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
        node_id: Option<String>,
        status: Option<TraceStatus>,
        search: Option<TraceSearchInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<TraceConnection> {
        let session_id = session_id.map(|id| id_arg("sessionId", id)).transpose()?;
        let search = search.unwrap_or_default().into_search()?;
        let filter = TraceFilter { session_id, workflow_id, from, to, node_id, status, search };
        traces_page(ctx, filter, PageArgs { first, after, last, before }).await
    }
}

pub use record::{RecordResult, TraceInput, TracesMutation};
