//! Database outages and graceful shutdown.

use std::time::{Duration, Instant};

use flowtrace::config::ServeArgs;
use flowtrace::store::Store;
use serde_json::{Value, json};
use sqlx::Connection;
use uuid::Uuid;

use crate::fixtures::{RECORD, START, trace};
use crate::harness::{TestApp, TestClient, TestDb, throwaway_cluster};
use crate::ws_client::{TRANSPORT_WS, WsClient};

/// Sends one batch until it is stored, counting the attempts refused because the database was unavailable.
async fn send_until_stored(app: &TestClient, session: Uuid, batch: &[Value]) -> usize {
    let mut unavailable = 0;
    loop {
        let body = app.gql(RECORD, json!({ "s": session, "t": batch })).await;
        match body["errors"][0]["extensions"]["code"].as_str() {
            None => return unavailable,
            Some("DATABASE_UNAVAILABLE") => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(other) => panic!("unexpected {other}: {body}"),
        }
    }
}

#[tokio::test]
async fn the_server_rides_out_a_database_outage_and_retried_batches_land_once() {
    let mut pg = throwaway_cluster("outage", true).await;
    flowtrace::app::create_database(&pg, "outage").await.expect("database");
    let store = Store::connect_lazy(&pg.url("outage"), 8).expect("pool");
    let timescaledb = pg.timescaledb_preloaded();
    let app = TestApp::with_db(TestDb { store, timescaledb }, ServeArgs::default()).await;
    let s: Uuid = serde_json::from_value(
        app.ok(START, json!({ "input": { "workflowId": "wf", "workflowName": "Flow" } })).await["startSession"]["id"]
            .clone(),
    )
    .expect("id");
    let batches: Vec<Vec<Value>> =
        (0..40).map(|b| (0..100).map(|i| trace(b * 100 + i, "SUCCESS", "a", "b")).collect()).collect();
    // A live subscriber connected through the whole outage.
    let mut subscriber = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    subscriber.subscribe("subscription($s: ID) { traces(sessionId: $s) { node { id } } }", json!({ "s": s })).await;

    let writer = {
        let app_base = app.base.clone();
        let batches = batches.clone();
        tokio::spawn(async move {
            let client = TestApp::client_for(app_base);
            let mut refused = 0;
            for batch in &batches {
                refused += send_until_stored(&client, s, batch).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            refused
        })
    };

    tokio::time::sleep(Duration::from_millis(300)).await;
    pg.stop().await.expect("database stopped");
    let (status, body) = app.get("/readyz").await;
    assert_eq!(status, 503, "readyz reports the outage: {body}");
    let started = Instant::now();
    let (code, _) = app.err("{ sessions { totalCount } }", json!({})).await;
    assert_eq!(code, "DATABASE_UNAVAILABLE");
    assert!(started.elapsed() < Duration::from_secs(10), "fails fast, not after a hang");
    let (status, health) = app.get("/api/health/timescaledb").await;
    assert_eq!((status, health["connected"].clone()), (503, json!(false)));
    tokio::time::sleep(Duration::from_secs(2)).await;

    pg.restart().await.expect("database back");
    let refused = tokio::time::timeout(Duration::from_secs(120), writer).await.expect("writer finishes").expect("join");
    assert!(refused > 0, "the writer saw the outage");
    let (status, _) = app.get("/readyz").await;
    assert_eq!(status, 200, "ready again without a restart");
    assert_eq!(app.scalar_i64("SELECT count(*) FROM flow_traces").await, 4000, "every trace stored exactly once");
    assert_eq!(app.scalar_i64("SELECT count(DISTINCT id) FROM flow_traces").await, 4000);
    assert_eq!(app.scalar_i64("SELECT total_traces FROM flow_trace_sessions").await, 4000, "summary counted once");
    let delivered = subscriber.take(4000).await;
    let distinct: std::collections::HashSet<_> = delivered.iter().map(|d| d["traces"]["node"]["id"].clone()).collect();
    assert_eq!(distinct.len(), 4000, "the subscriber caught up by cursor: everything once");
    subscriber.assert_quiet(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_batch_in_flight_at_shutdown_is_stored_whole_or_reported_failed() {
    let mut app = TestApp::start(crate::harness::Kind::Default).await;
    let s = crate::fixtures::session(&app, "wf", 0).await;
    let batch: Vec<Value> = (0..10_000).map(|i| trace(i % 3600, "SUCCESS", "a", "b")).collect();
    let request = {
        let client = TestApp::client_for(app.base.clone());
        tokio::spawn(async move { client.try_gql(RECORD, json!({ "s": s, "t": batch })).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    app.shutdown().await;
    let outcome = request.await.expect("join");
    let stored = app.scalar_i64("SELECT count(*) FROM flow_traces").await;
    match outcome {
        Ok(body) if body.get("errors").is_none() => {
            assert_eq!(body["data"]["recordTraces"]["accepted"], 10_000);
            assert_eq!(stored, 10_000, "reported stored, so all of it is");
        }
        other => assert!(stored == 0 || stored == 10_000, "never half a batch ({stored}); client saw {other:?}"),
    }
}

/// Pooled connections skip the health check while recently used (they were checked when released); one the database
/// dropped while it sat idle is found out and replaced before a request gets it.
#[tokio::test]
async fn pooled_connections_the_database_dropped_while_idle_are_replaced_unseen() {
    let app = TestApp::start(crate::harness::Kind::Default).await;
    let query = "{ sessions(first: 5) { edges { node { id } } } }";
    // Several requests at once, so the pool holds several connections.
    futures::future::join_all((0..4).map(|_| app.ok(query, json!({})))).await;
    let mut admin = sqlx::PgConnection::connect(app.db.store.url()).await.expect("admin connection");
    let dropped: i64 = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
    )
    .fetch_one(&mut admin)
    .await
    .expect("terminate");
    assert!(dropped > 0, "the pool had connections to drop");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for _ in 0..8 {
        app.ok(query, json!({})).await;
    }
}
