//! Test-only strategies for property tests over JSON: arbitrary values, and mutations of a
//! valid value (a field removed, replaced, or turned into another JSON type).
//!
//! Shared by the property tests of the command decoder (`providers`) and of every
//! provider-answer parser (`providers::csq::mapping`, `providers::electrum::mapping`).

use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Keys the parsers look for, so arbitrary objects often hit them.
const KEYS: &[&str] = &[
    "command_id",
    "source",
    "kind",
    "provider",
    "callback_url",
    "params",
    "terminal_id",
    "operator_id",
    "amount_to_send_x100",
    "amount_minor",
    "currency",
    "voucher_code",
    "request_id",
    "originator",
    "rc",
    "items",
    "finalstatus",
    "extraInfo",
    "redeemCode",
    "additionalData",
    "hasAdditionalData",
    "destinationamount",
    "dynamicProductId",
    "amountX100",
    "balanceX100",
    "voucher",
    "code",
    "id",
    "expiryDate",
    "redeemInstructions",
    "slipData",
    "messageLines",
    "errorType",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(str::to_string),
        1 => "[a-zA-Z_]{0,8}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // Small integers (0, 1, 2 are the interesting statuses) more often than any.
        (-3i64..4).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-3i64..4).prop_map(|i| json!(i as f64)),
        prop::sample::select(&["", "0", "1", "2", "12.5", "-1", "true", "null"][..])
            .prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
    ]
}

/// Any JSON value, up to 4 levels deep.
pub fn arb_json() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// The JSON pointer of every value inside `v`, `v` itself (`""`) first.
pub fn pointers(v: &Value) -> Vec<String> {
    fn walk(v: &Value, at: String, out: &mut Vec<String>) {
        out.push(at.clone());
        match v {
            Value::Object(m) => {
                for (k, child) in m {
                    let k = k.replace('~', "~0").replace('/', "~1");
                    walk(child, format!("{at}/{k}"), out);
                }
            }
            Value::Array(items) => {
                for (i, child) in items.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(v, String::new(), &mut out);
    out
}

/// The JSON type of a value, telling integers from other numbers.
pub fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A value of another JSON type than `v` (never null), chosen by `pick`, carrying `v` where
/// it can so the change is only of type: 7 -> "7", "7" -> 7, {..} -> [{..}].
pub fn of_another_type(v: &Value, pick: usize) -> Value {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let candidates = [
        Value::Bool(true),
        text.parse::<i64>().map(Value::from).unwrap_or(json!(7)),
        v.as_i64().map_or(json!(7.5), |i| json!(i as f64 + 0.5)),
        Value::String(text),
        json!([v.clone()]),
        json!({"value": v.clone()}),
    ];
    let others: Vec<Value> = candidates
        .into_iter()
        .filter(|c| type_of(c) != type_of(v))
        .collect();
    others[pick % others.len()].clone()
}

/// Removes the value at `pointer` (not the root); false if there was none.
pub fn remove_at(v: &mut Value, pointer: &str) -> bool {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return false;
    };
    let last = last.replace("~1", "/").replace("~0", "~");
    match v.pointer_mut(parent) {
        Some(Value::Object(m)) => m.remove(&last).is_some(),
        Some(Value::Array(items)) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => {
                items.remove(i);
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// One change to a valid value.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// The value at the pointer is removed.
    Remove,
    /// The value at the pointer becomes one of another JSON type.
    Retype(usize),
    /// The value at the pointer becomes an arbitrary value.
    Replace(Value),
}

/// A pointer into `valid` (by index) and a change to make there.
pub fn mutation() -> impl Strategy<Value = (prop::sample::Index, Mutation)> {
    let change = prop_oneof![
        Just(Mutation::Remove),
        any::<usize>().prop_map(Mutation::Retype),
        arb_json().prop_map(Mutation::Replace),
    ];
    (any::<prop::sample::Index>(), change)
}

/// Applies `change` at the pointer `index` picks in `valid`; returns the pointer too.
pub fn mutate(valid: &Value, index: &prop::sample::Index, change: &Mutation) -> (String, Value) {
    let all = pointers(valid);
    let pointer = all[index.index(all.len())].clone();
    let mut v = valid.clone();
    match change {
        Mutation::Remove => {
            remove_at(&mut v, &pointer);
        }
        Mutation::Retype(pick) => {
            if let Some(slot) = v.pointer_mut(&pointer) {
                *slot = of_another_type(slot, *pick);
            }
        }
        Mutation::Replace(new) => {
            if let Some(slot) = v.pointer_mut(&pointer) {
                *slot = new.clone();
            }
        }
    }
    (pointer, v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_reach_every_value_and_removal_works() {
        let mut v = json!({"a": [1, {"b/c": 2}], "d": null});
        let all = pointers(&v);
        assert_eq!(all, ["", "/a", "/a/0", "/a/1", "/a/1/b~1c", "/d"]);
        for p in &all {
            assert!(v.pointer(p).is_some(), "{p}");
        }
        assert!(remove_at(&mut v, "/a/1/b~1c"));
        assert!(remove_at(&mut v, "/a/0"));
        assert_eq!(v, json!({"a": [{}], "d": null}));
    }

    proptest! {
        #[test]
        fn another_type_is_another_type(v in arb_json(), pick in any::<usize>()) {
            let other = of_another_type(&v, pick);
            prop_assert_ne!(type_of(&other), type_of(&v));
            prop_assert!(!other.is_null());
        }
    }
}
