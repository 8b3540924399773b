//! GraphQL over WebSocket at `GET /graphql`: `graphql-transport-ws` and the legacy `graphql-ws` protocol.
//!
//! Around async-graphql's protocol handling this adds what a server needs in production: credentials from the
//! `connection_init` payload, a deadline for that message (close 4408), keep-alive pings, a cap on connections per
//! process and subscriptions per connection, and a proper close frame (1001) when the server shuts down.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_graphql::http::{WebSocketProtocols, WsMessage};
use async_graphql::{Data, Executor};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{FutureExt, SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::auth::{Auth, Caller};

/// Per-connection cap on open subscriptions, checked by `graphql::gate`.
#[derive(Clone)]
pub struct SubscriptionSlots(pub Arc<Semaphore>, pub usize);

/// Most messages written with one flush, so a busy connection still gets to its keep-alive and shutdown checks.
const MAX_BURST: usize = 256;

pub struct WsSettings {
    pub init_timeout: Duration,
    pub keepalive: Duration,
    pub subscriptions_per_connection: usize,
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
    let (mut sink, stream) = socket.split();
    let input = stream.take_while(|msg| futures::future::ready(msg.is_ok())).filter_map(|msg| {
        futures::future::ready(match msg {
            Ok(Message::Text(text)) => Some(text.as_bytes().to_vec()),
            Ok(Message::Binary(bytes)) => Some(bytes.to_vec()),
            _ => None,
        })
    });
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
            data.insert(Caller(auth.principal(presented.as_deref())));
            data.insert(slots);
            Ok(data)
        }
    };
    let legacy = protocol == WebSocketProtocols::SubscriptionsTransportWS;
    let messages = async_graphql::http::WebSocket::new(executor, input, protocol).on_connection_init(on_init);
    futures::pin_mut!(messages);
    let mut keepalive = tokio::time::interval(settings.keepalive);
    keepalive.tick().await;
    let init_deadline = tokio::time::sleep(settings.init_timeout);
    tokio::pin!(init_deadline);
    loop {
        let outgoing = tokio::select! {
            message = messages.next() => match message {
                Some(message) => to_socket(message),
                None => break,
            },
            _ = keepalive.tick() => {
                if legacy && initialised.load(Ordering::SeqCst) {
                    // subscriptions-transport-ws clients watch for `ka` messages.
                    if sink.send(Message::Text(r#"{"type":"ka"}"#.into())).await.is_err() {
                        break;
                    }
                }
                Message::Ping(Vec::new().into())
            }
            _ = &mut init_deadline, if !initialised.load(Ordering::SeqCst) => {
                let _ = sink.send(close(4408, "Connection initialisation timeout")).await;
                break;
            }
            _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
                let _ = sink.send(close(1001, "server shutting down")).await;
                break;
            }
        };
        // Whatever else is ready goes out with it: one write for a burst of subscription items instead of one each.
        let (mut closing, mut ended) = (matches!(outgoing, Message::Close(_)), false);
        let mut queued = sink.feed(outgoing).await.is_ok();
        for _ in 0..MAX_BURST {
            if closing || !queued {
                break;
            }
            match messages.next().now_or_never() {
                Some(Some(message)) => {
                    let message = to_socket(message);
                    closing = matches!(message, Message::Close(_));
                    queued = sink.feed(message).await.is_ok();
                }
                Some(None) => {
                    ended = true;
                    break;
                }
                None => break,
            }
        }
        if !queued || sink.flush().await.is_err() || closing || ended {
            break;
        }
    }
    metrics::gauge!("flowtrace_ws_connections").decrement(1.0);
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
