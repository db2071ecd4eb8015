//! Stored position bytes to JSON objects: a value that is not a JSON object is corrupt.

use serde_json::Value;

use super::JsonObject;
use crate::error::{Error, Result};

/// Parses a stored value, which must be a JSON object.
pub fn decode_object(what: &str, raw: &[u8]) -> Result<JsonObject> {
    match serde_json::from_slice::<Value>(raw) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(other) => Err(Error::corrupt(format!(
            "{what} holds a JSON {}, not an object",
            json_type(&other)
        ))),
        Err(err) => Err(Error::corrupt(format!("{what} is not valid JSON: {err}"))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}
