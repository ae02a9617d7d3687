//! What a CSQ poll asks and what its answer means: resolving an unknown purchase by its
//! `localReference`, waiting for a sale's additional data, and waiting for a raffle's draw.
//!
//! Also where a sale that has more to come becomes a wait, whether the sale was just
//! answered (`flows::purchase`) or found by resolving.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::CsqClient;
use super::config::CsqConfig;
use super::mapping::{Decision, PurchaseRef, purchase_decision};
use crate::command::Status;
use crate::providers::step::error;
use crate::providers::work::{PollJob, PollPlan, PollStep, WaitFor, Waiting};
use crate::providers::{CallError, Exchange, Step};

/// The outcome is unknown: ask about the `localReference`.
pub const RESOLVE: &str = "resolve";
/// Sold; fetch the additional data.
pub const ADDITIONAL_DATA: &str = "additional_data";
/// A raffle ticket; fetch the draw's result.
pub const FINISHED: &str = "finished";

/// The CSQ references of a polled purchase.
#[derive(Debug, Clone, Copy)]
struct Refs {
    terminal_id: i32,
    operator_id: i32,
    local_reference: i32,
}

fn refs_of(job: &PollJob) -> Option<Refs> {
    let refs = job.refs.as_ref()?;
    let int = |k: &str| refs[k].as_i64().and_then(|v| i32::try_from(v).ok());
    Some(Refs {
        terminal_id: int("terminal_id")?,
        operator_id: int("operator_id")?,
        local_reference: job.local_reference?,
    })
}

/// Asks CSQ once about a due poll and says what the answer means.
pub async fn ask(client: &CsqClient, cfg: &CsqConfig, job: &PollJob) -> (PollStep, Vec<Exchange>) {
    let Some(r) = refs_of(job) else {
        let why = "polled purchase without its CSQ references (terminal, operator, localReference)";
        return (PollStep::Park(why.into()), Vec::new());
    };
    let (answer, exchange) = match job.purpose.as_str() {
        FINISHED => {
            client
                .finished(r.terminal_id, r.operator_id, r.local_reference)
                .await
        }
        _ => {
            client
                .additional_data(r.terminal_id, r.operator_id, r.local_reference)
                .await
        }
    };
    let raffle = client.is_raffle(r.operator_id);
    (decide(cfg, raffle, job, r, &answer), vec![exchange])
}

/// What one poll answer means for the transaction.
fn decide(
    cfg: &CsqConfig,
    raffle: bool,
    job: &PollJob,
    r: Refs,
    answer: &Result<Value, CallError>,
) -> PollStep {
    let reference = PurchaseRef {
        terminal_id: r.terminal_id,
        operator_id: r.operator_id,
        local_reference: r.local_reference,
        product_id: job
            .partial
            .as_ref()
            .and_then(|p| p.get("product_id"))
            .and_then(Value::as_str),
    };
    let decision = answer.as_ref().map(|a| purchase_decision(a, reference));
    let step = match job.purpose.as_str() {
        RESOLVE => resolved(cfg, raffle, r, answer, decision)
            .or_else(|| never_arrived(cfg, job, r, answer)),
        ADDITIONAL_DATA => match decision {
            Ok(Decision::Final {
                status: Status::Succeeded,
                result,
                ..
            }) => Some(finish(Status::Succeeded, result, None)),
            // The sale is made: only its data may finish it. Anything else (a refusal, an
            // rc, a decline) is asked again until the deadline.
            _ => None,
        },
        _ => match decision {
            Ok(Decision::Final {
                status: Status::Succeeded,
                result: Some(found),
                ..
            }) => Some(PollStep::Finish {
                status: Status::Succeeded,
                result: Some(raffle_result(&found, job.partial.as_ref())),
                error: None,
                event_type: Some("raffle.resolved"),
            }),
            _ => None,
        },
    };
    step.unwrap_or_else(|| past_deadline(job, answer))
}

