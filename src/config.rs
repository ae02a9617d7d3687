//! Configuration: `queues.toml` plus the environment.
//!
//! The file declares the topology, the delay tiers and each provider's settings. The
//! environment overrides the connection strings and holds the secrets, which never live in
//! the file. Every problem becomes a [`ConfigError`] naming the key at fault, so `main` can
//! print one line and exit non-zero instead of panicking.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, always naming the key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("environment variable {name} is not set{hint}")]
    MissingEnv { name: String, hint: String },
    #[error("{key} is invalid: {reason}")]
    Invalid { key: String, reason: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, reason: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        }
    }
}

/// The whole configuration, after environment overrides and validation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub broker: BrokerConfig,
    pub database: DatabaseConfig,
    pub webhook: WebhookConfig,
    pub admin: AdminConfig,
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    #[serde(default)]
    pub delay_tiers: Vec<DelayTier>,
    pub providers: ProvidersConfig,
    #[serde(default)]
    pub sandbox: SandboxConfig,
    /// Secrets and overrides read from the environment; never from the file.
    #[serde(skip)]
    pub secrets: Secrets,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerConfig {
    pub url: String,
    pub prefetch: u16,
    pub commands_exchange: String,
    pub events_exchange: String,
    pub unrouted_exchange: String,
    pub dead_letter_exchange: String,
    /// Delay-tier queues dead-letter into this exchange, back to the work queues.
    pub retry_exchange: String,
    pub rejected_queue: String,
    /// Queue bound to the unrouted exchange; its commands are rejected as unknown.
    pub unrouted_queue: String,
    /// Prepended to every exchange and queue name. Empty in production; tests use it to
    /// run in parallel on one broker without seeing each other's messages.
    #[serde(default)]
    pub name_prefix: String,
}

impl BrokerConfig {
    /// The broker-side name of an exchange or queue declared in this file.
    pub fn name(&self, logical: &str) -> String {
        format!("{}{}", self.name_prefix, logical)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: String,
    pub pool_size: usize,
    pub timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub timeout_ms: u64,
    pub retry_schedule_ms: Vec<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// The AMQP exchange types the relay declares.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Topic,
    Fanout,
    Direct,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    pub name: String,
    pub kind: ExchangeKind,
    #[serde(default)]
    pub alternate_exchange: Option<String>,
}

/// A durable quorum queue. `delivery_limit` is always explicit: RabbitMQ 3.10 has no
/// default (messages could loop forever) and 4.x defaults to 20.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    pub name: String,
    pub delivery_limit: u32,
    #[serde(default)]
    pub dead_letter_exchange: Option<String>,
    #[serde(default)]
    pub bindings: Vec<BindingConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingConfig {
    pub exchange: String,
    pub routing_key: String,
}

/// A delay queue: messages wait `ttl_ms`, then dead-letter to the retry exchange.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayTier {
    pub name: String,
    pub ttl_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersConfig {
    pub csq: ProviderConfig,
    pub electrum: ElectrumConfig,
}

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

/// The Electrum single-use voucher (SUV) adapter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElectrumConfig {
    /// Up to and including the `/suv/v1` base path.
    pub base_url: String,
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
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub rate_per_sec: u32,
    pub concurrency: usize,
    #[serde(default = "default_max_processes")]
    pub max_processes: u32,
    #[serde(default = "default_lease_margin_ms")]
    pub lease_margin_ms: u64,
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

impl ElectrumConfig {
    /// The messaging of `operation` (`provision`, `redeem` or `refund`).
    pub fn messaging_of(&self, operation: &str) -> Messaging {
        self.messaging_by_operation
            .get(operation)
            .copied()
            .unwrap_or(self.messaging)
    }

    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            rate_per_sec: self.rate_per_sec,
            max_processes: self.max_processes,
            concurrency: self.concurrency,
            lease_margin: Duration::from_millis(self.lease_margin_ms),
        }
    }
}

/// How hard the shared HTTP path may push a provider, and how long its work is owned. Plain
/// numbers, so reading them (once per command for the lease) allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub rate_per_sec: u32,
    pub max_processes: u32,
    pub concurrency: usize,
    /// `lease_margin_ms`: what a lease adds to two request timeouts.
    pub lease_margin: Duration,
}

impl HttpLimits {
    /// How long a worker owns what it is sending (a transaction, a poll, an advice): two
    /// request timeouts plus the margin, which covers the wait for a send slot.
    pub fn lease(&self) -> Duration {
        self.request_timeout * 2 + self.lease_margin
    }

