//! Signing keys from a JWKS (Supabase's current keys: RS256, ES256), by key id, kept current without a restart.
//!
//! The set is read at start, again when a token names a key id it does not hold (a rotation: at most once per
//! `MIN_REFETCH`, so a stream of forged key ids cannot make the server hammer the JWKS), and every
//! `FLOWTRACE_JWKS_REFRESH_SECS` (so a withdrawn key stops working, and the subscriptions its tokens opened end). A
//! read that fails keeps the keys already held: a JWKS outage refuses only tokens whose key the server has never
//! seen.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::watch;

/// The least time between two reads of the set caused by unknown key ids.
pub const MIN_REFETCH: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub enum JwksSource {
    Url(String),
    File(PathBuf),
}

#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub algorithm: Algorithm,
}

type KeySet = Arc<HashMap<String, Key>>;

pub struct Jwks {
    source: JwksSource,
    http: reqwest::Client,
    /// The keys held; subscriptions watch it to end when the key that signed their token is withdrawn.
    keys: watch::Sender<KeySet>,
    /// When the set was last read because of an unknown key id; one such read at a time.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

/// The algorithm a key signs with: the one it declares, else the usual one for its type. Symmetric keys are never
/// taken from a JWKS (the HS256 secret is configured on its own), which also rules out using a public key as an
/// HMAC secret.
fn algorithm_of(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Algorithm> {
    let declared = match jwk.common.key_algorithm {
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(KeyAlgorithm::RS512) => Some(Algorithm::RS512),
        Some(KeyAlgorithm::PS256) => Some(Algorithm::PS256),
        Some(KeyAlgorithm::PS384) => Some(Algorithm::PS384),
        Some(KeyAlgorithm::PS512) => Some(Algorithm::PS512),
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
        Some(KeyAlgorithm::EdDSA) => Some(Algorithm::EdDSA),
        Some(_) => return None,
        None => None,
    };
    let inferred = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Some(Algorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => Some(Algorithm::ES256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P384 => Some(Algorithm::ES384),
        AlgorithmParameters::OctetKeyPair(_) => Some(Algorithm::EdDSA),
        _ => None,
    };
    let symmetric = matches!(jwk.algorithm, AlgorithmParameters::OctetKey(_));
    if symmetric { None } else { declared.or(inferred) }
}

/// The usable keys of a JWKS document: those with a key id and an asymmetric signing algorithm.
pub fn parse(document: &str) -> anyhow::Result<HashMap<String, Key>> {
    let set: JwkSet = serde_json::from_str(document).map_err(|e| anyhow::anyhow!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        let (Some(kid), Some(algorithm)) = (jwk.common.key_id.clone(), algorithm_of(jwk)) else { continue };
        if let Ok(key) = DecodingKey::from_jwk(jwk) {
            keys.insert(kid, Key { key, algorithm });
        }
    }
    Ok(keys)
}

impl Jwks {
    /// Reads the set once, then every `refresh`; a source that cannot be read now leaves the set empty until a later
    /// read succeeds.
    pub async fn start(source: JwksSource, refresh: Duration) -> anyhow::Result<Arc<Jwks>> {
        let http = reqwest::Client::builder().timeout(FETCH_TIMEOUT).build()?;
        let keys = watch::Sender::new(KeySet::default());
        let jwks = Arc::new(Jwks { source, http, keys, refetch: tokio::sync::Mutex::new(None) });
        if let JwksSource::File(path) = &jwks.source {
            // A file that cannot be read at start is a configuration mistake, not an outage.
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading FLOWTRACE_JWKS_FILE {}: {e}", path.display()))?;
            parse(&text)?;
        }
        jwks.reload().await;
        let every = Arc::downgrade(&jwks);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                let Some(jwks) = every.upgrade() else { break };
                jwks.reload().await;
            }
        });
        Ok(jwks)
    }

    async fn read(&self) -> anyhow::Result<HashMap<String, Key>> {
        let text = match &self.source {
            JwksSource::Url(url) => self.http.get(url).send().await?.error_for_status()?.text().await?,
            JwksSource::File(path) => tokio::fs::read_to_string(path).await?,
        };
        parse(&text)
    }

    /// Reads the set again; on failure keeps what it holds.
    async fn reload(&self) {
        match self.read().await {
            Ok(keys) => {
                self.keys.send_if_modified(|held| {
                    let changed = held.len() != keys.len() || keys.keys().any(|kid| !held.contains_key(kid));
                    *held = Arc::new(keys);
                    changed
                });
            }
            Err(err) => tracing::warn!(%err, source = ?self.source, "JWKS not read; keeping the keys held"),
        }
    }

    fn held(&self, kid: &str) -> Option<Key> {
        self.keys.borrow().get(kid).cloned()
    }

    /// Resolves once the set no longer holds `kid`.
    pub fn withdrawal(&self, kid: String) -> impl Future<Output = ()> + Send + 'static {
        let mut keys = self.keys.subscribe();
        async move {
            // An error means the set is gone with the server: nothing to end then.
            if keys.wait_for(|held| !held.contains_key(&kid)).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The key with this id, reading the set again first when it is not held and the last such read is old enough.
    pub async fn key(&self, kid: &str) -> Option<Key> {
        if let Some(key) = self.held(kid) {
            return Some(key);
        }
        let mut last = self.refetch.lock().await;
        // Another request may have read the set while this one waited.
        if let Some(key) = self.held(kid) {
            return Some(key);
        }
        if last.is_none_or(|at| at.elapsed() >= MIN_REFETCH) {
            *last = Some(Instant::now());
            self.reload().await;
        }
        self.held(kid)
    }
}