/// An unknown purchase, asked about: sold (maybe with more to come), refused, or not
/// known yet (`None`).
fn resolved(
    cfg: &CsqConfig,
    raffle: bool,
    r: Refs,
    answer: &Result<Value, CallError>,
    decision: Result<Decision, &CallError>,
) -> Option<PollStep> {
    let pending_with_data = answer.as_ref().is_ok_and(|a| {
        let receipt = &a["items"][0];
        receipt["finalstatus"] == 2 && receipt["hasAdditionalData"] == true
    });
    match decision {
        Ok(Decision::Final {
            status: Status::Succeeded,
            result: Some(result),
            ..
        }) => Some(match after_sale(cfg, raffle, result) {
            Step::Wait(waiting) => PollStep::Wait(waiting),
            Step::Done { result, .. } => finish(Status::Succeeded, result, None),
            _ => PollStep::Again,
        }),
        // Found, sold, and its data still being prepared: the sale happened.
        _ if pending_with_data => Some(PollStep::Wait(Box::new(waiting_for_data(
            cfg,
            json!({"terminal_id": r.terminal_id, "operator_id": r.operator_id,
                   "local_reference": r.local_reference, "has_additional_data": true}),
        )))),
        Ok(Decision::Final {
            status,
            result,
            error,
        }) => Some(finish(status, result, error)),
        _ => None,
    }
}

/// CSQ does not know the `localReference`. Once the request's own timeout has passed
/// since it was sent, it can no longer arrive: it never did, so the command is sent again
/// under a fresh reference (CSQ's texts have no "in progress" answer for a reference, and
/// a purchase it received is on record at once, so this is the reading a certification
/// test accepts). Before that, ask again as soon as the timeout is past. A row that does
/// not say when it was sent (from before this was kept) waits for the deadline as before.
fn never_arrived(
    cfg: &CsqConfig,
    job: &PollJob,
    r: Refs,
    answer: &Result<Value, CallError>,
) -> Option<PollStep> {
    if !matches!(answer, Err(CallError::Refused { status: 404, .. })) {
        return None;
    }
    let since = job.since_sent?;
    let timeout = Duration::from_millis(cfg.http.request_timeout_ms);
    if since >= timeout {
        return Some(PollStep::Resend(format!(
            "CSQ has no record of localReference {} {} s after it was sent (request timeout {} s)",
            r.local_reference,
            since.as_secs(),
            timeout.as_secs()
        )));
    }
    // Asked too early to tell: again just after the timeout (never past the deadline; the
    // poller sees to that).
    (!job.past_deadline).then(|| PollStep::AgainAfter(timeout - since + RESOLVE_MARGIN))
}

/// How long after a request's timeout its reference is asked about again: CSQ records a
/// purchase when it takes it, so a moment is enough.
const RESOLVE_MARGIN: Duration = Duration::from_millis(250);

/// Nothing final came: past the deadline the transaction ends with what is known, before
/// it CSQ is asked again.
fn past_deadline(job: &PollJob, answer: &Result<Value, CallError>) -> PollStep {
    if !job.past_deadline {
        return PollStep::Again;
    }
    let (status, partial, code, message) = match job.purpose.as_str() {
        RESOLVE if matches!(answer, Err(CallError::Refused { status: 404, .. })) => (
            Status::Failed,
            None,
            "not_applied",
            "the provider has no record of this purchase: nothing was bought",
        ),
        RESOLVE => (
            Status::Failed,
            None,
            "outcome_unresolved",
            "the provider never confirmed or denied the purchase before the deadline; check with the provider",
        ),
        ADDITIONAL_DATA => (
            Status::Expired,
            job.partial.clone(),
            "additional_data_not_received",
            "the voucher was sold but its additional data never arrived; `result` has what the sale returned",
        ),
        _ => (
            Status::Expired,
            job.partial.clone(),
            "raffle_result_not_received",
            "the ticket was sold but the draw's result never arrived; `result` has the ticket",
        ),
    };
    finish(status, partial, Some(error(code, message, None)))
}

