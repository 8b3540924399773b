//! Objects resolved in one synchronous pass over their selection set, for the types a page holds hundreds of.
//!
//! async-graphql's derived resolvers run every selected field as a boxed future, polled through a `FuturesUnordered`
//! and merged into a map: on a page of 100 traces, the largest part of the server's CPU (see BENCHMARKS.md). A trace's
//! fields are plain values of a row that is already in memory, so `resolve` walks the selection set once and builds the
//! object directly. The schema still declares these types through async-graphql's derives (see `traces::TraceType`); a
//! test runs both over the same rows and queries and compares the answers. A type with fields that read the database
//! (`Session.traces`) is resolved in one pass only when none of those is selected, by its derived resolvers otherwise.
//!
//! The walk of a selection set (a `Plan`) is made once for every object of a list (`List`, `Selected::nested_list`),
//! and the plan of a nested field once for every object that holds it: the objects of an answer differ in their
//! values, never in what is selected of them.
//!
//! What the walk must do is what `async_graphql::resolver_utils::Fields::add_set` does for an object type that
//! implements no interfaces: fields under their response keys (aliases), `__typename`, named and inline fragments
//! whose type condition is this type (or absent), and the merging of repeated keys. `@skip` and `@include` are
//! already applied to the document before execution, and no other directive exists in this schema. Per-field hooks
//! of async-graphql extensions do not run for these fields; the schema installs none (see `gate`).

use std::borrow::Cow;
use std::cell::OnceCell;

use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::{ContextSelectionSet, Name, OutputType, Positioned, ServerError, ServerResult, Value};

/// An object whose fields are computed without awaiting anything.
pub trait OnePass {
    /// The GraphQL type name, for `__typename` and fragment type conditions.
    const TYPE_NAME: &'static str;

    /// Fields that must be awaited (they read the database): a selection with any of them is answered by the type's
    /// derived resolvers instead (`resolve_unless_awaited`).
    const AWAITED: &'static [&'static str] = &[];

    /// The value of one selected field, by its schema name (`Selected::name`). Validation has already refused names
    /// the type lacks; a nested object resolves its own selection with `Selected::nested`.
    fn field(&self, field: &Selected<'_, '_>) -> ServerResult<Value>;
}

/// The object's selected fields, as async-graphql would answer them.
pub fn resolve<T: OnePass>(ctx: &ContextSelectionSet<'_>, object: &T) -> ServerResult<Value> {
    debug_assert!(T::AWAITED.is_empty(), "{} awaits some fields: use resolve_unless_awaited", T::TYPE_NAME);
    Ok(resolve_unless_awaited(ctx, object)?.unwrap_or(Value::Null))
}

/// `resolve`, or None when the selection asks for one of `T::AWAITED`.
pub fn resolve_unless_awaited<T: OnePass>(ctx: &ContextSelectionSet<'_>, object: &T) -> ServerResult<Option<Value>> {
    match Plan::of::<T>(ctx)? {
        Some(plan) => plan.into_value(ctx, object).map(Some),
        None => Ok(None),
    }
}

/// `OutputType::resolve` of a one-pass type with awaited fields: one pass, or `declared`'s derived resolvers when the
/// selection asks for one of them.
pub async fn resolve_or_declared<T: OnePass, D: OutputType>(
    ctx: &ContextSelectionSet<'_>,
    field: &Positioned<Field>,
    object: &T,
    declared: &D,
) -> ServerResult<Value> {
    match resolve_unless_awaited(ctx, object)? {
        Some(value) => Ok(value),
        None => declared.resolve(ctx, field).await,
    }
}

