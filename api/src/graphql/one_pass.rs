//! Objects resolved in one synchronous pass over their selection set, for the types a page holds hundreds of.
//!
//! async-graphql's derived resolvers run every selected field as a boxed future, polled through a `FuturesUnordered`
//! and merged into a map: about 0.4 µs a field, 44 % of the server's CPU on a page of 100 traces. A trace's fields are
//! plain values of a row that is already in memory, so `resolve` walks the selection set once and builds the object
//! directly. The schema still declares these types through async-graphql's derives (see `traces::TraceType`); a test
//! runs both over the same rows and queries and compares the answers.
//!
//! What the walk must do is what `async_graphql::resolver_utils::Fields::add_set` does for an object type that
//! implements no interfaces: fields under their response keys (aliases), `__typename`, named and inline fragments
//! whose type condition is this type (or absent), and the merging of repeated keys. `@skip` and `@include` are
//! already applied to the document before execution, and no other directive exists in this schema. Per-field hooks
//! of async-graphql extensions do not run for these fields; the schema installs none (see `gate`).

use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::{ContextSelectionSet, Name, Positioned, ServerError, ServerResult, Value};

/// An object whose fields are computed without awaiting anything.
pub trait OnePass {
    /// The GraphQL type name, for `__typename` and fragment type conditions.
    const TYPE_NAME: &'static str;

    /// The value of one selected field, by its schema name. Validation has already refused names the type lacks;
    /// a nested object resolves its own selection with `nested`.
    fn field(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value>;
}

/// The object's selected fields, as async-graphql would answer them.
pub fn resolve<T: OnePass>(ctx: &ContextSelectionSet<'_>, object: &T) -> ServerResult<Value> {
    let mut fields = IndexMap::with_capacity(ctx.item.node.items.len());
    collect(ctx, &ctx.item.node, object, &mut fields)?;
    // As async-graphql: an object with nothing selected (every field skipped) is null.
    Ok(if fields.is_empty() { Value::Null } else { Value::Object(fields) })
}

/// A nested object's selection: the sub-selection of `field` on `object`.
pub fn nested<T: OnePass>(ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>, object: &T) -> ServerResult<Value> {
    resolve(&ctx.with_selection_set(&field.node.selection_set), object)
}

fn collect<T: OnePass>(
    ctx: &ContextSelectionSet<'_>,
    set: &SelectionSet,
    object: &T,
    fields: &mut IndexMap<Name, Value>,
) -> ServerResult<()> {
    for selection in &set.items {
        match &selection.node {
            Selection::Field(field) => {
                let value = if field.node.name.node == "__typename" {
                    Value::String(T::TYPE_NAME.to_owned())
                } else {
                    object.field(ctx, field)?
                };
                insert(fields, field.node.response_key().node.clone(), value);
            }
            Selection::FragmentSpread(spread) => {
                let name = &spread.node.fragment_name.node;
                let fragment = ctx
                    .query_env
                    .fragments
                    .get(name)
                    .ok_or_else(|| ServerError::new(format!(r#"Unknown fragment "{name}"."#), Some(spread.pos)))?;
                if fragment.node.type_condition.node.on.node == T::TYPE_NAME {
                    collect(ctx, &fragment.node.selection_set.node, object, fields)?;
                }
            }
            Selection::InlineFragment(fragment) => {
                if fragment.node.type_condition.as_ref().is_none_or(|c| c.node.on.node == T::TYPE_NAME) {
                    collect(ctx, &fragment.node.selection_set.node, object, fields)?;
                }
            }
        }
    }
    Ok(())
}

/// A repeated response key merges its sub-selections into the first (`a { x } a { y }` gives `a { x y }`).
fn insert(fields: &mut IndexMap<Name, Value>, name: Name, value: Value) {
    match fields.entry(name) {
        Entry::Vacant(entry) => {
            entry.insert(value);
        }
        Entry::Occupied(mut entry) => {
            if let (Value::Object(existing), Value::Object(more)) = (entry.get_mut(), value) {
                for (name, value) in more {
                    insert(existing, name, value);
                }
            }
        }
    }
}

/// The error for a field name the type does not have (validation refuses such documents before they get here).
pub fn unknown<T: OnePass>(name: &str, field: &Positioned<Field>) -> ServerError {
    ServerError::new(format!(r#"Cannot query field "{name}" on type "{}"."#, T::TYPE_NAME), Some(field.pos))
}
