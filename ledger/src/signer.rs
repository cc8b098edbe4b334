//! The leader's signing loop: the two-step signature of Merkle roots (DESIGN.md), run by every
//! node (it acts only while it leads), in production and in the deterministic simulation alike.

use domain::settlement::RULES_VERSION;
use domain::tx::{RootSignature, Transaction, TxBody};

use crate::api::AppState;
use crate::state;

/// The leader's signature loop (DESIGN.md, two steps): while entries are unsigned, at the latest
/// every `interval` or every `SIGNATURE_EVERY_ENTRIES` entries, and at once while a client waits
/// for its commit, propose a marker, take the root this node computed when applying it, and
/// propose the signed root. A marker left pending by an earlier leader is signed first. One
/// signature is in flight at a time, so under load each covers everything since the last.
pub async fn sign_roots(app: AppState, interval: std::time::Duration) {
    let mut last_signed_at = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(crate::limits::SIGNATURE_POLL).await;
        if app.raft.metrics().borrow().current_leader != Some(app.node_id) {
            continue;
        }
        let view = app.store.state();
        let applied = app.store.applied_index();
        // Entries after the last signed marker, less the signature transaction itself (it needs
        // no signature of its own). Entries applied between a marker and its signature are
        // unsigned too: counting from the signature's index instead left them uncovered until
        // something else was written, so a client whose entry landed there waited in vain.
        let unsigned = match state::last_signed(&view) {
            Some((marker, _signature_index)) => applied.saturating_sub(marker + 1),
            None => applied,
        };
        let marker = match state::pending_marker(&view) {
            Some(marker) => marker,
            None => {
                let waiting = app.signature_waiters.load(std::sync::atomic::Ordering::Relaxed) > 0;
                let due = waiting
                    || unsigned >= crate::limits::SIGNATURE_EVERY_ENTRIES
                    || last_signed_at.elapsed() >= interval;
                if unsigned == 0 || !due {
                    continue;
                }
                match app.raft.client_write(internal_transaction(&app, TxBody::SignatureMarker)).await {
                    Ok(response) => response.log_id.index,
                    Err(error) => {
                        tracing::debug!(%error, "signature marker not committed");
                        continue;
                    }
                }
            }
        };
        let root = match app.store.history(marker) {
            Ok(Some(record)) => record.root,
            _ => continue, // not applied here yet
        };
        // The signature covers its transaction's time, so a receipt shows the key was endorsed then.
        let mut transaction = internal_transaction(&app, TxBody::SignatureMarker);
        let signature = RootSignature::sign(marker, root, app.node_id, &app.node_key, Some(transaction.time.0));
        transaction.body = TxBody::Signature(signature);
        if let Err(error) = app.raft.client_write(transaction).await {
            tracing::debug!(%error, "signature not committed");
            continue;
        }
        last_signed_at = tokio::time::Instant::now();
    }
}

pub(crate) fn internal_transaction(app: &AppState, body: TxBody) -> Transaction {
    Transaction { tx_id: crate::runtime::new_tx_id(), rules_version: RULES_VERSION, time: app.clock.now(), body }
}
