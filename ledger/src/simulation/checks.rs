//! The simulation's invariants, checked on every replica after every step, and the final
//! heal-and-converge phase.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use domain::ids::{KeyId, MeterId, Sequence};
use domain::reading::ReadingDigest;
use sha2::{Digest, Sha256};

use super::clients::{self, model_lock, Submitted};
use super::network::lock;
use super::{Simulation, Violation, CLIENT_TIMEOUT, CONVERGE_WITHIN};
use crate::state::{self, Table};
use crate::store::Store;

impl Simulation {
    /// Checks every invariant on every replica, live or crashed, and notes what each one holds.
    pub(super) fn check(&mut self) -> Result<(), Violation> {
        let mut results = std::mem::take(&mut model_lock(&self.model).results);
        // Sorted: clients woken by one signature (a `watch` channel, which wakes its waiters in
        // an order Tokio randomises) finish at the same virtual instant in either order. What
        // each was told is deterministic; the order among them within a step is not meaningful.
        results.sort();
        for line in results {
            self.note(line);
        }
        if let Some(message) = model_lock(&self.model).violation.take() {
            return Err(self.violation(message));
        }
        let (accepted, duplicates) = {
            let model = model_lock(&self.model);
            (model.accepted.clone(), model.duplicates.clone())
        };
        for position in 0..self.nodes.len() {
            let observation =
                self.check_node(position, &accepted, &duplicates).map_err(|message| self.violation(message))?;
            self.note(observation);
        }
        Ok(())
    }

    fn check_node(
        &mut self,
        position: usize,
        accepted: &BTreeMap<(MeterId, u64), (ReadingDigest, u64)>,
        duplicates: &BTreeMap<(MeterId, u64), u64>,
    ) -> Result<String, String> {
        let node = &self.nodes[position];
        let id = node.id;
        let store = node.store.clone();
        let applied = store.applied_index();
        if applied < node.checked_index {
            return Err(format!("node {id}: applied index went back from {} to {applied}", node.checked_index));
        }
        // Committed entries never change, and no two replicas apply different entries at an index.
        for index in node.checked_index + 1..=applied {
            let Some(record) = store.history(index).map_err(|error| error.to_string())? else {
                continue; // before the snapshot this replica installed
            };
            let hash: [u8; 32] = Sha256::digest(&record.entry).into();
            match self.committed.get(&index) {
                Some(known) if *known != hash => return Err(format!("node {id}: fork, entry {index} differs")),
                Some(_) => {}
                None => {
                    self.committed.insert(index, hash);
                }
            }
        }
        self.nodes[position].checked_index = applied;
        // Equal state at equal index.
        let digest = store.state_digest().map_err(|error| error.to_string())?;
        match self.digests.get(&applied) {
            Some(known) if *known != digest => {
                return Err(format!("node {id}: state at index {applied} differs from another replica's"));
            }
            Some(_) => {}
            None => {
                self.digests.insert(applied, digest);
            }
        }
        // The books balance.
        let private = store.scan_prefix(Table::Private, b"");
        state::check_books(&store.state(), &private).map_err(|error| format!("node {id}: books: {error}"))?;
        crate::settle::check_party_books(&private).map_err(|error| format!("node {id}: party books: {error}"))?;
        // With the whole history, the state's per-meter totals are the sum of the lines.
        if store.history_start().map_err(|error| error.to_string())? == Some(0)
            && store.history_range(0, applied + 1).map_err(|error| error.to_string())?.len() as u64 == applied + 1
        {
            store.check_settled_lines().map_err(|error| format!("node {id}: books against the history: {error}"))?;
        }
        // Nothing a client saw accepted is lost: its sequence is settled in state, and its line
        // (with the digest it was accepted with) is in the history wherever the entry is.
        let view = store.state();
        for ((meter_id, sequence), (digest, index)) in accepted {
            if *index > applied {
                continue;
            }
            if !state::sequence_settled(&view, meter_id, KeyId(1), Sequence(*sequence)) {
                return Err(format!("node {id}: {meter_id} #{sequence}, accepted at {index}, is not settled"));
            }
            let holds_entry = store.history(*index).map_err(|error| error.to_string())?.is_some();
            match store.settled_line(meter_id, KeyId(1), Sequence(*sequence)).map_err(|error| error.to_string())? {
                Some(line) if line.digest == *digest && line.log_index == *index => {}
                Some(_) => return Err(format!("node {id}: {meter_id} #{sequence} settled with other content")),
                None if holds_entry => {
                    return Err(format!("node {id}: {meter_id} #{sequence}, accepted at {index}, has no line"))
                }
                None => {} // before the snapshot this replica installed
            }
        }
        for ((meter_id, sequence), index) in duplicates {
            if *index <= applied && !state::sequence_settled(&view, meter_id, KeyId(1), Sequence(*sequence)) {
                return Err(format!("node {id}: {meter_id} #{sequence}, a duplicate at {index}, is not settled"));
            }
        }
        let (alive, term) = match &self.nodes[position].raft {
            Some(raft) => (true, raft.metrics().borrow().current_term),
            None => (false, 0),
        };
        self.report.max_term = self.report.max_term.max(term);
        Ok(format!("node {id}: up {alive} term {term} applied {applied} state {}", hex::encode(&digest[..8])))
    }

