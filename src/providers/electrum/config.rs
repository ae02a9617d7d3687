//! `[providers.electrum]` in `queues.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::{HttpSettings, Section};

/// How a provider hears that an operation completed (`electrum-voucher-redemption-flows.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Messaging {
    /// Every provision, redemption and refund is followed by a confirmation advice, repeated
    /// until final (store-and-forward).
    Dual,
    /// The request alone completes it; only reversals are sent.
    Single,
}

/// The Electrum single-use voucher (SUV) adapter's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectrumConfig {
    /// False: the relay runs without Electrum and needs none of its credentials.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// `base_url` is up to and including the `/suv/v1` base path.
    #[serde(flatten)]
    pub http: HttpSettings,
    pub queue: String,
    /// Where advices (confirmations, reversals) wait for their next attempt.
    pub advice_queue: String,
    /// Where an advice goes when its retry budget is spent, for operators to replay.
    pub parked_queue: String,
    /// Sent as `client.id` and as the HTTP Basic user name.
    pub client_id: String,
    pub client_name: String,
    /// Name of the environment variable holding the HTTP Basic password.
    pub password_env: String,
    /// The messaging of provision, redeem and refund unless overridden below.
    pub messaging: Messaging,
    /// Per-operation overrides: `provision`, `redeem`, `refund`.
    #[serde(default)]
    pub messaging_by_operation: BTreeMap<String, Messaging>,
    /// How long an advice is repeated before it is parked (48 h).
    pub advice_budget_ms: u64,
    /// Backoff of advice retries: the first wait, doubling up to the cap, each with jitter.
    pub advice_backoff_base_ms: u64,
    pub advice_backoff_cap_ms: u64,
    /// How long `lookup_redemption` asks again while the provider is still processing.
    pub processing_deadline_ms: u64,
}

fn enabled() -> bool {
    true
}

impl ElectrumConfig {
    /// The messaging of `operation` (`provision`, `redeem` or `refund`).
    pub fn messaging_of(&self, operation: &str) -> Messaging {
        self.messaging_by_operation
            .get(operation)
            .copied()
            .unwrap_or(self.messaging)
    }
}

impl Section for ElectrumConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn http(&self) -> &HttpSettings {
        &self.http
    }

    fn queues(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("providers.electrum.queue", &self.queue),
            ("providers.electrum.advice_queue", &self.advice_queue),
            ("providers.electrum.parked_queue", &self.parked_queue),
        ]
    }

    fn credential_vars(&self) -> Vec<&str> {
        vec![&self.password_env]
    }

    fn advices(&self) -> Option<(Duration, &str)> {
        Some((
            Duration::from_millis(self.advice_budget_ms),
            &self.advice_queue,
        ))
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let bad = |key: &str, why: String| Err((format!("providers.electrum.{key}"), why));
        if self.client_id.is_empty() {
            return bad("client_id", "must not be empty".into());
        }
        if let Some(op) = self
            .messaging_by_operation
            .keys()
            .find(|k| !["provision", "redeem", "refund"].contains(&k.as_str()))
        {
            return bad(
                "messaging_by_operation",
                format!("{op:?} is not provision, redeem or refund"),
            );
        }
        if self.advice_backoff_base_ms == 0
            || self.advice_backoff_cap_ms < self.advice_backoff_base_ms
            || self.advice_budget_ms == 0
        {
            return bad(
                "advice_*",
                "need 0 < advice_backoff_base_ms <= advice_backoff_cap_ms and a positive budget"
                    .into(),
            );
        }
        Ok(())
    }
}
