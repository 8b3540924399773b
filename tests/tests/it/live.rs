//! Live subscriptions over real WebSockets: stored then live delivery, resumption by cursor, many writers and
//! subscribers, a killed LISTEN connection, slow readers, two server processes, and the WebSocket contract.

use std::collections::HashSet;
use std::time::Duration;

use flowtrace::config::ServeArgs;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{RECORD, RECORD_EVENTS, at, record, session, trace};
use crate::harness::{Kind, TestApp, TestDb};
use crate::ws_client::{Event, LEGACY_WS, TRANSPORT_WS, WsClient};

pub const TRACES_SUB: &str = "subscription($s: ID, $w: String, $after: String) {
    traces(sessionId: $s, workflowId: $w, after: $after) { cursor node { id seq timestamp } } }";

fn ids_of(items: &[Value]) -> Vec<String> {
    items.iter().map(|d| d["traces"]["node"]["id"].as_str().expect("id").to_owned()).collect()
}

fn seqs_of(items: &[Value]) -> Vec<i64> {
    items.iter().map(|d| d["traces"]["node"]["seq"].as_str().expect("seq").parse().expect("n")).collect()
}

fn batch(from: i64, n: i64) -> Vec<Value> {
    (from..from + n).map(|i| trace(i % 3600, "SUCCESS", "a", "b")).collect()
}

