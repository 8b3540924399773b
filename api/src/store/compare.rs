//! `compareSessions`: two runs lined up by node and by edge, and the first point where they diverge.
//!
//! Each run's traces are read in order (timestamp, seq) through flow_traces_session_idx (session_id, timestamp,
//! seq), only the columns the comparison needs; a session with more than `MAX_COMPARED_TRACES` traces (by its
//! summary, which ingestion keeps) is refused with LIMIT_EXCEEDED before any is read. Each node's final status is
//! its state after all of the session's rows, by the rules of `NodeStatus` (`time_travel`).

use std::collections::{BTreeMap, HashMap, HashSet};

use entity::session;

pub use super::dependency_graph::EdgeKey;
use super::time_travel::{AsOf, NodeStatus};
use super::{Sql, Store, StoreError, StoreResult};
use crate::domain::TraceStatus;

/// The most traces a compared session may have.
pub const MAX_COMPARED_TRACES: i64 = 100_000;

/// One trace as the comparison sees it.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct Step {
    #[sqlx(flatten)]
    pub edge: EdgeKey,
    pub status: TraceStatus,
    pub duration: Option<f64>,
}

/// Traces and their durations (milliseconds; `avg` over those with one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Durations {
    pub total: f64,
    pub with_duration: i64,
}

impl Durations {
    fn add(&mut self, d: Option<f64>) {
        if let Some(d) = d {
            self.total += d;
            self.with_duration += 1;
        }
    }

    pub fn avg(&self) -> Option<f64> {
        (self.with_duration > 0).then(|| self.total / self.with_duration as f64)
    }
}

/// A node in one run. Durations are of the traces it emitted.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeRun {
    pub inputs: i64,
    pub outputs: i64,
    pub errors: i64,
    pub durations: Durations,
    pub status: NodeStatus,
}

/// An edge in one run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EdgeRun {
    pub traces: i64,
    pub errors: i64,
    pub durations: Durations,
}

/// One node or edge in both runs; `differs` when it is in one only, or its counts, errors or (for a node) final
/// status differ. Durations are shown, not compared: two runs never take the same time.
#[derive(Clone, Debug, PartialEq)]
pub struct Line<K, R> {
    pub key: K,
    pub a: Option<R>,
    pub b: Option<R>,
    pub differs: bool,
}

/// The first node whose sequence of traces (by edge and status) differs, the index where it does, and the trace
/// of each run there (`None` where that run's sequence has ended).
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    pub node_id: String,
    pub index: usize,
    pub a: Option<Step>,
    pub b: Option<Step>,
}

#[derive(Clone, Debug)]
pub struct Comparison {
    pub a: session::Model,
    pub b: session::Model,
    pub nodes: Vec<Line<String, NodeRun>>,
    pub edges: Vec<Line<EdgeKey, EdgeRun>>,
    pub first_divergence: Option<Divergence>,
}

/// Node ids in order of first appearance (a trace's source before its target).
fn node_order<'a>(steps: impl Iterator<Item = &'a Step>) -> Vec<&'a str> {
    let (mut seen, mut order) = (HashSet::new(), Vec::new());
    for s in steps {
        for id in [s.edge.source_node_id.as_str(), s.edge.target_node_id.as_str()] {
            if seen.insert(id) {
                order.push(id);
            }
        }
    }
    order
}

/// Each node's traces (those it is an end of), in order: one pass over the run.
fn sequences(steps: &[Step]) -> HashMap<&str, Vec<&Step>> {
    let mut by_node: HashMap<&str, Vec<&Step>> = HashMap::new();
    for s in steps {
        by_node.entry(s.edge.source_node_id.as_str()).or_default().push(s);
        if s.edge.target_node_id != s.edge.source_node_id {
            by_node.entry(s.edge.target_node_id.as_str()).or_default().push(s);
        }
    }
    by_node
}

