//! Ids are opaque text: a client's own ids round-trip everywhere, ids breaking the rule are refused naming the field,
//! generated ids are UUIDv7, and an id is stored at most once per session whatever its timestamp.

use std::time::Duration;

use serde_json::{Value, json};

use crate::fixtures::{RECORD, RECORD_EVENTS, START, at, trace};
use crate::harness::{Kind, TestApp};
use crate::ws_client::{Event, TRANSPORT_WS, WsClient};

const SESSION: &str = "query($id: ID!) { session(id: $id) { id summary { totalTraces }
    traces { edges { node { id sessionId parentTraceId } } } events { edges { node { id sessionId } } } } }";
const COMPLETE: &str = "mutation($id: ID!, $status: SessionStatus!, $end: DateTime) {
    completeSession(id: $id, status: $status, endTime: $end) { id status endTime } }";

async fn start(app: &TestApp, id: &str) -> Value {
    app.ok(START, json!({ "input": { "id": id, "workflowId": "wf-ids", "workflowName": "ids", "startTime": at(0) } }))
        .await["startSession"]
        .clone()
}

fn with_id(mut t: Value, id: &str) -> Value {
    t["id"] = json!(id);
    t
}

#[tokio::test]
async fn client_ids_round_trip_through_writes_reads_and_subscriptions() {
    let app = TestApp::start(Kind::Default).await;
    let s = "fts_mf3k2q1a_4h8z0c9xk2lq";
    let mut updates = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    updates.subscribe("subscription { sessionUpdates(workflowId: \"wf-ids\") { id status } }", json!({})).await;
    // Let the subscription start before the session does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(start(&app, s).await["id"], s);
    assert_eq!(updates.next_data().await, json!({ "sessionUpdates": { "id": s, "status": "RUNNING" } }));

    let mut live = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    live.subscribe(
        "subscription($s: ID) { traces(sessionId: $s) { node { id sessionId parentTraceId } } }",
        json!({ "s": s }),
    )
    .await;
    let mut live_events = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    live_events.subscribe("subscription($s: ID!) { events(sessionId: $s) { id sessionId } }", json!({ "s": s })).await;

    // Ids of other shapes keep their bytes too: Unicode, spaces, colons, 128 characters.
    let (root, child, odd, long) = ("ft_mf3k2q1b_9x0c2lq", "ft_mf3k2q1c_k2lq8h4z", "ft:ünï/ç ✓", "l".repeat(128));
    let mut second = with_id(trace(2, "SUCCESS", "b", "c"), child);
    second["parentTraceId"] = json!(root);
    let batch = vec![
        with_id(trace(1, "SUCCESS", "a", "b"), root),
        second,
        with_id(trace(3, "SUCCESS", "c", "d"), odd),
        with_id(trace(4, "SUCCESS", "d", "e"), &long),
    ];
    let r = app.ok(RECORD, json!({ "s": s, "t": batch })).await;
    assert_eq!(r["recordTraces"], json!({ "accepted": 4, "duplicates": 0 }));
    let event = json!({ "id": "fte_1", "nodeId": "a", "eventType": "START", "timestamp": at(1) });
    app.ok(RECORD_EVENTS, json!({ "s": s, "e": [event] })).await;

    let expected = vec![
        json!({ "id": root, "sessionId": s, "parentTraceId": null }),
        json!({ "id": child, "sessionId": s, "parentTraceId": root }),
        json!({ "id": odd, "sessionId": s, "parentTraceId": null }),
        json!({ "id": long, "sessionId": s, "parentTraceId": null }),
    ];
    let data = app.ok(SESSION, json!({ "id": s })).await;
    assert_eq!(data["session"]["id"], s);
    let nodes: Vec<Value> =
        data["session"]["traces"]["edges"].as_array().expect("edges").iter().map(|e| e["node"].clone()).collect();
    assert_eq!(nodes, expected);
    assert_eq!(data["session"]["events"]["edges"][0]["node"], json!({ "id": "fte_1", "sessionId": s }));

    let listed =
        app.ok("query($s: ID) { traces(sessionId: $s) { totalCount edges { node { id } } } }", json!({ "s": s })).await;
    assert_eq!(listed["traces"]["totalCount"], 4);
    let replayed = app
        .ok(
            "query($s: ID!, $a: DateTime!, $b: DateTime!) { replayTraces(sessionId: $s, start: $a, end: $b) {
                edges { node { id } } } }",
            json!({ "s": s, "a": at(0), "b": at(10) }),
        )
        .await;
    assert_eq!(replayed["replayTraces"]["edges"][1]["node"]["id"], child);

    let delivered: Vec<Value> = live.take(4).await.into_iter().map(|d| d["traces"]["node"].clone()).collect();
    assert_eq!(delivered, expected);
    assert_eq!(live_events.next_data().await, json!({ "events": { "id": "fte_1", "sessionId": s } }));

    let done = app.ok(COMPLETE, json!({ "id": s, "status": "COMPLETED", "end": at(60) })).await;
    assert_eq!(done["completeSession"]["id"], s);
    assert_eq!(updates.next_data().await, json!({ "sessionUpdates": { "id": s, "status": "COMPLETED" } }));

    // Session cursors carry the id, colons and all.
    let other = "fts:with:colons";
    start(&app, other).await;
    let first = app.ok("{ sessions(first: 1) { edges { cursor node { id } } } }", json!({})).await;
    let cursor = first["sessions"]["edges"][0]["cursor"].clone();
    let next = app
        .ok("query($c: String) { sessions(first: 5, after: $c) { edges { node { id } } } }", json!({ "c": cursor }))
        .await;
    let mut seen = vec![first["sessions"]["edges"][0]["node"]["id"].clone()];
    seen.extend(next["sessions"]["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].clone()));
    seen.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(seen, vec![json!(other), json!(s)]);
}

#[tokio::test]
async fn ids_breaking_the_rule_are_refused_naming_the_field() {
    let app = TestApp::start(Kind::Default).await;
    let s = "fts_good";
    start(&app, s).await;
    let bad_ids = [
        "".to_owned(),
        "x".repeat(129),
        "a\u{0}b".to_owned(),
        "a\nb".to_owned(),
        "\u{1f}".to_owned(),
        "a\u{7f}".to_owned(),
        "\u{85}".to_owned(),
        "\u{9f}z".to_owned(),
    ];
    let start_q = |id: &str| json!({ "input": { "id": id, "workflowId": "w", "workflowName": "n" } });
    let event = |id: &str| json!({ "id": id, "nodeId": "a", "eventType": "LOG", "timestamp": at(1) });
    for bad in &bad_ids {
        let mut parent = trace(1, "SUCCESS", "a", "b");
        parent["parentTraceId"] = json!(bad);
        let cases: Vec<(&str, &str, Value)> = vec![
            ("id", START, start_q(bad)),
            ("sessionId", RECORD, json!({ "s": bad, "t": [trace(1, "SUCCESS", "a", "b")] })),
            (
                "traces[1].id",
                RECORD,
                json!({ "s": s, "t": [trace(1, "SUCCESS", "a", "b"), with_id(trace(2, "SUCCESS", "a", "b"), bad)] }),
            ),
            ("traces[0].parentTraceId", RECORD, json!({ "s": s, "t": [parent] })),
            ("sessionId", RECORD_EVENTS, json!({ "s": bad, "e": [event("e1")] })),
            ("events[0].id", RECORD_EVENTS, json!({ "s": s, "e": [event(bad)] })),
            ("id", "query($id: ID!) { session(id: $id) { id } }", json!({ "id": bad })),
            ("sessionId", "query($s: ID) { traces(sessionId: $s) { totalCount } }", json!({ "s": bad })),
            ("sessionId", "query($s: ID!) { events(sessionId: $s) { totalCount } }", json!({ "s": bad })),
            (
                "sessionId",
                "query($s: ID!) { executionTimeline(sessionId: $s, bucketSeconds: 60) { bucket } }",
                json!({ "s": bad }),
            ),
            ("id", COMPLETE, json!({ "id": bad, "status": "COMPLETED" })),
        ];
        for (field, query, variables) in cases {
            let (code, message) = app.err(query, variables).await;
            assert_eq!(code, "BAD_USER_INPUT", "{bad:?} as {field}: {message}");
            // The argument checker names the whole path (`startSession(input).id`), the id rule the field itself.
            let last = field.rsplit('.').next().unwrap_or(field);
            let named = message.contains(&format!("{last} ")) || message.contains(&format!("({last})"));
            assert!(named, "{bad:?}: the message names {field}: {message}");
        }
        let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
        ws.subscribe("subscription($s: ID) { traces(sessionId: $s) { node { id } } }", json!({ "s": bad })).await;
        match ws.next_event(Duration::from_secs(10)).await {
            Some(Event::Error(errors)) => {
                assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{errors}")
            }
            other => panic!("{bad:?} in a subscription: expected an error, got {other:?}"),
        }
    }
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_sessions").await, 1, "nothing else was stored");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 0);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_trace_events").await, 0);
}

