//! The consume loop: manual acks, a prefetch, one task per delivery, graceful stop.

use std::future::Future;

use futures_util::StreamExt;
use lapin::Connection;
use lapin::message::Delivery;
use lapin::options::{BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;

/// Consumes `queue` until shutdown or a broker error, running `handle` for each delivery
/// with at most `prefetch` in flight. The handler owns the ack.
///
/// On shutdown it stops taking deliveries and waits for the handlers it started; deliveries
/// still unacked go back to the queue when the channel closes. Returns `Err` when the
/// connection or channel failed, so the caller can reconnect.
pub async fn consume<F, Fut>(
    conn: &Connection,
    queue: &str,
    prefetch: u16,
    mut shutdown: Shutdown,
    handle: F,
) -> anyhow::Result<()>
where
    F: Fn(Delivery) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut running = JoinSet::new();
    let result = loop {
        tokio::select! {
            _ = shutdown.wait() => break Ok(()),
            Some(done) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, queue, "a delivery handler panicked");
                }
            }
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    running.spawn(handle(delivery));
                }
                Some(Err(e)) => break Err(anyhow::Error::from(e)),
                None => break Err(anyhow::anyhow!("consumer on {queue} was cancelled by the broker")),
            },
        }
    };
    // Let the started handlers finish: they may be holding a provider answer that must be
    // recorded before their message is acked.
    while let Some(done) = running.join_next().await {
        if let Err(e) = done {
            tracing::error!(error = %e, queue, "a delivery handler panicked");
        }
    }
    let _ = channel.close(200, "shutting down".into()).await;
    result
}
