//! What Electrum's answers mean for the command: the outcome of a provision, redemption,
//! refund or lookup, and whether an advice got its final answer.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::command::{OutcomeError, Status};
use crate::providers::step::error;
use crate::providers::work::{AdviceJob, AdviceJudgement, AdviceKind, FinalAnswer};
use crate::providers::{CallError, Step};

/// The `result` of a successful provision, redemption or refund: the request id (which
/// `lookup` and `lookup_redemption` take), the voucher, Electrum's identifiers and the slip.
pub fn result(answer: &Value, request_id: Uuid) -> Value {
    let voucher = &answer["voucher"];
    let slip: Vec<Value> = answer["slipData"]["messageLines"]
        .as_array()
        .map(|lines| lines.iter().map(|l| l["text"].clone()).collect())
        .unwrap_or_default();
    json!({
        "request_id": request_id,
        "voucher": {
            "code": voucher["code"],
            "expiry_date": voucher["expiryDate"],
            "redeem_instructions": voucher["redeemInstructions"],
        },
        "third_party_identifiers": answer["thirdPartyIdentifiers"],
        "settlement_entity": answer["settlementEntity"],
        "slip_lines": slip,
    })
}

/// The `errorType` of an `ErrorDetail`, if the body is one.
pub fn error_type(body: &Value) -> Option<String> {
    body["errorType"].as_str().map(str::to_string)
}

/// A 4xx refusal as an outcome. Refusals about the voucher are `declined`; a request the
/// provider could not read or authenticate is the relay's problem, so `failed`.
fn refused(status: u16, body: &Value) -> Step {
    let provider_code = error_type(body);
    let message = body["errorMessage"]
        .as_str()
        .map_or_else(|| format!("refused with HTTP {status}"), str::to_string);
    match provider_code.as_deref() {
        Some("FORMAT_ERROR") => Step::failed("provider_format_error", message, provider_code),
        Some("AUTHENTICATION_ERROR") => Step::failed("provider_auth_error", message, provider_code),
        Some(code) => Step::done(
            Status::Declined,
            None,
            Some(crate::command::OutcomeError {
                code: code.to_ascii_lowercase(),
                message,
                provider_code: provider_code.clone(),
            }),
        ),
        None => Step::failed("provider_refused", message, None),
    }
}

/// A provision, redemption or refund. A timeout, a 5xx or a cut connection is `Unknown`:
/// the executor reverses it.
pub fn financial_step(answer: Result<Value, CallError>, request_id: Uuid) -> Step {
    match answer {
        Ok(v) => Step::done(Status::Succeeded, Some(result(&v, request_id)), None),
        Err(CallError::Refused { status, body }) => refused(status, &body),
        Err(CallError::Unknown(reason)) => Step::Unknown(reason),
        Err(CallError::NotSent(reason)) => Step::Retry(reason),
    }
}

/// A provision. With a code the client chose, `DUPLICATE_RECORD` can only mean that code is
/// taken (the relay never sends a provision id twice), so it says so.
pub fn provision_step(
    answer: Result<Value, CallError>,
    request_id: Uuid,
    chose_code: bool,
) -> Step {
    match financial_step(answer, request_id) {
        Step::Done {
            status: Status::Declined,
            error: Some(e),
            ..
        } if chose_code && e.provider_code.as_deref() == Some("DUPLICATE_RECORD") => Step::done(
            Status::Declined,
            None,
            Some(error(
                "voucher_code_taken",
                "Electrum already has a voucher with the chosen voucher_code; choose another",
                e.provider_code,
            )),
        ),
        step => step,
    }
}

/// `lookupVoucher`: the voucher and its state; 404 means no such voucher.
pub fn lookup_step(answer: Result<Value, CallError>) -> Step {
    match answer {
        Ok(v) => Step::done(Status::Succeeded, Some(v), None),
        Err(CallError::Refused { status: 404, body }) => Step::done(
            Status::Declined,
            None,
            Some(crate::command::OutcomeError {
                code: "not_found".into(),
                message: "Electrum has no such voucher".into(),
                provider_code: error_type(&body),
            }),
        ),
        Err(CallError::Refused { status, body }) => refused(status, &body),
        // A read: asking again is harmless.
        Err(CallError::Unknown(reason) | CallError::NotSent(reason)) => Step::Retry(reason),
    }
}

