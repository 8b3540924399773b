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

const PAGE: &str = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor } edges { cursor node { id } }";

/// A session asked for with its traces reads both in one statement: each page must be the one `traces(sessionId)`
/// gives for the same arguments, through fragments and variables, with aliases and skipped fields falling back.
#[tokio::test]
async fn a_session_read_with_its_traces_pages_them_as_the_traces_query_does() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let other = session(&app, "wf", 10).await;
    let empty = session(&app, "wf", 20).await;
    record(&app, s, (0..45).map(|i| trace(i / 2, "SUCCESS", "a", "b")).collect()).await;
    record(&app, other, (0..5).map(|i| trace(i, "SUCCESS", "a", "b")).collect()).await;

    let alone = |args: Value| {
        let app = &app;
        async move {
            let q = format!(
                "query($s: ID!, $first: Int, $after: String, $last: Int, $before: String) {{
                    traces(sessionId: $s, first: $first, after: $after, last: $last, before: $before) {{ {PAGE} }} }}"
            );
            let mut vars = args.clone();
            vars["s"] = json!(s);
            app.ok(&q, vars).await["traces"].clone()
        }
    };
    let with_session = "query($s: ID!, $first: Int, $after: String, $last: Int, $before: String) {
        session(id: $s) { id summary { totalTraces }
            traces(first: $first, after: $after, last: $last, before: $before) { PAGE } } }"
        .replace("PAGE", PAGE);
    let first_page = alone(json!({ "first": 10 })).await;
    let tail = alone(json!({ "last": 7 })).await;
    let cases = [
        json!({}),
        json!({ "first": 10 }),
        json!({ "first": 10, "after": first_page["pageInfo"]["endCursor"] }),
        json!({ "first": 100 }),
        json!({ "first": 0 }),
        json!({ "last": 7 }),
        json!({ "last": 7, "before": tail["pageInfo"]["startCursor"] }),
        json!({ "last": 100 }),
    ];
    for args in cases {
        let mut vars = args.clone();
        vars["s"] = json!(s);
        let data = app.ok(&with_session, vars).await;
        assert_eq!(data["session"]["summary"]["totalTraces"], 45);
        assert_eq!(data["session"]["traces"], alone(args.clone()).await, "page {args}");
    }

    // The same page asked for through a fragment, with literal arguments.
    let q = format!(
        "query($s: ID!) {{ session(id: $s) {{ ...T }} }} fragment T on Session {{ traces(first: 3) {{ {PAGE} }} }}"
    );
    let data = app.ok(&q, json!({ "s": s })).await;
    assert_eq!(data["session"]["traces"], alone(json!({ "first": 3 })).await);

    // Two pages under aliases, and a skipped one: each answered as asked.
    let q = format!(
        "query($s: ID!, $no: Boolean!) {{ session(id: $s) {{
            head: traces(first: 4) {{ {PAGE} }} end: traces(last: 4) {{ {PAGE} }}
        }} again: session(id: $s) {{ traces(first: 2) @include(if: $no) {{ {PAGE} }} id }} }}"
    );
    let data = app.ok(&q, json!({ "s": s, "no": false })).await;
    assert_eq!(data["session"]["head"], alone(json!({ "first": 4 })).await);
    assert_eq!(data["session"]["end"], alone(json!({ "last": 4 })).await);
    assert_eq!(data["again"], json!({ "id": s.to_string() }));

    // A session without traces, and no session.
    let data = app.ok(&with_session, json!({ "s": empty, "first": 5 })).await;
    assert_eq!(data["session"]["traces"]["edges"], json!([]));
    assert_eq!(data["session"]["traces"]["pageInfo"]["hasNextPage"], false);
    let data = app.ok(&with_session, json!({ "s": Uuid::new_v4(), "first": 5 })).await;
    assert_eq!(data["session"], Value::Null);

    // Arguments the page refuses are refused as by the traces query, with the session's own read left to run.
    let (code, _) = app.err(&with_session, json!({ "s": s, "first": -1 })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app.err(&with_session, json!({ "s": s, "after": "garbage" })).await;
    assert_eq!(code, "BAD_USER_INPUT");
    let (code, _) = app.err(&with_session, json!({ "s": s, "first": 1001 })).await;
    assert_eq!(code, "LIMIT_EXCEEDED");
}

/// A session and its traces come from one snapshot: a change committed while the request runs shows in both or in
/// neither. The change waits on a lock on the traces table, so it lands between the reads if they are two.
#[tokio::test]
async fn a_session_and_its_traces_are_read_at_one_instant() {
    use sqlx::Connection;
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    record(&app, s, (0..10).map(|i| trace(i, "SUCCESS", "a", "b")).collect()).await;

    let mut writer = sqlx::PgConnection::connect(app.db.store.url()).await.expect("own connection");
    let mut tx = writer.begin().await.expect("begin");
    sqlx::query("LOCK TABLE flow_traces IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.expect("lock");
    let client = TestApp::client_for(app.base.clone());
    let q =
        "query($s: ID!) { session(id: $s) { summary { totalTraces } traces(first: 100) { edges { node { id } } } } }";
    let read = tokio::spawn(async move { client.gql(q, json!({ "s": s })).await });
    // Until the request waits on the lock (`query` is cut at 1 KiB: the join names flow_traces after that).
    let mut waited = 0;
    while app
        .scalar_i64(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND query LIKE '%FROM flow_trace%'",
        )
        .await
        == 0
    {
        waited += 1;
        assert!(waited < 1000, "the read never reached the locked table");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let sid = s.to_string();
    sqlx::query(
        "DELETE FROM flow_traces WHERE session_id = $1
           AND id = (SELECT id FROM flow_traces WHERE session_id = $1 ORDER BY timestamp LIMIT 1)",
    )
    .bind(&sid)
    .execute(&mut *tx)
    .await
    .expect("delete");
    sqlx::query("UPDATE flow_trace_sessions SET total_traces = total_traces - 1 WHERE id = $1")
        .bind(&sid)
        .execute(&mut *tx)
        .await
        .expect("update");
    tx.commit().await.expect("commit");

    let body = read.await.expect("read");
    let session = &body["data"]["session"];
    let total = session["summary"]["totalTraces"].as_i64().expect("total");
    let edges = session["traces"]["edges"].as_array().expect("edges").len() as i64;
    assert_eq!(total, edges, "the summary and the page agree: {body}");
}
