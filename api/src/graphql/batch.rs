//! HTTP batches (a JSON array of operations): at most max_batch_operations of them, and their complexities add up
//! against max_complexity, so a batch can do no more than one operation may. A refused batch runs nothing.
//!
//! async-graphql reports an operation's complexity only to extensions, and an extension on the served schema costs on
//! every field of every result (see `gate`). So a second schema, with the same types and only the `Measure`
//! extension, validates each operation of a batch and stops it there, before anything would run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::extensions::{Extension, ExtensionContext, ExtensionFactory, NextValidation};
use async_graphql::{Request, ServerError, ValidationResult};

use super::FlowSchema;
use crate::error::{LIMIT_EXCEEDED, coded};
use crate::limits::Limits;

/// The extension of the measuring schema.
pub struct Measure;

/// Where `Measure` writes the complexity of the request it is attached to.
struct Measured(Arc<AtomicUsize>);

struct MeasureExtension;

impl ExtensionFactory for Measure {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(MeasureExtension)
    }
}

#[async_trait::async_trait]
impl Extension for MeasureExtension {
    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(Measured(slot)) = ctx.data_opt::<Measured>() {
            slot.store(result.complexity, Ordering::Relaxed);
        }
        // Measured only: nothing runs on this schema.
        Err(vec![ServerError::new("measured", None)])
    }
}

/// Why the batch may not run, if it may not: one error, answered for every operation.
pub async fn refusal(measure: &FlowSchema, requests: &[Request], limits: &Limits) -> Option<ServerError> {
    let refuse = |message: String| Some(coded(LIMIT_EXCEEDED, message).into_server_error(Default::default()));
    if requests.len() > limits.max_batch_operations {
        return refuse(format!(
            "the batch has {} operations; the limit (max_batch_operations) is {}",
            requests.len(),
            limits.max_batch_operations
        ));
    }
    let mut total = 0usize;
    for request in requests {
        let slot = Arc::new(AtomicUsize::new(0));
        let mut probe =
            Request::new(request.query.clone()).variables(request.variables.clone()).data(Measured(slot.clone()));
        if let Some(name) = &request.operation_name {
            probe = probe.operation_name(name.clone());
        }
        // An operation that does not validate measures 0 here; running it reports why.
        let _measured_only = measure.execute(probe).await;
        total = total.saturating_add(slot.load(Ordering::Relaxed));
    }
    if total > limits.max_complexity {
        return refuse(format!(
            "the batch's operations together are more complex ({total}) than the limit (max_complexity, {}): \
             send fewer operations per batch",
            limits.max_complexity
        ));
    }
    None
}
