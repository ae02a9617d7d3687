//! What Electrum's answers mean for the command: the outcome of a provision, redemption,
//! refund or lookup, and whether an advice got its final answer.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::command::Status;
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
}
