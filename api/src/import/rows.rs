//! Checks rows as they stream from the source's `COPY … TO STDOUT` to the target's `COPY … FROM STDIN`. Both ends
//! speak COPY's text format, so a row that passes goes on byte for byte; only the fields that need it are unescaped
//! to be checked. A refused row gets the reason, naming the source's column.

use std::borrow::Cow;

use super::source::{Column, Kind, Source};
use crate::limits::Limits;
use crate::store::ids::id_problem;
use crate::store::ingest::json_depth;

/// A field of a COPY text row: `None` for NULL (`\N`), else its raw (escaped) bytes.
pub fn fields(line: &[u8]) -> impl Iterator<Item = Option<&[u8]>> {
    line.split(|&b| b == b'\t').map(|f| if f == b"\\N" { None } else { Some(f) })
}

/// The value of a raw field (COPY's backslash escapes undone).
pub fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.contains(&b'\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        i += 1;
        if b != b'\\' || i == raw.len() {
            out.push(b);
            continue;
        }
        let e = raw[i];
        i += 1;
        match e {
            b'b' => out.push(8),
            b'f' => out.push(12),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(11),
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(d @ b'0'..=b'7') => {
                            v = v * 8 + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                out.push(v as u8);
            }
            other => out.push(other),
        }
    }
    Cow::Owned(out)
}

/// A raw id as text for the list of skipped rows, control characters escaped (`\u{1}`) so the list stays readable.
pub fn display(raw: Option<&[u8]>) -> String {
    let Some(raw) = raw else { return "(no id)".into() };
    let text = String::from_utf8_lossy(&unescape(raw)).into_owned();
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// Checks the rows of one table.
pub struct RowCheck<'a> {
    pub limits: &'a Limits,
    pub source: &'a Source,
    pub columns: &'static [Column],
}

impl RowCheck<'_> {
    /// `Ok` when the row keeps our rules, else why not.
    pub fn check(&self, line: &[u8]) -> Result<(), String> {
        let count = fields(line).count();
        if count != self.columns.len() {
            return Err(format!("has {count} fields where {} were read", self.columns.len()));
        }
        for (raw, c) in fields(line).zip(self.columns) {
            self.field(c, raw).map_err(|why| format!("{} {why}", self.source.source_name(c)))?;
        }
        Ok(())
    }

    fn field(&self, c: &Column, raw: Option<&[u8]>) -> Result<(), String> {
        let Some(raw) = raw else {
            return if c.kind.required() { Err("is missing".into()) } else { Ok(()) };
        };
        let bytes = unescape(raw);
        let text = std::str::from_utf8(&bytes).map_err(|_| "is not valid UTF-8".to_owned())?;
        if c.kind != Kind::Id && c.kind != Kind::OptId && text.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        let limits = self.limits;
        match c.kind {
            Kind::Id | Kind::OptId => id_problem(text).map_or(Ok(()), Err),
            Kind::Name | Kind::OptName => {
                if text.chars().count() > limits.max_name_chars {
                    Err(format!("is longer than {} characters (max_name_chars)", limits.max_name_chars))
                } else if c.kind == Kind::Name && text.trim().is_empty() {
                    Err("is blank".into())
                } else {
                    Ok(())
                }
            }
            Kind::Text if text.chars().count() > limits.max_text_chars => {
                Err(format!("is longer than {} characters (max_text_chars)", limits.max_text_chars))
            }
            Kind::Text => Ok(()),
            Kind::Time | Kind::OptTime => check_time(text),
            Kind::Status(allowed) if allowed.contains(&text) => Ok(()),
            Kind::Status(allowed) => {
                Err(format!("is {:?}, not one of {}", text.to_lowercase(), allowed.join(", ").to_lowercase()))
            }
            Kind::Json => check_json(limits, text),
            Kind::Duration => match text.parse::<f64>() {
                Ok(d) if d.is_finite() && d >= 0.0 => Ok(()),
                _ => Err(format!("is {text}, not a finite number of milliseconds >= 0")),
            },
            Kind::Count => match text.parse::<i32>() {
                Ok(n) if n >= 0 => Ok(()),
                _ => Err(format!("is {text}, not a count from 0 to {}", i32::MAX)),
            },
        }
    }
}

