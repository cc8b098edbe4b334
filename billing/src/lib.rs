//! The billing service: each customer's running bill, usage with costs and invoices, served from a
//! SQL read model (`read_model.rs`) that the feed (`feed.rs`) keeps in step with the ledger's
//! committed stream. Billing computes no money the ledger did not settle: it presents the
//! ledger's statements and rounds once per line or group. It never writes settlement state.
//!
//! Stages, one per file: `ledger_client` (signed reads of the ledger) → `feed` (the stream into
//! SQL) → `read_model` (the tables) → `bill`, `usage`, `invoices`, `invoice_html`, `green_button`
//! (views) → `api`, `tokens_api` (HTTP; `auth` says who may call, `openapi` documents it).

pub mod api;
pub mod auth;
pub mod bill;
pub mod feed;
pub mod green_button;
pub mod invoice_html;
pub mod invoices;
pub mod ledger_client;
pub mod metrics;
pub mod oidc;
pub mod openapi;
pub mod page;
pub mod read_model;
pub mod stream;
pub mod tariffs;
pub mod tokens_api;
pub mod usage;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use bill::Bill;

/// The database billing uses when none is given: a SQLite file in the working directory.
pub const DATABASE_DEFAULT: &str = "sqlite://billing.sqlite?mode=rwc";

/// How to run billing.
#[derive(Debug, Clone)]
pub struct BillingConfig {
    pub listen: SocketAddr,
    /// Base URL of the ledger's client API.
    pub ledger_url: String,
    /// Billing's key, registered with the ledger as a reader (`register_reader`): every read of
    /// a customer's data is signed with it (`domain::client_read`). `None`: unsigned reads, which
    /// only a development node (no peer authentication) serves.
    pub ledger_key: Option<ed25519_dalek::SigningKey>,
    /// The ledger's service public key: an `https://` ledger is trusted only if its nodes'
    /// certificates carry this key's endorsement (`domain::tls`). `None`: plain HTTP only.
    pub ledger_service_key: Option<[u8; 32]>,
    /// The read model: `sqlite://PATH?mode=rwc` (default [`DATABASE_DEFAULT`]) or
    /// `postgres://USER:PASSWORD@HOST:PORT/DATABASE`.
    pub database_url: String,
    /// The token file (`auth.rs`): hashes of the bearer tokens the operator issued.
    pub tokens_path: std::path::PathBuf,
    /// Requests per second one token may make ([`auth::RATE_PER_TOKEN_DEFAULT`]).
    pub rate_per_token: u32,
    /// The utility's identity provider, whose JWTs sign customers in beside the tokens.
    pub oidc: Option<oidc::OidcConfig>,
}

/// A running billing service.
pub struct BillingHandle {
    pub address: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<()>,
    feed: JoinHandle<()>,
}

impl std::fmt::Debug for BillingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingHandle").field("address", &self.address).finish()
    }
}

impl BillingHandle {
    pub async fn stop(mut self) {
        self.feed.abort();
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let _ = (&mut self.server).await;
    }
}

/// Opens the read model, starts the feed and serves.
pub async fn start(config: BillingConfig) -> anyhow::Result<BillingHandle> {
    if let (None, Some(missing)) =
        (config.ledger_service_key, domain::tls::missing_service_key(&config.ledger_url, "--ledger-service-key"))
    {
        anyhow::bail!(missing);
    }
    let metrics = Arc::new(metrics::Metrics::new());
    let tokens = auth::TokenStore::open(&config.tokens_path)?;
    let mut gate = auth::Gate::new(tokens, config.rate_per_token);
    if let Some(oidc) = config.oidc.clone() {
        gate = gate.with_oidc(oidc::Oidc::open(oidc).await?);
    }
    let gate = Arc::new(gate);
    let model = read_model::ReadModel::open(&config.database_url).await?;
    let position = model.position().await?;
    let ledger = ledger_client::LedgerClient::new(
        config.ledger_url.clone(),
        config.ledger_key.clone(),
        config.ledger_service_key,
        metrics.clone(),
    )?;
    let feed = feed::FeedHandle::new(position);
    tracing::info!(
        database = read_model::redact(&config.database_url),
        ledger_index = position.ledger_index,
        "billing's read model opened; following the ledger from there"
    );
    let feed_task = tokio::spawn(feed::follow(model.clone(), ledger.clone(), feed.clone(), metrics.clone()));
    let router = api::router(api::Shared {
        model,
        ledger,
        feed,
        metrics,
        gate,
        streams: Default::default(),
        tariffs: Default::default(),
    });
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let address = listener.local_addr()?;
    let (shutdown_sender, shutdown_receiver) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
            let _ = shutdown_receiver.await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "billing server stopped");
        }
    });
    tracing::info!(%address, "billing serving");
    Ok(BillingHandle { address, shutdown: Some(shutdown_sender), server, feed: feed_task })
}
