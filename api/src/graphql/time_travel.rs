//! Time travel: `workflowStateAt`, `sessionStateAt`, `replayTraces`, `executionTimeline`, and the messages of the
//! `sessionState` subscription.

use async_graphql::{Context, Enum, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::pagination::PageArgs;
use super::sessions::Session;
use super::traces::{Trace, TraceConnection, TraceError, traces_page};
use super::{id_arg, reveals, store};
use crate::domain::SessionStatus;
use crate::error::{Gql, bad_input};
use crate::live::session_state;
use crate::store::time_travel::{self, NodeStatus as StoreNodeStatus};
use crate::store::traces::TraceFilter;

/// A node's state at a moment, from the session's rows up to that moment only. The rules, first match wins:
///
/// | # | when | status |
/// |---|---|---|
/// | 1 | the node reported a START, COMPLETE or ERROR event | the latest one's: RUNNING, COMPLETED, FAILED. Latest by timestamp; at one instant an ERROR outranks the others, else the later committed wins |
/// | 2 | the latest trace it emitted failed | FAILED |
/// | 3 | it received a trace after the latest it emitted, or received but never emitted | RUNNING |
/// | 4 | it emitted a trace | COMPLETED |
/// | 5 | otherwise (seen in events only) | IDLE |
///
/// Once the session has ended as of the moment, no node is RUNNING: a node the rules above find RUNNING takes
/// COMPLETED when the session completed, else the session's outcome (FAILED, CANCELLED). Traces and events at one
/// timestamp are ordered by commit (`seq`).
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    /// Seen, but neither running nor done.
    Idle,
    /// Started, or received data it has not answered yet, in a session still running.
    Running,
    /// Done.
    Completed,
    /// Failed: an ERROR event, a failed trace it emitted, or running when its session failed.
    Failed,
    /// Running when its session was cancelled.
    Cancelled,
}

impl From<StoreNodeStatus> for NodeStatus {
    fn from(s: StoreNodeStatus) -> Self {
        match s {
            StoreNodeStatus::Idle => NodeStatus::Idle,
            StoreNodeStatus::Running => NodeStatus::Running,
            StoreNodeStatus::Completed => NodeStatus::Completed,
            StoreNodeStatus::Failed => NodeStatus::Failed,
            StoreNodeStatus::Cancelled => NodeStatus::Cancelled,
        }
    }
}

pub struct NodeState(time_travel::NodeState);

/// One node of a session at a moment (or, in `sessionState`, as of a cursor), by the rules of `NodeStatus`.
#[Object]
impl NodeState {
    /// The node's id in the workflow graph.
    async fn node_id(&self) -> &str {
        &self.0.node_id
    }
    /// Its name in its latest trace up to the moment.
    async fn node_name(&self) -> Option<&str> {
        self.0.node_name.as_deref()
    }
    /// By the rules of `NodeStatus`.
    async fn status(&self) -> NodeStatus {
        self.0.status.into()
    }
    /// Traces it received up to the moment.
    async fn input_count(&self) -> i64 {
        self.0.input_count
    }
    /// Traces it emitted up to the moment.
    async fn output_count(&self) -> i64 {
        self.0.output_count
    }
    /// The latest trace it received up to the moment.
    async fn last_input(&self) -> Option<Trace> {
        self.0.last_input.clone().map(Trace)
    }
    /// The latest trace it emitted up to the moment.
    async fn last_output(&self) -> Option<Trace> {
        self.0.last_output.clone().map(Trace)
    }
    /// The error of the latest failed trace it emitted.
    async fn last_error(&self, ctx: &Context<'_>) -> Option<TraceError> {
        last_error_of(&self.0, reveals(ctx))
    }
}

/// A node's latest error as `lastError` shows it (a failed trace without an error message still failed).
fn last_error_of(node: &time_travel::NodeState, reveal: bool) -> Option<TraceError> {
    node.last_error.as_ref().map(|t| {
        TraceError::of(t, reveal).unwrap_or(TraceError {
            message: "trace failed".into(),
            code: None,
            stack: None,
            redacted: false,
        })
    })
}

/// A workflow as it was at `at`, in one of its sessions.
pub struct WorkflowState(time_travel::WorkflowState);

