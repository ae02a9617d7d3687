//! `[providers.csq]` in `queues.toml`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::providers::{HttpSettings, Section};

/// The CSQ adapter's settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsqConfig {
    /// False: the relay runs without CSQ and needs none of its credentials.
    #[serde(default = "enabled")]
    pub enabled: bool,
    #[serde(flatten)]
    pub http: HttpSettings,
    pub queue: String,
    /// Names of the environment variables holding the credentials.
    pub user_env: String,
    pub password_env: String,
    /// Where poll wake-ups for CSQ are consumed.
    pub poll_queue: String,
    /// How long an unknown purchase is queried by its localReference before it ends.
    pub resolve_deadline_ms: u64,
    /// How long a sale waits for its additional data before it ends `expired`.
    pub additional_data_deadline_ms: u64,
    /// Per-operator overrides of `additional_data_deadline_ms`, keyed by operator id.
    #[serde(default)]
    pub additional_data_deadline_by_operator: BTreeMap<String, u64>,
    /// Operators whose sales are raffle tickets.
    #[serde(default)]
    pub raffle_operators: Vec<i32>,
    /// How long a raffle result is polled for after the draw time.
    #[serde(default = "default_raffle_deadline_ms")]
    pub raffle_deadline_ms: u64,
    /// How long an operator's dynamic-product list is reused.
    #[serde(default = "default_products_cache_ms")]
    pub products_cache_ms: u64,
}

fn enabled() -> bool {
    true
}

fn default_raffle_deadline_ms() -> u64 {
    7 * 24 * 3600 * 1000
}

fn default_products_cache_ms() -> u64 {
    300_000
}

impl CsqConfig {
    /// How long a sale of `operator` waits for its additional data.
    pub fn additional_data_deadline(&self, operator: Option<i64>) -> Duration {
        let ms = operator
            .and_then(|o| {
                self.additional_data_deadline_by_operator
                    .get(&o.to_string())
            })
            .copied()
            .unwrap_or(self.additional_data_deadline_ms);
        Duration::from_millis(ms)
    }
}

impl Section for CsqConfig {
    fn enabled(&self) -> bool {
        self.enabled
    }

    fn http(&self) -> &HttpSettings {
        &self.http
    }

    fn queues(&self) -> Vec<(&'static str, &str)> {
        vec![
            ("providers.csq.queue", &self.queue),
            ("providers.csq.poll_queue", &self.poll_queue),
        ]
    }

    fn credential_vars(&self) -> Vec<&str> {
        vec![&self.user_env, &self.password_env]
    }
}
