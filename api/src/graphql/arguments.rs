//! Checks on every argument value of an operation, with variables filled in, before anything runs, so that no client
//! value can reach the database in a form it refuses:
//! - no string, JSON string or JSON key holds a NUL character (PostgreSQL stores none in text or JSON);
//! - no string is longer than its limit: max_name_chars in queries and subscriptions (their strings are compared
//!   with stored names and ids, which are no longer), max_text_chars in mutations (which check each field at ingest);
//! - every `DateTime` lies in the range PostgreSQL stores (from 4713 BC).
//!
//! Each refusal names the argument, e.g. `sessions(filter.search)`. Argument types come from the schema's SDL.

use std::collections::HashMap;
use std::fmt;

use async_graphql::parser::types::{
    BaseType, ExecutableDocument, OperationType, Selection, SelectionSet, Type, TypeKind, TypeSystemDefinition,
};
use async_graphql::{ServerError, Value, Variables};
use chrono::{DateTime, Utc};

use crate::error::{BAD_USER_INPUT, LIMIT_EXCEEDED, coded};
use crate::limits::Limits;

/// What the checks need of the schema: the fields of output types with their result and argument types, and the
/// fields of input types. Types are their base names (lists unwrapped: a list's items have the list's type).
#[derive(Default)]
pub struct Shapes {
    fields: HashMap<(String, String), (String, HashMap<String, String>)>,
    inputs: HashMap<String, HashMap<String, String>>,
}

fn base(ty: &Type) -> String {
    match &ty.base {
        BaseType::Named(name) => name.to_string(),
        BaseType::List(inner) => base(inner),
    }
}

impl Shapes {
    pub fn of_sdl(sdl: &str) -> Shapes {
        let mut shapes = Shapes::default();
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else { return shapes };
        for definition in document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else { continue };
            let name = ty.node.name.node.to_string();
            match ty.node.kind {
                TypeKind::Object(object) => {
                    for field in object.fields {
                        let args = field.node.arguments.iter();
                        let args = args.map(|a| (a.node.name.node.to_string(), base(&a.node.ty.node))).collect();
                        let key = (name.clone(), field.node.name.node.to_string());
                        shapes.fields.insert(key, (base(&field.node.ty.node), args));
                    }
                }
                TypeKind::InputObject(input) => {
                    let fields = input.fields.iter();
                    let fields = fields.map(|f| (f.node.name.node.to_string(), base(&f.node.ty.node))).collect();
                    shapes.inputs.insert(name, fields);
                }
                _ => {}
            }
        }
        shapes
    }
}

pub fn check(
    document: &ExecutableDocument,
    variables: &Variables,
    limits: &Limits,
    shapes: &Shapes,
) -> Result<(), ServerError> {
    for (_, operation) in document.operations.iter() {
        let (root, max, limit) = match operation.node.ty {
            OperationType::Query => ("Query", limits.max_name_chars, "max_name_chars"),
            OperationType::Subscription => ("Subscription", limits.max_name_chars, "max_name_chars"),
            OperationType::Mutation => ("Mutation", limits.max_text_chars, "max_text_chars"),
        };
        let rule = Rule { variables, shapes, max, limit };
        rule.selections(Some(root), &operation.node.selection_set.node)?;
        for fragment in document.fragments.values() {
            let on = fragment.node.type_condition.node.on.node.as_str();
            rule.selections(Some(on), &fragment.node.selection_set.node)?;
        }
    }
    Ok(())
}

/// Where a value sits in an operation's arguments, e.g. `recordTraces(traces)[3].source.nodeId`. Built as the checks
/// descend and written out only in a refusal: a batch holds thousands of values, and nearly every request passes.
enum Path<'a> {
    Argument(&'a str, &'a str),
    Index(&'a Path<'a>, usize),
    Key(&'a Path<'a>, &'a str),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Argument(field, argument) => write!(f, "{field}({argument})"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
        }
    }
}

struct Rule<'a> {
    variables: &'a Variables,
    shapes: &'a Shapes,
    max: usize,
    limit: &'static str,
}

