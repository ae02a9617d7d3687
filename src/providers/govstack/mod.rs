//! The GovStack Payments building block's voucher engine (issue 9), in two dialects
//! ([`dialect`]). What is here so far: the dialects and the engine's simulator
//! ([`sandbox`]). The adapter (commands `create|activate|redeem|status|cancel.govstack`),
//! the engine-callback listener and the encrypted batch files are not built yet.

pub mod dialect;
pub mod sandbox;
