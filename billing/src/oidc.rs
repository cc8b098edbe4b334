//! Customers signed in by the utility's OpenID Connect provider (issue 17): beside the tokens the
//! operator issues (`auth.rs`), billing accepts a JWT the provider signed, for the customer a claim
//! names. Configured with the provider's issuer, billing's audience and the provider's JWKS (a
//! file, or an `http://` URL served inside the utility's network); billing checks the signature
//! against the JWKS key the token's `kid` names, `iss`, `aud`, `exp` and `nbf` (with
//! [`LEEWAY_SECONDS`] for clock skew), and that the algorithm is one of [`ALGORITHMS`] (never
//! `none`, never a shared-secret HMAC: billing holds no provider secret).
//!
//! Keys rotate at the provider: a token whose `kid` billing does not know makes billing read the
//! JWKS again (at most once per [`JWKS_REFRESH_MIN`]; the token is refused meanwhile), and billing
//! re-reads it every [`JWKS_MAX_AGE`] regardless.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use domain::ids::CustomerId;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::api::Refusal;
use crate::auth::{Caller, Role, Via};

/// Signature algorithms billing accepts: what OpenID Connect providers sign ID and access tokens
/// with (RSA, ECDSA P-256, Ed25519).
pub const ALGORITHMS: [Algorithm; 6] =
    [Algorithm::RS256, Algorithm::RS384, Algorithm::RS512, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];
/// Clock skew tolerated on `exp` and `nbf`, seconds.
pub const LEEWAY_SECONDS: u64 = 30;
/// Longest JWT billing reads.
pub const JWT_BYTES_MAX: usize = 8 * 1024;
/// Most one re-read of the JWKS per this long when a token names an unknown key.
pub const JWKS_REFRESH_MIN: Duration = Duration::from_secs(60);
/// The JWKS is re-read this often regardless.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// Largest JWKS document billing reads.
pub const JWKS_BYTES_MAX: usize = 256 * 1024;

/// How billing trusts the identity provider.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// The provider's issuer (`iss`), exactly as it writes it.
    pub issuer: String,
    /// Billing's audience (`aud`) at the provider.
    pub audience: String,
    /// The provider's JWKS: a file path or an `http://` URL.
    pub jwks: String,
    /// The claim naming the customer the token reads (e.g. `customer_id`).
    pub customer_claim: String,
}

/// The provider's keys and how to check its tokens.
#[derive(Debug)]
pub struct Oidc {
    config: OidcConfig,
    keys: RwLock<JwkSet>,
    last_read: Mutex<Instant>,
    http: reqwest::Client,
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, code, message)
}

async fn read_jwks(http: &reqwest::Client, source: &str) -> anyhow::Result<JwkSet> {
    let bytes = if source.starts_with("http://") || source.starts_with("https://") {
        let response = http.get(source).timeout(Duration::from_secs(10)).send().await?.error_for_status()?;
        response.bytes().await?.to_vec()
    } else {
        tokio::fs::read(source).await?
    };
    anyhow::ensure!(bytes.len() <= JWKS_BYTES_MAX, "the JWKS is {} bytes, more than {JWKS_BYTES_MAX}", bytes.len());
    let set: JwkSet = serde_json::from_slice(&bytes)?;
    anyhow::ensure!(!set.keys.is_empty(), "the JWKS holds no key");
    Ok(set)
}