fn uuid_v7(id: &Value) -> uuid::Uuid {
    let parsed = id.as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()).unwrap_or_else(|| panic!("uuid: {id}"));
    assert_eq!(parsed.get_version_num(), 7, "{id}");
    assert_eq!(id.as_str(), Some(parsed.to_string().as_str()), "canonical text");
    parsed
}

#[tokio::test]
async fn generated_ids_are_uuidv7_and_sort_by_time() {
    let app = TestApp::start(Kind::Default).await;
    let mut sessions = Vec::new();
    for _ in 0..5 {
        let data = app.ok(START, json!({ "input": { "workflowId": "w", "workflowName": "n" } })).await;
        sessions.push(data["startSession"]["id"].clone());
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let parsed: Vec<uuid::Uuid> = sessions.iter().map(uuid_v7).collect();
    let mut sorted = sessions.clone();
    sorted.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(sorted, sessions, "later sessions have greater ids");
    let ms = |u: &uuid::Uuid| u.get_timestamp().map(|t| t.to_unix()).expect("a v7 id has a time");
    assert!(ms(&parsed[0]) < ms(&parsed[4]), "the ids carry their creation time");

    let s = &sessions[0];
    let traces: Vec<Value> = (0..50)
        .map(|i| {
            let mut t = trace(i, "SUCCESS", "a", "b");
            t.as_object_mut().map(|o| o.remove("id"));
            t
        })
        .collect();
    app.ok(RECORD, json!({ "s": s, "t": traces })).await;
    let data = app.ok(SESSION, json!({ "id": s })).await;
    let ids: Vec<Value> =
        data["session"]["traces"]["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].clone()).collect();
    assert_eq!(ids.len(), 50);
    ids.iter().for_each(|id| {
        uuid_v7(id);
    });
    let mut sorted = ids.clone();
    sorted.sort_by_key(|v| v.as_str().map(str::to_owned));
    assert_eq!(sorted, ids, "generated in time order");

    app.ok(RECORD_EVENTS, json!({ "s": s, "e": [{ "nodeId": "a", "eventType": "LOG", "timestamp": at(1) }] })).await;
    let data = app.ok(SESSION, json!({ "id": s })).await;
    uuid_v7(&data["session"]["events"]["edges"][0]["node"]["id"]);
}

#[tokio::test]
async fn an_id_is_stored_once_per_session_whatever_its_timestamp() {
    let app = TestApp::start(Kind::Default).await;
    let s = "fts_once";
    start(&app, s).await;
    let first = with_id(trace(1, "SUCCESS", "a", "b"), "ft_retry");
    let r = app.ok(RECORD, json!({ "s": s, "t": [first] })).await;
    assert_eq!(r["recordTraces"], json!({ "accepted": 1, "duplicates": 0 }));
    // A retry whose timestamp (and anything else) changed is the same trace: nothing is stored or counted again, also
    // when the new timestamp falls on another day (another chunk on TimescaleDB).
    let mut retry = with_id(trace(-3 * 86_400, "ERROR", "x", "y"), "ft_retry");
    retry["duration"] = json!(99.0);
    let fresh = with_id(trace(2, "SUCCESS", "b", "c"), "ft_new");
    let r = app.ok(RECORD, json!({ "s": s, "t": [retry, fresh] })).await;
    assert_eq!(r["recordTraces"], json!({ "accepted": 1, "duplicates": 1 }));

    let data = app.ok(SESSION, json!({ "id": s })).await;
    assert_eq!(data["session"]["summary"]["totalTraces"], 2);
    let ids: Vec<Value> =
        data["session"]["traces"]["edges"].as_array().expect("edges").iter().map(|e| e["node"]["id"].clone()).collect();
    assert_eq!(ids, vec![json!("ft_retry"), json!("ft_new")]);
    let state = app
        .ok(
            "query($at: DateTime!) { workflowStateAt(workflowId: \"wf-ids\", at: $at) { nodes { nodeId inputCount } } }",
            json!({ "at": at(1000) }),
        )
        .await;
    let counted: i64 = state["workflowStateAt"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["inputCount"].as_i64())
        .sum();
    assert_eq!(counted, 2, "the per-minute node counts did not count the retry: {state}");

    // Events: the same rule.
    let event = |s_at: i64| json!({ "id": "fte_retry", "nodeId": "a", "eventType": "LOG", "timestamp": at(s_at) });
    let r = app.ok(RECORD_EVENTS, json!({ "s": s, "e": [event(1)] })).await;
    assert_eq!(r["recordEvents"], json!({ "accepted": 1, "duplicates": 0 }));
    let r = app.ok(RECORD_EVENTS, json!({ "s": s, "e": [event(-3 * 86_400)] })).await;
    assert_eq!(r["recordEvents"], json!({ "accepted": 0, "duplicates": 1 }));
    let data = app.ok(SESSION, json!({ "id": s })).await;
    assert_eq!(data["session"]["events"]["edges"].as_array().map(Vec::len), Some(1));
    // And the other way round: stored days apart, retried near the session's other rows.
    let far = with_id(trace(-2 * 86_400, "SUCCESS", "a", "b"), "ft_far");
    assert_eq!(app.ok(RECORD, json!({ "s": s, "t": [far] })).await["recordTraces"]["accepted"], 1);
    let near = with_id(trace(3, "SUCCESS", "a", "b"), "ft_far");
    assert_eq!(app.ok(RECORD, json!({ "s": s, "t": [near] })).await["recordTraces"]["duplicates"], 1);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces WHERE id = 'ft_far'").await, 1);

    // Once per session: another session may use the same id for its own trace.
    start(&app, "fts_other").await;
    let r =
        app.ok(RECORD, json!({ "s": "fts_other", "t": [with_id(trace(7, "SUCCESS", "a", "b"), "ft_retry")] })).await;
    assert_eq!(r["recordTraces"]["accepted"], 1);
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces WHERE id = 'ft_retry'").await, 2);
}

// Batches race on the server's runtime: give it the threads a server would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_batches_with_the_same_ids_and_other_timestamps_store_each_id_once() {
    let app = TestApp::start(Kind::Default).await;
    let s = "fts_race";
    start(&app, s).await;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = TestApp::client_for(app.base.clone());
            tokio::spawn(async move {
                // The same 300 ids from every writer, each writer with its own timestamps.
                let batch: Vec<Value> =
                    (0..300).map(|i| with_id(trace(i + w * 1000, "SUCCESS", "a", "b"), &format!("ft_{i}"))).collect();
                let body = client.gql(RECORD, json!({ "s": s, "t": batch })).await;
                assert!(body.get("errors").is_none(), "{body}");
                body["data"]["recordTraces"].clone()
            })
        })
        .collect();
    let (mut accepted, mut duplicates) = (0, 0);
    for w in writers {
        let r = w.await.expect("writer");
        accepted += r["accepted"].as_i64().expect("accepted");
        duplicates += r["duplicates"].as_i64().expect("duplicates");
    }
    assert_eq!((accepted, duplicates), (300, 7 * 300));
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 300);
    assert_eq!(app.scalar_i64("SELECT count(DISTINCT id) FROM flow_traces").await, 300);
    assert_eq!(app.scalar_i64("SELECT total_traces FROM flow_trace_sessions").await, 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_identical_completions_all_succeed() {
    let app = TestApp::start(Kind::Default).await;
    for (round, end) in [(0, None), (1, Some(at(90)))] {
        let s = format!("fts_done_{round}");
        start(&app, &s).await;
        let callers: Vec<_> = (0..12)
            .map(|_| {
                let client = TestApp::client_for(app.base.clone());
                let variables = json!({ "id": s, "status": "COMPLETED", "end": end });
                tokio::spawn(async move { client.gql(COMPLETE, variables).await })
            })
            .collect();
        let mut answers = Vec::new();
        for c in callers {
            let body = c.await.expect("caller");
            assert!(body.get("errors").is_none(), "an identical repeat succeeds: {body}");
            answers.push(body["data"]["completeSession"].clone());
        }
        assert!(answers.iter().all(|a| a == &answers[0]), "every caller sees the same ending: {answers:?}");
        assert_eq!(answers[0]["status"], "COMPLETED");
        let ends = app
            .scalar_i64(&format!(
                "SELECT count(*) FROM flow_session_changes WHERE session_id = '{s}' AND status = 'COMPLETED'"
            ))
            .await;
        assert_eq!(ends, 1, "the end is logged (and delivered) once");
        // A different ending afterwards is still refused.
        let (code, message) = app.err(COMPLETE, json!({ "id": s, "status": "FAILED" })).await;
        assert_eq!(code, "BAD_USER_INPUT");
        assert!(message.contains("already ended"), "{message}");
    }

    // Different endings at the same time: one wins, the others are told it ended otherwise.
    let s = "fts_mixed";
    start(&app, s).await;
    let callers: Vec<_> = (0..12)
        .map(|i| {
            let client = TestApp::client_for(app.base.clone());
            let status = if i % 2 == 0 { "COMPLETED" } else { "FAILED" };
            tokio::spawn(async move { client.gql(COMPLETE, json!({ "id": s, "status": status })).await })
        })
        .collect();
    let mut won = Vec::new();
    for c in callers {
        let body = c.await.expect("caller");
        match body.get("errors") {
            None => won.push(body["data"]["completeSession"]["status"].clone()),
            Some(errors) => assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT", "{body}"),
        }
    }
    assert!(!won.is_empty() && won.iter().all(|w| w == &won[0]), "one outcome: {won:?}");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_session_changes WHERE status <> 'RUNNING'").await, 3);
}
