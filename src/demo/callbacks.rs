//! The demo's callback receiver: an HTTP server on a free port, standing in for a merchant
//! backend, that checks the Standard Webhooks signature of every callback it gets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use tokio::task::JoinHandle;

use crate::command::{Outcome, Status};
use crate::config::Config;
use crate::webhook::{SigningKey, SigningKeys};

/// Callbacks received, by verified signature.
#[derive(Default)]
struct Received {
    verified: Vec<Outcome>,
    /// When each verified callback arrived, by command id (for the bench's latencies).
    arrived: Vec<(String, std::time::Instant)>,
    bad_signatures: usize,
}

type Inbox = Arc<Mutex<Received>>;

/// What the receiver got: verified callbacks, split into progress events and terminal
/// outcomes, and how many callbacks failed the signature check.
pub(super) struct Callbacks {
    pub(super) progress: Vec<Outcome>,
    pub(super) terminal: Vec<Outcome>,
    pub(super) bad_signatures: usize,
}

/// A running callback receiver.
pub(super) struct CallbackReceiver {
    /// Where commands send their callbacks.
    pub(super) url: String,
    inbox: Inbox,
    task: JoinHandle<std::io::Result<()>>,
}

impl CallbackReceiver {
    /// Starts the receiver on a free port, verifying with the config's signing secret.
    pub(super) async fn start(config: &Config) -> anyhow::Result<CallbackReceiver> {
        let inbox: Inbox = Arc::default();
        // The receiver checks the current secret, as a receiver that already moved would.
        let key = SigningKeys::parse(&config.secrets.webhook_signing_secret)
            .map_err(|e| anyhow::anyhow!("WEBHOOK_SIGNING_SECRET: {e}"))?
            .current()
            .clone();
        let hook_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hooks/vouchers", hook_listener.local_addr()?);
        let hook_app = Router::new()
            .route("/hooks/vouchers", post(receive))
            .with_state((key, inbox.clone()));
        let task = tokio::spawn(async move { axum::serve(hook_listener, hook_app).await });
        Ok(CallbackReceiver { url, inbox, task })
    }

    /// Waits until `expected` terminal callbacks have arrived, until `deadline` at most.
    pub(super) async fn wait_for_terminal(&self, expected: usize, deadline: tokio::time::Instant) {
        let terminal = |r: &Received| {
            r.verified
                .iter()
                .filter(|o| o.status != Status::Pending)
                .count()
        };
        let arrived = || self.inbox.lock().map(|r| terminal(&r)).unwrap_or(0);
        if arrived() < expected {
            eprintln!("waiting for {} more callbacks…", expected - arrived());
        }
        while arrived() < expected && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Takes the arrival times noted so far, by command id.
    pub(super) fn take_arrivals(&self) -> Vec<(String, std::time::Instant)> {
        self.inbox
            .lock()
            .map(|mut r| std::mem::take(&mut r.arrived))
            .unwrap_or_default()
    }

    /// Callbacks that failed the signature check so far.
    pub(super) fn bad_signatures(&self) -> usize {
        self.inbox.lock().map(|r| r.bad_signatures).unwrap_or(0)
    }

    /// Stops the server and answers what it received.
    pub(super) fn stop(self) -> Callbacks {
        self.task.abort();
        let received = self
            .inbox
            .lock()
            .map(|r| (r.verified.clone(), r.bad_signatures))
            .unwrap_or_default();
        let (progress, terminal): (Vec<Outcome>, Vec<Outcome>) = received
            .0
            .into_iter()
            .partition(|o| o.status == Status::Pending);
        Callbacks {
            progress,
            terminal,
            bad_signatures: received.1,
        }
    }
}

/// `POST /hooks/vouchers`: keeps a callback whose signature verifies and is fresh, and
/// counts the others.
async fn receive(
    State((key, inbox)): State<(SigningKey, Inbox)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let ts = h("webhook-timestamp").parse::<i64>().unwrap_or(0);
    let fresh = (chrono::Utc::now().timestamp() - ts).abs() <= 300;
    let ok = fresh && key.verify(&h("webhook-id"), ts, &body, &h("webhook-signature"));
    let Ok(mut inbox) = inbox.lock() else {
        return StatusCode::INTERNAL_SERVER_ERROR;
    };
    match serde_json::from_slice::<Outcome>(&body) {
        Ok(o) if ok && o.event_id == h("webhook-id") => {
            let command_id = o.command_id.clone().unwrap_or_default();
            inbox.arrived.push((command_id, std::time::Instant::now()));
            inbox.verified.push(o);
            StatusCode::NO_CONTENT
        }
        _ => {
            inbox.bad_signatures += 1;
            StatusCode::UNAUTHORIZED
        }
    }
}
