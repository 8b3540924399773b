//! Relay arguments to a store `Page`, and store pages to connections. Page sizes are capped here, once.

use async_graphql::connection::{Connection, Edge, EmptyFields};
use async_graphql::{InputType, ObjectType, OutputType, SelectionField};

use crate::error::{bad_input, limit_exceeded};
use crate::limits::Limits;
use crate::store::cursor::{CursorKey, Page, PageOf};

/// `first`/`after`/`last`/`before` as given by the client.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PageArgs {
    pub first: Option<i32>,
    pub after: Option<String>,
    pub last: Option<i32>,
    pub before: Option<String>,
}

impl PageArgs {
    /// The arguments of a connection field ahead in the query, when it takes these four and no directive can skip it;
    /// None when its arguments do not parse (its resolver then reports them).
    pub fn of_selection(field: &SelectionField<'_>) -> Option<PageArgs> {
        if !field.directives().ok()?.is_empty() {
            return None;
        }
        let mut args = PageArgs::default();
        for (name, value) in field.arguments().ok()? {
            let value = Some(value);
            match name.as_str() {
                "first" => args.first = InputType::parse(value).ok()?,
                "after" => args.after = InputType::parse(value).ok()?,
                "last" => args.last = InputType::parse(value).ok()?,
                "before" => args.before = InputType::parse(value).ok()?,
                _ => return None,
            }
        }
        Some(args)
    }

    pub fn page<K: CursorKey>(&self, limits: &Limits) -> async_graphql::Result<Page<K>> {
        let size = match (self.first, self.last) {
            (Some(_), Some(_)) => return Err(bad_input("give first or last, not both")),
            (Some(n), None) | (None, Some(n)) => n,
            (None, None) => limits.default_page_size as i32,
        };
        if size < 0 {
            return Err(bad_input(format!("first/last must be >= 0, got {size}")));
        }
        if size as usize > limits.max_page_size {
            return Err(limit_exceeded(format!(
                "first/last is {size}; the largest page (max_page_size) is {}",
                limits.max_page_size
            )));
        }
        let decode = |c: &Option<String>| c.as_deref().map(K::decode).transpose().map_err(|e| bad_input(e.to_string()));
        Ok(Page {
            after: decode(&self.after)?,
            before: decode(&self.before)?,
            limit: size as u64,
            from_end: self.last.is_some(),
        })
    }
}

/// Query complexity of a connection field: its selection once per row of the page it asks for, and its query. (The
/// selection includes `totalCount`, whose query is counted in the connection's, not once per row.)
pub fn cost(first: Option<i32>, last: Option<i32>, child_complexity: usize) -> usize {
    let rows = first.or(last).unwrap_or(crate::limits::Limits::default().default_page_size as i32).max(1) as usize;
    rows.saturating_mul(child_complexity).saturating_add(super::QUERY_COST)
}

/// Builds a connection whose edges carry each row's cursor.
pub fn connection<Row, Node, Extra>(
    page: PageOf<Row>,
    key: impl Fn(&Row) -> String,
    node: impl Fn(Row) -> Node,
    extra: Extra,
) -> Connection<String, Node, Extra, EmptyFields>
where
    Node: OutputType,
    Extra: ObjectType,
{
    let mut conn = Connection::with_additional_fields(page.has_previous, page.has_next, extra);
    conn.edges.extend(page.rows.into_iter().map(|row| Edge::new(key(&row), node(row))));
    conn
}
