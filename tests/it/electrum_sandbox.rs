//! The Electrum SUV sandbox on its own (no broker, no database): every row of the state table
//! in electrum-suv-behaviour.md, validation, authentication, the lookups, reset and the
//! injected faults. Each assertion names the situation it checks; a failure message starts
//! with the call ("POST /suv/v1/redemptions, same id sent twice: ..."), so together they name
//! the table row.

use std::time::{Duration, Instant};

use reqwest::{RequestBuilder, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;
use voucher_relay::providers::electrum::sandbox::{
    ElectrumSandbox, Fault, Operation, SandboxOptions,
};

/// `client.id` of every request, and the Basic username that goes with it.
const CLIENT: &str = "22222222";
const OTHER_CLIENT: &str = "99999999";

const VOUCHERS: &str = "/vouchers";
const VOUCHER_CONFIRMATIONS: &str = "/vouchers/confirmations";
const VOUCHER_REVERSALS: &str = "/vouchers/reversals";
const REDEMPTIONS: &str = "/redemptions";
const REDEMPTION_CONFIRMATIONS: &str = "/redemptions/confirmations";
const REDEMPTION_REVERSALS: &str = "/redemptions/reversals";
const REFUNDS: &str = "/refunds";
const REFUND_CONFIRMATIONS: &str = "/refunds/confirmations";
const REFUND_REVERSALS: &str = "/refunds/reversals";

// ---------------------------------------------------------------------------------------
// Request bodies, shaped like electrum-suv-examples/

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id() -> Uuid {
    Uuid::now_v7()
}

fn provision(id: Uuid) -> Value {
    json!({
        "id": id.to_string(),
        "time": now(),
        "originator": {
            "merchant": {
                "merchantType": "4444",
                "merchantId": "merchant1234567",
                "merchantName": {
                    "name": "Buy Stuff Shop", "city": "Cape Town", "region": "WP", "country": "ZA"
                }
            },
            "terminalId": "term0001",
            "institution": {"id": "11111111", "name": "Buy Stuff Shop"}
        },
        "client": {"id": CLIENT, "name": "TransAcquire Co"},
        "receiver": {"id": "44444444", "name": "MobiTalk"},
        "thirdPartyIdentifiers": [
            {"institutionId": "11111111", "transactionIdentifier": "ORIGD60D"},
            {"institutionId": CLIENT, "transactionIdentifier": "CLNTD60D"}
        ]
    })
}

/// A RedemptionRequest for the voucher `code`.
fn redemption(id: Uuid, code: &str) -> Value {
    let mut body = provision(id);
    body["voucher"] = json!({
        "code": code,
        "expiryDate": "2030-12-07T10:02:58.737Z",
        "redeemInstructions": [
            "To redeem your voucher", "enter the USSD code below:", "*999*<pin>#"
        ]
    });
    body
}

/// A RefundRequest: the same shape as a RedemptionRequest.
fn refund(id: Uuid, code: &str) -> Value {
    redemption(id, code)
}

/// A BasicAdvice (redemption and refund confirmations).
fn advice(request_id: Uuid) -> Value {
    json!({
        "id": new_id().to_string(),
        "requestId": request_id.to_string(),
        "time": now(),
        "thirdPartyIdentifiers": [
            {"institutionId": "11111111", "transactionIdentifier": "ORIGF040"}
        ]
    })
}

/// A TenderAdvice (provision confirmations).
fn tender_advice(request_id: Uuid) -> Value {
    let mut body = advice(request_id);
    body["tenders"] = json!([{
        "accountType": "DEFAULT",
        "amount": {"amount": 1000, "currency": "710"},
        "tenderType": "CASH"
    }]);
    body
}

fn reversal(request_id: Uuid) -> Value {
    let mut body = advice(request_id);
    body["reversalReason"] = json!("TIMEOUT");
    body
}

/// `body` without the field at a JSON pointer such as `/originator/merchant/merchantId`.
fn without(mut body: Value, pointer: &str) -> Value {
    let (parent, name) = pointer.rsplit_once('/').unwrap();
    let parent = body.pointer_mut(parent).unwrap().as_object_mut().unwrap();
    parent.remove(name).unwrap();
    body
}

// ---------------------------------------------------------------------------------------
// The sandbox and a client

/// An answer, with the call that got it ("POST /suv/v1/redemptions") for failure messages.
struct Reply {
    call: String,
    status: StatusCode,
    /// `null` when there is no JSON body.
    body: Value,
    /// The JSON message that was POSTed; `null` for a GET or a body that is not JSON.
    sent: Value,
}

impl Reply {
    /// Asserts the status; returns the body.
    #[track_caller]
    fn is(&self, status: u16, situation: &str) -> &Value {
        let Reply { call, body, .. } = self;
        assert_eq!(self.status.as_u16(), status, "{call}, {situation}: {body}");
        body
    }

    /// An ErrorDetail with this status and errorType.
    #[track_caller]
    fn failed(&self, status: u16, error_type: &str, situation: &str) {
        let Reply { call, body, .. } = self.is_error_detail(status, situation);
        assert_eq!(body["errorType"], error_type, "{call}, {situation}: {body}");
    }

    /// A refusal with the status the table gives it: 404 for UNABLE_TO_LOCATE_RECORD, 400
    /// for every other errorType.
    #[track_caller]
    fn refused(&self, error_type: &str, situation: &str) {
        let status = if error_type == "UNABLE_TO_LOCATE_RECORD" {
            404
        } else {
            400
        };
        self.failed(status, error_type, situation);
    }

    /// A FORMAT_ERROR whose formatErrors name exactly these fields.
    #[track_caller]
    fn format_error(&self, fields: &[&str], situation: &str) {
        self.refused("FORMAT_ERROR", situation);
        let mut got: Vec<&str> = self.body["detailMessage"]["formatErrors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        got.sort();
        let mut expected = fields.to_vec();
        expected.sort();
        assert_eq!(got, expected, "{}, {situation}: {}", self.call, self.body);
    }

    /// An ErrorDetail: `id` is the id of the message answered (a fresh UUID when the message
    /// has none that is well formed), `originalId` the request an advice names, and absent
    /// when a request itself is refused.
    #[track_caller]
    fn is_error_detail(&self, status: u16, situation: &str) -> &Reply {
        let Reply { call, sent, .. } = self;
        let body = self.is(status, situation);
        let id = body["id"].as_str().unwrap_or_default();
        assert!(Uuid::try_parse(id).is_ok(), "ErrorDetail id: {body}");
        for field in ["errorMessage", "detailMessage"] {
            assert!(body.get(field).is_some(), "ErrorDetail {field}: {body}");
        }
        let well_formed = |field: &str| {
            let text = sent[field].as_str().filter(|t| t.len() == 36);
            text.filter(|t| Uuid::try_parse(t).is_ok())
        };
        if let Some(own) = well_formed("id") {
            assert_eq!(
                body["id"], own,
                "{call}, {situation}: the message's own id: {body}"
            );
        }
        match well_formed("requestId") {
            Some(request) => assert_eq!(
                body["originalId"], request,
                "{call}, {situation}: originalId is the request the advice names: {body}"
            ),
            None if sent.is_object() => assert!(
                body.get("originalId").is_none(),
                "{call}, {situation}: no originalId when a request is refused: {body}"
            ),
            None => {}
        }
        self
    }
}

struct Suv {
    sandbox: ElectrumSandbox,
    base: String,
    http: reqwest::Client,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for Suv {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Suv {
    async fn start() -> Suv {
        Suv::with(SandboxOptions::default()).await
    }

    async fn with(options: SandboxOptions) -> Suv {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let sandbox = ElectrumSandbox::new(options);
        let server = tokio::spawn(sandbox.clone().serve(listener));
        Suv {
            sandbox,
            base,
            http: reqwest::Client::new(),
            server,
        }
    }

    /// `path` under `/suv/v1`.
    fn api(&self, path: &str) -> String {
        format!("{}/suv/v1{path}", self.base)
    }

    /// `path` outside the API (`/sandbox/...`).
    fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: RequestBuilder) -> Reply {
        let request = request.build().unwrap();
        let call = format!("{} {}", request.method(), request.url().path());
        let response = self.http.execute(request).await.unwrap();
        let status = response.status();
        let body = response.json().await.unwrap_or(Value::Null);
        let sent = Value::Null;
        Reply {
            call,
            status,
            body,
            sent,
        }
    }

    /// POSTs as `user`; the password is not checked, so it is anything.
    async fn post_as(&self, user: &str, path: &str, body: &Value) -> Reply {
        let request = self.http.post(self.api(path)).basic_auth(user, Some("pw"));
        let mut reply = self.send(request.json(body)).await;
        reply.sent = body.clone();
        reply
    }

    async fn post(&self, path: &str, body: &Value) -> Reply {
        self.post_as(CLIENT, path, body).await
    }

    async fn get_as(&self, user: &str, path: &str) -> Reply {
        let request = self.http.get(self.api(path)).basic_auth(user, Some("pw"));
        self.send(request).await
    }

    async fn get(&self, path: &str) -> Reply {
        self.get_as(CLIENT, path).await
    }

    /// A provisioned, unconfirmed voucher: (provision id, code).
    async fn provisioned(&self) -> (Uuid, String) {
        let id = new_id();
        let reply = self.post(VOUCHERS, &provision(id)).await;
        let code = reply.is(201, "provision")["voucher"]["code"].as_str();
        (id, code.unwrap().to_string())
    }

    /// A confirmed (redeemable) voucher's code.
    async fn confirmed_voucher(&self) -> String {
        let (id, code) = self.provisioned().await;
        let reply = self.post(VOUCHER_CONFIRMATIONS, &tender_advice(id)).await;
        reply.is(202, "provision confirmation");
        code
    }

    /// An approved, unconfirmed redemption of `code`.
    async fn redeemed(&self, code: &str) -> Uuid {
        let id = new_id();
        let reply = self.post(REDEMPTIONS, &redemption(id, code)).await;
        reply.is(201, "redemption");
        id
    }

    /// lookupVoucher of `code`.
    async fn voucher(&self, code: &str) -> Value {
        let reply = self.get(&format!("/vouchers?voucherCode={code}")).await;
        reply.is(200, "lookupVoucher").clone()
    }

    /// lookupVoucher's `state` of `code`.
    async fn state(&self, code: &str) -> Value {
        self.voucher(code).await["state"].clone()
    }
}

// ---------------------------------------------------------------------------------------
// The state table

#[tokio::test]
async fn provision_rows() {
    let suv = Suv::start().await;

    let id = new_id();
    let reply = suv.post(VOUCHERS, &provision(id)).await;
    let body = reply.is(201, "new id -> 201 ProvisionResponse");
    let code = body["voucher"]["code"].as_str().unwrap();
    let digits = code.bytes().all(|b| b.is_ascii_digit());
    assert!((12..=16).contains(&code.len()) && digits, "code {code}");
    let expiry = body["voucher"]["expiryDate"].as_str().unwrap();
    let a_year = chrono::Utc::now() + chrono::Duration::days(364);
    assert!(chrono::DateTime::parse_from_rfc3339(expiry).unwrap() > a_year);
    assert!(body["voucher"]["redeemInstructions"].is_array());
    assert_eq!(body["id"], id.to_string(), "the request is echoed");
    assert_eq!(body["client"]["id"], CLIENT);
    assert_eq!(body["settlementEntity"]["id"], "33333333");
    assert!(body["slipData"]["messageLines"].is_array());
    let third_parties = body["thirdPartyIdentifiers"].as_array().unwrap();
    assert_eq!(third_parties.len(), 4, "the provider adds its ids");

    let again = suv.post(VOUCHERS, &provision(id)).await;
    again.refused("DUPLICATE_RECORD", "same id again");
    let confirmation = tender_advice(id);
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &confirmation).await;
    let echo = reply.is(202, "provisioned -> 202");
    assert_eq!(echo, &confirmation, "the advice is echoed");
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &tender_advice(id)).await;
    reply.is(202, "confirmed again -> 202 (idempotent)");
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(id)).await;
    reply.refused("VOUCHER_ALREADY_CONFIRMED", "confirmed");
    let reply = suv
        .post(VOUCHER_CONFIRMATIONS, &tender_advice(new_id()))
        .await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "unknown requestId");
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(new_id())).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "unknown requestId");

    let (other, _) = suv.provisioned().await;
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(other)).await;
    reply.is(202, "provisioned, unconfirmed -> 202");
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(other)).await;
    reply.is(202, "reversed again -> 202 (idempotent)");
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &tender_advice(other)).await;
    reply.refused("VOUCHER_ALREADY_REVERSED", "reversed");
    let reply = suv.post(VOUCHERS, &provision(other)).await;
    reply.refused("DUPLICATE_RECORD", "id already reversed");

    let stats = suv.sandbox.stats();
    assert_eq!(stats.calls_of(Operation::Provision), 4);
    assert_eq!(stats.effects_of(Operation::Provision), 2);
    assert_eq!(stats.calls_of(Operation::ProvisionConfirmation), 4);
    assert_eq!(stats.effects_of(Operation::ProvisionConfirmation), 1);
    assert_eq!(stats.effects_of(Operation::ProvisionReversal), 1);
}

