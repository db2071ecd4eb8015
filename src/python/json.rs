//! JSON bytes straight to Python objects: serde_json's parser drives a visitor that builds
//! the dicts, lists, strs, ints and floats as it reads (no intermediate tree, no text copied
//! into a Python str first). The keys of the objects of one load repeat (every position has
//! the same fields), so each distinct key becomes one `str`, shared, as Python's own decoder
//! does within one document.
//!
//! Numbers: integers that fit in 64 bits become `int`, other numbers `float` (serde_json with
//! `float_roundtrip`). serde_json reads an integer beyond 64 bits as a float too, which
//! `json.loads` would not; a document with a whole float that large (or -0.0, which `-0` also reads as) is refused here, for the
//! caller's fallback (Python's decoder) to read exactly. NaN, infinities and nesting beyond
//! serde_json's limit are refused as well.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyList, PyString};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Decodes JSON objects into `dict`s, sharing key strings across calls on one decoder.
pub struct Decoder<'py> {
    py: Python<'py>,
    keys: RefCell<HashMap<Box<str>, Bound<'py, PyString>>>,
}

impl<'py> Decoder<'py> {
    pub fn new(py: Python<'py>) -> Self {
        Self {
            py,
            keys: RefCell::new(HashMap::new()),
        }
    }

    /// `raw` as a `dict`; `None` when it is not exactly one valid JSON object.
    pub fn object(&self, raw: &[u8]) -> Option<Bound<'py, PyDict>> {
        let mut parser = serde_json::Deserializer::from_slice(raw);
        let value = ValueSeed(self).deserialize(&mut parser).ok()?;
        parser.end().ok()?;
        value.cast_into::<PyDict>().ok()
    }

    fn key(&self, text: &str) -> Bound<'py, PyString> {
        let mut keys = self.keys.borrow_mut();
        if let Some(key) = keys.get(text) {
            return key.clone();
        }
        let key = PyString::new(self.py, text);
        keys.insert(text.into(), key.clone());
        key
    }
}

#[derive(Clone, Copy)]
struct ValueSeed<'a, 'py>(&'a Decoder<'py>);

#[derive(Clone, Copy)]
struct KeySeed<'a, 'py>(&'a Decoder<'py>);

fn py_error<E: de::Error>(err: PyErr) -> E {
    E::custom(err)
}

impl<'de, 'py> DeserializeSeed<'de> for ValueSeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn deserialize<D: de::Deserializer<'de>>(self, parser: D) -> Result<Self::Value, D::Error> {
        parser.deserialize_any(self)
    }
}

impl<'de, 'py> Visitor<'de> for ValueSeed<'_, 'py> {
    type Value = Bound<'py, PyAny>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.py.None().into_bound(self.0.py))
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
        Ok(PyBool::new(self.0.py, value).to_owned().into_any())
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
        let Ok(int) = value.into_pyobject(self.0.py);
        Ok(int.into_any())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
        let Ok(int) = value.into_pyobject(self.0.py);
        Ok(int.into_any())
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
        // Maybe an integer literal beyond 64 bits (or 1e19 and the like, read alike), or `-0`,
        // which serde_json reads as the float -0.0.
        if value.fract() == 0.0 && (value.abs() >= 9.2e18 || value.is_sign_negative()) {
            return Err(E::custom("a whole number beyond 64 bits"));
        }
        Ok(PyFloat::new(self.0.py, value).into_any())
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(PyString::new(self.0.py, value).into_any())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<Self::Value, A::Error> {
        let list = PyList::empty(self.0.py);
        while let Some(item) = items.next_element_seed(self)? {
            list.append(item).map_err(py_error)?;
        }
        Ok(list.into_any())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut entries: A) -> Result<Self::Value, A::Error> {
        let dict = PyDict::new(self.0.py);
        while let Some(key) = entries.next_key_seed(KeySeed(self.0))? {
            let value = entries.next_value_seed(self)?;
            dict.set_item(key, value).map_err(py_error)?;
        }
        Ok(dict.into_any())
    }
}

impl<'de, 'py> DeserializeSeed<'de> for KeySeed<'_, 'py> {
    type Value = Bound<'py, PyString>;

    fn deserialize<D: de::Deserializer<'de>>(self, parser: D) -> Result<Self::Value, D::Error> {
        parser.deserialize_str(self)
    }
}

impl<'de, 'py> Visitor<'de> for KeySeed<'_, 'py> {
    type Value = Bound<'py, PyString>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<Self::Value, E> {
        Ok(self.0.key(value))
    }
}