/// A workflow as it was at `at`, in one of its sessions.
#[Object]
impl WorkflowState {
    /// The moment this state is of.
    async fn at(&self) -> DateTime<Utc> {
        self.0.at
    }
    /// The session this state is of.
    async fn session(&self) -> Session {
        Session::from(self.0.session.clone())
    }
    /// RUNNING while the session had not ended by `at`.
    async fn session_status(&self) -> SessionStatus {
        self.0.session_status
    }
    /// Every node seen in the session up to `at`, by node id.
    async fn nodes(&self) -> Vec<NodeState> {
        self.0.nodes.iter().cloned().map(NodeState).collect()
    }
}

/// One message of the `sessionState` subscription.
pub struct SessionStateUpdate(pub session_state::StateUpdate);

/// One message of the `sessionState` subscription.
#[Object]
impl SessionStateUpdate {
    /// Resume point: `sessionState(after:)` with it sends what changed after this message.
    async fn cursor(&self) -> &str {
        &self.0.cursor
    }
    /// The session's status as of this message.
    async fn session_status(&self) -> SessionStatus {
        self.0.session_status
    }
    /// The whole state: the first message of a subscription without `after`; null in change messages.
    async fn state(&self) -> Option<WorkflowState> {
        match &self.0.change {
            session_state::Change::Snapshot(state) => Some(WorkflowState(state.as_ref().clone())),
            _ => None,
        }
    }
    /// One node's change; null in the first message and when only the session's status changed.
    async fn node(&self) -> Option<NodeStateChange> {
        match &self.0.change {
            session_state::Change::Node(change) => Some(NodeStateChange(change.as_ref().clone())),
            _ => None,
        }
    }
}

/// A field of `NodeState` that a `NodeStateChange` can carry.
#[derive(Enum, Copy, Clone, Debug, PartialEq, Eq)]
pub enum NodeStateField {
    /// `nodeName`.
    NodeName,
    /// `status`.
    Status,
    /// `inputCount`.
    InputCount,
    /// `outputCount`.
    OutputCount,
    /// `lastInput`.
    LastInput,
    /// `lastOutput`.
    LastOutput,
    /// `lastError`.
    LastError,
}

/// What changed in one node: its id, which fields changed (`changed`), and those fields' new values; the fields not
/// in `changed` are null. A field in `changed` may be null as its new value (`nodeName` when the latest trace names
/// no node).
pub struct NodeStateChange(session_state::NodeChange);

/// What changed in one node: its id, which fields changed (`changed`), and those fields' new values; the fields not
/// in `changed` are null. A field in `changed` may be null as its new value (`nodeName` when the latest trace names
/// no node).
#[Object]
impl NodeStateChange {
    /// The node's id in the workflow graph.
    async fn node_id(&self) -> &str {
        &self.0.node.node_id
    }
    /// The fields this change sets; every node seen for the first time lists them all.
    async fn changed(&self) -> Vec<NodeStateField> {
        let c = &self.0;
        [
            (c.name, NodeStateField::NodeName),
            (c.status, NodeStateField::Status),
            (c.input_count, NodeStateField::InputCount),
            (c.output_count, NodeStateField::OutputCount),
            (c.last_input, NodeStateField::LastInput),
            (c.last_output, NodeStateField::LastOutput),
            (c.last_error, NodeStateField::LastError),
        ]
        .into_iter()
        .filter_map(|(changed, field)| changed.then_some(field))
        .collect()
    }
    /// Its name in its latest trace, when it changed.
    async fn node_name(&self) -> Option<&str> {
        self.0.name.then_some(self.0.node.node_name.as_deref()).flatten()
    }
    /// Its status, when it changed.
    async fn status(&self) -> Option<NodeStatus> {
        self.0.status.then_some(self.0.node.status.into())
    }
    /// Traces it received, when the count changed.
    async fn input_count(&self) -> Option<i64> {
        self.0.input_count.then_some(self.0.node.input_count)
    }
    /// Traces it emitted, when the count changed.
    async fn output_count(&self) -> Option<i64> {
        self.0.output_count.then_some(self.0.node.output_count)
    }
    /// The latest trace it received, when that changed.
    async fn last_input(&self) -> Option<Trace> {
        self.0.last_input.then(|| self.0.node.last_input.clone().map(Trace)).flatten()
    }
    /// The latest trace it emitted, when that changed.
    async fn last_output(&self) -> Option<Trace> {
        self.0.last_output.then(|| self.0.node.last_output.clone().map(Trace)).flatten()
    }
    /// The error of the latest failed trace it emitted, when that changed.
    async fn last_error(&self, ctx: &Context<'_>) -> Option<TraceError> {
        self.0.last_error.then(|| last_error_of(&self.0.node, reveals(ctx))).flatten()
    }
}

