//! Analytics from the continuous aggregates agree with the raw tables (including data newer than the last
//! refresh); storage statistics and policies.

use serde_json::{Value, json};

use crate::fixtures::{at, record, session, trace};
use crate::harness::{Kind, TestApp, require_timescaledb, try_test_db};

const COMPLETE: &str = "mutation($id: ID!, $s: SessionStatus!, $end: DateTime) { completeSession(id: $id, status: $s, endTime: $end) { id } }";
const STATS: &str = "query($w: String, $g: Granularity!, $from: DateTime!, $to: DateTime!) {
    sessionStats(workflowId: $w, granularity: $g, from: $from, to: $to) {
        bucket workflowId sessions completed failed cancelled running avgDuration minDuration maxDuration totalTraces errorCount } }";
const NODES: &str = "query($w: String, $n: String, $from: DateTime!, $to: DateTime!) {
    nodePerformance(workflowId: $w, nodeId: $n, from: $from, to: $to) {
        bucket workflowId nodeId traceCount errorCount avgDuration maxDuration totalDataSize } }";

fn timed(s: i64, status: &str, from: &str, to: &str, ms: f64, bytes: i64) -> Value {
    let mut t = trace(s, status, from, to);
    t["duration"] = json!(ms);
    t["data"] = json!({ "size": bytes });
    t
}

/// Hour 10:00 (t0): a completed session (60 s, 3 traces, 1 error) and a failed one (120 s); hour 11:00: one running.
async fn first_hours(app: &TestApp) {
    let done = session(app, "an", 0).await;
    record(
        app,
        done,
        vec![
            timed(1, "SUCCESS", "a", "b", 10.0, 100),
            timed(2, "ERROR", "a", "b", 30.0, 20),
            timed(3, "SUCCESS", "b", "c", 5.0, 1),
        ],
    )
    .await;
    app.ok(COMPLETE, json!({ "id": done, "s": "COMPLETED", "end": at(60) })).await;
    let failed = session(app, "an", 600).await;
    app.ok(COMPLETE, json!({ "id": failed, "s": "FAILED", "end": at(720) })).await;
    session(app, "an", 3700).await;
    session(app, "other", 100).await;
    // Bytewise before "an" and "other"; after them under a linguistic collation.
    session(app, "Zeta", 200).await;
}

/// The same figures straight from the raw tables, for workflow `an` or (None) every workflow, in the API's order.
async fn raw_session_stats(app: &TestApp, trunc: &str, workflow: Option<&str>) -> Value {
    let filter = workflow.map_or(String::new(), |w| format!("WHERE workflow_id = '{w}'"));
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT json_build_object('bucket', to_char(date_trunc('{trunc}', start_time, 'UTC') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'),
            'workflowId', workflow_id, 'sessions', count(*),
            'completed', count(*) FILTER (WHERE status = 'COMPLETED'), 'failed', count(*) FILTER (WHERE status = 'FAILED'),
            'cancelled', count(*) FILTER (WHERE status = 'CANCELLED'), 'running', count(*) FILTER (WHERE status = 'RUNNING'),
            'avgDuration', avg(extract(epoch FROM end_time - start_time) * 1000)::float8,
            'minDuration', min(extract(epoch FROM end_time - start_time) * 1000)::float8,
            'maxDuration', max(extract(epoch FROM end_time - start_time) * 1000)::float8,
            'totalTraces', sum(total_traces)::bigint, 'errorCount', sum(error_count)::bigint)::text
         FROM flow_trace_sessions {filter} GROUP BY date_trunc('{trunc}', start_time, 'UTC'), workflow_id
         ORDER BY date_trunc('{trunc}', start_time, 'UTC'), workflow_id COLLATE \"C\""
    )))
    .fetch_all(app.db.store.pool())
    .await
    .expect("raw stats");
    Value::Array(rows.into_iter().map(|(r,)| serde_json::from_str(&r).expect("json")).collect())
}

/// Traces, durations and bytes by the receiving node; failed traces by the emitting one (NodeStatus rule 2).
async fn raw_node_performance(app: &TestApp) -> Value {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT json_build_object('bucket', to_char(b AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"+00:00\"'),
            'workflowId', workflow_id, 'nodeId', node, 'traceCount', sum(received), 'errorCount', sum(failed),
            'avgDuration', avg(duration), 'maxDuration', max(duration),
            'totalDataSize', COALESCE(sum(data_size), 0)::bigint)::text
         FROM (SELECT date_trunc('hour', timestamp, 'UTC') AS b, workflow_id, target_node_id AS node, 1 AS received,
                   0 AS failed, duration, data_size FROM flow_traces
               UNION ALL
               SELECT date_trunc('hour', timestamp, 'UTC'), workflow_id, source_node_id, 0, 1, NULL, NULL
               FROM flow_traces WHERE status = 'ERROR') t
         WHERE workflow_id = 'an'
         GROUP BY b, workflow_id, node
         ORDER BY b, node",
    )
    .fetch_all(app.db.store.pool())
    .await
    .expect("raw nodes");
    Value::Array(rows.into_iter().map(|(r,)| serde_json::from_str(&r).expect("json")).collect())
}

