//! A corpus of malformed commands, built systematically from one valid command of each
//! kind the relay knows: every required field missing or null, every field of another
//! JSON type, bad money, oversized and empty strings, unknown kinds and providers, routing
//! keys that disagree with the body, bodies that are not UTF-8, not JSON, truncated, not an
//! object, too deep or too large, repeated keys, NULs and control characters.
//!
//! Each case has a name saying what is wrong, so a failure names its case.

use serde_json::{Value, json};

use crate::electrum::originator;

/// One malformed command as published.
pub struct Case {
    pub name: String,
    pub routing_key: String,
    pub body: Vec<u8>,
}

/// A valid command of one kind: its routing key, body, the pointers of its optional
/// fields, and the longest string each provider's params accept.
struct Template {
    key: &'static str,
    body: Value,
    optional: &'static [&'static str],
    max_param_text: usize,
}

fn templates(hook: &str) -> Vec<Template> {
    let envelope = |kind: &str, provider: &str, params: Value| {
        json!({"command_id": "corpus", "source": "pos-bad", "kind": kind, "provider": provider,
               "callback_url": hook, "params": params})
    };
    let receiver = json!({"id": "44444444", "name": "MobiTalk"});
    vec![
        Template {
            key: "purchase.csq",
            body: envelope(
                "purchase",
                "csq",
                json!({"terminal_id": 17, "operator_id": 1001, "product_id": "gift-25",
                "amount_to_send_x100": 2500, "destination_amount_x100": 2500,
                "local_date_time": "2026-01-02T03:04:05Z", "beneficiary_phone_number": "+27820000000",
                "dynamic_product_id": "DYN-1", "receiver_email": "holder@example.com",
                "receiver_message": "enjoy", "document_number": "X1234567", "document_type": "PASSPORT"}),
            ),
            optional: &[
                "/callback_url",
                "/params/product_id",
                "/params/amount_to_send_x100",
                "/params/destination_amount_x100",
                "/params/local_date_time",
                "/params/beneficiary_phone_number",
                "/params/dynamic_product_id",
                "/params/receiver_email",
                "/params/receiver_message",
                "/params/document_number",
                "/params/document_type",
            ],
            max_param_text: 512,
        },
        Template {
            key: "products.csq",
            body: envelope(
                "products",
                "csq",
                json!({"terminal_id": 17, "operator_id": 1003}),
            ),
            optional: &["/callback_url"],
            max_param_text: 512,
        },
        Template {
            key: "balance.csq",
            body: envelope("balance", "csq", json!({"terminal_id": 17})),
            optional: &["/callback_url"],
            max_param_text: 512,
        },
        Template {
            key: "provision.electrum",
            body: envelope(
                "provision",
                "electrum",
                json!({"originator": originator(), "receiver": receiver,
                "amount_minor": 1000, "currency": "710", "voucher_code": "4242424242"}),
            ),
            optional: &["/callback_url", "/params/receiver", "/params/voucher_code"],
            max_param_text: 128,
        },
        Template {
            key: "redeem.electrum",
            body: envelope(
                "redeem",
                "electrum",
                json!({"originator": originator(), "voucher_code": "4242424242"}),
            ),
            optional: &["/callback_url"],
            max_param_text: 128,
        },
        Template {
            key: "refund.electrum",
            body: envelope(
                "refund",
                "electrum",
                json!({"originator": originator(), "receiver": receiver, "voucher_code": "4242424242"}),
            ),
            optional: &["/callback_url", "/params/receiver"],
            max_param_text: 128,
        },
        Template {
            key: "lookup.electrum",
            body: envelope(
                "lookup",
                "electrum",
                json!({"voucher_code": "4242424242",
                "provision_request_id": "68d07240-e604-431f-d5ca-974cee9bd60d",
                "voucher_serial_number": "S1", "receiver_inst_id": "44444444",
                "settlement_entity_inst_id": "33333333"}),
            ),
            optional: &[
                "/callback_url",
                "/params/voucher_code",
                "/params/provision_request_id",
                "/params/voucher_serial_number",
                "/params/receiver_inst_id",
                "/params/settlement_entity_inst_id",
            ],
            max_param_text: 128,
        },
        Template {
            key: "lookup_redemption.electrum",
            body: envelope(
                "lookup_redemption",
                "electrum",
                json!({"request_id": "ca487760-974c-8313-a27d-1d728c54e6fd"}),
            ),
            optional: &["/callback_url"],
            max_param_text: 128,
        },
    ]
}

