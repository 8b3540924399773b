//! Authorisation of whole operations: mutations need write access, queries and subscriptions read access. Runs once
//! the document is parsed, for HTTP and WebSocket alike, so no resolver can forget it. Subscriptions end when the
//! caller's credentials expire.

use std::sync::Arc;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextSubscribe};
use async_graphql::parser::types::{ExecutableDocument, OperationType};
use async_graphql::{Response, ServerError, ServerResult, Variables};
use futures::StreamExt;
use futures::stream::BoxStream;

use crate::auth::{Access, Caller};
use crate::error::coded;
use crate::live::ws::SubscriptionSlots;

pub struct AccessControl;

impl ExtensionFactory for AccessControl {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AccessControlExtension)
    }
}

struct AccessControlExtension;

fn refuse(code: &'static str, message: String) -> ServerError {
    coded(code, message).into_server_error(async_graphql::Pos::default())
}

#[async_trait::async_trait]
impl Extension for AccessControlExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        let needed = if document.operations.iter().any(|(_, op)| op.node.ty == OperationType::Mutation) {
            Access::Write
        } else {
            Access::Read
        };
        match ctx.data_opt::<Caller>().map(|c| &c.0) {
            None => Err(refuse("UNAUTHENTICATED", "no credentials were checked for this request".into())),
            Some(Err(err)) => Err(refuse("UNAUTHENTICATED", err.to_string())),
            Some(Ok(principal)) if principal.access < needed => Err(refuse(
                "FORBIDDEN",
                format!(
                    "these credentials may not {}; {} needs a service_role token or a write API key",
                    if needed == Access::Write { "write" } else { "read" },
                    if needed == Access::Write { "a mutation" } else { "this operation" }
                ),
            )),
            Some(Ok(principal)) if principal.expires.is_some_and(|exp| exp <= chrono::Utc::now()) => {
                Err(refuse("UNAUTHENTICATED", "the token has expired".into()))
            }
            Some(Ok(_)) => Ok(document),
        }
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        let stream = next.run(ctx, stream);
        // Hold one of the connection's subscription slots for as long as the stream lives.
        let permit = match ctx.data_opt::<SubscriptionSlots>() {
            Some(SubscriptionSlots(slots, limit)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let refusal = coded(
                        "LIMIT_EXCEEDED",
                        format!("this connection already has {limit} subscriptions (max_subscriptions_per_connection)"),
                    );
                    let response =
                        Response::from_errors(vec![refusal.into_server_error(async_graphql::Pos::default())]);
                    return futures::stream::iter([response]).boxed();
                }
            },
            None => None,
        };
        let stream = stream.map(move |item| {
            let _held = &permit;
            item
        });
        let stream = stream.boxed();
        let expires = ctx.data_opt::<Caller>().and_then(Caller::principal).and_then(|p| p.expires);
        let Some(expires) = expires else { return stream };
        let left = (expires - chrono::Utc::now()).to_std().unwrap_or_default();
        let expired = Response::from_errors(vec![refuse("UNAUTHENTICATED", "the token has expired".into())]);
        // The closing error only when the stream was cut by expiry, not when it ended by itself.
        let notice =
            futures::stream::iter([expired]).filter(move |_| std::future::ready(chrono::Utc::now() >= expires));
        stream.take_until(tokio::time::sleep(left)).chain(notice).boxed()
    }
}
