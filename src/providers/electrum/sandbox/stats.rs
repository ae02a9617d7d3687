//! The counters a test or the demo reads back: calls, effects and faults per operation.

use std::collections::BTreeMap;

use super::Operation;

/// Counters per operation. Every operation is present, with 0 when nothing happened; the
/// `*_of` methods read one. Serialized as
/// `{"calls": {"redeem": 2, ...}, "effects": {...}, "faults": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Requests received on the operation's route, whatever their answer (malformed,
    /// refused and faulted ones included).
    pub calls: BTreeMap<Operation, u32>,
    /// State changes applied: approved provisions, redemptions and refunds, and the first
    /// confirmation or reversal of each. A repeated, idempotent 202 changes nothing and is not
    /// counted, nor is a reversal answered 404 (remembered, but nothing is reversed); lookups
    /// never count.
    pub effects: BTreeMap<Operation, u32>,
    /// Calls answered by an injected fault (both kinds).
    pub faults: BTreeMap<Operation, u32>,
}

impl Stats {
    /// Every counter at 0, so every operation is present from the start.
    pub(super) fn zero() -> Stats {
        let zeros: BTreeMap<Operation, u32> = Operation::ALL.iter().map(|op| (*op, 0)).collect();
        Stats {
            calls: zeros.clone(),
            effects: zeros.clone(),
            faults: zeros,
        }
    }

    /// Requests received for `operation`.
    pub fn calls_of(&self, operation: Operation) -> u32 {
        self.calls.get(&operation).copied().unwrap_or(0)
    }

    /// Effects applied by `operation`.
    pub fn effects_of(&self, operation: Operation) -> u32 {
        self.effects.get(&operation).copied().unwrap_or(0)
    }

    /// Calls of `operation` answered by an injected fault.
    pub fn faults_of(&self, operation: Operation) -> u32 {
        self.faults.get(&operation).copied().unwrap_or(0)
    }
}

/// Adds one to the counter of `operation`.
pub(super) fn bump(counters: &mut BTreeMap<Operation, u32>, operation: Operation) {
    let count = counters.entry(operation).or_insert(0);
    *count = count.saturating_add(1);
}
