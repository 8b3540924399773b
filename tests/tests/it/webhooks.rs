//! Webhooks: session starts and ends POSTed to a real HTTP receiver.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use flowtrace::config::ServeArgs;
use flowtrace::domain::SessionStatus;
use flowtrace::limits::Limits;
use flowtrace::store::sessions::NewSession;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout_at};
use uuid::Uuid;

use crate::fixtures::session;
use crate::harness::{Kind, TestApp, TestDb, test_db};

const SECRET: &str = "receiver-secret";

/// One POST the receiver accepted: its headers and JSON body.
struct Delivery {
    headers: HeaderMap,
    raw: Bytes,
    body: Value,
}

/// An HTTP endpoint on a random port that refuses its first `refuse` requests with 503 and passes the others on.
struct Receiver {
    url: String,
    refused: Arc<AtomicUsize>,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
}

#[derive(Clone)]
struct ReceiverState {
    refuse: usize,
    refused: Arc<AtomicUsize>,
    sink: mpsc::UnboundedSender<Delivery>,
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, raw: Bytes) -> StatusCode {
    // Counts a refusal only while fewer than `refuse` were made.
    if state.refused.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < state.refuse).then_some(n + 1)).is_ok() {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body = serde_json::from_slice(&raw).expect("JSON body");
    let _ = state.sink.send(Delivery { headers, raw, body });
    StatusCode::NO_CONTENT
}

impl Receiver {
    async fn start(refuse: usize) -> Receiver {
        let (sink, deliveries) = mpsc::unbounded_channel();
        let refused = Arc::new(AtomicUsize::new(0));
        let state = ReceiverState { refuse, refused: refused.clone(), sink };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/hooks", listener.local_addr().expect("addr"));
        let app = Router::new().route("/hooks", post(receive)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, refused, deliveries }
    }

    /// The next delivery, failing the test after `secs` seconds without one.
    async fn next(&mut self, secs: u64) -> Delivery {
        timeout_at(Instant::now() + Duration::from_secs(secs), self.deliveries.recv())
            .await
            .expect("a webhook delivery in time")
            .expect("receiver running")
    }

    async fn assert_quiet(&mut self, wait: Duration) {
        if let Ok(Some(extra)) = timeout_at(Instant::now() + wait, self.deliveries.recv()).await {
            panic!("unexpected delivery: {}", extra.body);
        }
    }
}

fn args(receiver: &Receiver) -> ServeArgs {
    let mut args = ServeArgs::default();
    args.webhooks.webhook_urls = vec![receiver.url.clone()];
    args.webhooks.webhook_secret = Some(SECRET.to_owned());
    args
}

fn assert_signed(delivery: &Delivery) {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(&delivery.raw);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(delivery.headers["x-flowtrace-signature"], expected.as_str(), "signature of the exact body");
}

#[tokio::test]
async fn session_starts_and_ends_are_posted_signed_in_order_and_retried() {
    // The receiver refuses the first attempt: the start arrives on the retry, then the end.
    let mut receiver = Receiver::start(1).await;
    let app = TestApp::with_db(test_db(Kind::Default).await, args(&receiver)).await;
    let s = session(&app, "wf-hooks", 0).await;
    app.ok("mutation($id: ID!) { completeSession(id: $id, status: FAILED) { id } }", json!({ "id": s })).await;

    let started = receiver.next(20).await;
    let failed = receiver.next(20).await;
    assert_eq!(receiver.refused.load(Ordering::SeqCst), 1, "one attempt refused, then retried");
    for (delivery, event) in [(&started, "session.started"), (&failed, "session.failed")] {
        assert_signed(delivery);
        assert_eq!(delivery.body["event"], event);
        assert_eq!(delivery.headers["x-flowtrace-event"], event);
        assert_eq!(delivery.headers["x-flowtrace-delivery"], delivery.body["deliveryId"].as_str().expect("id"));
        assert_eq!(delivery.body["session"]["id"], s.to_string());
        assert_eq!(delivery.body["session"]["workflowId"], "wf-hooks");
        assert_eq!(delivery.body["session"]["summary"]["totalTraces"], 0);
    }
    assert_ne!(started.body["deliveryId"], failed.body["deliveryId"]);
    // The start names what happened then, though the session has ended by the time it is delivered.
    assert_eq!(failed.body["session"]["status"], "FAILED");
    assert!(failed.body["session"]["endTime"].is_string());
    receiver.assert_quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_restarted_server_delivers_what_happened_while_it_was_down_and_nothing_twice() {
    let mut receiver = Receiver::start(0).await;
    let mut app = TestApp::with_db(test_db(Kind::Default).await, args(&receiver)).await;
    let before = session(&app, "wf-hooks", 0).await;
    assert_eq!(receiver.next(20).await.body["session"]["id"], before.to_string());
    // Let the delivered mark be stored before stopping.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.shutdown().await;

    // Written with no server running: only the change log knows.
    let during = Uuid::new_v4().to_string();
    let new = NewSession {
        id: Some(during.clone()),
        workflow_id: "wf-hooks".into(),
        workflow_name: "Flow".into(),
        workflow_version_id: None,
        user_id: None,
        start_time: None,
        metadata: None,
    };
    app.db.store.start_session(&Limits::default(), new).await.expect("start");
    app.db.store.complete_session(&during, SessionStatus::Completed, None).await.expect("complete");

    app.restart(args(&receiver)).await;
    let first = receiver.next(30).await;
    let second = receiver.next(20).await;
    assert_eq!(
        [&first.body["event"], &first.body["session"]["id"], &second.body["event"], &second.body["session"]["id"]],
        [
            &json!("session.started"),
            &json!(during.to_string()),
            &json!("session.completed"),
            &json!(during.to_string())
        ]
    );
    receiver.assert_quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn a_webhook_url_that_is_not_http_refuses_to_start() {
    let mut args = ServeArgs::default();
    args.webhooks.webhook_urls = vec!["ftp://example.com/hooks".into()];
    args.bind = "127.0.0.1:0".parse().expect("addr");
    let db = test_db(Kind::Default).await;
    let err = flowtrace::app::spawn(db.store.clone(), args).await.err().expect("refused");
    assert!(err.to_string().contains("not http(s)"), "{err}");
}

#[tokio::test]
async fn two_servers_on_one_database_deliver_each_change_once() {
    let mut receiver = Receiver::start(0).await;
    let one = TestApp::with_db(test_db(Kind::Default).await, args(&receiver)).await;
    let db = TestDb { store: one.db.store.clone(), timescaledb: one.db.timescaledb };
    let two = TestApp::with_db(db, args(&receiver)).await;
    // Both delivery tasks past their start (connecting takes a moment), so both are woken by the changes below.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a = session(&one, "wf-hooks", 0).await;
    let b = session(&two, "wf-hooks", 1).await;
    let mut seen = vec![
        receiver.next(20).await.body["session"]["id"].clone(),
        receiver.next(20).await.body["session"]["id"].clone(),
    ];
    seen.sort_by_key(|id| id.to_string());
    let mut expected = vec![json!(a.to_string()), json!(b.to_string())];
    expected.sort_by_key(|id| id.to_string());
    assert_eq!(seen, expected);
    // Both servers are woken by both changes; only the one holding the delivery lock posts them.
    receiver.assert_quiet(Duration::from_secs(1)).await;
}
