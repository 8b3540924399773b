//! Sessions: `session`, `sessions`, `startSession`, `completeSession`, and the `Session` type.

use std::sync::Mutex;

use async_graphql::connection::Connection;
use async_graphql::connection::EmptyFields;
use async_graphql::{Context, ID, InputObject, InputType, Json, Object, ServerResult, Value};
use chrono::{DateTime, Utc};
use entity::{session, trace};

use super::events::{EventConnection, events_page};
use super::one_pass::{self, OnePass, Selected};
use super::pagination::{PageArgs, connection};
use super::traces::{TraceConnection, trace_connection, traces_page};
use super::{id_arg, limits, store};
use crate::domain::{SessionStatus, SessionSummary};
use crate::error::Gql;
use crate::store::cursor::{CursorKey, PageOf, SessionKey, TraceKey};
use crate::store::events::EventFilter;
use crate::store::sessions::{NewSession, SessionFilter};
use crate::store::traces::TraceFilter;

/// One execution of a workflow. Resolved in one pass (see `one_pass`) unless `traces` or `events` is selected: a page
/// of sessions holds many and their other fields are plain values of the row. `SessionType` declares it to the schema.
pub struct Session(SessionType);

impl From<session::Model> for Session {
    fn from(row: session::Model) -> Self {
        Session(SessionType { row, traces: None })
    }
}

one_pass::output_type!(Session, SessionType, declared by 0);

