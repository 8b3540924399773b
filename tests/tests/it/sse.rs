//! Subscriptions over Server-Sent Events (`graphql-sse`, distinct connections): stored then live traces, resumption
//! by cursor, queries as one event, auth, keep-alives, and the stream's end at shutdown; and the single connection
//! mode, where operations share a reserved stream.

use std::time::Duration;

use flowtrace::auth::{AuthArgs, hash_api_key};
use flowtrace::config::ServeArgs;
use flowtrace::limits::Limits;
use serde_json::{Value, json};

use crate::fixtures::{record, session, trace};
use crate::harness::{Kind, TestApp, test_db};
use crate::live::TRACES_SUB;

/// One event of the stream: its type (`keepalive` for a comment) and data.
#[derive(Debug)]
struct SseEvent {
    kind: String,
    data: Value,
}

pub(crate) struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    pub(crate) async fn open(app: &TestApp, authorization: Option<&str>, body: Value) -> EventStream {
        let mut request =
            app.http.post(format!("{}/graphql", app.base)).header("accept", "text/event-stream").json(&body);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        EventStream::of(request.send().await.expect("sent"))
    }

    fn of(response: reqwest::Response) -> EventStream {
        assert_eq!(response.status().as_u16(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap_or_default().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        assert!(response.headers().get("content-encoding").is_none(), "an event stream is never compressed");
        EventStream { response, buffer: String::new() }
    }

    /// The next event, or `None` when the stream ends (or nothing comes within 30 s).
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut kind = String::from("message");
                let mut data = String::new();
                for line in block.lines() {
                    if line.starts_with(':') {
                        kind = "keepalive".into();
                    } else if let Some(value) = line.strip_prefix("event:") {
                        kind = value.trim().to_owned();
                    } else if let Some(value) = line.strip_prefix("data:") {
                        data.push_str(value.trim_start());
                    }
                }
                let data = serde_json::from_str(&data).unwrap_or(Value::Null);
                return Some(SseEvent { kind, data });
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.chunk()).await.ok()?;
            self.buffer.push_str(std::str::from_utf8(&chunk.ok()??).expect("UTF-8"));
        }
    }

    /// The next `next` event's payload, skipping keep-alives.
    pub(crate) async fn next_result(&mut self) -> Value {
        loop {
            match self.next().await {
                Some(SseEvent { kind, data }) if kind == "next" => return data,
                Some(SseEvent { kind, .. }) if kind == "keepalive" => continue,
                other => panic!("expected a next event, got {other:?}"),
            }
        }
    }
}

