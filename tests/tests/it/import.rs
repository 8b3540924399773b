//! `flowtrace import`: each source layout, idempotence, kill and rerun, sessions the source changed, refused rows,
//! the time window, and the round trip flowtrace → flowtrace answering the same queries with the same ids.

use std::time::Duration;

use flowtrace::config::ServeArgs;
use flowtrace::import::run;
use serde_json::json;

use crate::harness::{Kind, TestApp, TestDb, skipped, test_db, try_test_db};
use crate::import_fixtures::*;

async fn scalar(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned())).fetch_one(db.store.pool()).await.expect(sql)
}

/// Every session's summary and node minutes equal what its stored traces add up to; each id is stored once.
async fn assert_consistent(db: &TestDb) {
    let wrong = scalar(
        db,
        "SELECT count(*) FROM flow_trace_sessions s LEFT JOIN (
            SELECT session_id, count(*) AS n, count(*) FILTER (WHERE status = 'SUCCESS') AS ok,
                count(*) FILTER (WHERE status = 'ERROR') AS err, count(*) FILTER (WHERE status = 'WARNING') AS warn,
                COALESCE(sum(data_size), 0) AS bytes, COALESCE(sum(duration), 0) AS dur, count(duration) AS timed
            FROM flow_traces GROUP BY session_id) t ON t.session_id = s.id
         WHERE (s.total_traces, s.success_count, s.error_count, s.warning_count, s.total_data_size, s.timed_traces)
            IS DISTINCT FROM (COALESCE(t.n, 0), COALESCE(t.ok, 0), COALESCE(t.err, 0), COALESCE(t.warn, 0),
                COALESCE(t.bytes, 0), COALESCE(t.timed, 0))
            OR abs(s.total_duration - COALESCE(t.dur, 0)) > 1e-6",
    )
    .await;
    assert_eq!(wrong, 0, "sessions whose summary is not their traces'");
    let minutes = scalar(
        db,
        "SELECT count(*) FROM (
            SELECT session_id, node_id, minute, inputs, outputs FROM flow_trace_node_minutes
            EXCEPT
            SELECT session_id, node, minute, sum(i), sum(o) FROM (
                SELECT session_id, target_node_id AS node, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch') AS minute,
                    1 AS i, 0 AS o FROM flow_traces
                UNION ALL
                SELECT session_id, source_node_id, date_bin('1 minute', timestamp, TIMESTAMPTZ 'epoch'), 0, 1
                FROM flow_traces) x GROUP BY 1, 2, 3) d",
    )
    .await;
    assert_eq!(minutes, 0, "node minutes that are not their traces'");
    for table in ["flow_traces", "flow_trace_events"] {
        let twice = scalar(db, &format!("SELECT count(*) - count(DISTINCT (session_id, id)) FROM {table}")).await;
        assert_eq!(twice, 0, "{table} ids stored twice");
    }
    let seq = scalar(db, "SELECT count(*) - count(DISTINCT seq) FROM flow_traces").await;
    assert_eq!(seq, 0, "seq drawn twice");
}