impl OnePass for Session {
    const TYPE_NAME: &'static str = "Session";
    const AWAITED: &'static [&'static str] = &["traces", "events"];

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let m = &self.0.row;
        Ok(match field.name() {
            "id" => m.id.to_value(),
            "workflowId" => m.workflow_id.to_value(),
            "workflowVersionId" => m.workflow_version_id.to_value(),
            "workflowName" => m.workflow_name.to_value(),
            "userId" => m.user_id.to_value(),
            "startTime" => m.start_time.to_value(),
            "endTime" => m.end_time.to_value(),
            "status" => m.status.to_value(),
            "summary" => field.nested(&SessionSummary::of(m))?,
            // As `Json` resolves: the metadata serialised into a GraphQL value.
            "metadata" => m.metadata.as_ref().map_or(Value::Null, |j| async_graphql::to_value(j).unwrap_or_default()),
            "createdAt" => m.created_at.to_value(),
            "updatedAt" => m.updated_at.to_value(),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

impl OnePass for SessionSummary {
    const TYPE_NAME: &'static str = "SessionSummary";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        Ok(match field.name() {
            "totalTraces" => self.total_traces.to_value(),
            "successCount" => self.success_count.to_value(),
            "errorCount" => self.error_count.to_value(),
            "warningCount" => self.warning_count.to_value(),
            "totalDataSize" => self.total_data_size.to_value(),
            "averageDuration" => self.average_duration.to_value(),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// The schema's declaration of `Session`, the resolvers of a selection with `traces` or `events`, and the reference
/// the one-pass resolution is tested against.
pub struct SessionType {
    row: session::Model,
    /// A page of `traces` read with the session, for the `traces` field these arguments ask for.
    traces: Option<(PageArgs, Mutex<Option<PageOf<trace::Model>>>)>,
}

impl SessionType {
    /// The page read with the session, once, when `args` are those it was read for.
    fn take_traces(&self, args: &PageArgs) -> Option<PageOf<trace::Model>> {
        let (_, page) = self.traces.as_ref().filter(|(read_for, _)| read_for == args)?;
        page.lock().ok()?.take()
    }
}

/// One execution of a workflow.
#[Object(name = "Session")]
impl SessionType {
    /// The id the client gave to `startSession`, or the generated one (UUIDv7).
    async fn id(&self) -> ID {
        ID(self.row.id.clone())
    }
    /// The workflow this session ran.
    async fn workflow_id(&self) -> &str {
        &self.row.workflow_id
    }
    /// The version of the workflow that ran, when the engine reported one.
    async fn workflow_version_id(&self) -> Option<&str> {
        self.row.workflow_version_id.as_deref()
    }
    /// The workflow's name as the engine reported it at start.
    async fn workflow_name(&self) -> &str {
        &self.row.workflow_name
    }
    /// Who started the session: the client's `userId`, else the token's `sub`.
    async fn user_id(&self) -> Option<&str> {
        self.row.user_id.as_deref()
    }
    /// When the session started.
    async fn start_time(&self) -> DateTime<Utc> {
        self.row.start_time
    }
    /// When the session ended; null while it runs.
    async fn end_time(&self) -> Option<DateTime<Utc>> {
        self.row.end_time
    }
    /// Its lifecycle status now.
    async fn status(&self) -> SessionStatus {
        self.row.status
    }
    /// Trace counts and totals, kept current by ingestion (never taken from the client).
    async fn summary(&self) -> SessionSummary {
        SessionSummary::of(&self.row)
    }
    /// Free JSON the client attached at start.
    async fn metadata(&self) -> Option<Json<serde_json::Value>> {
        self.row.metadata.clone().map(Json)
    }
    /// When flowtrace stored the session.
    async fn created_at(&self) -> DateTime<Utc> {
        self.row.created_at
    }
    /// When flowtrace last changed the session (a batch of traces, its completion).
    async fn updated_at(&self) -> DateTime<Utc> {
        self.row.updated_at
    }

    /// The session's traces, oldest first.
    #[graphql(complexity = "super::pagination::cost(first, last, child_complexity)")]
    async fn traces(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<TraceConnection> {
        let filter = TraceFilter { session_id: Some(self.row.id.clone()), ..Default::default() };
        let args = PageArgs { first, after, last, before };
        if let Some(rows) = self.take_traces(&args) {
            return Ok(trace_connection(rows, filter));
        }
        // Boxed: async-graphql moves each selected field's future, as large as the largest field's, into a box of its
        // own; unboxed, these reads made every `id` or `status` of every session on a page a copy of kilobytes.
        Box::pin(traces_page(ctx, filter, args)).await
    }

    /// The session's events, oldest first.
    #[graphql(complexity = "super::pagination::cost(first, last, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<EventConnection> {
        let filter = EventFilter { session_id: self.row.id.clone(), ..Default::default() };
        Box::pin(events_page(ctx, filter, PageArgs { first, after, last, before })).await
    }
}

/// A session to start.
#[derive(InputObject)]
pub struct StartSessionInput {
    /// Client-chosen id; starting the same id again returns the existing session. 1 to 128 characters, none a
    /// control character (U+0000–U+001F, U+007F–U+009F); returned exactly as sent. Generated (UUIDv7, sorting by
    /// time) when absent.
    pub id: Option<ID>,
    /// The workflow being run.
    pub workflow_id: String,
    /// The workflow's display name.
    pub workflow_name: String,
    /// The version of the workflow being run.
    pub workflow_version_id: Option<String>,
    /// Who runs it; defaults to the token's `sub`.
    pub user_id: Option<String>,
    /// Defaults to the server's current time.
    pub start_time: Option<DateTime<Utc>>,
    /// Free JSON to keep with the session.
    pub metadata: Option<Json<serde_json::Value>>,
}

/// Which sessions to list; every condition given must hold.
#[derive(InputObject, Default)]
#[graphql(name = "SessionFilter")]
pub struct SessionFilterInput {
    /// Sessions of this workflow.
    pub workflow_id: Option<String>,
    /// Sessions with this status now.
    pub status: Option<SessionStatus>,
    /// Sessions started by this user.
    pub user_id: Option<String>,
    /// Sessions that started at or after this time.
    pub started_after: Option<DateTime<Utc>>,
    /// Sessions that started before this time.
    pub started_before: Option<DateTime<Utc>>,
    /// Case-insensitive text matched against workflow name and id.
    pub search: Option<String>,
    /// Ended sessions that lasted at least this many milliseconds.
    pub min_duration: Option<f64>,
    /// Ended sessions that lasted at most this many milliseconds.
    pub max_duration: Option<f64>,
    /// Sessions with (true) or without (false) a failed trace.
    pub has_errors: Option<bool>,
    /// Sessions whose metadata contains this JSON (PostgreSQL's `@>`: `{"env": "prod"}` matches metadata with that
    /// key and value among others).
    pub metadata: Option<Json<serde_json::Value>>,
    /// Case-insensitive text matched against the node and port names and node ids the session's traces passed
    /// through.
    pub node: Option<String>,
}

/// `totalCount` of a session list, counted only when asked for.
pub struct SessionTotal(SessionFilter);

#[Object]
impl SessionTotal {
    /// Sessions matching the filter, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        store(ctx).count_sessions(&self.0).await.gql()
    }
}

pub type SessionConnection = Connection<String, Session, SessionTotal, EmptyFields>;

#[derive(Default)]
pub struct SessionsQuery;

#[Object]
impl SessionsQuery {
    /// One session by id; null when there is none.
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn session(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<Option<Session>> {
        let id = id_arg("id", id)?;
        // A session shown with its traces: both in one statement.
        let traces = ctx.look_ahead().field("traces").selection_fields();
        if let [field] = traces.as_slice()
            && let Some(args) = PageArgs::of_selection(field)
            && let Ok(page) = args.page::<TraceKey>(limits(ctx))
        {
            let found = store(ctx).session_with_traces(&id, &page).await.gql()?;
            return Ok(
                found.map(|(row, rows)| Session(SessionType { row, traces: Some((args, Mutex::new(Some(rows)))) }))
            );
        }
        Ok(store(ctx).session(&id).await.gql()?.map(Session::from))
    }

    /// Sessions, newest first.
    #[graphql(complexity = "super::pagination::cost(first, last, child_complexity)")]
    async fn sessions(
        &self,
        ctx: &Context<'_>,
        filter: Option<SessionFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> async_graphql::Result<SessionConnection> {
        let f = filter.unwrap_or_default();
        let filter = SessionFilter {
            workflow_id: f.workflow_id,
            status: f.status,
            user_id: f.user_id,
            started_after: f.started_after,
            started_before: f.started_before,
            search: f.search,
            min_duration: f.min_duration,
            max_duration: f.max_duration,
            has_errors: f.has_errors,
            metadata: f.metadata.map(|j| j.0),
            node: f.node,
        };
        filter.validate().gql()?;
        let page = PageArgs { first, after, last, before }.page::<SessionKey>(limits(ctx))?;
        let rows = store(ctx).sessions(&filter, &page).await.gql()?;
        Ok(connection(
            rows,
            |s| SessionKey { start_time: s.start_time, id: s.id.clone() }.encode(),
            Session::from,
            SessionTotal(filter),
        ))
    }
}

#[derive(Default)]
pub struct SessionsMutation;

#[Object]
impl SessionsMutation {
    /// Starts a session (status RUNNING). Idempotent on `id`.
    async fn start_session(&self, ctx: &Context<'_>, input: StartSessionInput) -> async_graphql::Result<Session> {
        let new = NewSession {
            id: input.id.map(|id| id.0),
            workflow_id: input.workflow_id,
            workflow_name: input.workflow_name,
            workflow_version_id: input.workflow_version_id,
            // Sessions started with a token belong to its subject unless the input names a user.
            user_id: input.user_id.or_else(|| {
                ctx.data_opt::<crate::auth::Caller>().and_then(|c| c.principal()).and_then(|p| p.subject.clone())
            }),
            start_time: input.start_time,
            metadata: input.metadata.map(|j| j.0),
        };
        store(ctx).start_session(limits(ctx), new).await.gql().map(Session::from)
    }

    /// Ends a session as COMPLETED, FAILED or CANCELLED at `endTime` (default now). Repeating the same completion
    /// (same status, and the same `endTime` or none) returns the session, also when the repeats arrive at the same
    /// time; changing an ended session's outcome is refused (BAD_USER_INPUT).
    async fn complete_session(
        &self,
        ctx: &Context<'_>,
        id: ID,
        status: SessionStatus,
        end_time: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Session> {
        store(ctx).complete_session(&id, status, end_time).await.gql().map(Session::from)
    }

    /// Deprecated: retention policies delete old sessions. Changes nothing and returns 0.
    #[graphql(deprecation = "Retention policies delete expired sessions; this does nothing.")]
    async fn delete_old_sessions(&self, _days: Option<i32>) -> i32 {
        0
    }
}

#[cfg(test)]
mod tests {
    //! The one-pass `Session` must answer every selection without `traces` or `events` as the derived `SessionType`
    //! does. (Those two read the database; the integration tests cover them.)

    use async_graphql::{EmptyMutation, EmptySubscription, Schema};
    use serde_json::{Value as JsonValue, json};

    use super::*;
    use crate::graphql::one_pass::testing::{assert_same_answers, every_field, run};

    struct Rows(Vec<session::Model>);

    #[Object]
    impl Rows {
        async fn declared(&self) -> Vec<SessionType> {
            self.0.iter().cloned().map(|row| SessionType { row, traces: None }).collect()
        }
        async fn resolved(&self) -> Vec<Session> {
            self.0.iter().cloned().map(Session::from).collect()
        }
    }

    fn rows() -> Vec<session::Model> {
        let at = DateTime::from_timestamp(1_795_000_000, 123_456_000).unwrap();
        let full = session::Model {
            id: "fts_mf3k2q1a:with:colons".into(),
            start_time: at,
            workflow_id: "wf".into(),
            workflow_version_id: Some("v2".into()),
            workflow_name: "Workflow".into(),
            user_id: Some("ada".into()),
            end_time: Some(at + chrono::Duration::milliseconds(1500)),
            status: SessionStatus::Failed,
            total_traces: 9_007_199_254,
            success_count: 7,
            error_count: 1,
            warning_count: 1,
            total_data_size: 4096,
            total_duration: 37.5,
            timed_traces: 3,
            metadata: Some(json!({ "env": "prod", "n": [1, 2.5, null, { "deep": true }] })),
            created_at: at,
            updated_at: at + chrono::Duration::seconds(2),
        };
        let bare = session::Model {
            id: "0193a3c2-7e55-7c1b-9a10-7f0e2b3c4d5e".into(),
            workflow_version_id: None,
            user_id: None,
            end_time: None,
            status: SessionStatus::Running,
            total_traces: 0,
            success_count: 0,
            error_count: 0,
            warning_count: 0,
            total_data_size: 0,
            total_duration: 0.0,
            timed_traces: 0,
            metadata: None,
            ..full.clone()
        };
        vec![full, bare]
    }

    #[tokio::test]
    async fn one_pass_sessions_answer_as_the_derived_resolvers_do() {
        let schema = Schema::new(Rows(rows()), EmptyMutation, EmptySubscription);
        let all = every_field(&schema, "Session", &["traces", "events"]).await;
        assert!(all.contains("summary { totalTraces") && all.contains("metadata"), "{all}");
        let shapes = [
            ("", all.clone(), ""),
            // Aliases, __typename at every level, a key asked twice merges its sub-selections.
            ("", "__typename a: id b: id summary { __typename totalTraces } summary { averageDuration }".into(), ""),
            // Named and inline fragments, with and without a type condition, nested.
            (
                "",
                "...S ... on Session { endTime summary { ...M } } ... { userId }".into(),
                "fragment S on Session { status metadata } fragment M on SessionSummary { errorCount }",
            ),
            // @skip and @include by variable.
            (
                "($yes: Boolean!, $no: Boolean!)",
                "id status @skip(if: $yes) summary @include(if: $no) { totalTraces }".into(),
                "",
            ),
        ];
        let vars = json!({ "yes": true, "no": false });
        for answer in assert_same_answers(&schema, ("declared", "resolved"), &shapes, vars).await {
            assert_eq!(answer.as_array().map(Vec::len), Some(2), "{answer}");
        }

        let data = run(&schema, &format!("{{ resolved {{ {all} }} }}"), json!({})).await;
        let full = &data["resolved"][0];
        assert_eq!(full["status"], "FAILED");
        assert_eq!(full["summary"]["averageDuration"], 12.5);
        assert_eq!(full["metadata"]["n"][3]["deep"], true);
        let bare = &data["resolved"][1];
        assert_eq!(bare["summary"]["averageDuration"], JsonValue::Null);
        assert_eq!(bare["metadata"], JsonValue::Null);
    }
}
