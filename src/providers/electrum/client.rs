//! The Electrum SUV client: builds each message and sends it through the shared provider
//! path (rate limit, timeouts, masked exchange record).

use base64::Engine;
use reqwest::Method;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::config::{ElectrumConfig, Messaging};
use super::params::{LookupParams, Originator, ProvisionParams, Tender, VoucherParams};
use crate::providers::work::AdviceKind;
use crate::providers::{CallError, Exchange, ProviderHttp};

/// The three operations that have advices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Provision,
    Redeem,
    Refund,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Provision => "provision",
            Operation::Redeem => "redeem",
            Operation::Refund => "refund",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        match s {
            "provision" => Some(Operation::Provision),
            "redeem" => Some(Operation::Redeem),
            "refund" => Some(Operation::Refund),
            _ => None,
        }
    }

    /// The resource the operation and its advices live under.
    fn path(self) -> &'static str {
        match self {
            Operation::Provision => "/vouchers",
            Operation::Redeem => "/redemptions",
            Operation::Refund => "/refunds",
        }
    }
}

/// Where an advice of `kind` is posted, under its operation's resource.
fn advice_path(kind: AdviceKind) -> &'static str {
    match kind {
        AdviceKind::Confirmation => "/confirmations",
        AdviceKind::Reversal => "/reversals",
    }
}

/// Talks to one Electrum SUV endpoint as the configured client.
#[derive(Clone)]
pub struct ElectrumClient {
    http: ProviderHttp,
    client_id: String,
    client_name: String,
    authorization: String,
    config: ElectrumConfig,
}

