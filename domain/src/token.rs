//! Bearer tokens the operator issues, stored only as SHA-256 hashes: the token format
//! (`wtk_<id>_<secret>`), the records a token file keeps, and the checks a presented token must
//! pass. Each service that admits tokens brings its own roles (`R`): billing's customer and
//! operator, the gateway's operator.
//!
//! The file itself ([`TokenStore`]: read, written atomically with mode 0600, re-read when it
//! changes) is behind the `token-file` feature, which only the services turn on: it is this
//! crate's one piece of disk IO, kept out of everything the ledger and the fuzzers build on.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::limits::{TOKEN_LABEL_BYTES_MAX, TOKEN_RECORDS_MAX};

#[cfg(feature = "token-file")]
mod file;
#[cfg(feature = "token-file")]
pub use file::TokenStore;

/// Prefix of every token, so a leaked one is recognisable (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "wtk";

/// One issued token, as the file keeps it: never the token itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord<R> {
    /// Public id (the token's middle part): names the token in logs, lists and revocations.
    pub id: String,
    #[serde(flatten)]
    pub role: R,
    /// SHA-256 of the whole token, hex.
    pub sha256: String,
    pub label: String,
    /// RFC 3339 UTC.
    pub issued_at: String,
    /// RFC 3339 UTC; a revoked token is refused.
    pub revoked_at: Option<String>,
}

/// The token file's contents: every record, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenFile<R> {
    pub tokens: Vec<TokenRecord<R>>,
}

impl<R> Default for TokenFile<R> {
    fn default() -> Self {
        TokenFile { tokens: Vec::new() }
    }
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
    #[error("the token file holds {TOKEN_RECORDS_MAX} tokens, the most it may")]
    Full,
    #[error("a label is at most {TOKEN_LABEL_BYTES_MAX} bytes")]
    LabelTooLong,
}

/// Why a presented token is not admitted; each service words it for its callers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenRefusal {
    /// Not of the form `wtk_<id>_<secret>`.
    #[error("a token reads {TOKEN_PREFIX}_<id>_<secret>")]
    Malformed,
    /// No record has its id, or the record's hash is another token's.
    #[error("this token was not issued here")]
    Unknown,
    #[error("token {id} was revoked at {revoked_at}")]
    Revoked { id: String, revoked_at: String },
}

impl TokenRefusal {
    /// The stable code services answer with.
    pub fn code(&self) -> &'static str {
        match self {
            TokenRefusal::Malformed => "malformed_token",
            TokenRefusal::Unknown => "unknown_token",
            TokenRefusal::Revoked { .. } => "revoked_token",
        }
    }
}

/// Why an `Authorization` header names no bearer token: its code (`missing_token`,
/// `malformed_token`) and what to send instead; each service adds where tokens come from.
pub fn bearer(authorization: Option<&[u8]>) -> Result<&str, (&'static str, &'static str)> {
    let value = authorization.ok_or(("missing_token", "send Authorization: Bearer <token>"))?;
    std::str::from_utf8(value)
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(("malformed_token", "the Authorization header reads Bearer <token>"))
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The id part of a token of the form `wtk_<id>_<secret>`.
pub fn token_id(token: &str) -> Option<&str> {
    token
        .strip_prefix(TOKEN_PREFIX)
        .and_then(|rest| rest.strip_prefix('_'))
        .and_then(|rest| rest.split_once('_'))
        .map(|(id, _)| id)
}

impl<R: Clone> TokenFile<R> {
    /// Adds a token for `role` made of the random `id` and `secret` the caller drew: returns the
    /// token (for its bearer, never stored) and its record.
    pub fn issue(
        &mut self,
        role: R,
        label: &str,
        id: [u8; 8],
        secret: [u8; 32],
        issued_at: String,
    ) -> Result<(String, TokenRecord<R>), TokenError> {
        if label.len() > TOKEN_LABEL_BYTES_MAX {
            return Err(TokenError::LabelTooLong);
        }
        if self.tokens.len() >= TOKEN_RECORDS_MAX {
            return Err(TokenError::Full);
        }
        let id = hex::encode(id);
        let token = format!("{TOKEN_PREFIX}_{id}_{}", hex::encode(secret));
        let record = TokenRecord {
            id,
            role,
            sha256: sha256_hex(token.as_bytes()),
            label: label.to_string(),
            issued_at,
            revoked_at: None,
        };
        self.tokens.push(record.clone());
        Ok((token, record))
    }

    /// Marks the token `id` revoked at `revoked_at` (a revoked token keeps its first revocation
    /// time).
    pub fn revoke(&mut self, id: &str, revoked_at: String) -> Result<TokenRecord<R>, TokenError> {
        let record = self.tokens.iter_mut().find(|record| record.id == id).ok_or(TokenError::Unknown(id.into()))?;
        record.revoked_at.get_or_insert(revoked_at);
        Ok(record.clone())
    }
}

/// The records of a token file by id, for checking presented tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenIndex<R> {
    by_id: HashMap<String, TokenRecord<R>>,
}

impl<R> Default for TokenIndex<R> {
    fn default() -> Self {
        TokenIndex { by_id: HashMap::new() }
    }
}

