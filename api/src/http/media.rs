//! What a GraphQL-over-HTTP response looks like: its media type, chosen from `Accept`, and its status code.
//!
//! `application/graphql-response+json` (what Apollo Client, urql and graphql-http ask for first) says through the
//! status code whether the operation ran: a request error (one that stops it before execution: a document that does
//! not parse or validate, variables that do not coerce, refused credentials) answers 4xx, and such a response has no
//! `data` entry. Plain `application/json`, the default for clients that do not ask, keeps answering 200 to every
//! well-formed request, as such clients expect.

use std::collections::BTreeMap;

use async_graphql::{BatchResponse, ServerError};
use axum::http::header::{ACCEPT, ALLOW, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{
    DATABASE_UNAVAILABLE, FORBIDDEN, INTERNAL, PERSISTED_QUERY_NOT_FOUND, PERSISTED_QUERY_NOT_IN_LIST, UNAUTHENTICATED,
};

pub const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json; charset=utf-8";
pub const JSON: &str = "application/json";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    Json,
    GraphqlResponse,
}

impl Media {
    /// The most preferred type of `Accept` this server speaks; `application/json` when the client names none (no
    /// header, `*/*`, or only types this server does not produce).
    pub fn from_accept(headers: &HeaderMap) -> Media {
        let mut best: Option<(f32, Media)> = None;
        for value in headers.get_all(ACCEPT).iter().filter_map(|v| v.to_str().ok()) {
            for range in value.split(',') {
                let mut parts = range.split(';').map(str::trim);
                let media = match parts.next().unwrap_or("").to_ascii_lowercase().as_str() {
                    "application/graphql-response+json" => Media::GraphqlResponse,
                    "application/json" | "application/*" | "*/*" => Media::Json,
                    _ => continue,
                };
                let mut q = 1.0f32;
                let mut utf8 = true;
                for param in parts {
                    let Some((key, value)) = param.split_once('=') else { continue };
                    let value = value.trim().trim_matches('"');
                    match key.trim().to_ascii_lowercase().as_str() {
                        "q" => q = value.parse().unwrap_or(0.0),
                        "charset" => utf8 = value.eq_ignore_ascii_case("utf-8"),
                        _ => {}
                    }
                }
                // Equal preferences keep the first listed.
                if utf8 && q > 0.0 && best.is_none_or(|(b, _)| q > b) {
                    best = Some((q, media));
                }
            }
        }
        best.map_or(Media::Json, |(_, media)| media)
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Media::Json => JSON,
            Media::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
        }
    }
}

/// One response as the GraphQL spec writes it: no `data` entry when a request error stopped the operation.
#[derive(serde::Serialize)]
struct Body<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "no_extensions")]
    extensions: &'a BTreeMap<String, async_graphql::Value>,
    #[serde(skip_serializing_if = "no_errors")]
    errors: &'a [ServerError],
}

fn no_extensions(extensions: &&BTreeMap<String, async_graphql::Value>) -> bool {
    extensions.is_empty()
}

fn no_errors(errors: &&[ServerError]) -> bool {
    errors.is_empty()
}

/// Whether the operation never ran: no data, and no error from a field (those carry a path).
fn is_request_error(response: &async_graphql::Response) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

fn code(error: &ServerError) -> Option<String> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code.clone()),
        _ => None,
    }
}

/// One response as JSON text, for a stream's events.
pub fn to_json(response: &async_graphql::Response) -> String {
    serde_json::to_string(&body(response)).unwrap_or_default()
}

fn body(response: &async_graphql::Response) -> Body<'_> {
    let data = (!is_request_error(response)).then_some(&response.data);
    Body { data, extensions: &response.extensions, errors: &response.errors }
}

/// The HTTP response for what the gate answered.
pub fn respond(media: Media, response: &BatchResponse) -> Response {
    let (status, first_code, json) = match response {
        BatchResponse::Single(one) => {
            let first_code = one.errors.first().and_then(code);
            let status = match (media, is_request_error(one)) {
                (Media::GraphqlResponse, true) => request_error_status(first_code.as_deref()),
                _ => StatusCode::OK,
            };
            (status, first_code, serde_json::to_vec(&body(one)))
        }
        // Every operation of a batch answers for itself.
        BatchResponse::Batch(all) => {
            (StatusCode::OK, None, serde_json::to_vec(&all.iter().map(body).collect::<Vec<_>>()))
        }
    };
    let Ok(json) = json else {
        // Values are built from JSON and GraphQL values, which always serialise.
        return error(
            media,
            StatusCode::INTERNAL_SERVER_ERROR,
            INTERNAL,
            "the response could not be serialised".into(),
        );
    };
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(media.content_type()));
    match first_code.as_deref() {
        // Apollo's clients then send the document with its hash; a cache in between must not keep the miss.
        Some(PERSISTED_QUERY_NOT_FOUND) => {
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache, must-revalidate"));
        }
        Some(UNAUTHENTICATED) if status == StatusCode::UNAUTHORIZED => {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        _ => {}
    }
    (status, headers, json).into_response()
}

fn request_error_status(code: Option<&str>) -> StatusCode {
    match code {
        Some(UNAUTHENTICATED) => StatusCode::UNAUTHORIZED,
        Some(FORBIDDEN | PERSISTED_QUERY_NOT_IN_LIST) => StatusCode::FORBIDDEN,
        // Apollo Server answers a persisted-query miss with 200; Apollo Client retries on either.
        Some(PERSISTED_QUERY_NOT_FOUND) => StatusCode::OK,
        Some(DATABASE_UNAVAILABLE) => StatusCode::SERVICE_UNAVAILABLE,
        Some(INTERNAL) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

/// An error the HTTP edge answers itself, in the GraphQL error shape and the media type asked for.
pub fn error(media: Media, status: StatusCode, code: &str, message: String) -> Response {
    let body = serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] });
    (status, [(CONTENT_TYPE, media.content_type())], body.to_string()).into_response()
}

/// 405 for a mutation sent with GET, naming the method that runs it.
pub fn mutation_over_get(media: Media) -> Response {
    let message = "mutations are not run over GET (a link or a prefetch must not write): send them as POST /graphql \
                   with a JSON body"
        .into();
    let mut response = error(media, StatusCode::METHOD_NOT_ALLOWED, crate::error::BAD_USER_INPUT, message);
    response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> Media {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_str(value).expect("header"));
        Media::from_accept(&headers)
    }

    #[test]
    fn accept_picks_the_preferred_type_this_server_speaks() {
        assert_eq!(Media::from_accept(&HeaderMap::new()), Media::Json);
        assert_eq!(accept("*/*"), Media::Json);
        assert_eq!(accept("application/json"), Media::Json);
        assert_eq!(accept("application/graphql-response+json"), Media::GraphqlResponse);
        assert_eq!(accept("application/graphql-response+json, application/json;q=0.9"), Media::GraphqlResponse);
        assert_eq!(accept("application/json, application/graphql-response+json"), Media::Json);
        assert_eq!(accept("application/json;q=0.5, application/graphql-response+json"), Media::GraphqlResponse);
        assert_eq!(accept("application/graphql-response+json; charset=latin1, */*"), Media::Json);
        assert_eq!(accept("text/html"), Media::Json);
    }
}
