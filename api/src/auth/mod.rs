//! Who is calling: a Supabase-compatible JWT (`role` claim), signed with the HS256 secret or with a key of a JWKS
//! (RS256, ES256: `jwks`), or a static API key, from the `Authorization` header over HTTP or the `connection_init`
//! payload over WebSocket.
//!
//! `service_role` tokens and write keys may read and write; `authenticated` tokens and read keys may read. An
//! `authenticated` token reads only its own sessions (`userId` = its `sub`) and the workflows its claim grants; a
//! read key may be limited to workflows (`store::scope`). With no auth configured every caller may do everything,
//! which is why the server then refuses non-loopback binds.

mod jwks;

use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

pub use jwks::{Jwks, JwksSource};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::scope::Scope;

#[derive(Args, Clone, Debug)]
pub struct AuthArgs {
    /// HS256 secret that signs accepted JWTs (e.g. the Supabase JWT secret).
    #[arg(long, env = "FLOWTRACE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// URL of a JWKS whose keys sign accepted JWTs (RS256, ES256; e.g. Supabase's
    /// `https://<project>.supabase.co/auth/v1/.well-known/jwks.json`).
    #[arg(long, env = "FLOWTRACE_JWKS_URL", conflicts_with = "jwks_file")]
    pub jwks_url: Option<String>,
    /// A JWKS file instead of a URL, read again as the URL would be.
    #[arg(long, env = "FLOWTRACE_JWKS_FILE")]
    pub jwks_file: Option<PathBuf>,
    /// Seconds between reads of the JWKS: a key withdrawn from it stops working, and the subscriptions its tokens
    /// opened end, within this time.
    #[arg(long, env = "FLOWTRACE_JWKS_REFRESH_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub jwks_refresh_secs: u64,
    /// Accept only JWTs with this `iss`.
    #[arg(long, env = "FLOWTRACE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Accept only JWTs with this `aud` (Supabase's user tokens carry `authenticated`).
    #[arg(long, env = "FLOWTRACE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// API keys as `read:<sha256-hex>`, `reveal:<sha256-hex>` (reads, payloads included) or `write:<sha256-hex>`,
    /// comma-separated. A read or reveal key may be limited to workflows: `read:<sha256-hex>:<workflow>;<workflow>`.
    /// Hash a key with `flowtrace hash-api-key <key>`.
    #[arg(long, env = "FLOWTRACE_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Claim (a dotted path into the JWT) that, when `true`, lets an `authenticated` token see trace payloads and
    /// error stacks; `service_role` tokens and write keys always see them.
    #[arg(long, env = "FLOWTRACE_REVEAL_CLAIM", default_value = "app_metadata.flowtrace_reveal")]
    pub reveal_claim: String,
    /// Claim (a dotted path into the JWT) listing workflow ids an `authenticated` token sees whole; without it the
    /// token sees only the sessions whose `userId` is its `sub`.
    #[arg(long, env = "FLOWTRACE_WORKFLOWS_CLAIM", default_value = "app_metadata.workflows")]
    pub workflows_claim: String,
    /// Serve on a non-loopback address without auth.
    #[arg(long, env = "FLOWTRACE_INSECURE")]
    pub insecure: bool,
}

impl Default for AuthArgs {
    fn default() -> Self {
        AuthArgs {
            jwt_secret: None,
            jwks_url: None,
            jwks_file: None,
            jwks_refresh_secs: 600,
            jwt_issuer: None,
            jwt_audience: None,
            api_keys: Vec::new(),
            reveal_claim: "app_metadata.flowtrace_reveal".into(),
            workflows_claim: "app_metadata.workflows".into(),
            insecure: false,
        }
    }
}