/// An Electrum timestamp: RFC 3339 with milliseconds, as in the examples.
fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl ElectrumClient {
    /// The rate limit of this provider's requests.
    pub fn rate_limit(&self) -> std::sync::Arc<crate::ratelimit::ProviderLimit> {
        self.http.rate_limit()
    }

    /// A client with the password `credential` finds in the variable `cfg` names; `pool`
    /// makes its rate limit global across processes.
    pub fn new(
        cfg: &ElectrumConfig,
        credential: &dyn Fn(&str) -> String,
        pool: Option<deadpool_postgres::Pool>,
    ) -> anyhow::Result<ElectrumClient> {
        let password = credential(&cfg.password_env);
        let token = base64::engine::general_purpose::STANDARD
            .encode(format!("{}:{password}", cfg.client_id));
        Ok(ElectrumClient {
            http: ProviderHttp::new(super::NAME, &cfg.http.base_url, &cfg.http.limits(), pool)?,
            client_id: cfg.client_id.clone(),
            client_name: cfg.client_name.clone(),
            authorization: format!("Basic {token}"),
            config: cfg.clone(),
        })
    }

    /// Whether `operation` is confirmed by an advice.
    pub fn is_dual(&self, operation: Operation) -> bool {
        self.config.messaging_of(operation.as_str()) == Messaging::Dual
    }

    fn headers(&self) -> [(&'static str, String); 1] {
        [("authorization", self.authorization.clone())]
    }

    /// The relay's own reference, as Electrum's `thirdPartyIdentifiers` carry it.
    fn third_party(&self, request_id: Uuid) -> Value {
        json!([{"institutionId": self.client_id, "transactionIdentifier": request_id.simple().to_string()}])
    }

    /// The fields every request carries.
    fn request(
        &self,
        request_id: Uuid,
        originator: &Originator,
        receiver: Option<&super::params::Institution>,
    ) -> Map<String, Value> {
        let mut body = Map::new();
        body.insert("id".into(), json!(request_id));
        body.insert("time".into(), json!(now()));
        body.insert("originator".into(), json!(originator));
        body.insert(
            "client".into(),
            json!({"id": self.client_id, "name": self.client_name}),
        );
        if let Some(r) = receiver {
            body.insert("receiver".into(), json!(r));
        }
        body.insert("thirdPartyIdentifiers".into(), self.third_party(request_id));
        body
    }

    /// `POST /vouchers`, with the client-chosen `voucher.code` if the command has one.
    pub async fn provision(
        &self,
        request_id: Uuid,
        p: &ProvisionParams,
    ) -> (Result<Value, CallError>, Exchange) {
        let mut body = self.request(request_id, &p.originator, p.receiver.as_ref());
        if let Some(code) = &p.voucher_code {
            body.insert("voucher".into(), json!({"code": code}));
        }
        self.post(
            "provision",
            Operation::Provision.path(),
            &Value::Object(body),
        )
        .await
    }

    /// `POST /redemptions` or `POST /refunds`.
    pub async fn voucher_operation(
        &self,
        operation: Operation,
        request_id: Uuid,
        p: &VoucherParams,
    ) -> (Result<Value, CallError>, Exchange) {
        let mut body = self.request(request_id, &p.originator, p.receiver.as_ref());
        body.insert("voucher".into(), json!({"code": p.voucher_code}));
        self.post(operation.as_str(), operation.path(), &Value::Object(body))
            .await
    }

    /// `GET /vouchers?...` (lookupVoucher).
    pub async fn lookup_voucher(&self, p: &LookupParams) -> (Result<Value, CallError>, Exchange) {
        self.http
            .send_with_query(
                "lookup_voucher",
                Method::GET,
                "/vouchers",
                &p.query(),
                &self.headers(),
                None,
            )
            .await
    }

    /// Reachability: SUV has no ping, so `GET /vouchers` without a key is asked. Any 4xx
    /// (FORMAT_ERROR, an auth error) proves the service answers; a 5xx or no answer fails.
    pub async fn ping(&self) -> (Result<(), CallError>, Exchange) {
        let (answer, exchange) = self
            .http
            .send("ping", Method::GET, "/vouchers", &self.headers(), None)
            .await;
        let reached = match answer {
            Ok(_) | Err(CallError::Refused { .. }) => Ok(()),
            Err(e) => Err(e),
        };
        (reached, exchange)
    }

    /// `GET /redemptions/{requestId}` (lookupRedemption).
    pub async fn lookup_redemption(
        &self,
        request_id: Uuid,
    ) -> (Result<Value, CallError>, Exchange) {
        self.http
            .send(
                "lookup_redemption",
                Method::GET,
                &format!("/redemptions/{request_id}"),
                &self.headers(),
                None,
            )
            .await
    }

    /// The advice message, built once and stored, so every repetition is the same message
    /// (same `id` and `time`). A provision confirmation is a `TenderAdvice` and carries what
    /// the consumer paid; the others are `BasicAdvice` / `BasicReversal`.
    pub fn advice_body(
        &self,
        advice_id: Uuid,
        request_id: Uuid,
        kind: AdviceKind,
        reversal_reason: Option<&str>,
        tender: Option<&Tender>,
    ) -> Value {
        let mut body = Map::new();
        body.insert("id".into(), json!(advice_id));
        body.insert("requestId".into(), json!(request_id));
        body.insert("time".into(), json!(now()));
        body.insert("thirdPartyIdentifiers".into(), self.third_party(request_id));
        if kind == AdviceKind::Reversal {
            body.insert(
                "reversalReason".into(),
                json!(reversal_reason.unwrap_or("TIMEOUT")),
            );
        }
        if let Some(t) = tender {
            body.insert(
                "tenders".into(),
                json!([{"accountType": "DEFAULT", "amount": {"amount": t.amount_minor, "currency": t.currency}, "tenderType": "CASH"}]),
            );
        }
        Value::Object(body)
    }

    /// `POST /{vouchers|redemptions|refunds}/{confirmations|reversals}`. An advice of
    /// an operation Electrum does not have is not sent.
    pub async fn send_advice(
        &self,
        operation: &str,
        kind: AdviceKind,
        body: &Value,
    ) -> (Result<Value, CallError>, Exchange) {
        let Some(operation) = Operation::parse(operation) else {
            return self
                .http
                .not_sent("advice", format!("no Electrum operation {operation:?}"));
        };
        let name = match (operation, kind) {
            (Operation::Provision, AdviceKind::Confirmation) => "provision_confirmation",
            (Operation::Provision, AdviceKind::Reversal) => "provision_reversal",
            (Operation::Redeem, AdviceKind::Confirmation) => "redeem_confirmation",
            (Operation::Redeem, AdviceKind::Reversal) => "redeem_reversal",
            (Operation::Refund, AdviceKind::Confirmation) => "refund_confirmation",
            (Operation::Refund, AdviceKind::Reversal) => "refund_reversal",
        };
        let path = format!("{}{}", operation.path(), advice_path(kind));
        self.post(name, &path, body).await
    }

    async fn post(
        &self,
        name: &'static str,
        path: &str,
        body: &Value,
    ) -> (Result<Value, CallError>, Exchange) {
        self.http
            .send(name, Method::POST, path, &self.headers(), Some(body))
            .await
    }
}