    /// Longest wait for a send slot before a request is given up unsent: half the margin,
    /// so a request is always sent and answered while its lease holds.
    pub fn max_queue_wait(&self) -> Duration {
        self.lease_margin / 2
    }
}

/// Settings shared by every provider adapter: where it is, how to authenticate, and how hard
/// the relay may push it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    pub base_url: String,
    pub queue: String,
    pub user_env: String,
    pub password_env: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub rate_per_sec: u32,
    pub concurrency: usize,
    pub poll_queue: String,
    pub resolve_deadline_ms: u64,
    pub additional_data_deadline_ms: u64,
    /// Added to twice the request timeout to make the lease a worker holds while sending:
    /// room for the rate limiter and the concurrency cap.
    #[serde(default = "default_lease_margin_ms")]
    pub lease_margin_ms: u64,
    /// Per-operator overrides of `additional_data_deadline_ms`, keyed by operator id.
    #[serde(default)]
    pub additional_data_deadline_by_operator: BTreeMap<String, u64>,
    /// Worker processes the rate limit is shared by when PostgreSQL cannot be asked: each
    /// process then sends at `rate_per_sec / max_processes`, so together they stay under.
    #[serde(default = "default_max_processes")]
    pub max_processes: u32,
    /// Operators whose sales are raffle tickets (CSQ only).
    #[serde(default)]
    pub raffle_operators: Vec<i32>,
    /// How long a raffle result is polled for after the draw time.
    #[serde(default = "default_raffle_deadline_ms")]
    pub raffle_deadline_ms: u64,
    /// How long an operator's dynamic-product list is reused.
    #[serde(default = "default_products_cache_ms")]
    pub products_cache_ms: u64,
}

fn default_max_processes() -> u32 {
    4
}

fn default_lease_margin_ms() -> u64 {
    60_000
}

fn default_raffle_deadline_ms() -> u64 {
    7 * 24 * 3600 * 1000
}

fn default_products_cache_ms() -> u64 {
    300_000
}

impl ProviderConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn limits(&self) -> HttpLimits {
        HttpLimits {
            connect_timeout: self.connect_timeout(),
            request_timeout: self.request_timeout(),
            rate_per_sec: self.rate_per_sec,
            max_processes: self.max_processes,
            concurrency: self.concurrency,
            lease_margin: Duration::from_millis(self.lease_margin_ms),
        }
    }

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

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    #[serde(default)]
    pub csq: Option<SandboxListen>,
    #[serde(default)]
    pub electrum: Option<SandboxListen>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxListen {
    pub listen: SocketAddr,
}

/// Values that come only from the environment.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The raw `whsec_...` string; parsed by `webhook::SigningKey`.
    pub webhook_signing_secret: String,
    /// 32-byte key for voucher codes at rest.
    pub data_key: [u8; 32],
    /// Provider credentials by environment variable name.
    pub provider_credentials: BTreeMap<String, String>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(***)")
    }
}

/// Where the environment comes from. Tests pass a map; `main` passes the process environment.
pub trait Env {
    fn get(&self, name: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl Env for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        self.get(name).cloned().filter(|v| !v.is_empty())
    }
}

