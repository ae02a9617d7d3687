//! The one HTTP path every provider call takes.
//!
//! It holds the provider's rate limit and concurrency cap, applies the timeouts, records the
//! exchange (masked) for the audit trail, and classifies every failure by what it means for
//! the money: was the request never sent, refused, or is its effect unknown?

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::Semaphore;

use serde::Deserialize;

use crate::error::with_causes;
use crate::mask::mask_json;
use crate::ratelimit::ProviderLimit;
use crate::webhook::deliver::parse_retry_after;

/// The HTTP settings every provider section of `queues.toml` carries, flattened into it:
/// where the provider is and how hard the relay may push it.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpSettings {
    pub base_url: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    /// Requests per second to the provider, across every worker process.
    pub rate_per_sec: u32,
    /// Requests in flight at once, per process.
    pub concurrency: usize,
    /// Worker processes the rate limit is shared by when PostgreSQL cannot be asked: each
    /// process then sends at `rate_per_sec / max_processes`, so together they stay under.
    #[serde(default = "default_max_processes")]
    pub max_processes: u32,
    /// Added to twice the request timeout to make the lease a worker holds while sending:
    /// room for the rate limiter and the concurrency cap.
    #[serde(default = "default_lease_margin_ms")]
    pub lease_margin_ms: u64,
}

fn default_max_processes() -> u32 {
    4
}

fn default_lease_margin_ms() -> u64 {
    60_000
}

impl HttpSettings {
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

    /// The checks every provider's HTTP settings pass; the error names the key under
    /// `section` (for example `providers.csq`).
    pub fn validate(&self, section: &str) -> Result<(), (String, String)> {
        let bad = |key: &str, why: &str| Err((format!("{section}.{key}"), why.to_string()));
        let l = self.limits();
        if !self.base_url.starts_with("http://") && !self.base_url.starts_with("https://") {
            return bad("base_url", "must be an http(s) URL");
        }
        if l.rate_per_sec == 0 || l.concurrency == 0 {
            return bad("rate_per_sec / concurrency", "must be at least 1");
        }
        if l.max_queue_wait() < Duration::from_millis(500) {
            return bad(
                "lease_margin_ms",
                "must be at least 1000: half of it is the longest wait for a send slot",
            );
        }
        if l.request_timeout.is_zero() || l.connect_timeout.is_zero() {
            return bad("*_timeout_ms", "must be positive");
        }
        Ok(())
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
    /// request timeouts plus the margin, which covers the wait for a send slot. Only a
    /// redelivery (the owner's channel died) looks at it; a lease that runs out under a live
    /// owner costs a resolution or a reversal, never a second financial effect.
    pub fn lease(&self) -> Duration {
        self.request_timeout * 2 + self.lease_margin
    }

    /// Longest wait for a send slot before a request is given up unsent: half the margin,
    /// so a request is always sent and answered while its lease holds.
    pub fn max_queue_wait(&self) -> Duration {
        self.lease_margin / 2
    }
}

/// Why a provider call produced no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The request never reached the provider (connection refused, DNS, connect timeout,
    /// 429). Nothing was applied; sending again is safe.
    #[error("not sent: {0}")]
    NotSent(String),
    /// The request may have been applied but no final answer came back: a timeout after
    /// sending, a 5xx, a cut connection, or a 2xx body that cannot be read. Never resend
    /// blindly: resolve it (query, reverse) instead.
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The provider refused the request with a 4xx: final.
    #[error("refused with HTTP {status}")]
    Refused { status: u16, body: Value },
}

/// The reason of a [`CallError::Unknown`] that was a timeout (no answer at all), as opposed
/// to a 5xx or a cut connection.
pub const TIMED_OUT: &str = "timed out waiting for the answer";

/// One request and its answer, masked, as stored in `provider_exchanges`.
#[derive(Debug, Clone)]
pub struct Exchange {
    pub provider: &'static str,
    pub operation: &'static str,
    pub method: String,
    pub url: String,
    pub request: Value,
    pub status: Option<u16>,
    pub response: Option<Value>,
    pub latency: Duration,
    pub error: Option<String>,
}

impl Exchange {
    /// The latency as `provider_exchanges.latency_ms` stores it.
    pub fn latency_ms(&self) -> i32 {
        i32::try_from(self.latency.as_millis()).unwrap_or(i32::MAX)
    }
}

