//! Provider adapters. Each provider is one folder: its config, params, client, mapping of
//! answers to outcomes, and sandbox side by side, behind the one [`Provider`] trait. All of
//! them send through [`http::ProviderHttp`], the one path for rate limits, timeouts,
//! exchange records and error classification.
//!
//! The workers never name a provider: they find it in the [`Registry`] by the name a
//! command or a row carries, and act on the plain data of [`work`] and [`Step`].
//!
//! Adding a provider: a folder implementing [`Provider`], and its registration here (the
//! lines marked "registration": a config field, an [`Action`] variant, and one line in
//! [`Registry::build`]), plus its section in `queues.toml`.

pub mod csq;
pub mod electrum;
pub mod govstack;
pub mod http;
pub mod step;
pub mod work;

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

pub use http::{CallError, Exchange, HttpLimits, HttpSettings, ProviderHttp};
pub use step::Step;
use work::{
    AdviceJob, AdviceJudgement, AdvicePolicy, NewAdvice, PollJob, PollStep, TxContext, UnknownPlan,
};

use crate::command::{self, Command, RejectReason, Rejection};
use crate::ratelimit::ProviderLimit;

/// One provider adapter, as the generic workers drive it. The decisions (`on_unknown`,
/// `confirmation`, the mappings inside `execute` and `poll`) are plain functions of their
/// arguments; only `execute`, `poll`, `send_advice` and `ping` talk to the provider.
pub trait Provider: Send + Sync {
    /// The name in routing keys, outcomes and rows (`csq`).
    fn name(&self) -> &'static str;
    /// The queue its commands are consumed from.
    fn command_queue(&self) -> &str;
    /// Its HTTP limits: the lease of work in flight derives from them.
    fn limits(&self) -> HttpLimits;
    /// Its rate limit, whose lease the relay keeps renewed (see [`crate::ratelimit`]).
    fn rate_limit(&self) -> Arc<ProviderLimit>;
    /// True when running `kind` moves money or stock: an unknown answer must then be
    /// resolved or reversed, never sent again blindly. Reads are safe to send again.
    fn has_financial_effect(&self, kind: &str) -> bool;
    /// Runs one command once.
    fn execute<'a>(
        &'a self,
        action: &'a Action,
        tx: TxContext,
    ) -> BoxFuture<'a, (Step, Vec<Exchange>)>;
    /// The earlier provider request a command is about (a lookup of a redemption), if
    /// any: the executor tells the provider whether the relay itself sent it.
    fn subject_request(&self, _action: &Action) -> Option<Uuid> {
        None
    }
    /// What a financial command of `kind` whose outcome is unknown needs (`why` says what
    /// the relay saw: a timeout, a 5xx, a worker that died while sending).
    fn on_unknown(&self, kind: &str, why: &str) -> UnknownPlan;
    /// The advice that must follow a succeeded command (a confirmation), if any.
    fn confirmation(&self, _action: &Action) -> Option<NewAdvice> {
        None
    }
    /// Asks whether the provider answers at all (`voucher-relay providers check`).
    fn ping(&self) -> BoxFuture<'_, (Result<(), CallError>, Exchange)>;
    /// Polling (additional data, unknown-outcome resolution), if the provider needs it.
    fn polling(&self) -> Option<&dyn Polling> {
        None
    }
    /// Store-and-forward advices (confirmations, reversals), if the provider has them.
    fn advices(&self) -> Option<&dyn Advices> {
        None
    }
}

/// A provider whose transactions wait on it and are asked again, driven by the `polls` table.
pub trait Polling: Send + Sync {
    /// The queue its poll wake-ups come back on.
    fn poll_queue(&self) -> &str;
    /// Asks once about a due poll.
    fn poll<'a>(&'a self, job: &'a PollJob) -> BoxFuture<'a, (PollStep, Vec<Exchange>)>;
}