impl Config {
    /// Reads `path`, applies the environment and validates the result. `with_secrets` is
    /// false for commands that talk to no provider or callback (migrate, topology, publish),
    /// which then run without the secrets set.
    pub fn load(path: &Path, env: &dyn Env, with_secrets: bool) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), env, with_secrets)
    }

    /// Parses configuration text; `origin` names it in errors.
    pub fn from_toml(
        text: &str,
        origin: &str,
        env: &dyn Env,
        with_secrets: bool,
    ) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        if let Some(url) = env.get("AMQP_URL") {
            config.broker.url = url;
        }
        if let Some(url) = env.get("DATABASE_URL") {
            config.database.url = url;
        }
        if with_secrets {
            config.secrets = read_secrets(&config, env)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and cross-references between sections.
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.broker.url.starts_with("amqp://") && !self.broker.url.starts_with("amqps://") {
            return Err(ConfigError::invalid(
                "AMQP_URL / broker.url",
                "must start with amqp:// or amqps://",
            ));
        }
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return Err(ConfigError::invalid(
                "DATABASE_URL / database.url",
                "must start with postgres://",
            ));
        }
        if self.broker.prefetch == 0 {
            return Err(ConfigError::invalid(
                "broker.prefetch",
                "must be at least 1",
            ));
        }
        if self.database.pool_size == 0 {
            return Err(ConfigError::invalid(
                "database.pool_size",
                "must be at least 1",
            ));
        }
        if self.delay_tiers.is_empty() {
            return Err(ConfigError::invalid(
                "delay_tiers",
                "needs at least one tier",
            ));
        }
        if self.webhook.retry_schedule_ms.is_empty() {
            return Err(ConfigError::invalid(
                "webhook.retry_schedule_ms",
                "needs at least one retry",
            ));
        }
        let exchanges: Vec<&str> = self.exchanges.iter().map(|e| e.name.as_str()).collect();
        for required in [
            &self.broker.commands_exchange,
            &self.broker.events_exchange,
            &self.broker.unrouted_exchange,
            &self.broker.dead_letter_exchange,
            &self.broker.retry_exchange,
        ] {
            if !exchanges.contains(&required.as_str()) {
                return Err(ConfigError::invalid(
                    "exchanges",
                    format!("exchange {required:?} is used by [broker] but not declared"),
                ));
            }
        }
        for (i, q) in self.queues.iter().enumerate() {
            if q.delivery_limit == 0 {
                return Err(ConfigError::invalid(
                    format!("queues[{i}].delivery_limit"),
                    "must be at least 1",
                ));
            }
            for b in &q.bindings {
                if !exchanges.contains(&b.exchange.as_str()) {
                    return Err(ConfigError::invalid(
                        format!("queues[{i}].bindings"),
                        format!("exchange {:?} is not declared", b.exchange),
                    ));
                }
            }
        }
        let queues: Vec<&str> = self.queues.iter().map(|q| q.name.as_str()).collect();
        for (key, queue) in [
            ("broker.rejected_queue", &self.broker.rejected_queue),
            ("broker.unrouted_queue", &self.broker.unrouted_queue),
            ("providers.csq.queue", &self.providers.csq.queue),
            ("providers.csq.poll_queue", &self.providers.csq.poll_queue),
            ("providers.electrum.queue", &self.providers.electrum.queue),
            (
                "providers.electrum.advice_queue",
                &self.providers.electrum.advice_queue,
            ),
            (
                "providers.electrum.parked_queue",
                &self.providers.electrum.parked_queue,
            ),
        ] {
            if !queues.contains(&queue.as_str()) {
                return Err(ConfigError::invalid(
                    key,
                    format!("queue {queue:?} is not declared"),
                ));
            }
        }
        for (i, t) in self.delay_tiers.iter().enumerate() {
            if t.ttl_ms == 0 {
                return Err(ConfigError::invalid(
                    format!("delay_tiers[{i}].ttl_ms"),
                    "must be positive",
                ));
            }
        }
        let csq = &self.providers.csq;
        check_limits("providers.csq", &csq.base_url, &csq.limits())?;
        let electrum = &self.providers.electrum;
        check_limits("providers.electrum", &electrum.base_url, &electrum.limits())?;
        if electrum.client_id.is_empty() {
            return Err(ConfigError::invalid(
                "providers.electrum.client_id",
                "must not be empty",
            ));
        }
        if let Some(op) = electrum
            .messaging_by_operation
            .keys()
            .find(|k| !["provision", "redeem", "refund"].contains(&k.as_str()))
        {
            return Err(ConfigError::invalid(
                "providers.electrum.messaging_by_operation",
                format!("{op:?} is not provision, redeem or refund"),
            ));
        }
        if electrum.advice_backoff_base_ms == 0
            || electrum.advice_backoff_cap_ms < electrum.advice_backoff_base_ms
            || electrum.advice_budget_ms == 0
        {
            return Err(ConfigError::invalid(
                "providers.electrum.advice_*",
                "need 0 < advice_backoff_base_ms <= advice_backoff_cap_ms and a positive budget",
            ));
        }
        Ok(())
    }

    /// A provider credential read at load time from the variable the file names.
    pub fn credential(&self, env_name: &str) -> &str {
        self.secrets
            .provider_credentials
            .get(env_name)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// The broker name of the exchange or queue declared under `logical`.
    pub fn name(&self, logical: &str) -> String {
        self.broker.name(logical)
    }
}

