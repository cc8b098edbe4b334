//! The leader's tick loop: the state machine never reads a clock, so deadlines (a billing
//! period's close after its grace window) are driven by tick transactions the leader stamps with
//! its time (DESIGN.md, Time). Every node runs the loop; it acts only while it leads, and
//! proposes a tick only when one would close a period, so an idle ledger's log does not grow, and
//! then an invoice for each statement the close froze (`invoices.rs`) and a credit note for each
//! credit order the consortium decided (`credit_notes.rs`).

use std::time::Duration;

use domain::ids::UnixSeconds;
use domain::limits::TICK_INTERVAL_MS;
use domain::tx::TxBody;

use crate::api::AppState;

/// Every `TICK_INTERVAL_MS` while leading: if a period's close is due at this node's time,
/// propose a tick (applying it closes every due period).
pub async fn propose_ticks(app: AppState) {
    loop {
        tokio::time::sleep(Duration::from_millis(TICK_INTERVAL_MS)).await;
        if app.raft.metrics().borrow().current_leader != Some(app.node_id) {
            continue;
        }
        let now = UnixSeconds(app.clock.now().0.div_euclid(1_000));
        if crate::settle::close_is_due(&app.store.state(), now) {
            match app.raft.client_write(crate::signer::internal_transaction(&app, TxBody::Tick)).await {
                Ok(response) => {
                    tracing::info!(index = response.log_id.index, "tick proposed: a billing period is due to close")
                }
                Err(error) => tracing::debug!(%error, "tick not committed"),
            }
        }
        issue_due_invoices(&app).await;
        issue_due_credit_notes(&app).await;
        propose_secret_rotation(&app).await;
    }
}

/// Carries out a rotation of the ledger secret the consortium voted (`rotation.rs`): draws the
/// next version's secret, keeps it staged (`provision::store_staged`; a retry reuses it, so a
/// proposal that commits late still finds its secret), and proposes the current secret sealed
/// under it. Applying it (on every node, this one included) adds the new secret to the ring:
/// this node from its staged draw, the others from its ring over the secret handover.
async fn propose_secret_rotation(app: &AppState) {
    let state = app.store.state();
    if !crate::rotation::pending(&state) {
        return;
    }
    let Some(secrets) = app.store.secrets() else { return };
    let Ok(data_dir) = app.store.data_dir() else { return };
    let next = secrets.current().version + 1;
    let staged = match crate::provision::load_staged(data_dir) {
        Ok(staged) => staged.and_then(|ring| ring.key_of(next)),
        Err(error) => {
            tracing::error!(error = format!("{error:#}"), "reading the staged ledger secret; not rotating");
            return;
        }
    };
    let key = match staged {
        Some(key) => key,
        None => {
            let key: [u8; 32] = rand::random();
            let ring = secrets.as_ref().clone();
            if let Err(error) = ring
                .rotate(key)
                .map_err(anyhow::Error::from)
                .and_then(|_| crate::provision::store_staged(data_dir, &ring))
            {
                tracing::error!(error = format!("{error:#}"), "staging the new ledger secret; not rotating");
                return;
            }
            key
        }
    };
    let (version, sealed) = secrets.wrap_previous(&key, rand::random());
    let expected = crate::rotation::secret_version(&state).saturating_add(1);
    if version != expected {
        tracing::error!(
            ring = version - 1,
            state = expected - 1,
            "this node's ledger secret ring and the ledger disagree on the current version; not rotating"
        );
        return;
    }
    let Ok(sealed) = sealed.try_into() else {
        tracing::error!("a sealed secret is not ROTATION_SEALED_BYTES long");
        return;
    };
    let body = TxBody::RotateSecret { version, sealed };
    match app.raft.client_write(crate::signer::internal_transaction(app, body)).await {
        Ok(response) => tracing::info!(version, index = response.log_id.index, "ledger secret rotation proposed"),
        Err(error) => tracing::debug!(%error, "ledger secret rotation not committed"),
    }
}

/// Proposes one `IssueInvoice` per closed statement still without an invoice (`invoices.rs`),
/// one at a time: each waits for the previous to apply, so none is proposed twice by this node
/// (one proposed twice, by a new leader, is refused on apply as not due).
async fn issue_due_invoices(app: &AppState) {
    for (customer, period_start) in crate::invoices::due(&app.store.state(), crate::invoices::INVOICES_PER_ROUND_MAX) {
        let body = TxBody::IssueInvoice { customer: customer.clone(), period_start };
        match app.raft.client_write(crate::signer::internal_transaction(app, body)).await {
            Ok(response) => {
                let customer = app.log_id(customer.as_str());
                tracing::info!(index = response.log_id.index, %customer, period_start = period_start.0, "invoice issued")
            }
            Err(error) => {
                tracing::debug!(%error, "invoice not committed");
                return;
            }
        }
    }
}

/// Proposes one `IssueCreditNote` per decided credit order (`credit_notes.rs`), one at a time,
/// like invoices.
async fn issue_due_credit_notes(app: &AppState) {
    let due = crate::credit_notes::due(&app.store.state(), crate::credit_notes::CREDIT_NOTES_PER_ROUND_MAX);
    for (order, customer) in due {
        let body = TxBody::IssueCreditNote { customer: customer.clone(), order };
        match app.raft.client_write(crate::signer::internal_transaction(app, body)).await {
            Ok(response) => {
                let customer = app.log_id(customer.as_str());
                tracing::info!(index = response.log_id.index, %customer, order, "credit note issued")
            }
            Err(error) => {
                tracing::debug!(%error, "credit note not committed");
                return;
            }
        }
    }
}