/// A provider with store-and-forward advices, repeated until final by the advice worker.
pub trait Advices: Send + Sync {
    /// The queue its advice wake-ups come back on.
    fn advice_queue(&self) -> &str;
    /// Where an advice's full record goes when it is parked.
    fn parked_queue(&self) -> &str;
    fn policy(&self) -> AdvicePolicy;
    /// The message, built once and stored so every repetition is the same.
    fn advice_body(&self, job: &AdviceJob) -> Value;
    fn send_advice<'a>(
        &'a self,
        job: &'a AdviceJob,
        body: &'a Value,
    ) -> BoxFuture<'a, (Result<Value, CallError>, Exchange)>;
    /// What the answer means (`status` is the HTTP status seen, if any).
    fn judge_advice(
        &self,
        job: &AdviceJob,
        answer: &Result<Value, CallError>,
        status: Option<u16>,
    ) -> AdviceJudgement;
}

/// Every provider's section of `queues.toml`. Registration: one field per provider.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub csq: csq::CsqConfig,
    pub electrum: electrum::ElectrumConfig,
}

/// What the configuration checks need of one provider's section.
pub trait Section {
    fn enabled(&self) -> bool;
    fn http(&self) -> &HttpSettings;
    /// Every queue the section names, as `(key, queue)`.
    fn queues(&self) -> Vec<(&'static str, &str)>;
    /// The environment variables holding its credentials.
    fn credential_vars(&self) -> Vec<&str>;
    /// How long its advices are repeated before they are parked, and the queue their
    /// wake-ups are consumed from, if it has advices.
    fn advices(&self) -> Option<(std::time::Duration, &str)> {
        None
    }
    /// Checks serde cannot make, as `(key, reason)`.
    fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
}

impl ProvidersConfig {
    /// The advice budget and advice queue of provider `name`'s section, if it has advices.
    pub fn advices_of(&self, name: &str) -> Option<(std::time::Duration, &str)> {
        self.sections()
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, section)| section.advices())
    }

    /// Each provider's section by name. Registration: one line per provider.
    pub fn sections(&self) -> [(&'static str, &dyn Section); 2] {
        [(csq::NAME, &self.csq), (electrum::NAME, &self.electrum)]
    }
}

/// A provider's sandbox, as `voucher-relay sandbox` starts it on the listener its
/// `[sandbox.<name>]` section names.
pub struct SandboxEntry {
    pub name: &'static str,
    /// Printed at start: where the API is and what to try first.
    pub hint: &'static str,
    pub serve: ServeSandbox,
}

/// Serves a sandbox on the listener; the `Fn` gives the value of a variable the provider's
/// section names (its credentials).
pub type ServeSandbox = fn(
    &ProvidersConfig,
    &dyn Fn(&str) -> Option<String>,
    tokio::net::TcpListener,
) -> BoxFuture<'static, std::io::Result<()>>;

/// Every provider's sandbox. Registration: one line per provider.
pub fn sandboxes() -> [SandboxEntry; 2] {
    [csq::SANDBOX, electrum::SANDBOX]
}

/// A command's params as its provider reads them. Registration: one variant per provider.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    Csq(csq::Action),
    Electrum(electrum::Action),
}

/// What the workers may ask of any provider's action.
pub trait ActionInfo {
    /// The command kind (`purchase`).
    fn kind(&self) -> &'static str;
    /// The params for the audit copy (masked before it is stored).
    fn audit_params(&self) -> Value;
    /// Whether the relay allocates a local reference number for it, and the provider's
    /// own references to keep with the transaction (for its polls).
    fn intake_refs(&self) -> (bool, Option<Value>) {
        (false, None)
    }
}

impl Action {
    /// Reads a command's params as its provider's action.
    pub fn parse(cmd: &Command) -> Result<Action, RejectReason> {
        let (kind, params) = (cmd.kind.as_str(), &cmd.params);
        match cmd.provider.as_str() {
            csq::NAME => csq::Action::parse(kind, params).map(Action::Csq),
            electrum::NAME => electrum::Action::parse(kind, params).map(Action::Electrum),
            other => Err(RejectReason::UnknownProvider(other.to_string())),
        }
    }

