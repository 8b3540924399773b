//! GraphQL over Server-Sent Events, the `graphql-sse` protocol's distinct connections mode: a POST (JSON body) or
//! GET (URL parameters) to `/graphql` with `Accept: text/event-stream` answers a stream of `next` events, one per
//! result, then `complete`. Any operation may be sent this way; subscriptions are what it is for, where WebSockets do
//! not get through.
//!
//! It keeps the WebSocket transport's rules: credentials from the `Authorization` header (an expired token ends the
//! stream, in the gate), streams count against max_ws_connections, keep-alive comments every ws_keepalive_secs, a
//! client that does not read for ws_send_timeout_secs loses the stream (see `paced`), and on shutdown the stream
//! ends (without `complete`, so clients reconnect, to this server or another).

use std::convert::Infallible;

use async_graphql::{Executor, Request};
use axum::http::header::ACCEPT;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::HttpState;
use super::media::{self, Media};
use super::paced::paced;
use crate::error::LIMIT_EXCEEDED;

/// Whether the client asks for an event stream.
pub fn wanted(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').any(|range| {
            range.split(';').next().is_some_and(|media| media.trim().eq_ignore_ascii_case("text/event-stream"))
        })
    })
}

/// Runs `request` (its caller already attached) as an event stream.
pub fn stream(state: &HttpState, request: Request) -> Response {
    let Ok(permit) = state.ws_connections.clone().try_acquire_owned() else {
        let message = "this server has reached its limit of streaming connections (max_ws_connections)".into();
        return media::error(Media::Json, StatusCode::SERVICE_UNAVAILABLE, LIMIT_EXCEEDED, message);
    };
    metrics::gauge!("flowtrace_sse_connections").increment(1.0);
    let open = Open;
    let mut stopped = state.stopped.clone();
    let results = state
        .gate
        .execute_stream(request, None)
        .map(|response| Event::default().event("next").data(media::to_json(&response)))
        .boxed();
    let complete = Event::default().event("complete").data("");
    let events = paced(results, complete, state.ws.send_timeout, permit)
        .take_until(async move {
            let _ = stopped.wait_for(|s| *s).await;
        })
        .map(move |event| {
            let _open = &open;
            Ok::<_, Infallible>(event)
        });
    let keepalive = KeepAlive::new().interval(state.ws.keepalive);
    let mut response = Sse::new(events).keep_alive(keepalive).into_response();
    // Proxies that buffer responses (nginx) would hold events back.
    response.headers_mut().insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Counts an open stream while it lives.
struct Open;

impl Drop for Open {
    fn drop(&mut self) {
        metrics::gauge!("flowtrace_sse_connections").decrement(1.0);
    }
}
