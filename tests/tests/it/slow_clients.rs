//! Clients that stop reading their WebSocket: they may slow only themselves. Real sockets with small receive buffers
//! that never read, against a session of tens of thousands of stored traces.

use std::time::Duration;

use flowtrace::config::ServeArgs;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp, test_db};
use crate::live::TRACES_SUB;
use crate::ws_client::{TRANSPORT_WS, WsClient};

/// Small messages: many pages of them fit in the buffers before a socket stalls, so a stalled subscriber is as likely
/// to stop between reads as inside one.
const STALLED_SUB: &str = "subscription($s: ID, $after: String) { traces(sessionId: $s, after: $after) { cursor } }";

fn stored_trace(i: i64) -> Value {
    trace(i % 3600, "SUCCESS", "source-node", "target-node")
}

/// A session of `n` stored traces (in batches of the largest size one call takes); returns it and the cursor of its
/// first trace.
async fn big_session(app: &TestApp, n: i64) -> (Uuid, String) {
    let s = session(app, "wf-big", 0).await;
    for from in (0..n).step_by(10_000) {
        record(app, s, (from..(from + 10_000).min(n)).map(stored_trace).collect()).await;
    }
    let page = app
        .ok("query($s: ID!) { traces(sessionId: $s, first: 1) { pageInfo { endCursor } } }", json!({ "s": s }))
        .await;
    (s, page["traces"]["pageInfo"]["endCursor"].as_str().expect("cursor").to_owned())
}

/// Subscribers that subscribe from `cursor` into `s` and then never read.
async fn stalled_subscribers(app: &TestApp, s: Uuid, cursor: &str, n: usize) -> Vec<WsClient> {
    let mut clients = Vec::new();
    for _ in 0..n {
        let mut client = WsClient::open_small_buffer(&app.base, TRANSPORT_WS, 4096).await;
        client.init(json!({})).await;
        client.subscribe_as("1", STALLED_SUB, json!({ "s": s, "after": cursor })).await;
        clients.push(client);
    }
    // Let them fill every buffer between the server and their sockets (megabytes each on loopback).
    tokio::time::sleep(Duration::from_secs(8)).await;
    clients
}

/// Connections of this database left inside a transaction for over a second. Asked on a connection of its own: the
/// server's pool is what is under test, and the question must not wait for it.
async fn idle_in_transaction(app: &TestApp) -> i64 {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(app.db.store.url()).await.expect("own connection");
    let n = sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state LIKE 'idle in transaction%' AND now() - state_change > interval '1 second'",
    )
    .fetch_one(&mut conn)
    .await
    .expect("idle in transaction");
    let _ = conn.close().await;
    n
}

fn args(send_timeout_secs: u64, shutdown_timeout_secs: u64) -> ServeArgs {
    let mut args = ServeArgs::default();
    args.limits.ws_send_timeout_secs = send_timeout_secs;
    args.limits.shutdown_timeout_secs = shutdown_timeout_secs;
    args
}

