//! The HTTP edge: every route the server answers, and the state its handlers share.
//!
//! - `POST /graphql`: queries and mutations as JSON, one or a batch, in `graphql`.
//! - `GET /graphql`: queries in the URL, in `get`; with a WebSocket upgrade, every operation, subscriptions
//!   included, in `ws`.
//! - With `Accept: text/event-stream`, POST and GET answer an event stream (`graphql-sse`), in `sse`; PUT, DELETE
//!   and requests with a stream token are its single connection mode, in `sse_single`.
//! - With `Accept: multipart/mixed;subscriptionSpec=1.0`, a multipart stream (Apollo's protocol), in `multipart`.
//! - The GraphQL over HTTP spec's parameters, media types and status codes: `params` and `media`.
//! - `/` and `/graphiql`: the in-browser IDE, in `graphiql` (unless switched off).
//! - `/api/health/timescaledb`, `/healthz`, `/readyz`, `/metrics`: probes for monitoring, in `probes`.
//!
//! Responses are compressed (see `compression`).
//!
//! Errors the edge produces itself use the GraphQL error shape, so clients handle one format.

mod get;
pub mod graphiql;
mod graphql;
mod media;
mod multipart;
mod paced;
mod params;
mod probes;
mod sse;
pub mod sse_single;
pub mod ws;

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::sync::{Semaphore, watch};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::cors::{Any, CorsLayer};

use crate::auth::Auth;
use crate::config::ServeArgs;
use crate::graphql::gate::Gate;
use crate::store::Store;
use ws::WsSettings;

/// What the handlers share, assembled by `app::spawn_on`.
#[derive(Clone)]
pub struct HttpState {
    pub gate: Gate,
    pub store: Store,
    pub auth: Arc<Auth>,
    pub ws: Arc<WsSettings>,
    /// One permit per open WebSocket or HTTP stream (SSE, multipart); shutdown waits for all of them to come back.
    pub ws_connections: Arc<Semaphore>,
    /// Event streams reserved in graphql-sse's single connection mode.
    pub sse: Arc<sse_single::Reservations>,
    pub stopped: watch::Receiver<bool>,
}

/// The routes, with the body limit and CORS from `args`.
pub fn router(state: HttpState, args: &ServeArgs) -> anyhow::Result<Router> {
    let mut router = Router::new().route(
        "/graphql",
        post(graphql::graphql_http).get(get::graphql_get).put(sse_single::reserve).delete(sse_single::stop),
    );
    if !args.no_graphiql {
        router = router
            .route("/", get(|| async { axum::response::Redirect::temporary("/graphiql") }))
            .route("/graphiql", get(graphiql::page))
            .route("/graphiql/assets/{file}", get(graphiql::asset));
    }
    Ok(router
        .route("/api/health/timescaledb", get(probes::health))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(probes::ready))
        .route("/metrics", get(probes::metrics))
        .layer(DefaultBodyLimit::max(args.body_limit))
        .layer(cors(&args.cors_origins)?)
        .layer(compression(args))
        .with_state(state))
}

/// gzip, br or zstd, as the client accepts, for responses of at least `compression_min_bytes`. Not for WebSocket
/// upgrades, nor for streams (event streams, multipart), whose frames must go out as they come rather than wait for
/// a compressor's block to fill.
fn compression(args: &ServeArgs) -> CompressionLayer<impl Predicate + use<>> {
    let streams = NotForContentType::SSE.and(NotForContentType::const_new("multipart/mixed"));
    let not_upgrades =
        |status: StatusCode, _: Version, _: &HeaderMap, _: &Extensions| status != StatusCode::SWITCHING_PROTOCOLS;
    let predicate =
        SizeAbove::new(args.compression_min_bytes).and(NotForContentType::IMAGES).and(streams).and(not_upgrades);
    let layer = match args.no_compression {
        true => CompressionLayer::new().no_gzip().no_br().no_zstd(),
        false => CompressionLayer::new(),
    };
    layer.compress_when(predicate)
}

fn cors(origins: &[String]) -> anyhow::Result<CorsLayer> {
    let token = HeaderName::from_static(sse_single::TOKEN_HEADER);
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([CONTENT_TYPE, AUTHORIZATION, token]);
    if origins.iter().any(|o| o == "*") {
        return Ok(layer.allow_origin(Any));
    }
    let origins = origins
        .iter()
        .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS origin '{o}'")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(layer.allow_origin(origins))
}

fn graphql_error(status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, axum::Json(body)).into_response()
}
