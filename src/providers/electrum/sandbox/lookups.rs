//! The two GET lookups: lookupRedemption, which replays a redemption's original answer
//! (and stands in for HTTP 102 while that answer is held, see the module doc of
//! [`sandbox`](super)), and lookupVoucher, which reports a voucher's state.

use std::collections::HashMap;

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use uuid::Uuid;

use super::answer::{Answer, ErrorIds, error_detail, refuse};
use super::auth::{NO_BASIC_AUTH, authentication_error, basic_user};
use super::faults::hold_or_fail;
use super::ledger::Ledger;
use super::schema::{UUID_FORMAT, canonical_uuid, format_error, format_problem};
use super::{ElectrumSandbox, Operation};

/// `GET /redemptions/{requestId}`.
pub(super) async fn lookup_redemption(
    State(sandbox): State<ElectrumSandbox>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Response {
    let op = Operation::LookupRedemption;
    sandbox.count_call(op);
    let raw = path.map(|Path(p)| p).unwrap_or_default();
    let Some(key) = canonical_uuid(&raw) else {
        let problem = format_problem("requestId", UUID_FORMAT, &json!(raw));
        return format_error(ErrorIds::fresh(None), vec![problem]);
    };
    // A GET has no id of its own; it is about the redemption, like an advice.
    let ids = ErrorIds::fresh(Some(key));
    let Some(user) = basic_user(&headers) else {
        return authentication_error(ids, NO_BASIC_AUTH);
    };
    let (hold, held_until) = {
        let mut ledger = sandbox.ledger();
        let owner = ledger.redemptions.latest(key).map(|tx| tx.client.clone());
        if owner.is_some_and(|owner| owner != user) {
            return refuse(
                StatusCode::FORBIDDEN,
                ids,
                "AUTHENTICATION_ERROR",
                "Another client sent this redemption.",
            )
            .into_response();
        }
        let hold = match hold_or_fail(ledger.take_fault(op), ids) {
            Ok(hold) => hold,
            Err(fault_error) => return *fault_error,
        };
        let held_until = ledger.redemptions.latest(key).and_then(|tx| tx.held_until);
        (hold, held_until)
    };
    // Still processing: say nothing until the redemption's own answer goes out (see the
    // module doc for why this stands in for 102).
    if let Some(until) = held_until {
        tokio::time::sleep_until(tokio::time::Instant::from_std(until)).await;
    }
    // With an id reused for several vouchers, the latest redemption received is replayed.
    let answer = match sandbox.ledger().redemptions.latest(key) {
        None => refuse(
            StatusCode::NOT_FOUND,
            ids,
            "UNABLE_TO_LOCATE_RECORD",
            "No redemption with this requestId was received.",
        ),
        Some(tx) if tx.approved => Answer::new(StatusCode::OK, tx.answer.clone(), false),
        Some(tx) => Answer::new(tx.status, tx.answer.clone(), false),
    };
    if hold {
        tokio::time::sleep(sandbox.slow_answer()).await;
    }
    answer.into_response()
}

/// `GET /vouchers?voucherCode=..|provisionRequestId=..`.
pub(super) async fn lookup_voucher(
    State(sandbox): State<ElectrumSandbox>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let op = Operation::LookupVoucher;
    sandbox.count_call(op);
    let (code, provision_id) = match voucher_query(query) {
        Ok(query) => query,
        Err(format_error) => return *format_error,
    };
    let ids = ErrorIds::fresh(provision_id);
    if basic_user(&headers).is_none() {
        return authentication_error(ids, NO_BASIC_AUTH);
    }
    let (answer, hold) = {
        let mut ledger = sandbox.ledger();
        let hold = match hold_or_fail(ledger.take_fault(op), ids) {
            Ok(hold) => hold,
            Err(fault_error) => return *fault_error,
        };
        let answer = voucher_answer(&ledger, code.as_deref(), provision_id, ids);
        (answer, hold)
    };
    if hold {
        tokio::time::sleep(sandbox.slow_answer()).await;
    }
    answer.into_response()
}

/// The query of lookupVoucher: its `voucherCode` and `provisionRequestId` (empty ones count
/// as absent), at least one of them; or the FORMAT_ERROR that says what is wrong.
fn voucher_query(
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<(Option<String>, Option<Uuid>), Box<Response>> {
    let Ok(Query(params)) = query else {
        let problem = format_problem("query", "not a valid query string", &Value::Null);
        return Err(Box::new(format_error(ErrorIds::fresh(None), vec![problem])));
    };
    let param = |name: &str| params.get(name).filter(|v| !v.is_empty());
    let code = param("voucherCode");
    let provision = param("provisionRequestId");
    let provision_id = match provision.map(|p| canonical_uuid(p)) {
        Some(None) => {
            let problem = format_problem("provisionRequestId", UUID_FORMAT, &json!(provision));
            return Err(Box::new(format_error(ErrorIds::fresh(None), vec![problem])));
        }
        Some(Some(id)) => Some(id),
        None => None,
    };
    if code.is_none() && provision_id.is_none() {
        let problem = format_problem(
            "voucherCode",
            "voucherCode or provisionRequestId is required",
            &Value::Null,
        );
        return Err(Box::new(format_error(ErrorIds::fresh(None), vec![problem])));
    }
    Ok((code.cloned(), provision_id))
}

/// lookupVoucher's answer: the VoucherLookupResponse of the voucher named by `code`, by
/// `provision_id`, or by both (then they must name the same voucher); else 404.
fn voucher_answer(
    ledger: &Ledger,
    code: Option<&str>,
    provision_id: Option<Uuid>,
    ids: ErrorIds,
) -> Answer {
    let by_provision = |p: &Uuid| ledger.provisions.advised(*p).map(|tx| tx.code.clone());
    let found = match (code, provision_id.as_ref().map(by_provision)) {
        (Some(code), Some(other)) => other.filter(|o| o == code),
        (Some(code), None) => Some(code.to_string()),
        (None, Some(other)) => other,
        (None, None) => None,
    };
    match found.and_then(|c| ledger.voucher_lookup(&c)) {
        Some(body) => Answer::new(StatusCode::OK, body, false),
        None => {
            let body = error_detail(
                ids,
                "UNABLE_TO_LOCATE_RECORD",
                "No such voucher.",
                json!({"freeString": "No voucher matches the query."}),
            );
            Answer::new(StatusCode::NOT_FOUND, body, false)
        }
    }
}
