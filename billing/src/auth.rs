//! Who may call billing: bearer tokens the operator issues, stored only as SHA-256 hashes in a
//! token file (`--tokens`), revocable. A customer token reads that customer's data only; an
//! operator token reads every customer and issues and revokes tokens. Every request with a token
//! is rate-limited per token (a token bucket), and every read of a customer's data is logged
//! (who, what, when) under the `billing::access` target.
//!
//! The token file lives beside billing's database, not in it: the read model can be deleted and
//! rebuilt from the ledger without logging every customer out. Billing re-reads the file when it
//! changes, so `wattle token revoke` takes effect on the next request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use axum::http::{HeaderMap, StatusCode};
use domain::ids::CustomerId;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::Refusal;

/// Prefix of every token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "wtk";
/// Most tokens one file holds: the file is read whole on every change.
pub const TOKENS_MAX: usize = 100_000;
/// Requests one token may make per second, sustained (`--rate-per-token`).
pub const RATE_PER_TOKEN_DEFAULT: u32 = 50;
/// Requests one token may make at once after being idle: twice the per-second rate.
pub const BURST_FACTOR: u32 = 2;
/// An operator's token may make this many times a customer's rate: a back office reads every
/// customer (exports, checks), a customer's app reads one.
pub const OPERATOR_RATE_FACTOR: u32 = 20;
/// Most tokens the rate limiter tracks; beyond it the idlest half is forgotten (they start again
/// with a full bucket, which is the most a forgotten token could have had anyway).
pub const RATE_TRACKED_MAX: usize = 100_000;
/// Longest label a token may carry.
pub const LABEL_BYTES_MAX: usize = 200;

/// What a token entitles its bearer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// Reads one customer's data.
    Customer { customer_id: CustomerId },
    /// Reads every customer's data; issues and revokes tokens.
    Operator,
}