/// `lookupRedemption`: the outcome of the redemption `request_id`. Approved is
/// `succeeded`, the original refusal is `declined` with its errorType, 404 (never received)
/// and 403 (another client's) are `failed`; still processing asks again.
pub fn lookup_redemption_step(answer: Result<Value, CallError>, request_id: Uuid) -> Step {
    match answer {
        Ok(v) => Step::done(Status::Succeeded, Some(result(&v, request_id)), None),
        Err(CallError::Refused { status: 404, .. }) => Step::failed(
            "not_received",
            "Electrum never received this redemption: nothing was redeemed",
            None,
        ),
        Err(CallError::Refused { status: 403, .. }) => Step::failed(
            "forbidden",
            "this redemption was sent by another client",
            None,
        ),
        Err(CallError::Refused { status, body }) => refused(status, &body),
        // 102 never reaches the client (see the module doc), so a timeout is "processing";
        // a 5xx or a cut connection leaves the redemption just as unknown, on the same
        // schedule and deadline.
        Err(CallError::Unknown(reason)) => Step::Processing(reason),
        Err(CallError::NotSent(reason)) => Step::Retry(reason),
    }
}

/// Electrum's `reversalReason` for why an outcome is unknown.
pub fn reversal_reason(why: &str) -> &'static str {
    if why.starts_with("HTTP 5") || why.contains("still processing") {
        "RESPONSE_NOT_FINAL"
    } else {
        "TIMEOUT"
    }
}

/// A 4xx answer to an advice that says the relay itself is at fault, not that Electrum
/// decided anything about the request: no outcome is drawn from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayFault {
    /// Credentials refused (401, 403, `AUTHENTICATION_ERROR`): repeated on the usual
    /// schedule, with an error log, so it goes through once the credentials are fixed.
    Credentials,
    /// The message refused (`FORMAT_ERROR`): repeating it cannot help; parked for
    /// operators (`advices replay --rebuild` sends it rebuilt by a fixed relay).
    Message,
}

pub fn relay_fault(status: u16, error_type: Option<&str>) -> Option<RelayFault> {
    match (status, error_type) {
        (401 | 403, _) | (_, Some("AUTHENTICATION_ERROR")) => Some(RelayFault::Credentials),
        (_, Some("FORMAT_ERROR")) => Some(RelayFault::Message),
        _ => None,
    }
}

/// What one advice attempt came to.
#[derive(Debug, Clone, PartialEq)]
pub enum AdviceVerdict {
    /// 2xx: accepted.
    Accepted,
    /// 404 `UNABLE_TO_LOCATE_RECORD`: the provider never had the original request.
    NotFound,
    /// Any other 4xx: final, the provider keeps its state (e.g. `…_ALREADY_CONFIRMED`).
    Refused {
        status: u16,
        error_type: Option<String>,
    },
    /// A 5xx, a timeout, or never sent: repeat it.
    Again(String),
}

/// Classifies an advice answer. `status` is the HTTP status seen, if any: a 2xx with an
/// unreadable body is still an acceptance, since an advice's answer carries nothing needed.
pub fn advice_verdict(answer: &Result<Value, CallError>, status: Option<u16>) -> AdviceVerdict {
    match answer {
        Ok(_) => AdviceVerdict::Accepted,
        Err(_) if status.is_some_and(|s| (200..300).contains(&s)) => AdviceVerdict::Accepted,
        Err(CallError::Refused { status: 404, .. }) => AdviceVerdict::NotFound,
        Err(CallError::Refused { status, body }) => AdviceVerdict::Refused {
            status: *status,
            error_type: error_type(body),
        },
        Err(CallError::Unknown(reason) | CallError::NotSent(reason)) => {
            AdviceVerdict::Again(reason.clone())
        }
    }
}

