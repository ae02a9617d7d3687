//! The CSQ eVSB client: builds each request and sends it through the shared provider path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::Value;

use super::auth;
use super::config::CsqConfig;
use super::params::PurchaseParams;
use crate::providers::{CallError, Exchange, ProviderHttp};

/// Talks to one CSQ endpoint with the configured credentials.
#[derive(Clone)]
pub struct CsqClient {
    http: ProviderHttp,
    user: String,
    password: String,
    /// Raffle operators: their sales wait for a draw.
    raffle_operators: Vec<i32>,
    products_ttl: Duration,
    products: Arc<Mutex<ProductCache>>,
}

/// Most operators whose product lists are cached at once.
const MAX_CACHED: usize = 1024;

/// Operator -> (fetched at, product list, or `None` for "no dynamic products").
type ProductCache = HashMap<i32, (Instant, Option<Value>)>;

/// An operator's dynamic products, as the cache holds them.
#[derive(Debug, Clone, PartialEq)]
pub enum Products {
    /// 404: the operator sells fixed products only.
    NoneDynamic,
    /// The list (`items` of the answer).
    List(Value),
}

impl CsqClient {
    /// The rate limit of this provider's requests.
    pub fn rate_limit(&self) -> std::sync::Arc<crate::ratelimit::ProviderLimit> {
        self.http.rate_limit()
    }

    /// A client with the credentials `credential` finds in the variables `cfg` names;
    /// `pool` makes its rate limit global across processes.
    pub fn new(
        cfg: &CsqConfig,
        credential: &dyn Fn(&str) -> String,
        pool: Option<deadpool_postgres::Pool>,
    ) -> anyhow::Result<CsqClient> {
        Ok(CsqClient {
            http: ProviderHttp::new(super::NAME, &cfg.http.base_url, &cfg.http.limits(), pool)?,
            user: credential(&cfg.user_env),
            password: credential(&cfg.password_env),
            raffle_operators: cfg.raffle_operators.clone(),
            products_ttl: Duration::from_millis(cfg.products_cache_ms),
            products: Arc::default(),
        })
    }

    /// True for operators whose sales are raffle tickets.
    pub fn is_raffle(&self, operator_id: i32) -> bool {
        self.raffle_operators.contains(&operator_id)
    }

    fn headers(&self) -> [(&'static str, String); 3] {
        auth::headers(&self.user, &self.password, chrono::Utc::now().timestamp())
    }

    /// `GET /pre-paid/vouchers/products/{terminalId}/{operatorId}`, cached per operator for
    /// `products_cache_ms`. Returns the exchange only when the provider was asked.
    pub async fn products(
        &self,
        terminal_id: i32,
        operator_id: i32,
    ) -> (Result<Products, CallError>, Option<Exchange>) {
        let cached = self
            .products
            .lock()
            .ok()
            .and_then(|c| c.get(&operator_id).cloned())
            .filter(|(at, _)| at.elapsed() < self.products_ttl);
        if let Some((_, list)) = cached {
            return (Ok(list.map_or(Products::NoneDynamic, Products::List)), None);
        }
        let path = format!("/pre-paid/vouchers/products/{terminal_id}/{operator_id}");
        let (answer, exchange) = self
            .http
            .send("products", Method::GET, &path, &self.headers(), None)
            .await;
        let result = match answer {
            // A list that cannot be read is never cached: the next purchase asks again.
            Ok(v) => super::mapping::products_list(&v)
                .map(Some)
                .map_err(CallError::Unknown),
            Err(CallError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        };
        if let (Ok(list), Ok(mut cache)) = (&result, self.products.lock()) {
            // Keyed by what callers send: drop stale entries, and never hold more than
            // MAX_CACHED operators.
            cache.retain(|_, (at, _)| at.elapsed() < self.products_ttl);
            if cache.len() >= MAX_CACHED {
                cache.clear();
            }
            cache.insert(operator_id, (Instant::now(), list.clone()));
        }
        (
            result.map(|l| l.map_or(Products::NoneDynamic, Products::List)),
            Some(exchange),
        )
    }

    /// `GET /pre-paid/vouchers/finished/{terminalId}/{operatorId}/{localReference}`: the
    /// deferred result of a raffle ticket.
    pub async fn finished(
        &self,
        terminal_id: i32,
        operator_id: i32,
        local_reference: i32,
    ) -> (Result<Value, CallError>, Exchange) {
        let path =
            format!("/pre-paid/vouchers/finished/{terminal_id}/{operator_id}/{local_reference}");
        self.http
            .send("finished", Method::GET, &path, &self.headers(), None)
            .await
    }

    /// `GET /utils/balances/{terminalId}`. The texts we hold list "Balances" under Utils
    /// without a schema; the path and the `items` of `{currency, balanceX100}` are our reading.
    pub async fn balance(&self, terminal_id: i32) -> (Result<Value, CallError>, Exchange) {
        let path = format!("/utils/balances/{terminal_id}");
        self.http
            .send("balance", Method::GET, &path, &self.headers(), None)
            .await
    }

    /// `GET /ping`: is the endpoint up.
    pub async fn ping(&self) -> (Result<Value, CallError>, Exchange) {
        self.http
            .send("ping", Method::GET, "/ping", &[], None)
            .await
    }

    /// `POST /pre-paid/vouchers/purchase/{terminalId}/{operatorId}/{localReference}`.
    ///
    /// `localDateTime` is filled with the send time when the command did not give one: CSQ
    /// uses it to match the purchase with the point of sale's own records.
    pub async fn purchase(
        &self,
        params: &PurchaseParams,
        local_reference: i32,
    ) -> (Result<Value, CallError>, Exchange) {
        let mut body = params.body.clone();
        if body.local_date_time.is_none() {
            body.local_date_time =
                Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        let body = serde_json::to_value(&body).unwrap_or(Value::Null);
        let path = format!(
            "/pre-paid/vouchers/purchase/{}/{}/{}",
            params.terminal_id, params.operator_id, local_reference
        );
        self.http
            .send(
                "purchase",
                Method::POST,
                &path,
                &self.headers(),
                Some(&body),
            )
            .await
    }

    /// `GET /pre-paid/vouchers/additional-data/{terminalId}/{operatorId}/{localReference}`.
    ///
    /// Also how an unknown purchase is resolved: it is the one CSQ endpoint keyed by our
    /// `localReference`, and it answers 404 for a reference that was never sold.
    pub async fn additional_data(
        &self,
        terminal_id: i32,
        operator_id: i32,
        local_reference: i32,
    ) -> (Result<Value, CallError>, Exchange) {
        let path = format!(
            "/pre-paid/vouchers/additional-data/{terminal_id}/{operator_id}/{local_reference}"
        );
        self.http
            .send("additional_data", Method::GET, &path, &self.headers(), None)
            .await
    }
}