#[tokio::test]
async fn redemption_rows() {
    let suv = Suv::start().await;

    let (provision_id, code) = suv.provisioned().await;
    let reply = suv.post(REDEMPTIONS, &redemption(new_id(), &code)).await;
    reply.refused("VOUCHER_NOT_REDEEMABLE", "unconfirmed voucher");
    let reply = suv
        .post(VOUCHER_CONFIRMATIONS, &tender_advice(provision_id))
        .await;
    reply.is(202, "provision confirmation");

    let first = new_id();
    let reply = suv.post(REDEMPTIONS, &redemption(first, &code)).await;
    let body = reply.is(201, "confirmed voucher -> 201 RedemptionResponse");
    assert_eq!(body["id"], first.to_string());
    assert_eq!(body["voucher"]["code"], code);
    assert_eq!(body["settlementEntity"]["id"], "33333333");
    assert_eq!(body["thirdPartyIdentifiers"].as_array().unwrap().len(), 4);

    let refused = new_id();
    let reply = suv.post(REDEMPTIONS, &redemption(refused, &code)).await;
    reply.refused("VOUCHER_ALREADY_REDEEMED", "already redeemed");
    let reply = suv.post(REDEMPTIONS, &redemption(first, &code)).await;
    reply.refused("DUPLICATE_RECORD", "same id sent twice");

    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(first)).await;
    reply.is(202, "redeemed, unconfirmed -> 202");
    assert_eq!(suv.state(&code).await, "CONFIRMED", "redeemable again");
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(first)).await;
    reply.is(202, "reversed again -> 202 (idempotent)");
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(first)).await;
    reply.refused("VOUCHER_NOT_REDEEMED", "reversed");
    let reply = suv.post(REDEMPTIONS, &redemption(first, &code)).await;
    reply.refused("REDEMPTION_ALREADY_REVERSED", "same id after its reversal");

    let second = new_id();
    let reply = suv.post(REDEMPTIONS, &redemption(second, &code)).await;
    reply.is(
        201,
        "new id after an earlier redemption was reversed -> 201",
    );
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(second)).await;
    reply.is(202, "redeemed -> 202");
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(second)).await;
    reply.refused("VOUCHER_NOT_REDEEMED", "confirmed twice");
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(second)).await;
    reply.refused("REDEMPTION_ALREADY_CONFIRMED", "confirmed");

    for (request_id, which) in [(new_id(), "unknown id"), (refused, "refused one")] {
        let situation = format!("not redeemed ({which})");
        let reply = suv
            .post(REDEMPTION_CONFIRMATIONS, &advice(request_id))
            .await;
        reply.refused("UNABLE_TO_LOCATE_RECORD", &situation);
        let reply = suv.post(REDEMPTION_REVERSALS, &reversal(request_id)).await;
        reply.refused("UNABLE_TO_LOCATE_RECORD", &situation);
    }

    let reply = suv
        .post(REDEMPTIONS, &redemption(new_id(), "000000000000"))
        .await;
    reply.refused("VOUCHER_NOT_REDEEMABLE", "unknown voucher code");
    let (withdrawn, withdrawn_code) = suv.provisioned().await;
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(withdrawn)).await;
    reply.is(202, "provision reversal");
    let reply = suv
        .post(REDEMPTIONS, &redemption(new_id(), &withdrawn_code))
        .await;
    reply.refused("VOUCHER_NOT_REDEEMABLE", "reversed voucher");

    let stats = suv.sandbox.stats();
    assert_eq!(stats.effects_of(Operation::Redeem), 2);
    assert_eq!(stats.effects_of(Operation::RedeemConfirmation), 1);
    assert_eq!(stats.effects_of(Operation::RedeemReversal), 1);
}

