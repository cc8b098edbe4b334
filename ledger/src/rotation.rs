//! Rotating the ledger secret by governance (issue 15). Part of the state machine (sans-IO):
//!
//! 1. Members vote a `rotate_ledger_secret` action; applying it marks a rotation pending.
//! 2. The leader (`ticker.rs`) draws the next version's secret, keeps it staged on its disk, and
//!    proposes `TxBody::RotateSecret`: the *current* secret sealed under the new one (old wrapped
//!    under new, as CCF keeps its past ledger secrets). The new secret is not in the log.
//! 3. Applying it here checks it is the pending rotation's next version and records that version;
//!    the store (`store.rs`, `provision::adopt_rotation`) then takes the new secret — the
//!    leader from its staged draw, every other node from a peer's ring over the secret handover
//!    (wrapped for its X25519 key) — recognises it by opening the payload into the previous
//!    version, adds it to the node's ring and keeps the ring, wrapped for the node's own key,
//!    before the entry's writes reach disk. From then on values are sealed under the new
//!    version; every older version stays in the ring, so everything sealed before still opens,
//!    and `wattle audit` with the node's ring replays it all.
//!
//! Whoever holds an older version and a copy of the log learns nothing of the newer ones. A
//! second proposal for the same version (two leaders) is refused on apply, so every node adopts
//! the same secret.

use crate::state::{Overlay, StateRead, Table};

/// `[1]` while a voted rotation waits for the leader's new secret (empty once carried out: the
/// state's writes are puts only).
const KEY_ROTATION_PENDING: &[u8] = b"secret_rotation_pending";
/// The ledger secret version values are sealed under (absent: 1, the founding version).
const KEY_SECRET_VERSION: &[u8] = b"secret_version";

/// The version of the ledger secret the state says seals new values.
pub fn secret_version(state: &dyn StateRead) -> u32 {
    state
        .get(Table::Public, KEY_SECRET_VERSION)
        .and_then(|bytes| Some(u32::from_be_bytes(bytes.as_slice().try_into().ok()?)))
        .unwrap_or(1)
}

/// Whether a voted rotation waits for its secret.
pub fn pending(state: &dyn StateRead) -> bool {
    state.get(Table::Public, KEY_ROTATION_PENDING).is_some_and(|value| value == [1])
}

/// Applies a passed `RotateLedgerSecret`: a rotation is pending (a second vote before the first
/// is carried out asks for the same rotation).
pub fn request(state: &mut Overlay<'_>) {
    state.put(Table::Public, KEY_ROTATION_PENDING.to_vec(), vec![1]);
}

/// Applies `RotateSecret` to the state: the next version after a voted rotation, or why not.
pub fn apply(state: &mut Overlay<'_>, version: u32) -> Result<(), String> {
    if !pending(state) {
        return Err("no_rotation_pending: the consortium has not voted a rotation of the ledger secret".into());
    }
    let current = secret_version(state);
    if version != current.saturating_add(1) {
        return Err(format!("wrong_secret_version: the next version is {}, not {version}", current.saturating_add(1)));
    }
    state.put(Table::Public, KEY_SECRET_VERSION.to_vec(), version.to_be_bytes().to_vec());
    state.put(Table::Public, KEY_ROTATION_PENDING.to_vec(), Vec::new());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::state::EmptyState as Empty;

    #[test]
    fn a_rotation_is_carried_out_once_per_vote_and_in_version_order() {
        let base = Empty;
        let mut state = Overlay::new(&base);
        assert_eq!(secret_version(&state), 1);
        assert!(apply(&mut state, 2).expect_err("not voted").starts_with("no_rotation_pending"));
        request(&mut state);
        assert!(pending(&state));
        assert!(apply(&mut state, 3).expect_err("skips 2").starts_with("wrong_secret_version"));
        apply(&mut state, 2).expect("the voted rotation");
        assert_eq!(secret_version(&state), 2);
        assert!(!pending(&state));
        assert!(apply(&mut state, 3).expect_err("a second proposal").starts_with("no_rotation_pending"));
    }
}
