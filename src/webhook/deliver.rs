//! One signed callback POST and what its answer means.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::SigningKeys;
use super::guard::{self, AllowList, GuardedResolver};

/// The most of a receiver's answer that is kept in the attempt log.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

/// The shortest pause a `Retry-After` makes.
const MIN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What an attempt means for the delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 429 or 503 with `Retry-After`: every delivery to this destination waits that long. The
    /// delivery's own schedule does not advance: the receiver asked us to wait, it did not fail.
    Throttled(Duration),
    /// 410 Gone: the URL is disabled until an operator enables it.
    Gone,
    /// The URL, or every address it resolves to, is not allowed: dead at once, never retried.
    Refused(String),
    /// Anything else (a 3xx included: redirects are never followed): the schedule's next wait.
    Failed,
}

/// One attempt, as the attempt log records it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub verdict: Verdict,
    pub at: DateTime<Utc>,
    pub status: Option<u16>,
    /// The address the connection was made to.
    pub dialled_ip: Option<IpAddr>,
    pub latency: Duration,
    /// Why it did not count as delivered, in a few words.
    pub error: Option<String>,
    /// The receiver's answer, cut at [`MAX_RESPONSE_BYTES`].
    pub response_body: Option<String>,
}

impl Attempt {
    /// The verdict as the attempt log and the metrics name it.
    pub fn result(&self) -> &'static str {
        match self.verdict {
            Verdict::Delivered => "delivered",
            Verdict::Throttled(_) => "throttled",
            Verdict::Gone => "gone",
            Verdict::Refused(_) => "refused",
            Verdict::Failed => "failed",
        }
    }

    /// The short reason kept as the delivery's last error.
    pub fn reason(&self) -> String {
        self.error.clone().unwrap_or_else(|| match self.status {
            Some(status) => format!("HTTP {status}"),
            None => self.result().to_string(),
        })
    }
}

/// Signs and sends callbacks, through the SSRF guard.
#[derive(Clone)]
pub struct Deliverer {
    client: reqwest::Client,
    keys: SigningKeys,
    allow: Arc<AllowList>,
    /// The longest `Retry-After` honoured (the schedule's longest step): a receiver cannot
    /// park deliveries for days.
    max_retry_after: Duration,
}

impl Deliverer {
    pub fn new(
        keys: SigningKeys,
        timeout: Duration,
        allow: AllowList,
        max_retry_after: Duration,
    ) -> anyhow::Result<Deliverer> {
        let allow = Arc::new(allow);
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            // A redirect could point the signed body anywhere, the internal network included;
            // receivers must give the final URL.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would dial the receiver itself, out of the guard's sight.
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                allow: allow.clone(),
            }))
            .user_agent(concat!("voucher-relay/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Deliverer {
            client,
            keys,
            allow,
            max_retry_after,
        })
    }

    /// POSTs `body` to `url`, signed with `msg_id` (the event id, stable across attempts so
    /// receivers can deduplicate) and the time of this attempt (so receivers with a 5-minute
    /// tolerance accept late retries).
    pub async fn deliver(&self, url: &str, msg_id: &str, body: &[u8]) -> Attempt {
        let at = Utc::now();
        let started = Instant::now();
        let mut attempt = Attempt {
            verdict: Verdict::Failed,
            at,
            status: None,
            dialled_ip: None,
            latency: Duration::ZERO,
            error: None,
            response_body: None,
        };
        let parsed = match guard::check_url(url, &self.allow) {
            Ok(parsed) => parsed,
            Err(refused) => {
                attempt.error = Some(refused.to_string());
                attempt.verdict = Verdict::Refused(refused.0);
                return attempt;
            }
        };
        let timestamp = at.timestamp();
        let sent = self
            .client
            .post(parsed)
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", self.keys.sign(msg_id, timestamp, body))
            .body(body.to_vec())
            .send()
            .await;
        match sent {
            Ok(resp) => self.judge(resp, &mut attempt).await,
            Err(e) => {
                if let Some(refused) = guard::refusal_in(&e) {
                    attempt.error = Some(refused.to_string());
                    attempt.verdict = Verdict::Refused(refused.0);
                } else {
                    attempt.error = Some(transport_reason(&e).into());
                }
            }
        }
        attempt.latency = started.elapsed();
        attempt
    }

    async fn judge(&self, mut resp: reqwest::Response, attempt: &mut Attempt) {
        let status = resp.status().as_u16();
        attempt.status = Some(status);
        attempt.dialled_ip = resp.remote_addr().map(|a| a.ip());
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, Utc::now()));
        attempt.verdict = match status {
            200..=299 => Verdict::Delivered,
            410 => Verdict::Gone,
            // At least a second, so `Retry-After: 0` cannot make a tight loop; at most the
            // schedule's longest step.
            429 | 503 => match retry_after {
                Some(wait) => {
                    Verdict::Throttled(wait.max(MIN_RETRY_AFTER).min(self.max_retry_after))
                }
                None => Verdict::Failed,
            },
            _ => Verdict::Failed,
        };
        attempt.response_body = read_capped(&mut resp).await;
    }
}

/// A transport failure in a few words, never the URL (it may carry a token).
fn transport_reason(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "transport error"
    }
}

/// Reads at most [`MAX_RESPONSE_BYTES`] of the body; the rest is never read.
async fn read_capped(resp: &mut reqwest::Response) -> Option<String> {
    let mut kept = Vec::new();
    while kept.len() < MAX_RESPONSE_BYTES {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - kept.len();
                kept.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    // PostgreSQL text cannot hold NUL: a receiver's NUL must not make the attempt unrecordable.
    (!kept.is_empty()).then(|| String::from_utf8_lossy(&kept).replace('\0', "\u{FFFD}"))
}

/// `Retry-After` as a wait from `now`: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let when = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (when.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_retry_after_in_both_forms() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 12:01:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        // A date in the past means now.
        assert_eq!(
            parse_retry_after("Thu, 03 Dec 2026 11:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }

    /// The resolver path end to end: a host name (not `localhost`, which `check_url` already
    /// refuses) that the system resolves to loopback must be refused inside reqwest, and the
    /// refusal found in its error. The machine's own name resolves from /etc/hosts; the test
    /// goes on only if every address it gives is loopback, so no packet can leave.
    #[tokio::test]
    async fn a_name_resolving_to_loopback_is_refused_at_connect_time() {
        let Ok(name) = std::fs::read_to_string("/proc/sys/kernel/hostname") else {
            return;
        };
        let name = name.trim().to_string();
        let addrs: Vec<std::net::SocketAddr> =
            match tokio::net::lookup_host((name.as_str(), 9)).await {
                Ok(a) => a.collect(),
                Err(_) => return,
            };
        if addrs.is_empty() || !addrs.iter().all(|a| a.ip().is_loopback()) {
            eprintln!("skipped: {name} does not resolve to loopback only");
            return;
        }
        let keys = SigningKeys::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let deliverer = Deliverer::new(
            keys,
            Duration::from_secs(2),
            AllowList::default(),
            Duration::from_secs(60),
        )
        .unwrap();
        let attempt = deliverer
            .deliver(&format!("http://{name}:9/hooks"), "msg_1", b"{}")
            .await;
        match attempt.verdict {
            Verdict::Refused(why) => assert!(why.contains("loopback"), "{why}"),
            other => panic!(
                "{name} must be refused, got {other:?} ({:?})",
                attempt.error
            ),
        }
        assert_eq!(attempt.dialled_ip, None, "nothing was dialled");
    }
}