/// Times arrive as ISO text in UTC (the source session is set so); ours lie in 2000–2100 (`ingest::check_time`).
fn check_time(text: &str) -> Result<(), String> {
    let year = text.get(..4).filter(|_| text.as_bytes().get(4) == Some(&b'-')).and_then(|y| y.parse::<i32>().ok());
    match year {
        Some(y) if (2000..2100).contains(&y) && !text.ends_with("BC") => Ok(()),
        _ => Err(format!("is {text}, outside the accepted range 2000-01-01..2100-01-01")),
    }
}

fn check_json(limits: &Limits, text: &str) -> Result<(), String> {
    if text.len() > limits.max_payload_bytes {
        return Err(format!(
            "is {} bytes of JSON; the limit (max_payload_bytes) is {}",
            text.len(),
            limits.max_payload_bytes
        ));
    }
    // Parsing without building values is what makes checking every payload affordable; the few texts that need more
    // (an escaped NUL, which PostgreSQL's jsonb refuses, or nesting near the limit) are parsed whole.
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| format!("is not valid JSON ({e})"))?;
    let nesting = container_depth(text);
    let near_limit = nesting >= limits.max_json_depth;
    if text.contains("\\u0000") || near_limit {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("is not valid JSON ({e})"))?;
        if has_nul(&value) {
            return Err("contains a NUL character (\\u0000), which PostgreSQL's jsonb cannot store".into());
        }
        if json_depth(&value) > limits.max_json_depth {
            return Err(format!("nests deeper than {} levels (max_json_depth)", limits.max_json_depth));
        }
    }
    Ok(())
}

/// How deep arrays and objects nest (a scalar inside adds at most one level more).
fn container_depth(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn has_nul(value: &serde_json::Value) -> bool {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            serde_json::Value::String(s) if s.contains('\0') => return true,
            serde_json::Value::Array(items) => stack.extend(items),
            serde_json::Value::Object(map) => {
                if map.keys().any(|k| k.contains('\0')) {
                    return true;
                }
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_copy_text() {
        assert_eq!(&*unescape(b"plain"), b"plain");
        assert_eq!(&*unescape(b"a\\tb\\nc\\\\d"), b"a\tb\nc\\d");
        assert_eq!(&*unescape(b"\\001x"), b"\x01x");
        let row: Vec<Option<&[u8]>> = fields(b"a\t\\N\tc").collect();
        assert_eq!(row, vec![Some(&b"a"[..]), None, Some(&b"c"[..])]);
    }

    #[test]
    fn json_rules() {
        let limits = Limits { max_json_depth: 3, ..Limits::default() };
        assert!(check_json(&limits, r#"{"a":[1,2]}"#).is_ok());
        assert!(check_json(&limits, r#"{"a":"\\u0000 is text"}"#).is_ok());
        assert!(check_json(&limits, r#"{"a":"\u0000"}"#).is_err());
        assert!(check_json(&limits, "{not json").is_err());
        assert!(check_json(&limits, r#"{"a":{"b":{"c":1}}}"#).is_err());
        assert!(check_json(&limits, r#"{"a":{"b":1}}"#).is_ok());
        assert!(check_json(&limits, "1e400").is_ok(), "numbers beyond f64 are valid JSON (jsonb keeps them)");
    }

    #[test]
    fn time_rules() {
        assert!(check_time("2026-12-02 18:36:00.5+00").is_ok());
        assert!(check_time("1999-12-31 23:59:59+00").is_err());
        assert!(check_time("infinity").is_err());
        assert!(check_time("0044-03-15 00:00:00+00 BC").is_err());
    }
}
