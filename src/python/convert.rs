//! Python values <-> JSON, checked before anything is sent (docs/contract.md §7).
//!
//! Accepted: `dict` with `str` keys, `list`, `tuple`, `str`, `int` (64-bit), `float`
//! (finite; round-trips exactly), `bool`, `None`. Anything else is a `TypeError`; NaN,
//! infinities, integers beyond 64 bits and nesting deeper than [`MAX_DEPTH`] are
//! `InvalidInputError` (a `ValueError`). The error names where in the value it was found.

use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use serde_json::{Map, Number, Value};

use super::errors;
use crate::positions::JsonObject;

/// Deeper values are refused (this also stops self-referencing containers).
pub const MAX_DEPTH: usize = 128;

enum Problem {
    Type(String),
    Value(String),
}

struct ConvError {
    problem: Problem,
    /// Innermost first.
    path: Vec<String>,
}

impl ConvError {
    fn type_error(message: String) -> Self {
        ConvError {
            problem: Problem::Type(message),
            path: Vec::new(),
        }
    }
    fn value_error(message: String) -> Self {
        ConvError {
            problem: Problem::Value(message),
            path: Vec::new(),
        }
    }
    fn at(mut self, segment: String) -> Self {
        self.path.push(segment);
        self
    }
    fn into_py(self, py: Python<'_>, what: &str) -> PyErr {
        let path: String = self.path.iter().rev().map(String::as_str).collect();
        match self.problem {
            Problem::Type(message) => PyTypeError::new_err(format!("{what}{path}: {message}")),
            Problem::Value(message) => errors::invalid(py, format!("{what}{path}: {message}")),
        }
    }
}

fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".into())
}

fn to_value(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, ConvError> {
    if depth > MAX_DEPTH {
        return Err(ConvError::value_error(format!(
            "nested deeper than {MAX_DEPTH} levels (a container that contains itself?)"
        )));
    }
    if obj.is_none() {
        return Ok(Value::Null);
    }
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.is_instance_of::<PyInt>() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::from(u));
        }
        return Err(ConvError::value_error(
            "integer does not fit in 64 bits and cannot be stored exactly".into(),
        ));
    }
    if let Ok(f) = obj.cast::<PyFloat>() {
        let v = f.value();
        return Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            ConvError::value_error(format!("{v} cannot be stored as JSON (NaN or infinity)"))
        });
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s
            .to_cow()
            .map(|s| Value::String(s.into_owned()))
            .map_err(|_| ConvError::value_error("string is not valid Unicode".into()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        return dict_to_object(d, depth + 1).map(Value::Object);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        let mut out = Vec::with_capacity(l.len());
        for (i, item) in l.iter().enumerate() {
            out.push(to_value(&item, depth + 1).map_err(|e| e.at(format!("[{i}]")))?);
        }
        return Ok(Value::Array(out));
    }
    if let Ok(t) = obj.cast::<PyTuple>() {
        let mut out = Vec::with_capacity(t.len());
        for (i, item) in t.iter().enumerate() {
            out.push(to_value(&item, depth + 1).map_err(|e| e.at(format!("[{i}]")))?);
        }
        return Ok(Value::Array(out));
    }
    Err(ConvError::type_error(format!(
        "objects of type {} cannot be stored as JSON",
        type_name(obj)
    )))
}

fn dict_to_object(dict: &Bound<'_, PyDict>, depth: usize) -> Result<JsonObject, ConvError> {
    let mut map = Map::new();
    for (key, value) in dict.iter() {
        let Ok(key) = key.cast::<PyString>() else {
            return Err(ConvError::type_error(format!(
                "keys must be str, not {} ({})",
                type_name(&key),
                key.repr().map(|r| r.to_string()).unwrap_or_default()
            )));
        };
        let key = key
            .to_cow()
            .map_err(|_| ConvError::value_error("key is not valid Unicode".into()))?
            .into_owned();
        let value = to_value(&value, depth).map_err(|e| e.at(format!("[{key:?}]")))?;
        map.insert(key, value);
    }
    Ok(map)
}

/// `dict` -> JSON object; `what` names the argument in error messages.
pub fn object_from_py(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<JsonObject> {
    let dict = obj.cast::<PyDict>().map_err(|_| {
        PyTypeError::new_err(format!("{what} must be a dict, not {}", type_name(obj)))
    })?;
    dict_to_object(dict, 1).map_err(|e| e.into_py(py, what))
}

pub fn value_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(value_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => object_to_py(py, map)?.into_any(),
    })
}