    pub fn info(&self) -> &dyn ActionInfo {
        match self {
            Action::Csq(a) => a,
            Action::Electrum(a) => a,
        }
    }

    pub fn kind(&self) -> &'static str {
        self.info().kind()
    }
}

/// Checks a raw delivery against the whole contract: the envelope, then the provider's
/// params. `providers` are the names this relay runs.
pub fn parse_command(
    routing_key: &str,
    body: &[u8],
    providers: &[&str],
) -> Result<(Command, Action), Box<Rejection>> {
    let cmd = command::parse(routing_key, body, providers)?;
    match Action::parse(&cmd) {
        Ok(action) => Ok((cmd, action)),
        Err(reason) => Err(Box::new(Rejection {
            reason,
            envelope: cmd.envelope(),
        })),
    }
}

/// The providers this relay runs: the enabled ones, by name.
#[derive(Clone, Default)]
pub struct Registry {
    providers: BTreeMap<&'static str, Arc<dyn Provider>>,
}

impl Registry {
    /// Builds every enabled provider. `credentials` holds the values of the variables the
    /// sections name; `limiter` makes rate limits global across processes.
    pub fn build(
        config: &ProvidersConfig,
        credentials: &BTreeMap<String, String>,
        limiter: Option<deadpool_postgres::Pool>,
    ) -> anyhow::Result<Registry> {
        let credential = |name: &str| credentials.get(name).cloned().unwrap_or_default();
        let mut registry = Registry::default();
        // Registration: one line per provider.
        if config.csq.enabled {
            registry.add(csq::Csq::new(&config.csq, &credential, limiter.clone())?);
        }
        if config.electrum.enabled {
            registry.add(electrum::Electrum::new(
                &config.electrum,
                &credential,
                limiter,
            )?);
        }
        Ok(registry)
    }

    fn add(&mut self, provider: impl Provider + 'static) {
        self.providers.insert(provider.name(), Arc::new(provider));
    }

    pub fn get(&self, name: &str) -> Option<&dyn Provider> {
        self.providers.get(name).map(|p| p.as_ref())
    }

