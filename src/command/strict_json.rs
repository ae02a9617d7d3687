//! JSON read as `serde_json` reads it, except that an object naming the same key twice is
//! refused.
//!
//! `serde_json` keeps the last of repeated keys; other readers keep the first, or refuse.
//! A command whose `amount_to_send_x100` or `command_id` means one thing to the producer's
//! tooling (or an auditing proxy) and another to the relay must not be run: RFC 8259 says
//! such an object's meaning is unpredictable.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Starts the message of the error a repeated key makes, so [`parse`] can tell it apart.
const DUPLICATE: &str = "duplicate key";

/// Why a text is not strict JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictError {
    /// Not JSON at all (syntax, trailing data, nesting deeper than `serde_json`'s limit).
    NotJson,
    /// An object repeats a key.
    DuplicateKey,
}

/// Parses one JSON value, refusing repeated keys at any depth.
pub fn parse(text: &str) -> Result<Value, StrictError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let classify = |e: serde_json::Error| {
        if e.is_data() && e.to_string().starts_with(DUPLICATE) {
            StrictError::DuplicateKey
        } else {
            StrictError::NotJson
        }
    };
    // `deserialize_any` keeps `serde_json`'s recursion limit (128 levels).
    let Strict(value) = Strict::deserialize(&mut de).map_err(classify)?;
    de.end().map_err(classify)?;
    Ok(value)
}

/// A [`Value`] deserialized through [`StrictVisitor`].
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // JSON text cannot spell NaN or infinity; serde_json refuses overflowing literals.
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                // The key itself is not echoed: it is the sender's data.
                return Err(de::Error::custom(DUPLICATE));
            }
            let Strict(v) = map.next_value()?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn repeated_keys_are_refused_at_any_depth() {
        assert_eq!(parse(r#"{"a": 1, "a": 1}"#), Err(StrictError::DuplicateKey));
        assert_eq!(
            parse(r#"{"p": [{"x": {"b": 1, "c": 2, "b": 3}}]}"#),
            Err(StrictError::DuplicateKey)
        );
        // The same key in two objects is not a repetition; escapes are compared decoded.
        assert!(parse(r#"[{"a": 1}, {"a": 2}]"#).is_ok());
        assert_eq!(
            parse(r#"{"a": 1, "\u0061": 2}"#),
            Err(StrictError::DuplicateKey)
        );
    }

    #[test]
    fn what_is_not_json_stays_not_json() {
        for bad in ["", " ", "{", "{} {}", "[1,]", "nul", "{\"a\":1}x", "1e999"] {
            assert_eq!(parse(bad), Err(StrictError::NotJson), "{bad:?}");
        }
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(parse(&deep), Err(StrictError::NotJson));
    }

    proptest! {
        /// Without repeated keys it reads exactly what serde_json reads.
        #[test]
        fn agrees_with_serde_json(text in "[\\[\\]{}\",:0-9a-c .eE+-]{0,40}") {
            let ours = parse(&text);
            let theirs = serde_json::from_str::<Value>(&text);
            match (ours, theirs) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(StrictError::DuplicateKey), Ok(_)) => {}
                (Err(StrictError::NotJson), Err(_)) => {}
                (a, b) => prop_assert!(false, "{:?} vs {:?}", a, b),
            }
        }
    }
}
