//! Time travel against a hand-built dataset with known answers, in both storage modes.

use serde_json::{Value, json};
use uuid::Uuid;

use chrono::Duration;

use crate::fixtures::{RECORD_EVENTS, at, record, session, t0, trace};
use crate::harness::{Kind, TestApp, try_test_db};

const STATE: &str = "query($w: String!, $at: DateTime!) { workflowStateAt(workflowId: $w, at: $at) {
    at sessionStatus session { id }
    nodes { nodeId nodeName status inputCount outputCount lastInput { id } lastOutput { id } lastError { message } } } }";

const COMPLETE: &str = "mutation($id: ID!, $s: SessionStatus!, $end: DateTime) { completeSession(id: $id, status: $s, endTime: $end) { id } }";

struct Dataset {
    a: Uuid,
    b: Uuid,
    /// Trace ids of session b by their second offset.
    t: std::collections::HashMap<i64, String>,
}

fn named(s: i64, status: &str, from: &str, to: &str) -> Value {
    let mut t = trace(s, status, from, to);
    t["source"]["nodeName"] = json!(format!("{from} node"));
    t["target"]["nodeName"] = json!(format!("{to} node"));
    if status == "ERROR" {
        t["error"] = json!({ "message": "boom", "code": "E42" });
    }
    t
}

async fn dataset(app: &TestApp) -> Dataset {
    let a = session(app, "tt", 0).await;
    app.ok(COMPLETE, json!({ "id": a, "s": "COMPLETED", "end": at(100) })).await;
    let b = session(app, "tt", 200).await;
    let traces = vec![
        named(210, "SUCCESS", "a", "b"),
        named(220, "SUCCESS", "b", "c"),
        named(230, "ERROR", "c", "d"),
        named(240, "SUCCESS", "a", "b"),
        named(300, "SUCCESS", "b", "c"),
    ];
    let t = [210, 220, 230, 240, 300]
        .into_iter()
        .zip(&traces)
        .map(|(s, tr)| (s, tr["id"].as_str().expect("id").to_owned()))
        .collect();
    record(app, b, traces).await;
    let e = |kind: &str, node: &str, s: i64| json!({ "id": Uuid::new_v4(), "nodeId": node, "eventType": kind, "timestamp": at(s) });
    app.ok(RECORD_EVENTS, json!({ "s": b, "e": [e("LOG", "e", 215), e("START", "c", 225), e("COMPLETE", "c", 260)] }))
        .await;
    app.ok(COMPLETE, json!({ "id": b, "s": "FAILED", "end": at(500) })).await;
    Dataset { a, b, t }
}

async fn state(app: &TestApp, s: i64) -> Value {
    app.ok(STATE, json!({ "w": "tt", "at": at(s) })).await["workflowStateAt"].clone()
}

fn node<'a>(state: &'a Value, id: &str) -> &'a Value {
    state["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .find(|n| n["nodeId"] == id)
        .unwrap_or_else(|| panic!("node {id} in {state}"))
}

