//! What Electrum's answers mean for the command: the outcome of a provision, redemption,
//! refund or lookup, and whether an advice got its final answer.

use serde_json::{Map, Value, json};
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

/// Why a 2xx answer to a provision, redemption or refund (or the original one a
/// `lookupRedemption` replays) is not the response `electrum-suv-examples/` shows, if it
/// is not: an object whose `voucher` has a non-empty `code`, whose `id`, when given, is
/// the request's, and whose other fields the result copies have their documented types.
///
/// Such an answer may still mean the effect was applied, so it is never read as a
/// success: the caller treats it as an answer that did not come (reversed, or asked again).
pub fn unreadable(answer: &Value, request_id: Uuid) -> Option<String> {
    let Some(top) = answer.as_object() else {
        return Some("2xx answer that is not a JSON object".into());
    };
    if let Err(why) = voucher_of(answer) {
        return Some(why.into());
    }
    match top.get("id") {
        None | Some(Value::Null) => {}
        Some(Value::String(id)) if id.parse::<Uuid>().ok() == Some(request_id) => {}
        Some(_) => return Some("2xx answer whose id is not the request's".into()),
    }
    let voucher = &answer["voucher"];
    let typed = [
        (
            &voucher["expiryDate"],
            Value::is_string as fn(&Value) -> bool,
            "voucher.expiryDate",
        ),
        (
            &voucher["redeemInstructions"],
            all_strings,
            "voucher.redeemInstructions",
        ),
        (
            &answer["thirdPartyIdentifiers"],
            Value::is_array,
            "thirdPartyIdentifiers",
        ),
        (
            &answer["settlementEntity"],
            Value::is_object,
            "settlementEntity",
        ),
        (&answer["slipData"], Value::is_object, "slipData"),
        (
            &answer["slipData"]["messageLines"],
            slip_lines,
            "slipData.messageLines",
        ),
    ];
    typed
        .into_iter()
        .find(|(v, ok, _)| !v.is_null() && !ok(v))
        .map(|(_, _, name)| format!("2xx answer whose {name} has the wrong type"))
}

/// The answer's `voucher`, if it is an object with a non-empty `code` string.
fn voucher_of(answer: &Value) -> Result<&Map<String, Value>, &'static str> {
    let voucher = answer
        .get("voucher")
        .and_then(Value::as_object)
        .ok_or("2xx answer without a voucher object")?;
    match voucher.get("code") {
        Some(Value::String(code)) if !code.is_empty() => Ok(voucher),
        _ => Err("2xx answer whose voucher has no code string"),
    }
}

fn all_strings(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|items| items.iter().all(Value::is_string))
}