#[tokio::test]
async fn imports_the_replaced_services_main_tables_like_ingested_data() {
    let source = source_with(MAIN_DDL).await;
    let history = history("failed");
    write_main(&source.store, &history).await;
    // Rows our rules refuse, each with its reason; a refused session takes its traces with it.
    let bad = |id, payload: &'static str| FxTrace { payload: Some(payload), ..trace_of(id) };
    insert_main_trace(&source.store, history[0].id, &bad("ft_bad_json", "{not json")).await;
    insert_main_trace(&source.store, history[0].id, &bad("ft_nul", r#"{"a": "\u0000"}"#)).await;
    insert_main_trace(&source.store, history[0].id, &FxTrace { from: " ", ..trace_of("ft_blank_node") }).await;
    exec(
        &source.store,
        "INSERT INTO flow_trace_sessions (id, \"workflowId\", \"workflowName\", status, \"userId\")
         VALUES (E'fts_bad\\001id', 'wf-orders', 'Orders', 'running', 'bob')",
    )
    .await;
    insert_main_trace(&source.store, "fts_bad\u{1}id", &trace_of("ft_orphaned")).await;

    let target = test_db(Kind::Default).await;
    let mut listener = sqlx::postgres::PgListener::connect(target.store.url()).await.expect("listen");
    listener.listen("flowtrace").await.expect("listen");
    let (code, out) = run_binary(&target.store, source.store.url(), &["--batch-rows", "3"]).await;
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("source: the replaced service's tables in its main PostgreSQL"), "{out}");
    assert_eq!(code, 2, "rows were skipped: {out}");
    for expected in [
        "skipped flow_traces ft_bad_json: dataPayload is not valid JSON",
        "skipped flow_traces ft_nul: dataPayload contains a NUL character",
        "skipped flow_traces ft_blank_node: sourceNodeId is blank",
        "skipped flow_trace_sessions fts_bad\\u{1}id: id contains the control character U+0001",
        "skipped flow_traces ft_orphaned: sessionId contains the control character U+0001",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(expected)), "missing {expected:?} in {out}");
    }
    let last = lines.iter().rev().find(|l| l.starts_with("imported in")).expect("last line");
    assert!(last.contains("flow_trace_sessions 3 new") && last.contains("flow_traces 7 new"), "{last}");
    assert!(last.contains("5 rows skipped"), "{last}");
    // Nothing was announced: no wake-up for live subscribers, no change-log row for webhooks and sessionUpdates.
    let notified = tokio::time::timeout(Duration::from_millis(300), listener.recv()).await;
    assert!(notified.is_err(), "imported rows were announced: {notified:?}");
    assert_eq!(scalar(&target, "SELECT count(*) FROM flow_session_changes").await, 0);
    assert_consistent(&target).await;

    // The same history ingested through the API answers every dashboard query the same way.
    let reference = test_db(Kind::Default).await;
    write_flowtrace(&reference.store, &history, false, false).await;
    let reference = TestApp::with_db(reference, ServeArgs::default()).await;
    let imported = TestApp::with_db(target, ServeArgs::default()).await;
    let expected = answers(&reference, &history).await;
    assert_eq!(answers(&imported, &history).await, expected);
    let first = &expected[0]["session"];
    assert_eq!(first["id"], "fts_mf3k2q1a_4h8z0c9xk2lq");
    assert_eq!(first["summary"]["totalTraces"], 4, "recomputed, not the source's stale summary");
    assert_eq!(first["traces"]["edges"][1]["node"]["parentTraceId"], "ft_mf3k2q1b_a1");

    // A second run stores nothing (and reports the same refused rows).
    let outcome = run(&imported.db.store, &args(source.store.url())).await.expect("second run");
    assert_eq!(outcome.stored, Default::default());
    assert_eq!(outcome.skipped.len(), 5);
    assert_eq!(answers(&imported, &history).await, expected);
}

fn trace_of(id: &'static str) -> FxTrace {
    FxTrace {
        id,
        at: 5,
        ms: 1,
        status: "success",
        from: "fetch",
        to: "transform",
        payload: None,
        parent: None,
        error: None,
    }
}

#[tokio::test]
async fn reads_old_main_databases_and_their_time_zone() {
    // Before the service's later migrations: no metadata, no updatedAt.
    let source = source_with(MAIN_DDL).await;
    exec(&source.store, "ALTER TABLE flow_trace_sessions DROP COLUMN metadata, DROP COLUMN \"updatedAt\"").await;
    let history = history("failed");
    write_main(&source.store, &history).await;
    let target = test_db(Kind::Default).await;
    let mut a = args(source.store.url());
    // The wall times were Berlin's: 10:00 there is 09:00 UTC in winter, 08:00 in summer.
    a.source_timezone = "Europe/Berlin".into();
    let outcome = run(&target.store, &a).await.expect("import");
    assert_eq!((outcome.stored.sessions, outcome.stored.traces), (3, 7));
    let shift: f64 = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM ($2::timestamptz - start_time))::float8 FROM flow_trace_sessions WHERE id = $1",
    )
    .bind(history[0].id)
    .bind(at(0))
    .fetch_one(target.store.pool())
    .await
    .expect("start");
    assert!(shift == 3600.0 || shift == 7200.0, "Berlin wall time read as UTC+1/+2, got {shift} s");
    a.source_timezone = "Mars/Olympus".into();
    let bad = run(&target.store, &a).await;
    assert!(bad.is_err_and(|e| format!("{e:#}").contains("not a time zone")));
}

#[tokio::test]
async fn imports_the_replaced_services_timescaledb_schema_with_events_and_cancelled() {
    let source = source_with(TIMESCALE_DDL).await;
    let history = history("cancelled");
    write_timescale(&source.store, &history).await;
    let target = test_db(Kind::Default).await;
    let outcome = run(&target.store, &args(source.store.url())).await.expect("import");
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
    assert_eq!((outcome.stored.sessions, outcome.stored.traces, outcome.stored.events), (3, 7, 4));
    assert_consistent(&target).await;
    let reference = test_db(Kind::Default).await;
    write_flowtrace(&reference.store, &history, true, true).await;
    let reference = TestApp::with_db(reference, ServeArgs::default()).await;
    let imported = TestApp::with_db(target, ServeArgs::default()).await;
    let expected = answers(&reference, &history).await;
    assert_eq!(answers(&imported, &history).await, expected);
    assert_eq!(expected[3]["session"]["status"], "CANCELLED");
    assert_eq!(expected[0]["session"]["metadata"], json!({ "k": 1, "executionId": "exec-1" }));
    let again = run(&imported.db.store, &args(source.store.url())).await.expect("second run");
    assert_eq!(again.stored, Default::default());
}

