//! Subscriptions over HTTP multipart, what Apollo Client and Apollo Router speak: a POST (or GET) with
//! `Accept: multipart/mixed;subscriptionSpec=1.0` answers `multipart/mixed;boundary="graphql";subscriptionSpec=1.0`,
//! one JSON part `{"payload": <result>}` per result, `{}` parts as keep-alives, and the closing delimiter when the
//! operation ends.
//!
//! It keeps the rules of the other streams (see `sse`): credentials from the `Authorization` header, a connection
//! counted against max_ws_connections, keep-alives every ws_keepalive_secs, a client that does not read for
//! ws_send_timeout_secs loses the stream (see `paced`), and at shutdown the body ends without the closing delimiter.

use std::convert::Infallible;

use async_graphql::{Executor, Request};
use axum::body::{Body, Bytes};
use axum::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::HttpState;
use super::media::{self, Media};
use super::paced::paced;
use crate::error::LIMIT_EXCEEDED;

const CONTENT: &str = r#"multipart/mixed;boundary="graphql";subscriptionSpec=1.0"#;

/// Whether the client asks for multipart subscriptions (`multipart/mixed` with `subscriptionSpec`).
pub fn wanted(headers: &HeaderMap) -> bool {
    headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|value| {
        value.split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            parts.next().is_some_and(|media| media.eq_ignore_ascii_case("multipart/mixed"))
                && parts.any(|param| param.to_ascii_lowercase().starts_with("subscriptionspec="))
        })
    })
}

/// One part, ended by the boundary so the client reads it at once instead of waiting for the next.
fn part(json: &str) -> Bytes {
    Bytes::from(format!("\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{json}\r\n--graphql"))
}

/// Runs `request` (its caller already attached) as a multipart stream.
pub fn stream(state: &HttpState, request: Request) -> Response {
    let Ok(permit) = state.ws_connections.clone().try_acquire_owned() else {
        let message = "this server has reached its limit of streaming connections (max_ws_connections)".into();
        return media::error(Media::Json, StatusCode::SERVICE_UNAVAILABLE, LIMIT_EXCEEDED, message);
    };
    let results = state
        .gate
        .execute_stream(request, None)
        .map(|response| part(&format!(r#"{{"payload":{}}}"#, media::to_json(&response))))
        .boxed();
    let mut results = paced(results, Bytes::from_static(b"--\r\n"), state.ws.send_timeout, permit);
    let mut stopped = state.stopped.clone();
    let keepalive = state.ws.keepalive;
    let body = async_stream::stream! {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        tokio::pin!(shutdown);
        yield Ok::<_, Infallible>(Bytes::from_static(b"\r\n--graphql"));
        let mut tick = tokio::time::interval(keepalive);
        tick.tick().await;
        loop {
            tokio::select! {
                // The closing delimiter comes last from an operation that ended; none when the client was too slow.
                part = results.next() => match part {
                    Some(part) => yield Ok(part),
                    None => return,
                },
                _ = tick.tick() => yield Ok(part("{}")),
                // Not the closing delimiter: the operation did not end, the client may subscribe again.
                _ = &mut shutdown => return,
            }
        }
    };
    ([(CONTENT_TYPE, CONTENT), (CACHE_CONTROL, "no-cache")], Body::from_stream(body)).into_response()
}