/// A provider's HTTP client with its limits.
#[derive(Clone)]
pub struct ProviderHttp {
    name: &'static str,
    client: reqwest::Client,
    base_url: String,
    limit: Arc<ProviderLimit>,
    in_flight: Arc<Semaphore>,
    max_queue_wait: Duration,
}

impl ProviderHttp {
    /// Builds the client for `base_url` with the provider's limits. With `pool`, the rate
    /// limit is global across processes (see [`crate::ratelimit`]); without, it holds per
    /// process.
    pub fn new(
        name: &'static str,
        base_url: &str,
        cfg: &HttpLimits,
        pool: Option<deadpool_postgres::Pool>,
    ) -> anyhow::Result<ProviderHttp> {
        let client = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout)
            .user_agent(concat!("voucher-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(ProviderHttp {
            name,
            client,
            base_url: base_url.trim_end_matches('/').to_string(),
            limit: Arc::new(ProviderLimit::new(
                name,
                cfg.rate_per_sec,
                cfg.max_processes,
                pool,
            )),
            in_flight: Arc::new(Semaphore::new(cfg.concurrency)),
            max_queue_wait: cfg.max_queue_wait(),
        })
    }

    /// The rate limit these requests wait on.
    pub fn rate_limit(&self) -> Arc<ProviderLimit> {
        self.limit.clone()
    }

    /// Sends one JSON request and returns the JSON answer with its exchange record.
    ///
    /// `headers` are sent as given but recorded masked.
    pub async fn send(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        headers: &[(&'static str, String)],
        body: Option<&Value>,
    ) -> (Result<Value, CallError>, Exchange) {
        self.send_with_query(operation, method, path, &[], headers, body)
            .await
    }

    /// [`send`](Self::send) with query parameters, which are encoded by the client and
    /// recorded masked beside the URL, never inside it (they may be voucher codes).
    pub async fn send_with_query(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(&'static str, String)],
        headers: &[(&'static str, String)],
        body: Option<&Value>,
    ) -> (Result<Value, CallError>, Exchange) {
        let url = format!("{}{}", self.base_url, path);
        let mut exchange = Exchange {
            provider: self.name,
            operation,
            method: method.to_string(),
            url: url.clone(),
            request: recorded_request(query, headers, body),
            status: None,
            response: None,
            latency: Duration::ZERO,
            error: None,
        };
        let not_sent = |exchange: &mut Exchange, why: String| {
            let err = CallError::NotSent(why);
            exchange.error = Some(err.to_string());
            Err(err)
        };
        let _permit = match self.send_slot().await {
            Ok(permit) => permit,
            Err(why) => return (not_sent(&mut exchange, why), exchange),
        };
        let mut target = match reqwest::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => return (not_sent(&mut exchange, format!("bad URL: {e}")), exchange),
        };
        if !query.is_empty() {
            target.query_pairs_mut().extend_pairs(query);
        }
        let mut request = self.client.request(method, target);
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(b) = body {
            request = request.json(b);
        }
        let started = Instant::now();
        let result = self.finish(request).await;
        exchange.latency = started.elapsed();
        self.record_answer(&mut exchange, &result);
        (result.map(|(_, v)| v).map_err(|(_, e)| e), exchange)
    }

    /// A request the relay could not build: nothing is sent, and the record says why.
    pub fn not_sent(
        &self,
        operation: &'static str,
        why: String,
    ) -> (Result<Value, CallError>, Exchange) {
        let err = CallError::NotSent(why);
        let exchange = Exchange {
            provider: self.name,
            operation,
            method: String::new(),
            url: self.base_url.clone(),
            request: Value::Null,
            status: None,
            response: None,
            latency: Duration::ZERO,
            error: Some(err.to_string()),
        };
        (Err(err), exchange)
    }

    /// Waits for a concurrency permit and a rate-limit slot, within the bound.
    ///
    /// The wait is bounded: the caller's lease on the transaction is running, and a request
    /// sent after the lease ran out could overtake the reversal or resolution another
    /// worker started meanwhile. Past the bound, nothing is sent (and no rate-limit slot is
    /// taken).
    async fn send_slot(&self) -> Result<tokio::sync::SemaphorePermit<'_>, String> {
        let queued_at = Instant::now();
        let permit = tokio::time::timeout(self.max_queue_wait, self.in_flight.acquire()).await;
        let left = self.max_queue_wait.saturating_sub(queued_at.elapsed());
        match permit {
            // Closed only if the process is shutting down.
            Ok(Err(_)) => Err("provider client closed".to_string()),
            Ok(Ok(permit)) if self.limit.wait_turn(left).await => Ok(permit),
            _ => {
                metrics::counter!("voucher_send_slot_timeouts_total", "provider" => self.name)
                    .increment(1);
                Err(format!(
                    "no send slot within {} ms (rate limit or concurrency cap)",
                    self.max_queue_wait.as_millis()
                ))
            }
        }
    }

    /// Puts the answer (masked) into the exchange record and the metrics.
    fn record_answer(
        &self,
        exchange: &mut Exchange,
        result: &Result<(u16, Value), (Option<u16>, CallError)>,
    ) {
        metrics::histogram!("voucher_provider_latency_seconds", "provider" => self.name, "operation" => exchange.operation)
            .record(exchange.latency.as_secs_f64());
        match result {
            Ok((status, value)) => {
                exchange.status = Some(*status);
                exchange.response = Some(mask_json(value));
            }
            Err((status, err)) => {
                exchange.status = *status;
                exchange.error = Some(err.to_string());
                if let CallError::Refused { body, .. } = err {
                    exchange.response = Some(mask_json(body));
                }
            }
        }
        let outcome = match result {
            Ok(_) => "ok",
            Err((_, CallError::NotSent(_))) => "not_sent",
            Err((_, CallError::Unknown(_))) => "unknown",
            Err((_, CallError::Refused { .. })) => "refused",
        };
        metrics::counter!("voucher_provider_calls_total", "provider" => self.name, "operation" => exchange.operation, "result" => outcome).increment(1);
    }

    async fn finish(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), (Option<u16>, CallError)> {
        let response = request.send().await.map_err(|e| (None, classify(e)))?;
        let status = response.status();
        let code = status.as_u16();
        let unknown = |why: String| (Some(code), CallError::Unknown(why));
        let json_type = declared_json(response.headers());
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
            self.limit.slow_down(retry_after).await;
        } else {
            self.limit.answered();
        }
        // Whatever the status: a body that cannot be read whole says nothing final, and a
        // 2xx among them may have bought the voucher. So it is unknown, never "not sent".
        let bytes = read_capped(response, MAX_ANSWER_BYTES)
            .await
            .map_err(unknown)?;
        if status.is_success() && json_type == Some(false) {
            return Err(unknown("2xx answer whose Content-Type is not JSON".into()));
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            if body.is_null() {
                // A 2xx we cannot read may still have bought the voucher.
                return Err(unknown("2xx answer without a JSON body".into()));
            }
            Ok((code, body))
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Err((
                Some(code),
                CallError::NotSent("429 Too Many Requests".into()),
            ))
        } else if status.is_server_error() {
            Err(unknown(format!("HTTP {code}")))
        } else {
            Err((Some(code), CallError::Refused { status: code, body }))
        }
    }
}

/// Largest provider answer the relay reads, in bytes. Provider answers are a few KiB; the
/// cap bounds the memory one answer can take when an endpoint (broken, or not the provider
/// at all) sends without end, which the request timeout alone does not bound on a fast
/// link. 10 MiB leaves room for the largest legitimate answer (a long product list).
pub const MAX_ANSWER_BYTES: usize = 10 * 1024 * 1024;

/// Reads the body chunk by chunk, giving up past `cap` bytes, on a declared length over
/// `cap` (before reading anything), or when the connection ends before the declared length
/// (a truncated body: hyper reports it as an error).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let too_large = || format!("answer larger than {cap} bytes: not read");
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(cap).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    loop {
        let chunk = response.chunk().await.map_err(|e| {
            let e = e.without_url();
            format!("reading the body: {}", with_causes(&e))
        })?;
        let Some(chunk) = chunk else {
            return Ok(body);
        };
        if body.len().saturating_add(chunk.len()) > cap {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
}

/// Whether the answer declares a JSON body: `None` when it has no `Content-Type`, else
/// whether the media type is JSON.
///
/// Our reading (RFC 8259 and the structured syntax suffix of RFC 6838): JSON is
/// `application/json` or any `type/subtype+json` (`application/problem+json`), compared
/// without case and without parameters (`; charset=utf-8`). A missing header is left to the
/// body itself, since some deployments omit it on JSON answers; a header that is present
/// and names something else (an HTML error page from a proxy, `text/plain`) is not the
/// provider's JSON answer, even when it parses.
fn declared_json(headers: &reqwest::header::HeaderMap) -> Option<bool> {
    let value = headers.get(reqwest::header::CONTENT_TYPE)?;
    let Ok(text) = value.to_str() else {
        return Some(false);
    };
    let essence = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let json = match essence.split_once('/') {
        Some((_, "json")) => essence == "application/json",
        Some((kind, subtype)) => !kind.is_empty() && subtype.ends_with("+json"),
        None => false,
    };
    Some(json)
}

/// The request as recorded: header names with masked values, the query masked beside the
/// URL, and the body masked.
fn recorded_request(
    query: &[(&'static str, String)],
    headers: &[(&'static str, String)],
    body: Option<&Value>,
) -> Value {
    let mut recorded = serde_json::Map::new();
    for (name, _) in headers {
        recorded.insert((*name).to_string(), Value::String("****".into()));
    }
    if !query.is_empty() {
        let pairs: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
            .collect();
        recorded.insert("query".into(), mask_json(&Value::Object(pairs)));
    }
    if let Some(b) = body {
        recorded.insert("body".into(), mask_json(b));
    }
    Value::Object(recorded)
}

/// Connection failures happen before the request leaves; anything later may have been
/// applied by the provider.
///
/// The URL is dropped from the message: its query may hold a voucher code, and the message
/// reaches logs, the exchange record and outcomes. The causes beneath it (connection, DNS,
/// TLS, I/O) are kept: they say why, and name no URL.
fn classify(e: reqwest::Error) -> CallError {
    let e = e.without_url();
    if e.is_connect() || e.is_builder() {
        CallError::NotSent(format!("connecting: {}", with_causes(&e)))
    } else if e.is_timeout() {
        CallError::Unknown(TIMED_OUT.into())
    } else {
        CallError::Unknown(format!("transport: {}", with_causes(&e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use wiremock::matchers::any;
    use wiremock::{Mock, MockServer, ResponseTemplate};

    #[tokio::test]
    async fn a_refused_connection_names_its_cause_but_not_the_url() {
        let e = reqwest::Client::new()
            .get("http://127.0.0.1:1/vouchers?code=VOUCHER-SECRET-1")
            .send()
            .await
            .expect_err("nothing listens on port 1");
        let CallError::NotSent(why) = classify(e) else {
            panic!("a refused connection is not sent");
        };
        assert!(why.to_lowercase().contains("refused"), "{why}");
        assert!(!why.contains("VOUCHER-SECRET-1"), "{why}");
        assert!(!why.contains("127.0.0.1:1"), "{why}");
    }

    fn client(base_url: &str) -> ProviderHttp {
        let limits = HttpLimits {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(20),
            rate_per_sec: 1000,
            max_processes: 1,
            concurrency: 4,
            lease_margin: Duration::from_secs(10),
        };
        ProviderHttp::new("test", base_url, &limits, None).unwrap()
    }

    /// One answer from a wiremock server on 127.0.0.1.
    async fn answer(template: ResponseTemplate) -> (Result<Value, CallError>, Exchange) {
        let server = MockServer::start().await;
        Mock::given(any())
            .respond_with(template)
            .mount(&server)
            .await;
        client(&server.uri())
            .send("test", Method::POST, "/purchase", &[], Some(&Value::Null))
            .await
    }

    /// Serves one connection on 127.0.0.1 with `raw` as the whole answer, then closes it:
    /// for answers wiremock cannot make (cut short, no Content-Length).
    async fn raw_server(raw: Vec<u8>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match socket.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            // The client stops reading past the cap: a failed write is expected then.
            let _ = socket.write_all(&raw).await;
            let _ = socket.shutdown().await;
        });
        format!("http://{addr}")
    }

    fn unknown_reason(result: &Result<Value, CallError>) -> String {
        match result {
            Err(CallError::Unknown(why)) => why.clone(),
            other => panic!("expected an unknown outcome, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_is_unknown_whatever_its_status() {
        let big = vec![b' '; 11 * 1024 * 1024];
        for status in [200, 404, 429] {
            let template =
                ResponseTemplate::new(status).set_body_raw(big.clone(), "application/json");
            let (result, exchange) = answer(template).await;
            let why = unknown_reason(&result);
            assert!(why.contains("larger than"), "{status}: {why}");
            assert_eq!(exchange.status, Some(status));
        }
    }

    #[tokio::test]
    async fn an_answer_over_the_cap_without_a_length_stops_being_read() {
        let mut raw =
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n["
                .to_vec();
        raw.extend(std::iter::repeat_n(b'1', 11 * 1024 * 1024));
        let url = raw_server(raw).await;
        let (result, _) = client(&url).send("test", Method::GET, "/", &[], None).await;
        assert!(unknown_reason(&result).contains("larger than"));
    }

    #[tokio::test]
    async fn a_truncated_answer_is_unknown() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"rc\": 0, \"items\"".to_vec();
        let url = raw_server(raw).await;
        let (result, exchange) = client(&url).send("test", Method::GET, "/", &[], None).await;
        assert!(unknown_reason(&result).contains("reading the body"));
        assert_eq!(exchange.status, Some(200));
    }

    #[tokio::test]
    async fn a_2xx_that_is_not_json_is_unknown() {
        let html = ResponseTemplate::new(200)
            .set_body_raw(r#"{"rc": 0, "items": [{"finalstatus": 0}]}"#, "text/html");
        assert!(unknown_reason(&answer(html).await.0).contains("Content-Type"));
        let malformed =
            ResponseTemplate::new(200).set_body_raw(r#"{"rc": 0, "items": [{"#, "application/json");
        assert!(unknown_reason(&answer(malformed).await.0).contains("without a JSON body"));
        let null = ResponseTemplate::new(201).set_body_raw("null", "application/json");
        assert!(matches!(answer(null).await.0, Err(CallError::Unknown(_))));
    }

    #[tokio::test]
    async fn json_media_types_are_read() {
        for media in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
            "application/vnd.electrum.suv+json;v=1",
        ] {
            let t = ResponseTemplate::new(200).set_body_raw(r#"{"rc": 0}"#, media);
            assert_eq!(
                answer(t).await.0.unwrap(),
                serde_json::json!({"rc": 0}),
                "{media}"
            );
        }
    }

    #[test]
    fn only_json_media_types_are_json() {
        let of = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::CONTENT_TYPE, v.parse().unwrap());
            declared_json(&h)
        };
        assert_eq!(declared_json(&reqwest::header::HeaderMap::new()), None);
        for yes in [
            "application/json",
            "application/ld+json",
            " application/json ;q=1",
        ] {
            assert_eq!(of(yes), Some(true), "{yes}");
        }
        for no in [
            "text/html",
            "text/json",
            "text/plain",
            "application/jsonp",
            "+json",
            "json",
            "",
        ] {
            assert_eq!(of(no), Some(false), "{no}");
        }
    }

    /// A 2xx with JSON of the wrong shape passes the HTTP path (it is JSON); each provider's
    /// mapping then refuses to see a success in it.
    #[tokio::test]
    async fn a_2xx_of_the_wrong_shape_is_never_a_success() {
        use crate::command::Status;
        use crate::providers::csq::mapping::{Decision, PurchaseRef, purchase_decision};
        use crate::providers::electrum::mapping::financial_step;
        let reference = PurchaseRef {
            terminal_id: 1,
            operator_id: 1001,
            local_reference: 7,
            product_id: None,
        };
        for body in [
            r#"[{"finalstatus": 0}]"#,
            r#""sold""#,
            r#"{"rc": "0", "items": [{"finalstatus": 0}]}"#,
            r#"{"rc": 0, "items": {"finalstatus": 0}}"#,
            r#"{"voucher": "1234"}"#,
        ] {
            let t = ResponseTemplate::new(200).set_body_raw(body, "application/json");
            let value = answer(t).await.0.expect("JSON is read");
            assert!(
                !matches!(
                    purchase_decision(&value, reference),
                    Decision::Final {
                        status: Status::Succeeded,
                        ..
                    }
                ),
                "CSQ: {body}"
            );
            let step = financial_step(Ok(value), uuid::Uuid::now_v7());
            assert!(
                matches!(step, crate::providers::Step::Unknown(_)),
                "Electrum: {body}: {step:?}"
            );
        }
    }
}