impl Rule<'_> {
    fn selections(&self, parent: Option<&str>, set: &SelectionSet) -> Result<(), ServerError> {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let name = field.name.node.as_str();
                    let shape = parent.and_then(|p| self.shapes.fields.get(&(p.to_owned(), name.to_owned())));
                    for (arg, value) in &field.arguments {
                        let path = Path::Argument(name, arg.node.as_str());
                        let ty = shape.and_then(|(_, args)| args.get(arg.node.as_str())).map(String::as_str);
                        // A variable is checked where it is, not copied (it may be a batch of 10 000 traces); one
                        // that is not given is the engine's to report.
                        if let async_graphql_value::Value::Variable(var) = &value.node {
                            if let Some(value) = self.variables.get(var) {
                                self.value(&path, ty, value)?;
                            }
                        } else if let Ok(value) =
                            value.node.clone().into_const_with(|v| self.variables.get(&v).cloned().ok_or(()))
                        {
                            self.value(&path, ty, &value)?;
                        }
                    }
                    self.selections(shape.map(|(ty, _)| ty.as_str()), &field.selection_set.node)?;
                }
                Selection::InlineFragment(fragment) => {
                    let on = fragment.node.type_condition.as_ref().map(|c| c.node.on.node.as_str()).or(parent);
                    self.selections(on, &fragment.node.selection_set.node)?;
                }
                Selection::FragmentSpread(_) => {}
            }
        }
        Ok(())
    }

    /// A value of type `ty` (`None` when unknown: then every string in it is checked as text).
    fn value(&self, path: &Path, ty: Option<&str>, value: &Value) -> Result<(), ServerError> {
        match (ty, value) {
            (Some("JSON"), value) => json(path, value),
            (Some("DateTime"), Value::String(text)) => time(path, text),
            (_, Value::String(text)) => self.text(path, text),
            (_, Value::List(items)) => {
                items.iter().enumerate().try_for_each(|(i, item)| self.value(&Path::Index(path, i), ty, item))
            }
            (_, Value::Object(fields)) => {
                let input = ty.and_then(|t| self.shapes.inputs.get(t));
                fields.iter().try_for_each(|(key, item)| {
                    let path = Path::Key(path, key.as_str());
                    let ty = input.and_then(|fields| fields.get(key.as_str())).map(String::as_str);
                    nul_free(&path, key.as_str())?;
                    self.value(&path, ty, item)
                })
            }
            _ => Ok(()),
        }
    }

    fn text(&self, path: &Path, text: &str) -> Result<(), ServerError> {
        nul_free(path, text)?;
        if text.len() > self.max && text.chars().count() > self.max {
            let message = format!("{path} is longer than {} characters ({})", self.max, self.limit);
            return Err(refuse(LIMIT_EXCEEDED, message));
        }
        Ok(())
    }
}

/// JSON values are bounded in size at ingest (max_payload_bytes); here only their characters are checked.
fn json(path: &Path, value: &Value) -> Result<(), ServerError> {
    match value {
        Value::String(text) => nul_free(path, text),
        Value::List(items) => items.iter().enumerate().try_for_each(|(i, item)| json(&Path::Index(path, i), item)),
        Value::Object(fields) => fields.iter().try_for_each(|(key, item)| {
            let path = Path::Key(path, key.as_str());
            nul_free(&path, key.as_str())?;
            json(&path, item)
        }),
        _ => Ok(()),
    }
}

fn nul_free(path: &Path, text: &str) -> Result<(), ServerError> {
    if text.contains('\0') {
        let message = format!("{path} contains a NUL character (\\u0000), which cannot be stored");
        return Err(refuse(BAD_USER_INPUT, message.replace('\0', "\\u0000")));
    }
    Ok(())
}

/// A time chrono reads but PostgreSQL cannot store. One that does not parse is the engine's to report.
fn time(path: &Path, text: &str) -> Result<(), ServerError> {
    match text.parse::<DateTime<Utc>>() {
        Ok(at) if !crate::domain::storable_time(&at) => Err(refuse(
            BAD_USER_INPUT,
            format!("{path} is outside the range of times that can be stored (4713 BC to 294276 AD)"),
        )),
        _ => Ok(()),
    }
}

fn refuse(code: &'static str, message: String) -> ServerError {
    coded(code, message).into_server_error(async_graphql::Pos::default())
}
