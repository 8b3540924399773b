//! `compareSessions`: two runs lined up by node and edge, with the first point where they diverge.

use async_graphql::{Context, ID, Object, OutputType, SimpleObject};

use super::dependency_graph::Edge;
use super::sessions::Session;
use super::time_travel::NodeStatus;
use super::{id_arg, store};
use crate::domain::TraceStatus;
use crate::error::Gql;
use crate::store::compare::{self, EdgeRun, Line, NodeRun, Step};

/// A node in one run.
#[derive(SimpleObject)]
pub struct NodeRunStats {
    /// Traces it received.
    pub input_count: i64,
    /// Traces it emitted.
    pub output_count: i64,
    /// Traces it emitted with status ERROR.
    pub error_count: i64,
    /// Milliseconds: the sum of the durations of the traces it emitted.
    pub total_duration: f64,
    /// Milliseconds: their average; null when none had a duration.
    pub avg_duration: Option<f64>,
    /// Its status after all of the run's traces and events.
    pub status: NodeStatus,
}

impl From<NodeRun> for NodeRunStats {
    fn from(n: NodeRun) -> Self {
        NodeRunStats {
            input_count: n.inputs,
            output_count: n.outputs,
            error_count: n.errors,
            total_duration: n.durations.total,
            avg_duration: n.durations.avg(),
            status: n.status.into(),
        }
    }
}

/// An edge in one run.
#[derive(SimpleObject)]
pub struct EdgeRunStats {
    /// Traces along it.
    pub trace_count: i64,
    /// Of those, status ERROR.
    pub error_count: i64,
    /// Milliseconds: the sum of their durations.
    pub total_duration: f64,
    /// Milliseconds: their average; null when none had a duration.
    pub avg_duration: Option<f64>,
}

impl From<EdgeRun> for EdgeRunStats {
    fn from(e: EdgeRun) -> Self {
        EdgeRunStats {
            trace_count: e.traces,
            error_count: e.errors,
            total_duration: e.durations.total,
            avg_duration: e.durations.avg(),
        }
    }
}

/// One node or edge in both runs.
#[derive(SimpleObject)]
#[graphql(concrete(name = "NodeComparison", params(String, NodeRunStats)))]
#[graphql(concrete(name = "EdgeComparison", params(Edge, EdgeRunStats)))]
pub struct Compared<K: OutputType, R: OutputType> {
    /// The node's id, or the edge.
    pub key: K,
    /// In run `a`; null when it is not in it.
    pub a: Option<R>,
    /// In run `b`; null when it is not in it.
    pub b: Option<R>,
    /// It is in one run only, or its trace and error counts (and a node's status) differ; durations are shown, not
    /// compared.
    pub differs: bool,
}

impl<K, R> Compared<K, R>
where
    K: OutputType,
    R: OutputType,
{
    fn lines<T: Into<K>, S: Into<R>>(lines: Vec<Line<T, S>>) -> Vec<Self> {
        lines
            .into_iter()
            .map(|l| Compared { key: l.key.into(), a: l.a.map(Into::into), b: l.b.map(Into::into), differs: l.differs })
            .collect()
    }
}

/// A trace as a sequence compares it.
#[derive(SimpleObject)]
pub struct SequenceStep {
    /// Its edge.
    pub edge: Edge,
    /// Its status.
    pub status: TraceStatus,
}

impl From<Step> for SequenceStep {
    fn from(s: Step) -> Self {
        SequenceStep { edge: s.edge.into(), status: s.status }
    }
}

/// Where two runs part: the first node (in order of first appearance) whose sequence of traces, ordered by time
/// and commit, differs by edge or status.
#[derive(SimpleObject)]
pub struct Divergence {
    /// The node.
    pub node_id: String,
    /// The 0-based position in the node's sequence (the traces it emitted or received) where the runs differ.
    pub index: i64,
    /// Run `a`'s trace there; null when its sequence ended before.
    pub a: Option<SequenceStep>,
    /// Run `b`'s trace there; null when its sequence ended before.
    pub b: Option<SequenceStep>,
}

/// Two runs side by side.
#[derive(SimpleObject)]
pub struct SessionComparison {
    /// Run `a`.
    pub a: Session,
    /// Run `b`.
    pub b: Session,
    /// Every node of either run, in order of first appearance (in `a`, then those only in `b`).
    pub nodes: Vec<Compared<String, NodeRunStats>>,
    /// Every edge of either run, by source node and port, then target node and port.
    pub edges: Vec<Compared<Edge, EdgeRunStats>>,
    /// The first divergence; null when the runs are alike.
    pub first_divergence: Option<Divergence>,
}

#[derive(Default)]
pub struct CompareQuery;

#[Object]
impl CompareQuery {
    /// Two sessions lined up by node and by edge (counts, durations, errors, status, and which differ) and the
    /// first point where they diverge. NOT_FOUND names an unknown session; LIMIT_EXCEEDED for a session with more
    /// than 100 000 traces. Read from the traces' session index (session_id, timestamp, seq).
    // Per session: its row mark, its traces, and its final state (two queries).
    #[graphql(complexity = "super::QUERY_COST * 8 + child_complexity")]
    async fn compare_sessions(&self, ctx: &Context<'_>, a: ID, b: ID) -> async_graphql::Result<SessionComparison> {
        let (a, b) = (id_arg("a", a)?, id_arg("b", b)?);
        let c: compare::Comparison = store(ctx).compare_sessions(&a, &b).await.gql()?;
        Ok(SessionComparison {
            a: Session::from(c.a),
            b: Session::from(c.b),
            nodes: Compared::lines(c.nodes),
            edges: Compared::lines(c.edges),
            first_divergence: c.first_divergence.map(|d| Divergence {
                node_id: d.node_id,
                index: d.index as i64,
                a: d.a.map(Into::into),
                b: d.b.map(Into::into),
            }),
        })
    }
}