/// One issued token, as the file keeps it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (the token's middle part): names the token in logs, lists and revocations.
    pub id: String,
    #[serde(flatten)]
    pub role: Role,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub label: String,
    /// RFC 3339 UTC.
    pub issued_at: String,
    /// RFC 3339 UTC; a revoked token is refused with `revoked_token`.
    pub revoked_at: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct TokenFile {
    tokens: Vec<TokenRecord>,
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the token file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("writing the token file {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("no token with id {0}")]
    Unknown(String),
    #[error("the token file holds {TOKENS_MAX} tokens, the most it may")]
    Full,
    #[error("a label is at most {LABEL_BYTES_MAX} bytes")]
    LabelTooLong,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The token file: issue, revoke, list (the CLI and the operator API), and look up (every
/// request). Re-read when its modification time or length changes.
#[derive(Debug)]
pub struct TokenStore {
    path: PathBuf,
    cache: Mutex<Cache>,
}

#[derive(Debug, Default)]
struct Cache {
    stamp: Option<(SystemTime, u64)>,
    by_id: HashMap<String, TokenRecord>,
}

impl TokenStore {
    /// Opens the token file at `path` (created empty, mode 0600, if missing).
    pub fn open(path: &Path) -> Result<TokenStore, TokenError> {
        let store = TokenStore { path: path.to_path_buf(), cache: Mutex::new(Cache::default()) };
        if !path.exists() {
            store.write(&TokenFile::default())?;
        }
        store.refresh()?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read(&self) -> Result<TokenFile, TokenError> {
        let error = |reason: String| TokenError::Read { path: self.path.display().to_string(), reason };
        let bytes = std::fs::read(&self.path).map_err(|e| error(e.to_string()))?;
        let file: TokenFile = serde_json::from_slice(&bytes).map_err(|e| error(e.to_string()))?;
        if file.tokens.len() > TOKENS_MAX {
            return Err(error(format!("{} tokens, more than {TOKENS_MAX}", file.tokens.len())));
        }
        Ok(file)
    }

    /// Writes the whole file atomically (a temporary file renamed over it), mode 0600.
    fn write(&self, file: &TokenFile) -> Result<(), TokenError> {
        let error = |reason: String| TokenError::Write { path: self.path.display().to_string(), reason };
        let json = serde_json::to_vec_pretty(file).map_err(|e| error(e.to_string()))?;
        let temporary = self.path.with_extension("tmp");
        {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut out = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(|e| error(e.to_string()))?;
            out.write_all(&json).and_then(|()| out.sync_all()).map_err(|e| error(e.to_string()))?;
        }
        std::fs::rename(&temporary, &self.path).map_err(|e| error(e.to_string()))
    }

    /// Re-reads the file if it changed since the last read.
    fn refresh(&self) -> Result<(), TokenError> {
        let meta = std::fs::metadata(&self.path)
            .map_err(|e| TokenError::Read { path: self.path.display().to_string(), reason: e.to_string() })?;
        let stamp = (meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
        let mut cache = self.cache.lock().expect("token cache lock is never poisoned");
        if cache.stamp == Some(stamp) {
            return Ok(());
        }
        let file = self.read()?;
        cache.by_id = file.tokens.into_iter().map(|record| (record.id.clone(), record)).collect();
        cache.stamp = Some(stamp);
        Ok(())
    }

    /// Issues a token for `role`: returns the token (shown once, never stored) and its record.
    pub fn issue(&self, role: Role, label: &str) -> Result<(String, TokenRecord), TokenError> {
        if label.len() > LABEL_BYTES_MAX {
            return Err(TokenError::LabelTooLong);
        }
        let mut file = self.read()?;
        if file.tokens.len() >= TOKENS_MAX {
            return Err(TokenError::Full);
        }
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        let id = hex::encode(id);
        let token = format!("{TOKEN_PREFIX}_{id}_{}", hex::encode(secret));
        let record = TokenRecord {
            id,
            role,
            sha256: sha256_hex(token.as_bytes()),
            label: label.to_string(),
            issued_at: now_rfc3339(),
            revoked_at: None,
        };
        file.tokens.push(record.clone());
        self.write(&file)?;
        self.refresh()?;
        Ok((token, record))
    }

    /// Revokes the token `id` (revoking a revoked token keeps its first revocation time).
    pub fn revoke(&self, id: &str) -> Result<TokenRecord, TokenError> {
        let mut file = self.read()?;
        let record = file.tokens.iter_mut().find(|record| record.id == id).ok_or(TokenError::Unknown(id.into()))?;
        record.revoked_at.get_or_insert_with(now_rfc3339);
        let record = record.clone();
        self.write(&file)?;
        self.refresh()?;
        Ok(record)
    }

    /// Every token's record, oldest first.
    pub fn list(&self) -> Result<Vec<TokenRecord>, TokenError> {
        Ok(self.read()?.tokens)
    }

    /// Whether the token `id` is still known and not revoked (a live stream re-checks its
    /// caller with this on every event).
    fn still_valid(&self, id: &str) -> Result<(), Refusal> {
        if let Err(error) = self.refresh() {
            tracing::error!(%error, "the token file could not be read; keeping the tokens read before");
        }
        let cache = self.cache.lock().expect("token cache lock is never poisoned");
        let record = cache.by_id.get(id).ok_or_else(|| unauthorized("unknown_token", "this token is gone"))?;
        match &record.revoked_at {
            Some(revoked_at) => Err(unauthorized("revoked_token", format!("token {id} was revoked at {revoked_at}"))),
            None => Ok(()),
        }
    }

    /// The record of a presented token, checked against its stored hash.
    fn lookup(&self, token: &str) -> Result<TokenRecord, Refusal> {
        let id = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.strip_prefix('_'))
            .and_then(|rest| rest.split_once('_'))
            .map(|(id, _)| id)
            .ok_or_else(|| unauthorized("malformed_token", "a token reads wtk_<id>_<secret>"))?;
        if let Err(error) = self.refresh() {
            tracing::error!(%error, "the token file could not be read; keeping the tokens read before");
        }
        let cache = self.cache.lock().expect("token cache lock is never poisoned");
        let record = cache.by_id.get(id).filter(|record| record.sha256 == sha256_hex(token.as_bytes()));
        let record = record.ok_or_else(|| unauthorized("unknown_token", "this token was not issued here"))?;
        if let Some(revoked_at) = &record.revoked_at {
            return Err(unauthorized("revoked_token", format!("token {} was revoked at {revoked_at}", record.id)));
        }
        Ok(record.clone())
    }
}

fn unauthorized(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, code, message)
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's id (a JWT's caller: `oidc:{sub}`), in logs and rate limits.
    pub token_id: String,
    pub role: Role,
    pub via: Via,
}

/// How a caller signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A token the operator issued (`wtk_…`), revocable in the token file.
    Token,
    /// A JWT of the utility's identity provider (`oidc.rs`), valid until `exp`.
    Jwt { expires_at_s: i64 },
}

impl Caller {
    /// Whether the caller may read `customer`'s data.
    pub fn may_read(&self, customer: &CustomerId) -> bool {
        match &self.role {
            Role::Operator => true,
            Role::Customer { customer_id } => customer_id == customer,
        }
    }

    /// 403 unless the caller may read `customer`'s data.
    pub fn check_customer(&self, customer: &CustomerId) -> Result<(), Refusal> {
        if self.may_read(customer) {
            Ok(())
        } else {
            Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "not_your_customer",
                format!("token {} does not read customer {customer}'s data", self.token_id),
            ))
        }
    }

    /// 403 unless the caller is an operator.
    pub fn check_operator(&self) -> Result<(), Refusal> {
        match self.role {
            Role::Operator => Ok(()),
            Role::Customer { .. } => Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "operator_only",
                format!("token {} is a customer's; this needs an operator token", self.token_id),
            )),
        }
    }

    /// The role as the access log names it.
    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Operator => "operator",
            Role::Customer { .. } => "customer",
        }
    }
}