#[tokio::test]
async fn refund_rows() {
    let suv = Suv::start().await;

    let code = suv.confirmed_voucher().await;
    let reply = suv.post(REFUNDS, &refund(new_id(), &code)).await;
    reply.refused("VOUCHER_NOT_REDEEMED", "voucher never redeemed");
    let redeemed = suv.redeemed(&code).await;
    let reply = suv.post(REFUNDS, &refund(new_id(), &code)).await;
    reply.refused("REDEMPTION_NOT_CONFIRMED", "unconfirmed redemption");
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(redeemed)).await;
    reply.is(202, "redemption confirmation");

    let first = new_id();
    let reply = suv.post(REFUNDS, &refund(first, &code)).await;
    let body = reply.is(201, "confirmed redemption -> 201 RefundResponse");
    assert_eq!(body["id"], first.to_string());
    assert_eq!(body["voucher"]["code"], code);
    let reply = suv.post(REFUNDS, &refund(new_id(), &code)).await;
    reply.refused("VOUCHER_ALREADY_REFUNDED", "refunded already");
    let reply = suv.post(REDEMPTIONS, &redemption(new_id(), &code)).await;
    reply.refused(
        "VOUCHER_ALREADY_REDEEMED",
        "while a refund awaits confirmation",
    );

    let reply = suv.post(REFUND_REVERSALS, &reversal(first)).await;
    reply.is(202, "refunded, unconfirmed -> 202");
    let reply = suv.post(REFUND_REVERSALS, &reversal(first)).await;
    reply.is(202, "reversed again -> 202 (idempotent)");
    let reply = suv.post(REFUNDS, &refund(first, &code)).await;
    reply.refused("REFUND_ALREADY_REVERSED", "refund reversed");
    let reply = suv.post(REFUND_CONFIRMATIONS, &advice(first)).await;
    reply.refused("REFUND_ALREADY_REVERSED", "reversed");
    let state = suv.state(&code).await;
    assert_eq!(
        state, "REDEMPTION_CONFIRMED",
        "the redemption stays confirmed"
    );

    let second = new_id();
    let reply = suv.post(REFUNDS, &refund(second, &code)).await;
    reply.is(201, "new id after a reversed refund -> 201");
    let reply = suv.post(REFUND_CONFIRMATIONS, &advice(second)).await;
    reply.is(202, "refunded -> 202");
    let reply = suv.post(REFUND_CONFIRMATIONS, &advice(second)).await;
    reply.refused("VOUCHER_NOT_REFUNDED", "confirmed twice");
    let reply = suv.post(REFUND_REVERSALS, &reversal(second)).await;
    reply.refused("REFUND_ALREADY_CONFIRMED", "confirmed");
    let reply = suv.post(REFUND_REVERSALS, &reversal(new_id())).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "not refunded");
    let reply = suv.post(REFUND_CONFIRMATIONS, &advice(new_id())).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "not refunded");
    let reply = suv.post(REFUNDS, &refund(new_id(), &code)).await;
    reply.refused("VOUCHER_NOT_REDEEMED", "after a confirmed refund");
    let reply = suv.post(REDEMPTIONS, &redemption(new_id(), &code)).await;
    reply.is(201, "after a confirmed refund: redeemable again -> 201");

    let stats = suv.sandbox.stats();
    assert_eq!(stats.effects_of(Operation::Refund), 2);
    assert_eq!(stats.effects_of(Operation::RefundReversal), 1);
    assert_eq!(stats.effects_of(Operation::RefundConfirmation), 1);
    assert_eq!(stats.effects_of(Operation::Redeem), 2);
}