fn slip_lines(v: &Value) -> bool {
    v.as_array().is_some_and(|lines| {
        lines
            .iter()
            .all(|l| l.is_object() && (l["text"].is_null() || l["text"].is_string()))
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
        Ok(v) => match unreadable(&v, request_id) {
            // Unknown means reverse: the effect may be applied, the answer says nothing.
            Some(why) => Step::Unknown(why),
            None => Step::done(Status::Succeeded, Some(result(&v, request_id)), None),
        },
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
        // A VoucherLookupResponse names its voucher; one that does not is asked again, as
        // an answer that did not come would be.
        Ok(v) => match voucher_of(&v) {
            Ok(_) => Step::done(Status::Succeeded, Some(v), None),
            Err(why) => Step::Retry(why.into()),
        },
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
        // An unreadable replay leaves the redemption as unknown as a 5xx does.
        Ok(v) => match unreadable(&v, request_id) {
            Some(why) => Step::Processing(why),
            None => Step::done(Status::Succeeded, Some(result(&v, request_id)), None),
        },
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
        (verdict, _) => {
            let outcome = (job.kind == AdviceKind::Reversal)
                .then(|| reversal_outcome(job, &verdict))
                .flatten();
            // A 404 to a reversal: Electrum never had the request, so nothing was applied
            // and the command may go again (a request arriving after its reversal is
            // refused by Electrum, which remembers early reversals).
            let never_received = outcome.as_ref().is_some_and(|(status, _, e)| {
                *status == Status::Failed && e.code == "not_received"
            });
            AdviceJudgement::Settled(FinalAnswer {
                verdict: verdict_name(&verdict),
                never_received,
                accepted: verdict == AdviceVerdict::Accepted,
                outcome,
            })
        }
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

    /// A response as `electrum-suv-examples/ProvisionResponse.json` writes it, for `id`.
    fn valid_response(id: Uuid) -> Value {
        json!({
            "id": id.to_string(), "time": "2018-12-07T07:50:17.483Z",
            "client": {"id": "22222222", "name": "TransAcquire Co"},
            "settlementEntity": {"id": "33333333", "name": "TransactionsRUs"},
            "thirdPartyIdentifiers": [{"institutionId": "33333333", "transactionIdentifier": "X"}],
            "slipData": {"messageLines": [{"text": "For any queries", "line": false}], "slipWidth": 0},
            "voucher": {"code": "272516728292", "expiryDate": "2018-12-07T07:50:18.290Z",
                        "redeemInstructions": ["To redeem", "*999*<pin>#"]}
        })
    }

    /// An independent reading of a well-formed response, with serde's typed
    /// deserialization of the fields the result copies (optional ones may be null).
    fn is_well_formed(answer: &Value, id: Uuid) -> bool {
        use serde::Deserialize;
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Response {
            id: Option<Uuid>,
            voucher: Map<String, Value>,
            third_party_identifiers: Option<Vec<Value>>,
            settlement_entity: Option<Map<String, Value>>,
            slip_data: Option<Map<String, Value>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Voucher {
            code: String,
            expiry_date: Option<String>,
            redeem_instructions: Option<Vec<String>>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Slip {
            message_lines: Option<Vec<Map<String, Value>>>,
        }
        // serde reads a struct from a list too: objects are checked by hand.
        if !answer.is_object() {
            return false;
        }
        let Ok(r) = Response::deserialize(answer) else {
            return false;
        };
        let Ok(v) = Voucher::deserialize(&Value::Object(r.voucher)) else {
            return false;
        };
        let slip_ok = r.slip_data.is_none_or(|s| {
            Slip::deserialize(&Value::Object(s)).is_ok_and(|s| {
                s.message_lines
                    .unwrap_or_default()
                    .iter()
                    .all(|l| matches!(l.get("text"), None | Some(Value::Null | Value::String(_))))
            })
        });
        !v.code.is_empty() && r.id.is_none_or(|i| i == id) && slip_ok
    }

    fn succeeded(step: &Step) -> bool {
        matches!(
            step,
            Step::Done {
                status: Status::Succeeded,
                ..
            }
        )
    }

    #[test]
    fn wrong_json_types_are_reversed_never_a_success() {
        let id = Uuid::now_v7();
        assert!(succeeded(&financial_step(Ok(valid_response(id)), id)));
        let with = |f: &dyn Fn(&mut Value)| {
            let mut v = valid_response(id);
            f(&mut v);
            v
        };
        for bad in [
            json!(null),
            json!([]),
            json!("created"),
            json!({}),
            with(&|v| v["voucher"] = json!("272516728292")),
            with(&|v| v["voucher"]["code"] = json!(272516728292u64)),
            with(&|v| v["voucher"]["code"] = json!("")),
            with(&|v| v["voucher"]["code"] = Value::Null),
            with(&|v| v["voucher"]["expiryDate"] = json!(20181207)),
            with(&|v| v["voucher"]["redeemInstructions"] = json!("To redeem")),
            with(&|v| v["thirdPartyIdentifiers"] = json!({"a": 1})),
            with(&|v| v["slipData"]["messageLines"] = json!([{"text": 5}])),
            with(&|v| v["id"] = json!(Uuid::now_v7().to_string())),
            with(&|v| v["id"] = json!(7)),
        ] {
            let step = financial_step(Ok(bad.clone()), id);
            assert!(matches!(step, Step::Unknown(_)), "{bad}: {step:?}");
            let step = lookup_redemption_step(Ok(bad.clone()), id);
            assert!(matches!(step, Step::Processing(_)), "{bad}: {step:?}");
        }
        for bad in [
            json!([]),
            json!({"voucher": {"code": 5}}),
            json!({"state": "CONFIRMED"}),
        ] {
            assert!(
                matches!(lookup_step(Ok(bad.clone())), Step::Retry(_)),
                "{bad}"
            );
        }
    }

    proptest::proptest! {
        /// Any JSON never panics a parser of Electrum's answers, and is a success only
        /// when well formed; a refusal, whatever its body, is never one.
        #[test]
        fn arbitrary_answers_are_successes_only_when_well_formed(
            a in crate::proptest_json::arb_json(),
            voucher in crate::proptest_json::arb_json(),
            status in 400u16..500,
        ) {
            let id = Uuid::now_v7();
            for answer in [a.clone(), json!({"voucher": voucher.clone()})] {
                for step in [
                    financial_step(Ok(answer.clone()), id),
                    provision_step(Ok(answer.clone()), id, true),
                    lookup_redemption_step(Ok(answer.clone()), id),
                ] {
                    proptest::prop_assert!(!succeeded(&step) || is_well_formed(&answer, id), "{}", answer);
                }
                if succeeded(&lookup_step(Ok(answer.clone()))) {
                    proptest::prop_assert!(answer["voucher"]["code"].as_str().is_some_and(|c| !c.is_empty()));
                }
                let refusal = || Err(CallError::Refused { status, body: answer.clone() });
                proptest::prop_assert!(!succeeded(&financial_step(refusal(), id)));
                proptest::prop_assert!(!succeeded(&provision_step(refusal(), id, true)));
                proptest::prop_assert!(!succeeded(&lookup_step(refusal())));
                proptest::prop_assert!(!succeeded(&lookup_redemption_step(refusal(), id)));
                let _ = judge_advice(&job(), &refusal(), Some(status));
                let _ = judge_advice(&job(), &Ok(answer.clone()), Some(200));
                let _ = error_type(&answer);
            }
        }

        /// A response with one change anywhere is a success exactly when still well formed.
        #[test]
        fn mutated_responses_are_successes_exactly_when_well_formed(
            (index, change) in crate::proptest_json::mutation(),
        ) {
            let id = Uuid::now_v7();
            let (pointer, answer) = crate::proptest_json::mutate(&valid_response(id), &index, &change);
            let step = financial_step(Ok(answer.clone()), id);
            proptest::prop_assert_eq!(succeeded(&step), is_well_formed(&answer, id), "{:?} at {}: {}", change, pointer, answer);
            if !succeeded(&step) {
                proptest::prop_assert!(matches!(step, Step::Unknown(_)), "unknown means reverse");
            }
        }
    }
}
