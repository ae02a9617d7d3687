//! The public contract: commands in, outcomes out (`docs/contract.md`).
//!
//! A command arrives as an AMQP message on `voucher.commands` with routing key
//! `<kind>.<provider>`. [`parse`] checks the envelope and turns the raw delivery into a
//! [`Command`] or a [`Rejection`] with a machine-readable reason; the provider then reads
//! the params (`providers::parse_command` does both). Nothing here touches the network or
//! the database, so every bad input can be tested in isolation.

pub mod strict_json;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Largest accepted command body. Anything bigger is rejected unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted `command_id` or `source`.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted `callback_url`.
pub const MAX_URL_LEN: usize = 2048;

/// A command whose envelope is valid: who asked, what to do, and where to say how it went.
/// `params` is read by the provider (`providers::Action`).
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub command_id: String,
    pub source: String,
    pub callback_url: Option<String>,
    pub kind: String,
    pub provider: String,
    pub params: Map<String, Value>,
}

impl Command {
    /// Everything a rejection of this command needs to reach its sender.
    pub fn envelope(&self) -> Envelope {
        Envelope {
            command_id: Some(self.command_id.clone()),
            source: Some(self.source.clone()),
            kind: Some(self.kind.clone()),
            provider: Some(self.provider.clone()),
            callback_url: self.callback_url.clone(),
        }
    }

    /// Whose outcome this command's events are.
    pub fn subject(&self) -> Subject {
        Subject {
            command_id: self.command_id.clone(),
            source: self.source.clone(),
            kind: self.kind.clone(),
            provider: self.provider.clone(),
        }
    }
}

/// Whose outcome an event is: everything an [`Outcome`] needs besides the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub command_id: String,
    pub source: String,
    pub kind: String,
    pub provider: String,
}

impl Subject {
    /// This command's outcome event.
    pub fn outcome(
        &self,
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
    ) -> Outcome {
        Outcome::new(
            Some(self.command_id.clone()),
            Some(self.source.clone()),
            &self.kind,
            &self.provider,
            status,
            result,
            error,
        )
    }
}

/// Statuses of the public contract. All are terminal except `Pending`, which only progress
/// events carry (a raffle ticket waiting for its draw).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Succeeded,
    Declined,
    Reversed,
    Failed,
    Expired,
    Rejected,
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Declined => "declined",
            Status::Reversed => "reversed",
            Status::Failed => "failed",
            Status::Expired => "expired",
            Status::Rejected => "rejected",
            Status::Pending => "pending",
        }
    }
}

/// A machine-readable error carried by an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeError {
    /// Stable, snake_case: what a program switches on.
    pub code: String,
    /// For people; may change between versions.
    pub message: String,
    /// The provider's own code, when the error came from the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_code: Option<String>,
}

/// One outcome event, exactly as published and POSTed (the public contract).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub event_id: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub command_id: Option<String>,
    pub source: Option<String>,
    pub kind: String,
    pub provider: String,
    pub status: Status,
    pub result: Option<Value>,
    pub error: Option<OutcomeError>,
    pub occurred_at: String,
}

impl Outcome {
    /// Builds a terminal outcome with a fresh, time-ordered event id.
    pub fn new(
        command_id: Option<String>,
        source: Option<String>,
        kind: &str,
        provider: &str,
        status: Status,
        result: Option<Value>,
        error: Option<OutcomeError>,
    ) -> Outcome {
        Outcome {
            event_id: format!("evt_{}", uuid::Uuid::now_v7().simple()),
            event_type: format!("{kind}.{}", status.as_str()),
            command_id,
            source,
            kind: kind.to_string(),
            provider: provider.to_string(),
            status,
            result,
            error,
            occurred_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }
    }

    /// The same event under another `type`, for events that are not `<kind>.<status>`
    /// (`purchase.ticket_issued`, `raffle.resolved`).
    pub fn with_type(mut self, event_type: &str) -> Outcome {
        self.event_type = event_type.to_string();
        self
    }

