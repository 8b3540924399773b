//! The `graphql-sse` protocol's single connection mode: many operations share one event stream, which browsers limit
//! to a few per origin over HTTP/1.
//!
//! - `PUT /graphql` reserves a stream: 201 with its token (text).
//! - `GET /graphql` with `X-GraphQL-Event-Stream-Token` and `Accept: text/event-stream` opens it (404 for an unknown
//!   token, 409 when already open). A reservation not opened within ws_init_timeout_secs lapses.
//! - `POST /graphql` with the token and `extensions.operationId` starts an operation on it: 202, then `next` events
//!   of `{"id", "payload"}` and a `complete` of `{"id"}`.
//! - `DELETE /graphql?operationId=…` with the token stops one: 200.
//!
//! The stream holds one of max_ws_connections and its operations max_subscriptions_per_connection slots, like a
//! WebSocket; each operation runs with the credentials of the request that started it; the stream ends (and every
//! operation with it) when the client leaves, does not read for ws_send_timeout_secs, or the server shuts down.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use async_graphql::{Data, Executor, Request};
use axum::extract::{Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::AbortHandle;
use tokio_stream::wrappers::ReceiverStream;

use super::HttpState;
use super::media::{self, Media};
use super::ws::SubscriptionSlots;
use crate::auth::Access;
use crate::error::{BAD_USER_INPUT, FORBIDDEN, LIMIT_EXCEEDED, NOT_FOUND, UNAUTHENTICATED};

pub const TOKEN_HEADER: &str = "x-graphql-event-stream-token";

/// Events queued for a stream whose client reads slower than its operations produce; operations then wait.
const QUEUED_EVENTS: usize = 64;

/// The reserved streams, by token.
#[derive(Default)]
pub struct Reservations(Mutex<HashMap<String, Reservation>>);

struct Reservation {
    /// Set once the stream is open.
    events: Option<mpsc::Sender<Event>>,
    operations: HashMap<String, AbortHandle>,
    slots: SubscriptionSlots,
    _permit: OwnedSemaphorePermit,
}

impl Reservations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Reservation>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends a stream's operations and forgets it.
    fn end(&self, token: &str) {
        if let Some(reservation) = self.lock().remove(token) {
            reservation.operations.values().for_each(AbortHandle::abort);
        }
    }
}

/// The token a request names, if any.
pub fn token(headers: &HeaderMap) -> Option<String> {
    headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    media::error(Media::Json, status, code, message.to_owned())
}

/// `PUT /graphql`: reserves a stream, for a caller whose credentials are accepted (a reservation holds a connection).
pub(super) async fn reserve(State(state): State<HttpState>, headers: HeaderMap) -> Response {
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.principal(authorization).await {
        Ok(principal) if principal.access > Access::None => {}
        Ok(_) => return refuse(StatusCode::FORBIDDEN, FORBIDDEN, "these credentials may not read"),
        Err(err) => return refuse(StatusCode::UNAUTHORIZED, UNAUTHENTICATED, &err.to_string()),
    }
    let Ok(permit) = state.ws_connections.clone().try_acquire_owned() else {
        let message = "this server has reached its limit of streaming connections (max_ws_connections)";
        return refuse(StatusCode::SERVICE_UNAVAILABLE, LIMIT_EXCEEDED, message);
    };
    let token = uuid::Uuid::new_v4().to_string();
    let per_stream = state.ws.subscriptions_per_connection;
    let slots = SubscriptionSlots(Arc::new(Semaphore::new(per_stream)), per_stream);
    let reservation = Reservation { events: None, operations: HashMap::new(), slots, _permit: permit };
    state.sse.lock().insert(token.clone(), reservation);
    let (reservations, lapsed, mut stopped) = (state.sse.clone(), token.clone(), state.stopped.clone());
    let deadline = state.ws.init_timeout;
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(deadline) => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
        let unopened = reservations.lock().get(&lapsed).is_some_and(|r| r.events.is_none());
        if unopened {
            reservations.end(&lapsed);
        }
    });
    (StatusCode::CREATED, [("content-type", "text/plain; charset=utf-8")], token).into_response()
}

/// Ends the stream when the response body is dropped: the client left, or the stream ended at shutdown.
struct Opened {
    reservations: Arc<Reservations>,
    token: String,
}

impl Drop for Opened {
    fn drop(&mut self) {
        self.reservations.end(&self.token);
        metrics::gauge!("flowtrace_sse_connections").decrement(1.0);
    }
}

