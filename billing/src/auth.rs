//! Who may call billing: bearer tokens the operator issues, stored only as SHA-256 hashes in a
//! token file (`--tokens`), revocable. A customer token reads that customer's data only; an
//! operator token reads every customer and issues and revokes tokens. Every request with a token
//! is rate-limited per token (a token bucket), and every read of a customer's data is logged
//! (who, what, when) under the `billing::access` target.
//!
//! The token file lives beside billing's database, not in it: the read model can be deleted and
//! rebuilt from the ledger without logging every customer out. Billing re-reads the file when it
//! changes, so `wattle token revoke` takes effect on the next request. The file and the token
//! format are `domain::token`'s, shared with the gateway's operator tokens; the roles are billing's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::{HeaderMap, StatusCode};
use domain::ids::CustomerId;
use domain::token::{TokenRefusal, TOKEN_PREFIX};
use serde::{Deserialize, Serialize};

use crate::api::Refusal;

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

/// What a token entitles its bearer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum Role {
    /// Reads one customer's data.
    Customer { customer_id: CustomerId },
    /// Reads every customer's data; issues and revokes tokens.
    Operator,
}

/// One issued token of billing's, as its token file keeps it (`domain::token`).
pub type TokenRecord = domain::token::TokenRecord<Role>;

/// Billing's token file: issue, revoke, list (the CLI and the operator API), and look up (every
/// request). Re-read when its modification time or length changes.
pub type TokenStore = domain::token::TokenStore<Role>;

/// A presented token's refusal as billing answers it.
fn refused(refusal: TokenRefusal) -> Refusal {
    unauthorized(refusal.code(), refusal.to_string())
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
        let token = domain::token::bearer(headers.get(axum::http::header::AUTHORIZATION).map(|value| value.as_bytes()))
            .map_err(|(code, message)| unauthorized(code, format!("{message} (issued by the operator)")))?;
        let caller = match &self.oidc {
            Some(oidc) if !token.starts_with(TOKEN_PREFIX) && token.matches('.').count() == 2 => oidc.verify(token)?,
            _ => {
                let record = self.tokens.lookup(token).map_err(refused)?;
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
            Via::Token => self.tokens.still_valid(&caller.token_id).map_err(|refusal| match refusal {
                TokenRefusal::Unknown => unauthorized("unknown_token", "this token is gone"),
                refusal => refused(refusal),
            }),
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
