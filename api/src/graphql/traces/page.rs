//! `TraceConnection` resolved in one pass (see `one_pass`): a page of a hundred traces is two hundred edge fields,
//! each a boxed future in async-graphql's derived resolvers. `totalCount` counts in the database: a selection with it
//! is answered by the derived resolvers of `TraceConnectionType`, which also declares the type to the schema.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{ServerResult, Value};

use super::{Trace, TraceTotal};
use crate::graphql::one_pass::{self, OnePass, Selected};

/// The schema's declaration of a page of traces, and the resolvers of a selection with `totalCount`.
pub type TraceConnectionType = Connection<String, Trace, TraceTotal, EmptyFields>;

/// A page of traces.
pub struct TraceConnection(pub TraceConnectionType);

one_pass::output_type!(TraceConnection, TraceConnectionType, declared by 0);

impl OnePass for TraceConnection {
    const TYPE_NAME: &'static str = "TraceConnection";
    const AWAITED: &'static [&'static str] = &["totalCount"];

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let page = &self.0;
        Ok(match field.name() {
            "pageInfo" => field.nested(&PageInfoOf(page))?,
            "edges" => field.nested_list(&page.edges)?,
            "nodes" => field.nested_list(page.edges.iter().map(|edge| &edge.node))?,
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// `PageInfo` of a page, as async-graphql computes it: the cursors of its first and last edges.
struct PageInfoOf<'a>(&'a TraceConnectionType);

impl OnePass for PageInfoOf<'_> {
    const TYPE_NAME: &'static str = "PageInfo";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        let page = self.0;
        Ok(match field.name() {
            "hasPreviousPage" => Value::Boolean(page.has_previous_page),
            "hasNextPage" => Value::Boolean(page.has_next_page),
            "startCursor" => page.edges.first().map_or(Value::Null, |e| Value::String(e.cursor.clone())),
            "endCursor" => page.edges.last().map_or(Value::Null, |e| Value::String(e.cursor.clone())),
            _ => return Err(field.unknown::<Self>()),
        })
    }
}

/// One `TraceEdge`.
impl OnePass for Edge<String, Trace, EmptyFields> {
    const TYPE_NAME: &'static str = "TraceEdge";

    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value> {
        Ok(match field.name() {
            "cursor" => Value::String(self.cursor.clone()),
            "node" => field.nested(&self.node)?,
            _ => return Err(field.unknown::<Self>()),
        })
    }
}