    /// Heals everything, restarts every node, then requires a new commit and one common state.
    pub(super) async fn converge(&mut self) -> Result<(), Violation> {
        {
            let mut net = lock(&self.net);
            net.isolated.clear();
            net.loss_per_mille = 0;
            net.delay_max_ms = 5;
        }
        for position in 0..self.nodes.len() {
            if self.nodes[position].raft.is_none() {
                self.start_node(position).await.map_err(|error| self.violation(format!("restarting: {error}")))?;
            }
        }
        self.note("heal all, restart all".into());
        let deadline = tokio::time::Instant::now() + CONVERGE_WITHIN;
        // A fresh reading through the API, waited for: accepted and covered by a signature.
        let batch = self.fresh_batch();
        self.submitted.push(batch.clone());
        let final_index = loop {
            if tokio::time::Instant::now() >= deadline {
                return Err(self.violation("the healed cluster committed nothing within 60 s"));
            }
            if let Some((router, _)) = self.client_target() {
                let answer = tokio::time::timeout(CLIENT_TIMEOUT, clients::submit_readings(router, &batch, true)).await;
                if let Ok(Submitted::Answered(answer)) = answer {
                    let settled_by = self.stores().iter().map(Store::applied_index).max().unwrap_or(0);
                    model_lock(&self.model).record(&batch, &answer, settled_by);
                    match answer.log_index {
                        Some(index) => break index,
                        None => {
                            return Err(self.violation(format!("fresh readings not proposed: {:?}", answer.outcomes)))
                        }
                    }
                }
            }
            self.advance(Duration::from_millis(100)).await;
        };
        loop {
            let applied: Vec<u64> = self.nodes.iter().map(|node| node.store.applied_index()).collect();
            if applied.iter().all(|&index| index >= final_index) && applied.windows(2).all(|pair| pair[0] == pair[1]) {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.violation(format!("replicas did not converge: applied {applied:?}")));
            }
            self.advance(Duration::from_millis(100)).await;
        }
        self.check()?;
        let digests: BTreeSet<[u8; 32]> =
            self.nodes.iter().map(|node| node.store.state_digest().expect("memory store readable")).collect();
        if digests.len() != 1 {
            return Err(self.violation("converged replicas hold different states"));
        }
        // Every accepted reading is on every replica (the per-step check covers each applied index).
        self.report.final_index = final_index;
        self.report.signed_index = self.nodes[0].store.signed_index();
        let periods = self.nodes[0].store.scan_prefix(Table::Private, crate::settle::PERIOD_PREFIX);
        self.report.periods_closed =
            periods.iter().filter(|(_, bytes)| crate::settle::decode_period(bytes).statement.is_some()).count() as u64;
        if self.report.signed_index < final_index {
            return Err(self.violation(format!(
                "the final reading was answered at {final_index}, but signatures cover only {}",
                self.report.signed_index
            )));
        }
        self.note(format!("converged at {final_index}"));
        Ok(())
    }
}
