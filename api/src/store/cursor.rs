//! Opaque keyset cursors and the one keyset-pagination routine every list uses.
//!
//! Traces and events are ordered by `(timestamp, seq)`, sessions by `(start_time, id)` newest first. A cursor is the
//! key of the row it points at, base64url-encoded with a kind tag so a session cursor is refused where a trace cursor
//! is expected. The same trace cursor serves the `traces` query and the `traces` subscription.

use super::ids::id_problem;
use super::{Sql, StoreError, StoreResult};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

/// Key of a trace or event row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeqKey {
    pub at: DateTime<Utc>,
    pub seq: i64,
}

/// Key of a session row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionKey {
    pub start_time: DateTime<Utc>,
    pub id: String,
}

pub trait CursorKey: Sized {
    const TAG: &'static str;
    fn body(&self) -> String;
    fn parse(body: &str) -> Option<Self>;
    /// Binds the two key values, returning their placeholders.
    fn bind(&self, sql: &mut Sql) -> (String, String);

    fn encode(&self) -> String {
        encode_tagged(Self::TAG, &self.body())
    }

    fn decode(cursor: &str) -> StoreResult<Self> {
        decode_tagged(Self::TAG, cursor, Self::parse)
    }
}

/// A cursor's text: `tag:body`, base64url-encoded.
pub fn encode_tagged(tag: &str, body: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{tag}:{body}"))
}

/// The value behind a cursor of this `tag`, or BAD_USER_INPUT for any other text.
pub fn decode_tagged<T>(tag: &str, cursor: &str, parse: impl FnOnce(&str) -> Option<T>) -> StoreResult<T> {
    let invalid = || StoreError::BadInput(format!("invalid cursor '{cursor}': pass a cursor this API returned"));
    let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid())?;
    match raw.split_once(':') {
        Some((t, body)) if t == tag => parse(body).ok_or_else(invalid),
        _ => Err(invalid()),
    }
}

/// A forged cursor may hold a time PostgreSQL cannot store: invalid like any other it did not return.
fn parse_micros(text: &str) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_micros(text.parse().ok()?).filter(crate::domain::storable_time)
}

/// Trace cursors; events use their own tag so the two cannot be swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceKey(pub SeqKey);
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventKey(pub SeqKey);

macro_rules! seq_cursor {
    ($ty:ident, $tag:literal) => {
        impl CursorKey for $ty {
            const TAG: &'static str = $tag;
            fn body(&self) -> String {
                format!("{}:{}", self.0.at.timestamp_micros(), self.0.seq)
            }
            fn parse(body: &str) -> Option<Self> {
                let (at, seq) = body.split_once(':')?;
                Some($ty(SeqKey { at: parse_micros(at)?, seq: seq.parse().ok()? }))
            }
            fn bind(&self, sql: &mut Sql) -> (String, String) {
                (sql.bind(self.0.at), sql.bind(self.0.seq))
            }
        }
    };
}
seq_cursor!(TraceKey, "trace");
seq_cursor!(EventKey, "event");

impl CursorKey for SessionKey {
    const TAG: &'static str = "session";
    fn body(&self) -> String {
        format!("{}:{}", self.start_time.timestamp_micros(), self.id)
    }
    fn parse(body: &str) -> Option<Self> {
        // The time has no ':', the id may.
        let (at, id) = body.split_once(':')?;
        if id_problem(id).is_some() {
            return None;
        }
        Some(SessionKey { start_time: parse_micros(at)?, id: id.to_owned() })
    }
    fn bind(&self, sql: &mut Sql) -> (String, String) {
        (sql.bind(self.start_time), sql.bind(self.id.clone()))
    }
}

/// One page request: `limit` rows after/before the given keys, read from the end when `from_end` (`last`).
#[derive(Clone, Debug)]
pub struct Page<K> {
    pub after: Option<K>,
    pub before: Option<K>,
    pub limit: u64,
    pub from_end: bool,
}

#[derive(Clone, Debug)]
pub struct PageOf<T> {
    pub rows: Vec<T>,
    pub has_previous: bool,
    pub has_next: bool,
}

/// Appends the keyset conditions, order and limit for `columns` (two key columns, e.g. `timestamp, seq`) to a query
/// whose WHERE clause is already open. `newest_first` is the natural order of the list.
pub fn keyset<K: CursorKey>(sql: &mut Sql, columns: (&str, &str), page: &Page<K>, newest_first: bool) {
    let (a, b) = columns;
    let (after_op, before_op) = if newest_first { ("<", ">") } else { (">", "<") };
    for (key, op) in [(&page.after, after_op), (&page.before, before_op)] {
        if let Some(key) = key {
            let (pa, pb) = key.bind(sql);
            sql.push(&format!(" AND ({a}, {b}) {op} ({pa}, {pb})"));
        }
    }
    let descending = newest_first != page.from_end;
    let dir = if descending { "DESC" } else { "ASC" };
    // The limit is written into the text, not bound: with `LIMIT $n` the planner cannot see how few rows are wanted
    // and plans each chunk's scan for all of them. It is our number (the checked page size), and page sizes are few.
    sql.push(&format!(" ORDER BY {a} {dir}, {b} {dir} LIMIT {}", page.limit + 1));
}

/// Trims the extra row fetched to learn whether more exist, and restores natural order for `last` pages.
pub fn finish<T, K>(mut rows: Vec<T>, page: &Page<K>) -> PageOf<T> {
    let more = rows.len() as u64 > page.limit;
    rows.truncate(page.limit as usize);
    if page.from_end {
        rows.reverse();
        PageOf { rows, has_previous: more, has_next: page.before.is_some() }
    } else {
        PageOf { rows, has_previous: page.after.is_some(), has_next: more }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_other_kinds() {
        let key = TraceKey(SeqKey { at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(), seq: 42 });
        assert_eq!(TraceKey::decode(&key.encode()).unwrap(), key);
        assert!(EventKey::decode(&key.encode()).is_err());
        assert!(TraceKey::decode("not a cursor").is_err());
        let session = SessionKey { start_time: key.0.at, id: "fts_mf3k2q1a:with:colons".into() };
        assert_eq!(SessionKey::decode(&session.encode()).unwrap(), session);
        let forged = URL_SAFE_NO_PAD.encode("session:1700000000000000:a\0b");
        assert!(SessionKey::decode(&forged).is_err());
    }
}
