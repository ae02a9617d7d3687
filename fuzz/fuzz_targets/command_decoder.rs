//! The command decoder on arbitrary input: it never panics, and whatever it accepts agrees
//! with its routing key. The first byte picks the routing key; the rest is the body.

#![no_main]

use libfuzzer_sys::fuzz_target;
use voucher_relay::providers::parse_command;

/// Every routing key the relay knows, and some it does not.
const KEYS: [&str; 12] = [
    "purchase.csq",
    "products.csq",
    "balance.csq",
    "provision.electrum",
    "redeem.electrum",
    "refund.electrum",
    "lookup.electrum",
    "lookup_redemption.electrum",
    "purchase.electrum",
    "activate.govstack",
    "purchase",
    "",
];

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = data.split_first() else {
        return;
    };
    let key = KEYS[usize::from(*pick) % KEYS.len()];
    match parse_command(key, body, &["csq", "electrum"]) {
        Ok((command, action)) => {
            assert_eq!(format!("{}.{}", command.kind, command.provider), key);
            assert_eq!(action.kind(), command.kind);
            // Anything accepted was strict JSON: an object without repeated keys.
            let text = std::str::from_utf8(body).expect("accepted bodies are UTF-8");
            assert!(voucher_relay::command::strict_json::parse(text).is_ok());
        }
        Err(rejection) => assert!(!rejection.reason.code().is_empty()),
    }
});
