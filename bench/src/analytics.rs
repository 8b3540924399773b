//! Reads of the analytics over the read dataset: `workflowAnalytics`, `dependencyGraph` and `nodePerformance` with
//! percentiles from the aggregates (materialised first on TimescaleDB, as the refresh policy would have), and
//! `compareSessions` of two sessions of one workflow.

use chrono::{Duration, Utc};
use serde_json::json;

use crate::reads::{Dataset, add_comparison, compare};
use crate::report::Report;
use crate::server::Server;

pub async fn run(server: &Server, data: &Dataset, runs: usize, report: &mut Report) -> anyhow::Result<()> {
    if server.timescaledb {
        for view in ["session_stats_hourly", "edge_stats_hourly"] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "CALL refresh_continuous_aggregate('{view}', NULL, now() - INTERVAL '1 hour')"
            )))
            .execute(server.store.pool())
            .await?;
        }
    }
    let store = &server.store;
    let (to, from) = (Utc::now(), Utc::now() - Duration::days(11));
    let workflow = |i: usize| data.sessions[(i * 37) % data.sessions.len()].1.clone();

    let q = "query($w: String!, $from: DateTime!, $to: DateTime!) { workflowAnalytics(workflowId: $w, from: $from, to: $to) {
        sessions successRate sessionDuration { p50 p95 p99 } errorsByCode { key count }
        slowestNodes { nodeId percentiles { p95 } } } }";
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "w": workflow(i), "from": from, "to": to })).await },
        |i| async move { store.workflow_analytics(&workflow(i), from, to, 5).await.map(|_| ()).map_err(Into::into) },
    )
    .await?;
    add_comparison(report, "workflowAnalytics (11 days)", result);

    let q =
        "query($w: String!, $from: DateTime!, $to: DateTime!) { dependencyGraph(workflowId: $w, from: $from, to: $to) {
        edges { edge { sourceNodeId targetNodeId } traceCount errorRate duration { p50 p95 } } nodes { nodeId inputCount } } }";
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "w": workflow(i), "from": from, "to": to })).await },
        |i| async move { store.dependency_graph(&workflow(i), from, to).await.map(|_| ()).map_err(Into::into) },
    )
    .await?;
    add_comparison(report, "dependencyGraph (11 days)", result);

    let q =
        "query($w: String, $from: DateTime!, $to: DateTime!) { nodePerformance(workflowId: $w, from: $from, to: $to) {
        bucket nodeId traceCount avgDuration percentiles { p50 p95 p99 } } }";
    let result =
        compare(
            runs,
            |i| async move { server.read(q, json!({ "w": workflow(i), "from": from, "to": to })).await },
            |i| async move {
                store.node_performance(Some(&workflow(i)), None, from, to).await.map(|_| ()).map_err(Into::into)
            },
        )
        .await?;
    add_comparison(report, "nodePerformance with percentiles (11 days)", result);

    // Sessions k and k + 10 share a workflow.
    let pair = |i: usize| {
        let k = (i * 37) % (data.sessions.len() - 10).max(1);
        (data.sessions[k].0.clone(), data.sessions[(k + 10) % data.sessions.len()].0.clone())
    };
    let q = "query($a: ID!, $b: ID!) { compareSessions(a: $a, b: $b) {
        nodes { key differs } edges { differs } firstDivergence { nodeId index } } }";
    let result = compare(
        runs,
        |i| async move {
            let (a, b) = pair(i);
            server.read(q, json!({ "a": a, "b": b })).await
        },
        |i| async move {
            let (a, b) = pair(i);
            store.compare_sessions(&a, &b).await.map(|_| ()).map_err(Into::into)
        },
    )
    .await?;
    add_comparison(report, &format!("compareSessions (sessions of {} traces)", data.per_session), result);
    Ok(())
}