async fn check_state(app: &TestApp) {
    let d = dataset(app).await;
    assert_eq!(state(app, -10).await, Value::Null, "no session yet");

    let early = state(app, 50).await;
    assert_eq!(early["session"]["id"], json!(d.a));
    assert_eq!(early["sessionStatus"], "RUNNING", "a had not ended at +50");
    assert_eq!(early["nodes"], json!([]));

    let between = state(app, 150).await;
    assert_eq!(between["session"]["id"], json!(d.a), "ended before `at`: the latest started before it");
    assert_eq!(between["sessionStatus"], "COMPLETED");

    // Exactly on a trace: it counts; nothing later does.
    let s230 = state(app, 230).await;
    assert_eq!(s230["session"]["id"], json!(d.b));
    assert_eq!(s230["sessionStatus"], "RUNNING", "b ends at +500");
    let ids: Vec<&str> =
        s230["nodes"].as_array().expect("nodes").iter().map(|n| n["nodeId"].as_str().expect("id")).collect();
    assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    let a = node(&s230, "a");
    assert_eq!(
        (a["status"].as_str(), a["outputCount"].as_i64(), a["inputCount"].as_i64()),
        (Some("COMPLETED"), Some(1), Some(0))
    );
    assert_eq!(a["lastOutput"]["id"], json!(d.t[&210]));
    assert_eq!(a["nodeName"], "a node");
    let b = node(&s230, "b");
    assert_eq!(b["status"], "COMPLETED");
    assert_eq!(b["lastInput"]["id"], json!(d.t[&210]), "the +240 input is in the future");
    let c = node(&s230, "c");
    assert_eq!(c["status"], "RUNNING", "its START event decides, not its failed trace");
    assert_eq!(c["lastError"], json!({ "message": "boom" }));
    assert_eq!(c["lastOutput"]["id"], json!(d.t[&230]));
    let dn = node(&s230, "d");
    assert_eq!((dn["status"].as_str(), dn["inputCount"].as_i64()), (Some("RUNNING"), Some(1)), "input, no output yet");
    let e = node(&s230, "e");
    assert_eq!(
        (e["status"].as_str(), e["inputCount"].as_i64(), e["lastInput"].clone()),
        (Some("IDLE"), Some(0), Value::Null),
        "events but no traces"
    );

    let s245 = state(app, 245).await;
    assert_eq!(node(&s245, "b")["status"], "RUNNING", "input newer than its latest output");
    assert_eq!(node(&s245, "a")["outputCount"], 2);

    let s229 = state(app, 229).await;
    assert_eq!(node(&s229, "c")["lastError"], Value::Null, "the failure at +230 had not happened");
    let seen: Vec<&str> =
        s229["nodes"].as_array().expect("nodes").iter().map(|n| n["nodeId"].as_str().expect("id")).collect();
    assert!(!seen.contains(&"d"), "d is first seen at +230: {seen:?}");

    let after_end = state(app, 600).await;
    assert_eq!(after_end["sessionStatus"], "FAILED");
    assert_eq!(node(&after_end, "c")["status"], "COMPLETED", "COMPLETE event at +260");
    let b = node(&after_end, "b");
    assert_eq!(
        (b["status"].as_str(), b["inputCount"].as_i64(), b["outputCount"].as_i64()),
        (Some("COMPLETED"), Some(2), Some(2))
    );
    assert_eq!(node(&after_end, "d")["status"], "FAILED", "a sink does not run on after its session failed");
}

#[tokio::test]
async fn workflow_state_at_in_both_modes() {
    let app = TestApp::start(Kind::Default).await;
    check_state(&app).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check_state(&TestApp::with_db(db, Default::default()).await).await;
    }
}

/// Counts and latest traces as of an instant come from per-minute rows plus the raw traces of that instant's minute:
/// they must equal what the raw table says at every kind of instant (minute boundaries, just before and after them, on
/// a trace), whatever order the batches came in and however often one was retried. Some traces share their instant,
/// where the one written last is the latest.
async fn counts_dataset(app: &TestApp) -> (Uuid, Vec<chrono::DateTime<chrono::Utc>>) {
    let s = session(app, "counts", -60).await;
    let mut traces: Vec<Value> = (0..240_i64)
        .map(|i| {
            let status = if i % 5 == 2 { "ERROR" } else { "SUCCESS" };
            let mut t = trace(0, status, NODES[(i % 4) as usize], NODES[((i * 7 + 1) % 4) as usize]);
            // 2.5 s apart (every sixth on its predecessor's instant): ten minutes, some traces exactly on minute
            // boundaries.
            let step = if i % 6 == 5 { i - 1 } else { i };
            t["timestamp"] = json!((t0() + Duration::milliseconds(step * 2_500)).to_rfc3339());
            if status == "ERROR" {
                t["error"] = json!({ "message": t["id"].clone() });
            }
            t
        })
        .collect();
    traces.reverse(); // Newest batches first: minutes are filled out of order.
    for batch in traces.chunks(70) {
        record(app, s, batch.to_vec()).await;
    }
    let retried = record(app, s, traces[..70].to_vec()).await;
    assert_eq!(retried["accepted"], 0, "a retried batch is not counted again");

    let mut instants = vec![t0() - Duration::seconds(1), t0(), t0() + Duration::milliseconds(2_500)];
    for minute in 1..=11 {
        let m = t0() + Duration::minutes(minute);
        instants.extend([m - Duration::microseconds(1), m, m + Duration::microseconds(1), m + Duration::seconds(31)]);
    }
    (s, instants)
}

const NODES: [&str; 4] = ["n0", "n1", "n2", "n3"];

const LATEST: &str = "query($w: String!, $at: DateTime!) { workflowStateAt(workflowId: $w, at: $at) {
    nodes { nodeId inputCount outputCount lastInput { id } lastOutput { id } lastError { message } } } }";