    /// `<status>.<kind>.<provider>` on `voucher.events`.
    pub fn routing_key(&self) -> String {
        format!("{}.{}.{}", self.status.as_str(), self.kind, self.provider)
    }
}

/// Why a command was rejected. The `code` strings are part of the public contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    BodyTooLarge,
    NotUtf8,
    NotJson,
    /// An object of the body names the same key twice.
    DuplicateKey,
    NotAnObject,
    NulCharacter,
    MissingField(&'static str),
    InvalidField(String, String),
    UnknownKind(String),
    UnknownProvider(String),
    RoutingKeyMismatch {
        routing_key: String,
        body: String,
    },
    AmountNotInteger(String),
    NegativeAmount(String),
    UnknownParam(String),
    UnknownField(String),
    /// `(source, command_id)` already names a command of another kind or provider.
    KeyReused,
}

impl RejectReason {
    /// The stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            RejectReason::BodyTooLarge => "body_too_large",
            RejectReason::NotUtf8 => "body_not_utf8",
            RejectReason::NotJson => "body_not_json",
            RejectReason::DuplicateKey => "body_duplicate_key",
            RejectReason::NotAnObject => "body_not_object",
            RejectReason::NulCharacter => "body_has_nul",
            RejectReason::MissingField(_) => "missing_field",
            RejectReason::InvalidField(..) => "invalid_field",
            RejectReason::UnknownKind(_) => "unknown_kind",
            RejectReason::UnknownProvider(_) => "unknown_provider",
            RejectReason::RoutingKeyMismatch { .. } => "routing_key_mismatch",
            RejectReason::AmountNotInteger(_) => "amount_not_integer",
            RejectReason::NegativeAmount(_) => "amount_negative",
            RejectReason::UnknownParam(_) => "unknown_param",
            RejectReason::UnknownField(_) => "unknown_field",
            RejectReason::KeyReused => "idempotency_key_reused",
        }
    }

    /// A sentence for people. Never echoes field values, which may be personal data.
    pub fn message(&self) -> String {
        match self {
            RejectReason::BodyTooLarge => {
                format!("the body is larger than {MAX_BODY_BYTES} bytes")
            }
            RejectReason::NotUtf8 => "the body is not UTF-8".into(),
            RejectReason::NotJson => "the body is not JSON".into(),
            RejectReason::DuplicateKey => "an object in the body names the same key twice".into(),
            RejectReason::NotAnObject => "the body is not a JSON object".into(),
            RejectReason::NulCharacter => "the body contains a NUL character (\\u0000)".into(),
            RejectReason::MissingField(f) => format!("the field {f} is missing"),
            RejectReason::InvalidField(f, why) => format!("the field {f} is invalid: {why}"),
            RejectReason::UnknownKind(k) => format!("unknown kind {k:?} for this provider"),
            RejectReason::UnknownProvider(p) => format!("unknown provider {p:?}"),
            RejectReason::RoutingKeyMismatch { routing_key, body } => format!(
                "routing key {routing_key:?} disagrees with the body's kind.provider {body:?}"
            ),
            RejectReason::AmountNotInteger(f) => {
                format!("the amount {f} must be an integer in minor units")
            }
            RejectReason::NegativeAmount(f) => format!("the amount {f} must not be negative"),
            RejectReason::UnknownParam(p) => format!("params has an unknown field {p:?}"),
            RejectReason::UnknownField(p) => format!("the command has an unknown field {p:?}"),
            RejectReason::KeyReused => {
                "source and command_id already name a command of another kind or provider".into()
            }
        }
    }

    pub fn to_error(&self) -> OutcomeError {
        OutcomeError {
            code: self.code().to_string(),
            message: self.message(),
            provider_code: None,
        }
    }
}

