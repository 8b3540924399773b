//! `GET /graphql`: a WebSocket upgrade (see `ws`), or a query in the URL (`query`, `operationName`, and `variables`
//! and `extensions` as URL-encoded JSON). Mutations are refused with 405: a GET must be safe to repeat, prefetch or
//! follow from a link.

use async_graphql::Executor;
use async_graphql::parser::types::OperationType;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Query, State};
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::media::{self, Media};
use super::params::{self, GetParams};
use super::{HttpState, multipart, sse, sse_single, ws};
use crate::auth::Caller;
use crate::error::BAD_USER_INPUT;

pub(super) async fn graphql_get(
    State(state): State<HttpState>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    if let Ok(upgrade) = upgrade {
        return ws::graphql_ws(state, &headers, upgrade);
    }
    if let Some(token) = sse_single::token(&headers)
        && sse::wanted(&headers)
    {
        return sse_single::open(&state, token);
    }
    let media = Media::from_accept(&headers);
    let params = match params {
        Ok(Query(params)) => params,
        Err(rejection) => return media::error(media, StatusCode::BAD_REQUEST, BAD_USER_INPUT, rejection.body_text()),
    };
    if params.is_empty() {
        let message = "GET /graphql takes a URL-encoded `query` (with `variables` as JSON), or opens a WebSocket for \
                       subscriptions (graphql-transport-ws); send mutations as POST /graphql with a JSON body, or try \
                       them in /graphiql"
            .into();
        return media::error(media, StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
    }
    let mut request = match params::from_url(params) {
        Ok(request) => request,
        Err(params::Malformed(message)) => {
            return media::error(media, StatusCode::BAD_REQUEST, BAD_USER_INPUT, message);
        }
    };
    let authorization = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok());
    request = request.data(Caller(state.auth.principal(authorization).await));
    if state.gate.operation_type(&mut request) == Some(OperationType::Mutation) {
        return media::mutation_over_get(media);
    }
    if multipart::wanted(&headers) {
        return multipart::stream(&state, request);
    }
    if sse::wanted(&headers) {
        return sse::stream(&state, request);
    }
    let response = state.gate.execute(request).await;
    media::respond(media, &async_graphql::BatchResponse::Single(response))
}
