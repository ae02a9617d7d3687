//! The GovStack engine simulator alone, over HTTP, in both dialects: the voucher state
//! machine, callbacks (retried until answered, duplicated, omitting instructions, sent
//! before the answer), a repeated requestID, field limits and authentication.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::routing::any;
use serde_json::{Value, json};
use voucher_relay::providers::govstack::dialect::{Dialect, VoucherState};
use voucher_relay::providers::govstack::sandbox::{
    Fault, GovstackSandbox, Operation, SANDBOX_TOKEN, SandboxOptions,
};

/// What the test's callback receiver got, and whether it is "down" (answers 503).
#[derive(Default)]
struct Received {
    calls: Vec<(Method, Value)>,
    down: bool,
}

struct Engine {
    sb: GovstackSandbox,
    base: String,
    hook: String,
    received: Arc<Mutex<Received>>,
    http: reqwest::Client,
}

async fn receive(State(r): State<Arc<Mutex<Received>>>, method: Method, body: Bytes) -> StatusCode {
    let mut r = r.lock().unwrap();
    if r.down {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.calls
        .push((method, serde_json::from_slice(&body).unwrap_or(Value::Null)));
    StatusCode::OK
}

impl Engine {
    async fn start(dialect: Dialect) -> Engine {
        let sb = GovstackSandbox::new(SandboxOptions {
            dialect,
            callback_delay: Duration::from_millis(20),
            slow_answer: Duration::from_secs(2),
            ..Default::default()
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(sb.clone().serve(listener));
        let received: Arc<Mutex<Received>> = Arc::default();
        let app = Router::new()
            .route("/engine", any(receive))
            .with_state(received.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let hook = format!("http://{}/engine", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Engine {
            sb,
            base,
            hook,
            received,
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(SANDBOX_TOKEN)
            .header(self.sb.dialect().callback_header(), &self.hook)
    }

    async fn send(&self, method: Method, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .request(method, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits for the `n`th callback (1-based) and returns it.
    async fn callback(&self, n: usize) -> (Method, Value) {
        for _ in 0..300 {
            if let Some(c) = self.received.lock().unwrap().calls.get(n - 1) {
                return c.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("callback {n} never came");
    }

    fn callbacks(&self) -> usize {
        self.received.lock().unwrap().calls.len()
    }

    /// Creates `n` vouchers under `request_id`; returns the creation callback.
    async fn create(&self, request_id: &str, n: usize) -> Value {
        let before = self.callbacks();
        let (status, _) = self
            .send(Method::POST, "/vouchers", &creation(request_id, n))
            .await;
        assert!(status == 200 || status == 202, "{status}");
        self.callback(before + 1).await.1
    }

    async fn activate(&self, request_id: &str, serials: &[&str]) -> Value {
        let d = self.sb.dialect();
        let before = self.callbacks();
        let body = json!({
            d.key("requestId"): request_id, d.key("batchId"): "b1",
            d.key("voucherInstructions"): serials.iter().map(|s| json!({"serialNumber": s})).collect::<Vec<_>>()
        });
        let (status, _) = self
            .send(Method::PUT, "/vouchers?command=activate", &body)
            .await;
        assert!(status == 200 || status == 202, "{status}");
        self.callback(before + 1).await.1
    }

    async fn cancel(&self, request_id: &str, serials: &[&str]) -> Value {
        let d = self.sb.dialect();
        let before = self.callbacks();
        let body = json!({
            d.key("requestId"): request_id,
            d.key("voucherInstructions"): serials.iter().map(|s| json!({"serialNumber": s})).collect::<Vec<_>>()
        });
        let (status, _) = self
            .send(Method::POST, "/vouchers?command=cancel", &body)
            .await;
        assert!(status == 200 || status == 202, "{status}");
        self.callback(before + 1).await.1
    }

    async fn redeem(&self, request_id: &str, serial: &str, secret: &str) -> (u16, Value) {
        let body = match self.sb.dialect() {
            Dialect::Govstack => json!({"requestID": request_id, "agentID": "agent-1",
                "voucherSerialNumber": serial, "voucherSecretNumber": secret}),
            Dialect::Mifos => json!({"requestId": request_id, "agentId": "agent-1",
                "voucherSerialNumber": serial, "voucherSecretNumber": secret}),
        };
        self.send(Method::POST, "/vouchers?command=redeem", &body)
            .await
    }

    async fn status(&self, serial: &str) -> (u16, Value) {
        let r = self
            .request(Method::GET, &format!("/vouchers/{serial}?fields=status"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null),
        )
    }
}

fn creation(request_id: &str, n: usize) -> Value {
    json!({"requestID": request_id, "batchID": "b1", "voucherInstructions": (0..n).map(|i| json!({
        "instructionID": format!("i-{i}"), "groupCode": "G1", "currency": "KES",
        "amount": 150.25, "payeeFunctionalID": format!("payee-{i}"), "narration": "food"
    })).collect::<Vec<_>>()})
}

fn serials(created: &Value) -> Vec<(String, String)> {
    created["voucherInstructions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["serialNumber"].as_str().unwrap().to_string(),
                v["voucherNumber"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_voucher_lives_its_whole_life_in_the_govstack_dialect() {
    let e = Engine::start(Dialect::Govstack).await;
    let (m, created) = {
        let c = e.create("req-1", 3).await;
        (e.received.lock().unwrap().calls[0].0.clone(), c)
    };
    assert_eq!(m, Method::POST, "the 23Q4 engine calls back with POST");
    assert_eq!(created["requestID"], "req-1");
    let v = serials(&created);
    assert_eq!(v.len(), 3);
    assert!(
        v.iter().all(|(s, n)| s.len() == 10 && n.len() == 6),
        "{v:?}"
    );
    let (serial, secret) = &v[0];
    assert_eq!(e.status(serial).await.1["status"], 1);

    // Activation with a partial failure: one unknown serial.
    let confirmed = e.activate("act-1", &[serial, &v[1].0, "0000000000"]).await;
    assert_eq!(confirmed["registerRequestID"], "act-1");
    assert_eq!(confirmed["numberFailedCases"], 1);
    assert_eq!(confirmed["failedCases"][0]["serialNumber"], "0000000000");
    assert_eq!(e.status(serial).await.1["status"], 2);

    // A wrong secret, then the redemption, then a second one refused.
    let (_, wrong) = e.redeem("red-0", serial, "000000").await;
    assert_eq!(
        (wrong["status"].clone(), wrong["message"].clone()),
        (json!(0), json!("Invalid Secret"))
    );
    let (code, ok) = e.redeem("red-1", serial, secret).await;
    assert_eq!(code, 200);
    assert_eq!(ok["status"], 1, "{ok}");
    assert_eq!(ok["value"], 150.25);
    let (_, again) = e.redeem("red-2", serial, secret).await;
    assert_eq!(again["message"], "Already Consumed");
    // The same requestID again: the same answer, no second effect.
    let (_, repeat) = e.redeem("red-1", serial, secret).await;
    assert_eq!(repeat, ok);
    assert_eq!(e.sb.stats().redemptions_applied, 1);
    assert_eq!(e.status(serial).await.1["status"], 5);

    // Cancellation, "already cancelled", a cancelled voucher refused, status of each.
    let c = e.cancel("can-1", &[&v[1].0, &v[2].0]).await;
    assert_eq!(c["numberFailedCases"], 0);
    let c = e.cancel("can-2", &[&v[1].0]).await;
    assert_eq!(c["failedCases"][0]["failureReason"], "Already Cancelled");
    assert_eq!(
        e.redeem("red-3", &v[1].0, &v[1].1).await.1["message"],
        "Cancelled"
    );
    assert_eq!(e.status(&v[2].0).await.1["status"], 3);
    e.sb.set_state(&v[2].0, VoucherState::Suspended);
    assert_eq!(e.status(&v[2].0).await.1["status"], 6);
    let (code, unknown) = e.status("9999999999").await;
    assert_eq!(
        (code, unknown["message"].clone()),
        (400, json!("Not Existing"))
    );
}

#[tokio::test]
async fn the_mifos_dialect_answers_as_the_mifos_engine() {
    let e = Engine::start(Dialect::Mifos).await;
    let created = e.create("m-1", 1).await;
    assert_eq!(e.received.lock().unwrap().calls[0].0, Method::PUT);
    let (serial, secret) = serials(&created).remove(0);
    assert!(secret.len() > 6, "an opaque secret: {secret}");
    // PascalCase is refused in activate bodies; camelCase goes.
    let (code, _) = e
        .send(
            Method::PUT,
            "/vouchers?command=activate",
            &json!({"RequestID": "m-2", "VoucherInstructions": [{"serialNumber": serial}]}),
        )
        .await;
    assert_eq!(code, 400);
    let confirmed = e.activate("m-3", &[&serial]).await;
    assert_eq!(confirmed["numberFailedCases"], 0);
    assert_eq!(e.status(&serial).await.1["status"], "02");
    let (code, ok) = e.redeem("m-4", &serial, &secret).await;
    assert_eq!((code, ok["status"].clone()), (200, json!("01")));
    let (_, no) = e.redeem("m-5", &serial, &secret).await;
    assert_eq!(no["status"], "00");
    // An unknown serial: 400 with an empty body. A header outside the allow-list: 400.
    assert_eq!(e.status("404").await, (400, Value::Null));
    let r = e
        .request(Method::GET, &format!("/vouchers/{serial}?fields=status"))
        .header("X-Trace", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn callbacks_are_retried_duplicated_cut_short_or_sent_first_on_demand() {
    let e = Engine::start(Dialect::Govstack).await;
    // The receiver is down: the callback waits and arrives once it is back.
    e.received.lock().unwrap().down = true;
    let (status, _) = e
        .send(Method::POST, "/vouchers", &creation("down-1", 1))
        .await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(e.sb.stats().callback_attempts >= 2, "{:?}", e.sb.stats());
    assert_eq!(e.callbacks(), 0);
    e.received.lock().unwrap().down = false;
    assert_eq!(e.callback(1).await.1["requestID"], "down-1");
    assert_eq!(e.sb.callbacks_owed(), 0);

    // A duplicate callback.
    e.sb.inject(Operation::Create, Fault::DuplicateCallback, 1);
    e.create("dup-1", 1).await;
    let second = e.callback(3).await.1;
    assert_eq!(second["requestID"], "dup-1");
    assert_eq!(e.callback(2).await.1, second);

    // A callback that omits instructions: those were not created.
    e.sb.inject(Operation::Create, Fault::OmitInstructions(2), 1);
    let cut = e.create("cut-1", 5).await;
    assert_eq!(serials(&cut).len(), 3);

    // The callback before the answer.
    e.sb.inject(Operation::Create, Fault::CallbackBeforeAnswer, 1);
    let before = e.callbacks();
    let (status, _) = e
        .send(Method::POST, "/vouchers", &creation("early-1", 1))
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        e.callbacks(),
        before + 1,
        "delivered before the answer came"
    );

    // Unavailable: nothing applied; the same request again then goes through.
    e.sb.inject(Operation::Create, Fault::Unavailable, 1);
    let created_before = e.sb.stats().vouchers_created;
    let (status, _) = e
        .send(Method::POST, "/vouchers", &creation("busy-1", 2))
        .await;
    assert_eq!(status, 503);
    assert_eq!(e.sb.stats().vouchers_created, created_before);
    // A repeated requestID with the same body: the stored answer, the callback again, no
    // new vouchers; with another body: 409.
    e.create("busy-1", 2).await;
    let made = e.sb.stats().vouchers_created;
    let n = e.callbacks();
    let (status, _) = e
        .send(Method::POST, "/vouchers", &creation("busy-1", 2))
        .await;
    assert_eq!(status, 200);
    e.callback(n + 1).await;
    assert_eq!(e.sb.stats().vouchers_created, made, "no second effect");
    let (status, _) = e
        .send(Method::POST, "/vouchers", &creation("busy-1", 3))
        .await;
    assert_eq!(status, 409);
}

#[tokio::test]
async fn field_limits_and_the_token_are_checked() {
    let e = Engine::start(Dialect::Govstack).await;
    let mut long_request = creation("r", 1);
    long_request["requestID"] = json!("1234567890123");
    let mut bad_currency = creation("r", 1);
    bad_currency["voucherInstructions"][0]["currency"] = json!("K3S");
    let mut negative = creation("r", 1);
    negative["voucherInstructions"][0]["amount"] = json!(-1);
    let mut repeated = creation("r", 2);
    repeated["voucherInstructions"][1]["instructionID"] = json!("i-0");
    for (body, field) in [
        (long_request, "requestID"),
        (bad_currency, "currency"),
        (negative, "amount"),
        (repeated, "instructionID"),
        (json!([1]), "object"),
    ] {
        let (status, answer) = e.send(Method::POST, "/vouchers", &body).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            answer["message"].as_str().unwrap().contains(field),
            "{answer}"
        );
    }
    let (_, long_secret) = e.redeem("r1", "1", "1234567").await;
    assert!(
        long_secret["message"]
            .as_str()
            .unwrap()
            .contains("voucherSecretNumber")
    );
    let r = e
        .http
        .get(format!("{}/vouchers/1?fields=status", e.base))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = e
        .http
        .post(format!("{}/vouchers", e.base))
        .bearer_auth(SANDBOX_TOKEN)
        .json(&creation("r2", 1))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "the callback header is required");
    assert_eq!(e.sb.stats().vouchers_created, 0);
}
