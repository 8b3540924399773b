//! GraphQL over WebSocket at `GET /graphql`: `graphql-transport-ws` and the legacy `graphql-ws` protocol.
//!
//! Around async-graphql's protocol handling this adds what a server needs in production: credentials from the
//! `connection_init` payload, a deadline for that message (close 4408), the protocol's own refusals (4401 for a
//! subscription before `connection_init`, 4409 for an id already in use), keep-alive pings, a cap on connections per
//! process and subscriptions per connection, a bound on how long a write may wait for a client that does not read
//! (close 4429, or the connection is dropped), and a proper close frame (1001) when the server shuts down.

use std::collections::HashSet;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_graphql::http::{ALL_WEBSOCKET_PROTOCOLS, WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use futures::{FutureExt, SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{HttpState, graphql_error};
use crate::auth::{Auth, Caller};
use crate::error::{BAD_USER_INPUT, LIMIT_EXCEEDED};

/// Per-connection cap on open subscriptions, checked by `graphql::gate`.
#[derive(Clone)]
pub struct SubscriptionSlots(pub Arc<Semaphore>, pub usize);

/// Most messages written with one flush, so a busy connection still gets to its keep-alive and shutdown checks.
const MAX_BURST: usize = 256;

/// Close code for a client that did not accept data for `send_timeout`.
pub const CLOSE_TOO_SLOW: u16 = 4429;

pub struct WsSettings {
    pub init_timeout: Duration,
    pub keepalive: Duration,
    pub subscriptions_per_connection: usize,
    /// How long one write may wait for the client to accept data before the connection is given up.
    pub send_timeout: Duration,
}

/// Serves one upgraded connection until the client leaves, the protocol ends it, or the server shuts down.
#[expect(clippy::too_many_arguments, reason = "everything one connection needs, passed once")]
pub async fn serve<E: Executor>(
    socket: WebSocket,
    executor: E,
    protocol: WebSocketProtocols,
    auth: Arc<Auth>,
    upgrade_authorization: Option<String>,
    settings: Arc<WsSettings>,
    mut shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    metrics::gauge!("flowtrace_ws_connections").increment(1.0);
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let (mut sink, stream) = socket.split();
    let rules = Arc::new(Mutex::new(Rules { legacy, ..Rules::default() }));
    let input = {
        let rules = rules.clone();
        async_stream::stream! {
            futures::pin_mut!(stream);
            while let Some(Ok(message)) = stream.next().await {
                let bytes = match message {
                    Message::Text(text) => text.as_bytes().to_vec(),
                    Message::Binary(bytes) => bytes.to_vec(),
                    _ => continue,
                };
                // A message the protocol forbids ends the input; the loop below then closes with its code.
                if !rules.lock().unwrap_or_else(|e| e.into_inner()).admit(&bytes) {
                    break;
                }
                yield bytes;
            }
        }
    };
    let initialised = Arc::new(AtomicBool::new(false));
    let on_init = {
        let initialised = initialised.clone();
        let slots = SubscriptionSlots(
            Arc::new(Semaphore::new(settings.subscriptions_per_connection)),
            settings.subscriptions_per_connection,
        );
        move |payload: serde_json::Value| async move {
            initialised.store(true, Ordering::SeqCst);
            let presented = init_authorization(&payload).or(upgrade_authorization);
            let mut data = Data::default();
            // Refused credentials still connect: each operation then fails with UNAUTHENTICATED, like over HTTP.
            data.insert(Caller(auth.principal(presented.as_deref()).await));
            data.insert(slots);
            Ok(data)
        }
    };
    let messages = async_graphql::http::WebSocket::new(executor, input, protocol).on_connection_init(on_init);
    futures::pin_mut!(messages);
    let mut keepalive = tokio::time::interval(settings.keepalive);
    keepalive.tick().await;
    let init_deadline = tokio::time::sleep(settings.init_timeout);
    tokio::pin!(init_deadline);
    loop {
        let mut outgoing = Vec::with_capacity(2);
        tokio::select! {
            message = messages.next() => match message {
                Some(message) => {
                    let message = to_socket(message);
                    rules.lock().unwrap_or_else(|e| e.into_inner()).sent(&message);
                    outgoing.push(message);
                }
                None => match rules.lock().unwrap_or_else(|e| e.into_inner()).refusal.take() {
                    Some((code, reason)) => outgoing.push(close(code, &reason)),
                    None => break,
                },
            },
            _ = keepalive.tick() => {
                if legacy && initialised.load(Ordering::SeqCst) {
                    // subscriptions-transport-ws clients watch for `ka` messages.
                    outgoing.push(Message::Text(r#"{"type":"ka"}"#.into()));
                }
                outgoing.push(Message::Ping(Vec::new().into()));
            }
            _ = &mut init_deadline, if !initialised.load(Ordering::SeqCst) => {
                outgoing.push(close(4408, "Connection initialisation timeout"));
            }
            _ = shutdown.wait_for(|s| *s) => outgoing.push(close(1001, "server shutting down")),
        };
        // Whatever else is ready goes out with it: one write for a burst of subscription items instead of one each.
        // The whole write is bounded: a client that does not read must not keep this connection (or the server's
        // shutdown) waiting.
        let write = async {
            let mut closing = false;
            for message in outgoing {
                closing |= matches!(message, Message::Close(_));
                sink.feed(message).await?;
            }
            let mut ended = false;
            for _ in 0..MAX_BURST {
                if closing {
                    break;
                }
                match messages.next().now_or_never() {
                    Some(Some(message)) => {
                        let message = to_socket(message);
                        rules.lock().unwrap_or_else(|e| e.into_inner()).sent(&message);
                        closing = matches!(message, Message::Close(_));
                        sink.feed(message).await?;
                    }
                    Some(None) => {
                        ended = true;
                        break;
                    }
                    None => break,
                }
            }
            sink.flush().await?;
            Ok::<bool, axum::Error>(closing || ended)
        };
        let written = tokio::select! {
            written = tokio::time::timeout(settings.send_timeout, write) => written,
            // Shutting down while the client does not read: there is no way to tell it, so it is dropped.
            _ = shutdown.wait_for(|s| *s), if !*shutdown.borrow() => break,
        };
        match written {
            Ok(Ok(false)) => {}
            Ok(Ok(true)) | Ok(Err(_)) => break,
            Err(_) => {
                metrics::counter!("flowtrace_ws_too_slow_total").increment(1);
                tracing::debug!("closing a WebSocket whose client did not read for {:?}", settings.send_timeout);
                let frame = close(CLOSE_TOO_SLOW, "the client does not read fast enough");
                let _ = tokio::time::timeout(settings.send_timeout, sink.send(frame)).await;
                break;
            }
        }
    }
    metrics::gauge!("flowtrace_ws_connections").decrement(1.0);
}

/// What graphql-transport-ws requires of the client, checked before async-graphql sees a message: no `subscribe`
/// before `connection_init` (4401) and no id that is still in use (4409). The legacy protocol defines neither: there a
/// `start` before `connection_init` closes 1011, and a `start` with an id in use replaces that subscription.
#[derive(Default)]
struct Rules {
    legacy: bool,
    initialised: bool,
    active: HashSet<String>,
    /// The close the client earned; the input ends when it is set.
    refusal: Option<(u16, String)>,
}

#[derive(Deserialize)]
struct Peek {
    #[serde(rename = "type")]
    kind: Option<String>,
    id: Option<String>,
}

impl Rules {
    /// Whether a client message may pass; records the refusal when not.
    fn admit(&mut self, bytes: &[u8]) -> bool {
        let Ok(Peek { kind, id }) = serde_json::from_slice::<Peek>(bytes) else { return true };
        match (kind.as_deref(), id) {
            (Some("connection_init"), _) => self.initialised = true,
            (Some("subscribe"), Some(id)) if !self.legacy => {
                if !self.initialised {
                    self.refusal = Some((4401, "Unauthorized".into()));
                    return false;
                }
                if self.active.contains(&id) {
                    self.refusal = Some((4409, format!("Subscriber for {id} already exists")));
                    return false;
                }
                self.active.insert(id);
            }
            (Some("complete" | "stop"), Some(id)) => {
                self.active.remove(&id);
            }
            _ => {}
        }
        true
    }

    /// Frees the id of a subscription the server ended (`complete` or `error`).
    fn sent(&mut self, message: &Message) {
        let Message::Text(text) = message else { return };
        // Serialised with `type` first; only these short messages are parsed.
        let text = text.as_str();
        if (text.starts_with(r#"{"type":"complete""#) || text.starts_with(r#"{"type":"error""#))
            && let Ok(Peek { id: Some(id), .. }) = serde_json::from_str::<Peek>(text)
        {
            self.active.remove(&id);
        }
    }
}

fn to_socket(message: WsMessage) -> Message {
    match message {
        WsMessage::Text(text) => Message::Text(text.into()),
        WsMessage::Close(code, reason) => close(code, &reason),
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: reason.to_owned().into() }))
}

/// `{"Authorization": "Bearer …"}`, `{"authorization": …}`, `{"authToken": "…"}` or `{"headers": {"Authorization": …}}`.
fn init_authorization(payload: &serde_json::Value) -> Option<String> {
    let from = |v: &serde_json::Value| {
        ["Authorization", "authorization", "authToken"].iter().find_map(|k| v.get(k)?.as_str().map(str::to_owned))
    };
    from(payload).or_else(|| payload.get("headers").and_then(from))
}

const WS_READ_BUFFER: usize = 4 * 1024;
/// Bytes of outgoing messages gathered before they are written to the socket (each burst is flushed at its end
/// anyway). A client that stops reading keeps this much of the server's memory, beside its kernel send buffer.
const WS_WRITE_BUFFER: usize = 16 * 1024;

/// `GET /graphql` with a WebSocket upgrade: subscriptions (and queries) over `graphql-transport-ws` or `graphql-ws`.
pub(super) fn graphql_ws(state: HttpState, headers: &HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let requested = headers.get(SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).unwrap_or("");
    let Some(protocol) = requested.split(',').find_map(|p| WebSocketProtocols::from_str(p.trim()).ok()) else {
        let message = "the WebSocket must speak graphql-transport-ws or graphql-ws (Sec-WebSocket-Protocol)".into();
        return graphql_error(StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
    };
    let Ok(permit) = state.ws_connections.clone().try_acquire_owned() else {
        let message = "this server has reached its WebSocket connection limit (max_ws_connections)".into();
        return graphql_error(StatusCode::SERVICE_UNAVAILABLE, LIMIT_EXCEEDED, message);
    };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()).map(str::to_owned);
    // Clients send small protocol messages; the 128 KiB default read buffer is zero-filled on every read, which
    // showed up as the top cost of busy subscription connections. Larger messages still arrive (the buffer grows).
    let upgrade = upgrade.protocols(ALL_WEBSOCKET_PROTOCOLS).read_buffer_size(WS_READ_BUFFER);
    upgrade.write_buffer_size(WS_WRITE_BUFFER).on_upgrade(move |socket| {
        serve(socket, state.gate, protocol, state.auth, authorization, state.ws, state.stopped, permit)
    })
}
