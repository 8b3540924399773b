//! The GraphQL schema, assembled from one small object per capability. Resolvers parse and validate, then call the
//! store; they hold no business logic.

pub mod analytics;
pub mod events;
pub mod gate;
pub mod health;
pub mod live;
pub mod one_pass;
pub mod pagination;
pub mod sessions;
pub mod time_travel;
pub mod traces;

use async_graphql::{Context, MergedObject, Schema, SchemaBuilder};

use crate::limits::Limits;
use crate::live::Live;
use crate::store::Store;
use gate::Gate;

#[derive(MergedObject, Default)]
#[graphql(name = "Query")]
pub struct Query(
    sessions::SessionsQuery,
    traces::TracesQuery,
    events::EventsQuery,
    time_travel::TimeTravelQuery,
    analytics::AnalyticsQuery,
    health::HealthQuery,
    health::StorageQuery,
);

#[derive(MergedObject, Default)]
#[graphql(name = "Mutation")]
pub struct Mutation(sessions::SessionsMutation, traces::TracesMutation, events::EventsMutation);

pub type FlowSchema = Schema<Query, Mutation, live::Subscription>;

/// The schema without data or limits: what `flowtrace schema` prints and `schema.graphql` holds.
pub fn builder() -> SchemaBuilder<Query, Mutation, live::Subscription> {
    // No async-graphql extensions: `gate` does their work around the schema (see there why).
    Schema::build(Query::default(), Mutation::default(), live::Subscription)
}

/// Options of the served schema beyond its data.
#[derive(Clone, Debug, Default)]
pub struct SchemaOptions {
    pub introspection: bool,
}

/// The served schema behind its gate.
pub fn build(store: Store, live: Live, limits: Limits, options: SchemaOptions) -> Gate {
    let mut builder = builder().limit_depth(limits.max_depth).limit_complexity(limits.max_complexity);
    if !options.introspection {
        builder = builder.disable_introspection();
    }
    Gate::new(builder.data(store).data(live).data(limits).finish())
}

/// The SDL, as checked in.
pub fn sdl() -> String {
    builder().finish().sdl()
}

pub(crate) fn store<'a>(ctx: &Context<'a>) -> &'a Store {
    ctx.data_unchecked::<Store>()
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
