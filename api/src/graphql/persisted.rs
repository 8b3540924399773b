//! Persisted queries: a request may name its document by the SHA-256 of its text (`extensions.persistedQuery`,
//! Apollo's protocol) instead of sending it.
//!
//! - Automatic persisted queries: a hash this server does not know answers `PERSISTED_QUERY_NOT_FOUND` (message
//!   `PersistedQueryNotFound`, which clients match on); the client then sends the document with its hash, which is
//!   checked and remembered in a bounded cache (most recently used kept).
//! - Trusted documents (`FLOWTRACE_TRUSTED_DOCUMENTS`): only the documents of a manifest run, by hash or by identical
//!   text; any other answers `PERSISTED_QUERY_NOT_IN_LIST`, and nothing is learned from clients.
//!
//! The gate resolves every request here before parsing it, over HTTP and WebSocket alike.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use async_graphql::{Request, ServerError, Value};
use hashlink::LruCache;
use sha2::{Digest, Sha256};

use crate::error::{
    BAD_USER_INPUT, PERSISTED_QUERY_NOT_FOUND, PERSISTED_QUERY_NOT_IN_LIST, PERSISTED_QUERY_NOT_SUPPORTED, coded,
};

/// Most bytes of document text the automatic cache holds, whatever its entry count.
const CACHE_BYTES: usize = 32 * 1024 * 1024;

/// The documents a request may name by hash.
pub struct Documents {
    /// Automatic persisted queries; `None` when switched off or when only trusted documents run.
    learned: Option<Mutex<Learned>>,
    trusted: Option<Trusted>,
}

struct Learned {
    cache: LruCache<String, Arc<str>>,
    bytes: usize,
}

struct Trusted {
    by_hash: HashMap<String, Arc<str>>,
    texts: HashSet<Arc<str>>,
}

/// Marks a request already resolved, so the gate's later passes do not hash it again.
struct Resolved;

impl std::fmt::Debug for Documents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Documents")
            .field("automatic", &self.learned.is_some())
            .field("trusted", &self.trusted.as_ref().map(|t| t.by_hash.len()))
            .finish()
    }
}

impl Default for Documents {
    fn default() -> Self {
        Documents::automatic(1000)
    }
}

impl Documents {
    /// Automatic persisted queries with a cache of `entries` documents (none when 0).
    pub fn automatic(entries: usize) -> Documents {
        let learned = (entries > 0).then(|| Mutex::new(Learned { cache: LruCache::new(entries), bytes: 0 }));
        Documents { learned, trusted: None }
    }

    /// Only the documents of the manifest at `path` (see `parse_manifest`).
    pub fn trusted_from(path: &Path) -> anyhow::Result<Documents> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let trusted = parse_manifest(&text).with_context(|| format!("trusted documents in {}", path.display()))?;
        Ok(Documents { learned: None, trusted: Some(trusted) })
    }

    /// Puts the document a request names by hash into `request.query`, and holds it to the rules: a hash that
    /// matches its text, and with trusted documents, a listed document. `may_register`: whether a document sent with
    /// its hash may be remembered (callers whose credentials were refused do not fill the cache).
    pub fn resolve(&self, request: &mut Request, may_register: bool) -> Result<(), ServerError> {
        if request.data.contains_key(&std::any::TypeId::of::<Resolved>()) {
            return Ok(());
        }
        let hash = match request.extensions.0.get("persistedQuery") {
            Some(persisted) => Some(requested_hash(persisted)?),
            None => None,
        };
        match (hash, &self.trusted) {
            (Some(hash), trusted) if request.query.is_empty() => {
                let found = match (trusted, &self.learned) {
                    (Some(trusted), _) => trusted.by_hash.get(&hash).cloned(),
                    (None, Some(learned)) => lock(learned).cache.get(&hash).cloned(),
                    (None, None) => {
                        // Apollo's clients then stop sending hashes alone.
                        return Err(error(PERSISTED_QUERY_NOT_SUPPORTED, "PersistedQueryNotSupported".into()));
                    }
                };
                let Some(document) = found else {
                    return Err(error(PERSISTED_QUERY_NOT_FOUND, "PersistedQueryNotFound".into()));
                };
                request.query = document.to_string();
            }
            (hash, Some(trusted)) => {
                if hash.is_some_and(|hash| hash != sha256_hex(&request.query)) {
                    return Err(mismatch());
                }
                if !trusted.texts.contains(request.query.as_str()) {
                    return Err(error(
                        PERSISTED_QUERY_NOT_IN_LIST,
                        "this server runs only its trusted documents (FLOWTRACE_TRUSTED_DOCUMENTS), and this document \
                         is not one of them"
                            .into(),
                    ));
                }
            }
            (Some(hash), None) => {
                if hash != sha256_hex(&request.query) {
                    return Err(mismatch());
                }
                if let Some(learned) = self.learned.as_ref().filter(|_| may_register) {
                    lock(learned).insert(hash, &request.query);
                }
            }
            (None, None) => {}
        }
        request.data.insert(Resolved);
        Ok(())
    }
}

