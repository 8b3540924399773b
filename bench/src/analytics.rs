//! Reads of the analytics over the read dataset: `workflowAnalytics`, `dependencyGraph` and `nodePerformance` with
//! percentiles from the aggregates (materialised first on TimescaleDB, as the refresh policy would have), and
//! `compareSessions` of two sessions of one workflow.

use chrono::{DateTime, Duration, DurationRound, Utc};
use serde_json::json;

use crate::Sizes;
use crate::reads::{Dataset, SPAN, add_comparison, compare};
use crate::report::Report;
use crate::server::Server;

pub async fn run(server: &Server, data: &Dataset, runs: usize, report: &mut Report) -> anyhow::Result<()> {
    if server.timescaledb {
        refresh_all(server).await?;
    }
    let store = &server.store;
    // The whole dataset.
    let (to, from) = (Utc::now(), Utc::now() - SPAN - Duration::days(1));
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
    add_comparison(report, "workflowAnalytics (31 days)", result);

    let q =
        "query($w: String!, $from: DateTime!, $to: DateTime!) { dependencyGraph(workflowId: $w, from: $from, to: $to) {
        edges { edge { sourceNodeId targetNodeId } traceCount errorRate duration { p50 p95 } } nodes { nodeId inputCount } } }";
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "w": workflow(i), "from": from, "to": to })).await },
        |i| async move { store.dependency_graph(&workflow(i), from, to).await.map(|_| ()).map_err(Into::into) },
    )
    .await?;
    add_comparison(report, "dependencyGraph (31 days)", result);

    let q =
        "query($w: String, $from: DateTime!, $to: DateTime!) { nodePerformance(workflowId: $w, from: $from, to: $to) {
        bucket nodeId traceCount avgDuration percentiles { p50 p95 p99 } } }";
    let result = compare(
        runs,
        |i| async move { server.read(q, json!({ "w": workflow(i), "from": from, "to": to })).await },
        |i| async move {
            store.node_performance(Some(&workflow(i)), None, from, to, true).await.map(|_| ()).map_err(Into::into)
        },
    )
    .await?;
    add_comparison(report, "nodePerformance with percentiles (31 days)", result);

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

/// `sessionStats` and `nodePerformance` over the last 7 and 30 days, served from the continuous aggregates,
/// against the same figures computed from the raw rows of plain tables (`bench_plain_sessions`,
/// `bench_plain_traces`, with the indexes these queries can use). The read dataset has 100 sessions, so sessions
/// are added first (in its workflows, over its 30 days) for `sessionStats` to have rows to aggregate.
pub async fn against_raw(server: &Server, sizes: &Sizes, report: &mut Report) -> anyhow::Result<()> {
    if !server.timescaledb {
        report.add(
            "reads",
            "aggregates vs raw rows",
            "n/a (plain mode: the aggregates are views)".into(),
            ">= 100x",
            None,
        );
        return Ok(());
    }
    let pool = server.store.pool();
    let extra = if sizes.quick { 10_000 } else { 1_000_000 };
    sqlx::query(
        "INSERT INTO flow_trace_sessions (id, start_time, end_time, status, workflow_id, workflow_name, total_traces,
            error_count)
         SELECT 'bench-stats-' || g, s, s + (g % 600) * INTERVAL '1 second',
             CASE WHEN g % 13 = 0 THEN 'FAILED' ELSE 'COMPLETED' END, 'bench-read-' || (g % 10), 'stats', g % 1000,
             g % 7
         FROM generate_series(1, $1) g, LATERAL (SELECT now() - $2 * (g::float8 / $1) AS s) t",
    )
    .bind(extra)
    .bind(SPAN.to_std()?)
    .execute(pool)
    .await?;
    sqlx::raw_sql("INSERT INTO bench_plain_sessions SELECT * FROM flow_trace_sessions; ANALYZE bench_plain_sessions")
        .execute(pool)
        .await?;
    refresh_all(server).await?;

    let runs = if sizes.quick { 5 } else { 20 };
    let workflow = |i: usize| format!("bench-read-{}", i % 10);
    for days in [7, 30] {
        // Whole days up to today; the API answers with the buckets overlapping [from, to], hence the raw rows up
        // to the end of the bucket that starts at `to`.
        let to = Utc::now().duration_trunc(Duration::days(1))?;
        let from = to - Duration::days(days);
        for (granularity, unit) in [("HOUR", "hour"), ("DAY", "day")] {
            for one_workflow in [true, false] {
                let q = format!(
                    "query($w: String, $from: DateTime!, $to: DateTime!) {{ sessionStats(workflowId: $w,
                    granularity: {granularity}, from: $from, to: $to) {{ bucket workflowId sessions completed failed
                    cancelled running avgDuration minDuration maxDuration totalTraces errorCount }} }}"
                );
                let ms = "EXTRACT(EPOCH FROM (end_time - start_time)) * 1000";
                let filter = if one_workflow { "workflow_id = $1 AND" } else { "$1::text IS NULL AND" };
                let sql = format!(
                    "SELECT date_trunc('{unit}', start_time, 'UTC') AS bucket, workflow_id, count(*),
                        count(*) FILTER (WHERE status = 'COMPLETED'), count(*) FILTER (WHERE status = 'FAILED'),
                        count(*) FILTER (WHERE status = 'CANCELLED'), count(*) FILTER (WHERE status = 'RUNNING'),
                        avg({ms}), min({ms}), max({ms}), sum(total_traces), sum(error_count)
                     FROM bench_plain_sessions WHERE {filter} start_time >= $2 AND start_time < $3 + INTERVAL '1 {unit}'
                     GROUP BY 1, 2 ORDER BY 1, 2"
                );
                let name = format!(
                    "sessionStats({granularity}, {days} days, {})",
                    if one_workflow { "one workflow" } else { "all workflows" }
                );
                let w = move |i: usize| one_workflow.then(|| workflow(i));
                raw_pair(server, runs, &name, (&q, &sql), w, (from, to), report).await?;
            }
        }
        let q = "query($w: String, $from: DateTime!, $to: DateTime!) { nodePerformance(workflowId: $w, from: $from,
            to: $to) { bucket workflowId nodeId traceCount errorCount avgDuration maxDuration totalDataSize } }";
        // As node_performance_hourly counts: traces, durations and bytes by the receiving node, errors by the
        // emitting one; one scan of the rows.
        let sql = "SELECT bucket, workflow_id, node, sum(received), sum(failed),
                sum(duration) / NULLIF(count(duration), 0), max(duration), sum(bytes)
             FROM (SELECT date_trunc('hour', timestamp, 'UTC') AS bucket, workflow_id, n.*
                   FROM bench_plain_traces, LATERAL (VALUES
                       (target_node_id, 1, 0, duration, data_size),
                       (source_node_id, 0, (status = 'ERROR')::int, NULL, 0)) n(node, received, failed, duration, bytes)
                   WHERE workflow_id = $1 AND timestamp >= $2 AND timestamp < $3 + INTERVAL '1 hour') t
             GROUP BY 1, 2, 3 ORDER BY 1, 3";
        let name = format!("nodePerformance({days} days, one workflow)");
        raw_pair(server, runs, &name, (q, sql), |i| Some(workflow(i)), (from, to), report).await?;
    }
    sqlx::query("DELETE FROM flow_trace_sessions WHERE id LIKE 'bench-stats-%'").execute(pool).await?;
    Ok(())
}

