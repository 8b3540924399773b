//! Reads through GraphQL: sessions with filters, traces and events, Relay pagination.

use std::collections::HashSet;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp};

const TRACES: &str = "query($s: ID, $w: String, $first: Int, $after: String, $last: Int, $before: String,
    $node: String, $status: TraceStatus, $from: DateTime, $to: DateTime) {
    traces(sessionId: $s, workflowId: $w, first: $first, after: $after, last: $last, before: $before,
           nodeId: $node, status: $status, from: $from, to: $to) {
        totalCount pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
        edges { cursor node { id timestamp seq } }
    } }";

fn ids(conn: &Value) -> Vec<String> {
    conn["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test]
async fn paginating_1200_traces_forward_and_backward_has_no_gaps_or_repeats() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    // Equal timestamps in every pair, so the order must fall back to seq.
    let all: Vec<Value> = (0..1200).map(|i| trace(i / 2, "SUCCESS", "a", "b")).collect();
    for chunk in all.chunks(400) {
        record(&app, s, chunk.to_vec()).await;
    }

    let mut forward = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app.ok(TRACES, json!({ "s": s, "first": 250, "after": after })).await;
        let conn = &data["traces"];
        assert_eq!(conn["totalCount"], 1200);
        forward.extend(ids(conn));
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = conn["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(forward.len(), 1200);
    assert_eq!(forward.iter().collect::<HashSet<_>>().len(), 1200, "no repeats");

    let mut backward = Vec::new();
    let mut before: Option<String> = None;
    loop {
        let data = app.ok(TRACES, json!({ "s": s, "last": 333, "before": before })).await;
        let conn = &data["traces"];
        let mut page = ids(conn);
        page.extend(backward);
        backward = page;
        if conn["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        before = conn["pageInfo"]["startCursor"].as_str().map(str::to_owned);
    }
    assert_eq!(backward, forward, "both directions give the same order");

    // Order is (timestamp, seq).
    let data = app.ok(TRACES, json!({ "s": s, "first": 1000 })).await;
    let keys: Vec<(String, i64)> = data["traces"]["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|e| {
            (
                e["node"]["timestamp"].as_str().expect("ts").to_owned(),
                e["node"]["seq"].as_str().expect("seq").parse().expect("n"),
            )
        })
        .collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "strictly increasing (timestamp, seq)");
}

#[tokio::test]
async fn trace_filters_narrow_by_workflow_node_status_and_time() {
    let app = TestApp::start(Kind::Default).await;
    let s1 = session(&app, "wf-a", 0).await;
    let s2 = session(&app, "wf-b", 0).await;
    record(&app, s1, vec![trace(1, "SUCCESS", "a", "b"), trace(2, "ERROR", "b", "c"), trace(3, "SUCCESS", "c", "d")])
        .await;
    record(&app, s2, vec![trace(1, "SUCCESS", "x", "y")]).await;

    let app = &app;
    let count = |v: Value| async move { app.ok(TRACES, v).await["traces"]["totalCount"].as_i64().expect("count") };
    assert_eq!(count(json!({ "w": "wf-a" })).await, 3);
    assert_eq!(count(json!({ "w": "wf-b" })).await, 1);
    assert_eq!(count(json!({ "s": s1, "node": "b" })).await, 2, "as target of one and source of another");
    assert_eq!(count(json!({ "s": s1, "status": "ERROR" })).await, 1);
    assert_eq!(
        count(json!({ "s": s1, "from": crate::fixtures::at(2), "to": crate::fixtures::at(3) })).await,
        2,
        "bounds are inclusive"
    );

    let (code, _) = app.err(TRACES, json!({})).await;
    assert_eq!(code, "BAD_USER_INPUT", "a session or workflow is required");
    let (code, _) = app.err(TRACES, json!({ "s": s1, "after": "bm90IGEgY3Vyc29y" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app.err(TRACES, json!({ "s": s1, "first": 5000 })).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
    let (code, _) = app.err(TRACES, json!({ "s": s1, "first": 1, "last": 1 })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) =
        app.err(TRACES, json!({ "s": s1, "from": crate::fixtures::at(5), "to": crate::fixtures::at(1) })).await;
    assert_eq!(code, "BAD_USER_INPUT", "from after to");
}

#[tokio::test]
async fn sessions_are_listed_newest_first_with_filters_and_total() {
    let app = TestApp::start(Kind::Default).await;
    let mut started = Vec::new();
    for i in 0..30 {
        let wf = if i % 3 == 0 { "billing-sync" } else { "etl" };
        started.push(session(&app, wf, i * 60).await);
    }
    let complete = "mutation($id: ID!) { completeSession(id: $id, status: COMPLETED) { status } }";
    for id in &started[..5] {
        app.ok(complete, json!({ "id": id })).await;
    }
    let q = "query($f: SessionFilter, $first: Int, $after: String) {
        sessions(filter: $f, first: $first, after: $after) {
            totalCount pageInfo { hasNextPage endCursor } edges { node { id workflowId status } } } }";

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let data = app.ok(q, json!({ "first": 7, "after": after })).await;
        assert_eq!(data["sessions"]["totalCount"], 30);
        seen.extend(ids(&data["sessions"]));
        if data["sessions"]["pageInfo"]["hasNextPage"] == false {
            break;
        }
        after = data["sessions"]["pageInfo"]["endCursor"].as_str().map(str::to_owned);
    }
    let newest_first: Vec<String> = started.iter().rev().map(Uuid::to_string).collect();
    assert_eq!(seen, newest_first);

    let app = &app;
    let total =
        |f: Value| async move { app.ok(q, json!({ "f": f })).await["sessions"]["totalCount"].as_i64().expect("n") };
    assert_eq!(total(json!({ "workflowId": "billing-sync" })).await, 10);
    assert_eq!(total(json!({ "status": "COMPLETED" })).await, 5);
    assert_eq!(total(json!({ "status": "RUNNING", "workflowId": "etl" })).await, 17);
    assert_eq!(total(json!({ "search": "BILLING" })).await, 10, "search ignores case");
    assert_eq!(total(json!({ "search": "%" })).await, 0, "wildcards are literal");
    assert_eq!(
        total(json!({ "startedAfter": crate::fixtures::at(600), "startedBefore": crate::fixtures::at(1200) })).await,
        10
    );

    let (code, _) = app.err(q, json!({ "after": "garbage" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let data = app.ok("query($id: ID!) { session(id: $id) { id } }", json!({ "id": Uuid::new_v4() })).await;
    assert_eq!(data["session"], Value::Null, "an unknown session is null, not an error");
}

/// The server keeps parsed documents by query text: the same text must still run the operation each request names,
/// with its own variables, and a text that does not parse must fail every time.
#[tokio::test]
async fn repeated_query_texts_run_what_each_request_asks() {
    let app = TestApp::start(Kind::Default).await;
    let a = session(&app, "wf-a", 0).await;
    let b = session(&app, "wf-b", 60).await;
    let text = "query ById($id: ID!) { session(id: $id) { workflowId } }
                query Newest { sessions(first: 1) { edges { node { workflowId } } } }";
    let post = |operation: &'static str, variables: Value| {
        let request = app.http.post(format!("{}/graphql", app.base));
        async move {
            let body = json!({ "query": text, "operationName": operation, "variables": variables });
            request.json(&body).send().await.expect("POST").json::<Value>().await.expect("JSON")
        }
    };
    for _ in 0..2 {
        assert_eq!(post("ById", json!({ "id": a })).await["data"]["session"]["workflowId"], "wf-a");
        assert_eq!(post("ById", json!({ "id": b })).await["data"]["session"]["workflowId"], "wf-b");
        let newest = post("Newest", json!({})).await;
        assert_eq!(newest["data"]["sessions"]["edges"][0]["node"]["workflowId"], "wf-b", "{newest}");
        let (code, _) = app.err("{ sessions(first: 1) { edges ", json!({})).await;
        assert_eq!(code, "BAD_USER_INPUT");
    }
}

/// The session's trace ids as the table has them, in page order.
async fn raw_ids(app: &TestApp, s: Uuid) -> Vec<String> {
    sqlx::query_scalar("SELECT id FROM flow_traces WHERE session_id = $1 ORDER BY timestamp, seq")
        .bind(s.to_string())
        .fetch_all(app.db.store.pool())
        .await
        .expect("raw ids")
}

/// Every page of the session's traces, forward then backward, with the total of each.
async fn paged(app: &TestApp, s: Uuid, range: Value) -> (Vec<String>, Vec<String>, i64) {
    let mut vars = json!({ "s": s, "first": 2 });
    vars.as_object_mut().expect("vars").extend(range.as_object().expect("range").clone());
    let mut forward = Vec::new();
    let mut total;
    loop {
        let conn = app.ok(TRACES, vars.clone()).await["traces"].clone();
        total = conn["totalCount"].as_i64().expect("total");
        forward.extend(ids(&conn));
        if conn["pageInfo"]["hasNextPage"] == false {
            break;
        }
        vars["after"] = conn["pageInfo"]["endCursor"].clone();
    }
    vars["after"] = Value::Null;
    vars["first"] = Value::Null;
    vars["last"] = json!(3);
    let mut backward = Vec::new();
    loop {
        let conn = app.ok(TRACES, vars.clone()).await["traces"].clone();
        backward.splice(0..0, ids(&conn));
        if conn["pageInfo"]["hasPreviousPage"] == false {
            break;
        }
        vars["before"] = conn["pageInfo"]["startCursor"].clone();
    }
    (forward, backward, total)
}

/// A read by session id is bounded by the span of the session's minute rows: traces at either edge of a minute, days
/// apart (other chunks, compressed ones with TimescaleDB), before the session's start, and after retention has cut
/// into the session's first minute, are all found, in both directions and in the total.
#[tokio::test]
async fn a_sessions_traces_are_found_across_chunks_minute_edges_and_retention() {
    let mut apps = vec![TestApp::start(Kind::Default).await];
    if let Some(db) = crate::harness::try_test_db(Kind::Plain).await {
        apps.push(TestApp::with_db(db, Default::default()).await);
    }
    for app in &apps {
        // A minute well inside every retention, three days before the fixtures' t0.
        let now = chrono::Utc::now();
        let minute =
            chrono::DurationRound::duration_trunc(now - chrono::Duration::days(3), chrono::Duration::minutes(1))
                .expect("minute");
        let stamp = |t: chrono::DateTime<chrono::Utc>| {
            let mut v = trace(0, "SUCCESS", "a", "b");
            v["timestamp"] = json!(t.to_rfc3339());
            v
        };
        let s = session(app, "span", 0).await;
        let other = session(app, "span", 0).await;
        let ms = chrono::Duration::milliseconds;
        let early = stamp(minute + chrono::Duration::seconds(10));
        let kept = stamp(minute + chrono::Duration::seconds(50));
        let times = [
            minute + ms(59_999),
            minute + chrono::Duration::minutes(1),
            now - chrono::Duration::days(1) - ms(1),
            now - chrono::Duration::hours(1),
        ];
        let mut traces = vec![early.clone(), kept.clone()];
        traces.extend(times.iter().map(|t| stamp(*t)));
        record(app, s, traces).await;
        record(app, other, times.iter().map(|t| stamp(*t + ms(1))).collect()).await;
        if app.db.timescaledb {
            sqlx::query(
                "SELECT compress_chunk(c, if_not_compressed => true)
                 FROM show_chunks('flow_traces', older_than => INTERVAL '2 days') c",
            )
            .execute(app.db.store.pool())
            .await
            .expect("compress");
        }
        let raw = raw_ids(app, s).await;
        assert_eq!(raw.len(), 6);
        assert_eq!(paged(app, s, json!({})).await, (raw.clone(), raw.clone(), 6));
        let range = json!({ "from": (minute + ms(59_999)).to_rfc3339(), "to": (now - chrono::Duration::days(1) - ms(1)).to_rfc3339() });
        assert_eq!(paged(app, s, range).await, (raw[2..5].to_vec(), raw[2..5].to_vec(), 3));
        let none = session(app, "span", 0).await;
        assert_eq!(paged(app, none, json!({})).await, (vec![], vec![], 0));

        // Retention cuts 30 s into the first minute: the trace before the cut expires (with TimescaleDB only when its
        // chunk is dropped, which the server leaves to TimescaleDB), the one after stays and is still found.
        let cut = (chrono::Utc::now() - (minute + chrono::Duration::seconds(30))).num_seconds();
        let mut policies = migration::Policies::default();
        policies.table_mut("flow_traces").expect("traces").retain_for = format!("{cut} seconds");
        app.db.store.delete_expired(&policies, !app.db.timescaledb).await.expect("retention");
        let raw = raw_ids(app, s).await;
        let expected = if app.db.timescaledb { 6 } else { 5 };
        assert_eq!(raw.len(), expected, "only the trace before the cut is gone, and only in plain mode");
        assert!(raw.contains(&kept["id"].as_str().expect("id").to_owned()));
        assert_eq!(paged(app, s, json!({})).await, (raw.clone(), raw, expected as i64));
    }
}
