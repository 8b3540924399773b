//! Request metrics: count and latency per operation, errors per code. The operation label is the operation type and
//! its first root field (`mutation:recordTraces`): bounded by the schema, unlike client-chosen operation names.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest};
use async_graphql::parser::types::{ExecutableDocument, OperationType, Selection};
use async_graphql::{Response, ServerResult, Variables};

pub struct RequestMetrics;

impl ExtensionFactory for RequestMetrics {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(RequestMetricsExtension { operation: Mutex::new(None) })
    }
}

struct RequestMetricsExtension {
    operation: Mutex<Option<String>>,
}

fn label(document: &ExecutableDocument) -> Option<String> {
    let (_, op) = document.operations.iter().next()?;
    let kind = match op.node.ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    };
    let field = op.node.selection_set.node.items.iter().find_map(|item| match &item.node {
        Selection::Field(field) => Some(field.node.name.node.to_string()),
        _ => None,
    })?;
    Some(format!("{kind}:{field}"))
}

#[async_trait::async_trait]
impl Extension for RequestMetricsExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Ok(mut operation) = self.operation.lock() {
            *operation = label(&document);
        }
        Ok(document)
    }

    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let started = Instant::now();
        let response = next.run(ctx).await;
        let operation = self.operation.lock().ok().and_then(|o| o.clone()).unwrap_or_else(|| "invalid".into());
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
        response
    }
}
