//! Subscribers that stop reading, for the `slow` phase: each follows a session with a large backlog over a socket
//! whose receive buffer is small, and never reads, so the server's writes to it stall within moments.

use std::time::Duration;

use futures::SinkExt;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use uuid::Uuid;

use crate::server::Server;

/// Stored traces of the followed session: far more than the socket buffers between server and client hold.
const BACKLOG: usize = 10_000;
const BATCH: usize = 5_000;

pub type Stalled = WebSocketStream<TcpStream>;

pub async fn connect(server: &Server, n: usize) -> anyhow::Result<Vec<Stalled>> {
    let started = server
        .gql(
            "mutation($i: StartSessionInput!) { startSession(input: $i) { id } }",
            json!({ "i": { "workflowId": "bench-stalled", "workflowName": "stalled" } }),
        )
        .await?;
    let session = started["startSession"]["id"].as_str().unwrap_or_default().to_owned();
    let record = "mutation($s: ID!, $t: [TraceInput!]!) { recordTraces(sessionId: $s, traces: $t) { accepted } }";
    for _ in 0..BACKLOG / BATCH {
        let traces: Vec<_> = (0..BATCH)
            .map(|i| {
                json!({ "id": Uuid::new_v4(), "timestamp": chrono::Utc::now().to_rfc3339(), "status": "SUCCESS",
                    "source": { "nodeId": "a" }, "target": { "nodeId": format!("n{}", i % 5) },
                    "data": { "preview": "x".repeat(400) } })
            })
            .collect();
        server.gql(record, json!({ "s": session, "t": traces })).await?;
    }
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse()?;
    let url = format!("{}/graphql", server.base.replacen("http", "ws", 1));
    let mut stalled = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        // Before connecting, so the window the client advertises stays small.
        socket.set_recv_buffer_size(4096)?;
        socket.connect(&addr.into())?;
        socket.set_nonblocking(true)?;
        let tcp = TcpStream::from_std(std::net::TcpStream::from(socket))?;
        let mut request = url.as_str().into_client_request()?;
        request.headers_mut().insert("Sec-WebSocket-Protocol", "graphql-transport-ws".parse()?);
        let (mut ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
        ws.send(Message::Text(json!({ "type": "connection_init", "payload": {} }).to_string().into())).await?;
        let subscribe = json!({ "type": "subscribe", "id": "1", "payload": {
            "query": "subscription($s: ID) { traces(sessionId: $s) { cursor node { id timestamp data { preview } } } }",
            "variables": { "s": session } } });
        ws.send(Message::Text(subscribe.to_string().into())).await?;
        stalled.push(ws);
    }
    // Long enough for every buffer between the server and these sockets to fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(stalled)
}
