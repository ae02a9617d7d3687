//! Electrum single-use vouchers (SUV): `electrum-suv-operations.txt`, the message shapes of
//! `electrum-suv-examples/` and the flows of `electrum-voucher-redemption-flows.md`.
//!
//! Readings of the texts where they are vague, each what a certification test accepts:
//! - `provisionVoucher` is listed as "POST 504" (a publishing slip); the behaviour table
//!   and Electrum's test pack say `POST /vouchers`.
//! - `lookupVoucher` is `GET /vouchers` (operations text); the flows page's "GET /products"
//!   is the generic vendor table of another product.
//! - The request `id` of a provision, redemption or refund is the relay's transaction id, a
//!   UUID that never changes, so an advice always names the right request.
//! - `reversalReason` is one of Electrum's `TIMEOUT` (no answer, or a cut connection),
//!   `RESPONSE_NOT_FINAL` (a 5xx, or a lookup still processing past its deadline) and
//!   `CANCELLED` (never sent by the relay).
//! - HTTP 102 is an interim status: hyper (under reqwest) never returns it as an answer. A
//!   server that sends 102 and then nothing is seen as a timeout, so for `lookupRedemption`
//!   both mean "still processing".

pub mod client;
pub mod mapping;
pub mod params;
pub mod sandbox;

pub use client::{AdviceKind, ElectrumClient, Operation};
pub use params::{LookupParams, LookupRedemptionParams, ProvisionParams, VoucherParams};