/// The JSON pointer of every value inside `v` but `v` itself.
fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: &str, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let p = format!("{at}/{k}");
                out.push(p.clone());
                walk(child, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(v, "", &mut out);
    out
}

fn remove(v: &mut Value, pointer: &str) {
    let (parent, last) = pointer.rsplit_once('/').expect("a pointer below the root");
    if let Some(Value::Object(m)) = v.pointer_mut(parent) {
        m.remove(last);
    }
}

/// The JSON types a value of `v`'s type is not, as examples (null is handled apart).
fn other_types(v: &Value) -> Vec<(&'static str, Value)> {
    let all = [
        ("bool", json!(true)),
        ("integer", json!(1)),
        ("float", json!(1.5)),
        ("string", json!("1")),
        ("array", json!([v.clone()])),
        ("object", json!({"value": v.clone()})),
    ];
    let own = match v {
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
        Value::Null => "null",
    };
    all.into_iter().filter(|(t, _)| *t != own).collect()
}

/// The whole corpus; `hook` is the callback URL the addressable cases carry.
pub fn corpus(hook: &str) -> Vec<Case> {
    let mut cases = Vec::new();
    let mut add = |name: String, routing_key: &str, body: Vec<u8>| {
        cases.push(Case {
            name,
            routing_key: routing_key.to_string(),
            body,
        });
    };
    let to_bytes = |v: &Value| serde_json::to_vec(v).expect("serializable");
    let all = templates(hook);
    for t in &all {
        let with = |pointer: &str, value: Value| {
            let mut b = t.body.clone();
            *b.pointer_mut(pointer).expect("pointer in template") = value;
            to_bytes(&b)
        };
        for pointer in pointers(&t.body) {
            let value = t
                .body
                .pointer(&pointer)
                .expect("pointer in template")
                .clone();
            let required = !t.optional.contains(&pointer.as_str());
            // Every required field missing, and null (null is absent).
            if required {
                let mut b = t.body.clone();
                remove(&mut b, &pointer);
                add(format!("{}: {pointer} missing", t.key), t.key, to_bytes(&b));
                add(
                    format!("{}: {pointer} null", t.key),
                    t.key,
                    with(&pointer, Value::Null),
                );
            }
            // Every field of every other JSON type.
            for (type_name, other) in other_types(&value) {
                add(
                    format!("{}: {pointer} as {type_name}", t.key),
                    t.key,
                    with(&pointer, other),
                );
            }
            // Every string oversized, and empty where it must not be.
            if value.is_string() {
                let limit = match pointer.as_str() {
                    "/command_id" | "/source" => 128,
                    "/callback_url" => 2048,
                    "/kind" | "/provider" => 32,
                    _ => t.max_param_text,
                };
                let long = if pointer == "/callback_url" {
                    format!("http://127.0.0.1/{}", "a".repeat(limit))
                } else {
                    "7".repeat(limit + 1)
                };
                add(
                    format!("{}: {pointer} of {} bytes", t.key, long.len()),
                    t.key,
                    with(&pointer, json!(long)),
                );
                // Electrum's reference server takes empty strings inside these objects.
                if !pointer.starts_with("/params/originator/")
                    && !pointer.starts_with("/params/receiver/")
                {
                    add(
                        format!("{}: {pointer} empty", t.key),
                        t.key,
                        with(&pointer, json!("")),
                    );
                }
            }
        }
        // An unknown field at the top level and in params, and a control character.
        let mut b = t.body.clone();
        b["priority"] = json!("high");
        add(
            format!("{}: unknown top-level field", t.key),
            t.key,
            to_bytes(&b),
        );
        let mut b = t.body.clone();
        b["params"]["pin"] = json!("1234");
        add(format!("{}: unknown param", t.key), t.key, to_bytes(&b));
        add(
            format!("{}: control character in command_id", t.key),
            t.key,
            with("/command_id", json!("bad\nid")),
        );
        add(
            format!("{}: NUL in source", t.key),
            t.key,
            with("/source", json!("pos\u{0}17")),
        );
        // The routing key disagrees with the body: each other template's key.
        let other = all
            .iter()
            .map(|o| o.key)
            .find(|k| *k != t.key && k.split('.').nth(1) == t.key.split('.').nth(1))
            .expect("a sibling kind");
        add(
            format!("{}: published as {other}", t.key),
            other,
            to_bytes(&t.body),
        );
        // A truncated body: the valid command cut short.
        let full = to_bytes(&t.body);
        for cut in [1, full.len() / 2, full.len() - 1] {
            add(
                format!("{}: truncated to {cut} of {} bytes", t.key, full.len()),
                t.key,
                full[..cut].to_vec(),
            );
        }
        // Repeated keys: at the top, in params, and deeper.
        let text = String::from_utf8(full.clone()).expect("utf-8");
        let first_param = t.body["params"]
            .as_object()
            .and_then(|p| p.keys().next().cloned())
            .expect("params");
        add(
            format!("{}: command_id twice", t.key),
            t.key,
            text.replacen('{', "{\"command_id\":\"other\",", 1)
                .into_bytes(),
        );
        add(
            format!("{}: params.{first_param} twice", t.key),
            t.key,
            text.replacen(
                "\"params\":{",
                &format!("\"params\":{{\"{first_param}\":null,"),
                1,
            )
            .into_bytes(),
        );
    }
    money(&all, &mut add);
    envelopes(hook, &mut add);
    bodies(hook, &mut add);
    cases
}