/// The checks every provider's HTTP settings pass.
fn check_limits(key: &str, base_url: &str, l: &HttpLimits) -> Result<(), ConfigError> {
    if !base_url.starts_with("http://") && !base_url.starts_with("https://") {
        return Err(ConfigError::invalid(
            format!("{key}.base_url"),
            "must be an http(s) URL",
        ));
    }
    if l.rate_per_sec == 0 || l.concurrency == 0 {
        return Err(ConfigError::invalid(
            format!("{key}.rate_per_sec / concurrency"),
            "must be at least 1",
        ));
    }
    if l.max_queue_wait() < Duration::from_millis(500) {
        return Err(ConfigError::invalid(
            format!("{key}.lease_margin_ms"),
            "must be at least 1000: half of it is the longest wait for a send slot",
        ));
    }
    if l.request_timeout.is_zero() || l.connect_timeout.is_zero() {
        return Err(ConfigError::invalid(
            format!("{key}.*_timeout_ms"),
            "must be positive",
        ));
    }
    Ok(())
}

fn read_secrets(config: &Config, env: &dyn Env) -> Result<Secrets, ConfigError> {
    let webhook_signing_secret =
        env.get("WEBHOOK_SIGNING_SECRET")
            .ok_or_else(|| ConfigError::MissingEnv {
                name: "WEBHOOK_SIGNING_SECRET".into(),
                hint: " (a Standard Webhooks secret: whsec_ followed by base64)".into(),
            })?;
    crate::webhook::SigningKey::parse(&webhook_signing_secret)
        .map_err(|reason| ConfigError::invalid("WEBHOOK_SIGNING_SECRET", reason))?;

    let data_key = match env.get("DATA_ENCRYPTION_KEY") {
        Some(b64) => crate::crypto::parse_key(&b64)
            .map_err(|reason| ConfigError::invalid("DATA_ENCRYPTION_KEY", reason))?,
        // Without an explicit key, derive one from the signing secret so a development setup
        // still encrypts at rest; production sets its own key (see README).
        None => crate::crypto::derive_key(&webhook_signing_secret),
    };

    let mut provider_credentials = BTreeMap::new();
    let csq = &config.providers.csq;
    let electrum = &config.providers.electrum;
    for (section, name) in [
        ("csq", &csq.user_env),
        ("csq", &csq.password_env),
        ("electrum", &electrum.password_env),
    ] {
        let value = env.get(name).ok_or_else(|| ConfigError::MissingEnv {
            name: name.clone(),
            hint: format!(" (named by [providers.{section}] in the config file)"),
        })?;
        provider_credentials.insert(name.clone(), value);
    }
    Ok(Secrets {
        webhook_signing_secret,
        data_key,
        provider_credentials,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = include_str!("../queues.toml");

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn good_env() -> BTreeMap<String, String> {
        env(&[
            (
                "WEBHOOK_SIGNING_SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            ),
            ("CSQ_USER", "relay"),
            ("CSQ_PASSWORD", "secret"),
            ("ELECTRUM_PASSWORD", "secret"),
            ("AMQP_URL", "amqp://u:p@example:5672/%2f"),
        ])
    }

    #[test]
    fn shipped_file_loads_and_env_overrides() {
        let c = Config::from_toml(FILE, "queues.toml", &good_env(), true).expect("loads");
        assert_eq!(c.broker.url, "amqp://u:p@example:5672/%2f");
        assert_eq!(c.credential("CSQ_USER"), "relay");
        assert!(c.queues.iter().all(|q| q.delivery_limit > 0));
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let mut e = good_env();
        e.remove("WEBHOOK_SIGNING_SECRET");
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_SIGNING_SECRET"), "{err}");
    }

    #[test]
    fn bad_secret_names_the_variable() {
        let mut e = good_env();
        e.insert("WEBHOOK_SIGNING_SECRET".into(), "hunter2".into());
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_SIGNING_SECRET"), "{err}");
    }

    #[test]
    fn missing_credential_names_the_variable() {
        let mut e = good_env();
        e.remove("CSQ_PASSWORD");
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("CSQ_PASSWORD"), "{err}");
    }

    #[test]
    fn unknown_key_is_named() {
        let text = FILE.replace("prefetch = 16", "prefetch = 16\nprefetsh = 3");
        let err = Config::from_toml(&text, "queues.toml", &good_env(), true).unwrap_err();
        assert!(err.to_string().contains("prefetsh"), "{err}");
    }

    #[test]
    fn bad_database_url_is_named() {
        let mut e = good_env();
        e.insert("DATABASE_URL".into(), "mysql://x".into());
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("DATABASE_URL"), "{err}");
    }
}