/// What could be read from a command that was rejected, so the rejection can still be
/// addressed to its sender.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Envelope {
    pub command_id: Option<String>,
    pub source: Option<String>,
    pub kind: Option<String>,
    pub provider: Option<String>,
    pub callback_url: Option<String>,
}

/// A command the relay will not run, and everything known about its sender.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub reason: RejectReason,
    pub envelope: Envelope,
}

impl Rejection {
    /// The `rejected` outcome for this command.
    pub fn outcome(&self) -> Outcome {
        let e = &self.envelope;
        Outcome::new(
            e.command_id.clone(),
            e.source.clone(),
            e.kind.as_deref().unwrap_or("unknown"),
            e.provider.as_deref().unwrap_or("unknown"),
            Status::Rejected,
            None,
            Some(self.reason.to_error()),
        )
    }
}

const TOP_LEVEL_FIELDS: [&str; 6] = [
    "command_id",
    "source",
    "kind",
    "provider",
    "callback_url",
    "params",
];

/// Validates one raw delivery's envelope against the contract. `providers` are the names
/// of the providers this relay runs; any other is `unknown_provider`.
pub fn parse(
    routing_key: &str,
    body: &[u8],
    providers: &[&str],
) -> Result<Command, Box<Rejection>> {
    let obj = read_object(body).map_err(|reason| {
        Box::new(Rejection {
            reason,
            envelope: Envelope::default(),
        })
    })?;
    let envelope = read_envelope(&obj);
    let fail = |reason| {
        Box::new(Rejection {
            reason,
            envelope: envelope.clone(),
        })
    };
    let command_id = required_id(&obj, "command_id").map_err(fail)?;
    let source = required_id(&obj, "source").map_err(fail)?;
    let kind = required_str(&obj, "kind").map_err(fail)?;
    let provider = required_str(&obj, "provider").map_err(fail)?;
    if let Some(unknown) = obj.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(fail(RejectReason::UnknownField(unknown.clone())));
    }
    let callback_url = optional_callback_url(&obj).map_err(fail)?;
    if !providers.contains(&provider) {
        return Err(fail(RejectReason::UnknownProvider(provider.to_string())));
    }
    let expected_key = format!("{kind}.{provider}");
    if routing_key != expected_key {
        return Err(fail(RejectReason::RoutingKeyMismatch {
            routing_key: routing_key.to_string(),
            body: expected_key,
        }));
    }
    let params = match obj.get("params") {
        Some(Value::Object(p)) => p.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => return Err(fail(invalid("params", "must be an object"))),
    };
    Ok(Command {
        command_id,
        source,
        callback_url,
        kind: kind.to_string(),
        provider: provider.to_string(),
        params,
    })
}

/// The body as a JSON object, or why it is not one.
fn read_object(body: &[u8]) -> Result<Map<String, Value>, RejectReason> {
    if body.len() > MAX_BODY_BYTES {
        return Err(RejectReason::BodyTooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| RejectReason::NotUtf8)?;
    // Strict: a repeated key would let two readers of one body see two commands. With one,
    // no field (not even the addressing ones) can be trusted, so the rejection has no
    // envelope.
    let value = strict_json::parse(text).map_err(|e| match e {
        strict_json::StrictError::NotJson => RejectReason::NotJson,
        strict_json::StrictError::DuplicateKey => RejectReason::DuplicateKey,
    })?;
    // PostgreSQL text and jsonb cannot hold U+0000; no field of the contract needs it.
    if has_nul(&value) {
        return Err(RejectReason::NulCharacter);
    }
    match value {
        Value::Object(obj) => Ok(obj),
        _ => Err(RejectReason::NotAnObject),
    }
}

fn optional_callback_url(obj: &Map<String, Value>) -> Result<Option<String>, RejectReason> {
    match obj.get("callback_url") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(url)) => validate_callback_url(url).map(Some),
        Some(_) => Err(invalid("callback_url", "must be a string")),
    }
}

