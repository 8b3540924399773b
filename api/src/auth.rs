//! Who is calling: a Supabase-compatible HS256 JWT (`role` claim) or a static API key, from the `Authorization`
//! header over HTTP or the `connection_init` payload over WebSocket.
//!
//! `service_role` tokens and write keys may read and write; `authenticated` tokens and read keys may read. With no
//! auth configured every caller may do everything, which is why the server then refuses non-loopback binds.

use chrono::{DateTime, Utc};
use clap::Args;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Args, Clone, Debug, Default)]
pub struct AuthArgs {
    /// HS256 secret that signs accepted JWTs (e.g. the Supabase JWT secret).
    #[arg(long, env = "FLOWTRACE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// API keys as `read:<sha256-hex>` or `write:<sha256-hex>`, comma-separated. Hash a key with
    /// `flowtrace hash-api-key <key>`.
    #[arg(long, env = "FLOWTRACE_API_KEYS", value_delimiter = ',', hide_env_values = true)]
    pub api_keys: Vec<String>,
    /// Serve on a non-loopback address without auth.
    #[arg(long, env = "FLOWTRACE_INSECURE")]
    pub insecure: bool,
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
    hash: [u8; 32],
}

#[derive(Clone)]
pub struct Auth {
    jwt: Option<(DecodingKey, Validation)>,
    keys: Vec<ApiKey>,
}

#[derive(serde::Deserialize)]
struct Claims {
    role: Option<String>,
    sub: Option<String>,
    exp: Option<i64>,
}

pub fn hash_api_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Auth {
    pub fn from_args(args: &AuthArgs) -> anyhow::Result<Auth> {
        let jwt = args.jwt_secret.as_ref().filter(|s| !s.is_empty()).map(|secret| {
            let mut validation = Validation::new(Algorithm::HS256);
            // Supabase tokens carry `aud: authenticated`; the role claim is what we authorise on.
            validation.validate_aud = false;
            validation.leeway = 5;
            // A token is not valid before its `nbf` (RFC 7519 §4.1.5), within the same leeway.
            validation.validate_nbf = true;
            (DecodingKey::from_secret(secret.as_bytes()), validation)
        });
        let mut keys = Vec::new();
        for entry in args.api_keys.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let (scope, hash) = entry.split_once(':').ok_or_else(|| {
                anyhow::anyhow!("API key entry '{entry}' must be read:<sha256-hex> or write:<sha256-hex>")
            })?;
            let access = match scope {
                "read" => Access::Read,
                "write" => Access::Write,
                other => anyhow::bail!("API key scope '{other}' must be read or write"),
            };
            let bytes = hex::decode(hash).ok().filter(|b| b.len() == 32);
            let Some(bytes) = bytes else {
                anyhow::bail!("API key hash for scope {scope} must be 64 hex characters (sha256)");
            };
            let mut hash = [0u8; 32];
            hash.copy_from_slice(&bytes);
            keys.push(ApiKey { access, hash });
        }
        Ok(Auth { jwt, keys })
    }

    pub fn configured(&self) -> bool {
        self.jwt.is_some() || !self.keys.is_empty()
    }

    /// The caller behind an `Authorization` value (`Bearer <jwt or key>`), or `None` for no credentials.
    pub fn principal(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        if !self.configured() {
            return Ok(Principal { access: Access::Write, subject: None, expires: None });
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
        let Some((key, validation)) = &self.jwt else {
            return Err(AuthError::Invalid("unknown API key".into()));
        };
        let data = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| AuthError::Invalid(format!("token rejected ({e})")))?;
        let access = match data.claims.role.as_deref() {
            Some("service_role") => Access::Write,
            Some("authenticated") => Access::Read,
            _ => Access::None,
        };
        Ok(Principal {
            access,
            subject: data.claims.sub,
            expires: data.claims.exp.and_then(|exp| DateTime::from_timestamp(exp, 0)),
        })
    }

    fn api_key(&self, key: &str) -> Option<Principal> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        // Compare against every key so timing does not reveal which (or whether one) matched early.
        let mut found = None;
        for k in &self.keys {
            if bool::from(k.hash.ct_eq(&presented)) {
                found = Some(k.access);
            }
        }
        found.map(|access| Principal { access, subject: None, expires: None })
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
