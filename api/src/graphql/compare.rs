//! `compareSessions`: two runs lined up by node and edge, with the first point where they diverge.

use async_graphql::{Context, ID, Object, SimpleObject};

use super::sessions::Session;
use super::time_travel::NodeStatus;
use super::{id_arg, store};
use crate::domain::TraceStatus;
use crate::error::Gql;
use crate::store::compare::{self, EdgeKey, EdgeRun, Line, NodeRun, Step};

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

/// One node in both runs.
#[derive(SimpleObject)]
pub struct NodeComparison {
    /// The node.
    pub node_id: String,
    /// In run `a`; null when it is not in it.
    pub a: Option<NodeRunStats>,
    /// In run `b`; null when it is not in it.
    pub b: Option<NodeRunStats>,
    /// It is in one run only, or its counts, errors or status differ (durations are not compared).
    pub differs: bool,
}

/// The edge a trace went along.
#[derive(SimpleObject, Clone)]
pub struct Edge {
    /// The emitting node.
    pub source_node_id: String,
    /// Its port.
    pub source_port_id: Option<String>,
    /// The receiving node.
    pub target_node_id: String,
    /// Its port.
    pub target_port_id: Option<String>,
}

impl From<EdgeKey> for Edge {
    fn from(k: EdgeKey) -> Self {
        Edge {
            source_node_id: k.source_node_id,
            source_port_id: k.source_port_id,
            target_node_id: k.target_node_id,
            target_port_id: k.target_port_id,
        }
    }
}

/// One edge in both runs.
#[derive(SimpleObject)]
pub struct EdgeComparison {
    /// The edge.
    pub edge: Edge,
    /// In run `a`; null when it is not in it.
    pub a: Option<EdgeRunStats>,
    /// In run `b`; null when it is not in it.
    pub b: Option<EdgeRunStats>,
    /// It is in one run only, or its trace or error counts differ (durations are not compared).
    pub differs: bool,
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
    pub nodes: Vec<NodeComparison>,
    /// Every edge of either run, by source node and port, then target node and port.
    pub edges: Vec<EdgeComparison>,
    /// The first divergence; null when the runs are alike.
    pub first_divergence: Option<Divergence>,
}

fn lines<K, R, T: From<R>, L>(lines: Vec<Line<K, R>>, make: impl Fn(K, Option<T>, Option<T>, bool) -> L) -> Vec<L> {
    lines.into_iter().map(|l| make(l.key, l.a.map(Into::into), l.b.map(Into::into), l.differs)).collect()
}

#[derive(Default)]
pub struct CompareQuery;

#[Object]
impl CompareQuery {
    /// Two sessions lined up by node and by edge (counts, durations, errors, status, and which differ) and the
    /// first point where they diverge. NOT_FOUND names an unknown session; LIMIT_EXCEEDED for a session with more
    /// than 100 000 traces. Read from the traces' session index (session_id, timestamp, seq).
    #[graphql(complexity = "super::QUERY_COST * 4 + child_complexity")]
    async fn compare_sessions(&self, ctx: &Context<'_>, a: ID, b: ID) -> async_graphql::Result<SessionComparison> {
        let (a, b) = (id_arg("a", a)?, id_arg("b", b)?);
        let c: compare::Comparison = store(ctx).compare_sessions(&a, &b).await.gql()?;
        Ok(SessionComparison {
            a: Session(c.a),
            b: Session(c.b),
            nodes: lines(c.nodes, |node_id, a, b, differs| NodeComparison { node_id, a, b, differs }),
            edges: lines(c.edges, |k, a, b, differs| EdgeComparison { edge: k.into(), a, b, differs }),
            first_divergence: c.first_divergence.map(|d| Divergence {
                node_id: d.node_id,
                index: d.index as i64,
                a: d.a.map(Into::into),
                b: d.b.map(Into::into),
            }),
        })
    }
}
