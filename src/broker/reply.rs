//! A private reply queue: exclusive, deleted with its connection, consumed at once.
//! What a producer uses to receive outcomes through the AMQP `reply_to` property.

use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

/// A reply queue and its consumer.
pub struct ReplyQueue {
    // Kept so the channel lives as long as the consumer.
    _channel: Channel,
    pub name: String,
    consumer: Consumer,
}

impl ReplyQueue {
    /// Declares a server-named exclusive queue on `conn` and starts consuming it.
    pub async fn open(conn: &Connection) -> anyhow::Result<ReplyQueue> {
        let channel = conn.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(ReplyQueue {
            _channel: channel,
            name: queue.name().to_string(),
            consumer,
        })
    }

    /// The next reply, or `None` if the queue was closed.
    pub async fn next(&mut self) -> Option<Delivery> {
        match self.consumer.next().await {
            Some(Ok(d)) => Some(d),
            _ => None,
        }
    }
}
