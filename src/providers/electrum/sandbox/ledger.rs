//! What the sandbox remembers: every provision, redemption and refund it answered, each
//! with its state after advices ([`Advised`]), and every voucher with what holds it. The
//! state table (`table`) reads and changes it; lookupVoucher reports a voucher's state.

use std::collections::HashMap;
use std::time::Instant;

use axum::http::StatusCode;
use rand::Rng;
use serde_json::{Value, json};
use uuid::Uuid;

use super::answer::{Answer, redeem_instructions};
use super::faults::{Fault, PendingFaults};
use super::operation::{Family, Operation};
use super::stats::{Stats, bump};

/// Where a transaction stands after its advices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Advised {
    Open,
    Confirmed,
    Reversed,
}

/// One provision, redemption or refund the sandbox has answered.
pub(super) struct Tx {
    /// `client.id` of the request; advices and lookups must come from the same username.
    pub(super) client: String,
    /// The voucher it is about.
    pub(super) code: String,
    /// Refused ones are kept for duplicate detection and lookupRedemption only.
    pub(super) approved: bool,
    pub(super) state: Advised,
    /// The original answer, replayed by lookupRedemption.
    pub(super) status: StatusCode,
    pub(super) answer: Value,
    /// Until when a [`Fault::TimeoutAfterEffect`] holds the original answer.
    pub(super) held_until: Option<Instant>,
}

/// One provisioned voucher.
pub(super) struct Voucher {
    /// Its provision request's id.
    pub(super) provision: Uuid,
    /// The provision request's `time`.
    pub(super) time: Value,
    pub(super) expiry: String,
    /// The approved redemption that holds the voucher (open or confirmed).
    pub(super) holder: Option<Uuid>,
    /// The approved refund awaiting confirmation or reversal.
    pub(super) pending_refund: Option<Uuid>,
    /// A refund was confirmed and nothing redeemed the voucher since.
    pub(super) refunded: bool,
}

/// Everything the sandbox knows; one lock guards it all.
pub(super) struct Ledger {
    pub(super) stats: Stats,
    pub(super) faults: PendingFaults,
    pub(super) provisions: HashMap<Uuid, Tx>,
    pub(super) redemptions: HashMap<Uuid, Tx>,
    pub(super) refunds: HashMap<Uuid, Tx>,
    /// By voucher code.
    pub(super) vouchers: HashMap<String, Voucher>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            stats: Stats::zero(),
            faults: PendingFaults::default(),
            provisions: HashMap::new(),
            redemptions: HashMap::new(),
            refunds: HashMap::new(),
            vouchers: HashMap::new(),
        }
    }
}

impl Ledger {
    /// The transactions of `family`, by request id.
    pub(super) fn txs(&mut self, family: Family) -> &mut HashMap<Uuid, Tx> {
        match family {
            Family::Provision => &mut self.provisions,
            Family::Redemption => &mut self.redemptions,
            Family::Refund => &mut self.refunds,
        }
    }

    /// Consumes the next fault injected for `operation`, if any, and counts it.
    pub(super) fn take_fault(&mut self, operation: Operation) -> Option<Fault> {
        let fault = self.faults.take(operation)?;
        bump(&mut self.stats.faults, operation);
        Some(fault)
    }

    /// The provision state of a voucher; a voucher without its provision cannot exist, but
    /// if it did it would be as good as reversed.
    pub(super) fn provision_state(&self, voucher: &Voucher) -> Advised {
        self.provisions
            .get(&voucher.provision)
            .map_or(Advised::Reversed, |tx| tx.state)
    }

    /// A voucher code no other voucher has.
    pub(super) fn fresh_code(&self) -> String {
        let mut rng = rand::rng();
        loop {
            let len = rng.random_range(12..=16);
            let code: String = (0..len)
                .map(|i| {
                    let low = if i == 0 { 1 } else { 0 };
                    char::from(b'0' + rng.random_range(low..10u8))
                })
                .collect();
            if !self.vouchers.contains_key(&code) {
                return code;
            }
        }
    }

    /// The VoucherLookupResponse of the voucher `code` (shape in the module doc of
    /// [`sandbox`](super)).
    pub(super) fn voucher_lookup(&self, code: &str) -> Option<Value> {
        let v = self.vouchers.get(code)?;
        let state = self.voucher_state(v);
        let mut body = json!({
            "id": v.provision.to_string(),
            "time": v.time,
            "voucher": {"code": code, "expiryDate": v.expiry,
                        "redeemInstructions": redeem_instructions()},
            "state": state,
            "redeemable": matches!(state, "CONFIRMED" | "REFUNDED"),
        });
        if let Some(map) = body.as_object_mut() {
            if let Some(holder) = v.holder {
                map.insert("redemptionRequestId".into(), json!(holder.to_string()));
            }
            if let Some(refund) = v.pending_refund {
                map.insert("refundRequestId".into(), json!(refund.to_string()));
            }
        }
        Some(body)
    }

    /// The `state` lookupVoucher reports for `v`.
    fn voucher_state(&self, v: &Voucher) -> &'static str {
        let redemption_state = |id: &Uuid| self.redemptions.get(id).map(|r| r.state);
        match self.provision_state(v) {
            Advised::Open => "PROVISIONED",
            Advised::Reversed => "REVERSED",
            Advised::Confirmed if v.pending_refund.is_some() => "REFUND_PENDING",
            Advised::Confirmed => match v.holder.as_ref().and_then(redemption_state) {
                Some(Advised::Open) => "REDEEMED",
                Some(_) => "REDEMPTION_CONFIRMED",
                None if v.refunded => "REFUNDED",
                None => "CONFIRMED",
            },
        }
    }
}

/// What every new transaction record starts with.
pub(super) struct TxHeader {
    pub(super) id: Uuid,
    pub(super) client: String,
    pub(super) held_until: Option<Instant>,
}

impl TxHeader {
    /// Records the transaction with its answer, approved or refused.
    pub(super) fn record(self, ledger: &mut Ledger, family: Family, code: &str, answer: &Answer) {
        let tx = Tx {
            client: self.client,
            code: code.to_string(),
            approved: answer.effect,
            state: Advised::Open,
            status: answer.status,
            answer: answer.body.clone(),
            held_until: self.held_until,
        };
        ledger.txs(family).insert(self.id, tx);
    }
}