/// `OutputType` for a one-pass type, declared to the schema by the derived type `$declared`. A type with awaited fields
/// names the field of the wrapper that holds its declaration (`declared by 0`): a selection with one of them is
/// answered by that value's derived resolvers (`resolve_or_declared`).
macro_rules! output_type {
    ($type:ty, $declared:ty $(, declared by $fallback:tt)?) => {
        impl async_graphql::OutputType for $type {
            fn type_name() -> std::borrow::Cow<'static, str> {
                <$declared as async_graphql::OutputType>::type_name()
            }

            fn create_type_info(registry: &mut async_graphql::registry::Registry) -> String {
                <$declared as async_graphql::OutputType>::create_type_info(registry)
            }

            async fn resolve(
                &self,
                ctx: &async_graphql::ContextSelectionSet<'_>,
                _field: &async_graphql::Positioned<async_graphql::parser::types::Field>,
            ) -> async_graphql::ServerResult<async_graphql::Value> {
                $crate::graphql::one_pass::output_type!(@resolve self, ctx, _field $(, $fallback)?)
            }
        }
    };
    (@resolve $this:ident, $ctx:ident, $field:ident) => {
        $crate::graphql::one_pass::resolve($ctx, $this)
    };
    (@resolve $this:ident, $ctx:ident, $field:ident, $fallback:tt) => {
        $crate::graphql::one_pass::resolve_or_declared($ctx, $field, $this, &$this.$fallback).await
    };
}
pub(crate) use output_type;

/// A list of one-pass objects, resolved in one loop: async-graphql resolves a `Vec` through a future per item, which
/// costs more than the item's own fields on answers of thousands.
pub struct List<T>(pub Vec<T>);

impl<T: OnePass + OutputType> OutputType for List<T> {
    fn type_name() -> Cow<'static, str> {
        Vec::<T>::type_name()
    }

    fn qualified_type_name() -> String {
        Vec::<T>::qualified_type_name()
    }

    fn create_type_info(registry: &mut Registry) -> String {
        Vec::<T>::create_type_info(registry)
    }

    async fn resolve(&self, ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> ServerResult<Value> {
        Plan::of::<T>(ctx)?.ok_or_else(|| awaits::<T>(field))?.apply_all(ctx, &self.0)
    }
}

impl<T> FromIterator<T> for List<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        List(iter.into_iter().collect())
    }
}

/// A field selected on a one-pass object, with the plan of its own selection, made by the first object of a list
/// that needs it and reused by the others.
pub struct Selected<'p, 'a> {
    ctx: &'p ContextSelectionSet<'a>,
    field: &'a Positioned<Field>,
    plan: &'p OnceCell<Option<Plan<'a>>>,
}

impl<'p, 'a> Selected<'p, 'a> {
    /// The field's schema name.
    pub fn name(&self) -> &'a str {
        self.field.node.name.node.as_str()
    }

    /// The selection the object is resolved under.
    pub fn ctx(&self) -> &'p ContextSelectionSet<'a> {
        self.ctx
    }

    /// A nested object: its value under this field's selection.
    pub fn nested<T: OnePass>(&self, object: &T) -> ServerResult<Value> {
        let ctx = self.ctx.with_selection_set(&self.field.node.selection_set);
        match self.plan::<T>(&ctx)? {
            Some(plan) => plan.apply(&ctx, object),
            None => Ok(Value::Null),
        }
    }

    /// A nested list: the value of each object under this field's selection.
    pub fn nested_list<'o, T: OnePass + 'o>(&self, objects: impl IntoIterator<Item = &'o T>) -> ServerResult<Value> {
        let ctx = self.ctx.with_selection_set(&self.field.node.selection_set);
        self.plan::<T>(&ctx)?.as_ref().ok_or_else(|| awaits::<T>(self.field))?.apply_all(&ctx, objects)
    }

    /// The error for a field name the type does not have (validation refuses such documents before they get here).
    pub fn unknown<T: OnePass>(&self) -> ServerError {
        let name = self.name();
        ServerError::new(format!(r#"Cannot query field "{name}" on type "{}"."#, T::TYPE_NAME), Some(self.field.pos))
    }

    fn plan<T: OnePass>(&self, ctx: &ContextSelectionSet<'a>) -> ServerResult<&'p Option<Plan<'a>>> {
        if let Some(plan) = self.plan.get() {
            return Ok(plan);
        }
        let plan = Plan::of::<T>(ctx)?;
        Ok(self.plan.get_or_init(|| plan))
    }
}

fn awaits<T: OnePass>(field: &Positioned<Field>) -> ServerError {
    ServerError::new(format!("{} awaits fields: it cannot be listed in one pass", T::TYPE_NAME), Some(field.pos))
}

/// What a selection set asks of a `T`, worked out once for every object of a list: its response keys in order, and the
/// field that fills each (with the plans of their own selections).
struct Plan<'a> {
    /// Every response key, with Null. Each object of a list starts from a copy: copying the map's index costs less
    /// than hashing its keys again.
    keys: IndexMap<Name, Value>,
    /// The selected fields in document order.
    fields: Vec<Planned<'a>>,
}