/// Money that is not a positive int32 of minor units, in every amount field.
fn money(all: &[Template], add: &mut impl FnMut(String, &str, Vec<u8>)) {
    let amounts = [
        ("float 25.5", json!(25.5)),
        ("float 25.0", json!(25.0)),
        ("string", json!("2500")),
        ("decimal string", json!("25.00")),
        ("negative", json!(-1)),
        ("negative float", json!(-0.5)),
        ("zero", json!(0)),
        ("2^31", json!(2_147_483_648i64)),
        ("2^63-1", json!(i64::MAX)),
        ("u64 max", json!(u64::MAX)),
        ("i64 min", json!(i64::MIN)),
        ("1e30", json!(1e30)),
        ("exponent 2.5e3", json!(2.5e3)),
    ];
    for (key, pointer) in [
        ("purchase.csq", "/params/amount_to_send_x100"),
        ("purchase.csq", "/params/destination_amount_x100"),
        ("provision.electrum", "/params/amount_minor"),
    ] {
        let t = all.iter().find(|t| t.key == key).expect("template");
        for (what, amount) in &amounts {
            let mut b = t.body.clone();
            *b.pointer_mut(pointer).expect("amount") = amount.clone();
            add(
                format!("{key}: {pointer} {what}"),
                key,
                serde_json::to_vec(&b).expect("serializable"),
            );
        }
        // A literal the JSON writer would never produce: beyond u64, as text.
        let mut b = t.body.clone();
        *b.pointer_mut(pointer).expect("amount") = json!(7);
        let text = serde_json::to_string(&b).expect("serializable");
        let field = pointer.rsplit('/').next().expect("field");
        add(
            format!("{key}: {pointer} 10^30 as an integer literal"),
            key,
            text.replace(
                &format!("\"{field}\":7"),
                &format!("\"{field}\":1000000000000000000000000000000"),
            )
            .into_bytes(),
        );
    }
}

