//! Fault injection, step 3 of the checks: what a test asks the next calls of an operation to
//! suffer, kept in the order it was asked (in process through
//! [`ElectrumSandbox::inject`](super::ElectrumSandbox::inject), out of process through
//! `POST /sandbox/faults`), and the 5xx a [`Fault::ErrorBeforeEffect`] answers.

use std::collections::{HashMap, VecDeque};

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::Operation;
use super::answer::{ErrorIds, error_detail};

/// What an injected fault does to a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Apply the effect, then hold the answer for
    /// [`SandboxOptions::slow_answer`](super::SandboxOptions::slow_answer) before sending it
    /// (a client with a shorter timeout sees a timeout).
    TimeoutAfterEffect,
    /// Answer this 5xx status (ErrorDetail body, errorType GENERAL_ERROR or
    /// UPSTREAM_UNAVAILABLE) without applying anything. A value that is no HTTP status is
    /// sent as 500.
    ErrorBeforeEffect(u16),
}

/// The faults waiting for calls: per operation, each with how many calls it has left, in the
/// order they were injected.
#[derive(Default)]
pub(super) struct PendingFaults(HashMap<Operation, VecDeque<(Fault, u32)>>);

impl PendingFaults {
    /// The next `times` calls of `operation` get `fault`, after the faults queued before.
    /// `times` is at least 1.
    pub(super) fn push(&mut self, operation: Operation, fault: Fault, times: u32) {
        self.0
            .entry(operation)
            .or_default()
            .push_back((fault, times));
    }

    /// Consumes the next fault queued for `operation`, if any.
    pub(super) fn take(&mut self, operation: Operation) -> Option<Fault> {
        let queue = self.0.get_mut(&operation)?;
        let (fault, left) = queue.front_mut()?;
        let fault = *fault;
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        Some(fault)
    }
}

/// What the fault taken for a call means before any effect: `Err` is the 5xx of a
/// [`Fault::ErrorBeforeEffect`], to answer at once; `Ok(true)` means a
/// [`Fault::TimeoutAfterEffect`] holds the answer once the effect is applied; `Ok(false)`
/// means no fault.
pub(super) fn hold_or_fail(fault: Option<Fault>, ids: ErrorIds) -> Result<bool, Box<Response>> {
    match fault {
        Some(Fault::ErrorBeforeEffect(status)) => Err(Box::new(fault_error(status, ids))),
        Some(Fault::TimeoutAfterEffect) => Ok(true),
        None => Ok(false),
    }
}

/// The answer of an [`Fault::ErrorBeforeEffect`].
fn fault_error(status: u16, ids: ErrorIds) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let (error_type, why) = match status.as_u16() {
        502..=504 => (
            "UPSTREAM_UNAVAILABLE",
            "The upstream voucher vendor is unavailable.",
        ),
        _ => (
            "GENERAL_ERROR",
            "An error occurred while processing the request.",
        ),
    };
    let body = error_detail(ids, error_type, why, json!({"freeString": why}));
    (status, axum::Json(body)).into_response()
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultKind {
    TimeoutAfterEffect,
    ErrorBeforeEffect,
}

/// The body of `POST /sandbox/faults`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSpec {
    operation: Operation,
    fault: FaultKind,
    status: Option<u16>,
    times: Option<u32>,
}

/// Reads the body of `POST /sandbox/faults`: the operation, its fault and how many calls
/// get it (1 unless `times` says otherwise), or why the body asks for no valid fault.
pub(super) fn parse_fault_spec(body: &[u8]) -> Result<(Operation, Fault, u32), String> {
    let spec: FaultSpec = serde_json::from_slice(body).map_err(|e| format!("bad fault: {e}"))?;
    let fault = match (spec.fault, spec.status) {
        (FaultKind::TimeoutAfterEffect, None) => Fault::TimeoutAfterEffect,
        (FaultKind::TimeoutAfterEffect, Some(_)) => {
            return Err("status is only for error_before_effect".into());
        }
        (FaultKind::ErrorBeforeEffect, Some(status)) if (500..=599).contains(&status) => {
            Fault::ErrorBeforeEffect(status)
        }
        (FaultKind::ErrorBeforeEffect, _) => {
            return Err("error_before_effect needs a 5xx status".into());
        }
    };
    Ok((spec.operation, fault, spec.times.unwrap_or(1)))
}