async fn api_stats(app: &TestApp, granularity: &str) -> Value {
    api_stats_of(app, granularity, Some("an")).await
}

async fn api_stats_of(app: &TestApp, granularity: &str, workflow: Option<&str>) -> Value {
    app.ok(STATS, json!({ "w": workflow, "g": granularity, "from": at(0), "to": at(86_400) })).await["sessionStats"]
        .clone()
}

async fn api_nodes(app: &TestApp) -> Value {
    app.ok(NODES, json!({ "w": "an", "from": at(0), "to": at(86_400) })).await["nodePerformance"].clone()
}

/// Numbers as f64, so `90000` from SQL and `90000.0` from the API compare equal.
fn numbers_as_floats(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.as_f64()),
        Value::Array(items) => Value::Array(items.into_iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, numbers_as_floats(v))).collect()),
        other => other,
    }
}

async fn check_against_raw(app: &TestApp) {
    let same = |api: Value, raw: Value| assert_eq!(numbers_as_floats(api), numbers_as_floats(raw));
    same(api_stats(app, "HOUR").await, raw_session_stats(app, "hour", Some("an")).await);
    same(api_stats(app, "DAY").await, raw_session_stats(app, "day", Some("an")).await);
    same(api_stats_of(app, "HOUR", None).await, raw_session_stats(app, "hour", None).await);
    same(api_nodes(app).await, raw_node_performance(app).await);
}

#[tokio::test]
async fn session_stats_and_node_performance_match_the_raw_tables() {
    let app = TestApp::start(Kind::Default).await;
    first_hours(&app).await;
    let hourly = api_stats(&app, "HOUR").await;
    assert_eq!(hourly[0]["sessions"], 2);
    assert_eq!(hourly[0]["completed"], 1);
    assert_eq!(hourly[0]["failed"], 1);
    assert_eq!(hourly[0]["avgDuration"], 90_000.0);
    assert_eq!(hourly[0]["minDuration"], 60_000.0);
    assert_eq!(hourly[0]["totalTraces"], 3);
    assert_eq!(hourly[0]["errorCount"], 1);
    assert_eq!(hourly[1]["running"], 1);
    // The failed trace went from a to b: b received it, a failed.
    let nodes = app.ok(NODES, json!({ "w": "an", "n": "b", "from": at(0), "to": at(3600) })).await;
    assert_eq!(
        nodes["nodePerformance"],
        json!([{ "bucket": at(0), "workflowId": "an", "nodeId": "b", "traceCount": 2, "errorCount": 0,
                 "avgDuration": 20.0, "maxDuration": 30.0, "totalDataSize": 120 }])
    );
    let nodes = app.ok(NODES, json!({ "w": "an", "n": "a", "from": at(0), "to": at(3600) })).await;
    assert_eq!(
        nodes["nodePerformance"],
        json!([{ "bucket": at(0), "workflowId": "an", "nodeId": "a", "traceCount": 0, "errorCount": 1,
                 "avgDuration": null, "maxDuration": null, "totalDataSize": 0 }])
    );
    check_against_raw(&app).await;

    if require_timescaledb(&app.db, "real-time part of session_stats_and_node_performance_match_the_raw_tables") {
        // Materialise the first hours, then add newer data: real-time aggregation must show it before any refresh.
        for view in ["session_stats_hourly", "edge_stats_hourly"] {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "CALL refresh_continuous_aggregate('{view}', '{}', '{}')",
                at(0),
                at(7200)
            )))
            .execute(app.db.store.pool())
            .await
            .expect("refresh");
        }
        let late = session(&app, "an", 3 * 3600 + 60).await;
        record(&app, late, vec![timed(3 * 3600 + 90, "SUCCESS", "x", "y", 7.0, 3)]).await;
        app.ok(COMPLETE, json!({ "id": late, "s": "COMPLETED", "end": at(3 * 3600 + 120) })).await;
        let hourly = api_stats(&app, "HOUR").await;
        assert_eq!(hourly.as_array().map(Vec::len), Some(3), "the new hour appears: {hourly}");
        check_against_raw(&app).await;
    }
    if let Some(db) = try_test_db(Kind::Plain).await {
        let plain = TestApp::with_db(db, Default::default()).await;
        first_hours(&plain).await;
        check_against_raw(&plain).await;
        assert_eq!(api_stats(&plain, "HOUR").await, hourly_without_late(&app).await);
    }
}

