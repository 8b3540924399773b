//! Every GraphQL operation passes through the gate, over HTTP and WebSocket alike, so no resolver can forget what it
//! does: authorise the whole operation (mutations need write access, queries and subscriptions read access), hold
//! one of the connection's subscription slots while a stream lives, end streams when the caller's credentials lapse,
//! give every error an `extensions.code`, and count requests per operation.
//!
//! It wraps the schema rather than being async-graphql extensions: with any extension installed, async-graphql runs
//! an extension hook for every field of every result (a registry lookup and boxed futures per field), which was a
//! quarter of the server's CPU on a page of 100 traces.
//!
//! It also remembers the parsed documents of recent query texts: dashboards and live views send the same few queries
//! over and over, and cloning a parsed document costs a fraction of parsing it again.

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection};
use async_graphql::{BatchRequest, BatchResponse, Data, Executor, Request, Response, ServerError};
use futures::StreamExt;
use futures::stream::{BoxStream, FuturesOrdered};
use hashlink::LruCache;

use super::arguments::{self, Shapes};
use super::persisted::Documents;
use super::{FlowSchema, consistency};
use crate::auth::{Access, Caller};
use crate::error::{FORBIDDEN, LIMIT_EXCEEDED, UNAUTHENTICATED, coded, ensure_code};
use crate::http::ws::SubscriptionSlots;
use crate::limits::Limits;
use crate::store::Store;

/// How many parsed documents the gate keeps, and the longest query text it keeps one for.
const CACHED_DOCUMENTS: usize = 256;
const CACHEABLE_QUERY_BYTES: usize = 16 * 1024;

#[derive(Clone)]
pub struct Gate {
    schema: FlowSchema,
    /// The same schema, measuring the complexity of a batch's operations (see `batch`).
    measure: FlowSchema,
    limits: Arc<Limits>,
    shapes: Arc<Shapes>,
    documents: Arc<Mutex<LruCache<String, Arc<ExecutableDocument>>>>,
    persisted: Arc<Documents>,
    /// Where mutations' responses read the WAL position from (see `consistency`).
    store: Store,
}

impl Gate {
    pub fn new(
        schema: FlowSchema,
        measure: FlowSchema,
        limits: Limits,
        persisted: Arc<Documents>,
        store: Store,
    ) -> Gate {
        let documents = Arc::new(Mutex::new(LruCache::new(CACHED_DOCUMENTS)));
        let shapes = Arc::new(Shapes::of_sdl(&schema.sdl()));
        Gate { schema, measure, limits: Arc::new(limits), shapes, documents, persisted, store }
    }

    /// Puts the document a persisted query names into the request (see `persisted`).
    fn resolve(&self, request: &mut Request, caller: Option<&Caller>) -> Result<(), ServerError> {
        let authenticated = caller.is_some_and(|c| c.principal().is_some_and(|p| p.access > Access::None));
        self.persisted.resolve(request, authenticated)
    }

    /// Parses the request's query, or takes the document parsed for the same text before. Texts that do not parse
    /// are not kept: the error comes from parsing them again.
    fn parse<'r>(&self, request: &'r mut Request) -> Result<&'r ExecutableDocument, ServerError> {
        if request.query.len() <= CACHEABLE_QUERY_BYTES {
            // The lock is held only to look up or insert; the document is cloned and parsed outside it.
            let cached = self.documents.lock().unwrap_or_else(|e| e.into_inner()).get(&request.query).cloned();
            match cached {
                Some(document) => request.set_parsed_query(ExecutableDocument::clone(&document)),
                None => {
                    let document = Arc::new(request.parsed_query()?.clone());
                    self.documents.lock().unwrap_or_else(|e| e.into_inner()).insert(request.query.clone(), document);
                }
            }
        }
        request.parsed_query()
    }

    /// The type of the operation a request selects, when its document parses and names one: `GET /graphql` refuses
    /// mutations before they run. The parsed document stays with the request.
    pub fn operation_type(&self, request: &mut Request) -> Option<OperationType> {
        let caller = data::<Caller>(&request.data).cloned();
        self.resolve(request, caller.as_ref()).ok()?;
        let name = request.operation_name.clone();
        let document = self.parse(request).ok()?;
        match &document.operations {
            DocumentOperations::Single(operation) => Some(operation.node.ty),
            DocumentOperations::Multiple(operations) => {
                name.and_then(|name| operations.get(name.as_str())).map(|operation| operation.node.ty)
            }
        }
    }

    /// Parses the request and decides whether the caller may run it. Returns the metrics label of the operation
    /// either way.
    fn admit(&self, request: &mut Request, caller: Option<&Caller>) -> (String, Result<(), ServerError>) {
        if let Err(refusal) = self.resolve(request, caller).and_then(|()| consistency::take_floor(request)) {
            return ("invalid".into(), Err(refusal));
        }
        // Taken out while the document borrows the request, and put back.
        let variables = std::mem::take(&mut request.variables);
        let admitted = match self.parse(request) {
            Ok(document) => (
                label(document),
                authorise(document, caller)
                    .and_then(|()| arguments::check(document, &variables, &self.limits, &self.shapes)),
            ),
            Err(err) => ("invalid".into(), Err(err)),
        };
        request.variables = variables;
        admitted
    }
}

impl Executor for Gate {
    async fn execute(&self, mut request: Request) -> Response {
        let started = Instant::now();
        let caller = data::<Caller>(&request.data).cloned();
        let (operation, admitted) = self.admit(&mut request, caller.as_ref());
        let mut response = match admitted {
            Ok(()) => self.schema.execute(request).await,
            Err(refusal) => Response::from_errors(vec![refusal]),
        };
        if operation.starts_with("mutation:") {
            consistency::add_position(&self.store, &mut response).await;
        }
        response.errors.iter_mut().for_each(ensure_code);
        record(operation, &response, started);
        response
    }

