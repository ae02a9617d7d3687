//! The sandbox engine's books: vouchers and their state machine, the requests seen (a
//! repeated `requestID` is the same request), and the callbacks owed. Plain data and pure
//! transitions; the HTTP side is in `routes.rs`.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::providers::govstack::dialect::VoucherState;

/// How long a voucher is valid from its activation (the readings: expiry runs from there).
pub const VALIDITY_DAYS: i64 = 365;

#[derive(Debug, Clone, serde::Serialize)]
pub struct Voucher {
    pub serial: String,
    /// The secret the holder redeems with.
    pub number: String,
    pub instruction_id: String,
    pub request_id: String,
    pub batch_id: String,
    /// As the creation gave it (a decimal).
    pub amount: serde_json::Number,
    pub currency: String,
    pub state: VoucherState,
    pub expiry: Option<DateTime<Utc>>,
}

/// One instruction of a creation, as the request carried it.
#[derive(Debug, Clone)]
pub struct Instruction {
    pub instruction_id: String,
    pub currency: String,
    pub amount: serde_json::Number,
    pub narration: Option<String>,
}

/// A request the engine answered, kept so a repetition gets the same answer and no second
/// effect.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The operation and the body, as first received.
    pub fingerprint: String,
    pub status: u16,
    pub answer: Value,
    /// The callback this request owes, sent again when the request is repeated.
    pub callback: Option<Callback>,
}

/// A callback owed to a caller, retried until it answers 2xx.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    pub body: Value,
    pub attempts: u32,
    pub due: Instant,
}

/// Why one serial number of an activation or a cancellation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    pub serial: String,
    pub reason: &'static str,
}

/// What a redemption came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Redeemed {
    Done { value: serde_json::Number },
    Refused(&'static str),
}

#[derive(Debug, Default)]
pub struct Ledger {
    pub vouchers: BTreeMap<String, Voucher>,
    pub requests: HashMap<String, Seen>,
    pub callbacks: Vec<Callback>,
    next_serial: u64,
}

impl Ledger {
    /// Creates one pre-activated voucher per instruction; `number` makes each secret.
    pub fn create(
        &mut self,
        request_id: &str,
        batch_id: &str,
        instructions: &[Instruction],
        mut number: impl FnMut() -> String,
    ) -> Vec<Voucher> {
        instructions
            .iter()
            .map(|i| {
                self.next_serial += 1;
                let v = Voucher {
                    // Ten digits: the creation callback's `serialNumber` is at most 10.
                    serial: format!("{:010}", 4_100_000_000u64 + self.next_serial),
                    number: number(),
                    instruction_id: i.instruction_id.clone(),
                    request_id: request_id.to_owned(),
                    batch_id: batch_id.to_owned(),
                    amount: i.amount.clone(),
                    currency: i.currency.clone(),
                    state: VoucherState::PreActivated,
                    expiry: None,
                };
                self.vouchers.insert(v.serial.clone(), v.clone());
                v
            })
            .collect()
    }

    /// Pre-Activated → Activated, each serial on its own; the failures.
    pub fn activate(&mut self, serials: &[String], now: DateTime<Utc>) -> Vec<Failed> {
        let mut failed = Vec::new();
        for serial in serials {
            match self.vouchers.get_mut(serial) {
                None => failed.push(Failed {
                    serial: serial.clone(),
                    reason: "Not Existing",
                }),
                Some(v) if v.state == VoucherState::PreActivated => {
                    v.state = VoucherState::Activated;
                    v.expiry = Some(now + chrono::Duration::days(VALIDITY_DAYS));
                }
                Some(v) => failed.push(Failed {
                    serial: serial.clone(),
                    reason: match v.state {
                        VoucherState::Activated => "Already Activated",
                        VoucherState::Cancelled => "Cancelled",
                        VoucherState::Consumed => "Consumed",
                        VoucherState::Expired => "Expired",
                        VoucherState::Suspended => "Suspended",
                        VoucherState::Blocked => "Blocked",
                        VoucherState::PreActivated => "Not Pre-Activated",
                    },
                }),
            }
        }
        failed
    }

    /// Any state but Consumed (and Expired) → Cancelled, for good; the failures.
    pub fn cancel(&mut self, serials: &[String]) -> Vec<Failed> {
        let mut failed = Vec::new();
        for serial in serials {
            let reason = match self.vouchers.get_mut(serial) {
                None => Some("Not Existing"),
                Some(v) => match v.state {
                    VoucherState::Cancelled => Some("Already Cancelled"),
                    VoucherState::Consumed => Some("Consumed"),
                    VoucherState::Expired => Some("Expired"),
                    _ => {
                        v.state = VoucherState::Cancelled;
                        None
                    }
                },
            };
            if let Some(reason) = reason {
                failed.push(Failed {
                    serial: serial.clone(),
                    reason,
                });
            }
        }
        failed
    }