/// The default app's first two hourly buckets (before the late data), to compare modes.
async fn hourly_without_late(app: &TestApp) -> Value {
    app.ok(STATS, json!({ "w": "an", "g": "HOUR", "from": at(0), "to": at(2 * 3600) })).await["sessionStats"].clone()
}

#[tokio::test]
async fn storage_reports_tables_chunks_compression_and_jobs() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "st", 0).await;
    record(&app, s, (0..200).map(|i| trace(i, "SUCCESS", "a", "b")).collect()).await;
    let q = "{ storage { mode tables { name hypertable chunks compressedChunks totalBytes compressionRatio }
        aggregates { name lastRefresh lagSeconds } jobs { kind target schedule lastRunStatus totalFailures } } }";
    if app.db.timescaledb {
        sqlx::query("SELECT compress_chunk(c) FROM show_chunks('flow_traces') c")
            .execute(app.db.store.pool())
            .await
            .expect("compress");
        let storage = app.ok(q, json!({})).await["storage"].clone();
        assert_eq!(storage["mode"], "TIMESCALEDB");
        let traces =
            storage["tables"].as_array().expect("tables").iter().find(|t| t["name"] == "flow_traces").expect("traces");
        assert_eq!(traces["hypertable"], true);
        assert!(traces["chunks"].as_i64() >= Some(1));
        assert_eq!(traces["compressedChunks"], traces["chunks"]);
        assert!(traces["compressionRatio"].as_f64().is_some_and(|r| r > 0.0));
        assert_eq!(
            storage["aggregates"].as_array().map(Vec::len),
            Some(migration::Policies::default().aggregates.len())
        );
        let kinds: Vec<&str> =
            storage["jobs"].as_array().expect("jobs").iter().filter_map(|j| j["kind"].as_str()).collect();
        for kind in ["policy_compression", "policy_retention", "policy_refresh_continuous_aggregate"] {
            assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
        }
    } else {
        crate::harness::skipped(
            "TimescaleDB part of storage_reports_tables_chunks_compression_and_jobs: not installed",
        );
    }
    if let Some(db) = try_test_db(Kind::Plain).await {
        let plain = TestApp::with_db(db, Default::default()).await;
        let storage = plain.ok(q, json!({})).await["storage"].clone();
        assert_eq!(storage["mode"], "PLAIN");
        assert_eq!(storage["tables"].as_array().map(Vec::len), Some(3));
        assert_eq!(storage["jobs"], json!([]));
    }
}

#[tokio::test]
async fn policies_change_idempotently_and_plain_mode_deletes_expired_rows() {
    let app = TestApp::start(Kind::Default).await;
    if require_timescaledb(&app.db, "policies_change_idempotently (TimescaleDB part)") {
        let mut policies = migration::Policies::default();
        policies.table_mut("flow_traces").expect("traces").retain_for = "45 days".into();
        policies.refresh_every = "15 minutes".into();
        let changed = policies.apply(app.db.store.orm()).await.expect("apply");
        // The traces' retention and every aggregate's refresh interval.
        assert_eq!(changed.len(), 1 + policies.aggregates.len(), "{changed:?}");
        assert!(policies.apply(app.db.store.orm()).await.expect("again").is_empty(), "idempotent");
        let days: i64 = sqlx::query_scalar(
            "SELECT extract(day FROM (config->>'drop_after')::interval)::bigint FROM timescaledb_information.jobs
             WHERE proc_name = 'policy_retention' AND hypertable_name = 'flow_traces'",
        )
        .fetch_one(app.db.store.pool())
        .await
        .expect("job");
        assert_eq!(days, 45);
        let mut bad = migration::Policies::default();
        bad.table_mut("flow_traces").expect("traces").retain_for = "3 days".into();
        assert!(bad.apply(app.db.store.orm()).await.is_err(), "an aggregate window beyond retention is refused");
    }
    let Some(db) = try_test_db(Kind::Plain).await else { return };
    let plain = TestApp::with_db(db, Default::default()).await;
    let s = session(&plain, "ret", 0).await;
    let mut old = trace(0, "SUCCESS", "a", "b");
    old["timestamp"] = json!((chrono::Utc::now() - chrono::Duration::days(40)).to_rfc3339());
    let mut recent = trace(0, "SUCCESS", "a", "b");
    recent["timestamp"] = json!((chrono::Utc::now() - chrono::Duration::days(1)).to_rfc3339());
    record(&plain, s, vec![old, recent.clone()]).await;
    // The session's start is in the change log; one more change, two days old, is past its one-day retention.
    sqlx::query(
        "INSERT INTO flow_session_changes (session_id, workflow_id, at) VALUES ($1, 'ret', now() - INTERVAL '2 days')",
    )
    .bind(s.to_string())
    .execute(plain.db.store.pool())
    .await
    .expect("old change");
    let deleted = plain.db.store.delete_expired(&migration::Policies::default(), true).await.expect("retention");
    // The server's own retention run at startup may have deleted some of them first; the state below is what must
    // hold either way.
    assert!(deleted <= 4, "only the trace past the 30-day retention, its two node-minute counts and the old change");
    let changes: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_session_changes")
        .fetch_one(plain.db.store.pool())
        .await
        .expect("changes");
    assert_eq!(changes, 1, "the session's start stays in the change log");
    let minutes: i64 = sqlx::query_scalar("SELECT count(*) FROM flow_trace_node_minutes")
        .fetch_one(plain.db.store.pool())
        .await
        .expect("minutes");
    assert_eq!(minutes, 2, "the recent trace's counts stay");
    let left: Vec<String> =
        sqlx::query_scalar("SELECT id::text FROM flow_traces").fetch_all(plain.db.store.pool()).await.expect("left");
    assert_eq!(left, vec![recent["id"].as_str().expect("id").to_owned()]);
}

