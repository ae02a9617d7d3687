//! RabbitMQ: connection, topology, the confirmed publisher and the consume loop, each
//! written once.

pub mod consume;
pub mod publisher;
pub mod reply;
pub mod topology;

pub use consume::consume;
pub use publisher::Publisher;

use lapin::{Connection, ConnectionProperties};

/// Why the broker could not be reached, worded for the person at the terminal.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach RabbitMQ at {target}: {reason}.\n  Start it with: rabbitmq-server -detached\n  (or `docker compose up -d rabbitmq`), or point AMQP_URL elsewhere."
)]
pub struct ConnectError {
    pub target: String,
    pub reason: String,
}

/// `host:port/vhost` of an AMQP URL, without credentials.
pub fn describe(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.to_string()
}

/// Opens one connection, named so operators can see it in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let attempt = Connection::connect(url, props);
    match tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ConnectError {
            target: describe(url),
            reason: e.to_string(),
        }),
        Err(_) => Err(ConnectError {
            target: describe(url),
            reason: "no answer within 10 s".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn describe_hides_credentials() {
        assert_eq!(
            super::describe("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "127.0.0.1:5672/%2f"
        );
    }
}
