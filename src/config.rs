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

use crate::providers::ProvidersConfig;
use crate::webhook::guard::AllowList;

/// A configuration problem, always naming the key or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The OS error is part of the message, not a `source`, so it is printed once.
    #[error(
        "cannot read config file {path}: {reason}.\n  Run from the folder that holds it, or name it with --config <file> or VOUCHER_RELAY_CONFIG."
    )]
    Read {
        path: String,
        reason: std::io::Error,
    },
    /// `message` is toml's own, over several lines with a caret under the fault.
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
    /// Crash recovery and shutdown; every key has a default.
    #[serde(default)]
    pub recovery: RecoveryConfig,
    #[serde(default)]
    pub exchanges: Vec<ExchangeConfig>,
    #[serde(default)]
    pub queues: Vec<QueueConfig>,
    #[serde(default)]
    pub delay_tiers: Vec<DelayTier>,
    pub providers: ProvidersConfig,
    /// Where each provider's sandbox listens, by provider name (`[sandbox.csq]`).
    #[serde(default)]
    pub sandbox: BTreeMap<String, SandboxListen>,
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
    /// Queue bound to the dead-letter exchange: what failed the same way every time, or used
    /// up its deliveries. The relay copies each message to PostgreSQL (`dlq` subcommands).
    #[serde(default = "default_broker_dead_queue")]
    pub dead_queue: String,
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

/// Callback delivery (`[webhook]`). Every key has a default, so the section may be short.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// How long one callback POST may take, connection included.
    #[serde(default = "default_webhook_timeout_ms")]
    pub timeout_ms: u64,
    /// When each attempt is made: the first counted from the outcome (`0s`: at once), each
    /// other from the failure before it. After the last, the delivery is dead. `WEBHOOK_RETRY_SCHEDULE`
    /// overrides it with the same comma-separated form, e.g. `0s,5s,5m,30m,2h,5h,10h,10h`.
    #[serde(
        default = "default_retry_schedule",
        deserialize_with = "deserialize_schedule"
    )]
    pub retry_schedule: Vec<Duration>,
    /// Ranges a callback may reach although they are internal (loopback, private, link-local
    /// ...). Empty: only public addresses. `WEBHOOK_ALLOW_CIDRS` (comma-separated) overrides.
    #[serde(default, deserialize_with = "deserialize_allow_list")]
    pub allow_cidrs: AllowList,
    /// Deliveries in flight at once to one destination (scheme, host and port), per process.
    #[serde(default = "default_per_destination")]
    pub per_destination_concurrency: u32,
    /// Consecutive failed attempts to one destination that open its circuit.
    #[serde(default = "default_circuit_failures")]
    pub circuit_failures: u32,
    /// How long an open circuit holds that destination's deliveries back before one probe.
    #[serde(default = "default_circuit_open_ms")]
    pub circuit_open_ms: u64,
    /// The queue every dead delivery is published to, with its attempt history.
    #[serde(default = "default_dead_queue")]
    pub dead_queue: String,
    /// The list of milliseconds that `retry_schedule` replaced; read only to say so.
    #[serde(default)]
    retry_schedule_ms: Option<serde::de::IgnoredAny>,
}

impl WebhookConfig {
    /// The longest wait of the schedule: the cap on a receiver's `Retry-After`.
    pub fn longest_step(&self) -> Duration {
        self.retry_schedule
            .iter()
            .copied()
            .max()
            .unwrap_or_default()
    }
}

fn default_webhook_timeout_ms() -> u64 {
    15_000
}
fn default_retry_schedule() -> Vec<Duration> {
    parse_schedule(DEFAULT_RETRY_SCHEDULE).unwrap_or_default()
}
fn default_per_destination() -> u32 {
    64
}
fn default_circuit_failures() -> u32 {
    5
}
fn default_circuit_open_ms() -> u64 {
    30_000
}
fn default_broker_dead_queue() -> String {
    "voucher.dead".into()
}

fn default_dead_queue() -> String {
    "callbacks.dead".into()
}

/// At once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h: eight attempts over about a day.
pub const DEFAULT_RETRY_SCHEDULE: &str = "0s,5s,5m,30m,2h,5h,10h,10h";

fn deserialize_schedule<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    parse_schedule(&text).map_err(serde::de::Error::custom)
}

