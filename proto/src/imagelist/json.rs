//! Strict JSON reading for image lists.
//!
//! `serde_json` keeps the last value of a repeated key. For a signed document
//! that is an ambiguity an attacker can exploit (two consumers may read two
//! different values), so [`parse_strict`] rejects any object that repeats a key.
//! [`Fields`] then takes known keys out of an object one by one, with errors
//! that say exactly where the problem sits; what is left over is the set of
//! unknown fields, kept verbatim.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::Error;

/// Parses `bytes` as JSON, rejecting duplicate keys at every depth.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = de.deserialize_any(StrictVisitor).map_err(|e| {
        let text = e.to_string();
        match text.strip_prefix(DUPLICATE) {
            Some(rest) => Error::DuplicateKey(rest.split(" at line").next().unwrap_or(rest).to_owned()),
            None => Error::Json(text),
        }
    })?;
    de.end().map_err(|e| Error::Json(e.to_string()))?;
    Ok(value)
}

const DUPLICATE: &str = "duplicate key ";

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
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
        Number::from_f64(v).map(Value::Number).ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(StrictSeed)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("{DUPLICATE}{key}")));
            }
            let value = map.next_value_seed(StrictSeed)?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

struct StrictSeed;

impl<'de> de::DeserializeSeed<'de> for StrictSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

/// The fields of one JSON object, taken out by name.
#[derive(Debug)]
pub(crate) struct Fields {
    at: String,
    map: Map<String, Value>,
}

impl Fields {
    /// Wraps `value`, which must be an object; `at` names it in errors.
    pub(crate) fn new(at: impl Into<String>, value: Value) -> Result<Self, Error> {
        let at = at.into();
        match value {
            Value::Object(map) => Ok(Self { at, map }),
            other => Err(Error::Field { at, reason: format!("expected an object, found {}", kind(&other)) }),
        }
    }

    /// Where a key of this object sits, for error messages.
    pub(crate) fn path(&self, key: &str) -> String {
        format!("{}/{key}", self.at)
    }

    /// An error about `key`.
    pub(crate) fn error(&self, key: &str, reason: impl Into<String>) -> Error {
        Error::Field { at: self.path(key), reason: reason.into() }
    }

    pub(crate) fn has(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    /// Takes a required value.
    pub(crate) fn value(&mut self, key: &str) -> Result<Value, Error> {
        self.map.remove(key).ok_or_else(|| self.error(key, "required field is missing"))
    }

    /// Takes a required string.
    pub(crate) fn string(&mut self, key: &str) -> Result<String, Error> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.error(key, format!("expected a string, found {}", kind(&other)))),
        }
    }

    /// Takes an optional string.
    pub(crate) fn opt_string(&mut self, key: &str) -> Result<Option<String>, Error> {
        if self.has(key) { self.string(key).map(Some) } else { Ok(None) }
    }

    /// Takes a required string and parses it with `parse`.
    pub(crate) fn parsed<T>(&mut self, key: &str, parse: impl FnOnce(&str) -> Result<T, String>) -> Result<T, Error> {
        let s = self.string(key)?;
        parse(&s).map_err(|reason| self.error(key, reason))
    }

    /// Takes an optional string and parses it with `parse`.
    pub(crate) fn opt_parsed<T>(
        &mut self,
        key: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        if self.has(key) { self.parsed(key, parse).map(Some) } else { Ok(None) }
    }

    /// Takes a non-negative integer given as a JSON number or a decimal
    /// string (both forms occur in published lists).
    pub(crate) fn integer(&mut self, key: &str) -> Result<u64, Error> {
        let parsed = match self.value(key)? {
            Value::Number(n) => n.as_u64().ok_or_else(|| format!("{n} is not a non-negative integer below 2^64")),
            Value::String(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
                s.parse::<u64>().map_err(|_| format!("{s} does not fit in 64 bits"))
            }
            other => Err(format!("expected an integer, found {}", kind(&other))),
        };
        parsed.map_err(|reason| self.error(key, reason))
    }

    /// The fields nobody took, to be kept verbatim.
    pub(crate) fn rest(self) -> BTreeMap<String, Value> {
        self.map.into_iter().collect()
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Builds a JSON object with keys in sorted order, whatever the map type.
pub(crate) fn object(fields: BTreeMap<String, Value>) -> Value {
    Value::Object(fields.into_iter().collect())
}

/// Encodes `value` as the hepixvmitrust producers do: keys sorted, four
/// spaces of indent, and a final newline.
pub(crate) fn encode_pretty(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    // Writing a `Value` into a Vec cannot fail: every key is a string.
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        out.clear();
    }
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_duplicate_keys_at_any_depth() {
        assert!(matches!(parse_strict(br#"{"a":1,"a":2}"#), Err(Error::DuplicateKey(k)) if k == "a"));
        assert!(matches!(parse_strict(br#"{"x":[{"b":1,"b":1}]}"#), Err(Error::DuplicateKey(k)) if k == "b"));
        assert!(parse_strict(br#"{"a":{"a":1}}"#).is_ok());
    }

    #[test]
    fn rejects_trailing_garbage_and_huge_numbers() {
        assert!(matches!(parse_strict(b"{} {}"), Err(Error::Json(_))));
        assert!(matches!(parse_strict(b"[1e400]"), Err(Error::Json(_))));
    }

    #[test]
    fn integers_accept_both_published_forms() {
        let v = parse_strict(br#"{"n":12,"s":"34","neg":-1,"big":"18446744073709551616","f":1.5,"e":""}"#).unwrap();
        let mut f = Fields::new("x", v).unwrap();
        assert_eq!(f.integer("n").unwrap(), 12);
        assert_eq!(f.integer("s").unwrap(), 34);
        assert!(f.integer("neg").is_err());
        assert!(f.integer("big").is_err());
        assert!(f.integer("f").is_err());
        assert!(f.integer("e").is_err());
    }
}
