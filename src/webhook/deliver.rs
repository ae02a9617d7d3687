//! One signed callback POST and what its answer means.

use std::time::Duration;

use super::SigningKey;

/// How one delivery attempt went.
#[derive(Debug, Clone, PartialEq)]
pub enum CallbackResult {
    /// 2xx: delivered.
    Delivered { status: u16 },
    /// Anything else: try again later, no sooner than `retry_after` if the receiver said so.
    Failed {
        status: Option<u16>,
        reason: String,
        retry_after: Option<Duration>,
    },
}

/// Signs and sends callbacks.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    key: SigningKey,
}

/// The longest `Retry-After` honoured; a receiver cannot park a callback for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

impl Deliverer {
    pub fn new(key: SigningKey, timeout: Duration) -> anyhow::Result<Deliverer> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect could point the signed body anywhere; receivers must give the final URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("voucher-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Deliverer { client, key })
    }

    /// POSTs `body` to `url`, signed with `msg_id` (the event id, stable across retries so
    /// receivers can deduplicate).
    pub async fn deliver(&self, url: &str, msg_id: &str, body: &[u8]) -> CallbackResult {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = self.key.sign(msg_id, timestamp, body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(resp) if resp.status().is_success() => CallbackResult::Delivered {
                status: resp.status().as_u16(),
            },
            Ok(resp) => {
                let retry_after = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
                CallbackResult::Failed {
                    status: Some(resp.status().as_u16()),
                    reason: format!("HTTP {}", resp.status().as_u16()),
                    retry_after,
                }
            }
            Err(e) => CallbackResult::Failed {
                status: None,
                reason: if e.is_timeout() {
                    "timed out".into()
                } else if e.is_connect() {
                    "connection failed".into()
                } else {
                    "transport error".into()
                },
                retry_after: None,
            },
        }
    }
}
