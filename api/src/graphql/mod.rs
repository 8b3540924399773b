//! The GraphQL schema, assembled from one small object per capability. Resolvers parse and validate, then call the
//! store; they hold no business logic.

pub mod analytics;
pub mod arguments;
pub mod batch;
pub mod compare;
pub mod consistency;
pub mod dependency_graph;
pub mod events;
pub mod gate;
pub mod health;
pub mod live;
pub mod one_pass;
pub mod pagination;
pub mod persisted;
pub mod report;
pub mod sessions;
pub mod time_travel;
pub mod traces;

use async_graphql::{Context, MergedObject, Schema, SchemaBuilder};

use crate::limits::Limits;
use crate::live::Live;
use crate::store::Store;
use gate::Gate;

/// Reads: sessions, their traces and events, time travel, analytics, reports and health.
#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct Query(
    sessions::SessionsQuery,
    traces::TracesQuery,
    events::EventsQuery,
    time_travel::TimeTravelQuery,
    analytics::AnalyticsQuery,
    report::ReportQuery,
    dependency_graph::DependencyGraphQuery,
    compare::CompareQuery,
    health::HealthQuery,
    health::StorageQuery,
);

/// Writes: sessions started and ended, traces and events recorded in batches.
#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct Mutation(sessions::SessionsMutation, traces::TracesMutation, events::EventsMutation);

/// Query complexity of a field that runs a database query, on top of its selection: enough that one request cannot
/// ask for thousands of queries (each would take a pooled connection) within max_complexity.
pub const QUERY_COST: usize = 100;

/// Query complexity of `health` and `storage`, which each run several catalog queries.
pub const CATALOG_COST: usize = 1_000;

pub type FlowSchema = Schema<Query, Mutation, live::Subscription>;

/// The schema without data or limits: what `flowtrace schema` prints and `schema.graphql` holds.
pub fn builder() -> SchemaBuilder<Query, Mutation, live::Subscription> {
    // No async-graphql extensions: `gate` does their work around the schema (see there why).
    Schema::build(Query::default(), Mutation::default(), live::Subscription)
        // async-graphql's connection types carry no description of their own.
        .override_output_type_description::<sessions::SessionConnection>(
            "A page of sessions: `edges` (or `nodes`), `pageInfo` to page on, and `totalCount` across all pages.",
        )
        .override_output_type_description::<traces::TraceConnection>(
            "A page of traces: `edges` (or `nodes`), `pageInfo` to page on, and `totalCount` across all pages.",
        )
        .override_output_type_description::<events::EventConnection>(
            "A page of events: `edges` (or `nodes`), `pageInfo` to page on, and `totalCount` across all pages.",
        )
}

/// Options of the served schema beyond its data.
#[derive(Clone, Debug, Default)]
pub struct SchemaOptions {
    pub introspection: bool,
    /// The storage policies the server applied: `storage` reports pending aggregate ranges within them.
    pub policies: migration::Policies,
    /// The documents requests may name by hash (automatic persisted queries, or only trusted documents).
    pub persisted: std::sync::Arc<persisted::Documents>,
}

/// The served schema behind its gate.
pub fn build(store: Store, live: Live, limits: Limits, options: SchemaOptions) -> Gate {
    let mut served = builder().limit_depth(limits.max_depth).limit_complexity(limits.max_complexity);
    let mut measure = builder().limit_depth(limits.max_depth).extension(batch::Measure);
    if !options.introspection {
        served = served.disable_introspection();
        measure = measure.disable_introspection();
    }
    Gate::new(
        served.data(store.clone()).data(live).data(limits.clone()).data(options.policies).finish(),
        measure.finish(),
        limits,
        options.persisted,
        store,
    )
}

/// The SDL, as checked in.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// The store as the caller may read it: every query of the schema reads through this, so each sees only the rows
/// of the caller's scope (`store::scope`), and at least as far as the position it asked for (`consistency`).
pub(crate) fn store(ctx: &Context<'_>) -> Store {
    let scope = ctx.data_opt::<crate::auth::Caller>().and_then(|c| c.principal()).and_then(|p| p.scope.clone());
    let floor = ctx.data_opt::<consistency::ReadFloor>().map(|f| f.0);
    ctx.data_unchecked::<Store>().scoped(scope).at_least(floor)
}

/// Whether the caller may see trace payloads and error stacks. Without a checked caller (the schema run in
/// process, with no HTTP or WebSocket edge) there is nobody to withhold them from.
pub(crate) fn reveals<T>(ctx: &async_graphql::ContextBase<'_, T>) -> bool {
    ctx.data_opt::<crate::auth::Caller>().is_none_or(|c| c.principal().is_some_and(|p| p.reveal))
}

pub(crate) fn limits<'a>(ctx: &Context<'a>) -> &'a Limits {
    ctx.data_unchecked::<Limits>()
}

/// An id argument as the store takes it; BAD_USER_INPUT naming `field` when it breaks the id rule (`store::ids`).
pub(crate) fn id_arg(field: &str, id: async_graphql::ID) -> async_graphql::Result<String> {
    use crate::error::Gql;
    crate::store::ids::check_id(|| field.to_owned(), &id).gql()?;
    Ok(id.0)
}