    async fn execute_batch(&self, batch: BatchRequest) -> BatchResponse {
        let mut requests = match batch {
            BatchRequest::Single(request) => return BatchResponse::Single(self.execute(request).await),
            BatchRequest::Batch(requests) => requests,
        };
        // Persisted queries are measured by their documents; one that does not resolve reports why when it runs.
        for request in &mut requests {
            let caller = data::<Caller>(&request.data).cloned();
            let _ = self.resolve(request, caller.as_ref());
        }
        if let Some(refusal) = super::batch::refusal(&self.measure, &requests, &self.limits).await {
            return BatchResponse::Batch(
                requests.iter().map(|_| Response::from_errors(vec![refusal.clone()])).collect(),
            );
        }
        let answers = FuturesOrdered::from_iter(requests.into_iter().map(|r| self.execute(r)));
        BatchResponse::Batch(answers.collect::<Vec<_>>().await)
    }

    fn execute_stream(&self, mut request: Request, session: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        let caller = session.as_deref().and_then(data::<Caller>).or_else(|| data::<Caller>(&request.data)).cloned();
        if let (_, Err(refusal)) = self.admit(&mut request, caller.as_ref()) {
            return refused(refusal);
        }
        // Hold one of the connection's subscription slots for as long as the stream lives.
        let permit = match session.as_deref().and_then(data::<SubscriptionSlots>) {
            Some(SubscriptionSlots(slots, limit)) => match slots.clone().try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let message =
                        format!("this connection already has {limit} subscriptions (max_subscriptions_per_connection)");
                    return refused(server_error(LIMIT_EXCEEDED, message));
                }
            },
            None => None,
        };
        let stream = self.schema.execute_stream_with_session_data(request, session.unwrap_or_default()).map(
            move |mut response| {
                let _held = &permit;
                response.errors.iter_mut().for_each(ensure_code);
                response
            },
        );
        let Some(principal) = caller.as_ref().and_then(Caller::principal).filter(|p| p.lapses()) else {
            return stream.boxed();
        };
        // The closing error only when the stream was cut because the credentials lapsed, not when it ended by
        // itself (then the lapse is dropped unsent).
        let (why, lapsed) = tokio::sync::oneshot::channel();
        let lapse = principal.lapse();
        let cut = async move {
            let _ = why.send(lapse.await);
        };
        let notice = futures::stream::once(lapsed).filter_map(|why| {
            std::future::ready(
                why.ok().map(|why| Response::from_errors(vec![server_error(UNAUTHENTICATED, why.into())])),
            )
        });
        stream.take_until(cut).chain(notice).boxed()
    }
}

fn data<T: Any>(data: &Data) -> Option<&T> {
    data.get(&TypeId::of::<T>()).and_then(|value| value.downcast_ref::<T>())
}

fn server_error(code: &'static str, message: String) -> ServerError {
    coded(code, message).into_server_error(async_graphql::Pos::default())
}

fn refused(refusal: ServerError) -> BoxStream<'static, Response> {
    futures::stream::iter([Response::from_errors(vec![refusal])]).boxed()
}

fn authorise(document: &ExecutableDocument, caller: Option<&Caller>) -> Result<(), ServerError> {
    let needed = if document.operations.iter().any(|(_, op)| op.node.ty == OperationType::Mutation) {
        Access::Write
    } else {
        Access::Read
    };
    match caller.map(|c| &c.0) {
        None => Err(server_error(UNAUTHENTICATED, "no credentials were checked for this request".into())),
        Some(Err(err)) => Err(server_error(UNAUTHENTICATED, err.to_string())),
        Some(Ok(principal)) if principal.access < needed => Err(server_error(
            FORBIDDEN,
            format!(
                "these credentials may not {}; {} needs a service_role token or a write API key",
                if needed == Access::Write { "write" } else { "read" },
                if needed == Access::Write { "a mutation" } else { "this operation" }
            ),
        )),
        Some(Ok(principal)) if principal.expires.is_some_and(|exp| exp <= chrono::Utc::now()) => {
            Err(server_error(UNAUTHENTICATED, "the token has expired".into()))
        }
        Some(Ok(_)) => Ok(()),
    }
}

/// The operation type and its first root field (`mutation:recordTraces`): bounded by the schema, unlike
/// client-chosen operation names.
fn label(document: &ExecutableDocument) -> String {
    let Some((_, op)) = document.operations.iter().next() else { return "invalid".into() };
    let kind = match op.node.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    let field = op.node.selection_set.node.items.iter().find_map(|item| match &item.node {
        Selection::Field(field) => Some(field.node.name.node.as_str()),
        _ => None,
    });
    match field {
        Some(field) => format!("{kind}:{field}"),
        None => "invalid".into(),
    }
}

/// Count and latency per operation, errors per code.
fn record(operation: String, response: &Response, started: Instant) {
    let outcome = if response.errors.is_empty() { "ok" } else { "error" };
    metrics::counter!("flowtrace_graphql_requests_total", "operation" => operation.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!("flowtrace_graphql_request_duration_seconds", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    for error in &response.errors {
        let code = error
            .extensions
            .as_ref()
            .and_then(|e| e.get("code"))
            .map(|c| c.to_string().trim_matches('"').to_owned())
            .unwrap_or_else(|| "UNKNOWN".into());
        metrics::counter!("flowtrace_graphql_errors_total", "code" => code).increment(1);
    }
}