async fn check_against_raw(app: &TestApp, s: Uuid, instants: &[chrono::DateTime<chrono::Utc>]) {
    let pool = app.db.store.pool();
    for &at in instants {
        let state = app.ok(LATEST, json!({ "w": "counts", "at": at.to_rfc3339() })).await["workflowStateAt"].clone();
        for n in NODES {
            let raw: (i64, i64, Option<String>, Option<String>, Option<String>) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE target_node_id = $2), count(*) FILTER (WHERE source_node_id = $2),
                    (array_agg(id ORDER BY timestamp DESC, seq DESC) FILTER (WHERE target_node_id = $2))[1],
                    (array_agg(id ORDER BY timestamp DESC, seq DESC) FILTER (WHERE source_node_id = $2))[1],
                    (array_agg(error_message ORDER BY timestamp DESC, seq DESC)
                        FILTER (WHERE source_node_id = $2 AND status = 'ERROR'))[1]
                 FROM flow_traces WHERE session_id = $1 AND timestamp <= $3",
            )
            .bind(s.to_string())
            .bind(n)
            .bind(at)
            .fetch_one(pool)
            .await
            .expect("raw counts");
            let found = state["nodes"].as_array().expect("nodes").iter().find(|x| x["nodeId"] == n);
            let got = found.map(|x| {
                let text = |v: &Value| v.as_str().map(str::to_owned);
                (
                    x["inputCount"].as_i64().expect("in"),
                    x["outputCount"].as_i64().expect("out"),
                    text(&x["lastInput"]["id"]),
                    text(&x["lastOutput"]["id"]),
                    text(&x["lastError"]["message"]),
                )
            });
            let want = (raw.0 + raw.1 > 0).then_some(raw);
            assert_eq!(got, want, "node {n} at {at}");
        }
    }
}

#[tokio::test]
async fn node_counts_and_latest_traces_match_the_raw_traces_at_every_instant() {
    let app = TestApp::start(Kind::Default).await;
    let (s, instants) = counts_dataset(&app).await;
    check_against_raw(&app, s, &instants).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        let app = TestApp::with_db(db, Default::default()).await;
        let (s, instants) = counts_dataset(&app).await;
        check_against_raw(&app, s, &instants).await;
    }
}

/// A database that holds traces from before the per-minute latest times (migration m20261206_000015) gets them from
/// its traces: the answers stay those of the raw table.
#[tokio::test]
async fn latest_traces_are_the_same_after_the_node_minutes_migration_fills_them() {
    use migration::MigratorTrait;
    let app = TestApp::start(Kind::Default).await;
    let (s, instants) = counts_dataset(&app).await;
    migration::Migrator::down(app.db.store.orm(), Some(1)).await.expect("down one");
    let filled: i64 = app.scalar_i64("SELECT count(*) FROM flow_trace_node_minutes").await;
    assert!(filled > 0, "minute rows stay when their latest times go");
    migration::Migrator::up(app.db.store.orm(), None).await.expect("up again");
    let unfilled = app
        .scalar_i64(
            "SELECT count(*) FROM flow_trace_node_minutes
             WHERE (inputs > 0 AND last_input_at IS NULL) OR (outputs > 0 AND last_output_at IS NULL)",
        )
        .await;
    assert_eq!(unfilled, 0, "every minute row has its latest times");
    check_against_raw(&app, s, &instants).await;
}

const TIMELINE: &str = "query($s: ID!, $b: Int!, $from: DateTime, $to: DateTime) {
    executionTimeline(sessionId: $s, bucketSeconds: $b, from: $from, to: $to) {
        bucket traceCount errorCount avgDuration maxDuration dataSize activeNodes } }";

fn timed(s: i64, status: &str, from: &str, to: &str, ms: f64, bytes: i64) -> Value {
    let mut t = trace(s, status, from, to);
    t["duration"] = json!(ms);
    t["data"] = json!({ "size": bytes });
    t
}

async fn timeline(app: &TestApp) -> (Value, Value, Value) {
    // Starts mid-bucket (+5) and ends at +65; traces at +10, +10, +12 and +40.
    let s = session(app, "tl", 5).await;
    record(
        app,
        s,
        vec![
            timed(10, "SUCCESS", "a", "b", 10.0, 100),
            timed(10, "SUCCESS", "b", "c", 20.0, 50),
            timed(12, "SUCCESS", "a", "b", 30.0, 0),
            timed(40, "ERROR", "c", "d", 5.0, 7),
        ],
    )
    .await;
    app.ok(COMPLETE, json!({ "id": s, "s": "COMPLETED", "end": at(65) })).await;
    let full = app.ok(TIMELINE, json!({ "s": s, "b": 10 })).await["executionTimeline"].clone();
    let narrowed =
        app.ok(TIMELINE, json!({ "s": s, "b": 20, "from": at(30), "to": at(45) })).await["executionTimeline"].clone();
    let empty = session(app, "tl", 0).await;
    app.ok(COMPLETE, json!({ "id": empty, "s": "CANCELLED", "end": at(30) })).await;
    let none = app.ok(TIMELINE, json!({ "s": empty, "b": 10 })).await["executionTimeline"].clone();
    (full, narrowed, none)
}