/// What an advice's answer means: settled (with the outcome a reversal makes), repeated,
/// or parked because the relay's own message is at fault.
pub fn judge_advice(
    job: &AdviceJob,
    answer: &Result<Value, CallError>,
    status: Option<u16>,
) -> AdviceJudgement {
    let verdict = advice_verdict(answer, status);
    let fault = match &verdict {
        AdviceVerdict::Refused { status, error_type } => {
            relay_fault(*status, error_type.as_deref())
        }
        _ => None,
    };
    match (verdict, fault) {
        (AdviceVerdict::Again(reason), _) => AdviceJudgement::Again(reason),
        (AdviceVerdict::Refused { status, .. }, Some(RelayFault::Credentials)) => {
            tracing::error!(advice_id = %job.id, status, "Electrum refused the relay's credentials; check client_id and ELECTRUM_PASSWORD (the advice is repeated meanwhile)");
            AdviceJudgement::Again(format!("credentials refused (HTTP {status})"))
        }
        (AdviceVerdict::Refused { status, .. }, Some(RelayFault::Message)) => {
            AdviceJudgement::Park(format!(
                "Electrum refused the relay's message as malformed (HTTP {status} FORMAT_ERROR): fix the relay, then `advices replay --rebuild`"
            ))
        }
        (verdict, _) => AdviceJudgement::Settled(FinalAnswer {
            verdict: verdict_name(&verdict),
            accepted: verdict == AdviceVerdict::Accepted,
            outcome: (job.kind == AdviceKind::Reversal)
                .then(|| reversal_outcome(job, &verdict))
                .flatten(),
        }),
    }
}

fn verdict_name(v: &AdviceVerdict) -> &'static str {
    match v {
        AdviceVerdict::Accepted => "accepted",
        AdviceVerdict::NotFound => "not_found",
        AdviceVerdict::Refused { .. } => "refused",
        AdviceVerdict::Again(_) => "again",
    }
}