/// Kinds, providers, routing keys, callback URLs and params each provider refuses.
fn envelopes(hook: &str, add: &mut impl FnMut(String, &str, Vec<u8>)) {
    let base = |kind: &str, provider: &str, params: Value| {
        serde_json::to_vec(&json!({"command_id": "corpus-env", "source": "pos-bad",
            "kind": kind, "provider": provider, "callback_url": hook, "params": params}))
        .expect("serializable")
    };
    let csq = json!({"terminal_id": 17, "operator_id": 1001});
    for (kind, provider) in [
        ("refund", "csq"),
        ("redeem", "csq"),
        ("reverse", "csq"),
        ("purchase", "electrum"),
        ("confirm", "electrum"),
        ("activate", "govstack"),
        ("purchase", "acme"),
        ("Purchase", "csq"),
        ("PURCHASE", "CSQ"),
        ("purchase ", "csq"),
        ("pur-chase", "csq"),
        ("purchase", "csq.evil"),
    ] {
        add(
            format!("unknown kind or provider {kind:?}.{provider:?}"),
            &format!("{kind}.{provider}"),
            base(kind, provider, csq.clone()),
        );
    }
    let good = base("purchase", "csq", csq.clone());
    for key in [
        "",
        "purchase",
        "csq",
        "purchase.csq.extra",
        "purchase.electrum",
        "products.csq",
        "purchase.CSQ",
        "#",
        "purchase.*",
    ] {
        add(
            format!("purchase.csq published as {key:?}"),
            key,
            good.clone(),
        );
    }
    for (what, url) in [
        ("ftp", json!("ftp://127.0.0.1/hooks")),
        ("no scheme", json!("127.0.0.1/hooks")),
        ("no host", json!("http://")),
        ("javascript", json!("javascript:alert(1)")),
        ("relative", json!("/hooks")),
        ("number", json!(8080)),
        ("list", json!([hook])),
    ] {
        let mut b: Value = serde_json::from_slice(&good).expect("json");
        b["callback_url"] = url;
        add(
            format!("callback_url {what}"),
            "purchase.csq",
            serde_json::to_vec(&b).expect("serializable"),
        );
    }
    let csq_params = |extra: Value| {
        let mut p = json!({"terminal_id": 17, "operator_id": 1001, "amount_to_send_x100": 2500});
        for (k, v) in extra.as_object().expect("object") {
            p[k] = v.clone();
        }
        p
    };
    for (what, extra) in [
        ("terminal_id 0", json!({"terminal_id": 0})),
        ("terminal_id -1", json!({"terminal_id": -1})),
        ("terminal_id 2^31", json!({"terminal_id": 2_147_483_648i64})),
        ("operator_id float", json!({"operator_id": 1001.0})),
        (
            "local_date_time not RFC 3339",
            json!({"local_date_time": "yesterday"}),
        ),
        (
            "local_date_time without zone",
            json!({"local_date_time": "2026-01-02T03:04:05"}),
        ),
        ("document_type VISA", json!({"document_type": "VISA"})),
        (
            "document_type lower case",
            json!({"document_type": "passport"}),
        ),
        (
            "receiver_email without @",
            json!({"receiver_email": "nobody"}),
        ),
        ("camelCase param", json!({"terminalId": 17})),
    ] {
        add(
            format!("purchase.csq: {what}"),
            "purchase.csq",
            base("purchase", "csq", csq_params(extra)),
        );
    }
    let o = originator();
    for (kind, what, params) in [
        (
            "provision",
            "currency ZAR",
            json!({"originator": o, "amount_minor": 1000, "currency": "ZAR"}),
        ),
        (
            "provision",
            "currency of two digits",
            json!({"originator": o, "amount_minor": 1000, "currency": "71"}),
        ),
        (
            "provision",
            "currency as a number",
            json!({"originator": o, "amount_minor": 1000, "currency": 710}),
        ),
        (
            "provision",
            "amount without currency",
            json!({"originator": o, "amount_minor": 1000}),
        ),
        (
            "provision",
            "currency without amount",
            json!({"originator": o, "currency": "710"}),
        ),
        (
            "provision",
            "originator with an unknown field",
            json!({"originator": {
            "institution": o["institution"], "terminalId": "t", "merchant": o["merchant"], "pin": "1"}}),
        ),
        (
            "provision",
            "originator as a string",
            json!({"originator": "term0001"}),
        ),
        ("redeem", "no voucher_code", json!({"originator": o})),
        (
            "refund",
            "receiver as a string",
            json!({"originator": o, "voucher_code": "1", "receiver": "MobiTalk"}),
        ),
        (
            "lookup",
            "neither key",
            json!({"voucher_serial_number": "S1"}),
        ),
        (
            "lookup",
            "provision_request_id not a UUID",
            json!({"provision_request_id": "68d07240"}),
        ),
        (
            "lookup_redemption",
            "request_id not a UUID",
            json!({"request_id": "nope"}),
        ),
        ("lookup_redemption", "no params", Value::Null),
    ] {
        add(
            format!("{kind}.electrum: {what}"),
            &format!("{kind}.electrum"),
            base(kind, "electrum", params),
        );
    }
}

