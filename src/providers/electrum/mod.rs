//! Electrum single-use vouchers (SUV): `electrum-suv-operations.txt`, the message shapes of
//! `electrum-suv-examples/` and the flows of `electrum-voucher-redemption-flows.md`.
//!
//! Commands: `provision`, `redeem`, `refund`, `lookup`, `lookup_redemption`. An unknown
//! provision, redemption or refund is reversed by a store-and-forward advice; in dual
//! messaging a succeeded one is confirmed by one. Every answer's meaning is decided in
//! [`mapping`].
//!
//! Readings of the texts where they are vague, each what a certification test accepts:
//! - `provisionVoucher` is listed as "POST 504" (a publishing slip); the behaviour table
//!   and Electrum's test pack say `POST /vouchers`.
//! - `lookupVoucher` is `GET /vouchers` (operations text); the flows page's "GET /products"
//!   is the generic vendor table of another product.
//! - The request `id` of a provision, redemption or refund is the relay's transaction id, a
//!   UUID that never changes, so an advice always names the right request.
//! - `reversalReason` is one of Electrum's `TIMEOUT` (no answer, or a cut connection),
//!   `RESPONSE_NOT_FINAL` (a 5xx, or a lookup still processing past its deadline) and
//!   `CANCELLED` (never sent by the relay).
//! - HTTP 102 is an interim status: hyper (under reqwest) never returns it as an answer. A
//!   server that sends 102 and then nothing is seen as a timeout, so for `lookupRedemption`
//!   both mean "still processing".
//! - A lookup never reverses a redemption the relay itself sent: that command decides.

pub mod client;
pub mod config;
pub mod mapping;
pub mod params;
pub mod sandbox;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};
use uuid::Uuid;

pub use client::{ElectrumClient, Operation};
pub use config::{ElectrumConfig, Messaging};
pub use params::{LookupParams, LookupRedemptionParams, ProvisionParams, VoucherParams};

use crate::command::RejectReason;
use crate::providers::work::{
    AdviceJob, AdviceJudgement, AdviceKind, AdvicePolicy, NewAdvice, TxContext, UnknownPlan,
};
use crate::providers::{
    self, ActionInfo, Advices, CallError, Exchange, HttpLimits, Provider, SandboxEntry, Step,
};

/// The provider's name in routing keys, outcomes and rows.
pub const NAME: &str = "electrum";

/// An Electrum command's params.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Provision(ProvisionParams),
    Redeem(VoucherParams),
    Refund(VoucherParams),
    Lookup(LookupParams),
    LookupRedemption(LookupRedemptionParams),
}

impl Action {
    pub fn parse(kind: &str, params: &Map<String, Value>) -> Result<Action, RejectReason> {
        Ok(match kind {
            "provision" => Action::Provision(ProvisionParams::from_params(params)?),
            "redeem" => Action::Redeem(VoucherParams::from_params(params)?),
            "refund" => Action::Refund(VoucherParams::from_params(params)?),
            "lookup" => Action::Lookup(LookupParams::from_params(params)?),
            "lookup_redemption" => {
                Action::LookupRedemption(LookupRedemptionParams::from_params(params)?)
            }
            other => return Err(RejectReason::UnknownKind(other.to_string())),
        })
    }
}

impl ActionInfo for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Provision(_) => "provision",
            Action::Redeem(_) => "redeem",
            Action::Refund(_) => "refund",
            Action::Lookup(_) => "lookup",
            Action::LookupRedemption(_) => "lookup_redemption",
        }
    }

    fn audit_params(&self) -> Value {
        match self {
            Action::Provision(p) => json!({
                "originator": p.originator,
                "receiver": p.receiver,
                "amount_minor": p.tender.as_ref().map(|t| t.amount_minor),
                "currency": p.tender.as_ref().map(|t| t.currency.clone()),
                "voucher_code": p.voucher_code,
            }),
            Action::Redeem(p) | Action::Refund(p) => json!({
                "originator": p.originator,
                "receiver": p.receiver,
                "voucher_code": p.voucher_code,
            }),
            Action::Lookup(p) => json!({
                "voucher_code": p.voucher_code,
                "provision_request_id": p.provision_request_id,
                "voucher_serial_number": p.voucher_serial_number,
            }),
            Action::LookupRedemption(p) => json!({"request_id": p.request_id}),
        }
    }
}

