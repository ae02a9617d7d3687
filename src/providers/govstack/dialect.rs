//! The two dialects of the GovStack voucher engine API in use (see
//! `shared/provider-apis/govstack-readings.md`): the 23Q4 texts (`govstack`) and the Mifos
//! Payment Hub EE engine (`mifos`). Both the adapter and the sandbox read them from here.

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dialect {
    Govstack,
    Mifos,
}

impl Dialect {
    /// The header that names the callback URL on create, activate and cancel.
    pub fn callback_header(self) -> &'static str {
        match self {
            Dialect::Govstack => "X-Callback-URL",
            Dialect::Mifos => "X-CallbackURL",
        }
    }

    /// How the engine calls back.
    pub fn callback_method(self) -> reqwest::Method {
        match self {
            Dialect::Govstack => reqwest::Method::POST,
            Dialect::Mifos => reqwest::Method::PUT,
        }
    }

    /// The longest voucher secret a redemption may carry (`None`: any length). The 23Q4
    /// YAML caps `voucherSecretNumber` at 6; the Mifos engine's is an opaque string.
    pub fn secret_max(self) -> Option<usize> {
        match self {
            Dialect::Govstack => Some(6),
            Dialect::Mifos => None,
        }
    }

    /// The key of a request or batch id in activate and cancel bodies, as this dialect
    /// writes it: PascalCase in the 23Q4 activate example, camelCase in Mifos.
    pub fn key(self, camel: &'static str) -> &'static str {
        match (self, camel) {
            (Dialect::Govstack, "requestId") => "RequestID",
            (Dialect::Govstack, "batchId") => "BatchID",
            (Dialect::Govstack, "voucherInstructions") => "VoucherInstructions",
            (Dialect::Govstack, "agentId") => "agentID",
            (Dialect::Mifos, other) => other,
            (Dialect::Govstack, other) => other,
        }
    }
}

/// The voucher states of the engine, with their status codes: the Mifos engine's two-digit
/// codes (01 inactive … 06 suspended), which the 23Q4 YAML sends as integers ("from 01 to
/// 06"). Blocked has no code in either text; the sandbox answers 08 for it (documented
/// in docs/providers, a reading of ours).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VoucherState {
    PreActivated,
    Activated,
    Cancelled,
    Expired,
    Consumed,
    Suspended,
    Blocked,
}

impl VoucherState {
    pub fn code(self) -> u8 {
        match self {
            VoucherState::PreActivated => 1,
            VoucherState::Activated => 2,
            VoucherState::Cancelled => 3,
            VoucherState::Expired => 4,
            VoucherState::Consumed => 5,
            VoucherState::Suspended => 6,
            VoucherState::Blocked => 8,
        }
    }

    pub fn from_code(code: u8) -> Option<VoucherState> {
        [
            VoucherState::PreActivated,
            VoucherState::Activated,
            VoucherState::Cancelled,
            VoucherState::Expired,
            VoucherState::Consumed,
            VoucherState::Suspended,
            VoucherState::Blocked,
        ]
        .into_iter()
        .find(|s| s.code() == code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_go_both_ways() {
        for code in 0..=10u8 {
            if let Some(s) = VoucherState::from_code(code) {
                assert_eq!(s.code(), code);
            }
        }
        assert_eq!(VoucherState::from_code(2), Some(VoucherState::Activated));
        assert_eq!(
            VoucherState::from_code(7),
            None,
            "07 is the engine's error code"
        );
    }

    #[test]
    fn dialects_differ_where_the_readings_say() {
        assert_eq!(Dialect::Govstack.callback_header(), "X-Callback-URL");
        assert_eq!(Dialect::Mifos.callback_header(), "X-CallbackURL");
        assert_eq!(Dialect::Govstack.key("requestId"), "RequestID");
        assert_eq!(Dialect::Mifos.key("requestId"), "requestId");
        assert_eq!(Dialect::Govstack.secret_max(), Some(6));
        assert_eq!(Dialect::Mifos.secret_max(), None);
    }
}