pub fn first_divergence(a: &[Step], b: &[Step]) -> Option<Divergence> {
    let same = |x: &Step, y: &Step| x.edge == y.edge && x.status == y.status;
    let (by_a, by_b) = (sequences(a), sequences(b));
    for node in node_order(a.iter().chain(b)) {
        let (sa, sb) = (by_a.get(node).map_or(&[][..], Vec::as_slice), by_b.get(node).map_or(&[][..], Vec::as_slice));
        let index =
            (0..sa.len().max(sb.len())).find(|&i| !matches!((sa.get(i), sb.get(i)), (Some(x), Some(y)) if same(x, y)));
        if let Some(index) = index {
            let at = |s: &[&Step]| s.get(index).map(|&s| s.clone());
            return Some(Divergence { node_id: node.to_owned(), index, a: at(sa), b: at(sb) });
        }
    }
    None
}

fn edges_of(steps: &[Step]) -> HashMap<EdgeKey, EdgeRun> {
    let mut edges: HashMap<EdgeKey, EdgeRun> = HashMap::new();
    for s in steps {
        let e = edges.entry(s.edge.clone()).or_default();
        e.traces += 1;
        e.errors += i64::from(s.status == TraceStatus::Error);
        e.durations.add(s.duration);
    }
    edges
}

fn nodes_of(run: &Run) -> HashMap<String, NodeRun> {
    let mut nodes: HashMap<String, NodeRun> = HashMap::new();
    for s in &run.steps {
        for (id, emitted) in [(&s.edge.source_node_id, true), (&s.edge.target_node_id, false)] {
            let n = nodes.entry(id.clone()).or_insert_with(|| NodeRun {
                inputs: 0,
                outputs: 0,
                errors: 0,
                durations: Durations::default(),
                status: run.status.get(id).copied().unwrap_or(NodeStatus::Idle),
            });
            if emitted {
                n.outputs += 1;
                n.errors += i64::from(s.status == TraceStatus::Error);
                n.durations.add(s.duration);
            } else {
                n.inputs += 1;
            }
        }
    }
    nodes
}

/// Lines up `keys` (in this order) of both runs.
fn line_up<K: Clone + Eq + std::hash::Hash, R: Clone>(
    keys: Vec<K>,
    mut a: HashMap<K, R>,
    mut b: HashMap<K, R>,
    same: impl Fn(&R, &R) -> bool,
) -> Vec<Line<K, R>> {
    keys.into_iter()
        .map(|key| {
            let (ra, rb) = (a.remove(&key), b.remove(&key));
            let differs = !matches!((&ra, &rb), (Some(x), Some(y)) if same(x, y));
            Line { key, a: ra, b: rb, differs }
        })
        .collect()
}

/// One run: its traces in order and each node's final status.
#[derive(Clone, Debug, Default)]
pub struct Run {
    pub steps: Vec<Step>,
    pub status: HashMap<String, NodeStatus>,
}

type Lines = (Vec<Line<String, NodeRun>>, Vec<Line<EdgeKey, EdgeRun>>, Option<Divergence>);

/// Nodes in order of first appearance (in `a`, then those only in `b`), edges by source then target.
pub fn compare(a: &Run, b: &Run) -> Lines {
    let node_keys: Vec<String> = node_order(a.steps.iter().chain(&b.steps)).into_iter().map(str::to_owned).collect();
    let nodes = line_up(node_keys, nodes_of(a), nodes_of(b), |x, y| {
        (x.inputs, x.outputs, x.errors, x.status) == (y.inputs, y.outputs, y.errors, y.status)
    });
    let edge_keys: Vec<EdgeKey> =
        a.steps.iter().chain(&b.steps).map(|s| (s.edge.clone(), ())).collect::<BTreeMap<_, _>>().into_keys().collect();
    let edges =
        line_up(edge_keys, edges_of(&a.steps), edges_of(&b.steps), |x, y| (x.traces, x.errors) == (y.traces, y.errors));
    (nodes, edges, first_divergence(&a.steps, &b.steps))
}

