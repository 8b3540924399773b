//! Traces: `traces`, `recordTraces`, and the `Trace` type.

use std::borrow::Cow;

use async_graphql::connection::{Connection, EmptyFields};
use async_graphql::parser::types::Field;
use async_graphql::registry::Registry;
use async_graphql::{
    Context, ContextSelectionSet, ID, InputObject, InputType, Json, Object, OutputType, Positioned, ServerResult,
    SimpleObject, Value,
};
use chrono::{DateTime, Utc};
use entity::trace;

use super::one_pass::{self, OnePass};
use super::pagination::{PageArgs, connection};
use super::{id_arg, limits, store};
use crate::domain::TraceStatus;
use crate::error::Gql;
use crate::store::cursor::{CursorKey, SeqKey, TraceKey};
use crate::store::ingest::{NewTrace, NodeRef, Recorded};
use crate::store::traces::TraceFilter;

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

impl OutputType for Trace {
    fn type_name() -> Cow<'static, str> {
        TraceType::type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        TraceType::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, _field: &Positioned<Field>) -> ServerResult<Value> {
        one_pass::resolve(ctx, self)
    }
}

impl OnePass for Trace {
    const TYPE_NAME: &'static str = "Trace";

    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        let m = &self.0;
        Ok(match field.node.name.node.as_str() {
            "id" => m.id.to_value(),
            "sessionId" => m.session_id.to_value(),
            "workflowId" => m.workflow_id.to_value(),
            "timestamp" => m.timestamp.to_value(),
            "duration" => m.duration.to_value(),
            "status" => status(m).to_value(),
            "source" => one_pass::nested(ctx, field, &Port::source(m))?,
            "target" => one_pass::nested(ctx, field, &Port::target(m))?,
            "data" => one_pass::nested(ctx, field, &DataOf(m))?,
            "error" => match m.error_message {
                Some(_) => one_pass::nested(ctx, field, &ErrorOf(m))?,
                None => Value::Null,
            },
            "graphId" => m.graph_id.to_value(),
            "graphName" => m.graph_name.to_value(),
            "parentTraceId" => m.parent_trace_id.to_value(),
            "depth" => m.depth.to_value(),
            "seq" => Value::String(m.seq.to_string()),
            other => return Err(one_pass::unknown::<Self>(other, field)),
        })
    }
}

fn status(m: &trace::Model) -> TraceStatus {
    TraceStatus::parse(&m.status).unwrap_or(TraceStatus::Success)
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

    fn field(&self, _ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        Ok(match field.node.name.node.as_str() {
            "nodeId" => self.node_id.to_value(),
            "nodeName" => self.node_name.to_value(),
            "nodeType" => self.node_type.to_value(),
            "portId" => self.port_id.to_value(),
            "portName" => self.port_name.to_value(),
            "portType" => self.port_type.to_value(),
            other => return Err(one_pass::unknown::<Self>(other, field)),
        })
    }
}

/// `Trace.data` of a row.
struct DataOf<'a>(&'a trace::Model);

impl OnePass for DataOf<'_> {
    const TYPE_NAME: &'static str = "TraceData";

    fn field(&self, _ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        let m = self.0;
        Ok(match field.node.name.node.as_str() {
            // As `Json` resolves: the payload serialised into a GraphQL value.
            "payload" => {
                m.data_payload.as_ref().map_or(Value::Null, |p| async_graphql::to_value(p).unwrap_or_default())
            }
            "size" => m.data_size.to_value(),
            "type" => m.data_type.to_value(),
            "preview" => m.data_preview.to_value(),
            other => return Err(one_pass::unknown::<Self>(other, field)),
        })
    }
}

/// `Trace.error` of a row that has one.
struct ErrorOf<'a>(&'a trace::Model);