impl AuthArgs {
    /// Whether any credentials are configured (the server then refuses callers without them).
    pub fn configured(&self) -> bool {
        self.jwt_secret.as_ref().is_some_and(|s| !s.is_empty())
            || self.jwks_url.as_ref().is_some_and(|u| !u.is_empty())
            || self.jwks_file.is_some()
            || self.api_keys.iter().any(|k| !k.trim().is_empty())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    None,
    Read,
    Write,
}

/// The caller of one request or WebSocket connection.
#[derive(Clone, Debug)]
pub struct Principal {
    pub access: Access,
    /// The token's `sub`: the default `userId` of sessions it starts.
    pub subject: Option<String>,
    /// When the credentials stop being valid; live subscriptions end then.
    pub expires: Option<DateTime<Utc>>,
    /// Whether it may see trace payloads and error stacks (otherwise they read as null, flagged `redacted`).
    pub reveal: bool,
    /// The rows it may read, when not every row: `authenticated` tokens and workflow-limited keys.
    pub scope: Option<Arc<Scope>>,
    /// The JWKS key that signed its token.
    pub signed_by: Option<SigningKey>,
}

/// A JWKS key by id, to notice its withdrawal.
#[derive(Clone)]
pub struct SigningKey {
    jwks: Arc<Jwks>,
    kid: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SigningKey").field(&self.kid).finish()
    }
}

impl Principal {
    /// Whether these credentials can stop being valid while in use.
    pub fn lapses(&self) -> bool {
        self.expires.is_some() || self.signed_by.is_some()
    }

    /// Resolves, saying why, when these credentials stop being valid: the token expires, or the key that signed it
    /// is withdrawn from the JWKS. Never, for credentials that do not lapse.
    pub fn lapse(&self) -> impl Future<Output = &'static str> + Send + 'static {
        let left = self.expires.map(|at| (at - Utc::now()).to_std().unwrap_or_default());
        let withdrawn = self.signed_by.as_ref().map(|k| k.jwks.withdrawal(k.kid.clone()));
        async move {
            let expiry = async {
                match left {
                    Some(left) => tokio::time::sleep(left).await,
                    None => std::future::pending().await,
                }
            };
            let withdrawal = async {
                match withdrawn {
                    Some(withdrawn) => withdrawn.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = expiry => "the token has expired",
                () = withdrawal => "the key that signed the token was withdrawn from the JWKS",
            }
        }
    }
}

/// Why credentials were refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send `Authorization: Bearer <token or API key>`")]
    Missing,
    #[error("invalid credentials: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug)]
struct ApiKey {
    access: Access,
    /// Payloads and stacks too: write keys, and read keys of kind `reveal`.
    reveal: bool,
    /// The workflows it is limited to, if it is.
    scope: Option<Arc<Scope>>,
    hash: [u8; 32],
}

#[derive(Clone)]
pub struct Auth {
    secret: Option<DecodingKey>,
    jwks: Option<Arc<Jwks>>,
    issuer: Option<String>,
    audience: Option<String>,
    reveal_claim: String,
    workflows_claim: String,
    keys: Vec<ApiKey>,
}

/// The claim at a dotted path (`app_metadata.flowtrace_reveal`).
fn claim<'a>(claims: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(claims, |v, key| v.get(key))
}

pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Auth {
    /// Checks the arguments without starting anything (no JWKS is read).
    pub fn check_args(args: &AuthArgs) -> anyhow::Result<()> {
        api_keys(args).map(|_| ())
    }

    /// Reads the JWKS, when one is configured, before returning.
    pub async fn from_args(args: &AuthArgs) -> anyhow::Result<Auth> {
        let secret = args.jwt_secret.as_ref().filter(|s| !s.is_empty()).map(|s| DecodingKey::from_secret(s.as_bytes()));
        let source = match (&args.jwks_url, &args.jwks_file) {
            (Some(url), _) if !url.is_empty() => Some(JwksSource::Url(url.clone())),
            (_, Some(path)) => Some(JwksSource::File(path.clone())),
            _ => None,
        };
        let jwks = match source {
            Some(source) => Some(Jwks::start(source, std::time::Duration::from_secs(args.jwks_refresh_secs)).await?),
            None => None,
        };
        let keys = api_keys(args)?;
        Ok(Auth {
            secret,
            jwks,
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            reveal_claim: args.reveal_claim.clone(),
            workflows_claim: args.workflows_claim.clone(),
            keys,
        })
    }

    /// How a token signed with `algorithm` is checked.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 5;
        // A token is not valid before its `nbf` (RFC 7519 §4.1.5), within the same leeway.
        validation.validate_nbf = true;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            // Supabase tokens carry `aud: authenticated`; without a configured audience the role claim is what
            // we authorise on.
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        validation
    }

    /// The key that checks a token, by its header: the secret for HS256, else the JWKS key it names, which must be
    /// of the algorithm the header says.
    async fn key_for(&self, token: &str) -> Result<(DecodingKey, Algorithm, Option<SigningKey>), AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(format!("token rejected ({e})")))?;
        if header.alg == Algorithm::HS256 {
            let secret = self.secret.clone();
            return secret
                .map(|k| (k, Algorithm::HS256, None))
                .ok_or_else(|| AuthError::Invalid("token rejected (HS256 tokens are not accepted here)".into()));
        }
        let Some(jwks) = &self.jwks else {
            return Err(AuthError::Invalid(format!("token rejected ({:?} tokens are not accepted here)", header.alg)));
        };
        let kid = header.kid.ok_or_else(|| AuthError::Invalid("token rejected (it names no key id)".into()))?;
        let shown: String = kid.chars().take(64).collect();
        let key = jwks
            .key(&kid)
            .await
            .ok_or_else(|| AuthError::Invalid(format!("token rejected (unknown key id {shown:?})")))?;
        if key.algorithm != header.alg {
            return Err(AuthError::Invalid(format!("token rejected (key {shown:?} does not sign {:?})", header.alg)));
        }
        Ok((key.key, key.algorithm, Some(SigningKey { jwks: jwks.clone(), kid })))
    }
}

fn api_keys(args: &AuthArgs) -> anyhow::Result<Vec<ApiKey>> {
    let mut keys = Vec::new();
    for entry in args.api_keys.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
        let (scope, hash) = entry.split_once(':').ok_or_else(|| {
            anyhow::anyhow!("API key entry '{entry}' must be read:<sha256-hex> or write:<sha256-hex>")
        })?;
        let (hash, workflows) = match hash.split_once(':') {
            Some((hash, list)) => (hash, Some(list.split(';').map(str::trim).filter(|w| !w.is_empty()))),
            None => (hash, None),
        };
        let workflows: Option<Vec<String>> = workflows.map(|w| w.map(str::to_owned).collect());
        if workflows.is_some() && scope == "write" {
            // Writers are the engine's ingest, which records every workflow's runs.
            anyhow::bail!("write keys cannot be limited to workflows; limit a read or reveal key");
        }
        if workflows.as_ref().is_some_and(Vec::is_empty) {
            anyhow::bail!("API key entry for scope {scope} names an empty workflow list");
        }
        let (access, reveal) = match scope {
            "read" => (Access::Read, false),
            "reveal" => (Access::Read, true),
            "write" => (Access::Write, true),
            other => anyhow::bail!("API key scope '{other}' must be read, reveal or write"),
        };
        let bytes = hex::decode(hash).ok().filter(|b| b.len() == 32);
        let Some(bytes) = bytes else {
            anyhow::bail!("API key hash for scope {scope} must be 64 hex characters (sha256)");
        };
        let mut hash = [0u8; 32];
        hash.copy_from_slice(&bytes);
        let scope = workflows.map(|workflows| Arc::new(Scope { user: None, workflows }));
        keys.push(ApiKey { access, reveal, scope, hash });
    }
    Ok(keys)
}

impl Auth {
    pub fn configured(&self) -> bool {
        self.secret.is_some() || self.jwks.is_some() || !self.keys.is_empty()
    }

