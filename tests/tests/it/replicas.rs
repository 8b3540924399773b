//! Reads from a real streaming replica (`pg_basebackup -R` of a throwaway primary, hot standby, TimescaleDB too when
//! installed): subscribers of a process reading from it get every trace written through another process once; a
//! paused replica delays delivery but loses nothing; a stopped one leaves the rotation and reads go to the primary;
//! a client reads its own write by passing the position its mutation returned.

use std::time::Duration;

use flowtrace::config::{ReplicaArgs, ServeArgs};
use flowtrace::embedded_pg::EmbeddedPostgres;
use flowtrace::store::Store;
use serde_json::{Value, json};

use crate::fixtures::{record, session, trace};
use crate::harness::{TestApp, TestDb, throwaway_cluster};
use crate::live::TRACES_SUB;
use crate::ws_client::{Event, TRANSPORT_WS, WsClient};
use flowtrace::live::SAFETY_POLL;

struct Pair {
    primary: EmbeddedPostgres,
    replica: EmbeddedPostgres,
}

impl Pair {
    /// A primary with a `flowtrace` database and a hot standby streaming from it.
    async fn start(name: &str) -> Pair {
        let primary = throwaway_cluster(&format!("{name}-primary"), true).await;
        let admin = Store::connect_lazy(&primary.url("postgres"), 1).expect("admin");
        admin.wait_until_reachable(Duration::from_secs(30)).await.expect("primary up");
        sqlx::query("CREATE DATABASE flowtrace").execute(admin.pool()).await.expect("database");
        admin.close().await;
        let dir = std::env::temp_dir().join(format!("flowtrace-test-{}-{name}-replica", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let replica = primary.start_replica(&dir).await.expect("replica starts");
        replica.stop_when_process_exits(std::process::id(), true).expect("cleanup");
        Pair { primary, replica }
    }

    fn db(&self) -> TestDb {
        let store = Store::connect_lazy(&self.primary.url("flowtrace"), 16).expect("pool");
        TestDb { store, timescaledb: self.primary.timescaledb_preloaded() }
    }

    /// A server writing to the primary and, with `replica`, reading from the replica.
    async fn server(&self, replica: bool, max_lag_ms: u64, wait_ms: u64) -> TestApp {
        let replicas = ReplicaArgs {
            read_database_urls: if replica { vec![self.replica.url("flowtrace")] } else { Vec::new() },
            replica_max_lag_ms: max_lag_ms,
            replica_wait_ms: wait_ms,
        };
        TestApp::with_db(self.db(), ServeArgs { replicas, ..Default::default() }).await
    }

    async fn on_replica(&self, sql: &str) {
        let store = Store::connect_lazy(&self.replica.url("flowtrace"), 1).expect("replica pool");
        sqlx::query(sqlx::AssertSqlSafe(sql.to_owned())).execute(store.pool()).await.expect(sql);
        store.close().await;
    }

    /// Transactions the replica has run in the flowtrace database: reads there.
    async fn replica_reads(&self) -> i64 {
        let store = Store::connect_lazy(&self.replica.url("postgres"), 1).expect("replica pool");
        let n =
            sqlx::query_scalar("SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = 'flowtrace'")
                .fetch_one(store.pool())
                .await
                .expect("stats");
        store.close().await;
        n
    }
}

async fn replica_health(app: &TestApp) -> Value {
    app.ok("{ health { replicas { name inRotation replayPosition lagBytes error } } }", json!({})).await["health"]
        ["replicas"][0]
        .clone()
}

async fn until_rotation(app: &TestApp, in_rotation: bool) -> Value {
    for _ in 0..100 {
        let health = replica_health(app).await;
        if health["inRotation"] == json!(in_rotation) {
            return health;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the replica did not turn inRotation {in_rotation}: {}", replica_health(app).await);
}

fn traces(from: i64, n: i64) -> Vec<Value> {
    (from..from + n).map(|i| trace(i, "SUCCESS", "a", "b")).collect()
}

fn ids(traces: &[Value]) -> Vec<String> {
    traces.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect()
}

fn delivered(items: &[Value]) -> Vec<String> {
    items.iter().map(|d| d["traces"]["node"]["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test]
async fn subscribers_reading_from_a_replica_get_every_trace_once_and_a_paused_replica_only_delays_them() {
    let pair = Pair::start("rep-live").await;
    // Reads wait up to 20 s for the replica, and a replica is not dropped for lag during the test.
    let reader = pair.server(true, 60_000, 20_000).await;
    let writer = pair.server(false, 0, 0).await;
    until_rotation(&reader, true).await;
    let s = session(&writer, "wf-rep", 0).await;

    let mut subscribers = Vec::new();
    for _ in 0..3 {
        let mut ws = WsClient::connect(&reader.base, TRANSPORT_WS, json!({})).await;
        ws.subscribe(TRACES_SUB, json!({ "w": "wf-rep" })).await;
        subscribers.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reads_before = pair.replica_reads().await;
    let mut written = Vec::new();
    for batch in 0..10 {
        let rows = traces(batch * 20, 20);
        written.extend(ids(&rows));
        record(&writer, s, rows).await;
    }
    for ws in &mut subscribers {
        assert_eq!(delivered(&ws.take(written.len()).await), written, "every trace once, in order");
        ws.assert_quiet(Duration::from_millis(300)).await;
    }
    assert!(pair.replica_reads().await > reads_before, "the catch-up reads ran on the replica");

    // Paused: the replica replays nothing, so nothing is read there as if it had; delivery resumes with it.
    pair.on_replica("SELECT pg_wal_replay_pause()").await;
    let rows = traces(1000, 5);
    record(&writer, s, rows.clone()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for ws in &mut subscribers {
        ws.assert_quiet(Duration::from_millis(50)).await;
    }
    pair.on_replica("SELECT pg_wal_replay_resume()").await;
    for ws in &mut subscribers {
        // Within the reads' wait for the replica, not at the next safety poll: the read waited for the position.
        let mut got = Vec::new();
        while got.len() < 5 {
            match ws.next_event(SAFETY_POLL / 2).await {
                Some(Event::Data(data)) => got.push(data),
                other => panic!("expected the paused traces once the replica resumed, got {other:?}"),
            }
        }
        assert_eq!(delivered(&got), ids(&rows), "delayed, not lost");
        ws.assert_quiet(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn a_client_reads_its_own_write_by_the_position_its_mutation_returned() {
    let pair = Pair::start("rep-own").await;
    let app = pair.server(true, 60_000, 200).await;
    until_rotation(&app, true).await;
    let s = session(&app, "wf-own", 0).await;
    pair.on_replica("SELECT pg_wal_replay_pause()").await;

    let body = app.gql(crate::fixtures::RECORD, json!({ "s": s, "t": traces(0, 3) })).await;
    let position = body["extensions"]["position"].as_str().expect("a mutation returns its position").to_owned();
    let count = |extensions: Value| {
        let q = "query($s: ID!) { traces(sessionId: $s) { totalCount } }";
        app.post(json!({ "query": q, "variables": { "s": s }, "extensions": extensions }), None)
    };
    // The paused replica has not replayed the write: a read there does not see it.
    assert_eq!(count(json!({})).await["data"]["traces"]["totalCount"], 0, "stale on the paused replica");
    let fresh = count(json!({ "consistency": { "atLeast": position } })).await;
    assert_eq!(fresh["data"]["traces"]["totalCount"], 3, "atLeast reads where the write is: {fresh}");
    let bad = count(json!({ "consistency": { "atLeast": "not-a-position" } })).await;
    assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{bad}");
    pair.on_replica("SELECT pg_wal_replay_resume()").await;
}

#[tokio::test]
async fn a_stopped_replica_leaves_the_rotation_and_reads_go_to_the_primary_until_it_is_back() {
    let mut pair = Pair::start("rep-down").await;
    let app = pair.server(true, 1_000, 100).await;
    let health = until_rotation(&app, true).await;
    assert!(health["replayPosition"].is_string() && health["error"].is_null(), "{health}");
    let s = session(&app, "wf-down", 0).await;
    let mut ws = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    ws.subscribe(TRACES_SUB, json!({ "s": s })).await;

    pair.replica.stop().await.expect("replica stops");
    let health = until_rotation(&app, false).await;
    assert!(health["error"].is_string(), "{health}");
    let rows = traces(0, 4);
    record(&app, s, rows.clone()).await;
    assert_eq!(delivered(&ws.take(4).await), ids(&rows), "delivered from the primary");
    let q = "query($s: ID!) { traces(sessionId: $s) { totalCount } }";
    assert_eq!(app.ok(q, json!({ "s": s })).await["traces"]["totalCount"], 4);

    pair.replica.restart().await.expect("replica restarts");
    until_rotation(&app, true).await;
    let more = traces(10, 2);
    let body = app.gql(crate::fixtures::RECORD, json!({ "s": s, "t": more.clone() })).await;
    assert_eq!(delivered(&ws.take(2).await), ids(&more));
    // Back in the rotation, it may be up to the allowed lag behind: a read of one's own write names its position.
    let position = body["extensions"]["position"].clone();
    let read = json!({ "query": q, "variables": { "s": s }, "extensions": { "consistency": { "atLeast": position } } });
    let body = app.post(read, None).await;
    assert_eq!(body["data"]["traces"]["totalCount"], 6, "{body}");
}