impl Store {
    /// A run as `compare` takes it: NOT_FOUND naming `which` for an unknown session, LIMIT_EXCEEDED for one with
    /// more than `MAX_COMPARED_TRACES` traces.
    async fn run_of(&self, which: &str, session_id: &str) -> StoreResult<(session::Model, Run)> {
        let (mark, session) = self
            .row_mark(session_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("session {which} ({session_id}) does not exist")))?;
        if session.total_traces > MAX_COMPARED_TRACES {
            return Err(StoreError::LimitExceeded(format!(
                "session {which} has {} traces; at most {MAX_COMPARED_TRACES} can be compared",
                session.total_traces
            )));
        }
        let mut sql = Sql::new("");
        let (s, n) = (sql.bind(session_id.to_owned()), sql.bind(MAX_COMPARED_TRACES));
        sql.push(&format!(
            "SELECT source_node_id, source_port_id, target_node_id, target_port_id, status, duration
             FROM flow_traces WHERE session_id = {s} ORDER BY timestamp, seq LIMIT {n}"
        ));
        let steps = self.all(sql).await?;
        let state = self.state_as_of(session.clone(), AsOf::Rows(mark)).await?;
        let status = state.nodes.into_iter().map(|n| (n.node_id, n.status)).collect();
        Ok((session, Run { steps, status }))
    }

    /// Sessions `a` and `b` lined up (`a == b` compares a run with itself: nothing differs).
    pub async fn compare_sessions(&self, a: &str, b: &str) -> StoreResult<Comparison> {
        let (sa, ra) = self.run_of("a", a).await?;
        let (sb, rb) = self.run_of("b", b).await?;
        let (nodes, edges, first_divergence) = compare(&ra, &rb);
        Ok(Comparison { a: sa, b: sb, nodes, edges, first_divergence })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(from: &str, to: &str, status: TraceStatus) -> Step {
        let edge = EdgeKey {
            source_node_id: from.into(),
            source_port_id: Some("out".into()),
            target_node_id: to.into(),
            target_port_id: None,
        };
        Step { edge, status, duration: Some(1.0) }
    }

    fn run(steps: Vec<Step>) -> Run {
        Run { steps, status: HashMap::new() }
    }

    #[test]
    fn alike_runs_do_not_diverge_and_nothing_differs() {
        let steps = vec![step("a", "b", TraceStatus::Success), step("b", "c", TraceStatus::Success)];
        let (nodes, edges, divergence) = compare(&run(steps.clone()), &run(steps));
        assert_eq!(divergence, None);
        assert_eq!(nodes.iter().map(|n| n.key.as_str()).collect::<Vec<_>>(), ["a", "b", "c"]);
        assert!(nodes.iter().chain([]).all(|n| !n.differs) && edges.iter().all(|e| !e.differs));
    }

    #[test]
    fn the_first_node_whose_sequence_differs_is_named_with_the_index() {
        let a = vec![
            step("a", "b", TraceStatus::Success),
            step("b", "c", TraceStatus::Success),
            step("a", "b", TraceStatus::Success),
        ];
        let b = vec![
            step("a", "b", TraceStatus::Success),
            step("b", "c", TraceStatus::Error),
            step("a", "b", TraceStatus::Success),
        ];
        let d = first_divergence(&a, &b).unwrap_or_else(|| panic!("they diverge"));
        // Node a's sequence is the same; b's second trace (index 1) differs by status.
        assert_eq!((d.node_id.as_str(), d.index), ("b", 1));
        assert_eq!(d.b.map(|s| s.status), Some(TraceStatus::Error));
        let shorter = first_divergence(&a, &a[..2]).unwrap_or_else(|| panic!("one run is longer"));
        assert_eq!((shorter.node_id.as_str(), shorter.index, shorter.b), ("a", 1, None));
    }

    #[test]
    fn a_node_or_edge_in_one_run_only_differs() {
        let (nodes, edges, _) = compare(&run(vec![step("a", "b", TraceStatus::Success)]), &run(vec![]));
        assert!(nodes.iter().all(|n| n.differs && n.b.is_none()));
        assert_eq!(edges.len(), 1);
        assert!(edges[0].differs);
    }
}