/// A token bucket per token id: `rate` requests a second sustained, `rate × BURST_FACTOR` at once.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(rate_per_s: u32) -> Self {
        let rate_per_s = f64::from(rate_per_s.max(1));
        RateLimiter { rate_per_s, burst: rate_per_s * f64::from(BURST_FACTOR), buckets: Mutex::default() }
    }

    /// Takes one request from `key`'s bucket at `now`; `Err(seconds)` until one is available.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), f64> {
        let mut buckets = self.buckets.lock().expect("rate limiter lock is never poisoned");
        if buckets.len() >= RATE_TRACKED_MAX && !buckets.contains_key(key) {
            let mut last_seen: Vec<Instant> = buckets.values().map(|(_, seen)| *seen).collect();
            last_seen.sort();
            let cutoff = last_seen[last_seen.len() / 2];
            buckets.retain(|_, (_, seen)| *seen > cutoff);
        }
        let (level, seen) = buckets.entry(key.to_string()).or_insert((self.burst, now));
        *level = (*level + now.saturating_duration_since(*seen).as_secs_f64() * self.rate_per_s).min(self.burst);
        *seen = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err((1.0 - *level) / self.rate_per_s)
        }
    }
}

/// How billing admits requests.
#[derive(Debug)]
pub struct Gate {
    pub tokens: TokenStore,
    /// Customers' tokens, at `rate_per_token`.
    pub customer_limiter: RateLimiter,
    /// Operators' tokens, at [`OPERATOR_RATE_FACTOR`] times that.
    pub operator_limiter: RateLimiter,
    /// The utility's identity provider, if billing accepts its JWTs.
    pub oidc: Option<std::sync::Arc<crate::oidc::Oidc>>,
}

impl Gate {
    pub fn new(tokens: TokenStore, rate_per_token: u32) -> Gate {
        Gate {
            tokens,
            customer_limiter: RateLimiter::new(rate_per_token),
            operator_limiter: RateLimiter::new(rate_per_token.saturating_mul(OPERATOR_RATE_FACTOR)),
            oidc: None,
        }
    }

    /// The same gate, accepting the identity provider's JWTs too.
    pub fn with_oidc(mut self, oidc: std::sync::Arc<crate::oidc::Oidc>) -> Gate {
        self.oidc = Some(oidc);
        self
    }