/// `GET /graphql` with a token: opens the reserved stream.
pub fn open(state: &HttpState, token: String) -> Response {
    let (sender, receiver) = mpsc::channel(QUEUED_EVENTS);
    match state.sse.lock().get_mut(&token) {
        None => return refuse(StatusCode::NOT_FOUND, NOT_FOUND, "no stream is reserved with this token (PUT first)"),
        Some(reservation) if reservation.events.is_some() => {
            return refuse(StatusCode::CONFLICT, BAD_USER_INPUT, "the stream of this token is already open");
        }
        Some(reservation) => reservation.events = Some(sender),
    }
    metrics::gauge!("flowtrace_sse_connections").increment(1.0);
    let opened = Opened { reservations: state.sse.clone(), token };
    let mut stopped = state.stopped.clone();
    let events = ReceiverStream::new(receiver)
        .take_until(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .map(move |event| {
            let _opened = &opened;
            Ok::<_, Infallible>(event)
        });
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(state.ws.keepalive)).into_response();
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// `POST /graphql` with a token: starts an operation on the open stream.
pub fn start(state: &HttpState, token: &str, request: Request) -> Response {
    let id = match request.extensions.0.get("operationId") {
        Some(async_graphql::Value::String(id)) => id.clone(),
        _ => return refuse(StatusCode::BAD_REQUEST, BAD_USER_INPUT, "extensions.operationId must be a string"),
    };
    let mut reservations = state.sse.lock();
    let Some(reservation) = reservations.get_mut(token) else {
        return refuse(StatusCode::NOT_FOUND, NOT_FOUND, "no stream is reserved with this token (PUT first)");
    };
    let Some(events) = reservation.events.clone() else {
        return refuse(StatusCode::CONFLICT, BAD_USER_INPUT, "open the stream (GET with the token) first");
    };
    if reservation.operations.contains_key(&id) {
        return refuse(StatusCode::CONFLICT, BAD_USER_INPUT, "an operation with this operationId is running");
    }
    let mut session = Data::default();
    session.insert(reservation.slots.clone());
    let mut results = state.gate.execute_stream(request, Some(Arc::new(session)));
    let (reservations_arc, token_owned, task_id) = (state.sse.clone(), token.to_owned(), id.clone());
    let send_timeout = state.ws.send_timeout;
    // Spawned and recorded under the lock, so the task's own removal at its end comes after the record.
    let task = tokio::spawn(async move {
        let quoted = serde_json::to_string(&task_id).unwrap_or_default();
        // A client that does not read for send_timeout loses the stream, every operation on it with it.
        let send = |event: Event| async {
            match events.send_timeout(event, send_timeout).await {
                Ok(()) => true,
                Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                    metrics::counter!("flowtrace_http_stream_too_slow_total").increment(1);
                    reservations_arc.end(&token_owned);
                    false
                }
                Err(mpsc::error::SendTimeoutError::Closed(_)) => false,
            }
        };
        while let Some(response) = results.next().await {
            let data = format!(r#"{{"id":{quoted},"payload":{}}}"#, media::to_json(&response));
            if !send(Event::default().event("next").data(data)).await {
                return;
            }
        }
        if !send(Event::default().event("complete").data(format!(r#"{{"id":{quoted}}}"#))).await {
            return;
        }
        if let Some(reservation) = reservations_arc.lock().get_mut(&token_owned) {
            reservation.operations.remove(&task_id);
        }
    });
    reservation.operations.insert(id, task.abort_handle());
    StatusCode::ACCEPTED.into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Stop {
    operation_id: Option<String>,
}

/// `DELETE /graphql?operationId=…` with a token: stops an operation.
pub(super) async fn stop(State(state): State<HttpState>, headers: HeaderMap, Query(stop): Query<Stop>) -> Response {
    let Some(token) = token(&headers) else {
        return refuse(StatusCode::BAD_REQUEST, BAD_USER_INPUT, "DELETE /graphql needs the stream's token header");
    };
    let Some(id) = stop.operation_id else {
        return refuse(StatusCode::BAD_REQUEST, BAD_USER_INPUT, "DELETE /graphql needs ?operationId=");
    };
    let mut reservations = state.sse.lock();
    let Some(reservation) = reservations.get_mut(&token) else {
        return refuse(StatusCode::NOT_FOUND, NOT_FOUND, "no stream is reserved with this token");
    };
    if let Some(operation) = reservation.operations.remove(&id) {
        operation.abort();
    }
    StatusCode::OK.into_response()
}