#[tokio::test]
async fn lookup_voucher_follows_the_voucher() {
    let suv = Suv::start().await;

    let (provision_id, code) = suv.provisioned().await;
    let body = suv.voucher(&code).await;
    assert_eq!(body["id"], provision_id.to_string());
    assert_eq!(body["voucher"]["code"], code);
    assert!(body["voucher"]["expiryDate"].is_string());
    assert_eq!(body["state"], "PROVISIONED");
    assert_eq!(body["redeemable"], false);
    let by_id = suv
        .get(&format!("/vouchers?provisionRequestId={provision_id}"))
        .await;
    assert_eq!(by_id.is(200, "by provisionRequestId"), &body);

    let confirmation = tender_advice(provision_id);
    suv.post(VOUCHER_CONFIRMATIONS, &confirmation)
        .await
        .is(202, "confirm");
    assert_eq!(suv.voucher(&code).await["redeemable"], true);
    assert_eq!(suv.state(&code).await, "CONFIRMED");

    let redeemed = suv.redeemed(&code).await;
    let body = suv.voucher(&code).await;
    assert_eq!(body["state"], "REDEEMED");
    assert_eq!(body["redemptionRequestId"], redeemed.to_string());
    assert_eq!(body["redeemable"], false);
    suv.post(REDEMPTION_CONFIRMATIONS, &advice(redeemed))
        .await
        .is(202, "confirm");
    assert_eq!(suv.state(&code).await, "REDEMPTION_CONFIRMED");

    let refund_id = new_id();
    suv.post(REFUNDS, &refund(refund_id, &code))
        .await
        .is(201, "refund");
    let body = suv.voucher(&code).await;
    assert_eq!(body["state"], "REFUND_PENDING");
    assert_eq!(body["refundRequestId"], refund_id.to_string());
    suv.post(REFUND_CONFIRMATIONS, &advice(refund_id))
        .await
        .is(202, "confirm");
    let body = suv.voucher(&code).await;
    assert_eq!(body["state"], "REFUNDED");
    assert_eq!(body["redeemable"], true);

    let (withdrawn, withdrawn_code) = suv.provisioned().await;
    suv.post(VOUCHER_REVERSALS, &reversal(withdrawn))
        .await
        .is(202, "reverse");
    assert_eq!(suv.state(&withdrawn_code).await, "REVERSED");

    let reply = suv.get("/vouchers?voucherCode=1234").await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "unknown code");
    let unknown = new_id();
    let reply = suv
        .get(&format!("/vouchers?provisionRequestId={unknown}"))
        .await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "unknown provisionRequestId");
    let mismatch = format!("/vouchers?voucherCode={code}&provisionRequestId={withdrawn}");
    let reply = suv.get(&mismatch).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "parameters naming two vouchers");
    let reply = suv.get("/vouchers").await;
    reply.format_error(&["voucherCode"], "neither parameter");
    let reply = suv.get("/vouchers?provisionRequestId=abc").await;
    reply.format_error(&["provisionRequestId"], "malformed provisionRequestId");
}

#[tokio::test]
async fn lookup_redemption_replays_the_original_answer() {
    let suv = Suv::start().await;
    let code = suv.confirmed_voucher().await;

    let approved = new_id();
    let original = suv.post(REDEMPTIONS, &redemption(approved, &code)).await;
    original.is(201, "redemption");
    let reply = suv.get(&format!("/redemptions/{approved}")).await;
    let body = reply.is(200, "approved -> 200 and the original RedemptionResponse");
    assert_eq!(body, &original.body);

    let refused = new_id();
    let original = suv.post(REDEMPTIONS, &redemption(refused, &code)).await;
    original.refused("VOUCHER_ALREADY_REDEEMED", "second redemption");
    let reply = suv.get(&format!("/redemptions/{refused}")).await;
    let body = reply.is(400, "refused -> the original ErrorDetail and status");
    assert_eq!(body, &original.body);

    let reply = suv.get(&format!("/redemptions/{}", new_id())).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "never received -> 404");
    let reply = suv
        .get_as(OTHER_CLIENT, &format!("/redemptions/{approved}"))
        .await;
    reply.failed(403, "AUTHENTICATION_ERROR", "another client -> 403");
    let reply = suv.get("/redemptions/not-a-uuid").await;
    reply.format_error(&["requestId"], "malformed requestId");
    let anonymous = suv.http.get(suv.api(&format!("/redemptions/{approved}")));
    let reply = suv.send(anonymous).await;
    reply.refused("AUTHENTICATION_ERROR", "no credentials");

    let stats = suv.sandbox.stats();
    assert_eq!(stats.calls_of(Operation::LookupRedemption), 6);
    assert_eq!(stats.effects_of(Operation::LookupRedemption), 0);
}

// ---------------------------------------------------------------------------------------
// Validation and authentication

#[tokio::test]
async fn format_errors_list_every_problem() {
    let suv = Suv::start().await;

    let id = new_id();
    let body = without(provision(id), "/originator/merchant/merchantId");
    let reply = suv.post(VOUCHERS, &without(body, "/client/name")).await;
    let fields = ["client.name", "originator.merchant.merchantId"];
    reply.format_error(&fields, "missing fields");
    let entry = &reply.body["detailMessage"]["formatErrors"][0];
    let field = entry["field"].as_str().unwrap_or_default();
    assert_eq!(entry["msg"], format!("{field} may not be null"));
    assert_eq!(entry["value"], Value::Null);

    let mut body = provision(id);
    body["id"] = json!("68d07240-e604-431f-d5ca");
    body["time"] = json!("7 December 2018");
    let reply = suv.post(VOUCHERS, &body).await;
    reply.format_error(&["id", "time"], "malformed UUID and time");

    let mut body = provision(id);
    body["settlementEntity"] = json!({"id": "33333333", "name": "TransactionsRUs"});
    body["originator"]["merchant"]["colour"] = json!("blue");
    body["thirdPartyIdentifiers"][1] = json!({"institutionId": CLIENT});
    let reply = suv.post(VOUCHERS, &body).await;
    let fields = [
        "originator.merchant.colour",
        "settlementEntity",
        "thirdPartyIdentifiers[1].transactionIdentifier",
    ];
    reply.format_error(
        &fields,
        "unexpected fields, an incomplete thirdPartyIdentifier",
    );
    let unexpected = reply.body["detailMessage"]["formatErrors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["field"] == "originator.merchant.colour")
        .cloned();
    assert_eq!(unexpected.unwrap()["value"], "blue");

    let body = without(redemption(new_id(), "123"), "/voucher");
    let reply = suv.post(REDEMPTIONS, &body).await;
    reply.format_error(&["voucher"], "no voucher");
    let body = without(refund(new_id(), "123"), "/voucher/code");
    let reply = suv.post(REFUNDS, &body).await;
    reply.format_error(&["voucher.code"], "no voucher.code");

    let target = new_id();
    let body = without(reversal(target), "/reversalReason");
    let reply = suv.post(REDEMPTION_REVERSALS, &body).await;
    reply.format_error(&["reversalReason"], "no reversalReason");
    let mut body = reversal(target);
    body["reversalReason"] = json!("BORED");
    let reply = suv.post(REFUND_REVERSALS, &body).await;
    reply.format_error(&["reversalReason"], "unknown reversalReason");
    let mut body = tender_advice(target);
    body["tenders"][0]["amount"] = json!({"amount": 10.5});
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &body).await;
    let fields = ["tenders[0].amount.amount", "tenders[0].amount.currency"];
    reply.format_error(&fields, "tender without currency, with a fractional amount");
    let body = without(advice(target), "/requestId");
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &body).await;
    reply.format_error(&["requestId"], "advice without requestId");

    let not_json = suv
        .http
        .post(suv.api(VOUCHERS))
        .basic_auth(CLIENT, Some("pw"));
    let reply = suv.send(not_json.body("{\"id\": ")).await;
    reply.format_error(&["body"], "a body that is not JSON");

    let body = without(provision(new_id()), "/time");
    let reply = suv.post_as(OTHER_CLIENT, VOUCHERS, &body).await;
    reply.format_error(&["time"], "FORMAT_ERROR before AUTHENTICATION_ERROR");

    let stats = suv.sandbox.stats();
    assert!(stats.effects.values().all(|n| *n == 0), "{stats:?}");
    assert_eq!(stats.calls_of(Operation::Provision), 5);
}