impl OnePass for ErrorOf<'_> {
    const TYPE_NAME: &'static str = "TraceError";

    fn field(&self, _ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        let m = self.0;
        Ok(match field.node.name.node.as_str() {
            "message" => m.error_message.to_value(),
            "code" => m.error_code.to_value(),
            "stack" => m.error_stack.to_value(),
            other => return Err(one_pass::unknown::<Self>(other, field)),
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
        status(&self.0)
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
        session_id: Option<ID>,
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
        let session_id = session_id.map(|id| id_arg("sessionId", id)).transpose()?;
        let filter = TraceFilter { session_id, workflow_id, from, to, node_id, status };
        traces_page(ctx, filter, PageArgs { first, after, last, before }).await
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

#[cfg(test)]
mod tests {
    //! The one-pass `Trace` must answer every query exactly as the derived `TraceType` does.

    use async_graphql::{EmptyMutation, EmptySubscription, Request, Schema, Variables};
    use serde_json::{Value as JsonValue, json};

    use super::*;

    struct Rows(Vec<trace::Model>);

    #[Object]
    impl Rows {
        async fn declared(&self) -> Vec<TraceType> {
            self.0.iter().cloned().map(TraceType).collect()
        }
        async fn resolved(&self) -> Vec<Trace> {
            self.0.iter().cloned().map(Trace).collect()
        }
    }

    fn rows() -> Vec<trace::Model> {
        let at = DateTime::from_timestamp(1_795_000_000, 123_456_000).unwrap();
        let full = trace::Model {
            id: "ft_mf3k2q1a_4h8z0c9xk2lq".into(),
            timestamp: at,
            seq: 9_007_199_254_740_993,
            session_id: "fts_mf3k2q1a_x".into(),
            workflow_id: "wf".into(),
            duration: Some(12.5),
            status: "ERROR".into(),
            source_node_id: "a".into(),
            source_node_name: Some("A".into()),
            source_node_type: Some("http".into()),
            source_port_id: Some("out".into()),
            source_port_name: Some("Out".into()),
            source_port_type: Some("json".into()),
            target_node_id: "b".into(),
            target_node_name: Some("B".into()),
            target_node_type: Some("map".into()),
            target_port_id: Some("in".into()),
            target_port_name: Some("In".into()),
            target_port_type: Some("json".into()),
            data_payload: Some(json!({ "n": 1, "f": 0.25, "s": "x", "l": [true, null, { "deep": -3 }] })),
            data_size: Some(64),
            data_type: Some("object".into()),
            data_preview: Some("{n: 1}".into()),
            error_message: Some("boom".into()),
            error_code: Some("E1".into()),
            error_stack: Some("at b".into()),
            graph_id: "main".into(),
            graph_name: Some("Main".into()),
            parent_trace_id: Some("ft_parent".into()),
            depth: 2,
        };
        let bare = trace::Model {
            id: "0193a3c2-7e55-7c1b-9a10-7f0e2b3c4d5e".into(),
            seq: 5,
            duration: None,
            status: "WARNING".into(),
            source_node_name: None,
            source_node_type: None,
            source_port_id: None,
            source_port_name: None,
            source_port_type: None,
            target_node_name: None,
            target_node_type: None,
            target_port_id: None,
            target_port_name: None,
            target_port_type: None,
            data_payload: None,
            data_size: None,
            data_type: None,
            data_preview: None,
            error_message: None,
            error_code: None,
            error_stack: None,
            graph_name: None,
            parent_trace_id: None,
            depth: 0,
            ..full.clone()
        };
        vec![full, bare]
    }

    fn schema() -> Schema<Rows, EmptyMutation, EmptySubscription> {
        Schema::new(Rows(rows()), EmptyMutation, EmptySubscription)
    }

    async fn run(schema: &Schema<Rows, EmptyMutation, EmptySubscription>, query: &str, vars: JsonValue) -> JsonValue {
        let response = schema.execute(Request::new(query).variables(Variables::from_json(vars))).await;
        assert!(response.errors.is_empty(), "{query}: {:?}", response.errors);
        response.data.into_json().unwrap()
    }

    /// Every field of `Trace` and of the objects under it, read from the schema itself, so a field added to the
    /// declaration and not to the one-pass resolution fails here.
    async fn every_field(schema: &Schema<Rows, EmptyMutation, EmptySubscription>) -> String {
        let fields = |name: &str| {
            format!(
                r#"{{ __type(name: "{name}") {{ fields {{ name type {{ name ofType {{ name kind }} kind }} }} }} }}"#
            )
        };
        let mut selection = Vec::new();
        for field in run(schema, &fields("Trace"), json!({})).await["__type"]["fields"].as_array().unwrap() {
            let ty = &field["type"];
            let (kind, name) = match ty["kind"].as_str() {
                Some("NON_NULL") => (&ty["ofType"]["kind"], &ty["ofType"]["name"]),
                _ => (&ty["kind"], &ty["name"]),
            };
            let mut item = field["name"].as_str().unwrap().to_owned();
            if kind == "OBJECT" {
                let inner = run(schema, &fields(name.as_str().unwrap()), json!({})).await;
                let names: Vec<&str> =
                    inner["__type"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
                item = format!("{item} {{ {} }}", names.join(" "));
            }
            selection.push(item);
        }
        selection.join(" ")
    }

    #[tokio::test]
    async fn one_pass_traces_answer_as_the_derived_resolvers_do() {
        let schema = schema();
        let all = every_field(&schema).await;
        assert!(all.contains("source { nodeId") && all.contains("error { message"), "{all}");
        let fragments = "fragment T on Trace { duration depth parentTraceId source { ...N } } \
                         fragment N on NodeRef { nodeType portName } fragment E on TraceError { code stack }";
        // (variables, selection, fragments) of each query.
        let shapes = [
            ("", all.clone(), ""),
            // Aliases, __typename at every level, a key asked twice merges its sub-selections.
            (
                "",
                "__typename a: id b: id ts: timestamp source { nodeId __typename } source { portId nodeId } \
                 data { __typename payload } data { size }"
                    .into(),
                "",
            ),
            // Named and inline fragments, with and without a type condition, nested.
            (
                "",
                "...T ... on Trace { seq error { ...E } } ... { graphId target { ... on NodeRef { nodeName } } }"
                    .into(),
                fragments,
            ),
            // @skip and @include by variable.
            (
                "($yes: Boolean!, $no: Boolean!)",
                "id seq @skip(if: $yes) status @include(if: $yes) data @skip(if: $yes) { payload } \
                 source @include(if: $no) { nodeId }"
                    .into(),
                "",
            ),
        ];
        for (variables, shape, fragments) in shapes {
            let query = format!("query{variables} {{ declared {{ {shape} }} resolved {{ {shape} }} }} {fragments}");
            let data = run(&schema, &query, json!({ "yes": true, "no": false })).await;
            assert_eq!(data["resolved"], data["declared"], "{shape}");
            assert_eq!(data["resolved"].as_array().map(Vec::len), Some(2), "{shape}");
        }

        let data = run(&schema, &format!("{{ resolved {{ {all} }} }}"), json!({})).await;
        let full = &data["resolved"][0];
        assert_eq!(full["seq"], "9007199254740993");
        assert_eq!(full["status"], "ERROR");
        assert_eq!(full["data"]["payload"]["l"][2]["deep"], -3);
        assert_eq!(full["error"]["code"], "E1");
        assert_eq!(full["source"]["portType"], "json");
        let bare = &data["resolved"][1];
        assert_eq!(bare["error"], JsonValue::Null);
        assert_eq!(bare["duration"], JsonValue::Null);
        assert_eq!(bare["status"], "WARNING");
    }
}