#[tokio::test]
async fn a_session_completed_in_the_source_since_is_brought_up_to_date() {
    let source = source_with(MAIN_DDL).await;
    let history = history("failed");
    write_main(&source.store, &history).await;
    let target = test_db(Kind::Default).await;
    run(&target.store, &args(source.store.url())).await.expect("first run");
    // The running session goes on and ends in the source.
    insert_main_trace(&source.store, history[2].id, &FxTrace { at: 430, ..trace_of("ft_mf3k2q1f_c2") }).await;
    sqlx::query(
        "UPDATE flow_trace_sessions SET status = 'completed', \"endTime\" = $2::timestamptz AT TIME ZONE 'UTC'
         WHERE id = $1",
    )
    .bind(history[2].id)
    .bind(at(440))
    .execute(source.store.pool())
    .await
    .expect("complete in source");
    let outcome = run(&target.store, &args(source.store.url())).await.expect("second run");
    assert_eq!((outcome.stored.sessions, outcome.stored.sessions_updated, outcome.stored.traces), (0, 1, 1));
    let app = TestApp::with_db(target, ServeArgs::default()).await;
    let data = app
        .ok(
            "query($s: ID!) { session(id: $s) { status endTime summary { totalTraces } } }",
            json!({ "s": history[2].id }),
        )
        .await;
    assert_eq!(data["session"]["status"], "COMPLETED");
    assert_eq!(data["session"]["summary"]["totalTraces"], 2);
    let end = data["session"]["endTime"].as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    assert_eq!(end.map(|t| t.to_utc()), Some(at(440)));
    assert_consistent(&app.db).await;
}

#[tokio::test]
async fn since_and_until_take_the_sessions_started_in_the_window_whole() {
    let source = source_with(MAIN_DDL).await;
    exec(&source.store, &MAIN_FILL.replace("{sessions}", "20").replace("{traces}", "30")).await;
    let start = |i: i64| -> chrono::DateTime<chrono::Utc> {
        let hour = chrono::Utc::now().timestamp() / 3600 * 3600 - 2 * 86_400;
        chrono::DateTime::from_timestamp(hour + i * 7, 0).expect("time")
    };
    let target = test_db(Kind::Default).await;
    let mut window = args(source.store.url());
    (window.since, window.until) = (Some(start(5)), Some(start(10)));
    let outcome = run(&target.store, &window).await.expect("window");
    assert_eq!((outcome.stored.sessions, outcome.stored.traces), (5, 150));
    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM flow_trace_sessions ORDER BY id")
        .fetch_all(target.store.pool())
        .await
        .expect("ids");
    assert_eq!(ids.first().map(String::as_str), Some("fts_0000005_gen"));
    assert_eq!(ids.last().map(String::as_str), Some("fts_0000009_gen"));
    let rest = run(&target.store, &args(source.store.url())).await.expect("the rest");
    assert_eq!((rest.stored.sessions, rest.stored.traces), (15, 450));
    assert_consistent(&target).await;
}

