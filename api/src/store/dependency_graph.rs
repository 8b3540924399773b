//! `dependencyGraph`: a workflow's observed edges (source node and port → target node and port) and its nodes,
//! summed over the hourly buckets of `edge_stats_hourly` overlapping the range, with duration percentiles from the
//! merged histograms (`percentiles`). The nodes' totals are sums over the edges, so they need no query of their own.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::analytics::bucket_start;
use super::percentiles::{Percentiles, check_long_range, merged};
use super::{Sql, Store, StoreError, StoreResult};

/// The most edges a graph lists: more is no graph a client can draw.
pub const MAX_EDGES: i64 = 10_000;

/// An edge: traces from a node's port to another node's port (a port is null when the traces named none).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, sqlx::FromRow)]
pub struct EdgeKey {
    pub source_node_id: String,
    pub source_port_id: Option<String>,
    pub target_node_id: String,
    pub target_port_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct EdgeRow {
    #[sqlx(flatten)]
    pub edge: EdgeKey,
    pub trace_count: i64,
    pub error_count: i64,
    pub total_data_size: i64,
    pub histogram: Option<Vec<i64>>,
}

/// A node's totals over the edges it is an end of.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphNode {
    pub node_id: String,
    /// Traces it received.
    pub inputs: i64,
    /// Traces it emitted.
    pub outputs: i64,
    /// Failed traces it emitted (NodeStatus rule 2).
    pub errors: i64,
    pub bytes_in: i64,
    pub bytes_out: i64,
}

#[derive(Clone, Debug)]
pub struct DependencyGraph {
    /// By source, then target.
    pub edges: Vec<(EdgeRow, Percentiles)>,
    /// By node id.
    pub nodes: Vec<GraphNode>,
}

/// Each node's totals from the edges.
fn nodes_of(edges: &[(EdgeRow, Percentiles)]) -> Vec<GraphNode> {
    let mut nodes: BTreeMap<&str, GraphNode> = BTreeMap::new();
    for (e, _) in edges {
        for (id, received) in [(&e.edge.source_node_id, false), (&e.edge.target_node_id, true)] {
            let n = nodes.entry(id).or_insert_with(|| GraphNode { node_id: id.clone(), ..GraphNode::default() });
            if received {
                n.inputs += e.trace_count;
                n.bytes_in += e.total_data_size;
            } else {
                n.outputs += e.trace_count;
                n.errors += e.error_count;
                n.bytes_out += e.total_data_size;
            }
        }
    }
    nodes.into_values().collect()
}

impl Store {
    /// A workflow's edges and nodes over the hourly buckets overlapping `[from, to]` (at most `MAX_RANGE_DAYS`);
    /// LIMIT_EXCEEDED beyond `MAX_EDGES` edges.
    pub async fn dependency_graph(
        &self,
        workflow_id: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> StoreResult<DependencyGraph> {
        check_long_range(from, to)?;
        self.check_aggregate(Some(workflow_id))?;
        let mut sql = Sql::new("");
        let (w, f, t, n) = (
            sql.bind(workflow_id.to_owned()),
            sql.bind(bucket_start(from, TimeDelta::hours(1))),
            sql.bind(to),
            sql.bind(MAX_EDGES + 1),
        );
        let filter = format!("workflow_id = {w} AND bucket >= {f} AND bucket <= {t}");
        const EDGE: &str = "source_node_id, source_port_id, target_node_id, target_port_id";
        let histograms = merged("edge_duration_histograms_hourly", EDGE, &filter);
        // Ports may be null: the join matches them with IS NOT DISTINCT FROM, which USING cannot.
        let same = ["source_node_id", "source_port_id", "target_node_id", "target_port_id"]
            .map(|c| format!("h.{c} IS NOT DISTINCT FROM e.{c}"))
            .join(" AND ");
        sql.push(&format!(
            "SELECT e.*, h.histogram FROM (
                SELECT {EDGE}, sum(trace_count)::bigint AS trace_count, sum(error_count)::bigint AS error_count,
                    sum(total_data_size)::bigint AS total_data_size
                FROM edge_stats_hourly WHERE {filter} GROUP BY {EDGE}
             ) e LEFT JOIN ({histograms}) h ON {same}
             ORDER BY e.source_node_id, e.source_port_id NULLS FIRST, e.target_node_id, e.target_port_id NULLS FIRST
             LIMIT {n}"
        ));
        let rows: Vec<EdgeRow> = self.all(sql).await?;
        if rows.len() as i64 > MAX_EDGES {
            return Err(StoreError::LimitExceeded(format!(
                "the graph has more than {MAX_EDGES} edges in this range: choose a shorter one"
            )));
        }
        let edges: Vec<_> = rows
            .into_iter()
            .map(|e| {
                let p = Percentiles::of(e.histogram.as_deref());
                (e, p)
            })
            .collect();
        let nodes = nodes_of(&edges);
        Ok(DependencyGraph { edges, nodes })
    }
}