#[tokio::test]
async fn basic_username_must_be_the_client() {
    let suv = Suv::start().await;
    let body = provision(new_id());
    let request = || suv.http.post(suv.api(VOUCHERS)).json(&body);

    let reply = suv.send(request()).await;
    reply.refused("AUTHENTICATION_ERROR", "no Authorization header");
    let reply = suv.send(request().bearer_auth(CLIENT)).await;
    reply.refused("AUTHENTICATION_ERROR", "not Basic");
    let reply = suv
        .send(request().header("authorization", "Basic !!!"))
        .await;
    reply.refused("AUTHENTICATION_ERROR", "credentials that are not base64");
    let reply = suv.post_as(OTHER_CLIENT, VOUCHERS, &body).await;
    reply.refused("AUTHENTICATION_ERROR", "username other than client.id");
    assert_eq!(suv.sandbox.stats().effects_of(Operation::Provision), 0);

    let (provision_id, _) = suv.provisioned().await;
    let confirmation = tender_advice(provision_id);
    let reply = suv
        .post_as(OTHER_CLIENT, VOUCHER_CONFIRMATIONS, &confirmation)
        .await;
    reply.refused("AUTHENTICATION_ERROR", "advice from another client");
    let unknown = tender_advice(new_id());
    let reply = suv
        .post_as(OTHER_CLIENT, VOUCHER_CONFIRMATIONS, &unknown)
        .await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "advice about an unknown request");
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &confirmation).await;
    reply.is(202, "advice from the original's client");
}

// ---------------------------------------------------------------------------------------
// Reset and faults

#[tokio::test]
async fn reset_clears_state_faults_and_stats() {
    let suv = Suv::start().await;
    let code = suv.confirmed_voucher().await;
    let fault = Fault::ErrorBeforeEffect(503);
    suv.sandbox.inject(Operation::Redeem, fault, 3);

    let reply = suv
        .send(suv.http.post(suv.api("/testServerAdmin/reset")))
        .await;
    assert!(reply.status.is_success(), "reset: {}", reply.status);
    let stats = suv.sandbox.stats();
    for counters in [&stats.calls, &stats.effects, &stats.faults] {
        assert!(counters.values().all(|n| *n == 0), "{stats:?}");
    }
    let reply = suv.get(&format!("/vouchers?voucherCode={code}")).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "the voucher is forgotten");
    let reply = suv.post(REDEMPTIONS, &redemption(new_id(), &code)).await;
    reply.refused("VOUCHER_NOT_REDEEMABLE", "the faults are forgotten too");

    let (_, code) = suv.provisioned().await;
    suv.sandbox.reset();
    let reply = suv.get(&format!("/vouchers?voucherCode={code}")).await;
    reply.refused(
        "UNABLE_TO_LOCATE_RECORD",
        "ElectrumSandbox::reset does the same",
    );
}

#[tokio::test]
async fn timeout_after_effect_applies_then_holds_the_answer() {
    let slow_answer = Duration::from_secs(3);
    let client_timeout = Duration::from_secs(1);
    let suv = Suv::with(SandboxOptions { slow_answer }).await;
    let code = suv.confirmed_voucher().await;
    suv.sandbox
        .inject(Operation::Redeem, Fault::TimeoutAfterEffect, 1);

    let id = new_id();
    let started = Instant::now();
    let request = suv
        .http
        .post(suv.api(REDEMPTIONS))
        .basic_auth(CLIENT, Some("pw"));
    let request = request.json(&redemption(id, &code)).timeout(client_timeout);
    let lost = request
        .send()
        .await
        .expect_err("the answer is held too long");
    assert!(lost.is_timeout(), "{lost:?}");

    let reply = suv.post(REDEMPTIONS, &redemption(new_id(), &code)).await;
    reply.refused("VOUCHER_ALREADY_REDEEMED", "the timed-out one was applied");
    assert_eq!(suv.sandbox.stats().effects_of(Operation::Redeem), 1);

    // Still processing: like a server that sent 102 and nothing else, no final answer.
    let lookup = suv.api(&format!("/redemptions/{id}"));
    let request = suv.http.get(&lookup).basic_auth(CLIENT, Some("pw"));
    let waiting = request.timeout(client_timeout).send().await;
    let waiting = waiting.expect_err("no final answer while it is processing");
    assert!(waiting.is_timeout(), "{waiting:?}");

    // Once the held answer has gone out, the lookup replays it.
    let reply = suv.get(&format!("/redemptions/{id}")).await;
    let elapsed = started.elapsed();
    assert!(elapsed >= slow_answer, "answered after {elapsed:?}");
    let body = reply.is(200, "lookupRedemption after the hold");
    assert_eq!(body["voucher"]["code"], code);

    // The fault is used up: the client's reversal goes through and frees the voucher.
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(id)).await;
    reply.is(202, "reversal of the timed-out redemption");
    suv.redeemed(&code).await;
}

#[tokio::test]
async fn error_before_effect_applies_nothing() {
    let suv = Suv::start().await;
    let code = suv.confirmed_voucher().await;
    let fault = Fault::ErrorBeforeEffect(503);
    suv.sandbox.inject(Operation::Redeem, fault, 1);

    let id = new_id();
    let reply = suv.post(REDEMPTIONS, &redemption(id, &code)).await;
    reply.failed(503, "UPSTREAM_UNAVAILABLE", "injected 503");
    assert_eq!(suv.state(&code).await, "CONFIRMED", "nothing was redeemed");
    let stats = suv.sandbox.stats();
    assert_eq!(stats.effects_of(Operation::Redeem), 0);
    assert_eq!(stats.faults_of(Operation::Redeem), 1);
    let reply = suv.get(&format!("/redemptions/{id}")).await;
    reply.refused(
        "UNABLE_TO_LOCATE_RECORD",
        "a faulted redemption is not recorded",
    );
    let reply = suv.post(REDEMPTIONS, &redemption(id, &code)).await;
    reply.is(201, "the same id again, the fault used up");

    // Another faulted redemption, then its reversal: the reversal finds nothing to reverse,
    // but it is remembered, so the redemption is refused should it be sent again.
    let other_code = suv.confirmed_voucher().await;
    suv.sandbox
        .inject(Operation::Redeem, Fault::ErrorBeforeEffect(503), 1);
    let lost = new_id();
    let reply = suv.post(REDEMPTIONS, &redemption(lost, &other_code)).await;
    reply.failed(503, "UPSTREAM_UNAVAILABLE", "injected 503");
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(lost)).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "so its reversal finds nothing");
    let reply = suv.post(REDEMPTIONS, &redemption(lost, &other_code)).await;
    reply.refused(
        "REDEMPTION_ALREADY_REVERSED",
        "the same id after its reversal, the fault used up",
    );

    let fault = Fault::ErrorBeforeEffect(500);
    suv.sandbox.inject(Operation::Refund, fault, 1);
    let malformed = without(refund(new_id(), &code), "/voucher");
    let reply = suv.post(REFUNDS, &malformed).await;
    reply.refused(
        "FORMAT_ERROR",
        "a malformed request does not consume the fault",
    );
    let reply = suv.post(REFUNDS, &refund(new_id(), &code)).await;
    reply.failed(500, "GENERAL_ERROR", "the next valid one does");
    let reply = suv.post(REFUNDS, &refund(new_id(), &code)).await;
    reply.refused("REDEMPTION_NOT_CONFIRMED", "then the state table again");
}

