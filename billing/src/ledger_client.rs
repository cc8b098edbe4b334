//! Billing's reads of the ledger's client API, each signed with billing's registered reader key
//! (`domain::client_read`) when it has one.

use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::metrics::Metrics;

/// Timeout of one request to the ledger (a long-poll adds its wait).
pub const LEDGER_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a read of the ledger failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("the ledger did not answer: {0}")]
    Unreachable(String),
    #[error("the ledger refused billing's read ({status}): is billing's key registered as a reader? {body}")]
    Refused { status: u16, body: String },
    #[error("the ledger knows no such {0}")]
    NotFound(String),
    #[error("the ledger answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the ledger's answer did not parse: {0}")]
    Unparsable(String),
}

impl LedgerError {
    /// The metric label of the failure.
    pub fn label(&self) -> &'static str {
        match self {
            LedgerError::Unreachable(_) => "unreachable",
            LedgerError::Refused { .. } => "refused",
            LedgerError::NotFound(_) => "not_found",
            LedgerError::Status { .. } => "status",
            LedgerError::Unparsable(_) => "unparsable",
        }
    }
}

/// A client of one ledger node.
#[derive(Clone)]
pub struct LedgerClient {
    base_url: String,
    key: Option<ed25519_dalek::SigningKey>,
    http: reqwest::Client,
    metrics: std::sync::Arc<Metrics>,
}

impl LedgerClient {
    pub fn new(
        base_url: String,
        key: Option<ed25519_dalek::SigningKey>,
        service_key: Option<[u8; 32]>,
        metrics: std::sync::Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let builder = match service_key {
            None => reqwest::Client::builder(),
            Some(service_key) => {
                reqwest::Client::builder().use_preconfigured_tls(domain::tls::client_config(service_key, None)?)
            }
        };
        Ok(LedgerClient { base_url, key, http: builder.build()?, metrics })
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// GETs `path_and_query` and the raw body (`extra_wait`: how long a long-poll may hold it).
    pub async fn get_bytes(&self, path_and_query: &str, extra_wait: Duration) -> Result<Vec<u8>, LedgerError> {
        let mut request =
            self.http.get(format!("{}{path_and_query}", self.base_url)).timeout(LEDGER_REQUEST_TIMEOUT + extra_wait);
        if let Some(key) = &self.key {
            let now_ms = domain::clock::wall_clock_now().0;
            for (name, value) in domain::client_read::sign_request(key, "GET", path_and_query, now_ms) {
                request = request.header(name, value);
            }
        }
        let started = Instant::now();
        let result = self.answer(request.send().await, path_and_query).await;
        self.metrics.ledger_latency_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(error) = &result {
            self.metrics.ledger_error(error.label());
        }
        result
    }

    async fn answer(&self, response: reqwest::Result<reqwest::Response>, path: &str) -> Result<Vec<u8>, LedgerError> {
        let response = response.map_err(|error| LedgerError::Unreachable(error.to_string()))?;
        let status = response.status();
        let body = response.bytes().await.map_err(|error| LedgerError::Unreachable(error.to_string()))?.to_vec();
        let text = || String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
        match status {
            StatusCode::OK => Ok(body),
            StatusCode::NOT_FOUND => Err(LedgerError::NotFound(path.to_string())),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(LedgerError::Refused { status: status.as_u16(), body: text() })
            }
            status => Err(LedgerError::Status { status: status.as_u16(), body: text() }),
        }
    }

    /// GETs `path_and_query` and parses it as `T`.
    pub async fn get<T: serde::de::DeserializeOwned>(&self, path_and_query: &str) -> Result<T, LedgerError> {
        self.get_waiting(path_and_query, Duration::ZERO).await
    }

    /// [`get`](Self::get) for a long-poll that may hold the answer up to `wait`.
    pub async fn get_waiting<T: serde::de::DeserializeOwned>(
        &self,
        path_and_query: &str,
        wait: Duration,
    ) -> Result<T, LedgerError> {
        let body = self.get_bytes(path_and_query, wait).await?;
        serde_json::from_slice(&body).map_err(|error| LedgerError::Unparsable(error.to_string()))
    }
}
