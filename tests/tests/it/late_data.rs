//! Late data: rows written below a continuous aggregate's watermark reach `sessionStats` and `nodePerformance`
//! within seconds, and `storage` reports what is still pending.

use std::time::{Duration, Instant};

use flowtrace::config::ServeArgs;
use flowtrace::store::aggregate_refresh::refresh_round;
use serde_json::{Value, json};

use crate::fixtures::{at, record, session, trace};
use crate::harness::{Kind, TestApp, try_test_db};

const COMPLETE: &str =
    "mutation($id: ID!, $end: DateTime) { completeSession(id: $id, status: COMPLETED, endTime: $end) { id } }";
const FIGURES: &str = "query($f: SessionFilter, $from: DateTime!, $to: DateTime!) {
    sessions(filter: $f) { totalCount }
    sessionStats(workflowId: \"late\", granularity: HOUR, from: $from, to: $to) { sessions completed totalTraces }
    daily: sessionStats(workflowId: \"late\", granularity: DAY, from: $from, to: $to) { sessions }
    nodePerformance(workflowId: \"late\", from: $from, to: $to) { traceCount errorCount } }";
const STORAGE: &str = "{ storage { aggregates { name watermark pendingRanges { from to } pendingSeconds } } }";

/// A completed session of workflow `late` at `t0 + start_s` with three traces, one failed.
async fn backfill(app: &TestApp, start_s: i64) {
    let s = session(app, "late", start_s).await;
    let traces = vec![
        trace(start_s + 1, "SUCCESS", "a", "b"),
        trace(start_s + 2, "ERROR", "b", "c"),
        trace(start_s + 3, "SUCCESS", "c", "d"),
    ];
    record(app, s, traces).await;
    app.ok(COMPLETE, json!({ "id": s, "end": at(start_s + 10) })).await;
}

fn sum(items: &Value, field: &str) -> i64 {
    items.as_array().map_or(0, |a| a.iter().filter_map(|b| b[field].as_i64()).sum())
}

/// The aggregates' sums against the raw rows, over every bucket the test writes into. Empty when they agree.
async fn differences(app: &TestApp) -> Vec<String> {
    let (from, to) = (at(-3 * 86_400), at(4 * 86_400));
    let filter = json!({ "workflowId": "late", "startedAfter": from, "startedBefore": to });
    let data = app.ok(FIGURES, json!({ "f": filter, "from": from, "to": to })).await;
    let traces = app.scalar_i64("SELECT count(*) FROM flow_traces WHERE workflow_id = 'late'").await;
    let failed =
        app.scalar_i64("SELECT count(*) FROM flow_traces WHERE workflow_id = 'late' AND status = 'ERROR'").await;
    let sessions = data["sessions"]["totalCount"].as_i64().unwrap_or(-1);
    let mut wrong = Vec::new();
    for (what, got, want) in [
        ("hourly sessions", sum(&data["sessionStats"], "sessions"), sessions),
        ("hourly completed", sum(&data["sessionStats"], "completed"), sessions),
        ("hourly traces", sum(&data["sessionStats"], "totalTraces"), traces),
        ("daily sessions", sum(&data["daily"], "sessions"), sessions),
        ("node traces", sum(&data["nodePerformance"], "traceCount"), traces),
        ("node errors", sum(&data["nodePerformance"], "errorCount"), failed),
    ] {
        if got != want {
            wrong.push(format!("{what}: {got} in the aggregate, {want} in the rows"));
        }
    }
    wrong
}

/// Materialises everything up to the policies' end offsets (TimescaleDB's own jobs are paused, so only the test
/// decides when a refresh happens).
async fn materialise(app: &TestApp) {
    let pool = app.db.store.pool();
    sqlx::query(
        "SELECT alter_job(job_id, scheduled => false) FROM timescaledb_information.jobs
         WHERE proc_name = 'policy_refresh_continuous_aggregate'",
    )
    .execute(pool)
    .await
    .expect("pause the refresh jobs");
    for a in migration::Policies::default().aggregates {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CALL refresh_continuous_aggregate('{}', NULL, now() - INTERVAL '{}')",
            a.view, a.end_offset
        )))
        .execute(pool)
        .await
        .expect("refresh");
    }
}

