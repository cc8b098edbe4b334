//! Admission to a node's write path: bounds on the reading submissions in flight, per gateway id
//! and in all, so a flood is answered `429` at once instead of growing tasks and memory without
//! bound. A submission holds its [`Permit`] until it is answered or, with `?wait=false`, until
//! its background proposal has finished, so both ways are bounded alike.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use domain::ids::GatewayId;

/// Why a submission was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    #[error("{limit} submissions are in flight at this node; retry later")]
    Node { limit: usize },
    #[error("{limit} submissions from this gateway are in flight at this node; retry later")]
    Gateway { limit: usize },
}

impl Busy {
    /// The stable code of the `429` answer.
    pub fn code(self) -> &'static str {
        match self {
            Busy::Node { .. } => "overloaded",
            Busy::Gateway { .. } => "gateway_overloaded",
        }
    }
}

/// The in-flight bounds of one node (cheap to clone; clones share the counts).
#[derive(Debug, Clone)]
pub struct Admission {
    in_flight: Arc<Mutex<InFlight>>,
    per_gateway_max: usize,
    total_max: usize,
}

#[derive(Debug, Default)]
struct InFlight {
    total: usize,
    /// Only gateways with submissions in flight, so the map holds at most `total_max` entries.
    by_gateway: HashMap<GatewayId, usize>,
}

/// One admitted submission; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    admission: Admission,
    gateway_id: GatewayId,
}

impl Admission {
    /// Bounds of `per_gateway_max` submissions per gateway id and `total_max` in all.
    pub fn new(per_gateway_max: usize, total_max: usize) -> Self {
        Admission { in_flight: Arc::default(), per_gateway_max, total_max }
    }

    /// Admits one submission from `gateway_id`, or says which bound is reached.
    pub fn admit(&self, gateway_id: &GatewayId) -> Result<Permit, Busy> {
        let mut in_flight = self.lock();
        if in_flight.total >= self.total_max {
            return Err(Busy::Node { limit: self.total_max });
        }
        let from_gateway = in_flight.by_gateway.get(gateway_id).copied().unwrap_or(0);
        if from_gateway >= self.per_gateway_max {
            return Err(Busy::Gateway { limit: self.per_gateway_max });
        }
        in_flight.total += 1;
        in_flight.by_gateway.insert(gateway_id.clone(), from_gateway + 1);
        Ok(Permit { admission: self.clone(), gateway_id: gateway_id.clone() })
    }

    /// Submissions in flight now.
    pub fn in_flight(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InFlight> {
        // Nothing panics while holding the lock (counter arithmetic and one map update).
        self.in_flight.lock().expect("admission lock is never poisoned")
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut in_flight = self.admission.lock();
        in_flight.total -= 1;
        match in_flight.by_gateway.get_mut(&self.gateway_id) {
            Some(count) if *count > 1 => *count -= 1,
            _ => {
                in_flight.by_gateway.remove(&self.gateway_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(name: &str) -> GatewayId {
        GatewayId::new(name).expect("valid id")
    }

    #[test]
    fn each_gateway_and_the_node_are_bounded_and_dropping_a_permit_frees_its_place() {
        let admission = Admission::new(2, 3);
        let first = admission.admit(&gateway("a")).expect("admitted");
        let _second = admission.admit(&gateway("a")).expect("admitted");
        assert_eq!(admission.admit(&gateway("a")).expect_err("over the gateway bound"), Busy::Gateway { limit: 2 });
        let _third = admission.admit(&gateway("b")).expect("admitted");
        assert_eq!(admission.admit(&gateway("c")).expect_err("over the node bound"), Busy::Node { limit: 3 });
        assert_eq!(admission.in_flight(), 3);
        drop(first);
        assert_eq!(admission.in_flight(), 2);
        let _again = admission.admit(&gateway("a")).expect("a place was freed");
        assert_eq!(Busy::Node { limit: 3 }.code(), "overloaded");
        assert_eq!(Busy::Gateway { limit: 2 }.code(), "gateway_overloaded");
    }
}