#[tokio::test]
async fn a_run_killed_midway_and_started_again_stores_every_row_once() {
    let source = source_with(MAIN_DDL).await;
    let (sessions, traces) = (300, 20);
    exec(
        &source.store,
        &MAIN_FILL.replace("{sessions}", &sessions.to_string()).replace("{traces}", &traces.to_string()),
    )
    .await;
    let target = test_db(Kind::Default).await;
    let mut child = tokio::process::Command::new(crate::process::flowtrace_bin())
        .args(["import", "--from", source.store.url(), "--batch-rows", "40"])
        .env("DATABASE_URL", target.store.url())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let mut at_kill = 0;
    for _ in 0..2000 {
        at_kill = scalar(&target, "SELECT count(*) FROM flow_traces").await;
        if at_kill > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.start_kill().expect("kill -9");
    let status = child.wait().await.expect("wait");
    assert!(status.code().is_none(), "killed by a signal, not finished");
    let stored = scalar(&target, "SELECT count(*) FROM flow_traces").await;
    assert!(
        stored > 0 && stored < sessions * traces,
        "killed midway: {stored} of {} stored ({at_kill})",
        sessions * traces
    );
    assert_consistent(&target).await;

    let (code, out) = run_binary(&target.store, source.store.url(), &["--batch-rows", "40"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(scalar(&target, "SELECT count(*) FROM flow_trace_sessions").await, sessions);
    assert_eq!(scalar(&target, "SELECT count(*) FROM flow_traces").await, sessions * traces);
    assert_consistent(&target).await;
    let failed = scalar(&target, "SELECT count(*) FROM flow_trace_sessions WHERE status = 'FAILED'").await;
    assert_eq!(failed, sessions / 10 - 1, "every tenth failed, the last one still runs");
    let (code, out) = run_binary(&target.store, source.store.url(), &[]).await;
    assert_eq!(code, 0);
    assert!(out.contains("flow_trace_sessions 0 new, 0 brought up to date; flow_traces 0 new"), "{out}");
}

#[tokio::test]
async fn round_trip_between_flowtrace_databases_keeps_ids_and_answers() {
    let history = history("cancelled");
    let origin = test_db(Kind::Default).await;
    let timescaledb = origin.timescaledb;
    write_flowtrace(&origin.store, &history, true, true).await;
    let Some(plain) = try_test_db(Kind::Plain).await else { return };
    let outcome = run(&plain.store, &args(origin.store.url())).await.expect("to plain");
    assert_eq!((outcome.stored.sessions, outcome.stored.traces, outcome.stored.events), (3, 7, 4));
    let back = test_db(Kind::Default).await;
    let outcome = run(&back.store, &args(plain.store.url())).await.expect("and back");
    assert_eq!((outcome.stored.sessions, outcome.stored.traces, outcome.stored.events), (3, 7, 4));
    if !timescaledb {
        skipped("round trip TimescaleDB -> plain -> TimescaleDB: TimescaleDB is not installed (ran plain -> plain)");
    }
    let mut expected = None;
    for db in [origin, plain, back] {
        assert_consistent(&db).await;
        let app = TestApp::with_db(db, ServeArgs::default()).await;
        let got = answers(&app, &history).await;
        match &expected {
            None => expected = Some(got),
            Some(e) => assert_eq!(&got, e),
        }
    }
}

#[tokio::test]
async fn an_older_flowtrace_with_uuid_ids_comes_over_with_their_text() {
    use migration::MigratorTrait;
    let source = crate::harness::empty_db().await;
    // The schema before ids became text: the first eight migrations.
    migration::Migrator::up(source.store.orm(), Some(8)).await.expect("old schema");
    sqlx::query(
        "WITH s AS (
            INSERT INTO flow_trace_sessions (id, start_time, workflow_id, workflow_name, status, end_time, total_traces)
            VALUES ('6f1c2a4e-0000-4000-8000-000000000001', $1, 'wf-old', 'Old', 'COMPLETED', $1 + INTERVAL '1 minute', 42)
            RETURNING id, start_time)
         INSERT INTO flow_traces (id, timestamp, seq, session_id, workflow_id, status, source_node_id, target_node_id,
            parent_trace_id, duration, data_size)
         SELECT ('6f1c2a4e-0000-4000-8000-00000000010' || n)::uuid, start_time + n * INTERVAL '1 second', n, id,
            'wf-old', 'SUCCESS', 'a', 'b',
            CASE WHEN n > 1 THEN '6f1c2a4e-0000-4000-8000-000000000101'::uuid END, 5, 10
         FROM s, generate_series(1, 3) n",
    )
    .bind(at(0))
    .execute(source.store.pool())
    .await
    .expect("old rows");
    let target = test_db(Kind::Default).await;
    let outcome = run(&target.store, &args(source.store.url())).await.expect("import");
    assert!(outcome.skipped.is_empty(), "{:?}", outcome.skipped);
    assert_eq!((outcome.stored.sessions, outcome.stored.traces), (1, 3));
    assert_consistent(&target).await;
    let app = TestApp::with_db(target, ServeArgs::default()).await;
    let data = app
        .ok(
            "query($s: ID!) { session(id: $s) { id summary { totalTraces }
                traces(first: 10) { edges { node { id parentTraceId } } } } }",
            json!({ "s": "6f1c2a4e-0000-4000-8000-000000000001" }),
        )
        .await;
    assert_eq!(data["session"]["summary"]["totalTraces"], 3, "recomputed, not the stored 42");
    let edges = &data["session"]["traces"]["edges"];
    assert_eq!(edges[2]["node"]["id"], "6f1c2a4e-0000-4000-8000-000000000103");
    assert_eq!(edges[2]["node"]["parentTraceId"], "6f1c2a4e-0000-4000-8000-000000000101");
}
