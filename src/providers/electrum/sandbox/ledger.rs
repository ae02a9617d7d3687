//! What the sandbox remembers: every provision, redemption and refund it answered, each
//! with its state after advices ([`Advised`]), the reversals of each family (also those that
//! came before their request), and every voucher with what holds it. The state table
//! (`table` and `advices`) reads and changes it; lookupVoucher reports a voucher's state.

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

/// The requests of one family (provisions, redemptions or refunds) and their reversals.
///
/// Requests are kept by request id and voucher together, as Electrum's server keys them: the
/// same redemption id for another voucher is another redemption. An advice names only the
/// request id, so it is about the latest approved request with that id.
#[derive(Default)]
pub(super) struct Book {
    /// By request id; several only when the id was reused for other vouchers, in arrival
    /// order.
    requests: HashMap<Uuid, Vec<Tx>>,
    /// Every reversal that was not refused, by the request id it names, with its own id. A
    /// reversal that arrives before its request is answered 404 but kept here, so that the
    /// late request is refused as already reversed.
    reversals: HashMap<Uuid, Uuid>,
}

impl Book {
    /// The request `id` about the voucher `code`.
    pub(super) fn find(&self, id: Uuid, code: &str) -> Option<&Tx> {
        self.requests.get(&id)?.iter().find(|tx| tx.code == code)
    }

    /// The latest request with this id, approved or refused.
    pub(super) fn latest(&self, id: Uuid) -> Option<&Tx> {
        self.requests.get(&id)?.last()
    }

    /// The latest approved request with this id: the one its advices are about.
    pub(super) fn advised(&self, id: Uuid) -> Option<&Tx> {
        self.requests.get(&id)?.iter().rev().find(|tx| tx.approved)
    }

    /// [`Book::advised`], to change its state.
    pub(super) fn advised_mut(&mut self, id: Uuid) -> Option<&mut Tx> {
        self.requests
            .get_mut(&id)?
            .iter_mut()
            .rev()
            .find(|tx| tx.approved)
    }

    /// Records the request `id`.
    fn insert(&mut self, id: Uuid, tx: Tx) {
        self.requests.entry(id).or_default().push(tx);
    }

    /// The id of the first reversal that named request `id`, if one did and was not refused.
    pub(super) fn reversal(&self, id: Uuid) -> Option<Uuid> {
        self.reversals.get(&id).copied()
    }

    /// Remembers the reversal `reversal_id` of request `request_id` (the first one is kept).
    pub(super) fn remember_reversal(&mut self, request_id: Uuid, reversal_id: Uuid) {
        self.reversals.entry(request_id).or_insert(reversal_id);
    }
}

/// One provisioned voucher.
pub(super) struct Voucher {
    /// Its provision request's id.
    pub(super) provision: Uuid,
    /// The provision request's `time`.
    pub(super) time: Value,
    pub(super) expiry: String,
    /// The id of the approved redemption (of this voucher) that holds it, open or confirmed.
    pub(super) holder: Option<Uuid>,
    /// The id of the approved refund (of this voucher) awaiting confirmation or reversal.
    pub(super) pending_refund: Option<Uuid>,
    /// A refund was confirmed and nothing redeemed the voucher since.
    pub(super) refunded: bool,
}

/// Everything the sandbox knows; one lock guards it all.
pub(super) struct Ledger {
    pub(super) stats: Stats,
    pub(super) faults: PendingFaults,
    pub(super) provisions: Book,
    pub(super) redemptions: Book,
    pub(super) refunds: Book,
    /// By voucher code.
    pub(super) vouchers: HashMap<String, Voucher>,
    /// Calls per thousand that meet a random fault when none was injected (chaos runs),
    /// and the state of the fixed-seed generator that picks them.
    pub(super) random_faults: u16,
    fault_seed: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            stats: Stats::zero(),
            faults: PendingFaults::default(),
            provisions: Book::default(),
            redemptions: Book::default(),
            refunds: Book::default(),
            vouchers: HashMap::new(),
            random_faults: 0,
            fault_seed: 0x2545_F491_4F6C_DD1D,
        }
    }
}