const HISTORY: &str = "query($b: Int!, $from: DateTime!, $to: DateTime!) {
    sessionHistory(workflowId: \"hist\", bucketSeconds: $b, from: $from, to: $to) {
        bucket sessions completed failed cancelled running avgDuration maxDuration totalTraces errorCount } }";

async fn check_history(app: &TestApp) {
    let done = session(app, "hist", 0).await;
    record(app, done, vec![trace(1, "SUCCESS", "a", "b"), trace(2, "ERROR", "b", "c")]).await;
    app.ok(COMPLETE, json!({ "id": done, "s": "COMPLETED", "end": at(60) })).await;
    let failed = session(app, "hist", 30).await;
    app.ok(COMPLETE, json!({ "id": failed, "s": "FAILED", "end": at(90) })).await;
    session(app, "hist", 1000).await;
    let cancelled = session(app, "hist", 7300).await;
    app.ok(COMPLETE, json!({ "id": cancelled, "s": "CANCELLED", "end": at(7400) })).await;
    session(app, "other", 10).await;

    let data = app.ok(HISTORY, json!({ "b": 600, "from": at(0), "to": at(7800) })).await;
    let buckets = data["sessionHistory"].as_array().cloned().unwrap_or_default();
    assert_eq!(buckets.len(), 14, "every bucket from 0 to 7 800 s, empty ones too");
    let empty = |bucket: String| {
        json!({ "bucket": bucket, "sessions": 0, "completed": 0, "failed": 0, "cancelled": 0, "running": 0,
                "avgDuration": null, "maxDuration": null, "totalTraces": 0, "errorCount": 0 })
    };
    for (i, b) in buckets.iter().enumerate() {
        let start = at(600 * i as i64);
        let want = match i {
            0 => json!({ "bucket": start, "sessions": 2, "completed": 1, "failed": 1, "cancelled": 0, "running": 0,
                         "avgDuration": 60_000.0, "maxDuration": 60_000.0, "totalTraces": 2, "errorCount": 1 }),
            1 => json!({ "bucket": start, "sessions": 1, "completed": 0, "failed": 0, "cancelled": 0, "running": 1,
                         "avgDuration": null, "maxDuration": null, "totalTraces": 0, "errorCount": 0 }),
            12 => json!({ "bucket": start, "sessions": 1, "completed": 0, "failed": 0, "cancelled": 1, "running": 0,
                          "avgDuration": 100_000.0, "maxDuration": 100_000.0, "totalTraces": 0, "errorCount": 0 }),
            _ => empty(start),
        };
        assert_eq!(numbers_as_floats(b.clone()), numbers_as_floats(want), "bucket {i}");
    }
    for (b, from, to) in [(0, at(0), at(60)), (1, at(0), at(30 * 86_400)), (600, at(60), at(0))] {
        let (code, _) = app.err(HISTORY, json!({ "b": b, "from": from, "to": to })).await;
        assert_eq!(code, "BAD_USER_INPUT", "bucket {b} from {from} to {to}");
    }
}

#[tokio::test]
async fn session_history_is_gap_filled_at_any_bucket_size_in_both_modes() {
    check_history(&TestApp::start(Kind::Default).await).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check_history(&TestApp::with_db(db, Default::default()).await).await;
    }
}