    /// The caller of a request: its bearer token, known, not revoked, within its rate.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let value = headers.get(axum::http::header::AUTHORIZATION).ok_or_else(|| {
            unauthorized("missing_token", "send Authorization: Bearer <token> (issued by the operator)")
        })?;
        let token = value
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("malformed_token", "the Authorization header reads Bearer <token>"))?;
        let caller = match &self.oidc {
            Some(oidc) if !token.starts_with(TOKEN_PREFIX) && token.matches('.').count() == 2 => oidc.verify(token)?,
            _ => {
                let record = self.tokens.lookup(token)?;
                Caller { token_id: record.id, role: record.role, via: Via::Token }
            }
        };
        let limiter = match caller.role {
            Role::Operator => &self.operator_limiter,
            Role::Customer { .. } => &self.customer_limiter,
        };
        if let Err(wait_s) = limiter.take(&caller.token_id, Instant::now()) {
            return Err(Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("token {} is over its rate; retry in {:.0} ms", caller.token_id, (wait_s * 1000.0).ceil()),
            )
            .retry_after(wait_s.ceil().max(1.0) as u64));
        }
        Ok(caller)
    }
}

impl Gate {
    /// Whether a caller admitted earlier may still read (its token not revoked since): a live
    /// stream asks before every event. Not rate-limited: the stream is one request.
    pub fn still_admitted(&self, caller: &Caller) -> Result<(), Refusal> {
        match caller.via {
            Via::Token => self.tokens.still_valid(&caller.token_id),
            Via::Jwt { expires_at_s } => {
                let now_s = domain::clock::wall_clock_now().0.div_euclid(1000);
                if now_s > expires_at_s.saturating_add(crate::oidc::LEEWAY_SECONDS as i64) {
                    Err(unauthorized("expired_token", "the JWT has expired (exp); sign in again"))
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Logs one read of a customer's data: who (token id and role), what (the path and customer),
/// when (the event's own time).
pub fn log_access(caller: &Caller, customer: &str, what: &str) {
    tracing::info!(
        target: "billing::access",
        token = %caller.token_id,
        role = caller.role_name(),
        customer,
        what,
        "customer data read"
    );
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(axum::http::header::AUTHORIZATION, format!("Bearer {token}").parse().expect("ascii"));
        headers
    }

    #[test]
    fn tokens_are_stored_hashed_and_revocable() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("tokens.json");
        let store = TokenStore::open(&path).expect("open");
        let customer = CustomerId::new("C0000001").expect("id");
        let (token, record) = store.issue(Role::Customer { customer_id: customer.clone() }, "app").expect("issue");
        let file = std::fs::read_to_string(&path).expect("read");
        assert!(!file.contains(&token), "the token itself never reaches the file");
        assert!(file.contains(&record.sha256));
        let gate = Gate::new(store, 100);
        let caller = gate.caller(&headers(&token)).expect("admitted");
        assert!(caller.may_read(&customer));
        assert!(!caller.may_read(&CustomerId::new("C0000002").expect("id")));
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('0') { '1' } else { '0' });
        assert_eq!(gate.caller(&headers(&forged)).expect_err("refused").code(), "unknown_token");
        assert_eq!(gate.caller(&headers("Bearer-less")).expect_err("refused").code(), "malformed_token");
        assert_eq!(gate.caller(&HeaderMap::new()).expect_err("refused").code(), "missing_token");
        // Revoked through a second store on the same file (as `wattle token revoke` does).
        TokenStore::open(&path).expect("open again").revoke(&record.id).expect("revoke");
        assert_eq!(gate.caller(&headers(&token)).expect_err("refused").code(), "revoked_token");
    }

    #[test]
    fn a_token_over_its_rate_waits_and_others_do_not() {
        let limiter = RateLimiter::new(10);
        let start = Instant::now();
        for _ in 0..20 {
            limiter.take("a", start).expect("the burst is twice the rate");
        }
        let wait_s = limiter.take("a", start).expect_err("refused");
        assert!((wait_s - 0.1).abs() < 1e-9, "{wait_s}");
        limiter.take("b", start).expect("another token has its own bucket");
        limiter.take("a", start + Duration::from_millis(100)).expect("refilled after 100 ms");
    }
}