/// The command's outcome once its reversal was answered finally; none while it was not.
fn reversal_outcome(
    job: &AdviceJob,
    verdict: &AdviceVerdict,
) -> Option<(Status, Value, OutcomeError)> {
    let result = json!({"request_id": job.request_id, "reversal_reason": job.reversal_reason, "advice_id": job.id});
    let op = &job.operation;
    let already_reversed = matches!(verdict, AdviceVerdict::Refused { error_type: Some(t), .. } if t.ends_with("_ALREADY_REVERSED"));
    let (status, error) = match verdict {
        // Reversed before (an earlier repetition whose answer was lost): the same end.
        _ if already_reversed => (
            Status::Reversed,
            error(
                "reversed",
                format!("no final answer came for the {op}; Electrum had already reversed it"),
                None,
            ),
        ),
        AdviceVerdict::Accepted => (
            Status::Reversed,
            error(
                "reversed",
                format!(
                    "no final answer came for the {op}; it was reversed and Electrum accepted the reversal"
                ),
                None,
            ),
        ),
        AdviceVerdict::NotFound => (
            Status::Failed,
            error(
                "not_received",
                format!("Electrum never received the {op}: nothing was applied"),
                Some("UNABLE_TO_LOCATE_RECORD".into()),
            ),
        ),
        AdviceVerdict::Refused { status, error_type } => (
            Status::Failed,
            error(
                "reversal_refused",
                format!(
                    "Electrum refused the reversal (HTTP {status}): the {op} stands as Electrum recorded it; check with Electrum"
                ),
                error_type.clone(),
            ),
        ),
        AdviceVerdict::Again(_) => return None,
    };
    Some((status, result, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::http::TIMED_OUT;

    #[test]
    fn advice_answers_are_final_unless_5xx_or_unsent() {
        let refused = |status, t: &str| {
            Err(CallError::Refused {
                status,
                body: json!({"errorType": t}),
            })
        };
        assert_eq!(
            advice_verdict(&Ok(json!({})), Some(202)),
            AdviceVerdict::Accepted
        );
        assert_eq!(
            advice_verdict(&refused(404, "UNABLE_TO_LOCATE_RECORD"), Some(404)),
            AdviceVerdict::NotFound
        );
        assert_eq!(
            advice_verdict(&refused(400, "REDEMPTION_ALREADY_CONFIRMED"), Some(400)),
            AdviceVerdict::Refused {
                status: 400,
                error_type: Some("REDEMPTION_ALREADY_CONFIRMED".into())
            }
        );
        assert!(matches!(
            advice_verdict(&Err(CallError::Unknown("HTTP 503".into())), Some(503)),
            AdviceVerdict::Again(_)
        ));
        assert_eq!(
            advice_verdict(
                &Err(CallError::Unknown("2xx answer without a JSON body".into())),
                Some(202)
            ),
            AdviceVerdict::Accepted
        );
    }

    #[test]
    fn a_taken_chosen_code_says_so() {
        let id = Uuid::now_v7();
        let duplicate = || {
            Err(CallError::Refused {
                status: 400,
                body: json!({"errorType": "DUPLICATE_RECORD", "errorMessage": "x"}),
            })
        };
        let Step::Done { status, error, .. } = provision_step(duplicate(), id, true) else {
            panic!("final")
        };
        assert_eq!(status, Status::Declined);
        assert_eq!(error.unwrap().code, "voucher_code_taken");
        let Step::Done { error, .. } = provision_step(duplicate(), id, false) else {
            panic!("final")
        };
        assert_eq!(error.unwrap().code, "duplicate_record");
    }

    #[test]
    fn unknown_redemption_is_reversed_not_resent() {
        let id = Uuid::now_v7();
        assert!(matches!(
            financial_step(Err(CallError::Unknown("HTTP 503".into())), id),
            Step::Unknown(_)
        ));
        // A lookup that gets no answer says "still processing"; one never sent is retried.
        assert!(matches!(
            lookup_redemption_step(Err(CallError::Unknown(TIMED_OUT.into())), id),
            Step::Processing(_)
        ));
        assert!(matches!(
            lookup_redemption_step(Err(CallError::NotSent("refused".into())), id),
            Step::Retry(_)
        ));
        assert_eq!(reversal_reason("HTTP 503"), "RESPONSE_NOT_FINAL");
        assert_eq!(
            reversal_reason("timed out waiting for the answer"),
            "TIMEOUT"
        );
        let declined = financial_step(
            Err(CallError::Refused {
                status: 400,
                body: json!({"errorType": "VOUCHER_ALREADY_REDEEMED", "errorMessage": "x"}),
            }),
            id,
        );
        let Step::Done { status, error, .. } = declined else {
            panic!("final")
        };
        assert_eq!(status, Status::Declined);
        assert_eq!(error.unwrap().code, "voucher_already_redeemed");
    }

    fn job() -> AdviceJob {
        AdviceJob {
            id: Uuid::now_v7(),
            transaction_id: Uuid::now_v7(),
            provider: "electrum".into(),
            operation: "redeem".into(),
            kind: AdviceKind::Reversal,
            request_id: Uuid::now_v7(),
            reversal_reason: Some("TIMEOUT".into()),
            data: None,
            body: None,
            attempt: 3,
            subject: crate::command::Subject {
                command_id: "c-1".into(),
                source: "pos-1".into(),
                kind: "redeem".into(),
                provider: "electrum".into(),
            },
        }
    }

    #[test]
    fn a_reversals_final_answer_makes_the_outcome() {
        let refused = |t: &str| AdviceVerdict::Refused {
            status: 400,
            error_type: Some(t.into()),
        };
        let cases = [
            (AdviceVerdict::Accepted, Status::Reversed, "reversed"),
            (AdviceVerdict::NotFound, Status::Failed, "not_received"),
            (
                refused("REDEMPTION_ALREADY_CONFIRMED"),
                Status::Failed,
                "reversal_refused",
            ),
            (
                refused("REDEMPTION_ALREADY_REVERSED"),
                Status::Reversed,
                "reversed",
            ),
        ];
        for (verdict, status, code) in cases {
            let (s, _, e) = reversal_outcome(&job(), &verdict).expect("a final answer");
            assert_eq!(s, status, "{verdict:?}");
            assert_eq!(e.code, code, "{verdict:?}");
        }
        assert!(reversal_outcome(&job(), &AdviceVerdict::Again("HTTP 503".into())).is_none());
    }

    #[test]
    fn the_relays_own_faults_are_repeated_or_parked_never_an_outcome() {
        let refused = |status, t: &str| {
            Err(CallError::Refused {
                status,
                body: json!({"errorType": t}),
            })
        };
        assert!(matches!(
            judge_advice(&job(), &refused(401, "AUTHENTICATION_ERROR"), Some(401)),
            AdviceJudgement::Again(_)
        ));
        assert!(matches!(
            judge_advice(&job(), &refused(400, "FORMAT_ERROR"), Some(400)),
            AdviceJudgement::Park(_)
        ));
        let AdviceJudgement::Settled(answer) = judge_advice(&job(), &Ok(json!({})), Some(202))
        else {
            panic!("final")
        };
        assert!(answer.accepted);
        assert_eq!(answer.outcome.map(|o| o.0), Some(Status::Reversed));
    }
}
