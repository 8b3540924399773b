//! A real GraphQL WebSocket client for tests, speaking `graphql-transport-ws` or the legacy `graphql-ws`.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const TRANSPORT_WS: &str = "graphql-transport-ws";
pub const LEGACY_WS: &str = "graphql-ws";

pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    legacy: bool,
    next_id: u32,
}

/// What the server sent for a subscription.
#[derive(Debug)]
pub enum Event {
    Data(Value),
    Error(Value),
    Complete,
    Closed(Option<u16>),
}

impl WsClient {
    /// Opens the socket without `connection_init`.
    pub async fn open(base: &str, protocol: &str) -> WsClient {
        let url = format!("{}/graphql", base.replacen("http", "ws", 1));
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
        let (ws, response) = tokio_tungstenite::connect_async(request).await.expect("WebSocket connects");
        let chosen = response.headers().get("Sec-WebSocket-Protocol").and_then(|v| v.to_str().ok());
        assert_eq!(chosen, Some(protocol), "server accepted the subprotocol");
        WsClient { ws, legacy: protocol == LEGACY_WS, next_id: 0 }
    }

    /// Opens the socket over a TCP connection whose receive buffer is `rcvbuf` bytes (set before connecting, so the
    /// advertised window stays small): a client that stops reading then stalls the server's writes quickly.
    pub async fn open_small_buffer(base: &str, protocol: &str, rcvbuf: usize) -> WsClient {
        let url = format!("{}/graphql", base.replacen("http", "ws", 1));
        let addr: std::net::SocketAddr = base.trim_start_matches("http://").parse().expect("server address");
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("SO_RCVBUF");
        socket.connect(&addr.into()).expect("TCP connects");
        socket.set_nonblocking(true).expect("non-blocking");
        let tcp = TcpStream::from_std(std::net::TcpStream::from(socket)).expect("tokio stream");
        let mut request = url.into_client_request().expect("request");
        request.headers_mut().insert("Sec-WebSocket-Protocol", protocol.parse().expect("header"));
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(tcp)).await.expect("upgrade");
        WsClient { ws, legacy: protocol == LEGACY_WS, next_id: 0 }
    }

    /// The client's own port (of a plain TCP connection).
    pub fn local_port(&self) -> u16 {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local address").port(),
            _ => panic!("not a plain TCP connection"),
        }
    }

    /// Sends `connection_init` without waiting for the acknowledgement.
    pub async fn init(&mut self, payload: Value) {
        self.send(json!({ "type": "connection_init", "payload": payload })).await;
    }

    /// Starts a subscription under the given id.
    pub async fn subscribe_as(&mut self, id: &str, query: &str, variables: Value) {
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query, "variables": variables } })).await;
    }

    /// Reads until the server closes the socket; the close code, `None` for a socket that ended without one, or
    /// panics when it stays open past `wait`.
    pub async fn closed_within(&mut self, wait: Duration) -> Option<u16> {
        let deadline = Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => panic!("the socket is still open after {wait:?}"),
                Ok(None) | Ok(Some(Err(_))) => return None,
                Ok(Some(Ok(Message::Close(frame)))) => return frame.map(|f| u16::from(f.code)),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }

    /// Opens the socket and completes `connection_init` with `payload`.
    pub async fn connect(base: &str, protocol: &str, payload: Value) -> WsClient {
        let mut client = Self::open(base, protocol).await;
        client.send(json!({ "type": "connection_init", "payload": payload })).await;
        loop {
            let message = client.recv(Instant::now() + Duration::from_secs(10)).await.expect("connection_ack");
            match message["type"].as_str() {
                Some("connection_ack") => return client,
                Some("ka") | Some("ping") | Some("pong") => continue,
                other => panic!("expected connection_ack, got {other:?}: {message}"),
            }
        }
    }

    async fn send(&mut self, message: Value) {
        self.ws.send(Message::Text(message.to_string().into())).await.expect("send");
    }

    /// Next protocol message, answering pings; `None` when the socket closed or nothing came by `deadline` (pings and
    /// keep-alives do not extend it).
    async fn recv(&mut self, deadline: Instant) -> Option<Value> {
        loop {
            let frame = tokio::time::timeout_at(deadline, self.ws.next()).await.ok()??;
            match frame {
                Ok(Message::Text(text)) => {
                    let message: Value = serde_json::from_str(&text).expect("JSON message");
                    if message["type"] == "ping" {
                        self.send(json!({ "type": "pong" })).await;
                        continue;
                    }
                    return Some(message);
                }
                Ok(Message::Close(frame)) => {
                    return Some(json!({ "type": "__closed", "code": frame.map(|f| u16::from(f.code)) }));
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Starts a subscription; returns its id.
    pub async fn subscribe(&mut self, query: &str, variables: Value) -> String {
        self.next_id += 1;
        let id = self.next_id.to_string();
        let kind = if self.legacy { "start" } else { "subscribe" };
        self.send(json!({ "type": kind, "id": id, "payload": { "query": query, "variables": variables } })).await;
        id
    }

    pub async fn stop(&mut self, id: &str) {
        let kind = if self.legacy { "stop" } else { "complete" };
        self.send(json!({ "type": kind, "id": id })).await;
    }

    /// The next subscription event, or `None` if nothing arrives within `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Option<Event> {
        let deadline = Instant::now() + wait;
        loop {
            let message = self.recv(deadline).await?;
            return Some(match message["type"].as_str() {
                Some("next") | Some("data") => {
                    let payload = &message["payload"];
                    if payload.get("errors").is_some_and(|e| !e.is_null()) {
                        Event::Error(payload["errors"].clone())
                    } else {
                        Event::Data(payload["data"].clone())
                    }
                }
                Some("error") => Event::Error(message["payload"].clone()),
                Some("complete") => Event::Complete,
                Some("__closed") => Event::Closed(message["code"].as_u64().map(|c| c as u16)),
                Some("ka") => continue,
                other => panic!("unexpected message {other:?}: {message}"),
            });
        }
    }

    /// The next data payload; panics on anything else.
    pub async fn next_data(&mut self) -> Value {
        match self.next_event(Duration::from_secs(30)).await {
            Some(Event::Data(data)) => data,
            other => panic!("expected data, got {other:?}"),
        }
    }

    /// Collects `n` data payloads.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(self.next_data().await);
        }
        out
    }

    /// Asserts nothing more arrives for a short while.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        if let Some(event) = self.next_event(wait).await {
            panic!("expected nothing more, got {event:?}");
        }
    }
}
