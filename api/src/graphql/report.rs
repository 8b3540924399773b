//! `sessionReport`: what a run report shows of one session.

use async_graphql::{Context, ID, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::sessions::Session;
use super::traces::Trace;
use super::{id_arg, store};
use crate::error::Gql;
use crate::store::report::{self, ErrorGroup};

/// Failed traces that share an error code (or a node).
#[derive(SimpleObject)]
pub struct ErrorCount {
    /// The error code, or the node that emitted them; null for failed traces without a code.
    pub key: Option<String>,
    /// How many failed traces.
    pub count: i64,
    /// The message of the first of them.
    pub sample_message: Option<String>,
}

impl From<ErrorGroup> for ErrorCount {
    fn from(g: ErrorGroup) -> Self {
        ErrorCount { key: g.key, count: g.count, sample_message: g.sample_message }
    }
}

/// One node's bar in the Gantt chart of a run.
#[derive(SimpleObject)]
pub struct NodeTiming {
    /// The node.
    pub node_id: String,
    /// When it received its first trace; null for a node that only emitted.
    pub first_input: Option<DateTime<Utc>>,
    /// When it emitted its last trace; null for a node that only received.
    pub last_output: Option<DateTime<Utc>>,
    /// Traces it received.
    pub input_count: i64,
    /// Traces it emitted.
    pub output_count: i64,
    /// Milliseconds: the sum of the durations of the traces it emitted.
    pub busy_ms: f64,
}

/// A run report of one session.
pub struct SessionReport(report::Report);

/// A run report of one session.
#[Object]
impl SessionReport {
    /// The session.
    async fn session(&self) -> Session {
        Session::from(self.0.session.clone())
    }
    /// Its traces (the session's summary).
    async fn total_traces(&self) -> i64 {
        self.0.session.total_traces
    }
    /// Of those, status SUCCESS.
    async fn success_count(&self) -> i64 {
        self.0.session.success_count
    }
    /// Of those, status ERROR.
    async fn error_count(&self) -> i64 {
        self.0.session.error_count
    }
    /// SUCCESS traces over all traces, 0 to 1; null for a session without traces.
    async fn success_rate(&self) -> Option<f64> {
        (self.0.session.total_traces > 0)
            .then(|| self.0.session.success_count as f64 / self.0.session.total_traces as f64)
    }
    /// Its longest traces, longest first (traces without a duration are left out).
    async fn slowest(&self) -> Vec<Trace> {
        self.0.slowest.iter().cloned().map(Trace).collect()
    }
    /// Failed traces by error code, most frequent first.
    async fn errors_by_code(&self) -> Vec<ErrorCount> {
        self.0.errors_by_code.iter().cloned().map(Into::into).collect()
    }
    /// Failed traces by the node that emitted them (the node that failed), most frequent first.
    async fn errors_by_node(&self) -> Vec<ErrorCount> {
        self.0.errors_by_node.iter().cloned().map(Into::into).collect()
    }
    /// Every node that received or emitted a trace, in the order it first appeared.
    async fn nodes(&self) -> Vec<NodeTiming> {
        self.0
            .nodes
            .iter()
            .map(|n| NodeTiming {
                node_id: n.node_id.clone(),
                first_input: n.first_input,
                last_output: n.last_output,
                input_count: n.inputs,
                output_count: n.outputs,
                busy_ms: n.busy_ms,
            })
            .collect()
    }
}

#[derive(Default)]
pub struct ReportQuery;

#[Object]
impl ReportQuery {
    /// A run report: totals and success rate, the `slowest` longest traces (1 to 100, default 10), errors grouped
    /// by code and by node with a sample message, and each node's timing (first input, last output, busy time).
    /// NOT_FOUND for an unknown session.
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn session_report(
        &self,
        ctx: &Context<'_>,
        session_id: ID,
        slowest: Option<i32>,
    ) -> async_graphql::Result<SessionReport> {
        let session_id = id_arg("sessionId", session_id)?;
        let report = store(ctx).session_report(&session_id, slowest.unwrap_or(10).into()).await.gql()?;
        Ok(SessionReport(report))
    }
}
