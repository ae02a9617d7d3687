//! The public contract: commands in, outcomes out (see DESIGN.md, "Public contract").
//!
//! A command arrives as an AMQP message on `voucher.commands` with routing key
//! `<kind>.<provider>`. [`parse`] turns the raw delivery into a [`Command`] or a
//! [`Rejection`] with a machine-readable reason. Nothing here touches the network or the
//! database, so every bad input can be tested in isolation.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::providers::csq::{BalanceParams, ProductsParams, PurchaseParams};
use crate::providers::electrum::{
    LookupParams, LookupRedemptionParams, ProvisionParams, VoucherParams,
};

/// Largest accepted command body. Anything bigger is rejected unread.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// Longest accepted `command_id` or `source`.
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted `callback_url`.
pub const MAX_URL_LEN: usize = 2048;

/// Kinds that move money or stock: an unknown answer to them is resolved (CSQ: by query;
/// Electrum: by reversal), never resent.
pub const FINANCIAL_KINDS: [&str; 4] = ["purchase", "provision", "redeem", "refund"];

/// The providers the relay knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    Csq,
    Electrum,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Csq => "csq",
            Provider::Electrum => "electrum",
        }
    }

    fn parse(s: &str) -> Option<Provider> {
        match s {
            "csq" => Some(Provider::Csq),
            "electrum" => Some(Provider::Electrum),
            _ => None,
        }
    }
}

/// A validated command: who asked, what to do, and where to say how it went.
#[derive(Debug, Clone, PartialEq)]
pub struct Command {
    pub command_id: String,
    pub source: String,
    pub callback_url: Option<String>,
    pub action: Action,
}

