//! CSQ eVSB prepaid vouchers (`csq-vouchers-flow.txt`, `csq-vouchers-purchase.txt`).

pub mod auth;
pub mod client;
pub mod flows;
pub mod mapping;
pub mod params;
pub mod sandbox;

pub use client::{CsqClient, Products};
pub use mapping::{Decision, PurchaseRef, purchase_decision};
pub use params::{BalanceParams, ProductsParams, PurchaseBody, PurchaseParams};