impl Ledger {
    /// The requests and reversals of `family`.
    pub(super) fn book(&self, family: Family) -> &Book {
        match family {
            Family::Provision => &self.provisions,
            Family::Redemption => &self.redemptions,
            Family::Refund => &self.refunds,
        }
    }

    /// [`Ledger::book`], to change it.
    pub(super) fn book_mut(&mut self, family: Family) -> &mut Book {
        match family {
            Family::Provision => &mut self.provisions,
            Family::Redemption => &mut self.redemptions,
            Family::Refund => &mut self.refunds,
        }
    }

    /// Consumes the next fault injected for `operation`, if any, or else meets a random one
    /// (chaos runs), and counts it.
    pub(super) fn take_fault(&mut self, operation: Operation) -> Option<Fault> {
        let fault = self
            .faults
            .take(operation)
            .or_else(|| self.random_fault())?;
        bump(&mut self.stats.faults, operation);
        Some(fault)
    }

    /// `random_faults` calls in a thousand: a 503 before the effect or a timeout after it,
    /// in turn.
    fn random_fault(&mut self) -> Option<Fault> {
        if self.random_faults == 0 {
            return None;
        }
        let x = crate::sandbox::next_roll(&mut self.fault_seed);
        if x % 1000 >= u64::from(self.random_faults) {
            return None;
        }
        Some(if (x / 1000) % 2 == 0 {
            Fault::ErrorBeforeEffect(503)
        } else {
            Fault::TimeoutAfterEffect
        })
    }

    /// Every approved provision, redemption and refund, with where it stands.
    pub(super) fn effects(&self) -> Vec<super::EffectRecord> {
        let mut all = Vec::new();
        for (family, book) in [
            ("provision", &self.provisions),
            ("redeem", &self.redemptions),
            ("refund", &self.refunds),
        ] {
            for (id, txs) in &book.requests {
                for tx in txs.iter().filter(|tx| tx.approved) {
                    all.push(super::EffectRecord {
                        family: family.to_string(),
                        request_id: *id,
                        reversed: tx.state == Advised::Reversed,
                    });
                }
            }
        }
        all
    }

    /// The provision state of a voucher; a voucher without its provision cannot exist, but
    /// if it did it would be as good as reversed.
    pub(super) fn provision_state(&self, voucher: &Voucher) -> Advised {
        self.provisions
            .advised(voucher.provision)
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

    /// The `voucher` of a ProvisionResponse for the voucher `code`.
    pub(super) fn voucher_body(&self, code: &str) -> Option<Value> {
        let v = self.vouchers.get(code)?;
        Some(json!({"code": code, "expiryDate": v.expiry,
                    "redeemInstructions": redeem_instructions()}))
    }

    /// The state of the redemption (of the voucher `code`) that holds it, if one does.
    pub(super) fn holder_state(&self, code: &str) -> Option<Advised> {
        let holder = self.vouchers.get(code)?.holder?;
        self.redemptions.find(holder, code).map(|r| r.state)
    }

    /// The VoucherLookupResponse of the voucher `code` (shape in the module doc of
    /// [`sandbox`](super)).
    pub(super) fn voucher_lookup(&self, code: &str) -> Option<Value> {
        let v = self.vouchers.get(code)?;
        let state = self.voucher_state(code, v);
        let mut body = json!({
            "id": v.provision.to_string(),
            "time": v.time,
            "voucher": self.voucher_body(code)?,
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

    /// The `state` lookupVoucher reports for `v`, the voucher `code`.
    fn voucher_state(&self, code: &str, v: &Voucher) -> &'static str {
        match self.provision_state(v) {
            Advised::Open => "PROVISIONED",
            Advised::Reversed => "REVERSED",
            Advised::Confirmed if v.pending_refund.is_some() => "REFUND_PENDING",
            Advised::Confirmed => match self.holder_state(code) {
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
        ledger.book_mut(family).insert(self.id, tx);
    }
}