/// The password the demo uses when `ELECTRUM_PASSWORD` is not set. The sandbox checks only
/// the user name (against `client.id`), as Electrum's behaviour text says.
pub const SANDBOX_PASSWORD: &str = "sandbox-secret";

/// `voucher-relay sandbox` serves the Electrum SUV simulator.
pub const SANDBOX: SandboxEntry = SandboxEntry {
    name: NAME,
    hint: "the Electrum SUV API under /suv/v1 (faults: POST /sandbox/faults)",
    serve: |_, _, listener| {
        Box::pin(sandbox::ElectrumSandbox::new(Default::default()).serve(listener))
    },
};

/// The Electrum adapter.
pub struct Electrum {
    client: ElectrumClient,
    config: ElectrumConfig,
}

impl Electrum {
    /// `credential` gives the value of a variable the section names; `pool` makes the rate
    /// limit global across processes.
    pub fn new(
        config: &ElectrumConfig,
        credential: &dyn Fn(&str) -> String,
        pool: Option<deadpool_postgres::Pool>,
    ) -> anyhow::Result<Electrum> {
        Ok(Electrum {
            client: ElectrumClient::new(config, credential, pool)?,
            config: config.clone(),
        })
    }

    /// The reversal of `operation`'s request `request_id` (`None`: the transaction's own),
    /// whose outcome is unknown because of `why`.
    fn reversal(&self, operation: &str, request_id: Option<Uuid>, why: &str) -> NewAdvice {
        NewAdvice {
            provider: NAME,
            operation: operation.to_string(),
            kind: AdviceKind::Reversal,
            request_id,
            reversal_reason: Some(mapping::reversal_reason(why)),
            detail: Some(why.to_string()),
            data: None,
            budget: self.budget(),
        }
    }

    fn budget(&self) -> Duration {
        Duration::from_millis(self.config.advice_budget_ms)
    }

    async fn run_action(&self, action: &Action, tx: &TxContext) -> (Step, Exchange) {
        let c = &self.client;
        match action {
            Action::Provision(p) => {
                let (answer, ex) = c.provision(tx.request_id, p).await;
                let chose_code = p.voucher_code.is_some();
                (
                    mapping::provision_step(answer, tx.request_id, chose_code),
                    ex,
                )
            }
            Action::Redeem(p) => {
                let (answer, ex) = c
                    .voucher_operation(Operation::Redeem, tx.request_id, p)
                    .await;
                (mapping::financial_step(answer, tx.request_id), ex)
            }
            Action::Refund(p) => {
                let (answer, ex) = c
                    .voucher_operation(Operation::Refund, tx.request_id, p)
                    .await;
                (mapping::financial_step(answer, tx.request_id), ex)
            }
            Action::Lookup(p) => {
                let (answer, ex) = c.lookup_voucher(p).await;
                (mapping::lookup_step(answer), ex)
            }
            Action::LookupRedemption(p) => {
                let (answer, ex) = c.lookup_redemption(p.request_id).await;
                let step = mapping::lookup_redemption_step(answer, p.request_id);
                (self.unless_processing_too_long(step, p.request_id, tx), ex)
            }
        }
    }

    /// A redemption still processing past `processing_deadline_ms` has an unknown outcome,
    /// and an unknown redemption is reversed, unless the relay itself sent it: its own
    /// command decides it (and reverses it if its answer never came), so a lookup never
    /// undoes a redemption the relay reported as succeeded.
    fn unless_processing_too_long(&self, step: Step, request_id: Uuid, tx: &TxContext) -> Step {
        let Step::Processing(reason) = step else {
            return step;
        };
        if tx.waited < Duration::from_millis(self.config.processing_deadline_ms) {
            return Step::Processing(reason);
        }
        let attempt = tx.attempt;
        match &tx.subject_owner {
            Some(command_id) => Step::failed(
                "still_processing",
                format!(
                    "Electrum was still processing after {attempt} lookups; this redemption is the relay's command {command_id:?}, whose outcome decides it"
                ),
                None,
            ),
            None => {
                let why = format!("still processing after {attempt} lookups: {reason}");
                let reversal = self.reversal(Operation::Redeem.as_str(), Some(request_id), &why);
                Step::Reverse(Box::new(reversal))
            }
        }
    }
}

