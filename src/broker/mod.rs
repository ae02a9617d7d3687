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
pub enum ConnectError {
    /// Nothing answered: the broker is stopped, or the URL points elsewhere.
    #[error(
        "cannot reach RabbitMQ at {target}: {reason}.\n  Start it with: rabbitmq-server -detached\n  (or `docker compose up -d rabbitmq`), or point AMQP_URL elsewhere."
    )]
    Unreachable { target: String, reason: String },
    /// The broker answered and refused the login (ACCESS_REFUSED): a wrong user or password.
    #[error(
        "RabbitMQ at {target} refused authentication as user {user:?}: {reason}. Check the user and password in AMQP_URL (or broker.url)."
    )]
    AuthFailed {
        target: String,
        user: String,
        reason: String,
    },
    /// The broker answered and refused the connection for another reason, such as a virtual
    /// host that does not exist or that the user may not use.
    #[error(
        "RabbitMQ at {target} refused the connection: {reason}. Check the virtual host in AMQP_URL and the user's permissions on it."
    )]
    Refused { target: String, reason: String },
}

impl ConnectError {
    /// Names a failed connection attempt by what happened: the broker's own reason when it
    /// answered, the way to start it when it did not.
    fn from_lapin(url: &str, e: &lapin::Error) -> ConnectError {
        let target = describe(url);
        match e.kind() {
            lapin::ErrorKind::ProtocolError(amqp) if amqp.get_id() == ACCESS_REFUSED => {
                ConnectError::AuthFailed {
                    target,
                    user: user(url),
                    reason: server_reason(amqp),
                }
            }
            lapin::ErrorKind::AuthProviderError(reason) => ConnectError::AuthFailed {
                target,
                user: user(url),
                reason: reason.clone(),
            },
            lapin::ErrorKind::ProtocolError(amqp) => ConnectError::Refused {
                target,
                reason: server_reason(amqp),
            },
            _ => ConnectError::Unreachable {
                target,
                reason: e.to_string(),
            },
        }
    }
}

/// The broker's reply text, without the full stop the sentence around it adds.
fn server_reason(amqp: &lapin::protocol::AMQPError) -> String {
    amqp.get_message()
        .to_string()
        .trim_end_matches('.')
        .to_string()
}

/// The AMQP reply code of ACCESS_REFUSED, which a refused login gets.
const ACCESS_REFUSED: u16 = 403;

/// `host:port/vhost` of an AMQP URL, without credentials.
pub fn describe(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.to_string()
}

/// The user name of an AMQP URL (the default `guest` when it names none); never the password.
fn user(url: &str) -> String {
    url.parse::<lapin::uri::AMQPUri>()
        .map(|u| u.authority.userinfo.username)
        .unwrap_or_else(|_| "(unparseable AMQP_URL)".into())
}

/// Opens one connection, named so operators can see it in the management UI.
pub async fn connect(url: &str, name: &str) -> Result<Connection, ConnectError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let attempt = Connection::connect(url, props);
    match tokio::time::timeout(std::time::Duration::from_secs(10), attempt).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(ConnectError::from_lapin(url, &e)),
        Err(_) => Err(ConnectError::Unreachable {
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

    #[test]
    fn user_names_the_user_only() {
        assert_eq!(
            super::user("amqp://relay:s3cret@127.0.0.1:5672/%2f"),
            "relay"
        );
        assert_eq!(super::user("amqp://127.0.0.1:5672/%2f"), "guest");
    }
}
