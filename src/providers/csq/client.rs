//! The CSQ eVSB client: builds each request and sends it through the shared provider path.

use reqwest::Method;
use serde_json::Value;

use super::auth;
use super::params::PurchaseParams;
use crate::config::Config;
use crate::providers::{CallError, Exchange, ProviderHttp};

/// Talks to one CSQ endpoint with the configured credentials.
#[derive(Clone)]
pub struct CsqClient {
    http: ProviderHttp,
    user: String,
    password: String,
}

impl CsqClient {
    pub fn new(config: &Config) -> anyhow::Result<CsqClient> {
        let cfg = &config.providers.csq;
        Ok(CsqClient {
            http: ProviderHttp::new("csq", cfg)?,
            user: config.credential(&cfg.user_env).to_string(),
            password: config.credential(&cfg.password_env).to_string(),
        })
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
        let headers = auth::headers(&self.user, &self.password, chrono::Utc::now().timestamp());
        self.http
            .send("purchase", Method::POST, &path, &headers, Some(&body))
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
        let headers = auth::headers(&self.user, &self.password, chrono::Utc::now().timestamp());
        self.http
            .send("additional_data", Method::GET, &path, &headers, None)
            .await
    }
}
