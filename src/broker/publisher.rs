//! The confirmed publisher: a publish counts only once the broker has confirmed it.

use std::time::Duration;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::AMQPValue;
use std::sync::Arc;

use lapin::{BasicProperties, Channel, Connection};
use tokio::sync::Mutex;

use crate::error::{RelayError, Result};

/// How long a broker confirm may take before the publish counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes with publisher confirms. Owns its connection and opens it again after the
/// broker went away, so a broker restart delays publishes instead of breaking them. Cheap
/// to clone; clones share the connection.
#[derive(Clone)]
pub struct Publisher {
    url: Arc<str>,
    open: Arc<Mutex<Option<(Connection, Channel)>>>,
}

impl Publisher {
    /// Connects and opens a channel in confirm mode.
    pub async fn connect(url: &str) -> anyhow::Result<Publisher> {
        let p = Publisher {
            url: url.into(),
            open: Arc::new(Mutex::new(None)),
        };
        p.channel().await?;
        Ok(p)
    }

    /// The open confirm channel, reconnecting if it is gone.
    async fn channel(&self) -> Result<Channel> {
        let mut open = self.open.lock().await;
        if let Some((_, ch)) = open.as_ref() {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        if let Some((conn, _)) = open.take() {
            let _ = conn.close(200, "reconnecting".into()).await;
        }
        let conn = super::connect(&self.url, "voucher-relay publisher")
            .await
            .map_err(|e| RelayError::NotConfirmed(e.to_string()))?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *open = Some((conn, ch.clone()));
        Ok(ch)
    }

    /// Whether the broker answers: the confirm channel is open, or can be opened again.
    pub async fn ready(&self) -> Result<()> {
        self.channel().await.map(|_| ())
    }

    /// Closes the connection.
    pub async fn close(&self) {
        if let Some((conn, _)) = self.open.lock().await.take() {
            let _ = conn.close(200, "shutting down".into()).await;
        }
    }

    /// Publishes and waits for the broker's confirm. A message no queue takes is fine here
    /// (an event nobody subscribed to).
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        self.send(exchange, routing_key, body, properties, false)
            .await
    }

    /// Publishes, waits for the confirm, and fails if no queue took the message: for work
    /// that must arrive somewhere (delay tiers, `voucher.rejected`, poll wake-ups).
    pub async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<()> {
        self.send(exchange, routing_key, body, properties, true)
            .await
    }

    async fn send(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
        mandatory: bool,
    ) -> Result<()> {
        let channel = self.channel().await?;
        let confirm = async {
            let pending = channel
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions {
                        mandatory,
                        ..Default::default()
                    },
                    body,
                    properties,
                )
                .await?;
            pending.await
        };
        let target = format!("{exchange}/{routing_key}");
        match tokio::time::timeout(CONFIRM_TIMEOUT, confirm).await {
            Ok(Ok(c)) if c.is_ack() => match c.take_message() {
                // Confirmed, but returned: no queue is bound for it.
                Some(_) => Err(RelayError::Unroutable(target)),
                None => Ok(()),
            },
            Ok(Ok(_)) => Err(RelayError::NotConfirmed(target)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(RelayError::Timeout("publisher confirm")),
        }
    }
}

/// Properties for a persistent JSON message.
pub fn json_properties() -> BasicProperties {
    BasicProperties::default()
        .with_content_type("application/json".into())
        .with_delivery_mode(2)
}

/// Adds a string header to a property set.
pub fn with_header(props: BasicProperties, key: &str, value: &str) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(key.into(), AMQPValue::LongString(value.into()));
    props.with_headers(headers)
}
