//! CSQ eVSB prepaid vouchers (`csq-vouchers-flow.txt`, `csq-vouchers-purchase.txt`).
//!
//! Commands: `purchase`, `products`, `balance`. An unknown purchase is resolved by asking
//! CSQ about its `localReference` (CSQ has no reversal); a sale whose additional data or
//! raffle result comes later is polled. Every answer's meaning is decided in
//! [`mapping`] (purchase answers) and [`poll`] (what a poll found).

pub mod auth;
pub mod client;
pub mod config;
pub mod flows;
pub mod mapping;
pub mod params;
pub mod poll;
pub mod sandbox;

use futures_util::future::BoxFuture;
use serde_json::{Map, Value, json};

pub use client::{CsqClient, Products};
pub use config::CsqConfig;
pub use mapping::{Decision, PurchaseRef, purchase_decision};
pub use params::{BalanceParams, ProductsParams, PurchaseBody, PurchaseParams};

use crate::command::RejectReason;
use crate::providers::work::{PollJob, PollPlan, PollStep, TxContext, UnknownPlan};
use crate::providers::{
    self, ActionInfo, CallError, Exchange, HttpLimits, Polling, Provider, SandboxEntry, Step,
};

/// The provider's name in routing keys, outcomes and rows.
pub const NAME: &str = "csq";

/// A CSQ command's params.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Purchase(PurchaseParams),
    Products(ProductsParams),
    Balance(BalanceParams),
}

impl Action {
    pub fn parse(kind: &str, params: &Map<String, Value>) -> Result<Action, RejectReason> {
        Ok(match kind {
            "purchase" => Action::Purchase(PurchaseParams::from_params(params)?),
            "products" => Action::Products(ProductsParams::from_params(params)?),
            "balance" => Action::Balance(BalanceParams::from_params(params)?),
            other => return Err(RejectReason::UnknownKind(other.to_string())),
        })
    }
}

impl ActionInfo for Action {
    fn kind(&self) -> &'static str {
        match self {
            Action::Purchase(_) => "purchase",
            Action::Products(_) => "products",
            Action::Balance(_) => "balance",
        }
    }

    fn audit_params(&self) -> Value {
        match self {
            Action::Purchase(p) => json!({
                "terminal_id": p.terminal_id,
                "operator_id": p.operator_id,
                "product_id": p.product_id,
                "body": serde_json::to_value(&p.body).unwrap_or(Value::Null),
            }),
            Action::Products(p) => json!({
                "terminal_id": p.terminal_id,
                "operator_id": p.operator_id,
            }),
            Action::Balance(p) => json!({"terminal_id": p.terminal_id}),
        }
    }

    /// A purchase gets a `localReference`; every command keeps its terminal and operator,
    /// which the polls of a purchase ask about.
    fn intake_refs(&self) -> (bool, Option<Value>) {
        match self {
            Action::Purchase(p) => (
                true,
                Some(json!({"terminal_id": p.terminal_id, "operator_id": p.operator_id})),
            ),
            Action::Products(p) => (
                false,
                Some(json!({"terminal_id": p.terminal_id, "operator_id": p.operator_id})),
            ),
            Action::Balance(p) => (false, Some(json!({"terminal_id": p.terminal_id}))),
        }
    }
}

/// The credentials the sandbox accepts when the variables `[providers.csq]` names are not
/// set.
pub const SANDBOX_USER: &str = "sandbox";
pub const SANDBOX_PASSWORD: &str = "sandbox-secret";

/// `voucher-relay sandbox` serves the CSQ simulator.
pub const SANDBOX: SandboxEntry = SandboxEntry {
    name: NAME,
    hint: "the CSQ eVSB API (operators 1001 ok, 1005 declines)",
    serve: |cfg, env, listener| {
        let sandbox = sandbox_from_env(&cfg.csq, env, sandbox::SandboxOptions::default());
        Box::pin(sandbox.serve(listener))
    },
};

/// The CSQ simulator, accepting the credentials in the variables `cfg` names (or the
/// sandbox defaults).
pub fn sandbox_from_env(
    cfg: &CsqConfig,
    env: &dyn Fn(&str) -> Option<String>,
    options: sandbox::SandboxOptions,
) -> sandbox::CsqSandbox {
    let user = env(&cfg.user_env).unwrap_or_else(|| SANDBOX_USER.into());
    let password = env(&cfg.password_env).unwrap_or_else(|| SANDBOX_PASSWORD.into());
    sandbox::CsqSandbox::with_options(&user, &password, options)
}

/// The CSQ adapter.
pub struct Csq {
    client: CsqClient,
    config: CsqConfig,
}

impl Csq {
    /// `credential` gives the value of a variable the section names; `pool` makes the rate
    /// limit global across processes.
    pub fn new(
        config: &CsqConfig,
        credential: &dyn Fn(&str) -> String,
        pool: Option<deadpool_postgres::Pool>,
    ) -> anyhow::Result<Csq> {
        Ok(Csq {
            client: CsqClient::new(config, credential, pool)?,
            config: config.clone(),
        })
    }

    pub fn client(&self) -> &CsqClient {
        &self.client
    }

    async fn run_action(&self, action: &Action, tx: TxContext) -> (Step, Vec<Exchange>) {
        match action {
            Action::Purchase(p) => match tx.local_reference {
                Some(local_reference) => {
                    flows::purchase(&self.client, &self.config, p, local_reference).await
                }
                // Intake allocates one for every purchase; without it nothing was sent.
                None => (
                    Step::failed("internal", "purchase without a localReference", None),
                    Vec::new(),
                ),
            },
            Action::Products(p) => flows::products(&self.client, p).await,
            Action::Balance(p) => flows::balance(&self.client, p).await,
        }
    }
}

impl Provider for Csq {
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
        kind == "purchase"
    }

    fn execute<'a>(
        &'a self,
        action: &'a providers::Action,
        tx: TxContext,
    ) -> BoxFuture<'a, (Step, Vec<Exchange>)> {
        Box::pin(async move {
            match action {
                providers::Action::Csq(a) => self.run_action(a, tx).await,
                _ => (
                    Step::failed("internal", "not a CSQ command", None),
                    Vec::new(),
                ),
            }
        })
    }

    /// CSQ has no reversal: an unknown purchase is resolved by asking about its
    /// `localReference` until the deadline.
    fn on_unknown(&self, _kind: &str, _why: &str) -> UnknownPlan {
        UnknownPlan::Resolve(PollPlan {
            purpose: poll::RESOLVE,
            first_in: None,
            deadline_in: std::time::Duration::from_millis(self.config.resolve_deadline_ms),
        })
    }

    fn ping(&self) -> BoxFuture<'_, (Result<(), CallError>, Exchange)> {
        Box::pin(async move {
            let (answer, exchange) = self.client.ping().await;
            (answer.map(|_| ()), exchange)
        })
    }

    fn polling(&self) -> Option<&dyn Polling> {
        Some(self)
    }
}

impl Polling for Csq {
    fn poll_queue(&self) -> &str {
        &self.config.poll_queue
    }

    fn poll<'a>(&'a self, job: &'a PollJob) -> BoxFuture<'a, (PollStep, Vec<Exchange>)> {
        Box::pin(poll::ask(&self.client, &self.config, job))
    }
}
