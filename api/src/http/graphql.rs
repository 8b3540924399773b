//! `POST /graphql`: queries and mutations as JSON, one request or a batch; with `Accept: text/event-stream`, any
//! operation as an event stream (see `sse`), with `Accept: multipart/mixed;subscriptionSpec=1.0` as a multipart one
//! (see `multipart`).

use async_graphql::Executor;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::HttpState;
use super::media::{self, Media};
use super::{multipart, params, sse, sse_single};
use crate::auth::Caller;
use crate::error::{BAD_USER_INPUT, LIMIT_EXCEEDED};

/// `POST /graphql`: a request or a batch. A body that is too large or not a GraphQL request gets a GraphQL-shaped
/// error too, so clients handle one error format.
pub(super) async fn graphql_http(
    State(state): State<HttpState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let media = Media::from_accept(&headers);
    if !is_json(&headers) {
        // Browsers send text/plain, form and multipart bodies cross-origin without asking (no CORS preflight), so
        // running them would let any web page write into a server it can reach. A JSON body needs a preflight.
        let message = "POST /graphql takes Content-Type: application/json".into();
        return media::error(media, StatusCode::UNSUPPORTED_MEDIA_TYPE, BAD_USER_INPUT, message);
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return media::error(
                media,
                StatusCode::PAYLOAD_TOO_LARGE,
                LIMIT_EXCEEDED,
                "the request body is larger than the limit (body_limit): send smaller batches".into(),
            );
        }
        Err(rejection) => return media::error(media, rejection.status(), BAD_USER_INPUT, rejection.body_text()),
    };
    let request = match params::from_body(&body) {
        Ok(request) => request,
        Err(params::Malformed(message)) => {
            return media::error(media, StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
        }
    };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    let request = request.data(Caller(state.auth.principal(authorization).await));
    match request {
        async_graphql::BatchRequest::Single(request) => match sse_single::token(&headers) {
            Some(token) => sse_single::start(&state, &token, request),
            None if multipart::wanted(&headers) => multipart::stream(&state, request),
            None if sse::wanted(&headers) => sse::stream(&state, request),
            None => media::respond(media, &async_graphql::BatchResponse::Single(state.gate.execute(request).await)),
        },
        async_graphql::BatchRequest::Batch(_) if sse_single::token(&headers).is_some() => {
            let message = "a stream's operations are sent one per request, not as a batch".into();
            media::error(media, StatusCode::BAD_REQUEST, BAD_USER_INPUT, message)
        }
        request => media::respond(media, &state.gate.execute_batch(request).await),
    }
}

/// `application/json` or a `+json` type, with any parameters (`; charset=utf-8`).
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return false };
    let media = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}
