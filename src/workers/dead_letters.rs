//! Dead letters into PostgreSQL, so operators read them without touching a queue.
//!
//! Two writers, one row per death of a message (see [`crate::store::dlq::dead_letter_key`]):
//! - [`record_refused`]: the relay refuses a message (poison or final) and knows the error,
//!   so it records the message with its error just before the broker dead-letters it;
//! - [`copy_from_queue`]: the consumer of `voucher.dead` copies every message the broker
//!   dead-lettered (a delivery limit used up, or one the relay recorded already) and acks
//!   it only once the copy is committed.

use std::sync::Arc;

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable};

use super::shared::Shared;
use crate::error::RelayError;
use crate::retry::until_done;
use crate::store::dlq::{NewDeadLetter, dead_letter_key};

/// The most recent death a message carries in its `x-death` header: the queue, the
/// broker's reason, and how many times it died there for that reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Death {
    pub queue: String,
    /// The exchange it had been published to.
    pub exchange: String,
    pub reason: String,
    pub count: i64,
}

fn text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        _ => None,
    }
}

/// The `x-death` entries of `headers`, most recent first (as the broker orders them).
fn deaths(headers: Option<&FieldTable>) -> Vec<Death> {
    let Some(AMQPValue::FieldArray(list)) = headers.and_then(|h| h.inner().get("x-death")) else {
        return Vec::new();
    };
    list.as_slice()
        .iter()
        .filter_map(|entry| {
            let AMQPValue::FieldTable(t) = entry else {
                return None;
            };
            let t = t.inner();
            Some(Death {
                queue: t.get("queue").and_then(text)?,
                exchange: t.get("exchange").and_then(text).unwrap_or_default(),
                reason: t.get("reason").and_then(text)?,
                count: t.get("count").and_then(int).unwrap_or(1),
            })
        })
        .collect()
}

/// How many times the message was delivered, as far as its headers say.
fn deliveries(headers: Option<&FieldTable>, fallback: i64) -> i32 {
    headers
        .and_then(|h| h.inner().get("x-delivery-count"))
        .and_then(int)
        .map(|n| n + 1)
        .unwrap_or(fallback)
        .clamp(0, i64::from(i32::MAX)) as i32
}

fn reply_to(d: &Delivery) -> Option<&str> {
    d.properties.reply_to().as_ref().map(|s| s.as_str())
}

fn correlation_id(d: &Delivery) -> Option<&str> {
    d.properties.correlation_id().as_ref().map(|s| s.as_str())
}

/// The short reason operators see for a broker reason.
fn reason_of(broker_reason: &str) -> &str {
    match broker_reason {
        "delivery_limit" => "delivery_limit",
        "expired" => "expired",
        "maxlen" => "maxlen",
        "rejected" => "refused",
        _ => "unknown",
    }
}

/// Records a message the relay is about to dead-letter from `queue` (its broker name),
/// with the error that made it refuse it. Best effort: if it cannot be written, the copy
/// from `voucher.dead` still records the message, without the error.
pub async fn record_refused(shared: &Shared, queue: &str, delivery: &Delivery, error: &RelayError) {
    let headers = delivery.properties.headers().as_ref();
    // The broker records a nack as reason "rejected"; this death is the next one.
    let count = deaths(headers)
        .iter()
        .find(|d| d.queue == queue && d.reason == "rejected")
        .map_or(0, |d| d.count)
        + 1;
    let class = format!("{:?}", error.class()).to_lowercase();
    let error_text = error.to_string();
    let record = NewDeadLetter {
        message_key: dead_letter_key(queue, "rejected", count, &delivery.data),
        queue,
        exchange: delivery.exchange.as_str(),
        routing_key: delivery.routing_key.as_str(),
        reason: &class,
        attempts: deliveries(headers, 1),
        last_error: Some(&error_text),
        body: &delivery.data,
        reply_to: reply_to(delivery),
        correlation_id: correlation_id(delivery),
    };
    if let Err(e) = shared.store.record_dead_letter(&record).await {
        tracing::warn!(error = %e, "could not record the dead letter; its copy from the dead-letter queue will have no error");
    }
}

/// Handles one message of `voucher.dead`: copies it to PostgreSQL (once), then it is acked.
pub async fn copy_from_queue(
    shared: Arc<Shared>,
    delivery: Arc<Delivery>,
) -> Result<(), RelayError> {
    let headers = delivery.properties.headers().as_ref();
    let death = deaths(headers).into_iter().next();
    let (queue, exchange, broker_reason, count) = match &death {
        Some(d) => (
            d.queue.clone(),
            d.exchange.clone(),
            d.reason.clone(),
            d.count,
        ),
        // Published straight to the dead-letter exchange: nothing says where it came from.
        None => (String::new(), String::new(), String::new(), 1),
    };
    let record = NewDeadLetter {
        message_key: dead_letter_key(&queue, &broker_reason, count, &delivery.data),
        queue: &queue,
        exchange: &exchange,
        routing_key: delivery.routing_key.as_str(),
        reason: reason_of(&broker_reason),
        attempts: deliveries(headers, count),
        last_error: None,
        body: &delivery.data,
        reply_to: reply_to(&delivery),
        correlation_id: correlation_id(&delivery),
    };
    // Held unacked while PostgreSQL is away: `voucher.dead` has no dead-letter queue of its
    // own, so its delivery limit must not be spent on an outage.
    let new = until_done("record dead letter", || {
        shared.store.record_dead_letter(&record)
    })
    .await?;
    if new {
        metrics::counter!("voucher_dead_letters_recorded_total", "reason" => record.reason.to_owned())
            .increment(1);
        tracing::warn!(queue = %queue, reason = record.reason, "dead letter recorded (voucher-relay dlq show voucher.dead)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn death(queue: &str, reason: &str, count: i64) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("queue".into(), AMQPValue::LongString(queue.into()));
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert("count".into(), AMQPValue::LongLongInt(count));
        AMQPValue::FieldTable(t)
    }

    #[test]
    fn the_most_recent_death_comes_first() {
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![
                death("commands.csq", "delivery_limit", 1),
                death("delay.2s", "expired", 3),
            ])),
        );
        h.insert("x-delivery-count".into(), AMQPValue::LongInt(20));
        let d = deaths(Some(&h));
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            Death {
                queue: "commands.csq".into(),
                exchange: String::new(),
                reason: "delivery_limit".into(),
                count: 1
            }
        );
        assert_eq!(deliveries(Some(&h), 1), 21);
        assert_eq!(reason_of("rejected"), "refused");
    }

    #[test]
    fn no_headers_no_deaths() {
        assert!(deaths(None).is_empty());
        assert_eq!(deliveries(None, 4), 4);
        let mut h = FieldTable::default();
        h.insert("x-death".into(), AMQPValue::LongString("junk".into()));
        assert!(deaths(Some(&h)).is_empty());
    }

    #[test]
    fn the_relay_and_the_recorder_key_a_death_alike() {
        // The relay's record (before the nack) and the recorder's copy (after) must meet.
        let body = br#"{"command_id":"c1"}"#;
        assert_eq!(
            dead_letter_key("p.commands.csq", "rejected", 1, body),
            dead_letter_key("p.commands.csq", "rejected", 1, body)
        );
        assert_ne!(
            dead_letter_key("p.commands.csq", "rejected", 1, body),
            dead_letter_key("p.commands.csq", "rejected", 2, body)
        );
    }
}