fn deserialize_allow_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<AllowList, D::Error> {
    let list = Vec::<String>::deserialize(d)?;
    AllowList::parse(&list.join(",")).map_err(serde::de::Error::custom)
}

/// Parses `0s,5s,5m,30m,2h` (units ms, s, m, h, d). At least one step is required.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let steps = text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_duration)
        .collect::<Result<Vec<_>, _>>()?;
    if steps.is_empty() {
        return Err("needs at least one step, such as 0s,5s,5m".into());
    }
    Ok(steps)
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit (ms, s, m, h or d)"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a whole number"))?;
    let ms_per = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!(
                "{text:?} has an unknown unit; use ms, s, m, h or d"
            ));
        }
    };
    n.checked_mul(ms_per)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
}

/// How the relay recovers from what it cannot see through: a request that never arrived,
/// and its own shutdown.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecoveryConfig {
    /// How many times a command the provider never received is sent again (under a fresh
    /// reference) before it ends `failed` (`not_applied`).
    pub resend_budget: u32,
    /// On SIGTERM or SIGINT: how long the work in flight may take to finish before what is
    /// left is handed back to the broker.
    pub shutdown_grace_ms: u64,
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        RecoveryConfig {
            resend_budget: 3,
            shutdown_grace_ms: 20_000,
        }
    }
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
pub struct SandboxListen {
    pub listen: SocketAddr,
}

