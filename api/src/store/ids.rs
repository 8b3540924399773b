//! Ids of sessions, traces and events: opaque text a client chooses, or UUIDv7 text the server generates.
//!
//! The rule: 1 to 128 Unicode characters (code points), none of them a control character (general category Cc:
//! U+0000–U+001F and U+007F–U+009F). Anything else is stored and returned exactly as sent; ids compare byte by byte.

use super::{StoreError, StoreResult};

/// The most characters an id may have.
pub const MAX_ID_CHARS: usize = 128;

/// Why `id` breaks the rule, or `None` when it keeps it.
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("must not be empty".into());
    }
    let chars = id.chars().count();
    if chars > MAX_ID_CHARS {
        return Some(format!("has {chars} characters; an id has at most {MAX_ID_CHARS}"));
    }
    if let Some((i, c)) = id.chars().enumerate().find(|(_, c)| c.is_control()) {
        return Some(format!("contains the control character U+{:04X} at position {i}; ids may not", c as u32));
    }
    None
}

/// BAD_USER_INPUT naming `field` when `id` breaks the rule; `field` is only built when there is an error.
pub fn check_id(field: impl FnOnce() -> String, id: &str) -> StoreResult<()> {
    match id_problem(id) {
        Some(why) => Err(StoreError::BadInput(format!("{} {why}", field()))),
        None => Ok(()),
    }
}

/// A new id: UUIDv7 text, so generated ids sort by creation time (millisecond first, then a counter within the
/// process) as text too.
pub fn generate_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        assert!(id_problem("fts_mf3k2q1a_4h8z0c9xk2lq").is_none());
        assert!(id_problem(&"é".repeat(128)).is_none());
        assert!(id_problem("with space and ünïcödé ✓").is_none());
        assert!(id_problem("").is_some());
        assert!(id_problem(&"a".repeat(129)).is_some());
        for c in ['\0', '\n', '\t', '\u{1f}', '\u{7f}', '\u{85}', '\u{9f}'] {
            assert!(id_problem(&format!("a{c}b")).is_some(), "{c:?}");
        }
        assert!(id_problem("a\u{a0}b").is_none());
    }

    #[test]
    fn generated_ids_sort_by_time() {
        let ids: Vec<String> = (0..1000).map(|_| generate_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
        assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok_and(|u| u.get_version_num() == 7)));
    }
}