impl Learned {
    fn insert(&mut self, hash: String, query: &str) {
        if query.len() > CACHE_BYTES || self.cache.contains_key(&hash) {
            return;
        }
        // Evicted here rather than by the cache itself, so the byte count follows.
        while self.cache.len() >= self.cache.capacity() || self.bytes + query.len() > CACHE_BYTES {
            match self.cache.remove_lru() {
                Some((_, evicted)) => self.bytes -= evicted.len(),
                None => break,
            }
        }
        self.bytes += query.len();
        self.cache.insert(hash, Arc::from(query));
    }
}

fn lock(learned: &Mutex<Learned>) -> std::sync::MutexGuard<'_, Learned> {
    learned.lock().unwrap_or_else(|e| e.into_inner())
}

fn error(code: &'static str, message: String) -> ServerError {
    coded(code, message).into_server_error(async_graphql::Pos::default())
}

fn mismatch() -> ServerError {
    error(BAD_USER_INPUT, "extensions.persistedQuery.sha256Hash is not the SHA-256 of the query sent with it".into())
}

/// `{"version": 1, "sha256Hash": "<64 hex>"}`, the hash in lower case.
fn requested_hash(persisted: &Value) -> Result<String, ServerError> {
    let bad = |what: &str| error(BAD_USER_INPUT, format!("extensions.persistedQuery {what}"));
    let Value::Object(fields) = persisted else { return Err(bad("must be an object")) };
    match fields.get("version") {
        Some(Value::Number(n)) if n.as_u64() == Some(1) => {}
        _ => return Err(bad("must have version 1 (the only version of the protocol)")),
    }
    match fields.get("sha256Hash") {
        Some(Value::String(hash)) if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Ok(hash.to_ascii_lowercase())
        }
        _ => Err(bad("must have sha256Hash, the SHA-256 of the document as 64 hex digits")),
    }
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A manifest in either format: a JSON object of hash → document, or Apollo's persisted query manifest
/// (`{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [{"id", "body", …}]}`). Keys and ids
/// are what clients send as `sha256Hash`; documents also run when sent as identical text.
fn parse_manifest(text: &str) -> anyhow::Result<Trusted> {
    let json: serde_json::Value = serde_json::from_str(text).context("not JSON")?;
    let serde_json::Value::Object(object) = json else {
        anyhow::bail!("expected a JSON object of hash → document, or an Apollo persisted query manifest");
    };
    let mut entries = Vec::new();
    if object.get("format").and_then(|f| f.as_str()) == Some("apollo-persisted-query-manifest") {
        let operations = object.get("operations").and_then(|o| o.as_array()).context("no `operations` array")?;
        for (i, operation) in operations.iter().enumerate() {
            let id = operation.get("id").and_then(|v| v.as_str()).with_context(|| format!("operation {i}: no id"))?;
            let body =
                operation.get("body").and_then(|v| v.as_str()).with_context(|| format!("operation {i}: no body"))?;
            entries.push((id.to_owned(), body.to_owned()));
        }
    } else {
        for (hash, document) in object {
            let serde_json::Value::String(document) = document else {
                anyhow::bail!("the document of {hash} is not a string");
            };
            entries.push((hash, document));
        }
    }
    let mut trusted = Trusted { by_hash: HashMap::new(), texts: HashSet::new() };
    for (hash, document) in entries {
        let document: Arc<str> = Arc::from(document);
        trusted.by_hash.insert(hash.to_ascii_lowercase(), document.clone());
        trusted.texts.insert(document);
    }
    Ok(trusted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn persisted(query: &str, hash: &str) -> Request {
        let mut request = Request::new(query);
        let value = serde_json::json!({ "version": 1, "sha256Hash": hash });
        request.extensions.0.insert("persistedQuery".into(), Value::from_json(value).expect("value"));
        request
    }

    fn code(error: &ServerError) -> String {
        error.extensions.as_ref().and_then(|e| e.get("code")).map(|c| c.to_string()).unwrap_or_default()
    }

    #[test]
    fn both_manifest_formats_load() {
        let plain = parse_manifest(r#"{"ABC": "{ a }"}"#).expect("hash → document");
        assert_eq!(plain.by_hash.get("abc").map(|d| &**d), Some("{ a }"));
        let apollo = r#"{"format":"apollo-persisted-query-manifest","version":1,
            "operations":[{"id":"abc","name":"A","type":"query","body":"{ a }"}]}"#;
        assert!(parse_manifest(apollo).expect("Apollo's").texts.contains("{ a }"));
        assert!(parse_manifest("[]").is_err());
        assert!(parse_manifest(r#"{"abc": 1}"#).is_err());
    }

    #[test]
    fn the_cache_is_bounded_and_keeps_the_recently_used() {
        let documents = Documents::automatic(2);
        for query in ["{ a }", "{ b }", "{ c }"] {
            documents.resolve(&mut persisted(query, &sha256_hex(query)), true).expect("registered");
        }
        let miss = documents.resolve(&mut persisted("", &sha256_hex("{ a }")), true).expect_err("evicted");
        assert_eq!(code(&miss), format!("\"{PERSISTED_QUERY_NOT_FOUND}\""));
        let mut hit = persisted("", &sha256_hex("{ c }"));
        documents.resolve(&mut hit, true).expect("kept");
        assert_eq!(hit.query, "{ c }");
    }
}