#[tokio::test]
async fn stored_then_live_traces_on_both_protocols_with_shared_cursors() {
    let app = TestApp::start(Kind::Default).await;
    for protocol in [TRANSPORT_WS, LEGACY_WS] {
        let s = session(&app, "wf", 0).await;
        let stored = batch(0, 3);
        record(&app, s, stored.clone()).await;
        let mut client = WsClient::connect(&app.base, protocol, json!({})).await;
        client.subscribe(TRACES_SUB, json!({ "s": s })).await;
        let first = client.take(3).await;
        let stored_ids: Vec<String> = stored.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect();
        assert_eq!(ids_of(&first), stored_ids, "{protocol}: stored traces first, in order");

        let live = batch(10, 2);
        record(&app, s, live.clone()).await;
        let next = client.take(2).await;
        let live_ids: Vec<String> = live.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect();
        assert_eq!(ids_of(&next), live_ids, "{protocol}: then live ones");
        client.assert_quiet(Duration::from_millis(300)).await;

        // The subscription's cursor works in the query, and the query's in the subscription.
        let cursor = first[2]["traces"]["cursor"].clone();
        let page = app
            .ok(
                "query($s: ID!, $a: String) { traces(sessionId: $s, after: $a) { edges { node { id } } } }",
                json!({ "s": s, "a": cursor }),
            )
            .await;
        let after: Vec<&str> = page["traces"]["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|e| e["node"]["id"].as_str().expect("id"))
            .collect();
        assert_eq!(after, live_ids.iter().map(String::as_str).collect::<Vec<_>>());
        let query_cursor = app
            .ok("query($s: ID!) { traces(sessionId: $s, first: 4) { pageInfo { endCursor } } }", json!({ "s": s }))
            .await["traces"]["pageInfo"]["endCursor"]
            .clone();
        let mut resumed = WsClient::connect(&app.base, protocol, json!({})).await;
        resumed.subscribe(TRACES_SUB, json!({ "s": s, "after": query_cursor })).await;
        assert_eq!(ids_of(&resumed.take(1).await), vec![live_ids[1].clone()]);
    }
}

#[tokio::test]
async fn a_workflow_subscription_without_cursor_gets_only_new_traces() {
    let app = TestApp::start(Kind::Default).await;
    let s1 = session(&app, "wf-live", 0).await;
    record(&app, s1, batch(0, 5)).await;
    let mut client = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    let id = client.subscribe(TRACES_SUB, json!({ "w": "wf-live" })).await;
    client.assert_quiet(Duration::from_millis(300)).await;
    let s2 = session(&app, "wf-live", 10).await;
    let other = session(&app, "wf-other", 10).await;
    record(&app, other, batch(0, 2)).await;
    let new = batch(100, 3);
    record(&app, s2, new.clone()).await;
    let got = client.take(3).await;
    assert_eq!(ids_of(&got), new.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect::<Vec<_>>());
    client.assert_quiet(Duration::from_millis(300)).await;

    client.stop(&id).await;
    record(&app, s2, batch(200, 3)).await;
    // A stopped subscription may be acknowledged with `complete`, but delivers nothing more.
    match client.next_event(Duration::from_millis(500)).await {
        None | Some(Event::Complete) => {}
        other => panic!("a stopped subscription delivered {other:?}"),
    }
    client.assert_quiet(Duration::from_millis(300)).await;
}

// Server, writers and fifty clients share this test's runtime: give it the threads a server would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ten_thousand_traces_from_four_writers_reach_fifty_subscribers_once_in_order() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let mut clients = Vec::new();
    for i in 0..50 {
        let protocol = if i % 2 == 0 { TRANSPORT_WS } else { LEGACY_WS };
        let mut client = WsClient::connect(&app.base, protocol, json!({})).await;
        client.subscribe("subscription($s: ID) { traces(sessionId: $s) { node { seq } } }", json!({ "s": s })).await;
        clients.push(client);
    }
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let client = TestApp::client_for(app.base.clone());
            tokio::spawn(async move {
                for b in 0..10 {
                    let traces = batch(w * 10_000 + b * 250, 250);
                    // Like a real client, retry a batch the server could not take right now (idempotent on ids).
                    loop {
                        let body = client.gql(RECORD, json!({ "s": s, "t": traces })).await;
                        if body["errors"][0]["extensions"]["code"] == "DATABASE_UNAVAILABLE" {
                            continue;
                        }
                        assert!(body.get("errors").is_none(), "{body}");
                        break;
                    }
                }
            })
        })
        .collect();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut client| {
            tokio::spawn(async move {
                let mut seqs = Vec::with_capacity(10_000);
                while seqs.len() < 10_000 {
                    let data = client.next_data().await;
                    seqs.push(data["traces"]["node"]["seq"].as_str().expect("seq").parse::<i64>().expect("n"));
                }
                client.assert_quiet(Duration::from_millis(200)).await;
                seqs
            })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    let stored: Vec<i64> = sqlx::query_scalar("SELECT seq FROM flow_traces ORDER BY seq")
        .fetch_all(app.db.store.pool())
        .await
        .expect("seqs");
    assert_eq!(stored.len(), 10_000);
    for reader in readers {
        let seqs = tokio::time::timeout(Duration::from_secs(120), reader).await.expect("in time").expect("reader");
        assert_eq!(seqs, stored, "every trace once, in commit order");
    }
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_last_cursor_misses_nothing() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    record(&app, s, batch(0, 600)).await;
    let mut client = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    client.subscribe(TRACES_SUB, json!({ "s": s })).await;
    let first = client.take(250).await;
    let last_cursor = first.last().expect("some")["traces"]["cursor"].clone();
    drop(client);

    record(&app, s, batch(1000, 400)).await;
    let mut again = WsClient::connect(&app.base, LEGACY_WS, json!({})).await;
    again.subscribe(TRACES_SUB, json!({ "s": s, "after": last_cursor })).await;
    let rest = again.take(750).await;
    again.assert_quiet(Duration::from_millis(300)).await;
    let mut all = seqs_of(&first);
    all.extend(seqs_of(&rest));
    let stored: Vec<i64> = sqlx::query_scalar("SELECT seq FROM flow_traces ORDER BY seq")
        .fetch_all(app.db.store.pool())
        .await
        .expect("seqs");
    assert_eq!(all, stored, "no gap, no repeat");
}