    /// Only an Activated voucher with its secret, not past its expiry, is redeemed, whole.
    pub fn redeem(&mut self, serial: &str, secret: &str, now: DateTime<Utc>) -> Redeemed {
        let Some(v) = self.vouchers.get_mut(serial) else {
            return Redeemed::Refused("Not Existing");
        };
        if v.state == VoucherState::Activated && v.expiry.is_some_and(|e| e <= now) {
            v.state = VoucherState::Expired;
        }
        match v.state {
            VoucherState::Activated if v.number == secret => {
                v.state = VoucherState::Consumed;
                Redeemed::Done {
                    value: v.amount.clone(),
                }
            }
            VoucherState::Activated => Redeemed::Refused("Invalid Secret"),
            VoucherState::PreActivated => Redeemed::Refused("Not Activated"),
            VoucherState::Consumed => Redeemed::Refused("Already Consumed"),
            VoucherState::Cancelled => Redeemed::Refused("Cancelled"),
            VoucherState::Expired => Redeemed::Refused("Expired"),
            VoucherState::Suspended => Redeemed::Refused("Suspended"),
            VoucherState::Blocked => Redeemed::Refused("Blocked"),
        }
    }

    /// The confirmation an activation or a cancellation owes: only the failures listed.
    pub fn confirmation(
        new_request_id: &str,
        register_request_id: &str,
        failed: &[Failed],
    ) -> Value {
        json!({
            "requestID": new_request_id,
            "registerRequestID": register_request_id,
            "numberFailedCases": failed.len(),
            "failedCases": failed.iter()
                .map(|f| json!({"serialNumber": f.serial, "failureReason": f.reason}))
                .collect::<Vec<_>>(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(ledger: &mut Ledger) -> Voucher {
        let i = Instruction {
            instruction_id: "i-1".into(),
            currency: "KES".into(),
            amount: serde_json::Number::from(150),
            narration: None,
        };
        ledger
            .create("r1", "b1", &[i], || "123456".into())
            .remove(0)
    }

    #[test]
    fn the_state_machine_of_the_readings() {
        let now = Utc::now();
        let mut l = Ledger::default();
        let v = one(&mut l);
        assert_eq!(v.serial.len(), 10);
        assert_eq!(
            l.redeem(&v.serial, "123456", now),
            Redeemed::Refused("Not Activated")
        );
        assert!(l.activate(std::slice::from_ref(&v.serial), now).is_empty());
        assert_eq!(
            l.activate(std::slice::from_ref(&v.serial), now)[0].reason,
            "Already Activated"
        );
        assert_eq!(
            l.redeem(&v.serial, "654321", now),
            Redeemed::Refused("Invalid Secret")
        );
        assert!(matches!(
            l.redeem(&v.serial, "123456", now),
            Redeemed::Done { .. }
        ));
        assert_eq!(
            l.redeem(&v.serial, "123456", now),
            Redeemed::Refused("Already Consumed")
        );
        assert_eq!(
            l.cancel(std::slice::from_ref(&v.serial))[0].reason,
            "Consumed"
        );
        assert_eq!(l.cancel(&["nope".into()])[0].reason, "Not Existing");
    }

    #[test]
    fn cancel_overrides_blocked_and_is_final() {
        let mut l = Ledger::default();
        let v = one(&mut l);
        l.vouchers.get_mut(&v.serial).unwrap().state = VoucherState::Blocked;
        assert!(l.cancel(std::slice::from_ref(&v.serial)).is_empty());
        assert_eq!(
            l.cancel(std::slice::from_ref(&v.serial))[0].reason,
            "Already Cancelled"
        );
        assert_eq!(
            l.redeem(&v.serial, "123456", Utc::now()),
            Redeemed::Refused("Cancelled")
        );
    }

    #[test]
    fn an_activated_voucher_expires() {
        let now = Utc::now();
        let mut l = Ledger::default();
        let v = one(&mut l);
        l.activate(std::slice::from_ref(&v.serial), now);
        let later = now + chrono::Duration::days(VALIDITY_DAYS + 1);
        assert_eq!(
            l.redeem(&v.serial, "123456", later),
            Redeemed::Refused("Expired")
        );
        assert_eq!(l.vouchers[&v.serial].state, VoucherState::Expired);
    }

    #[test]
    fn a_confirmation_lists_only_failures() {
        let c = Ledger::confirmation(
            "n1",
            "r1",
            &[Failed {
                serial: "9".into(),
                reason: "Not Existing",
            }],
        );
        assert_eq!(c["registerRequestID"], "r1");
        assert_eq!(c["numberFailedCases"], 1);
        assert_eq!(c["failedCases"][0]["serialNumber"], "9");
    }
}