pub fn object_to_py<'py>(py: Python<'py>, map: &JsonObject) -> PyResult<Bound<'py, PyDict>> {
    let dict = PyDict::new(py);
    for (key, value) in map {
        dict.set_item(key, value_to_py(py, value)?)?;
    }
    Ok(dict)
}

/// Whether `raw` is one JSON object and nothing after it, judged by its brackets alone (strings
/// and escapes skipped). Several of these joined as `{"symbol": raw, ...}` and parsed as one
/// document then decode into exactly one dict each: a value such as `{}, "other": {}` cannot
/// pose as two positions. The rest of the syntax is left to the parser.
fn is_one_object(raw: &[u8]) -> bool {
    let start = raw.iter().position(|b| !b.is_ascii_whitespace());
    let end = raw.iter().rposition(|b| !b.is_ascii_whitespace());
    let (Some(start), Some(end)) = (start, end) else {
        return false;
    };
    if raw[start] != b'{' || raw[end] != b'}' {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for (i, &b) in raw.iter().enumerate().take(end + 1).skip(start) {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return false;
                }
                depth -= 1;
                if depth == 0 && i != end {
                    return false;
                }
            }
            _ => {}
        }
    }
    depth == 0 && !in_string
}

/// Python's C JSON decoder, refusing NaN and infinities as the Rust decoder does (int("NaN")
/// raises); made once per interpreter.
fn json_decoder(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static DECODER: pyo3::sync::PyOnceLock<Py<PyAny>> = pyo3::sync::PyOnceLock::new();
    DECODER
        .get_or_try_init(py, || {
            let kwargs = PyDict::new(py);
            kwargs.set_item("parse_constant", py.get_type::<PyInt>())?;
            Ok::<_, PyErr>(
                py.import("json")?
                    .getattr("JSONDecoder")?
                    .call((), Some(&kwargs))?
                    .unbind(),
            )
        })
        .map(|decoder| decoder.bind(py))
}

/// JSON object bytes -> `dict` in one pass of Python's C decoder (no intermediate tree);
/// `None` when the bytes are not one valid JSON object, for the caller to report precisely.
pub fn fast_object_to_py<'py>(py: Python<'py>, raw: &[u8]) -> Option<Bound<'py, PyDict>> {
    if !is_one_object(raw) {
        return None;
    }
    let text = std::str::from_utf8(raw).ok()?;
    let decoded = json_decoder(py)
        .ok()?
        .call_method1("decode", (PyString::new(py, text),))
        .ok()?;
    decoded.cast_into::<PyDict>().ok()
}

/// `{symbol: dict}` from (symbol, JSON object bytes) pairs, all parsed by one call of Python's
/// C decoder; `None` when any value is not one valid JSON object.
pub fn fast_objects_to_py<'py>(
    py: Python<'py>,
    items: &[(String, Vec<u8>)],
) -> Option<Bound<'py, PyDict>> {
    let total: usize = items.iter().map(|(s, raw)| s.len() + raw.len() + 8).sum();
    let mut text = String::with_capacity(total + 2);
    text.push('{');
    for (i, (symbol, raw)) in items.iter().enumerate() {
        if !is_one_object(raw) {
            return None;
        }
        if i > 0 {
            text.push(',');
        }
        text.push_str(&serde_json::to_string(symbol).ok()?);
        text.push(':');
        text.push_str(std::str::from_utf8(raw).ok()?);
    }
    text.push('}');
    let decoded = json_decoder(py)
        .ok()?
        .call_method1("decode", (PyString::new(py, &text),))
        .ok()?
        .cast_into::<PyDict>()
        .ok()?;
    (decoded.len() == items.len()).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::is_one_object;

    #[test]
    fn one_object_by_its_brackets() {
        assert!(is_one_object(br#"{"a": [1, {"b": "}"}], "c": "\"{"}"#));
        assert!(is_one_object(b"  {}  "));
        assert!(!is_one_object(br#"{}, "other": {}"#));
        assert!(!is_one_object(br#"{"a": 1}}"#));
        assert!(!is_one_object(b"[1]"));
        assert!(!is_one_object(br#"{"a": "unterminated}"#));
        assert!(!is_one_object(b""));
    }
}