/// What a command asks for. One variant per kind and provider; the executor matches once.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    CsqPurchase(PurchaseParams),
    CsqProducts(ProductsParams),
    CsqBalance(BalanceParams),
    ElectrumProvision(ProvisionParams),
    ElectrumRedeem(VoucherParams),
    ElectrumRefund(VoucherParams),
    ElectrumLookup(LookupParams),
    ElectrumLookupRedemption(LookupRedemptionParams),
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::CsqPurchase(_) => "purchase",
            Action::CsqProducts(_) => "products",
            Action::CsqBalance(_) => "balance",
            Action::ElectrumProvision(_) => "provision",
            Action::ElectrumRedeem(_) => "redeem",
            Action::ElectrumRefund(_) => "refund",
            Action::ElectrumLookup(_) => "lookup",
            Action::ElectrumLookupRedemption(_) => "lookup_redemption",
        }
    }

    pub fn provider(&self) -> Provider {
        match self {
            Action::CsqPurchase(_) | Action::CsqProducts(_) | Action::CsqBalance(_) => {
                Provider::Csq
            }
            Action::ElectrumProvision(_)
            | Action::ElectrumRedeem(_)
            | Action::ElectrumRefund(_)
            | Action::ElectrumLookup(_)
            | Action::ElectrumLookupRedemption(_) => Provider::Electrum,
        }
    }

    /// True when running it moves money or stock: an unknown answer must then be resolved,
    /// never retried. Reads are safe to send again.
    pub fn has_financial_effect(&self) -> bool {
        FINANCIAL_KINDS.contains(&self.kind())
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

/// Validates one raw delivery against the contract.
pub fn parse(routing_key: &str, body: &[u8]) -> Result<Command, Box<Rejection>> {
    let reject = |reason, envelope| Box::new(Rejection { reason, envelope });
    if body.len() > MAX_BODY_BYTES {
        return Err(reject(RejectReason::BodyTooLarge, Envelope::default()));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| reject(RejectReason::NotUtf8, Envelope::default()))?;
    let value: Value = serde_json::from_str(text)
        .map_err(|_| reject(RejectReason::NotJson, Envelope::default()))?;
    // PostgreSQL text and jsonb cannot hold U+0000; no field of the contract needs it.
    if has_nul(&value) {
        return Err(reject(RejectReason::NulCharacter, Envelope::default()));
    }
    let Value::Object(obj) = value else {
        return Err(reject(RejectReason::NotAnObject, Envelope::default()));
    };
    let envelope = read_envelope(&obj);
    let fail = |reason| reject(reason, envelope.clone());

    let command_id = required_id(&obj, "command_id").map_err(fail)?;
    let source = required_id(&obj, "source").map_err(fail)?;
    let kind = required_str(&obj, "kind").map_err(fail)?;
    let provider_name = required_str(&obj, "provider").map_err(fail)?;
    if let Some(unknown) = obj.keys().find(|k| !TOP_LEVEL_FIELDS.contains(&k.as_str())) {
        return Err(fail(RejectReason::UnknownField(unknown.clone())));
    }
    let callback_url = match obj.get("callback_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(url)) => Some(validate_callback_url(url).map_err(fail)?),
        Some(_) => {
            return Err(fail(RejectReason::InvalidField(
                "callback_url".into(),
                "must be a string".into(),
            )));
        }
    };
    let provider = Provider::parse(provider_name)
        .ok_or_else(|| fail(RejectReason::UnknownProvider(provider_name.to_string())))?;
    let expected_key = format!("{kind}.{provider_name}");
    if routing_key != expected_key {
        return Err(fail(RejectReason::RoutingKeyMismatch {
            routing_key: routing_key.to_string(),
            body: expected_key,
        }));
    }
    let params = match obj.get("params") {
        Some(Value::Object(p)) => p.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(_) => {
            return Err(fail(RejectReason::InvalidField(
                "params".into(),
                "must be an object".into(),
            )));
        }
    };
    let action = match (provider, kind) {
        (Provider::Csq, "purchase") => {
            Action::CsqPurchase(PurchaseParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Csq, "products") => {
            Action::CsqProducts(ProductsParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Csq, "balance") => {
            Action::CsqBalance(BalanceParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Electrum, "provision") => {
            Action::ElectrumProvision(ProvisionParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Electrum, "redeem") => {
            Action::ElectrumRedeem(VoucherParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Electrum, "refund") => {
            Action::ElectrumRefund(VoucherParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Electrum, "lookup") => {
            Action::ElectrumLookup(LookupParams::from_params(&params).map_err(fail)?)
        }
        (Provider::Electrum, "lookup_redemption") => Action::ElectrumLookupRedemption(
            LookupRedemptionParams::from_params(&params).map_err(fail)?,
        ),
        _ => return Err(fail(RejectReason::UnknownKind(kind.to_string()))),
    };
    Ok(Command {
        command_id,
        source,
        callback_url,
        action,
    })
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

/// Reads an optional integer amount in minor units. A float, a string or a negative number
/// is rejected: money is never a float.
pub fn amount_field(params: &Map<String, Value>, field: &str) -> Result<Option<i32>, RejectReason> {
    match params.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                if i < 0 {
                    return Err(RejectReason::NegativeAmount(field.to_string()));
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

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

    fn code(key: &str, body: &[u8]) -> &'static str {
        parse(key, body).unwrap_err().reason.code()
    }

    #[test]
    fn accepts_a_good_purchase() {
        let c = parse("purchase.csq", &purchase(good_params())).expect("valid");
        assert_eq!(c.command_id, "c-1");
        assert_eq!(c.action.kind(), "purchase");
    }

    #[test]
    fn rejects_each_bad_input_with_its_code() {
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
        let mut p = good_params();
        p["amount_to_send_x100"] = json!(10.5);
        assert_eq!(code("purchase.csq", &purchase(p)), "amount_not_integer");
        let mut p = good_params();
        p["amount_to_send_x100"] = json!(-5);
        assert_eq!(code("purchase.csq", &purchase(p)), "amount_negative");
        let mut p = good_params();
        p["pin"] = json!("1234");
        assert_eq!(code("purchase.csq", &purchase(p)), "unknown_param");
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
}