impl Oidc {
    /// Reads the provider's JWKS (billing does not start without it) and keeps it fresh.
    pub async fn open(config: OidcConfig) -> anyhow::Result<Arc<Oidc>> {
        let http = reqwest::Client::builder().build()?;
        let keys = read_jwks(&http, &config.jwks)
            .await
            .map_err(|error| anyhow::anyhow!("reading the identity provider's JWKS {}: {error:#}", config.jwks))?;
        tracing::info!(issuer = %config.issuer, keys = keys.keys.len(), "identity provider's keys read");
        let oidc = Arc::new(Oidc { config, keys: RwLock::new(keys), last_read: Mutex::new(Instant::now()), http });
        let weak = Arc::downgrade(&oidc);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(JWKS_MAX_AGE).await;
                let Some(oidc) = weak.upgrade() else { return };
                oidc.refresh().await;
            }
        });
        Ok(oidc)
    }

    async fn refresh(&self) {
        *self.last_read.lock().expect("lock is never poisoned") = Instant::now();
        match read_jwks(&self.http, &self.config.jwks).await {
            Ok(keys) => *self.keys.write().expect("lock is never poisoned") = keys,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), "re-reading the identity provider's JWKS failed")
            }
        }
    }

    /// Re-reads the JWKS in the background unless it was read within [`JWKS_REFRESH_MIN`].
    fn refresh_soon(self: &Arc<Self>) {
        let due = self.last_read.lock().expect("lock is never poisoned").elapsed() >= JWKS_REFRESH_MIN;
        if due {
            *self.last_read.lock().expect("lock is never poisoned") = Instant::now();
            let oidc = self.clone();
            tokio::spawn(async move { oidc.refresh().await });
        }
    }

    /// The caller a JWT names, or why it is refused (401).
    pub fn verify(self: &Arc<Self>, token: &str) -> Result<Caller, Refusal> {
        if token.len() > JWT_BYTES_MAX {
            return Err(unauthorized("malformed_token", format!("a JWT is at most {JWT_BYTES_MAX} bytes")));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| unauthorized("malformed_token", format!("not a JWT: {error}")))?;
        if !ALGORITHMS.contains(&header.alg) {
            return Err(unauthorized("bad_algorithm", format!("{:?} is not an algorithm billing accepts", header.alg)));
        }
        // The issuer first, unverified: a token from another provider is refused as such, whatever
        // its key.
        let issuer = unverified_issuer(token)?;
        if issuer != self.config.issuer {
            return Err(unauthorized(
                "foreign_issuer",
                format!("this token was issued by {issuer:?}; billing accepts tokens of {:?}", self.config.issuer),
            ));
        }
        let kid = header.kid.as_deref().ok_or_else(|| unauthorized("unknown_key", "the JWT names no key (kid)"))?;
        let key = {
            let keys = self.keys.read().expect("lock is never poisoned");
            keys.find(kid).map(DecodingKey::from_jwk)
        };
        let key = match key {
            Some(key) => key.map_err(|error| unauthorized("unknown_key", format!("key {kid}: {error}")))?,
            None => {
                self.refresh_soon();
                return Err(unauthorized("unknown_key", format!("the identity provider has no key {kid:?}")));
            }
        };
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(token, &key, &validation)
            .map_err(|error| refusal_of(error.kind()))?;
        let claims = data.claims;
        let subject = claims.get("sub").and_then(|sub| sub.as_str()).unwrap_or_default();
        let expires_at = claims.get("exp").and_then(serde_json::Value::as_i64).unwrap_or_default();
        let customer = claims.get(&self.config.customer_claim).and_then(|value| value.as_str()).ok_or_else(|| {
            unauthorized(
                "missing_claim",
                format!("the JWT has no {} claim naming a customer", self.config.customer_claim),
            )
        })?;
        let customer_id = CustomerId::new(customer)
            .map_err(|error| unauthorized("missing_claim", format!("{}: {error}", self.config.customer_claim)))?;
        Ok(Caller {
            token_id: format!("oidc:{subject}"),
            role: Role::Customer { customer_id },
            via: Via::Jwt { expires_at_s: expires_at },
        })
    }
}

/// The `iss` of a JWT's payload, before its signature is checked.
fn unverified_issuer(token: &str) -> Result<String, Refusal> {
    use base64::Engine;
    let payload = token.split('.').nth(1).ok_or_else(|| unauthorized("malformed_token", "a JWT has three parts"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| unauthorized("malformed_token", "the JWT's payload is not base64url"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| unauthorized("malformed_token", "the JWT's payload is not JSON"))?;
    claims["iss"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| unauthorized("missing_claim", "the JWT names no issuer (iss)"))
}

fn refusal_of(kind: &ErrorKind) -> Refusal {
    match kind {
        ErrorKind::ExpiredSignature => unauthorized("expired_token", "the JWT has expired (exp); sign in again"),
        ErrorKind::ImmatureSignature => unauthorized("token_not_yet_valid", "the JWT is not valid yet (nbf)"),
        ErrorKind::InvalidIssuer => {
            unauthorized("foreign_issuer", "the JWT's issuer is not billing's identity provider")
        }
        ErrorKind::InvalidAudience => unauthorized("wrong_audience", "the JWT is not for billing (aud)"),
        ErrorKind::InvalidSignature => unauthorized("bad_signature", "the JWT's signature does not verify"),
        ErrorKind::InvalidAlgorithm => unauthorized("bad_algorithm", "the JWT's algorithm does not match its key"),
        ErrorKind::MissingRequiredClaim(claim) => {
            unauthorized("missing_claim", format!("the JWT has no {claim} claim"))
        }
        other => unauthorized("malformed_token", format!("the JWT does not parse: {other:?}")),
    }
}