    /// The names of the providers this relay runs.
    pub fn names(&self) -> Vec<&'static str> {
        self.providers.keys().copied().collect()
    }

    pub fn iter(&self) -> impl Iterator<Item = &dyn Provider> {
        self.providers.values().map(|p| p.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::MAX_BODY_BYTES;
    use proptest::prelude::*;
    use serde_json::json;

    const NAMES: &[&str] = &["csq", "electrum"];

    fn purchase(params: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "command_id": "c-1", "source": "pos-1", "kind": "purchase", "provider": "csq",
            "callback_url": "http://127.0.0.1:9/hook", "params": params
        }))
        .unwrap()
    }

    fn good_params() -> Value {
        json!({"terminal_id": 1, "operator_id": 1001, "product_id": "gift-10", "amount_to_send_x100": 1000})
    }

    fn parse(key: &str, body: &[u8]) -> Result<(Command, Action), Box<Rejection>> {
        parse_command(key, body, NAMES)
    }

    fn code(key: &str, body: &[u8]) -> &'static str {
        parse(key, body).unwrap_err().reason.code()
    }

    #[test]
    fn accepts_a_good_purchase() {
        let (c, action) = parse("purchase.csq", &purchase(good_params())).expect("valid");
        assert_eq!(c.command_id, "c-1");
        assert_eq!(action.kind(), "purchase");
    }

    #[test]
    fn rejects_each_bad_body_with_its_code() {
        assert_eq!(
            code("purchase.csq", &vec![b' '; MAX_BODY_BYTES + 1]),
            "body_too_large"
        );
        assert_eq!(code("purchase.csq", &[0xff, 0xfe, b'{']), "body_not_utf8");
        assert_eq!(code("purchase.csq", b"{not json"), "body_not_json");
        assert_eq!(code("purchase.csq", b"[1,2]"), "body_not_object");
        assert_eq!(
            code(
                "purchase.csq",
                br#"{"command_id": "a\u0000b", "source": "s"}"#
            ),
            "body_has_nul"
        );
    }

    #[test]
    fn rejects_each_bad_param_with_its_code() {
        let mut p = good_params();
        p["amount_to_send_x100"] = json!(10.5);
        assert_eq!(code("purchase.csq", &purchase(p)), "amount_not_integer");
        let mut p = good_params();
        p["amount_to_send_x100"] = json!(-5);
        assert_eq!(code("purchase.csq", &purchase(p)), "amount_negative");
        let mut p = good_params();
        p["pin"] = json!("1234");
        assert_eq!(code("purchase.csq", &purchase(p)), "unknown_param");
    }

    #[test]
    fn rejects_each_bad_envelope_with_its_code() {
        assert_eq!(
            code("redeem.csq", &purchase(good_params())),
            "routing_key_mismatch"
        );
        let body =
            serde_json::to_vec(&json!({"source": "s", "kind": "purchase", "provider": "csq"}))
                .unwrap();
        assert_eq!(code("purchase.csq", &body), "missing_field");
        let body =
            serde_json::to_vec(&json!({"command_id": "c", "kind": "purchase", "provider": "csq"}))
                .unwrap();
        assert_eq!(code("purchase.csq", &body), "missing_field");
        let body = serde_json::to_vec(
            &json!({"command_id": "c", "source": "s", "kind": "refund", "provider": "csq"}),
        )
        .unwrap();
        assert_eq!(code("refund.csq", &body), "unknown_kind");
        let body = serde_json::to_vec(
            &json!({"command_id": "c", "source": "s", "kind": "purchase", "provider": "acme"}),
        )
        .unwrap();
        assert_eq!(code("purchase.acme", &body), "unknown_provider");
    }

    #[test]
    fn a_provider_this_relay_does_not_run_is_unknown() {
        let r = parse_command("purchase.csq", &purchase(good_params()), &["electrum"]);
        assert_eq!(r.unwrap_err().reason.code(), "unknown_provider");
    }

    #[test]
    fn rejection_keeps_the_address() {
        let mut p = good_params();
        p["amount_to_send_x100"] = json!(1.5);
        let r = parse("purchase.csq", &purchase(p)).unwrap_err();
        assert_eq!(r.envelope.command_id.as_deref(), Some("c-1"));
        assert_eq!(
            r.envelope.callback_url.as_deref(),
            Some("http://127.0.0.1:9/hook")
        );
        let o = r.outcome();
        assert_eq!(o.routing_key(), "rejected.purchase.csq");
        assert_eq!(o.error.unwrap().code, "amount_not_integer");
    }

    proptest! {
        /// Any float with a fractional part is refused as money, never truncated.
        #[test]
        fn fractional_amounts_are_rejected(x in -1.0e9f64..1.0e9f64) {
            prop_assume!(x.fract() != 0.0);
            let mut p = good_params();
            p["amount_to_send_x100"] = json!(x);
            let c = code("purchase.csq", &purchase(p));
            prop_assert!(c == "amount_not_integer" || c == "amount_negative");
        }

        /// Arbitrary bytes never panic the parser.
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse("purchase.csq", &body);
        }
    }

    /// One valid command of each kind the relay knows: its routing key, its body, and the
    /// pointers of the fields it may go without (everything else is required).
    fn templates() -> Vec<(&'static str, Value, &'static [&'static str])> {
        let originator = crate::providers::electrum::params::tests::originator();
        let envelope = |kind: &str, provider: &str, params: Value| {
            json!({"command_id": "c-1", "source": "pos-1", "kind": kind, "provider": provider,
                   "callback_url": "https://merchant.example/hooks", "params": params})
        };
        vec![
            (
                "purchase.csq",
                envelope(
                    "purchase",
                    "csq",
                    json!({
                    "terminal_id": 17, "operator_id": 1001, "product_id": "gift-25",
                    "amount_to_send_x100": 2500, "destination_amount_x100": 2500,
                    "local_date_time": "2026-01-02T03:04:05Z", "beneficiary_phone_number": "+27820000000",
                    "dynamic_product_id": "DYN-1", "receiver_email": "a@b.c",
                    "receiver_message": "hi", "document_number": "X1", "document_type": "PASSPORT"}),
                ),
                &[
                    "/callback_url",
                    "/params/product_id",
                    "/params/amount_to_send_x100",
                    "/params/destination_amount_x100",
                    "/params/local_date_time",
                    "/params/beneficiary_phone_number",
                    "/params/dynamic_product_id",
                    "/params/receiver_email",
                    "/params/receiver_message",
                    "/params/document_number",
                    "/params/document_type",
                ],
            ),
            (
                "products.csq",
                envelope(
                    "products",
                    "csq",
                    json!({"terminal_id": 17, "operator_id": 1003}),
                ),
                &["/callback_url"],
            ),
            (
                "balance.csq",
                envelope("balance", "csq", json!({"terminal_id": 17})),
                &["/callback_url"],
            ),
            (
                "provision.electrum",
                envelope(
                    "provision",
                    "electrum",
                    json!({
                    "originator": originator, "receiver": {"id": "44444444", "name": "MobiTalk"},
                    "amount_minor": 1000, "currency": "710", "voucher_code": "4242424242"}),
                ),
                &["/callback_url", "/params/receiver", "/params/voucher_code"],
            ),
            (
                "redeem.electrum",
                envelope(
                    "redeem",
                    "electrum",
                    json!({"originator": originator, "voucher_code": "5"}),
                ),
                &["/callback_url"],
            ),
            (
                "refund.electrum",
                envelope(
                    "refund",
                    "electrum",
                    json!({"originator": originator, "voucher_code": "5",
                    "receiver": {"id": "44444444", "name": "MobiTalk"}}),
                ),
                &["/callback_url", "/params/receiver"],
            ),
            (
                "lookup.electrum",
                envelope(
                    "lookup",
                    "electrum",
                    json!({"voucher_code": "5",
                    "provision_request_id": "68d07240-e604-431f-d5ca-974cee9bd60d",
                    "voucher_serial_number": "S1", "receiver_inst_id": "44444444",
                    "settlement_entity_inst_id": "33333333"}),
                ),
                &[
                    "/callback_url",
                    "/params/voucher_code",
                    "/params/provision_request_id",
                    "/params/voucher_serial_number",
                    "/params/receiver_inst_id",
                    "/params/settlement_entity_inst_id",
                ],
            ),
            (
                "lookup_redemption.electrum",
                envelope(
                    "lookup_redemption",
                    "electrum",
                    json!({"request_id": "ca487760-974c-8313-a27d-1d728c54e6fd"}),
                ),
                &["/callback_url"],
            ),
        ]
    }

    fn template() -> impl Strategy<Value = (&'static str, Value, &'static [&'static str])> {
        proptest::sample::select(templates())
    }

    fn bytes(v: &Value) -> Vec<u8> {
        serde_json::to_vec(v).unwrap()
    }

    #[test]
    fn every_template_is_valid() {
        for (key, body, _) in templates() {
            parse(key, &bytes(&body)).unwrap_or_else(|r| panic!("{key}: {:?}", r.reason));
        }
    }

    #[test]
    fn repeated_keys_and_zero_amounts_are_rejected() {
        let body = br#"{"command_id": "c", "source": "s", "kind": "purchase", "provider": "csq",
            "params": {"terminal_id": 1, "operator_id": 1001, "amount_to_send_x100": 1,
                       "amount_to_send_x100": 100000}}"#;
        assert_eq!(code("purchase.csq", body), "body_duplicate_key");
        let r = parse("purchase.csq", body).unwrap_err();
        assert_eq!(
            r.envelope,
            crate::command::Envelope::default(),
            "nothing is trusted"
        );
        let mut p = good_params();
        p["amount_to_send_x100"] = json!(0);
        assert_eq!(code("purchase.csq", &purchase(p)), "invalid_field");
        let mut p = good_params();
        p["product_id"] = json!("");
        assert_eq!(code("purchase.csq", &purchase(p)), "invalid_field");
    }

    proptest! {
        /// Any JSON value as a body, on any known routing key, never panics the decoder,
        /// and anything it accepts agrees with its routing key.
        #[test]
        fn arbitrary_json_bodies_never_panic(
            body in crate::proptest_json::arb_json(),
            (key, _, _) in template(),
        ) {
            if let Ok((cmd, action)) = parse(key, &bytes(&body)) {
                prop_assert_eq!(format!("{}.{}", cmd.kind, cmd.provider), key);
                prop_assert_eq!(action.kind(), cmd.kind.as_str());
            }
        }

        /// A valid command with one change anywhere never panics the decoder. Removing a
        /// required field, or giving any field a value of another JSON type, is always
        /// rejected, with a reason code.
        #[test]
        fn malformed_commands_are_never_accepted(
            (key, valid, optional) in template(),
            (index, change) in crate::proptest_json::mutation(),
        ) {
            use crate::proptest_json::{Mutation, mutate};
            let (pointer, body) = mutate(&valid, &index, &change);
            let result = parse(key, &bytes(&body));
            let must_reject = match &change {
                Mutation::Remove => !pointer.is_empty() && !optional.contains(&pointer.as_str()),
                Mutation::Retype(_) => true,
                Mutation::Replace(_) => false,
            };
            if must_reject {
                let rejection = result.err();
                prop_assert!(rejection.is_some(), "{:?} at {} accepted: {}", change, pointer, body);
                prop_assert!(rejection.is_some_and(|r| !r.reason.code().is_empty()));
            }
        }

        /// Money: only a positive int32 of minor units is accepted, in every amount field.
        #[test]
        fn only_positive_int32_amounts_are_accepted(
            amount in prop_oneof![any::<i64>(), -2i64..3, Just(i64::from(i32::MAX) + 1)],
            field in proptest::sample::select(vec![
                ("purchase.csq", "/params/amount_to_send_x100"),
                ("purchase.csq", "/params/destination_amount_x100"),
                ("provision.electrum", "/params/amount_minor"),
            ]),
        ) {
            let (key, mut body, _) = templates().into_iter().find(|t| t.0 == field.0).unwrap();
            *body.pointer_mut(field.1).unwrap() = json!(amount);
            let accepted = parse(key, &bytes(&body)).is_ok();
            prop_assert_eq!(accepted, amount > 0 && amount <= i64::from(i32::MAX));
        }

        /// Text longer than its limit is rejected wherever it is.
        #[test]
        fn oversized_text_is_rejected(
            (key, valid, _) in template(),
            index in any::<proptest::sample::Index>(),
            extra in 0usize..64,
        ) {
            let strings: Vec<String> = crate::proptest_json::pointers(&valid)
                .into_iter()
                .filter(|p| valid.pointer(p).is_some_and(Value::is_string))
                .collect();
            let pointer = &strings[index.index(strings.len())];
            let mut body = valid.clone();
            // 2049 bytes is over every limit: ids (128), params (128, 512), URLs (2048).
            *body.pointer_mut(pointer).unwrap() = json!("7".repeat(2049 + extra));
            prop_assert!(parse(key, &bytes(&body)).is_err(), "{} accepted", pointer);
        }
    }
}