fn zero(s: i64) -> Value {
    json!({ "bucket": at(s), "traceCount": 0, "errorCount": 0, "avgDuration": null, "maxDuration": null, "dataSize": 0, "activeNodes": 0 })
}

#[tokio::test]
async fn execution_timeline_is_gap_filled_and_the_same_in_both_modes() {
    let app = TestApp::start(Kind::Default).await;
    let (full, narrowed, none) = timeline(&app).await;
    let expected = json!([
        zero(0),
        { "bucket": at(10), "traceCount": 3, "errorCount": 0, "avgDuration": 20.0, "maxDuration": 30.0, "dataSize": 150, "activeNodes": 3 },
        zero(20),
        zero(30),
        { "bucket": at(40), "traceCount": 1, "errorCount": 1, "avgDuration": 5.0, "maxDuration": 5.0, "dataSize": 7, "activeNodes": 2 },
        zero(50),
        zero(60),
    ]);
    assert_eq!(full, expected, "the bucket straddling the start and the empty ones are present");
    assert_eq!(narrowed[0]["bucket"], json!(at(20)));
    assert_eq!(narrowed.as_array().map(Vec::len), Some(2));
    assert_eq!(narrowed[1]["traceCount"], 1);
    assert_eq!(none, json!([zero(0), zero(10), zero(20), zero(30)]), "an empty session is all zeros");

    if let Some(db) = try_test_db(Kind::Plain).await {
        let plain = TestApp::with_db(db, Default::default()).await;
        assert_eq!(timeline(&plain).await, (full, narrowed, none), "plain mode answers the same");
    }

    let s = session(&app, "tl-limits", 0).await;
    let (code, _) = app.err(TIMELINE, json!({ "s": s, "b": 1, "from": at(0), "to": at(86_400) })).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    let (code, _) = app.err(TIMELINE, json!({ "s": s, "b": 0 })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app.err(TIMELINE, json!({ "s": s, "b": 10, "from": at(50), "to": at(10) })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app.err(TIMELINE, json!({ "s": Uuid::new_v4(), "b": 10 })).await;
    assert_eq!(code, "NOT_FOUND");
}

#[tokio::test]
async fn replay_traces_returns_the_window_in_order() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "rp", 0).await;
    let traces: Vec<Value> = (0..30).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    record(&app, s, traces.clone()).await;
    let q = "query($s: ID!, $start: DateTime!, $end: DateTime!, $after: String) {
        replayTraces(sessionId: $s, start: $start, end: $end, first: 7, after: $after) {
            pageInfo { hasNextPage endCursor } edges { node { id } } } }";
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app.ok(q, json!({ "s": s, "start": at(5), "end": at(20), "after": after })).await;
        let conn = &data["replayTraces"];
        got.extend(conn["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].clone()));
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let expected: Vec<Value> = traces[5..=20].iter().map(|t| t["id"].clone()).collect();
    assert_eq!(got, expected, "inclusive bounds, (timestamp, seq) order");
    let (code, _) = app.err(q, json!({ "s": s, "start": at(20), "end": at(5) })).await;
    assert_eq!(code, "BAD_USER_INPUT");
}

const SESSION_STATE: &str = "query($s: ID!, $at: DateTime!) { sessionStateAt(sessionId: $s, at: $at) {
    sessionStatus session { id } nodes { nodeId status inputCount outputCount } } }";
const RUNNING: &str = "query($w: String!, $at: DateTime!) { runningSessions(workflowId: $w, at: $at) { id } }";