struct Planned<'a> {
    /// The index of its response key in `keys`.
    slot: usize,
    /// None for `__typename`.
    field: Option<&'a Positioned<Field>>,
    /// An earlier field has the same response key: this one's value is merged into it.
    repeated: bool,
    /// The plan of the field's own selection, for a nested object.
    plan: OnceCell<Option<Plan<'a>>>,
}

impl<'a> Plan<'a> {
    /// The plan of the selection, or None when it asks for one of `T::AWAITED`.
    fn of<T: OnePass>(ctx: &ContextSelectionSet<'a>) -> ServerResult<Option<Plan<'a>>> {
        let items = ctx.item.node.items.len();
        let mut plan = Plan { keys: IndexMap::with_capacity(items), fields: Vec::with_capacity(items) };
        Ok(plan.add::<T>(ctx, &ctx.item.node)?.then_some(plan))
    }

    fn add<T: OnePass>(&mut self, ctx: &ContextSelectionSet<'a>, set: &'a SelectionSet) -> ServerResult<bool> {
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => {
                    let name = field.node.name.node.as_str();
                    if T::AWAITED.contains(&name) {
                        return Ok(false);
                    }
                    let entry = self.keys.entry(field.node.response_key().node.clone());
                    let repeated = matches!(entry, Entry::Occupied(_));
                    let slot = entry.index();
                    entry.or_insert(Value::Null);
                    let field = (name != "__typename").then_some(field);
                    self.fields.push(Planned { slot, field, repeated, plan: OnceCell::new() });
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    let fragment =
                        ctx.query_env.fragments.get(name).ok_or_else(|| {
                            ServerError::new(format!(r#"Unknown fragment "{name}"."#), Some(spread.pos))
                        })?;
                    if fragment.node.type_condition.node.on.node == T::TYPE_NAME
                        && !self.add::<T>(ctx, &fragment.node.selection_set.node)?
                    {
                        return Ok(false);
                    }
                }
                Selection::InlineFragment(fragment) => {
                    if fragment.node.type_condition.as_ref().is_none_or(|c| c.node.on.node == T::TYPE_NAME)
                        && !self.add::<T>(ctx, &fragment.node.selection_set.node)?
                    {
                        return Ok(false);
                    }
                }
            }
        }
        Ok(true)
    }

    /// The object's value, from a copy of the keys.
    fn apply<T: OnePass>(&self, ctx: &ContextSelectionSet<'a>, object: &T) -> ServerResult<Value> {
        fill(&self.fields, self.keys.clone(), ctx, object)
    }

    /// Each object's value, the error of one at its index.
    fn apply_all<'o, T: OnePass + 'o>(
        &self,
        ctx: &ContextSelectionSet<'a>,
        objects: impl IntoIterator<Item = &'o T>,
    ) -> ServerResult<Value> {
        let items = objects
            .into_iter()
            .enumerate()
            .map(|(i, object)| self.apply(ctx, object).map_err(|e| ctx.with_index(i).set_error_path(e)));
        Ok(Value::List(items.collect::<ServerResult<_>>()?))
    }

    /// The object's value, from the keys themselves: for a single object.
    fn into_value<T: OnePass>(self, ctx: &ContextSelectionSet<'a>, object: &T) -> ServerResult<Value> {
        fill(&self.fields, self.keys, ctx, object)
    }
}

fn fill<'a, T: OnePass>(
    planned: &[Planned<'a>],
    mut fields: IndexMap<Name, Value>,
    ctx: &ContextSelectionSet<'a>,
    object: &T,
) -> ServerResult<Value> {
    // As async-graphql: an object with nothing selected (every field skipped) is null.
    if fields.is_empty() {
        return Ok(Value::Null);
    }
    for p in planned {
        let value = match p.field {
            Some(field) => object.field(&Selected { ctx, field, plan: &p.plan })?,
            None => Value::String(T::TYPE_NAME.to_owned()),
        };
        if let Some((_, existing)) = fields.get_index_mut(p.slot) {
            if p.repeated {
                merge(existing, value);
            } else {
                *existing = value;
            }
        }
    }
    Ok(Value::Object(fields))
}

/// A repeated response key merges its sub-selections into the first (`a { x } a { y }` gives `a { x y }`), in each
/// item of a list.
fn insert(fields: &mut IndexMap<Name, Value>, name: Name, value: Value) {
    match fields.entry(name) {
        Entry::Vacant(entry) => {
            entry.insert(value);
        }
        Entry::Occupied(mut entry) => merge(entry.get_mut(), value),
    }
}

fn merge(existing: &mut Value, more: Value) {
    match (existing, more) {
        (Value::Object(existing), Value::Object(more)) => {
            for (name, value) in more {
                insert(existing, name, value);
            }
        }
        (Value::List(existing), Value::List(more)) => {
            for (existing, more) in existing.iter_mut().zip(more) {
                merge(existing, more);
            }
        }
        _ => {}
    }
}

/// What the tests of one-pass types share: running a query, and selecting every field of a type.
#[cfg(test)]
pub mod testing {
    use async_graphql::{EmptyMutation, EmptySubscription, ObjectType, Request, Schema, Variables};
    use serde_json::{Value as JsonValue, json};

