//! `dependencyGraph`: a workflow's observed edges and nodes, from the `edge_stats_hourly` aggregate.

use async_graphql::{Context, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::analytics::DurationPercentiles;
use super::store;
use crate::error::Gql;
use crate::store::dependency_graph::{self, EdgeKey, EdgeRow};
use crate::store::percentiles::Percentiles;

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

/// An observed edge with what went along it.
#[derive(SimpleObject)]
pub struct GraphEdge {
    /// The edge.
    pub edge: Edge,
    /// Traces along the edge.
    pub trace_count: i64,
    /// Of those, status ERROR.
    pub error_count: i64,
    /// `errorCount` over `traceCount`, 0 to 1.
    pub error_rate: f64,
    /// Bytes along the edge.
    pub total_data_size: i64,
    /// Percentiles of the traces' durations (p99 included).
    pub duration: DurationPercentiles,
}

impl GraphEdge {
    fn new(e: EdgeRow, p: Percentiles) -> Self {
        GraphEdge {
            error_rate: if e.trace_count > 0 { e.error_count as f64 / e.trace_count as f64 } else { 0.0 },
            edge: e.edge.into(),
            trace_count: e.trace_count,
            error_count: e.error_count,
            total_data_size: e.total_data_size,
            duration: p.into(),
        }
    }
}

/// A node of the graph with its totals over its edges.
#[derive(SimpleObject)]
pub struct GraphNode {
    /// The node.
    pub node_id: String,
    /// Traces it received.
    pub input_count: i64,
    /// Traces it emitted.
    pub output_count: i64,
    /// Failed traces it emitted (the node that failed, as in `NodeStatus` rule 2).
    pub error_count: i64,
    /// Bytes it received.
    pub bytes_in: i64,
    /// Bytes it emitted.
    pub bytes_out: i64,
}

/// The edges and nodes a workflow's traces crossed in a range.
#[derive(SimpleObject)]
pub struct DependencyGraph {
    /// By source node and port, then target node and port.
    pub edges: Vec<GraphEdge>,
    /// Every end of an edge, by node id.
    pub nodes: Vec<GraphNode>,
}

#[derive(Default)]
pub struct DependencyGraphQuery;

#[Object]
impl DependencyGraphQuery {
    /// A workflow's observed edges (source node/port → target node/port) with trace counts, error rate, duration
    /// percentiles and bytes, and its nodes with their totals, over the hours overlapping `[from, to]` (at most 31
    /// days, BAD_USER_INPUT beyond; LIMIT_EXCEEDED past 10 000 edges). Served from the `edge_stats_hourly` aggregate
    /// (including data newer than its last refresh), its duration histograms merged.
    #[graphql(complexity = "super::QUERY_COST + child_complexity")]
    async fn dependency_graph(
        &self,
        ctx: &Context<'_>,
        workflow_id: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> async_graphql::Result<DependencyGraph> {
        let g = store(ctx).dependency_graph(&workflow_id, from, to).await.gql()?;
        Ok(DependencyGraph {
            edges: g.edges.into_iter().map(|(e, p)| GraphEdge::new(e, p)).collect(),
            nodes: g
                .nodes
                .into_iter()
                .map(|n: dependency_graph::GraphNode| GraphNode {
                    node_id: n.node_id,
                    input_count: n.inputs,
                    output_count: n.outputs,
                    error_count: n.errors,
                    bytes_in: n.bytes_in,
                    bytes_out: n.bytes_out,
                })
                .collect(),
        })
    }
}