async fn pending(app: &TestApp) -> Vec<Value> {
    let data = app.ok(STORAGE, json!({})).await;
    data["storage"]["aggregates"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn late_data_reaches_the_aggregates_within_seconds() {
    let Some(db) = try_test_db(Kind::Default).await else { return };
    if !db.timescaledb {
        crate::harness::skipped(
            "TimescaleDB part of late_data_reaches_the_aggregates_within_seconds: not installed (plain part only)",
        );
        let app = TestApp::with_db(db, ServeArgs::default()).await;
        backfill(&app, 0).await;
        assert_eq!(differences(&app).await, Vec::<String>::new());
        return;
    }
    // First without the server's refresher: the gap it closes, and what `storage` says of it.
    let mut app = TestApp::with_db(db, ServeArgs { late_data_refresh_ms: 0, ..ServeArgs::default() }).await;
    backfill(&app, 0).await;
    backfill(&app, 30 * 3600).await;
    materialise(&app).await;
    assert_eq!(differences(&app).await, Vec::<String>::new(), "materialised data is exact");
    for a in pending(&app).await {
        assert_eq!(a["pendingRanges"], json!([]), "{a}");
        assert!(a["watermark"].is_string(), "{a}");
    }
    // A watermark is the end of the newest bucket materialised, so earlier than the first session is below it.
    backfill(&app, -2 * 3600).await;
    assert!(!differences(&app).await.is_empty(), "below the watermark the aggregates miss the backfill");
    let backfilled = (crate::fixtures::t0() - chrono::Duration::hours(2)).to_rfc3339();
    for a in pending(&app).await {
        let ranges = a["pendingRanges"].as_array().cloned().unwrap_or_default();
        let covers = ranges.iter().any(|r| {
            let (from, to) = (r["from"].as_str().unwrap_or(""), r["to"].as_str().unwrap_or(""));
            chrono_le(from, &backfilled) && chrono_le(&backfilled, to)
        });
        assert!(covers, "{} reports the backfilled hour as pending: {a}", a["name"]);
        assert_eq!(a["pendingSeconds"], Value::Null, "no refresher has seen it yet: {a}");
    }
    refresh_round(&app.db.store, &Default::default()).await;
    assert_eq!(differences(&app).await, Vec::<String>::new(), "one round makes them exact");
    for a in pending(&app).await {
        assert_eq!(a["pendingRanges"], json!([]), "{a}");
    }

    // Then with the refresher a server runs by default: exact again within seconds, with no one asking.
    app.shutdown().await;
    app.restart(ServeArgs::default()).await;
    backfill(&app, -3 * 3600).await;
    backfill(&app, -26 * 3600).await;
    let started = Instant::now();
    let mut wrong = differences(&app).await;
    while !wrong.is_empty() && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        wrong = differences(&app).await;
    }
    assert_eq!(wrong, Vec::<String>::new(), "still inexact after {:?}", started.elapsed());
    eprintln!("late data exact after {:?}", started.elapsed());
    for a in pending(&app).await {
        assert_eq!(a["pendingRanges"], json!([]), "{a}");
    }
}

/// `a <= b` for two RFC 3339 times.
fn chrono_le(a: &str, b: &str) -> bool {
    match (chrono::DateTime::parse_from_rfc3339(a), chrono::DateTime::parse_from_rfc3339(b)) {
        (Ok(a), Ok(b)) => a <= b,
        _ => false,
    }
}

#[tokio::test]
async fn a_server_without_timescaledb_reports_no_pending_ranges() {
    let Some(db) = try_test_db(Kind::Plain).await else { return };
    let app = TestApp::with_db(db, ServeArgs::default()).await;
    backfill(&app, 0).await;
    assert_eq!(pending(&app).await, Vec::<Value>::new());
    assert_eq!(differences(&app).await, Vec::<String>::new());
}