/// One bucket of a session's execution timeline.
#[derive(SimpleObject)]
pub struct TimelineBucket {
    /// Start of the bucket.
    pub bucket: DateTime<Utc>,
    /// Traces in the bucket.
    pub trace_count: i64,
    /// Of those, status ERROR.
    pub error_count: i64,
    /// Milliseconds; null for empty buckets.
    pub avg_duration: Option<f64>,
    /// Milliseconds, the longest; null for empty buckets.
    pub max_duration: Option<f64>,
    /// Bytes.
    pub data_size: i64,
    /// Distinct nodes that sent or received in the bucket.
    pub active_nodes: i64,
}

#[derive(Default)]
pub struct TimeTravelQuery;

#[Object]
impl TimeTravelQuery {
    /// The workflow as it was at `at`: the session then running (when several ran, the one started last; when none
    /// ran, the latest started before `at`), its status then, and each node's state from rows up to `at` only. Null
    /// when the workflow had no session by `at`. Ask `sessionStateAt` for a given session, `runningSessions` for all
    /// that ran at `at`.
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn workflow_state_at(
        &self,
        ctx: &Context<'_>,
        workflow_id: String,
        at: DateTime<Utc>,
    ) -> async_graphql::Result<Option<WorkflowState>> {
        Ok(store(ctx).workflow_state_at(&workflow_id, at).await.gql()?.map(WorkflowState))
    }

    /// One session as it was at `at`, with each node's state from rows up to `at` only (the same state
    /// `workflowStateAt` gives when it picks this session). Null when the session had not started by `at`;
    /// NOT_FOUND for an unknown session.
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn session_state_at(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        at: DateTime<Utc>,
    ) -> async_graphql::Result<Option<WorkflowState>> {
        let session_id = id_arg("sessionId", session_id)?;
        Ok(store(ctx).session_state_at(&session_id, at).await.gql()?.map(WorkflowState))
    }

    /// The sessions of a workflow running at `at` (started by then and not ended by then), the latest started
    /// first; at most `first` (default 100, at most 1 000).
    #[graphql(complexity = "super::QUERY_COST + first.unwrap_or(100).max(0) as usize * child_complexity")]
    async fn running_sessions(
        &self,
        ctx: &Context<'_>,
        workflow_id: String,
        at: DateTime<Utc>,
        first: Option<i32>,
    ) -> async_graphql::Result<Vec<Session>> {
        let first = first.unwrap_or(100);
        if !(1..=1000).contains(&first) {
            return Err(bad_input(format!("first must be between 1 and 1000, got {first}")));
        }
        let rows = store(ctx).running_sessions(&workflow_id, at, first.into()).await.gql()?;
        Ok(rows.into_iter().map(Session::from).collect())
    }

    /// Every trace of a session in `[start, end]`, ordered by (timestamp, seq).
    #[graphql(complexity = "super::pagination::cost(first, None, child_complexity)")]
    async fn replay_traces(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        first: Option<i32>,
        after: Option<String>,
    ) -> async_graphql::Result<TraceConnection> {
        if start > end {
            return Err(bad_input(format!("start ({start}) is after end ({end})")));
        }
        let session_id = id_arg("sessionId", session_id)?;
        let filter =
            TraceFilter { session_id: Some(session_id), from: Some(start), to: Some(end), ..Default::default() };
        traces_page(ctx, filter, PageArgs { first, after, last: None, before: None }).await
    }

    /// Gap-filled buckets of `bucketSeconds` from the session's start to its end (or now), unless `from`/`to`
    /// narrow it; empty buckets are present with zeros. At most 10 000 buckets.
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn execution_timeline(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        bucket_seconds: i32,
        from: Option<DateTime<Utc>>,
        to: Option<DateTime<Utc>>,
    ) -> async_graphql::Result<Vec<TimelineBucket>> {
        let session_id = id_arg("sessionId", session_id)?;
        let buckets = store(ctx).execution_timeline(&session_id, bucket_seconds.into(), from, to).await.gql()?;
        Ok(buckets
            .into_iter()
            .map(|b| TimelineBucket {
                bucket: b.bucket,
                trace_count: b.trace_count,
                error_count: b.error_count,
                avg_duration: b.avg_duration,
                max_duration: b.max_duration,
                data_size: b.data_size,
                active_nodes: b.active_nodes,
            })
            .collect())
    }
}
