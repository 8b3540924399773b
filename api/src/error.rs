//! The one mapping from failures to GraphQL errors with a stable `extensions.code` (DESIGN §4).

use async_graphql::{ErrorExtensions, ServerError};

use crate::store::StoreError;

pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
pub const NOT_FOUND: &str = "NOT_FOUND";
pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
pub const DATABASE_UNAVAILABLE: &str = "DATABASE_UNAVAILABLE";
pub const INTERNAL: &str = "INTERNAL";
/// No valid credentials: a missing, malformed, expired or not yet valid token or key.
pub const UNAUTHENTICATED: &str = "UNAUTHENTICATED";
/// Valid credentials that do not allow the operation.
pub const FORBIDDEN: &str = "FORBIDDEN";
/// A persisted query's hash this server does not know (yet): Apollo's clients then send the document with its hash.
/// The message is Apollo's too (`PersistedQueryNotFound`), which some clients match on.
pub const PERSISTED_QUERY_NOT_FOUND: &str = "PERSISTED_QUERY_NOT_FOUND";
/// A persisted query's hash alone, sent to a server with automatic persisted queries switched off.
pub const PERSISTED_QUERY_NOT_SUPPORTED: &str = "PERSISTED_QUERY_NOT_SUPPORTED";
/// With trusted documents: a document that is not in the manifest.
pub const PERSISTED_QUERY_NOT_IN_LIST: &str = "PERSISTED_QUERY_NOT_IN_LIST";

pub fn coded(code: &'static str, message: impl Into<String>) -> async_graphql::Error {
    async_graphql::Error::new(message).extend_with(|_, e| e.set("code", code))
}

pub fn bad_input(message: impl Into<String>) -> async_graphql::Error {
    coded(BAD_USER_INPUT, message)
}

pub fn limit_exceeded(message: impl Into<String>) -> async_graphql::Error {
    coded(LIMIT_EXCEEDED, message)
}

pub fn store_error(err: StoreError) -> async_graphql::Error {
    let code = match &err {
        StoreError::NotFound(_) => NOT_FOUND,
        StoreError::BadInput(_) => BAD_USER_INPUT,
        StoreError::LimitExceeded(_) => LIMIT_EXCEEDED,
        StoreError::Forbidden(_) => FORBIDDEN,
        StoreError::Unavailable(_) => DATABASE_UNAVAILABLE,
        StoreError::Database { .. } | StoreError::Internal(_) => INTERNAL,
    };
    if code == INTERNAL {
        // The database's text names tables, constraints and source lines: it goes to the log, not to the client.
        tracing::error!(%err, "internal error");
        return coded(code, "internal error (the server logged the details)");
    }
    coded(code, err.to_string())
}

/// `store_call().await.gql()?` in resolvers.
pub trait Gql<T> {
    fn gql(self) -> async_graphql::Result<T>;
}

impl<T> Gql<T> for Result<T, StoreError> {
    fn gql(self) -> async_graphql::Result<T> {
        self.map_err(store_error)
    }
}

/// Errors raised by the GraphQL engine itself (unparseable query, unknown field, a value of the wrong type, a bad
/// UUID or enum) carry no code: they are all the client's input.
pub fn ensure_code(error: &mut ServerError) {
    let has_code = error.extensions.as_ref().is_some_and(|ext| ext.get("code").is_some());
    if !has_code {
        // The engine's own depth and complexity refusals are limits, not malformed input.
        let code = match error.message.as_str() {
            "Query is nested too deep." => {
                error.message = "the query is nested deeper than the limit (max_depth)".into();
                LIMIT_EXCEEDED
            }
            "Query is too complex." => {
                error.message =
                    "the query is more complex than the limit (max_complexity): ask for smaller pages or fewer fields"
                        .into();
                LIMIT_EXCEEDED
            }
            "Subscriptions are not supported on this transport." => {
                error.message = "a subscription runs over a WebSocket (graphql-transport-ws), as Server-Sent Events \
                                 (Accept: text/event-stream) or as HTTP multipart (Accept: \
                                 multipart/mixed;subscriptionSpec=1.0), not as a plain POST or GET"
                    .into();
                BAD_USER_INPUT
            }
            _ => BAD_USER_INPUT,
        };
        error.extensions.get_or_insert_with(Default::default).set("code", code);
    }
}
