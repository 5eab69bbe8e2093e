//! The small JSON records kept in shared data (ledger slots, seen buckets, breaker states,
//! learned webhooks), written and read by hand.
//!
//! Serde derive made up a large part of the wasm module; these records are a handful of short
//! keys, so they are written straight into a buffer and read back through
//! `serde_json::Value`, which the filter links anyway to read OsmoX's bodies. Reading follows
//! what the derived code accepted: unknown keys are ignored, an optional key may be absent or
//! `null`, and a required key missing or any key of the wrong type makes the record
//! unreadable (`None`).

use serde_json::{Map, Value};

/// A JSON writer for records: `,` and `:` are placed by looking at the last byte written.
#[derive(Default)]
pub struct Out(Vec<u8>);

impl Out {
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// A `,` before a value or key that follows another one.
    fn sep(&mut self) {
        if !matches!(self.0.last(), None | Some(b'{' | b'[' | b':')) {
            self.0.push(b',');
        }
    }

    pub fn begin_object(&mut self) {
        self.sep();
        self.0.push(b'{');
    }

    pub fn end_object(&mut self) {
        self.0.push(b'}');
    }

    pub fn begin_array(&mut self) {
        self.sep();
        self.0.push(b'[');
    }

    pub fn end_array(&mut self) {
        self.0.push(b']');
    }

    /// A key: a short ASCII name that needs no escaping.
    pub fn key(&mut self, key: &str) {
        self.sep();
        self.0.push(b'"');
        self.0.extend_from_slice(key.as_bytes());
        self.0.extend_from_slice(b"\":");
    }

    pub fn uint(&mut self, v: u64) {
        self.sep();
        self.0.extend_from_slice(v.to_string().as_bytes());
    }

    pub fn boolean(&mut self, v: bool) {
        self.sep();
        self.0
            .extend_from_slice(if v { b"true".as_slice() } else { b"false" });
    }

    /// A string, escaped as serde_json escapes it.
    pub fn string(&mut self, v: &str) {
        self.sep();
        // Writing a `str` into a `Vec` cannot fail.
        if serde_json::to_writer(&mut self.0, v).is_err() {
            self.0.extend_from_slice(b"\"\"");
        }
    }
}

/// The parsed record, `None` when the bytes are not JSON.
pub fn parse(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// The keys of a record object.
#[derive(Clone, Copy)]
pub struct Fields<'a>(&'a Map<String, Value>);

pub fn object(v: &Value) -> Option<Fields<'_>> {
    v.as_object().map(Fields)
}

pub fn array(v: &Value) -> Option<&[Value]> {
    v.as_array().map(Vec::as_slice)
}

pub fn uint(v: &Value) -> Option<u64> {
    v.as_u64()
}

pub fn uint32(v: &Value) -> Option<u32> {
    u32::try_from(v.as_u64()?).ok()
}

pub fn string(v: &Value) -> Option<String> {
    v.as_str().map(str::to_string)
}

impl<'a> Fields<'a> {
    /// A required key; `None` when absent.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.0.get(key)
    }

    pub fn uint(&self, key: &str) -> Option<u64> {
        uint(self.get(key)?)
    }

    pub fn uint32(&self, key: &str) -> Option<u32> {
        uint32(self.get(key)?)
    }

    pub fn string(&self, key: &str) -> Option<String> {
        string(self.get(key)?)
    }

    /// An optional key read by `read`: `Some(None)` when absent or `null`, `None` when
    /// present but unreadable.
    pub fn optional<T>(
        &self,
        key: &str,
        read: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<Option<T>> {
        match self.0.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(v) => read(v).map(Some),
        }
    }
}

/// Each element of an array read by `read`; `None` when any is unreadable.
pub fn list<T>(v: &Value, read: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
    array(v)?.iter().map(read).collect()
}