    /// The caller behind an `Authorization` value (`Bearer <jwt or key>`), or `None` for no credentials.
    pub async fn principal(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if !self.configured() {
            return Ok(Principal {
                access: Access::Write,
                subject: None,
                expires: None,
                reveal: true,
                scope: None,
                signed_by: None,
            });
        }
        let token = authorization.map(str::trim).filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        // The scheme is case-insensitive (RFC 7235 §2.1): `Bearer`, `bearer`, `BEARER`.
        let token = match token.split_once(char::is_whitespace) {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
            _ => token,
        };
        if let Some(principal) = self.api_key(token) {
            return Ok(principal);
        }
        if self.secret.is_none() && self.jwks.is_none() {
            return Err(AuthError::Invalid("unknown API key".into()));
        }
        let (key, algorithm, signed_by) = self.key_for(token).await?;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &self.validation(algorithm))
            .map_err(|e| AuthError::Invalid(format!("token rejected ({e})")))?;
        let claims = data.claims;
        let subject = claims["sub"].as_str().map(str::to_owned);
        let (access, reveal, scope) = match claims["role"].as_str() {
            Some("service_role") => (Access::Write, true, None),
            Some("authenticated") => {
                let reveal = claim(&claims, &self.reveal_claim) == Some(&serde_json::Value::Bool(true));
                let workflows = claim(&claims, &self.workflows_claim)
                    .and_then(|w| w.as_array())
                    .map(|w| w.iter().filter_map(|w| w.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                (Access::Read, reveal, Some(Arc::new(Scope { user: subject.clone(), workflows })))
            }
            _ => (Access::None, false, None),
        };
        Ok(Principal {
            access,
            subject,
            expires: claims["exp"].as_i64().and_then(|exp| DateTime::from_timestamp(exp, 0)),
            reveal,
            scope,
            signed_by,
        })
    }

    fn api_key(&self, key: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every key so timing does not reveal which (or whether one) matched early.
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&presented)) {
                found = Some(k);
            }
        }
        found.map(|k| Principal {
            access: k.access,
            subject: None,
            expires: None,
            reveal: k.reveal,
            scope: k.scope.clone(),
            signed_by: None,
        })
    }
}

/// The outcome of authenticating one request or connection, attached to GraphQL request data.
#[derive(Clone)]
pub struct Caller(pub Result<Principal, AuthError>);

impl Caller {
    pub fn principal(&self) -> Option<&Principal> {
        self.0.as_ref().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(entries: &[String]) -> anyhow::Result<Vec<ApiKey>> {
        api_keys(&AuthArgs { api_keys: entries.to_vec(), ..Default::default() })
    }

    #[test]
    fn read_keys_may_be_limited_to_workflows_and_write_keys_may_not() {
        let hash = hash_api_key("k");
        let limited = keys(&[format!("read:{hash}:wf-a; wf-b")]).expect("a limited read key");
        let scope = limited[0].scope.as_deref().expect("limited");
        assert_eq!(
            (scope.user.as_deref(), scope.workflows.as_slice()),
            (None, ["wf-a".to_owned(), "wf-b".to_owned()].as_slice())
        );
        assert!(keys(&[format!("read:{hash}")]).expect("a read key")[0].scope.is_none());
        let refused = keys(&[format!("write:{hash}:wf-a")]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(refused.contains("write keys cannot be limited"), "{refused}");
        assert!(keys(&[format!("reveal:{hash}:;")]).is_err(), "an empty workflow list");
    }

    #[tokio::test]
    async fn an_authenticated_token_reads_its_own_sessions_and_the_workflows_its_claim_grants() {
        let secret = "unit-secret-0123456789-0123456789";
        let auth =
            Auth::from_args(&AuthArgs { jwt_secret: Some(secret.into()), ..Default::default() }).await.expect("auth");
        let sign = |claims: serde_json::Value| {
            let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
            jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign")
        };
        let exp = Utc::now().timestamp() + 60;
        let scope_of = |token: String| {
            let auth = auth.clone();
            async move { auth.principal(Some(&format!("Bearer {token}"))).await.expect("valid").scope }
        };
        let user = scope_of(sign(serde_json::json!({ "role": "authenticated", "sub": "u", "exp": exp }))).await;
        assert_eq!(user.as_deref(), Some(&Scope { user: Some("u".into()), workflows: vec![] }));
        let granted = sign(serde_json::json!({ "role": "authenticated", "sub": "u", "exp": exp,
            "app_metadata": { "workflows": ["w1", 7, "w2"] } }));
        assert_eq!(scope_of(granted).await.expect("limited").workflows, ["w1", "w2"], "strings only");
        let service = sign(serde_json::json!({ "role": "service_role", "sub": "s", "exp": exp }));
        assert!(scope_of(service).await.is_none(), "service_role reads every row");
    }
}