fn finish(
    status: Status,
    result: Option<Value>,
    error: Option<crate::command::OutcomeError>,
) -> PollStep {
    PollStep::Finish {
        status,
        result,
        error,
        event_type: None,
    }
}

/// A sale: a raffle ticket waits for its draw, a sale with additional data waits for it,
/// anything else has succeeded.
pub fn after_sale(cfg: &CsqConfig, raffle: bool, result: Value) -> Step {
    if raffle {
        let draw_in = draw_in(&result);
        Step::Wait(Box::new(Waiting {
            wait_for: WaitFor::Draw,
            plan: PollPlan {
                purpose: FINISHED,
                first_in: Some(draw_in),
                deadline_in: draw_in + Duration::from_millis(cfg.raffle_deadline_ms),
            },
            progress: Some(("purchase.ticket_issued", result.clone())),
            partial: result,
        }))
    } else if result["has_additional_data"] == true {
        Step::Wait(Box::new(waiting_for_data(cfg, result)))
    } else {
        Step::done(Status::Succeeded, Some(result), None)
    }
}

fn waiting_for_data(cfg: &CsqConfig, partial: Value) -> Waiting {
    Waiting {
        wait_for: WaitFor::Data,
        plan: PollPlan {
            purpose: ADDITIONAL_DATA,
            first_in: None,
            deadline_in: cfg.additional_data_deadline(partial["operator_id"].as_i64()),
        },
        progress: None,
        partial,
    }
}

/// The `raffle.resolved` result: the ticket, win or loss, and the prize.
fn raffle_result(finished: &Value, ticket: Option<&Value>) -> Value {
    let data = &finished["additional_data"];
    let prize = data["prize"].as_str().filter(|p| !p.is_empty());
    json!({
        "ticket": finished["redeem_code"].as_str().or_else(|| ticket.and_then(|t| t["redeem_code"].as_str())),
        "result": data["raffle_result"],
        "prize": prize,
        "terminal_id": finished["terminal_id"],
        "operator_id": finished["operator_id"],
        "local_reference": finished["local_reference"],
        "draw_at": ticket.map(|t| t["additional_data"]["draw_at"].clone()),
    })
}