fn ids(results: &[Value]) -> Vec<String> {
    results.iter().map(|r| r["data"]["traces"]["node"]["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test]
async fn subscriptions_stream_stored_then_live_traces_and_resume_by_cursor() {
    let mut app = TestApp::start(Kind::Default).await;
    let s = session(&app, "wf-sse", 0).await;
    let stored: Vec<Value> = (0..3).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    record(&app, s, stored.clone()).await;
    let mut stream = EventStream::open(&app, None, json!({ "query": TRACES_SUB, "variables": { "s": s } })).await;
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(stream.next_result().await);
    }
    let stored_ids: Vec<String> = stored.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids(&first), stored_ids, "stored traces first, in order");
    let live: Vec<Value> = (10..12).map(|i| trace(i, "SUCCESS", "a", "b")).collect();
    record(&app, s, live.clone()).await;
    let next = vec![stream.next_result().await, stream.next_result().await];
    let live_ids: Vec<String> = live.iter().map(|t| t["id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(ids(&next), live_ids, "then live ones");

    let cursor = first[2]["data"]["traces"]["cursor"].clone();
    let resumed = json!({ "query": TRACES_SUB, "variables": { "s": s, "after": cursor } });
    let mut resumed = EventStream::open(&app, None, resumed).await;
    assert_eq!(ids(&[resumed.next_result().await]), vec![live_ids[0].clone()]);

    // A query is one result, then `complete`.
    let mut query = EventStream::open(&app, None, json!({ "query": "{ __typename }" })).await;
    assert_eq!(query.next_result().await, json!({ "data": { "__typename": "Query" } }));
    assert_eq!(query.next().await.map(|e| e.kind).as_deref(), Some("complete"));

    // Without the event stream, a subscription says where it runs.
    let plain = app.gql(TRACES_SUB, json!({ "s": s })).await;
    assert_eq!(plain["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    let message = plain["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(message.contains("text/event-stream") && message.contains("WebSocket"), "{message}");

    // Shutdown ends open streams, so it does not wait for them.
    app.server.take().map(|server| server.stopper().send(true));
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(event) = stream.next().await {
            assert_ne!(event.kind, "complete", "a stream cut by shutdown is not complete: clients reconnect");
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended at shutdown");
}

#[tokio::test]
async fn streams_keep_the_websocket_rules_for_credentials_keepalives_and_limits() {
    let auth = AuthArgs { api_keys: vec![format!("read:{}", hash_api_key("reader-key"))], ..Default::default() };
    let limits = Limits { ws_keepalive_secs: 1, max_ws_connections: 1, ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, limits, ..Default::default() }).await;
    let body = json!({ "query": TRACES_SUB, "variables": { "w": "none" } });

    let mut refused = EventStream::open(&app, None, body.clone()).await;
    let result = refused.next_result().await;
    assert_eq!(result["errors"][0]["extensions"]["code"], "UNAUTHENTICATED", "{result}");
    assert_eq!(refused.next().await.map(|e| e.kind).as_deref(), Some("complete"));
    drop(refused);
    // The ended stream gives its connection back once the server has dropped it.
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut open = EventStream::open(&app, Some("Bearer reader-key"), body.clone()).await;
    let event = open.next().await.expect("an event");
    assert_eq!(event.kind, "keepalive", "nothing to send but keep-alives: {event:?}");

    // The one connection allowed is taken.
    let response = app
        .http
        .post(format!("{}/graphql", app.base))
        .header("accept", "text/event-stream")
        .header("authorization", "Bearer reader-key")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status().as_u16(), 503);
    let answer: Value = response.json().await.expect("JSON");
    assert_eq!(answer["errors"][0]["extensions"]["code"], "LIMIT_EXCEEDED");
}

#[tokio::test]
async fn operations_share_a_reserved_stream_in_single_connection_mode() {
    let auth = AuthArgs { api_keys: vec![format!("read:{}", hash_api_key("reader-key"))], ..Default::default() };
    let limits = Limits { ws_init_timeout_secs: 1, ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { auth, limits, ..Default::default() }).await;
    let url = format!("{}/graphql", app.base);
    let key = "Bearer reader-key";
    let reserve = || app.http.put(&url).header("authorization", key).send();

    assert_eq!(
        app.http.put(&url).send().await.expect("sent").status().as_u16(),
        401,
        "a reservation needs credentials"
    );
    let response = reserve().await.expect("sent");
    assert_eq!(response.status().as_u16(), 201);
    let token = response.text().await.expect("the token");
    let open = || {
        app.http.get(&url).header("accept", "text/event-stream").header("x-graphql-event-stream-token", &token).send()
    };
    let mut stream = EventStream::of(open().await.expect("sent"));
    assert_eq!(open().await.expect("sent").status().as_u16(), 409, "one stream per token");

    let start = |id: &str, query: &str| {
        let body = json!({ "query": query, "extensions": { "operationId": id } });
        app.http
            .post(&url)
            .header("authorization", key)
            .header("x-graphql-event-stream-token", &token)
            .json(&body)
            .send()
    };
    assert_eq!(
        start("live", "subscription { traces(workflowId: \"none\") { cursor } }")
            .await
            .expect("sent")
            .status()
            .as_u16(),
        202
    );
    assert_eq!(start("live", "{ __typename }").await.expect("sent").status().as_u16(), 409, "an id in use");
    assert_eq!(start("q", "{ __typename }").await.expect("sent").status().as_u16(), 202);
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = stream.next().await.expect("an event");
        match event.kind.as_str() {
            "keepalive" => continue,
            _ => seen.push((event.kind, event.data)),
        }
    }
    assert_eq!(seen[0], ("next".into(), json!({ "id": "q", "payload": { "data": { "__typename": "Query" } } })));
    assert_eq!(seen[1], ("complete".into(), json!({ "id": "q" })));

    let stop = app
        .http
        .delete(format!("{url}?operationId=live"))
        .header("x-graphql-event-stream-token", &token)
        .send()
        .await
        .expect("sent");
    assert_eq!(stop.status().as_u16(), 200);
    assert_eq!(start("live", "{ __typename }").await.expect("sent").status().as_u16(), 202, "its id is free again");

    // Unknown tokens, and reservations never opened, are not found.
    let unknown =
        app.http.get(&url).header("accept", "text/event-stream").header("x-graphql-event-stream-token", "nope");
    assert_eq!(unknown.send().await.expect("sent").status().as_u16(), 404);
    let lapsing = reserve().await.expect("sent").text().await.expect("token");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let lapsed =
        app.http.get(&url).header("accept", "text/event-stream").header("x-graphql-event-stream-token", lapsing);
    assert_eq!(lapsed.send().await.expect("sent").status().as_u16(), 404, "lapsed after ws_init_timeout_secs");
}

#[tokio::test]
async fn a_stream_whose_client_stops_reading_gives_its_connection_back_after_the_send_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let limits = Limits { ws_send_timeout_secs: 1, max_ws_connections: 1, ..Default::default() };
    let app = TestApp::with_db(test_db(Kind::Default).await, ServeArgs { limits, ..Default::default() }).await;
    let s = session(&app, "wf-sse-slow", 0).await;
    for from in (0..30_000).step_by(10_000) {
        record(
            &app,
            s,
            (from..from + 10_000).map(|i| trace(i % 3600, "SUCCESS", "source-node", "target-node")).collect(),
        )
        .await;
    }

    // A client that asks for every stored trace over a socket with a small receive buffer, and never reads.
    let addr: std::net::SocketAddr = app.base.trim_start_matches("http://").parse().expect("address");
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("TCP connects");
    socket.set_nonblocking(true).expect("non-blocking");
    let mut tcp = tokio::net::TcpStream::from_std(std::net::TcpStream::from(socket)).expect("tokio stream");
    let body = json!({ "query": TRACES_SUB, "variables": { "s": s } }).to_string();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("request sent");
    let mut head = [0u8; 12];
    tcp.read_exact(&mut head).await.expect("the status line");
    assert_eq!(&head, b"HTTP/1.1 200", "the stream opened");

    let url = format!("{}/graphql", app.base);
    let second =
        || app.http.post(&url).header("accept", "text/event-stream").json(&json!({ "query": "{ __typename }" }));
    // First the stalled stream holds the one connection, then, its client not reading, gives it back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    for (wanted, what) in [(503, "the stalled stream took the connection"), (200, "and gave it back")] {
        loop {
            let status = second().send().await.expect("sent").status().as_u16();
            if status == wanted {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: still {status}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let metrics = app.get("/metrics").await.1;
    let given_up = metrics.as_str().unwrap_or_default().lines().find_map(|line| {
        line.strip_prefix("flowtrace_http_stream_too_slow_total ").and_then(|v| v.trim().parse::<f64>().ok())
    });
    assert!(given_up.is_some_and(|n| n >= 1.0), "counted: {given_up:?}");
    drop(tcp);
}