    pub async fn run<Q: ObjectType + 'static>(
        schema: &Schema<Q, EmptyMutation, EmptySubscription>,
        query: &str,
        vars: JsonValue,
    ) -> JsonValue {
        let response = schema.execute(Request::new(query).variables(Variables::from_json(vars))).await;
        assert!(response.errors.is_empty(), "{query}: {:?}", response.errors);
        response.data.into_json().unwrap()
    }

    /// Runs each `(variables, selection, fragments)` under the root fields `declared` and `resolved` (with their
    /// arguments, named by the response keys `declared` and `resolved`), asserts the two answers are the same, and
    /// returns the resolved ones.
    pub async fn assert_same_answers<Q: ObjectType + 'static>(
        schema: &Schema<Q, EmptyMutation, EmptySubscription>,
        (declared, resolved): (&str, &str),
        shapes: &[(&str, String, &str)],
        vars: JsonValue,
    ) -> Vec<JsonValue> {
        let mut answers = Vec::new();
        for (variables, shape, fragments) in shapes {
            let query = format!(
                "query{variables} {{ declared: {declared} {{ {shape} }} resolved: {resolved} {{ {shape} }} }} {fragments}"
            );
            let mut data = run(schema, &query, vars.clone()).await;
            assert_eq!(data["resolved"], data["declared"], "{shape} ({vars})");
            answers.push(data["resolved"].take());
        }
        answers
    }

    /// Every field of `type_name` but `skip`, and of the objects under it, read from the schema itself, so a field
    /// added to the declaration and not to the one-pass resolution fails.
    pub async fn every_field<Q: ObjectType + 'static>(
        schema: &Schema<Q, EmptyMutation, EmptySubscription>,
        type_name: &str,
        skip: &[&str],
    ) -> String {
        let fields = |name: &str| {
            format!(
                r#"{{ __type(name: "{name}") {{ fields {{ name type {{ name ofType {{ name kind }} kind }} }} }} }}"#
            )
        };
        let mut selection = Vec::new();
        for field in run(schema, &fields(type_name), json!({})).await["__type"]["fields"].as_array().unwrap() {
            let ty = &field["type"];
            let (kind, name) = match ty["kind"].as_str() {
                Some("NON_NULL") => (&ty["ofType"]["kind"], &ty["ofType"]["name"]),
                _ => (&ty["kind"], &ty["name"]),
            };
            let mut item = field["name"].as_str().unwrap().to_owned();
            if skip.contains(&item.as_str()) {
                continue;
            }
            if kind == "OBJECT" {
                let inner = run(schema, &fields(name.as_str().unwrap()), json!({})).await;
                let names: Vec<&str> =
                    inner["__type"]["fields"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
                item = format!("{item} {{ {} }}", names.join(" "));
            }
            selection.push(item);
        }
        selection.join(" ")
    }
}