fn invalid(field: &str, why: &str) -> RejectReason {
    RejectReason::InvalidField(field.into(), why.into())
}

/// True if any string or key anywhere in `v` contains U+0000.
fn has_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Reads whatever addressing fields are present and well-typed, for a rejection.
fn read_envelope(obj: &Map<String, Value>) -> Envelope {
    let s = |k: &str| {
        obj.get(k)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && v.len() <= MAX_URL_LEN)
            .map(str::to_string)
    };
    Envelope {
        command_id: s("command_id").filter(|v| v.len() <= MAX_ID_LEN),
        source: s("source").filter(|v| v.len() <= MAX_ID_LEN),
        kind: s("kind").filter(|v| is_token(v)),
        provider: s("provider").filter(|v| is_token(v)),
        callback_url: s("callback_url").and_then(|u| validate_callback_url(&u).ok()),
    }
}

/// Kinds and providers are lowercase words; anything else would break routing keys.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

fn required_str<'a>(
    obj: &'a Map<String, Value>,
    field: &'static str,
) -> Result<&'a str, RejectReason> {
    match obj.get(field) {
        None | Some(Value::Null) => Err(RejectReason::MissingField(field)),
        Some(Value::String(s)) if s.is_empty() => Err(RejectReason::MissingField(field)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RejectReason::InvalidField(
            field.to_string(),
            "must be a string".into(),
        )),
    }
}

fn required_id(obj: &Map<String, Value>, field: &'static str) -> Result<String, RejectReason> {
    let s = required_str(obj, field)?;
    if s.len() > MAX_ID_LEN {
        return Err(RejectReason::InvalidField(
            field.to_string(),
            format!("longer than {MAX_ID_LEN} bytes"),
        ));
    }
    if s.chars().any(char::is_control) {
        return Err(RejectReason::InvalidField(
            field.to_string(),
            "contains control characters".into(),
        ));
    }
    Ok(s.to_string())
}

fn validate_callback_url(url: &str) -> Result<String, RejectReason> {
    let bad = |why: &str| RejectReason::InvalidField("callback_url".into(), why.into());
    if url.len() > MAX_URL_LEN {
        return Err(bad("too long"));
    }
    let parsed = reqwest::Url::parse(url).map_err(|_| bad("not a URL"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(bad("must be an http(s) URL with a host"));
    }
    Ok(url.to_string())
}

/// Refuses any param not in `allowed`: `unknown_param`.
pub fn only_params(params: &Map<String, Value>, allowed: &[&str]) -> Result<(), RejectReason> {
    match params.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(unknown) => Err(RejectReason::UnknownParam(unknown.clone())),
        None => Ok(()),
    }
}

/// Reads an optional integer amount in minor units. A float, a string, a negative number or
/// zero is rejected: money is never a float.
pub fn amount_field(params: &Map<String, Value>, field: &str) -> Result<Option<i32>, RejectReason> {
    match params.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                if i < 0 {
                    return Err(RejectReason::NegativeAmount(field.to_string()));
                }
                // An amount of nothing buys nothing: a zero is a producer's bug (an unset
                // field serialized as 0), never a sale. An absent amount is the way to
                // leave it to the product.
                if i == 0 {
                    return Err(RejectReason::InvalidField(
                        field.to_string(),
                        "must be more than zero".into(),
                    ));
                }
                i32::try_from(i).map(Some).map_err(|_| {
                    RejectReason::InvalidField(field.to_string(), "exceeds int32".into())
                })
            } else if n.as_u64().is_some() {
                Err(RejectReason::InvalidField(
                    field.to_string(),
                    "exceeds int32".into(),
                ))
            } else if n.as_f64().is_some_and(|f| f < 0.0) {
                Err(RejectReason::NegativeAmount(field.to_string()))
            } else {
                Err(RejectReason::AmountNotInteger(field.to_string()))
            }
        }
        Some(_) => Err(RejectReason::AmountNotInteger(field.to_string())),
    }
}
