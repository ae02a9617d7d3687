//! The sales the sandbox has made, by terminal and `localReference`, with the counters: a
//! purchase is decided once (by its operator, in `operators`) and replayed ever after.

use std::collections::HashMap;
use std::time::Instant;

use serde_json::{Value, json};

use super::operators::decide_sale;
use super::{INITIAL_BALANCE_X100, OPERATOR_RAFFLE, SandboxOptions, Stats};
use crate::providers::csq::params::PurchaseBody;

/// One purchase the sandbox has answered.
pub(super) struct Sale {
    operator: i32,
    /// Whether a voucher was sold (not a decline).
    sold: bool,
    /// The purchase answer, replayed for a reused `localReference`.
    answer: Value,
    /// The receipt with everything, served by additional-data once `ready_at` has passed.
    pub(super) full: Value,
    pub(super) ready_at: Instant,
    /// For raffle tickets: when the draw takes place.
    pub(super) draw_at: Option<Instant>,
}

pub(super) struct Ledger {
    pub(super) stats: Stats,
    /// (terminal, localReference) -> the sale.
    sales: HashMap<(i32, i32), Sale>,
    /// Purchase calls to operator 1008 so far: every odd one fails.
    flaky_calls: u64,
    /// Chaos faults: the state of the generator that picks the calls, and how many met one.
    fault_seed: u64,
    faults: u64,
}

/// What a chaos fault does to one purchase call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChaosFault {
    /// 503, nothing sold.
    Unavailable,
    /// Sold; the answer is held past any client timeout.
    AnswerHeld,
    /// Sold; the connection is dropped mid-answer.
    ConnectionDropped,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            stats: Stats {
                balance_x100: INITIAL_BALANCE_X100,
                ..Stats::default()
            },
            sales: HashMap::new(),
            flaky_calls: 0,
            fault_seed: 0x9E37_79B9_7F4A_7C15,
            faults: 0,
        }
    }
}

/// What a purchase gets from the ledger.
pub(super) enum Purchase {
    /// Decided now, sold or not: the answer (operator 1006 holds it back).
    Decided(Value),
    /// The `localReference` was used before on this terminal: the first answer again, or
    /// rc 12 if another operator's purchase used it. It goes out at once.
    Known(Value),
}

impl Ledger {
    /// Whether this purchase call meets a chaos fault, and which: `per_mille` of the calls,
    /// picked by a fixed-seed generator so a run can be repeated, the three kinds in turn.
    pub(super) fn chaos_fault(&mut self, per_mille: u16) -> Option<ChaosFault> {
        if per_mille == 0 {
            return None;
        }
        let x = crate::sandbox::next_roll(&mut self.fault_seed);
        if x % 1000 >= u64::from(per_mille) {
            return None;
        }
        self.faults += 1;
        Some(match self.faults % 3 {
            0 => ChaosFault::Unavailable,
            1 => ChaosFault::AnswerHeld,
            _ => ChaosFault::ConnectionDropped,
        })
    }

    /// Every sale made, for `GET /sandbox/sales`.
    pub(super) fn sold(&self) -> Vec<super::SaleRecord> {
        let mut sold: Vec<super::SaleRecord> = self
            .sales
            .iter()
            .filter(|(_, sale)| sale.sold)
            .map(|((terminal, reference), sale)| super::SaleRecord {
                terminal_id: *terminal,
                local_reference: *reference,
                operator_id: sale.operator,
            })
            .collect();
        sold.sort_by_key(|s| (s.terminal_id, s.local_reference));
        sold
    }

    /// Whether this purchase call to operator 1008 is one that fails (the 1st, 3rd, ...).
    pub(super) fn flaky_fails(&mut self) -> bool {
        self.flaky_calls += 1;
        self.flaky_calls % 2 == 1
    }

    /// The sale of `reference` on `terminal`, if it was made with `operator`.
    pub(super) fn sale(&self, terminal: i32, operator: i32, reference: i32) -> Option<&Sale> {
        self.sales
            .get(&(terminal, reference))
            .filter(|sale| sale.operator == operator)
    }

    /// A purchase of `reference` on `terminal` from `operator`, counted: replayed if the
    /// reference is known, else decided by the operator and recorded, and if sold, paid
    /// from the balance.
    pub(super) fn purchase(
        &mut self,
        options: &SandboxOptions,
        (terminal, operator, reference): (i32, i32, i32),
        body: &PurchaseBody,
    ) -> Purchase {
        self.stats.purchase_calls += 1;
        if let Some(sale) = self.sales.get(&(terminal, reference)) {
            if sale.operator == operator {
                return Purchase::Known(sale.answer.clone());
            }
            return Purchase::Known(
                json!({"rc": 12, "resultmessage": "localReference already used on this terminal"}),
            );
        }
        let decision = decide_sale(options, operator, body);
        let sold = decision.answer["items"][0]["finalstatus"] == 0;
        let draw_at =
            (operator == OPERATOR_RAFFLE && sold).then(|| Instant::now() + options.draw_delay);
        if sold {
            self.stats.purchases_applied += 1;
            self.stats.balance_x100 -= i64::from(body.amount_to_send_x100.unwrap_or(0));
        }
        self.sales.insert(
            (terminal, reference),
            Sale {
                operator,
                sold,
                answer: decision.answer.clone(),
                full: decision.full,
                ready_at: Instant::now() + decision.ready_after,
                draw_at,
            },
        );
        Purchase::Decided(decision.answer)
    }
}