#[tokio::test]
async fn failing_advice_answers_before_the_real_one() {
    let suv = Suv::start().await;
    let code = suv.confirmed_voucher().await;
    let redeemed = suv.redeemed(&code).await;

    let faults = suv.admin("/sandbox/faults");
    let inject = |spec: Value| suv.http.post(&faults).json(&spec).send();
    let five = json!({
        "operation": "redeem_reversal", "fault": "error_before_effect", "status": 503, "times": 5
    });
    assert_eq!(inject(five).await.unwrap().status(), StatusCode::NO_CONTENT);
    for bad in [
        json!({"operation": "redeem", "fault": "error_before_effect", "status": 404}),
        json!({"operation": "redeem", "fault": "error_before_effect"}),
        json!({"operation": "redeem", "fault": "timeout_after_effect", "status": 503}),
        json!({"operation": "redeem_twice", "fault": "timeout_after_effect"}),
    ] {
        let status = inject(bad.clone()).await.unwrap().status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    let advice = reversal(redeemed);
    for attempt in 1..=5 {
        let reply = suv.post(REDEMPTION_REVERSALS, &advice).await;
        let situation = format!("failing answer {attempt} of 5");
        reply.failed(503, "UPSTREAM_UNAVAILABLE", &situation);
    }
    let reply = suv.post(REDEMPTION_REVERSALS, &advice).await;
    reply.is(202, "the real answer after five failures");
    assert_eq!(
        suv.state(&code).await,
        "CONFIRMED",
        "the reversal was applied"
    );

    let stats = suv.http.get(suv.admin("/sandbox/stats")).send().await;
    let stats: Value = stats.unwrap().json().await.unwrap();
    assert_eq!(stats["calls"]["redeem_reversal"], 6, "{stats}");
    assert_eq!(stats["faults"]["redeem_reversal"], 5, "{stats}");
    assert_eq!(stats["effects"]["redeem_reversal"], 1, "{stats}");
    assert_eq!(stats["effects"]["redeem"], 1, "{stats}");

    // A timeout fault over HTTP: the default hold (60 s) outlasts this client's patience.
    let spec = json!({"operation": "lookup_voucher", "fault": "timeout_after_effect"});
    assert_eq!(inject(spec).await.unwrap().status(), StatusCode::NO_CONTENT);
    let lookup = suv.api(&format!("/vouchers?voucherCode={code}"));
    let request = suv.http.get(lookup).basic_auth(CLIENT, Some("pw"));
    let held = request.timeout(Duration::from_millis(500)).send().await;
    assert!(held.expect_err("held answer").is_timeout());
    let stats = suv.sandbox.stats();
    assert_eq!(stats.faults_of(Operation::LookupVoucher), 1);
}

// ---------------------------------------------------------------------------------------
// Where Electrum's reference server decides (over electrum-suv-behaviour.md)

/// A ProvisionRequest asking for the voucher code `code` (interface 1.2.0).
fn provision_with_code(id: Uuid, code: &str) -> Value {
    let mut body = provision(id);
    body["voucher"] = json!({"code": code});
    body
}

/// The `formatErrors` entry of `field`.
fn format_entry(reply: &Reply, field: &str) -> Value {
    let entries = reply.body["detailMessage"]["formatErrors"].as_array();
    let entry = entries.and_then(|all| all.iter().find(|e| e["field"] == field));
    entry.cloned().unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_path_is_served_with_a_trailing_slash() {
    let suv = Suv::start().await;
    let slash = |path: &str| format!("{path}/");

    let id = new_id();
    let reply = suv.post(&slash(VOUCHERS), &provision(id)).await;
    let code = reply.is(201, "provision")["voucher"]["code"].as_str();
    let code = code.unwrap().to_string();
    let reply = suv
        .post(&slash(VOUCHER_CONFIRMATIONS), &tender_advice(id))
        .await;
    reply.is(202, "provision confirmation");
    let redeemed = new_id();
    let reply = suv
        .post(&slash(REDEMPTIONS), &redemption(redeemed, &code))
        .await;
    reply.is(201, "redemption");
    let reply = suv.get(&format!("/redemptions/{redeemed}/")).await;
    reply.is(200, "lookupRedemption");
    let reply = suv
        .post(&slash(REDEMPTION_REVERSALS), &reversal(redeemed))
        .await;
    reply.is(202, "redemption reversal");
    let redeemed = suv.redeemed(&code).await;
    let reply = suv
        .post(&slash(REDEMPTION_CONFIRMATIONS), &advice(redeemed))
        .await;
    reply.is(202, "redemption confirmation");
    let refunded = new_id();
    let reply = suv.post(&slash(REFUNDS), &refund(refunded, &code)).await;
    reply.is(201, "refund");
    let reply = suv
        .post(&slash(REFUND_REVERSALS), &reversal(refunded))
        .await;
    reply.is(202, "refund reversal");
    let refunded = new_id();
    suv.post(&slash(REFUNDS), &refund(refunded, &code))
        .await
        .is(201, "refund");
    let reply = suv
        .post(&slash(REFUND_CONFIRMATIONS), &advice(refunded))
        .await;
    reply.is(202, "refund confirmation");
    let reply = suv.get(&format!("/vouchers/?voucherCode={code}")).await;
    assert_eq!(reply.is(200, "lookupVoucher")["state"], "REFUNDED");

    let (withdrawn, _) = suv.provisioned().await;
    let reply = suv
        .post(&slash(VOUCHER_REVERSALS), &reversal(withdrawn))
        .await;
    reply.is(202, "provision reversal");
    let stats = suv.http.get(suv.admin("/sandbox/stats/")).send().await;
    assert_eq!(stats.unwrap().status(), StatusCode::OK, "/sandbox/stats/");
    let spec = json!({"operation": "redeem", "fault": "timeout_after_effect"});
    let faults = suv.http.post(suv.admin("/sandbox/faults/")).json(&spec);
    let status = faults.send().await.unwrap().status();
    assert_eq!(status, StatusCode::NO_CONTENT, "/sandbox/faults/");
    let reset = suv.http.post(suv.api("/testServerAdmin/reset/"));
    let status = reset.send().await.unwrap().status();
    assert!(status.is_success(), "/testServerAdmin/reset/: {status}");
    assert_eq!(suv.sandbox.stats().calls_of(Operation::Provision), 0);
}

#[tokio::test]
async fn tender_currency_may_be_a_number() {
    let suv = Suv::start().await;

    let (id, code) = suv.provisioned().await;
    let mut body = tender_advice(id);
    body["tenders"][0]["amount"]["currency"] = json!(710);
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &body).await;
    let echo = reply.is(202, "currency 710 as a JSON number");
    assert_eq!(
        echo["tenders"][0]["amount"],
        json!({"amount": 1000, "currency": "710"}),
        "taken as the string \"710\""
    );
    assert_eq!(suv.state(&code).await, "CONFIRMED");

    let (id, _) = suv.provisioned().await;
    let mut body = tender_advice(id);
    body["tenders"][0]["amount"]["currency"] = json!(36);
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &body).await;
    let echo = reply.is(202, "currency 36 (AUD) as a JSON number");
    assert_eq!(echo["tenders"][0]["amount"]["currency"], "036");

    let (id, _) = suv.provisioned().await;
    for bad in [
        json!(0),
        json!(1000),
        json!(-710),
        json!(710.5),
        json!(true),
    ] {
        let mut body = tender_advice(id);
        body["tenders"][0]["amount"]["currency"] = bad.clone();
        let reply = suv.post(VOUCHER_CONFIRMATIONS, &body).await;
        let situation = format!("currency {bad}");
        reply.format_error(&["tenders[0].amount.currency"], &situation);
    }
    let stats = suv.sandbox.stats();
    assert_eq!(stats.effects_of(Operation::ProvisionConfirmation), 2);
}

