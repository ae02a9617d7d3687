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

use crate::config::HttpLimits;
use crate::mask::mask_json;
use crate::ratelimit::ProviderLimit;

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
        let mut exchange = Exchange {
            provider: self.name,
            operation,
            method: method.to_string(),
            url: url.clone(),
            request: Value::Object(recorded),
            status: None,
            response: None,
            latency: Duration::ZERO,
            error: None,
        };

        // The wait for a free slot is bounded: the caller's lease on the transaction is
        // running, and a request sent after the lease ran out could overtake the reversal
        // or resolution another worker started meanwhile. Past the bound, nothing is sent
        // (and no rate-limit slot is taken).
        let queued_at = Instant::now();
        let permit = tokio::time::timeout(self.max_queue_wait, self.in_flight.acquire()).await;
        let left = self.max_queue_wait.saturating_sub(queued_at.elapsed());
        let refusal = match &permit {
            // Closed only if the process is shutting down.
            Ok(Err(_)) => Some("provider client closed".to_string()),
            Ok(Ok(_)) if self.limit.wait_turn(left).await => None,
            _ => {
                metrics::counter!("voucher_send_slot_timeouts_total", "provider" => self.name)
                    .increment(1);
                Some(format!(
                    "no send slot within {} ms (rate limit or concurrency cap)",
                    self.max_queue_wait.as_millis()
                ))
            }
        };
        if let Some(why) = refusal {
            let err = CallError::NotSent(why);
            exchange.error = Some(err.to_string());
            return (Err(err), exchange);
        }
        let _permit = permit;

        let mut target = match reqwest::Url::parse(&url) {
            Ok(u) => u,
            Err(e) => {
                let err = CallError::NotSent(format!("bad URL: {e}"));
                exchange.error = Some(err.to_string());
                return (Err(err), exchange);
            }
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
        metrics::histogram!("voucher_provider_latency_seconds", "provider" => self.name, "operation" => operation)
            .record(exchange.latency.as_secs_f64());
        match &result {
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
        let outcome = match &result {
            Ok(_) => "ok",
            Err((_, CallError::NotSent(_))) => "not_sent",
            Err((_, CallError::Unknown(_))) => "unknown",
            Err((_, CallError::Refused { .. })) => "refused",
        };
        metrics::counter!("voucher_provider_calls_total", "provider" => self.name, "operation" => operation, "result" => outcome).increment(1);
        (result.map(|(_, v)| v).map_err(|(_, e)| e), exchange)
    }

    async fn finish(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(u16, Value), (Option<u16>, CallError)> {
        let response = request.send().await.map_err(|e| (None, classify(e)))?;
        let status = response.status();
        let code = status.as_u16();
        let bytes = response.bytes().await.map_err(|e| {
            (
                Some(code),
                CallError::Unknown(format!("reading the body: {}", e.without_url())),
            )
        })?;
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            if body.is_null() {
                // A 2xx we cannot read may still have bought the voucher.
                return Err((
                    Some(code),
                    CallError::Unknown("2xx answer without a JSON body".into()),
                ));
            }
            Ok((code, body))
        } else if status == StatusCode::TOO_MANY_REQUESTS {
            Err((
                Some(code),
                CallError::NotSent("429 Too Many Requests".into()),
            ))
        } else if status.is_server_error() {
            Err((Some(code), CallError::Unknown(format!("HTTP {code}"))))
        } else {
            Err((Some(code), CallError::Refused { status: code, body }))
        }
    }
}

/// Connection failures happen before the request leaves; anything later may have been
/// applied by the provider.
///
/// The URL is dropped from the message: its query may hold a voucher code, and the message
/// reaches logs, the exchange record and outcomes.
fn classify(e: reqwest::Error) -> CallError {
    let e = e.without_url();
    if e.is_connect() || e.is_builder() {
        CallError::NotSent(format!("connecting: {e}"))
    } else if e.is_timeout() {
        CallError::Unknown(TIMED_OUT.into())
    } else {
        CallError::Unknown(format!("transport: {e}"))
    }
}