/// How long until the draw, from the ticket's `draw_at` (RFC 3339); now if absent.
pub fn draw_in(ticket: &Value) -> Duration {
    ticket["additional_data"]["draw_at"]
        .as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|at| {
            (at.with_timezone(&chrono::Utc) - chrono::Utc::now())
                .to_std()
                .ok()
        })
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Subject;

    fn job(purpose: &str, past_deadline: bool) -> PollJob {
        PollJob {
            transaction_id: uuid::Uuid::now_v7(),
            purpose: purpose.into(),
            attempt: 3,
            past_deadline,
            subject: Subject {
                command_id: "c".into(),
                source: "s".into(),
                kind: "purchase".into(),
                provider: "csq".into(),
            },
            local_reference: Some(7),
            refs: Some(json!({"terminal_id": 1, "operator_id": 1006})),
            partial: None,
            since_sent: None,
        }
    }

    fn cfg() -> CsqConfig {
        let text = include_str!("../../../queues.toml");
        let table: toml::Table = toml::from_str(text).expect("queues.toml");
        table["providers"]["csq"]
            .clone()
            .try_into()
            .expect("csq section")
    }

    fn sold(final_status: i64, has_data: bool) -> Result<Value, CallError> {
        Ok(
            json!({"rc": 0, "items": [{"finalstatus": final_status, "hasAdditionalData": has_data}]}),
        )
    }

    fn code_of(step: &PollStep) -> Option<&str> {
        match step {
            PollStep::Finish { error, .. } => error.as_ref().map(|e| e.code.as_str()),
            _ => None,
        }
    }

    #[test]
    fn an_unknown_purchase_resolves_to_what_csq_knows() {
        let j = job(RESOLVE, false);
        let r = refs_of(&j).unwrap();
        let not_found = Err(CallError::Refused {
            status: 404,
            body: Value::Null,
        });
        assert_eq!(decide(&cfg(), false, &j, r, &not_found), PollStep::Again);
        let late = job(RESOLVE, true);
        assert_eq!(
            code_of(&decide(&cfg(), false, &late, r, &not_found)),
            Some("not_applied")
        );
        let unsure = Err(CallError::Unknown("HTTP 503".into()));
        assert_eq!(
            code_of(&decide(&cfg(), false, &late, r, &unsure)),
            Some("outcome_unresolved")
        );
        assert!(matches!(
            decide(&cfg(), false, &j, r, &sold(0, false)),
            PollStep::Finish {
                status: Status::Succeeded,
                ..
            }
        ));
        assert!(matches!(
            decide(&cfg(), false, &j, r, &sold(2, true)),
            PollStep::Wait(w) if w.wait_for == WaitFor::Data
        ));
        assert!(matches!(
            decide(&cfg(), true, &j, r, &sold(0, false)),
            PollStep::Wait(w) if w.wait_for == WaitFor::Draw
        ));
    }

    #[test]
    fn an_unknown_reference_past_the_request_timeout_is_sent_again() {
        let not_found = Err(CallError::Refused {
            status: 404,
            body: Value::Null,
        });
        let timeout = Duration::from_millis(cfg().http.request_timeout_ms);
        let mut j = job(RESOLVE, false);
        let r = refs_of(&j).unwrap();
        j.since_sent = Some(timeout);
        assert!(matches!(
            decide(&cfg(), false, &j, r, &not_found),
            PollStep::Resend(_)
        ));
        // Past the deadline too: it never arrived, so it is not a failure yet.
        j.past_deadline = true;
        assert!(matches!(
            decide(&cfg(), false, &j, r, &not_found),
            PollStep::Resend(_)
        ));
        // Too early to tell: asked again just after the timeout.
        j.past_deadline = false;
        j.since_sent = Some(timeout / 3);
        let PollStep::AgainAfter(wait) = decide(&cfg(), false, &j, r, &not_found) else {
            panic!("asked again");
        };
        assert!(wait > timeout / 2 && wait <= timeout, "{wait:?}");
        // A 5xx proves nothing: never sent again.
        j.since_sent = Some(timeout * 2);
        let unsure = Err(CallError::Unknown("HTTP 503".into()));
        assert_eq!(decide(&cfg(), false, &j, r, &unsure), PollStep::Again);
    }

    #[tokio::test]
    async fn a_poll_without_its_references_is_parked_not_finished() {
        let mut j = job(RESOLVE, true);
        j.refs = None;
        let client = CsqClient::new(&cfg(), &|_| String::new(), None).unwrap();
        let (step, exchanges) = ask(&client, &cfg(), &j).await;
        assert!(matches!(step, PollStep::Park(_)), "{step:?}");
        assert!(exchanges.is_empty(), "nothing is asked");
    }

    #[test]
    fn a_sale_waiting_for_data_ends_only_with_it_or_the_deadline() {
        let j = job(ADDITIONAL_DATA, false);
        let r = refs_of(&j).unwrap();
        let declined = Ok(json!({"rc": 0, "items": [{"finalstatus": 1}]}));
        assert_eq!(decide(&cfg(), false, &j, r, &declined), PollStep::Again);
        let late = job(ADDITIONAL_DATA, true);
        let step = decide(&cfg(), false, &late, r, &declined);
        assert_eq!(code_of(&step), Some("additional_data_not_received"));
    }

    #[test]
    fn draw_time_in_the_past_means_now() {
        let t = json!({"additional_data": {"draw_at": "2000-01-01T00:00:00Z"}});
        assert_eq!(draw_in(&t), Duration::ZERO);
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc3339();
        let t = json!({"additional_data": {"draw_at": later}});
        assert!(draw_in(&t) > Duration::from_secs(100));
    }
}