#[tokio::test]
async fn error_ids_name_the_message_answered() {
    let suv = Suv::start().await;

    let refused = new_id();
    let reply = suv
        .post(REDEMPTIONS, &redemption(refused, "000000000000"))
        .await;
    reply.refused("VOUCHER_NOT_REDEEMABLE", "a refused request");
    assert_eq!(reply.body["id"], refused.to_string(), "the request's id");
    assert!(reply.body.get("originalId").is_none(), "{}", reply.body);

    let (provision_id, _) = suv.provisioned().await;
    let confirmation = tender_advice(provision_id);
    suv.post(VOUCHER_CONFIRMATIONS, &confirmation)
        .await
        .is(202, "confirmation");
    let advices = [
        (reversal(provision_id), "VOUCHER_ALREADY_CONFIRMED"),
        (reversal(new_id()), "UNABLE_TO_LOCATE_RECORD"),
    ];
    for (body, error_type) in advices {
        let reply = suv.post(VOUCHER_REVERSALS, &body).await;
        reply.refused(error_type, "a refused advice");
        assert_eq!(reply.body["id"], body["id"], "the reversal's own id");
        assert_eq!(reply.body["originalId"], body["requestId"]);
    }

    let mut body = reversal(provision_id);
    body["reversalReason"] = json!("BORED");
    let reply = suv.post(VOUCHER_REVERSALS, &body).await;
    reply.format_error(&["reversalReason"], "a malformed advice");
    assert_eq!(reply.body["id"], body["id"]);
    assert_eq!(reply.body["originalId"], body["requestId"]);
    body["id"] = json!("not-a-uuid");
    let reply = suv.post(VOUCHER_REVERSALS, &body).await;
    reply.format_error(&["id", "reversalReason"], "an advice without its own id");
    assert_ne!(reply.body["id"], body["requestId"], "a fresh id");
    assert_eq!(reply.body["originalId"], body["requestId"]);

    let reply = suv
        .post_as(OTHER_CLIENT, VOUCHER_CONFIRMATIONS, &confirmation)
        .await;
    reply.refused("AUTHENTICATION_ERROR", "an advice from another client");
    assert_eq!(reply.body["id"], confirmation["id"]);
    assert_eq!(reply.body["originalId"], provision_id.to_string());

    let fault = Fault::ErrorBeforeEffect(503);
    suv.sandbox.inject(Operation::ProvisionReversal, fault, 1);
    let body = reversal(provision_id);
    let reply = suv.post(VOUCHER_REVERSALS, &body).await;
    reply.failed(503, "UPSTREAM_UNAVAILABLE", "a faulted advice");
    assert_eq!(reply.body["id"], body["id"]);
    assert_eq!(reply.body["originalId"], provision_id.to_string());
    suv.sandbox.inject(Operation::Provision, fault, 1);
    let id = new_id();
    let reply = suv.post(VOUCHERS, &provision(id)).await;
    reply.failed(503, "UPSTREAM_UNAVAILABLE", "a faulted request");
    assert_eq!(reply.body["id"], id.to_string());
    assert!(reply.body.get("originalId").is_none(), "{}", reply.body);

    // A GET has no id of its own: a fresh one, about the redemption it looks up.
    let unknown = new_id();
    let reply = suv.get(&format!("/redemptions/{unknown}")).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "lookupRedemption");
    assert_ne!(reply.body["id"], unknown.to_string());
    assert_eq!(reply.body["originalId"], unknown.to_string());
}

#[tokio::test]
async fn format_error_messages_name_the_field_path() {
    let suv = Suv::start().await;

    let body = without(
        provision(new_id()),
        "/originator/merchant/merchantName/city",
    );
    let reply = suv.post(VOUCHERS, &body).await;
    let field = "originator.merchant.merchantName.city";
    reply.format_error(&[field], "missing city");
    let entry = format_entry(&reply, field);
    assert_eq!(entry["msg"], format!("{field} may not be null"));
    assert_eq!(entry["value"], Value::Null);
    let body = without(advice(new_id()), "/time");
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &body).await;
    reply.format_error(&["time"], "missing time");
    assert_eq!(format_entry(&reply, "time")["msg"], "time may not be null");

    let uuid_msg = "UUID must conform to the format 8-4-4-4-12 hexadecimal values";
    let mut body = provision(new_id());
    body["id"] = json!("68d07240-e604-431f-d5ca");
    let reply = suv.post(VOUCHERS, &body).await;
    reply.format_error(&["id"], "malformed id");
    let entry = format_entry(&reply, "id");
    assert_eq!(entry["msg"], uuid_msg);
    assert_eq!(entry["value"], "68d07240-e604-431f-d5ca");
    let mut body = reversal(new_id());
    body["requestId"] = json!("{68d07240-e604-431f-d5ca-974cee9bd60d}");
    let reply = suv.post(REFUND_REVERSALS, &body).await;
    reply.format_error(&["requestId"], "malformed requestId");
    assert_eq!(format_entry(&reply, "requestId")["msg"], uuid_msg);
    let reply = suv.get("/redemptions/not-a-uuid").await;
    reply.format_error(&["requestId"], "malformed lookupRedemption id");
    assert_eq!(format_entry(&reply, "requestId")["msg"], uuid_msg);
    let reply = suv.get("/vouchers?provisionRequestId=abc").await;
    reply.format_error(&["provisionRequestId"], "malformed provisionRequestId");
    assert_eq!(format_entry(&reply, "provisionRequestId")["msg"], uuid_msg);
}

#[tokio::test]
async fn a_provision_may_choose_its_voucher_code() {
    let suv = Suv::start().await;

    let chosen = "VR-2024-000123";
    let id = new_id();
    let reply = suv.post(VOUCHERS, &provision_with_code(id, chosen)).await;
    let body = reply.is(201, "provision with voucher.code");
    assert_eq!(
        body["voucher"]["code"], chosen,
        "provisioned with that code"
    );
    assert!(body["voucher"]["expiryDate"].is_string());
    assert!(body["voucher"]["redeemInstructions"].is_array());
    let found = suv.voucher(chosen).await;
    assert_eq!(found["id"], id.to_string());
    assert_eq!(found["state"], "PROVISIONED");
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &tender_advice(id)).await;
    reply.is(202, "confirmation");
    suv.redeemed(chosen).await;

    let taken = new_id();
    let reply = suv
        .post(VOUCHERS, &provision_with_code(taken, chosen))
        .await;
    reply.refused("DUPLICATE_RECORD", "a code another voucher has");
    let detail = &reply.body["detailMessage"];
    assert!(
        detail.get("voucher").is_none(),
        "not the other voucher: {detail}"
    );
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &tender_advice(taken)).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "nothing was provisioned");
    let reply = suv.post(VOUCHERS, &provision_with_code(id, chosen)).await;
    reply.refused("DUPLICATE_RECORD", "the same provision again");
    assert_eq!(reply.body["detailMessage"]["voucher"]["code"], chosen);

    let (withdrawn, withdrawn_code) = suv.provisioned().await;
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(withdrawn)).await;
    reply.is(202, "provision reversal");
    let reply = suv
        .post(VOUCHERS, &provision_with_code(new_id(), &withdrawn_code))
        .await;
    reply.refused("DUPLICATE_RECORD", "a reversed voucher's code stays taken");

    let mut body = provision_with_code(new_id(), "123");
    body["voucher"]["expiryDate"] = json!("2030-12-07T10:02:58.737Z");
    let reply = suv.post(VOUCHERS, &body).await;
    reply.format_error(&["voucher.expiryDate"], "the provider sets the expiry");
    let reply = suv.post(VOUCHERS, &provision_with_code(new_id(), "")).await;
    reply.format_error(&["voucher.code"], "an empty code");
    let mut body = provision(new_id());
    body["voucher"] = json!({});
    let reply = suv.post(VOUCHERS, &body).await;
    reply.format_error(&["voucher.code"], "a voucher without its code");

    let stats = suv.sandbox.stats();
    assert_eq!(stats.effects_of(Operation::Provision), 2, "{stats:?}");
}