/// Two overlapping sessions of one workflow: `workflowStateAt` picks the one started last among those running, and
/// `sessionStateAt` answers for either, whichever `workflowStateAt` picks.
async fn check_overlapping(app: &TestApp) {
    // long: 0..600 s, nodes a → b; short: 100..300 s, nodes x → y.
    let long = session(app, "overlap", 0).await;
    let short = session(app, "overlap", 100).await;
    record(app, long, vec![trace(50, "SUCCESS", "a", "b"), trace(150, "SUCCESS", "a", "b")]).await;
    record(app, short, vec![trace(120, "SUCCESS", "x", "y")]).await;
    app.ok(COMPLETE, json!({ "id": short, "s": "COMPLETED", "end": at(300) })).await;
    app.ok(COMPLETE, json!({ "id": long, "s": "FAILED", "end": at(600) })).await;

    let picked = app.ok(STATE, json!({ "w": "overlap", "at": at(200) })).await;
    assert_eq!(picked["workflowStateAt"]["session"]["id"], json!(short.to_string()), "the one started last");

    let state = |s: Uuid, t: i64| async move {
        app.ok(SESSION_STATE, json!({ "s": s, "at": at(t) })).await["sessionStateAt"].clone()
    };
    let long_at_200 = state(long, 200).await;
    assert_eq!(long_at_200["session"]["id"], json!(long.to_string()));
    assert_eq!(long_at_200["sessionStatus"], "RUNNING");
    let nodes: Vec<(&str, i64, i64)> = long_at_200["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| {
            (
                n["nodeId"].as_str().expect("id"),
                n["inputCount"].as_i64().expect("in"),
                n["outputCount"].as_i64().expect("out"),
            )
        })
        .collect();
    assert_eq!(nodes, vec![("a", 0, 2), ("b", 2, 0)], "only the long session's nodes, both of its traces");
    assert_eq!(state(long, 700).await["sessionStatus"], "FAILED");
    assert_eq!(state(short, 50).await, Value::Null, "not started yet");
    assert_eq!(state(short, 250).await["nodes"].as_array().map(Vec::len), Some(2));

    let running = |t: i64| async move {
        let data = app.ok(RUNNING, json!({ "w": "overlap", "at": at(t) })).await;
        data["runningSessions"].as_array().expect("list").iter().map(|s| s["id"].clone()).collect::<Vec<_>>()
    };
    assert_eq!(running(200).await, vec![json!(short.to_string()), json!(long.to_string())]);
    assert_eq!(running(300).await, vec![json!(long.to_string())], "a session ended at `at` no longer runs");
    assert_eq!(running(650).await, Vec::<Value>::new());

    let (code, _) = app.err(SESSION_STATE, json!({ "s": Uuid::new_v4(), "at": at(0) })).await;
    assert_eq!(code, "NOT_FOUND");
    let (code, _) = app
        .err(
            "query($at: DateTime!) { runningSessions(workflowId: \"overlap\", at: $at, first: 0) { id } }",
            json!({ "at": at(0) }),
        )
        .await;
    assert_eq!(code, "BAD_USER_INPUT");
}

#[tokio::test]
async fn session_state_at_and_running_sessions_answer_for_overlapping_sessions_in_both_modes() {
    let app = TestApp::start(Kind::Default).await;
    check_overlapping(&app).await;
    if let Some(db) = try_test_db(Kind::Plain).await {
        check_overlapping(&TestApp::with_db(db, Default::default()).await).await;
    }
}

/// Retention cuts into the middle of a minute: time travel still counts exactly the traces that remain. Without
/// TimescaleDB the server deletes the traces by whole minutes and each minute row with its last trace; with it the
/// traces stay until TimescaleDB drops their chunk, and so do their minute rows.
#[tokio::test]
async fn state_counts_match_the_raw_traces_after_retention_cuts_into_a_minute() {
    let mut apps = vec![TestApp::start(Kind::Default).await];
    if let Some(db) = try_test_db(Kind::Plain).await {
        apps.push(TestApp::with_db(db, Default::default()).await);
    }
    for app in &apps {
        let (s, instants) = counts_dataset(app).await;
        let cut = t0() + Duration::seconds(90);
        let mut policies = migration::Policies::default();
        policies.table_mut("flow_traces").expect("traces").retain_for =
            format!("{} seconds", (chrono::Utc::now() - cut).num_seconds());
        app.db.store.delete_expired(&policies, !app.db.timescaledb).await.expect("retention");
        let left = app.scalar_i64("SELECT count(*) FROM flow_traces").await;
        let earliest_minute =
            app.scalar_i64("SELECT extract(epoch FROM min(minute))::bigint FROM flow_trace_node_minutes").await;
        if app.db.timescaledb {
            assert_eq!(left, 240, "TimescaleDB drops whole chunks, by its own policy");
            assert_eq!(earliest_minute, t0().timestamp(), "every minute row stays with its traces");
        } else {
            assert_eq!(left, 240 - 24, "the first whole minute of traces is gone, the one cut into stays");
            assert_eq!(earliest_minute, t0().timestamp() + 60, "the first minute's row went with its traces");
        }
        check_against_raw(app, s, &instants).await;
    }
}