/// Times the API query and the raw statement in turns, checks once that they return as many buckets, and reports
/// the p50 of each and their ratio.
async fn raw_pair(
    server: &Server,
    runs: usize,
    name: &str,
    (query, sql): (&str, &str),
    workflow: impl Fn(usize) -> Option<String>,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    report: &mut Report,
) -> anyhow::Result<()> {
    let field = if query.contains("sessionStats") { "sessionStats" } else { "nodePerformance" };
    let api_rows = server.gql(query, json!({ "w": workflow(0), "from": from, "to": to })).await?[field]
        .as_array()
        .map_or(0, Vec::len);
    let raw_rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(workflow(0))
        .bind(from)
        .bind(to)
        .fetch_all(server.store.pool())
        .await?
        .len();
    anyhow::ensure!(api_rows == raw_rows, "{name}: the API returned {api_rows} buckets, the raw rows give {raw_rows}");
    let result = compare(
        runs,
        |i| {
            let w = workflow(i);
            async move { server.read(query, json!({ "w": w, "from": from, "to": to })).await }
        },
        |i| {
            let w = workflow(i);
            async move {
                sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .bind(w)
                    .bind(from)
                    .bind(to)
                    .fetch_all(server.store.pool())
                    .await?;
                Ok(())
            }
        },
    )
    .await?;
    let (a50, _, d50, _) = result;
    report.add(
        "reads",
        &format!("{name}: API from the aggregates vs raw rows of a plain table, p50 ({api_rows} buckets)"),
        format!("{a50:.1} vs {d50:.1} ms"),
        "",
        None,
    );
    let speedup = d50 / a50;
    report.add(
        "reads",
        &format!("{name}: aggregates' speed-up"),
        format!("{speedup:.1}x"),
        ">= 100x",
        Some(speedup >= 100.0),
    );
    Ok(())
}

/// Every continuous aggregate, those built on another after it.
const AGGREGATES: [&str; 5] = [
    "session_stats_hourly",
    "session_stats_daily",
    "edge_stats_hourly",
    "session_duration_histograms_hourly",
    "edge_duration_histograms_hourly",
];

/// Materialises every aggregate up to an hour ago, as the refresh policies would have: a read timed against an
/// aggregate left unmaterialised would compute it from the raw rows instead.
async fn refresh_all(server: &Server) -> anyhow::Result<()> {
    for view in AGGREGATES {
        refresh(server, view).await?;
    }
    Ok(())
}

/// Materialises `view` up to an hour ago, as its refresh policy would; waits out the server's own refreshes.
async fn refresh(server: &Server, view: &str) -> anyhow::Result<()> {
    let sql = format!("CALL refresh_continuous_aggregate('{view}', NULL, now() - INTERVAL '1 hour')");
    for _ in 0..60 {
        match sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone())).execute(server.store.pool()).await {
            Err(e) if e.to_string().contains("concurrent refresh") => {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await
            }
            other => return Ok(other.map(|_| ())?),
        }
    }
    anyhow::bail!("{view} could not be refreshed: the server kept refreshing it")
}