#[tokio::test]
async fn early_reversals_are_remembered() {
    let suv = Suv::start().await;

    // Provision: reversed before it arrives, twice; the late provision is refused.
    let late = new_id();
    let early = reversal(late);
    let reply = suv.post(VOUCHER_REVERSALS, &early).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "reversal before its provision");
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(late)).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "the reversal repeated");
    let reply = suv.post(VOUCHERS, &provision(late)).await;
    reply.refused("VOUCHER_ALREADY_REVERSED", "the late provision");
    assert_eq!(reply.body["detailMessage"]["reversalId"], early["id"]);
    let reply = suv.post(VOUCHER_CONFIRMATIONS, &tender_advice(late)).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "nothing was provisioned");
    assert_eq!(suv.sandbox.stats().effects_of(Operation::Provision), 0);

    // A provision reversed after its answer, then resent: DUPLICATE_RECORD and its voucher.
    let (withdrawn, code) = suv.provisioned().await;
    let reply = suv.post(VOUCHER_REVERSALS, &reversal(withdrawn)).await;
    reply.is(202, "provision reversal");
    let reply = suv.post(VOUCHERS, &provision(withdrawn)).await;
    reply.refused("DUPLICATE_RECORD", "provision resent after its reversal");
    let voucher = &reply.body["detailMessage"]["voucher"];
    assert_eq!(voucher["code"], code, "{}", reply.body);
    assert!(voucher["expiryDate"].is_string(), "{}", reply.body);

    // Redemption: the late one is refused and nothing is redeemed.
    let code = suv.confirmed_voucher().await;
    let late = new_id();
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(late)).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "reversal before its redemption");
    let reply = suv.post(REDEMPTIONS, &redemption(late, &code)).await;
    reply.refused("REDEMPTION_ALREADY_REVERSED", "the late redemption");
    assert_eq!(suv.state(&code).await, "CONFIRMED", "nothing was redeemed");
    let lookup = suv.get(&format!("/redemptions/{late}")).await;
    assert_eq!(lookup.is(400, "lookupRedemption replays it"), &reply.body);

    // A reversal refused (400) is not remembered: the same id is a duplicate, no more.
    let redeemed = suv.redeemed(&code).await;
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(redeemed)).await;
    reply.is(202, "redemption confirmation");
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(redeemed)).await;
    reply.refused("REDEMPTION_ALREADY_CONFIRMED", "a refused reversal");
    let reply = suv.post(REDEMPTIONS, &redemption(redeemed, &code)).await;
    reply.refused("DUPLICATE_RECORD", "the redemption resent");

    // Refund: the late one is refused and the redemption stays confirmed.
    let late = new_id();
    let reply = suv.post(REFUND_REVERSALS, &reversal(late)).await;
    reply.refused("UNABLE_TO_LOCATE_RECORD", "reversal before its refund");
    let reply = suv.post(REFUNDS, &refund(late, &code)).await;
    reply.refused("REFUND_ALREADY_REVERSED", "the late refund");
    assert_eq!(suv.state(&code).await, "REDEMPTION_CONFIRMED");

    let stats = suv.sandbox.stats();
    assert_eq!(stats.effects_of(Operation::ProvisionReversal), 1);
    assert_eq!(stats.effects_of(Operation::RedeemReversal), 0);
    assert_eq!(stats.effects_of(Operation::RefundReversal), 0);
    assert_eq!(stats.effects_of(Operation::Refund), 0);
}

#[tokio::test]
async fn request_ids_are_keyed_with_the_voucher() {
    let suv = Suv::start().await;
    let first = suv.confirmed_voucher().await;
    let second = suv.confirmed_voucher().await;

    let shared = new_id();
    let reply = suv.post(REDEMPTIONS, &redemption(shared, &first)).await;
    reply.is(201, "redemption of the first voucher");
    let reply = suv.post(REDEMPTIONS, &redemption(shared, &second)).await;
    reply.is(201, "the same id for another voucher: a new redemption");
    for code in [&first, &second] {
        let reply = suv.post(REDEMPTIONS, &redemption(shared, code)).await;
        reply.refused("DUPLICATE_RECORD", "the same id for the same voucher");
        assert_eq!(suv.state(code).await, "REDEEMED");
    }
    assert_eq!(suv.sandbox.stats().effects_of(Operation::Redeem), 2);

    // An advice names only the id: it is about the latest redemption approved with it.
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(shared)).await;
    reply.is(202, "confirmation of the shared id");
    assert_eq!(suv.state(&second).await, "REDEMPTION_CONFIRMED");
    assert_eq!(suv.state(&first).await, "REDEEMED");
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(shared)).await;
    reply.refused("REDEMPTION_ALREADY_CONFIRMED", "reversal of the shared id");

    let refund_id = new_id();
    let reply = suv.post(REFUNDS, &refund(refund_id, &second)).await;
    reply.is(201, "refund of the second voucher");
    let reply = suv.post(REFUNDS, &refund(refund_id, &first)).await;
    reply.refused(
        "REDEMPTION_NOT_CONFIRMED",
        "the same id for another voucher: a new refund, judged on its own",
    );
    let reply = suv.post(REFUNDS, &refund(refund_id, &second)).await;
    reply.refused(
        "DUPLICATE_RECORD",
        "the same refund id for the same voucher",
    );
    assert_eq!(suv.sandbox.stats().effects_of(Operation::Refund), 1);
}

#[tokio::test]
async fn unknown_vouchers_and_reversed_redemptions() {
    let suv = Suv::start().await;

    let reply = suv
        .post(REDEMPTIONS, &redemption(new_id(), "000000000000"))
        .await;
    reply.refused("VOUCHER_NOT_REDEEMABLE", "redeeming an unknown voucher");
    let reply = suv.post(REFUNDS, &refund(new_id(), "000000000000")).await;
    reply.refused("VOUCHER_NOT_REDEEMED", "refunding an unknown voucher");

    let code = suv.confirmed_voucher().await;
    let redeemed = suv.redeemed(&code).await;
    let reply = suv.post(REDEMPTION_REVERSALS, &reversal(redeemed)).await;
    reply.is(202, "redemption reversal");
    let reply = suv.post(REDEMPTION_CONFIRMATIONS, &advice(redeemed)).await;
    reply.refused("VOUCHER_NOT_REDEEMED", "confirming a reversed redemption");
    assert_eq!(suv.state(&code).await, "CONFIRMED");
}