impl<R> From<TokenFile<R>> for TokenIndex<R> {
    fn from(file: TokenFile<R>) -> Self {
        TokenIndex { by_id: file.tokens.into_iter().map(|record| (record.id.clone(), record)).collect() }
    }
}

impl<R> TokenIndex<R> {
    /// The record of a presented token: found by its id, its hash matching the stored one, not
    /// revoked. Only hashes are compared, so the comparison's timing tells nothing of a secret.
    pub fn check(&self, token: &str) -> Result<&TokenRecord<R>, TokenRefusal> {
        let id = token_id(token).ok_or(TokenRefusal::Malformed)?;
        let record = self.by_id.get(id).filter(|record| record.sha256 == sha256_hex(token.as_bytes()));
        let record = record.ok_or(TokenRefusal::Unknown)?;
        match &record.revoked_at {
            Some(revoked_at) => Err(TokenRefusal::Revoked { id: record.id.clone(), revoked_at: revoked_at.clone() }),
            None => Ok(record),
        }
    }

    /// Whether the token `id`, admitted earlier, is still known and not revoked.
    pub fn still_valid(&self, id: &str) -> Result<(), TokenRefusal> {
        let record = self.by_id.get(id).ok_or(TokenRefusal::Unknown)?;
        match &record.revoked_at {
            Some(revoked_at) => Err(TokenRefusal::Revoked { id: record.id.clone(), revoked_at: revoked_at.clone() }),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    #[serde(rename_all = "snake_case", tag = "role")]
    enum Role {
        Operator,
        Customer { customer_id: String },
    }

    fn issued(file: &mut TokenFile<Role>, role: Role, seed: u8) -> (String, TokenRecord<Role>) {
        file.issue(role, "label", [seed; 8], [seed.wrapping_add(1); 32], "2026-01-01T00:00:00Z".into()).expect("issue")
    }

    #[test]
    fn a_token_is_checked_against_its_hash_and_revocation() {
        let mut file = TokenFile::default();
        let (token, record) = issued(&mut file, Role::Operator, 1);
        assert_eq!(token, format!("wtk_{}_{}", "01".repeat(8), "02".repeat(32)));
        assert_eq!(token_id(&token), Some(record.id.as_str()));
        assert_eq!(record.sha256, sha256_hex(token.as_bytes()));
        let index = TokenIndex::from(file.clone());
        assert_eq!(index.check(&token).expect("admitted"), &record);
        let mut forged = token.clone();
        forged.replace_range(forged.len() - 1.., "3");
        assert_eq!(index.check(&forged), Err(TokenRefusal::Unknown));
        assert_eq!(index.check("wtk_unknownid_secret"), Err(TokenRefusal::Unknown));
        for malformed in ["", "Bearer", "wtk", "wtk_nosecret", "xtk_a_b"] {
            assert_eq!(index.check(malformed), Err(TokenRefusal::Malformed), "{malformed:?}");
        }
        file.revoke(&record.id, "2026-01-02T00:00:00Z".into()).expect("revoke");
        let again = file.revoke(&record.id, "2026-01-03T00:00:00Z".into()).expect("revoke again");
        assert_eq!(again.revoked_at.as_deref(), Some("2026-01-02T00:00:00Z"), "the first revocation stands");
        let index = TokenIndex::from(file.clone());
        let refusal = index.check(&token).expect_err("revoked");
        assert_eq!(refusal.code(), "revoked_token");
        assert_eq!(refusal.to_string(), format!("token {} was revoked at 2026-01-02T00:00:00Z", record.id));
        assert_eq!(index.still_valid(&record.id).map_err(|refusal| refusal.code()), Err("revoked_token"));
        assert!(matches!(file.revoke("nope", String::new()), Err(TokenError::Unknown(_))));
    }

    #[test]
    fn the_file_never_holds_a_token_and_keeps_its_format() {
        let mut file = TokenFile::default();
        let (operator, _) = issued(&mut file, Role::Operator, 1);
        let (customer, record) = issued(&mut file, Role::Customer { customer_id: "C0000001".into() }, 2);
        let json = serde_json::to_string_pretty(&file).expect("serialise");
        assert!(!json.contains(&operator) && !json.contains(&customer), "{json}");
        // The role's fields sit beside the record's (billing's files are read as they were).
        let value: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(value["tokens"][0]["role"], "operator");
        assert_eq!(value["tokens"][1]["role"], "customer");
        assert_eq!(value["tokens"][1]["customer_id"], "C0000001");
        let read: TokenFile<Role> = serde_json::from_str(&json).expect("parse");
        assert_eq!(read, file);
        assert_eq!(TokenIndex::from(read).check(&customer).expect("admitted"), &record);
    }

    #[test]
    fn labels_and_the_file_are_bounded() {
        let mut file = TokenFile::default();
        let long = "x".repeat(TOKEN_LABEL_BYTES_MAX + 1);
        assert!(matches!(
            file.issue(Role::Operator, &long, [0; 8], [0; 32], String::new()),
            Err(TokenError::LabelTooLong)
        ));
        file.tokens = vec![issued(&mut TokenFile::default(), Role::Operator, 1).1; TOKEN_RECORDS_MAX];
        assert!(matches!(file.issue(Role::Operator, "", [0; 8], [0; 32], String::new()), Err(TokenError::Full)));
    }
}