/// Terminates the server's LISTEN connection, waiting for it first: the listener connects in the background, and on a
/// loaded machine it may not be listening yet.
async fn kill_listener(app: &TestApp) {
    let mut killed: i64 = 0;
    for _ in 0..100 {
        killed = sqlx::query_scalar(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(app.db.store.pool())
        .await
        .expect("terminate");
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(killed, 1, "one LISTEN connection per process");
}

#[tokio::test]
async fn killing_the_listen_connection_mid_ingest_loses_nothing() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let mut client = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    client.subscribe(TRACES_SUB, json!({ "s": s })).await;
    for round in 0..6 {
        record(&app, s, batch(round * 100, 100)).await;
        if round == 2 {
            kill_listener(&app).await;
        }
    }
    let got = client.take(600).await;
    assert_eq!(got.iter().map(|d| d["traces"]["node"]["id"].clone()).collect::<HashSet<_>>().len(), 600);
    client.assert_quiet(Duration::from_millis(300)).await;
    let metrics = app.get("/metrics").await.1;
    assert!(
        metrics.as_str().is_some_and(|m| m.contains("flowtrace_live_listener_reconnects_total")),
        "reconnect counted"
    );
}

/// Live reads run on plans cached per connection (see `Store::all_serial`): traces that land in chunks created after
/// those plans were made must still be read.
#[tokio::test]
async fn live_reads_see_chunks_created_after_their_plans_were_cached() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-chunks", 0).await;
    let mut client = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    client.subscribe(TRACES_SUB, json!({ "s": s })).await;
    // Many small commits, so the read's plan is cached on several of the pool's connections.
    for i in 0..20 {
        let t = trace(i, "SUCCESS", "a", "b");
        record(&app, s, vec![t.clone()]).await;
        assert_eq!(ids_of(&client.take(1).await), vec![t["id"].as_str().expect("id").to_owned()]);
    }
    let chunks = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM show_chunks('flow_traces')")
            .fetch_one(app.db.store.pool())
            .await
            .expect("chunks")
    };
    let before = if app.db.timescaledb { chunks().await } else { 0 };
    // One day apart: a new daily chunk each (the default chunk interval of flow_traces).
    for day in 1..=3 {
        let t = trace(day * 86_400, "SUCCESS", "a", "b");
        record(&app, s, vec![t.clone()]).await;
        assert_eq!(ids_of(&client.take(1).await), vec![t["id"].as_str().expect("id").to_owned()], "day {day}");
    }
    if app.db.timescaledb {
        assert_eq!(chunks().await, before + 3, "each day's trace made a chunk");
    }
    client.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_still_gets_everything_later() {
    let app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf", 0).await;
    let mut slow = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    slow.subscribe(TRACES_SUB, json!({ "s": s })).await;
    let rss_before = rss_kib();
    // Twenty commits of a page each while it does not read: the server must read by cursor, not queue.
    for round in 0..20 {
        record(&app, s, batch(round * 500, 500)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let growth_mib = (rss_kib() - rss_before) / 1024;
    let got = slow.take(10_000).await;
    assert_eq!(seqs_of(&got).into_iter().collect::<HashSet<_>>().len(), 10_000);
    // Test and server share this process; the bound is loose but would catch queueing every row per subscriber.
    assert!(growth_mib < 300, "memory grew by {growth_mib} MiB while the subscriber did not read");
}

fn rss_kib() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn two_servers_on_one_database_each_deliver_every_trace() {
    let app = TestApp::start(Kind::Default).await;
    let other =
        TestApp::with_db(TestDb { store: app.db.store.clone(), timescaledb: app.db.timescaledb }, ServeArgs::default())
            .await;
    let s = session(&app, "wf", 0).await;
    let mut on_first = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    let mut on_second = WsClient::connect(&other.base, TRANSPORT_WS, json!({})).await;
    on_first.subscribe(TRACES_SUB, json!({ "s": s })).await;
    on_second.subscribe(TRACES_SUB, json!({ "s": s })).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    record(&app, s, batch(0, 300)).await;
    other.ok(RECORD, json!({ "s": s, "t": batch(1000, 300) })).await;
    let a = seqs_of(&on_first.take(600).await);
    let b = seqs_of(&on_second.take(600).await);
    assert_eq!(a, b);
    assert_eq!(a.iter().collect::<HashSet<_>>().len(), 600);
}

/// Starts a session of `workflow` the way a lost notification looks to the server: stored with its change-log row,
/// but no wake-up sent.
async fn start_session_unannounced(app: &TestApp, workflow: &str) -> Uuid {
    let id = Uuid::new_v4();
    let mut tx = app.db.store.pool().begin().await.expect("tx");
    sqlx::query(
        "INSERT INTO flow_trace_sessions (id, start_time, workflow_id, workflow_name) VALUES ($1, now(), $2, 'x')",
    )
    .bind(id.to_string())
    .bind(workflow)
    .execute(&mut *tx)
    .await
    .expect("session");
    sqlx::query("INSERT INTO flow_session_changes (session_id, workflow_id) VALUES ($1, $2)")
        .bind(id.to_string())
        .bind(workflow)
        .execute(&mut *tx)
        .await
        .expect("change");
    tx.commit().await.expect("commit");
    id
}

#[tokio::test]
async fn session_updates_whose_notifications_were_lost_arrive_once() {
    let app = TestApp::start(Kind::Default).await;
    let mut of_workflow = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    of_workflow.subscribe("subscription { sessionUpdates(workflowId: \"wf-gap\") { id status } }", json!({})).await;
    let mut of_all = WsClient::connect(&app.base, LEGACY_WS, json!({})).await;
    of_all.subscribe("subscription { sessionUpdates { id status } }", json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let a = session(&app, "wf-gap", 0).await;
    let running = |id: Uuid| json!({ "sessionUpdates": { "id": id, "status": "RUNNING" } });
    assert_eq!(of_workflow.next_data().await, running(a));
    assert_eq!(of_all.next_data().await, running(a));

    // Two starts nobody is told about: caught up within the safety poll, or sooner when the listener reconnects.
    let b = start_session_unannounced(&app, "wf-gap").await;
    let other = start_session_unannounced(&app, "wf-other").await;
    kill_listener(&app).await;
    assert_eq!(of_workflow.next_data().await, running(b), "the missed start of this workflow");
    let mut missed = vec![of_all.next_data().await, of_all.next_data().await];
    missed.sort_by_key(|d| d["sessionUpdates"]["id"].as_str().map(str::to_owned));
    let mut expected = vec![running(b), running(other)];
    expected.sort_by_key(|d| d["sessionUpdates"]["id"].as_str().map(str::to_owned));
    assert_eq!(missed, expected, "every missed start");

    // Notified again once the listener is back; nothing delivered earlier comes twice.
    app.ok("mutation($id: ID!) { completeSession(id: $id, status: COMPLETED) { id } }", json!({ "id": a })).await;
    let completed = json!({ "sessionUpdates": { "id": a, "status": "COMPLETED" } });
    assert_eq!(of_workflow.next_data().await, completed);
    assert_eq!(of_all.next_data().await, completed);
    of_workflow.assert_quiet(Duration::from_millis(500)).await;
    of_all.assert_quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn events_session_updates_and_replay() {
    let app = TestApp::start(Kind::Default).await;
    let mut updates = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    updates.subscribe("subscription { sessionUpdates(workflowId: \"wf-u\") { id status } }", json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = session(&app, "wf-u", 0).await;
    session(&app, "wf-not-this", 0).await;
    assert_eq!(updates.next_data().await["sessionUpdates"], json!({ "id": s, "status": "RUNNING" }));

    let mut events = WsClient::connect(&app.base, LEGACY_WS, json!({})).await;
    events
        .subscribe(
            "subscription($s: ID!) { events(sessionId: $s, eventTypes: [ERROR]) { nodeId eventType } }",
            json!({ "s": s }),
        )
        .await;
    let e =
        |kind: &str, node: &str| json!({ "id": Uuid::new_v4(), "nodeId": node, "eventType": kind, "timestamp": at(5) });
    app.ok(RECORD_EVENTS, json!({ "s": s, "e": [e("LOG", "a"), e("ERROR", "b"), e("START", "c")] })).await;
    assert_eq!(events.next_data().await["events"], json!({ "nodeId": "b", "eventType": "ERROR" }));
    events.assert_quiet(Duration::from_millis(300)).await;

    app.ok("mutation($id: ID!) { completeSession(id: $id, status: FAILED) { id } }", json!({ "id": s })).await;
    assert_eq!(updates.next_data().await["sessionUpdates"], json!({ "id": s, "status": "FAILED" }));

    // Replay: 3 traces one second apart, played 10x faster, then the stream completes.
    let r = session(&app, "wf-r", 0).await;
    record(&app, r, vec![trace(0, "SUCCESS", "a", "b"), trace(1, "SUCCESS", "b", "c"), trace(2, "ERROR", "c", "d")])
        .await;
    let mut replay = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    let started = std::time::Instant::now();
    replay.subscribe("subscription($s: ID!) { replay(sessionId: $s, speed: 10) { status } }", json!({ "s": r })).await;
    let played = replay.take(3).await;
    let took = started.elapsed();
    assert_eq!(played[2]["replay"]["status"], "ERROR");
    assert!(took >= Duration::from_millis(180), "spacing kept (2 s / 10), took {took:?}");
    assert!(matches!(replay.next_event(Duration::from_secs(5)).await, Some(Event::Complete)));
    let mut bad = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    bad.subscribe("subscription($s: ID!) { replay(sessionId: $s, speed: 0) { id } }", json!({ "s": r })).await;
    match bad.next_event(Duration::from_secs(5)).await {
        Some(Event::Error(errors)) => assert_eq!(errors[0]["extensions"]["code"], "BAD_USER_INPUT"),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn the_websocket_times_out_silent_clients_caps_subscriptions_and_closes_on_shutdown() {
    let mut args = ServeArgs::default();
    args.limits.ws_init_timeout_secs = 1;
    args.limits.max_subscriptions_per_connection = 2;
    let mut app = TestApp::with_db(crate::harness::test_db(Kind::Default).await, args).await;

    let mut silent = WsClient::open(&app.base, TRANSPORT_WS).await;
    match silent.next_event(Duration::from_secs(5)).await {
        Some(Event::Closed(code)) => assert_eq!(code, Some(4408), "connection_init deadline"),
        other => panic!("expected a close, got {other:?}"),
    }

    let s = session(&app, "wf", 0).await;
    let mut client = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    client.subscribe(TRACES_SUB, json!({ "s": s })).await;
    client.subscribe(TRACES_SUB, json!({ "s": s })).await;
    client.subscribe(TRACES_SUB, json!({ "s": s })).await;
    match client.next_event(Duration::from_secs(5)).await {
        Some(Event::Error(errors)) => assert_eq!(errors[0]["extensions"]["code"], "LIMIT_EXCEEDED"),
        other => panic!("the third subscription is refused, got {other:?}"),
    }

    app.shutdown().await;
    loop {
        match client.next_event(Duration::from_secs(5)).await {
            Some(Event::Closed(code)) => {
                assert_eq!(code, Some(1001), "going away");
                break;
            }
            Some(Event::Data(_)) | Some(Event::Complete) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn websocket_credentials_come_from_connection_init_and_expire() {
    let secret = "ws-secret-0123456789-0123456789";
    let mut args = ServeArgs::default();
    args.auth.jwt_secret = Some(secret.into());
    let app = TestApp::with_db(crate::harness::test_db(Kind::Default).await, args).await;
    let token = |role: &str, expires_in: i64| {
        let claims = json!({ "role": role, "sub": "u", "exp": chrono::Utc::now().timestamp() + expires_in });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .expect("sign")
    };
    let writer = format!("Bearer {}", token("service_role", 600));
    let s: Uuid = {
        let res = app
            .http
            .post(format!("{}/graphql", app.base))
            .header("Authorization", &writer)
            .json(&json!({ "query": crate::fixtures::START, "variables": { "input": { "workflowId": "wf", "workflowName": "n" } } }))
            .send()
            .await
            .expect("sent");
        let body: Value = res.json().await.expect("json");
        serde_json::from_value(body["data"]["startSession"]["id"].clone()).expect("id")
    };

    let mut anonymous = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    anonymous.subscribe(TRACES_SUB, json!({ "s": s })).await;
    match anonymous.next_event(Duration::from_secs(5)).await {
        Some(Event::Error(errors)) => assert_eq!(errors[0]["extensions"]["code"], "UNAUTHENTICATED"),
        other => panic!("expected UNAUTHENTICATED, got {other:?}"),
    }

    // A reader token in `authToken`; it expires in two seconds, and the subscription ends with it.
    let mut reader = WsClient::connect(&app.base, LEGACY_WS, json!({ "authToken": token("authenticated", 2) })).await;
    reader.subscribe(TRACES_SUB, json!({ "s": s })).await;
    reader.assert_quiet(Duration::from_millis(300)).await;
    let mut ended = false;
    for _ in 0..10 {
        match reader.next_event(Duration::from_secs(2)).await {
            Some(Event::Error(errors)) => {
                assert_eq!(errors[0]["extensions"]["code"], "UNAUTHENTICATED");
                ended = true;
                break;
            }
            Some(Event::Complete) => {
                ended = true;
                break;
            }
            _ => continue,
        }
    }
    assert!(ended, "the subscription ended when the token expired");
}