impl Provider for Electrum {
    fn name(&self) -> &'static str {
        NAME
    }

    fn command_queue(&self) -> &str {
        &self.config.queue
    }

    fn limits(&self) -> HttpLimits {
        self.config.http.limits()
    }

    fn rate_limit(&self) -> std::sync::Arc<crate::ratelimit::ProviderLimit> {
        self.client.rate_limit()
    }

    fn has_financial_effect(&self, kind: &str) -> bool {
        Operation::parse(kind).is_some()
    }

    fn execute<'a>(
        &'a self,
        action: &'a providers::Action,
        tx: TxContext,
    ) -> BoxFuture<'a, (Step, Vec<Exchange>)> {
        Box::pin(async move {
            match action {
                providers::Action::Electrum(a) => {
                    let (step, exchange) = self.run_action(a, &tx).await;
                    (step, vec![exchange])
                }
                _ => (
                    Step::failed("internal", "not an Electrum command", None),
                    Vec::new(),
                ),
            }
        })
    }

    fn subject_request(&self, action: &providers::Action) -> Option<Uuid> {
        match action {
            providers::Action::Electrum(Action::LookupRedemption(p)) => Some(p.request_id),
            _ => None,
        }
    }

    /// Electrum's rule: an operation whose outcome is unknown is reversed.
    fn on_unknown(&self, kind: &str, why: &str) -> UnknownPlan {
        UnknownPlan::Reverse(Box::new(self.reversal(kind, None, why)))
    }

    /// In dual messaging, a succeeded provision, redemption or refund is confirmed; a
    /// provision's confirmation reports what the consumer paid.
    fn confirmation(&self, action: &providers::Action) -> Option<NewAdvice> {
        let providers::Action::Electrum(action) = action else {
            return None;
        };
        let (operation, data) = match action {
            Action::Provision(p) => (
                Operation::Provision,
                p.tender
                    .as_ref()
                    .map(|t| json!({"amount_minor": t.amount_minor, "currency": t.currency})),
            ),
            Action::Redeem(_) => (Operation::Redeem, None),
            Action::Refund(_) => (Operation::Refund, None),
            _ => return None,
        };
        self.client.is_dual(operation).then(|| NewAdvice {
            provider: NAME,
            operation: operation.as_str().to_string(),
            kind: AdviceKind::Confirmation,
            request_id: None,
            reversal_reason: None,
            detail: None,
            data,
            budget: self.budget(),
        })
    }

    fn ping(&self) -> BoxFuture<'_, (Result<(), CallError>, Exchange)> {
        Box::pin(self.client.ping())
    }

    fn advices(&self) -> Option<&dyn Advices> {
        Some(self)
    }
}

impl Advices for Electrum {
    fn advice_queue(&self) -> &str {
        &self.config.advice_queue
    }

    fn parked_queue(&self) -> &str {
        &self.config.parked_queue
    }

    fn policy(&self) -> AdvicePolicy {
        AdvicePolicy {
            backoff_base: Duration::from_millis(self.config.advice_backoff_base_ms),
            backoff_cap: Duration::from_millis(self.config.advice_backoff_cap_ms),
        }
    }

    /// A provision confirmation is a `TenderAdvice` carrying what the consumer paid; the
    /// others are `BasicAdvice` / `BasicReversal`.
    fn advice_body(&self, job: &AdviceJob) -> Value {
        let tender = job.data.as_ref().and_then(|t| {
            Some(params::Tender {
                amount_minor: i32::try_from(t["amount_minor"].as_i64()?).ok()?,
                currency: t["currency"].as_str()?.to_string(),
            })
        });
        self.client.advice_body(
            job.id,
            job.request_id,
            job.kind,
            job.reversal_reason.as_deref(),
            tender.as_ref(),
        )
    }

    fn send_advice<'a>(
        &'a self,
        job: &'a AdviceJob,
        body: &'a Value,
    ) -> BoxFuture<'a, (Result<Value, CallError>, Exchange)> {
        Box::pin(self.client.send_advice(&job.operation, job.kind, body))
    }

    fn judge_advice(
        &self,
        job: &AdviceJob,
        answer: &Result<Value, CallError>,
        status: Option<u16>,
    ) -> AdviceJudgement {
        mapping::judge_advice(job, answer, status)
    }
}
