//! The small JSON records kept in shared data (ledger slots, seen buckets, breaker states,
//! learned webhooks), written and read by hand.
//!
//! Serde derive made up a large part of the wasm module. These records are a handful of short
//! keys, so they are written straight into a buffer ([`Out`]) and read back by a small pull
//! reader: no tree, so a steady poll that only reads a bucket stays cheap. Strings and skipped
//! numbers go through `json`'s lexer, so records and responses follow one grammar.
//! Reading follows what the derived code accepted: unknown keys are skipped, an optional key
//! may be absent or `null`, and a required key missing or any key of the wrong type makes the
//! record unreadable (`None`). One difference: a key given twice is read twice, the last one
//! standing (the derived code refused it); the writers never repeat a key.

use std::borrow::Cow;

use crate::json;

/// Records are written with the crate's JSON writer.
pub use crate::json::Out;

/// Nesting deeper than this is refused (as serde_json does past 128), so a corrupt record
/// cannot exhaust the stack.
const MAX_DEPTH: u32 = 128;

/// A pull reader over one JSON document. Every method returns `None` on anything it does
/// not expect, which callers pass on with `?`.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes, pos: 0 }
    }

    /// Read the whole document with `read`: nothing but whitespace may follow it.
    pub fn document<T>(bytes: &'a [u8], read: impl FnOnce(&mut Self) -> Option<T>) -> Option<T> {
        let mut r = Reader::new(bytes);
        let value = read(&mut r)?;
        r.ws();
        (r.pos == r.bytes.len()).then_some(value)
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn ws(&mut self) {
        while self.peek().is_some_and(json::is_ws) {
            self.pos += 1;
        }
    }

    /// Skip whitespace, then the next byte if it is `c`.
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        let hit = self.peek() == Some(c);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn literal(&mut self, word: &[u8]) -> bool {
        self.ws();
        let hit = self
            .bytes
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word));
        if hit {
            self.pos += word.len();
        }
        hit
    }

    /// A non-negative integer (no fraction or exponent), as serde reads a `u64`. Read digit
    /// by digit rather than through `json::number_end`: records are mostly integers, and this
    /// is the hot loop of reading one.
    pub fn uint(&mut self) -> Option<u64> {
        self.ws();
        let start = self.pos;
        let mut v: u64 = 0;
        while let Some(c @ b'0'..=b'9') = self.peek() {
            v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
            self.pos += 1;
        }
        let len = self.pos - start;
        // JSON allows no leading zero; a fraction or exponent makes it a float.
        let leading_zero = len > 1 && self.bytes.get(start) == Some(&b'0');
        if len == 0 || leading_zero || matches!(self.peek(), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        Some(v)
    }

    pub fn uint32(&mut self) -> Option<u32> {
        u32::try_from(self.uint()?).ok()
    }

    pub fn boolean(&mut self) -> Option<bool> {
        if self.literal(b"true") {
            Some(true)
        } else if self.literal(b"false") {
            Some(false)
        } else {
            None
        }
    }

    pub fn string(&mut self) -> Option<String> {
        self.str().map(Cow::into_owned)
    }

    /// A string, borrowed when it has no escapes.
    fn str(&mut self) -> Option<Cow<'a, str>> {
        self.ws();
        if self.peek() != Some(b'"') {
            return None;
        }
        let (close, escaped) = json::string_end(self.bytes, self.pos).ok()?;
        let raw = std::str::from_utf8(self.bytes.get(self.pos + 1..close)?).ok()?;
        self.pos = close + 1;
        Some(if escaped {
            Cow::Owned(json::unescape(raw))
        } else {
            Cow::Borrowed(raw)
        })
    }

    /// `null`, consumed; false (nothing consumed) for anything else.
    fn null(&mut self) -> bool {
        self.literal(b"null")
    }

    /// An optional value: `Some(None)` for `null`, `None` when `read` fails.
    pub fn optional<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        if self.null() {
            return Some(None);
        }
        read(self).map(Some)
    }

    /// An object: `field` is called with each key and must read its value.
    pub fn object(&mut self, mut field: impl FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        self.object_dyn(&mut field)
    }

    /// `object`'s loop, compiled once rather than once per record type.
    fn object_dyn(&mut self, field: &mut dyn FnMut(&mut Self, &str) -> Option<()>) -> Option<()> {
        if !self.eat(b'{') {
            return None;
        }
        if self.eat(b'}') {
            return Some(());
        }
        loop {
            let key = self.str()?;
            if !self.eat(b':') {
                return None;
            }
            field(self, &key)?;
            if self.eat(b'}') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// An array: `item` is called for each element and must read it.
    pub fn array(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.array_dyn(&mut item)
    }

    /// `array`'s loop, compiled once.
    fn array_dyn(&mut self, item: &mut dyn FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if !self.eat(b'[') {
            return None;
        }
        if self.eat(b']') {
            return Some(());
        }
        loop {
            item(self)?;
            if self.eat(b']') {
                return Some(());
            }
            if !self.eat(b',') {
                return None;
            }
        }
    }

    /// An array whose every element `read` reads.
    pub fn list<T>(&mut self, mut read: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut out = Vec::new();
        self.array(|r| {
            out.push(read(r)?);
            Some(())
        })?;
        Some(out)
    }

    /// Any value, checked and thrown away: what an unknown key holds.
    pub fn skip(&mut self) -> Option<()> {
        self.skip_at(0)
    }

    fn skip_at(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match self.peek()? {
            b'{' => self.object(|r, _| r.skip_at(depth + 1)),
            b'[' => self.array(|r| r.skip_at(depth + 1)),
            b'"' => self.str().map(drop),
            b't' | b'f' => self.boolean().map(drop),
            b'n' => self.null().then_some(()),
            _ => self.number(),
        }
    }

    /// Any JSON number.
    fn number(&mut self) -> Option<()> {
        self.pos = json::number_end(self.bytes, self.pos).ok()?;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uint(s: &str) -> Option<u64> {
        Reader::document(s.as_bytes(), Reader::uint)
    }

    #[test]
    fn reads_non_negative_integers_only() {
        assert_eq!(uint("0"), Some(0));
        assert_eq!(uint(" 42 "), Some(42));
        assert_eq!(uint("18446744073709551615"), Some(u64::MAX));
        for bad in [
            "",
            "-1",
            "-0",
            "01",
            "1.0",
            "1e3",
            "18446744073709551616",
            "\"1\"",
            "1 2",
        ] {
            assert_eq!(uint(bad), None, "{bad}");
        }
    }

    #[test]
    fn reads_strings_as_serde_json_does() {
        for s in ["", "plain", "q\"b\\s/", "\n\r\t\u{1}\u{7f}", "é😀\u{ffff}"] {
            let json = serde_json::to_string(s).unwrap();
            assert_eq!(
                Reader::document(json.as_bytes(), Reader::string).as_deref(),
                Some(s)
            );
        }
        let escaped = r#""\u00e9\ud83d\ude00\/\b\f""#;
        assert_eq!(
            Reader::document(escaped.as_bytes(), Reader::string).as_deref(),
            Some("é😀/\u{8}\u{c}")
        );
        for bad in [
            r#""unterminated"#,
            "\"raw\ncontrol\"",
            r#""\x""#,
            r#""\ud83d""#,
            r#""\ud83dx""#,
            r#""\u12""#,
            r#""\u+123""#,
            "'single'",
        ] {
            assert_eq!(
                Reader::document(bad.as_bytes(), Reader::string),
                None,
                "{bad}"
            );
        }
        assert_eq!(
            Reader::document(b"\"\xff\"", Reader::string),
            None,
            "not UTF-8"
        );
    }

    #[test]
    fn skips_any_value_and_refuses_malformed_ones() {
        let doc = r#"{"a": [1, -2.5e+3, 0.1E2, "x\"y", true, false, null, {}, []], "b": {"c": {"d": [[]]}}}"#;
        assert_eq!(Reader::document(doc.as_bytes(), Reader::skip), Some(()));
        for bad in [
            "{",
            "[1,]",
            "[1 2]",
            r#"{"a" 1}"#,
            r#"{"a":1,}"#,
            "-",
            "1.",
            "1e",
            "tru",
            "nul",
            "{} {}",
        ] {
            assert_eq!(
                Reader::document(bad.as_bytes(), Reader::skip),
                None,
                "{bad}"
            );
        }
        let deep = "[".repeat(200) + &"]".repeat(200);
        assert_eq!(Reader::document(deep.as_bytes(), Reader::skip), None);
        let ok = "[".repeat(100) + &"]".repeat(100);
        assert_eq!(Reader::document(ok.as_bytes(), Reader::skip), Some(()));
        // The bound, at the value: inside `MAX_DEPTH` arrays or objects it is read; deeper, not.
        let nestings: [fn(usize) -> String; 2] = [
            |n| "[".repeat(n) + "1" + &"]".repeat(n),
            |n| r#"{"k":"#.repeat(n) + "1" + &"}".repeat(n),
        ];
        let limit = MAX_DEPTH as usize;
        for nested in nestings {
            let skip = |n| Reader::document(nested(n).as_bytes(), Reader::skip);
            assert_eq!(
                (skip(limit), skip(limit + 1)),
                (Some(()), None),
                "{}",
                nested(1)
            );
        }
    }

    #[test]
    fn reads_objects_lists_and_optionals() {
        let doc = br#" { "n" : 1 , "l" : [ 2 , 3 ] , "o" : null , "x" : {"y": [true]} } "#;
        let mut seen = Vec::new();
        let read = Reader::document(doc, |r| {
            r.object(|r, key| {
                match key {
                    "n" => seen.push(format!("n={}", r.uint()?)),
                    "l" => seen.push(format!("l={:?}", r.list(Reader::uint)?)),
                    "o" => seen.push(format!("o={:?}", r.optional(Reader::uint)?)),
                    _ => r.skip()?,
                }
                Some(())
            })
        });
        assert_eq!(read, Some(()));
        assert_eq!(seen, ["n=1", "l=[2, 3]", "o=None"]);
        assert_eq!(
            Reader::document(b"[1, \"2\"]", |r| r.list(Reader::uint)),
            None
        );
        assert_eq!(
            Reader::document(b"5", |r| r.optional(Reader::uint)),
            Some(Some(5))
        );
    }
}