/// Bodies that are not a JSON object of the contract at all.
fn bodies(hook: &str, add: &mut impl FnMut(String, &str, Vec<u8>)) {
    let key = "purchase.csq";
    let raw: Vec<(&str, Vec<u8>)> = vec![
        ("empty body", b"".to_vec()),
        ("whitespace", b" \n\t ".to_vec()),
        ("not JSON", b"purchase please".to_vec()),
        ("XML", b"<command><kind>purchase</kind></command>".to_vec()),
        ("single quotes", b"{'command_id': 'c'}".to_vec()),
        ("unquoted keys", b"{command_id: \"c\"}".to_vec()),
        ("trailing comma", b"{\"command_id\": \"c\",}".to_vec()),
        ("NaN", b"{\"amount\": NaN}".to_vec()),
        ("Infinity", b"Infinity".to_vec()),
        ("comment", b"// purchase\n{}".to_vec()),
        ("two objects", b"{} {}".to_vec()),
        ("trailing garbage", b"{\"command_id\": \"c\"} x".to_vec()),
        (
            "byte order mark",
            b"\xef\xbb\xbf{\"command_id\": \"c\"}".to_vec(),
        ),
        (
            "lone surrogate escape",
            br#"{"command_id": "\ud800"}"#.to_vec(),
        ),
        ("bad escape", br#"{"command_id": "\x41"}"#.to_vec()),
        (
            "raw newline in a string",
            b"{\"command_id\": \"a\nb\"}".to_vec(),
        ),
        ("array", b"[]".to_vec()),
        ("array of a command", b"[{\"command_id\": \"c\"}]".to_vec()),
        ("string", b"\"purchase\"".to_vec()),
        ("number", b"42".to_vec()),
        ("true", b"true".to_vec()),
        ("null", b"null".to_vec()),
        ("empty object", b"{}".to_vec()),
        ("invalid UTF-8 byte", vec![0xff, 0xfe, b'{', b'}']),
        (
            "Latin-1 in a string",
            b"{\"command_id\": \"caf\xe9\"}".to_vec(),
        ),
        ("overlong UTF-8", b"{\"command_id\": \"\xc0\xaf\"}".to_vec()),
        (
            "UTF-8 surrogate bytes",
            b"{\"command_id\": \"\xed\xa0\x80\"}".to_vec(),
        ),
        (
            "truncated UTF-8",
            b"{\"command_id\": \"\xe2\x82\"}".to_vec(),
        ),
        (
            "UTF-16",
            "{\"command_id\": \"c\"}"
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect(),
        ),
        (
            "NUL escape in a key",
            br#"{"command_id\u0000": "c"}"#.to_vec(),
        ),
    ];
    for (what, body) in raw {
        add(what.to_string(), key, body);
    }
    let command = |params: Value| {
        json!({"command_id": "corpus-deep", "source": "pos-bad", "kind": "purchase",
               "provider": "csq", "callback_url": hook, "params": params})
    };
    let nested = |depth: usize| {
        let mut v = json!(1);
        for _ in 0..depth {
            v = json!([v]);
        }
        v
    };
    let deep = |depth: usize| format!("{}1{}", "[".repeat(depth), "]".repeat(depth));
    add("nested 10000 deep".into(), key, deep(10_000).into_bytes());
    add(
        "params nested 200 deep".into(),
        key,
        serde_json::to_string(&command(json!("DEEP")))
            .expect("serializable")
            .replace("\"DEEP\"", &deep(200))
            .into_bytes(),
    );
    for (what, params) in [
        (
            "a param nested 100 deep",
            json!({"terminal_id": 17, "operator_id": 1001, "product_id": nested(100)}),
        ),
        (
            "an unknown param nested 100 deep",
            json!({"terminal_id": 17, "operator_id": 1001, "x": nested(100)}),
        ),
        (
            "params nested in params",
            json!({"params": {"terminal_id": 17, "operator_id": 1001}}),
        ),
    ] {
        add(
            what.to_string(),
            key,
            serde_json::to_vec(&command(params)).expect("serializable"),
        );
    }
    let mut padded = command(json!({"terminal_id": 17, "operator_id": 1001}));
    padded["params"]["receiver_message"] = json!("x".repeat(65 * 1024));
    add(
        "body of 65 KiB".into(),
        key,
        serde_json::to_vec(&padded).expect("serializable"),
    );
    add(
        "kind twice with different values".into(),
        key,
        format!(
            r#"{{"command_id": "corpus-dup", "source": "pos-bad", "kind": "products", "kind": "purchase",
               "provider": "csq", "callback_url": "{hook}", "params": {{"terminal_id": 17, "operator_id": 1001}}}}"#
        )
        .into_bytes(),
    );
    add(
        "a key repeated in originator".into(),
        "redeem.electrum",
                    r#"{"command_id": "corpus-dup", "source": "pos-bad", "kind": "redeem", "provider": "electrum",
               "params": {"voucher_code": "1", "originator": {"terminalId": "a", "terminalId": "b",
               "institution": {"id": "1", "name": "n"}, "merchant": {"merchantType": "1", "merchantId": "1",
               "merchantName": {"name": "n", "city": "c", "region": "r", "country": "ZA"}}}}}"#
            .as_bytes()
            .to_vec(),
    );
}