#[tokio::test]
async fn subscribers_that_stop_reading_do_not_halt_delivery_to_others() {
    // Stalled clients are not given up on during this test: delivery to others must not depend on that.
    let app = TestApp::with_db(test_db(Kind::Default).await, args(600, 10)).await;
    let (big, cursor) = big_session(&app, 50_000).await;
    // More stalled subscribers than the server has live-read slots (half the pool of 16).
    let stalled = stalled_subscribers(&app, big, &cursor, 32).await;

    let s = session(&app, "wf-healthy", 0).await;
    let stored = trace(1, "SUCCESS", "a", "b");
    record(&app, s, vec![stored.clone()]).await;
    let mut healthy = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    healthy.subscribe(TRACES_SUB, json!({ "s": s })).await;
    let first = healthy.next_data().await;
    assert_eq!(first["traces"]["node"]["id"], stored["id"], "the stored trace arrives");
    let live: Vec<Value> = (2..4).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    record(&app, s, live.clone()).await;
    let next = healthy.take(2).await;
    let ids: Vec<&Value> = next.iter().map(|d| &d["traces"]["node"]["id"]).collect();
    assert_eq!(ids, vec![&live[0]["id"], &live[1]["id"]], "then the live ones");

    // Queries are answered meanwhile, and no stalled subscription keeps a connection inside a transaction.
    let count = app.ok("query($s: ID!) { session(id: $s) { summary { totalTraces } } }", json!({ "s": big })).await;
    assert_eq!(count["session"]["summary"]["totalTraces"], 50_000);
    for _ in 0..3 {
        assert_eq!(idle_in_transaction(&app).await, 0, "no connection idle in transaction");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    drop(stalled);
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_closed_after_the_send_timeout() {
    let app = TestApp::with_db(test_db(Kind::Default).await, args(2, 10)).await;
    let (big, cursor) = big_session(&app, 50_000).await;
    let mut stalled = stalled_subscribers(&app, big, &cursor, 1).await;
    // Past the send timeout (and its grace for the close frame), the server has given up on it: reading now drains
    // what was buffered and then finds the socket closed (4429 when the close frame got through, else just closed).
    tokio::time::sleep(Duration::from_secs(6)).await;
    let code = stalled[0].closed_within(Duration::from_secs(60)).await;
    assert!(matches!(code, None | Some(4429)), "closed as too slow, got {code:?}");
    let (_, metrics) = app.get("/metrics").await;
    assert!(metrics.as_str().is_some_and(|m| m.contains("flowtrace_ws_too_slow_total")), "counted in /metrics");
}

#[tokio::test]
async fn shutdown_is_bounded_with_stalled_clients_and_closes_readers_with_1001() {
    let mut app = TestApp::with_db(test_db(Kind::Default).await, args(600, 5)).await;
    let (big, cursor) = big_session(&app, 50_000).await;
    let stalled = stalled_subscribers(&app, big, &cursor, 4).await;
    let s = session(&app, "wf-reader", 0).await;
    let mut reader = WsClient::connect(&app.base, TRANSPORT_WS, json!({})).await;
    reader.subscribe(TRACES_SUB, json!({ "s": s })).await;
    reader.assert_quiet(Duration::from_millis(300)).await;

    let server = app.server.take().expect("server running");
    let shutdown = tokio::spawn(tokio::time::timeout(Duration::from_secs(60), server.shutdown()));
    assert_eq!(reader.closed_within(Duration::from_secs(30)).await, Some(1001), "a reading client gets 1001");
    let finished = shutdown.await.expect("shutdown task");
    assert!(finished.is_ok(), "shutdown returns within a bounded time");
    finished.expect("bounded").expect("clean shutdown");
    drop(stalled);
}

/// Bytes the server's end of the connection from `client_port` to `server_port` has queued and not had acknowledged,
/// from the kernel's table of IPv4 TCP sockets (`tx_queue`).
fn server_send_queue(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port = |address: &str| u16::from_str_radix(address.rsplit(':').next().unwrap_or_default(), 16).ok();
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (local, remote, queues) = (fields.get(1)?, fields.get(2)?, fields.get(4)?);
        (port(local)? == server_port && port(remote)? == client_port)
            .then(|| u64::from_str_radix(queues.split(':').next()?, 16).ok())?
    })
}

/// The most the server's socket to a subscriber that never reads comes to hold, once it has stopped growing.
async fn stalled_send_queue(send_buffer_bytes: u32) -> u64 {
    let mut args = args(600, 5);
    args.limits.socket_send_buffer_bytes = send_buffer_bytes;
    let app = TestApp::with_db(test_db(Kind::Default).await, args).await;
    let (big, cursor) = big_session(&app, 50_000).await;
    let mut client = WsClient::open_small_buffer(&app.base, TRANSPORT_WS, 4096).await;
    client.init(json!({})).await;
    client.subscribe_as("1", STALLED_SUB, json!({ "s": big, "after": cursor })).await;
    let server_port: u16 = app.base.rsplit(':').next().and_then(|p| p.parse().ok()).expect("server port");
    let (mut most, mut steady) = (0, 0);
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let queued = server_send_queue(server_port, client.local_port()).expect("the server's socket");
        (most, steady) = if queued > most { (queued, 0) } else { (most, steady + 1) };
        if most > 0 && steady == 10 {
            break;
        }
    }
    drop(client);
    most
}

/// A subscriber that stops reading holds at most its connection's send buffer of the kernel's TCP memory, which
/// every socket of the machine shares; left to the kernel's autotuning it holds many times more.
#[tokio::test]
async fn a_stalled_subscriber_holds_no_more_kernel_memory_than_its_send_buffer() {
    let capped = stalled_send_queue(64 * 1024).await;
    // The kernel doubles SO_SNDBUF for its own bookkeeping, of which the queued bytes are a part.
    assert!(capped > 0 && capped <= 2 * 64 * 1024, "queued {capped} bytes");
    let autotuned = stalled_send_queue(0).await;
    assert!(autotuned > 4 * capped, "autotuned {autotuned} bytes against {capped}");
}