/// Values that come only from the environment.
#[derive(Clone, Default)]
pub struct Secrets {
    /// The raw `whsec_...` secrets, space-separated, the current one first; parsed by
    /// `webhook::SigningKeys`.
    pub webhook_signing_secret: String,
    /// 32-byte keys for voucher codes at rest: the first seals, any of them opens.
    pub data_keys: Vec<[u8; 32]>,
    /// Provider credentials by environment variable name.
    pub provider_credentials: BTreeMap<String, String>,
    /// `OPERATOR_TOKEN`: the web console's login. Unset, there is no console.
    pub operator_token: Option<String>,
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
        let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
            path: shown_path(path),
            reason,
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
            message: e.to_string().trim_end().to_string(),
        })?;
        if let Some(url) = env.get("AMQP_URL") {
            config.broker.url = url;
        }
        if let Some(url) = env.get("DATABASE_URL") {
            config.database.url = url;
        }
        if let Some(schedule) = env.get("WEBHOOK_RETRY_SCHEDULE") {
            config.webhook.retry_schedule = parse_schedule(&schedule)
                .map_err(|reason| ConfigError::invalid("WEBHOOK_RETRY_SCHEDULE", reason))?;
        }
        if let Some(cidrs) = env.get("WEBHOOK_ALLOW_CIDRS") {
            config.webhook.allow_cidrs = AllowList::parse(&cidrs)
                .map_err(|reason| ConfigError::invalid("WEBHOOK_ALLOW_CIDRS", reason))?;
        }
        if with_secrets {
            config.secrets = read_secrets(&config, env)?;
        }
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde cannot: ranges and cross-references between sections.
    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_connections()?;
        self.validate_exchanges()?;
        self.validate_queues()?;
        for (name, section) in self.providers.sections() {
            if let Err((key, reason)) = section.http().validate(&format!("providers.{name}")) {
                return Err(ConfigError::invalid(key, reason));
            }
            section
                .validate()
                .map_err(|(key, reason)| ConfigError::invalid(key, reason))?;
        }
        Ok(())
    }

    fn validate_connections(&self) -> Result<(), ConfigError> {
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
        let at_least_one = [
            ("broker.prefetch", usize::from(self.broker.prefetch)),
            ("database.pool_size", self.database.pool_size),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::invalid(*key, "must be at least 1"));
        }
        let at_least_one = [
            (
                "webhook.per_destination_concurrency",
                self.webhook.per_destination_concurrency,
            ),
            ("webhook.circuit_failures", self.webhook.circuit_failures),
        ];
        if let Some((key, _)) = at_least_one.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::invalid(*key, "must be at least 1"));
        }
        if self.webhook.retry_schedule_ms.is_some() {
            return Err(ConfigError::invalid(
                "webhook.retry_schedule_ms",
                format!(
                    "was replaced by retry_schedule, the attempt times as text: retry_schedule = \"{DEFAULT_RETRY_SCHEDULE}\""
                ),
            ));
        }
        if self.webhook.timeout_ms == 0 {
            return Err(ConfigError::invalid(
                "webhook.timeout_ms",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    /// Every exchange `[broker]` and the bindings use is declared.
    fn validate_exchanges(&self) -> Result<(), ConfigError> {
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
            if let Some(b) = q
                .bindings
                .iter()
                .find(|b| !exchanges.contains(&b.exchange.as_str()))
            {
                return Err(ConfigError::invalid(
                    format!("queues[{i}].bindings"),
                    format!("exchange {:?} is not declared", b.exchange),
                ));
            }
        }
        Ok(())
    }

    /// Delivery limits and tiers are positive, and every queue a section names is declared.
    fn validate_queues(&self) -> Result<(), ConfigError> {
        if let Some(i) = self.queues.iter().position(|q| q.delivery_limit == 0) {
            return Err(ConfigError::invalid(
                format!("queues[{i}].delivery_limit"),
                "must be at least 1",
            ));
        }
        if self.delay_tiers.is_empty() {
            return Err(ConfigError::invalid(
                "delay_tiers",
                "needs at least one tier",
            ));
        }
        if let Some(i) = self.delay_tiers.iter().position(|t| t.ttl_ms == 0) {
            return Err(ConfigError::invalid(
                format!("delay_tiers[{i}].ttl_ms"),
                "must be positive",
            ));
        }
        let declared: Vec<&str> = self.queues.iter().map(|q| q.name.as_str()).collect();
        let mut named = vec![
            ("broker.rejected_queue", self.broker.rejected_queue.as_str()),
            ("broker.dead_queue", self.broker.dead_queue.as_str()),
            ("broker.unrouted_queue", self.broker.unrouted_queue.as_str()),
            ("webhook.dead_queue", self.webhook.dead_queue.as_str()),
        ];
        for (_, section) in self.providers.sections() {
            named.extend(section.queues());
        }
        match named.iter().find(|(_, q)| !declared.contains(q)) {
            Some((key, queue)) => Err(ConfigError::invalid(
                *key,
                format!("queue {queue:?} is not declared"),
            )),
            None => Ok(()),
        }
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

/// How to make a signing secret, for the messages about a missing or bad one.
const MAKE_SECRET: &str =
    "Make one with: export WEBHOOK_SIGNING_SECRET=whsec_$(head -c 32 /dev/urandom | base64)";

/// A config path as messages show it: a relative one with the folder it was looked for in.
fn shown_path(path: &Path) -> String {
    match std::env::current_dir() {
        Ok(dir) if path.is_relative() => format!("{} (in {})", path.display(), dir.display()),
        _ => path.display().to_string(),
    }
}

/// The keys that seal and open stored voucher data: `DATA_ENCRYPTION_KEY`, or else one
/// derived from each secret in `signing_secret`.
fn data_keys(env: &dyn Env, signing_secret: &str) -> Result<Vec<[u8; 32]>, ConfigError> {
    Ok(match env.get("DATA_ENCRYPTION_KEY") {
        Some(b64) => vec![
            crate::crypto::parse_key(&b64)
                .map_err(|reason| ConfigError::invalid("DATA_ENCRYPTION_KEY", reason))?,
        ],
        // Without an explicit key, derive one from each signing secret so a development setup
        // still encrypts at rest: the current secret's seals, and any opens, so a rotation in
        // progress reads what was sealed before it. Production sets its own key, which a
        // rotation does not touch (see docs/operations.md).
        None => signing_secret
            .split_whitespace()
            .map(crate::crypto::derive_key)
            .collect(),
    })
}

impl Config {
    /// Reads only the keys that open stored data, for operator commands that read outcomes
    /// but call no provider (no provider credential is needed).
    pub fn read_data_keys(&mut self, env: &dyn Env) -> Result<(), ConfigError> {
        let secret = env.get("WEBHOOK_SIGNING_SECRET").unwrap_or_default();
        if secret.is_empty() && env.get("DATA_ENCRYPTION_KEY").is_none() {
            return Err(ConfigError::MissingEnv {
                name: "DATA_ENCRYPTION_KEY or WEBHOOK_SIGNING_SECRET".into(),
                hint: " (the relay's own, to open the stored outcomes)".into(),
            });
        }
        self.secrets.data_keys = data_keys(env, &secret)?;
        Ok(())
    }
}

/// The shortest operator token accepted: a guessable one would hand out replay and discard.
const MIN_OPERATOR_TOKEN: usize = 16;

fn read_secrets(config: &Config, env: &dyn Env) -> Result<Secrets, ConfigError> {
    let webhook_signing_secret =
        env.get("WEBHOOK_SIGNING_SECRET")
            .ok_or_else(|| ConfigError::MissingEnv {
                name: "WEBHOOK_SIGNING_SECRET".into(),
                hint: format!(
                    " (a Standard Webhooks secret: whsec_ followed by base64).\n  {MAKE_SECRET}"
                ),
            })?;
    crate::webhook::SigningKeys::parse(&webhook_signing_secret).map_err(|reason| {
        ConfigError::invalid(
            "WEBHOOK_SIGNING_SECRET",
            format!("{reason}.\n  {MAKE_SECRET}"),
        )
    })?;

    let data_keys = data_keys(env, &webhook_signing_secret)?;

    // Only an enabled provider's credentials are needed.
    let mut provider_credentials = BTreeMap::new();
    for (name, section) in config.providers.sections() {
        if !section.enabled() {
            continue;
        }
        for var in section.credential_vars() {
            let value = env.get(var).ok_or_else(|| ConfigError::MissingEnv {
                name: var.to_string(),
                hint: format!(" (named by [providers.{name}] in the config file)"),
            })?;
            provider_credentials.insert(var.to_string(), value);
        }
    }
    let operator_token = env.get("OPERATOR_TOKEN");
    if let Some(t) = &operator_token
        && t.chars().count() < MIN_OPERATOR_TOKEN
    {
        return Err(ConfigError::invalid(
            "OPERATOR_TOKEN",
            format!(
                "must be at least {MIN_OPERATOR_TOKEN} characters (it guards replay and discard); make one with: openssl rand -hex 24"
            ),
        ));
    }
    Ok(Secrets {
        webhook_signing_secret,
        data_keys,
        provider_credentials,
        operator_token,
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
    fn webhook_defaults_and_environment_overrides() {
        let c = Config::from_toml(FILE, "queues.toml", &good_env(), true).expect("loads");
        let s = |secs: u64| Duration::from_secs(secs);
        assert_eq!(
            c.webhook.retry_schedule,
            [
                s(0),
                s(5),
                s(300),
                s(1800),
                s(7200),
                s(18000),
                s(36000),
                s(36000)
            ]
        );
        assert_eq!(c.webhook.timeout_ms, 15_000);
        assert_eq!(c.webhook.longest_step(), s(36000));
        // The shipped file opens no internal range.
        assert!(c.webhook.allow_cidrs.0.is_empty());

        let mut e = good_env();
        e.insert("WEBHOOK_RETRY_SCHEDULE".into(), "0s, 500ms,2m,1h,1d".into());
        e.insert(
            "WEBHOOK_ALLOW_CIDRS".into(),
            "127.0.0.2/32,10.0.0.0/8".into(),
        );
        let c = Config::from_toml(FILE, "queues.toml", &e, true).expect("loads");
        assert_eq!(
            c.webhook.retry_schedule,
            [s(0), Duration::from_millis(500), s(120), s(3600), s(86400)]
        );
        assert!(c.webhook.allow_cidrs.allows("127.0.0.2".parse().unwrap()));
        assert!(!c.webhook.allow_cidrs.allows("127.0.0.1".parse().unwrap()));

        for (var, bad) in [
            ("WEBHOOK_RETRY_SCHEDULE", "5"),
            ("WEBHOOK_RETRY_SCHEDULE", "5x"),
            ("WEBHOOK_RETRY_SCHEDULE", ","),
            ("WEBHOOK_ALLOW_CIDRS", "10.0.0.0/40"),
            ("WEBHOOK_ALLOW_CIDRS", "intranet"),
        ] {
            let mut e = good_env();
            e.insert(var.into(), bad.into());
            let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
            assert!(err.to_string().contains(var), "{bad}: {err}");
        }
    }

    #[test]
    fn the_old_schedule_key_says_what_replaced_it() {
        let old = FILE.replace(
            "retry_schedule = \"0s,5s,5m,30m,2h,5h,10h,10h\"",
            "retry_schedule_ms = [1000, 5000]",
        );
        let err = Config::from_toml(&old, "queues.toml", &good_env(), true).unwrap_err();
        assert!(
            err.to_string().contains("replaced by retry_schedule"),
            "{err}"
        );
    }

    #[test]
    fn rotation_takes_several_secrets_and_keeps_the_data_keys() {
        let mut e = good_env();
        let old = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let new = "whsec_dGhpcyBpcyBhIG5ldyAzMi1ieXRlIHNlY3JldCEhIQ==";
        e.insert("WEBHOOK_SIGNING_SECRET".into(), format!("{new} {old}"));
        let c = Config::from_toml(FILE, "queues.toml", &e, true).expect("loads");
        assert_eq!(
            c.secrets.data_keys,
            [
                crate::crypto::derive_key(new),
                crate::crypto::derive_key(old)
            ]
        );
        e.insert("WEBHOOK_SIGNING_SECRET".into(), format!("{new} nope"));
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("secret 2"), "{err}");
    }

    #[test]
    fn missing_secret_names_the_variable() {
        let mut e = good_env();
        e.remove("WEBHOOK_SIGNING_SECRET");
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("WEBHOOK_SIGNING_SECRET"), "{err}");
    }

    #[test]
    fn missing_or_bad_secret_says_how_to_make_one() {
        let mut e = good_env();
        e.remove("WEBHOOK_SIGNING_SECRET");
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(
            err.to_string()
                .contains("whsec_$(head -c 32 /dev/urandom | base64)"),
            "{err}"
        );
        e.insert("WEBHOOK_SIGNING_SECRET".into(), "hunter2".into());
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("/dev/urandom"), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_toml_error_keeps_its_caret_under_the_fault() {
        let text = FILE.replace("prefetch = 16", "prefetch = ");
        let err = Config::from_toml(&text, "queues.toml", &good_env(), true).unwrap_err();
        let text = err.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines.len() >= 3, "{text}");
        assert!(
            lines
                .iter()
                .any(|l| l.trim_start().starts_with('|') && l.contains('^')),
            "{text}"
        );
    }

    #[test]
    fn a_missing_file_is_named_once_with_the_way_to_name_another() {
        let err =
            Config::load(Path::new("no-such-dir/queues.toml"), &good_env(), false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("no-such-dir/queues.toml (in /"), "{text}");
        assert!(
            text.contains("--config") && text.contains("VOUCHER_RELAY_CONFIG"),
            "{text}"
        );
        assert!(
            std::error::Error::source(&err).is_none(),
            "printed twice by {{:#}}"
        );
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

    #[test]
    fn a_disabled_provider_needs_no_credentials() {
        let mut e = good_env();
        e.remove("CSQ_USER");
        e.remove("CSQ_PASSWORD");
        // The first `enabled` is CSQ's.
        let text = FILE.replacen("enabled = true", "enabled = false", 1);
        let c = Config::from_toml(&text, "queues.toml", &e, true).expect("loads without CSQ");
        assert!(!c.providers.csq.enabled);
        assert!(c.providers.electrum.enabled);
        let err = Config::from_toml(FILE, "queues.toml", &e, true).unwrap_err();
        assert!(err.to_string().contains("CSQ_USER"), "{err}");
    }

    #[test]
    fn unknown_key_in_a_provider_section_is_named() {
        let text = FILE.replacen(
            "[providers.electrum]\n",
            "[providers.electrum]\nrate_per_second = 5\n",
            1,
        );
        let err = Config::from_toml(&text, "queues.toml", &good_env(), true).unwrap_err();
        assert!(err.to_string().contains("rate_per_second"), "{err}");
    }

    #[test]
    fn a_provider_queue_must_be_declared() {
        let text = FILE.replace(
            "poll_queue = \"polls.csq\"",
            "poll_queue = \"polls.nowhere\"",
        );
        let err = Config::from_toml(&text, "queues.toml", &good_env(), true).unwrap_err();
        assert!(
            err.to_string().contains("providers.csq.poll_queue"),
            "{err}"
        );
    }
}
