//! The operations of the SUV API, and the two axes they are built from: the kind of
//! transaction ([`Family`]) and the message within it ([`Step`]). Faults and counters are
//! kept per [`Operation`]; routes, shapes and table rows are chosen by family and step.

/// One operation of the SUV API; faults and counters are per operation.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Provision,
    ProvisionConfirmation,
    ProvisionReversal,
    Redeem,
    RedeemConfirmation,
    RedeemReversal,
    Refund,
    RefundConfirmation,
    RefundReversal,
    LookupVoucher,
    LookupRedemption,
}

impl Operation {
    /// Every operation, in declaration order.
    pub const ALL: [Operation; 11] = [
        Operation::Provision,
        Operation::ProvisionConfirmation,
        Operation::ProvisionReversal,
        Operation::Redeem,
        Operation::RedeemConfirmation,
        Operation::RedeemReversal,
        Operation::Refund,
        Operation::RefundConfirmation,
        Operation::RefundReversal,
        Operation::LookupVoucher,
        Operation::LookupRedemption,
    ];
}

/// The three kinds of transaction, each with its request, confirmation and reversal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Family {
    Provision,
    Redemption,
    Refund,
}

/// Which message of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    Request,
    Confirm,
    Reverse,
}

/// The operation a POST of `step` in `family` is counted and faulted as.
pub(super) fn operation(family: Family, step: Step) -> Operation {
    match (family, step) {
        (Family::Provision, Step::Request) => Operation::Provision,
        (Family::Provision, Step::Confirm) => Operation::ProvisionConfirmation,
        (Family::Provision, Step::Reverse) => Operation::ProvisionReversal,
        (Family::Redemption, Step::Request) => Operation::Redeem,
        (Family::Redemption, Step::Confirm) => Operation::RedeemConfirmation,
        (Family::Redemption, Step::Reverse) => Operation::RedeemReversal,
        (Family::Refund, Step::Request) => Operation::Refund,
        (Family::Refund, Step::Confirm) => Operation::RefundConfirmation,
        (Family::Refund, Step::Reverse) => Operation::RefundReversal,
    }
}
