//! JSON: a strict RFC 8259 parser into a tree that borrows from the source, and a minified
//! writer.
//!
//! serde_json built an owned tree with a `String` per key and printed numbers anew, and with
//! serde it made up a large part of the wasm module. The filter only reads a few fields and
//! copies the rest of a notification through, so a borrowed tree is enough: strings are
//! slices of the source (decoded only when asked, and only when they hold escapes), numbers
//! keep their source text (`129.00` stays `129.00`), and any value writes back out minified
//! from its source bytes.
//!
//! What is accepted matches serde_json: no trailing commas, comments, `NaN`/`Infinity`,
//! leading zeros or raw control characters in strings; `\u` escapes must be valid, surrogates
//! in pairs; whitespace is space, tab, CR and LF only; nothing but whitespace may follow the
//! top value. Containers nested deeper than [`MAX_DEPTH`] are checked without recursion and kept
//! as their source text ([`Value::Deep`]), so a hostile body cannot exhaust the wasm stack, and
//! a document holds at most [`MAX_VALUES`] values, so it cannot exhaust the VM's memory either. A number that rounds to infinity as an `f64` is refused too, decided exactly;
//! serde_json, whose float parsing is not exact, judges a few numbers a hair either side of
//! that otherwise: it refuses `1.7976931348623158e308`, which rounds to `f64::MAX`, and takes
//! `1.79769313486231592e308`, which rounds to infinity, for `f64::MAX`.
//!
//! Repeated keys: an object keeps every member, in document order. [`Object::get`] answers
//! with the *last* one, as serde_json and JavaScript's `JSON.parse` do; iterating sees them
//! all; writing an object back copies them all as they were.

use std::borrow::Cow;
use std::fmt;

/// Where a parsed tree's arrays and objects live: one bump allocator per document, freed
/// whole with it. Each container had its own allocation, and a ten-row page's tree cost
/// more to allocate and drop than to scan.
pub use bumpalo::Bump as Arena;

/// The deepest nesting of arrays and objects built into a tree (serde_json refuses the 128th
/// level). A container below that is still checked, then kept as text: any client of OsmoX
/// writes a notification's `data`, and a refusal there made every row on its page unreadable.
pub const MAX_DEPTH: usize = 127;

/// The most values (containers, members' values and scalars) one document may hold. While
/// it is built a tree costs about 33 bytes a value in wasm32 for an array of numbers (each
/// container's values are gathered, then copied into the arena), 66 for an object's members
/// and 86 for a page's rows (each [`Row`] also records where it lies): up to about 180 MiB at
/// this bound (measured), against as little as two bytes of source (`0,`). Uncapped, one
/// 64 MiB body of zeros would need over a GiB and kill the VM (Envoy caps a VM's memory at
/// 1 GiB). Two million is tens of MB of real OsmoX pages.
pub const MAX_VALUES: usize = 1 << 21;

/// A JSON string as it appears in the source, between its quotes.
#[derive(Debug, Clone, Copy)]
pub struct Str<'a> {
    raw: &'a str,
    /// Holds a `\` escape: its text differs from `raw`.
    escaped: bool,
}

impl<'a> Str<'a> {
    /// The decoded text: borrowed from the source unless it holds escapes.
    pub fn text(self) -> Cow<'a, str> {
        if self.escaped {
            Cow::Owned(unescape(self.raw))
        } else {
            Cow::Borrowed(self.raw)
        }
    }

    /// Whether the decoded text is `s`, without allocating for an unescaped string.
    pub fn is(self, s: &str) -> bool {
        if self.escaped {
            unescape(self.raw) == s
        } else {
            self.raw == s
        }
    }
}

/// A parsed JSON value, borrowing from the source and from the [`Arena`] it was parsed into.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    /// The number's source text, valid JSON number syntax.
    Number(&'a str),
    String(Str<'a>),
    Array(&'a [Value<'a>]),
    Object(Object<'a>),
    /// An array or object nested past [`MAX_DEPTH`], checked and kept as its source text:
    /// nothing reads that deep, and it writes back out minified like any other value.
    Deep(&'a str),
    /// An object in an outermost array, with where it lies: only from [`parse_rows`].
    Row(&'a Row<'a>),
}

/// An object that is an element of an array inside no other array: the rows of a page.
/// Its place lets the same bytes be recognised in a later document ([`SeenRow`]).
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// The object; for a row seen before, its source text, unread ([`Value::Deep`]).
    pub value: Value<'a>,
    /// Where it lies; for a row seen before, with the caller's numbers for it.
    pub place: SeenRow,
    pub seen: bool,
}

/// Where a row lies in a document, and what a later document that repeats its bytes needs
/// to pass over it unread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeenRow {
    pub start: usize,
    pub end: usize,
    pub depth: usize,
    /// Values the object holds, itself included, as they count against [`MAX_VALUES`].
    pub values: usize,
    /// The caller's: the notification the row held, and that observation's identity.
    pub id: u64,
    pub identity: u64,
}

/// Rows of earlier documents, recognised by their bytes.
pub trait SeenRows {
    /// The row whose very bytes `src` holds from `start` on, where an earlier document held
    /// them as a row at `depth`: at its place in `src`. The parser passes over it unread, so
    /// a page whose rows came before costs a scan of what lies between them.
    fn find(&self, src: &[u8], start: usize, depth: usize) -> Option<SeenRow>;
}

/// An object's members in document order, repeated keys included.
#[derive(Debug, Clone, Copy, Default)]
pub struct Object<'a> {
    members: &'a [(Str<'a>, Value<'a>)],
}

impl<'a> Object<'a> {
    /// The value of `key`; the last one when the key is repeated.
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.members
            .iter()
            .rev()
            .find(|(k, _)| k.is(key))
            .map(|(_, v)| v)
    }

    /// Every member in document order.
    pub fn members(&self) -> &'a [(Str<'a>, Value<'a>)] {
        self.members
    }
}

impl<'a> Value<'a> {
    /// `key`'s value when this is an object (see [`Object::get`]).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        self.as_object()?.get(key)
    }

    pub fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Value::Object(o) => Some(o),
            _ => None,
        }
    }

    /// A string's decoded text.
    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        match self {
            Value::String(s) => Some(s.text()),
            _ => None,
        }
    }

    /// A number written as a non-negative integer that fits a `u64` (no fraction or
    /// exponent: `5.0` is not one), as serde_json's `as_u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Number(raw) => raw.parse().ok(),
            _ => None,
        }
    }

    /// A number whose value is a whole one below 2^53, however it is written (`5`, `5.0`,
    /// `1.0E7`): what a JavaScript or GraphQL server that reads it as a double takes as an id.
    /// One written with a fraction and more significant digits than a double holds (near
    /// 2^52) is read through `as_f64`'s rounding, which can differ from the server's exact
    /// reading by one unit: far above any id OsmoX gives out.
    pub fn as_whole(&self) -> Option<u64> {
        // Below 2^53 a double holds every whole number exactly, as the server's do; from there
        // on the server rounds what it reads, and may look up another id than the text's.
        const EXACT: u64 = 1 << 53;
        match self.as_u64() {
            Some(n) => (n < EXACT).then_some(n),
            None => {
                let f = self.as_f64()?;
                let exact = (0.0..9_007_199_254_740_992.0).contains(&f) && f.fract() == 0.0;
                exact.then_some(f as u64)
            }
        }
    }

    /// A number written as an integer that fits an `i64`, as serde_json's `as_i64`: `-0`
    /// is a float there, so it is not one here either.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Number(raw) if *raw != "-0" => raw.parse().ok(),
            _ => None,
        }
    }

    /// Any number as an `f64`: the nearest one when its digits fit (an integer written out
    /// in up to 38 digits, or up to 2^53 scaled by at most 10^±22, which covers every setting
    /// the filter reads), otherwise within a few units in the last place: more digits than
    /// 2^53 holds with a fraction (`126335531285517349.923`) are rounded twice. Written here
    /// rather than with `str::parse`, whose exact algorithm and tables cost 17 KB of wasm.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(raw) => Some(Decimal::of(raw).to_f64()),
            _ => None,
        }
    }

    /// Append the value minified: strings and numbers byte for byte from the source, only
    /// the whitespace between tokens dropped.
    pub fn write(&self, out: &mut String) {
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(true) => out.push_str("true"),
            Value::Bool(false) => out.push_str("false"),
            Value::Number(raw) => out.push_str(raw),
            Value::String(s) => write_raw_str(out, *s),
            Value::Deep(raw) => write_minified(out, raw),
            Value::Row(row) => row.value.write(out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    item.write(out);
                }
                out.push(']');
            }
            Value::Object(obj) => {
                out.push('{');
                for (i, (key, value)) in obj.members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_raw_str(out, *key);
                    out.push(':');
                    value.write(out);
                }
                out.push('}');
            }
        }
    }
}

/// A minified JSON writer: `,` is placed by looking at the last byte written.
#[derive(Default)]
pub struct Out(String);

impl Out {
    pub fn into_bytes(self) -> Vec<u8> {
        self.0.into_bytes()
    }

    /// A `,` before a value or key that follows another one.
    fn sep(&mut self) {
        if !matches!(self.0.as_bytes().last(), None | Some(b'{' | b'[' | b':')) {
            self.0.push(',');
        }
    }

    pub fn begin_object(&mut self) {
        self.sep();
        self.0.push('{');
    }

    pub fn end_object(&mut self) {
        self.0.push('}');
    }

    pub fn begin_array(&mut self) {
        self.sep();
        self.0.push('[');
    }

    pub fn end_array(&mut self) {
        self.0.push(']');
    }

    /// A key: a short ASCII name that needs no escaping.
    pub fn key(&mut self, key: &str) {
        self.sep();
        self.0.push('"');
        self.0.push_str(key);
        self.0.push_str("\":");
    }

    pub fn uint(&mut self, v: u64) {
        self.sep();
        write_u64(&mut self.0, v);
    }

    pub fn boolean(&mut self, v: bool) {
        self.sep();
        self.0.push_str(if v { "true" } else { "false" });
    }

    pub fn null(&mut self) {
        self.sep();
        self.0.push_str("null");
    }

    /// A string, escaped as serde_json escapes it.
    pub fn string(&mut self, v: &str) {
        self.sep();
        write_str(&mut self.0, v);
    }

    /// A parsed value, minified.
    pub fn value(&mut self, v: &Value<'_>) {
        self.sep();
        v.write(&mut self.0);
    }
}

fn write_raw_str(out: &mut String, s: Str<'_>) {
    out.push('"');
    out.push_str(s.raw);
    out.push('"');
}

/// Append valid JSON `raw` with the whitespace between its tokens dropped, without recursion.
fn write_minified(out: &mut String, raw: &str) {
    let b = raw.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        match b.get(i) {
            Some(b'"') => {
                // `raw` was checked: the string ends before `raw` does.
                i = string_end(b, i).map_or(b.len(), |(close, _)| close + 1);
            }
            Some(&c) if is_ws(c) => {
                i += 1;
                continue;
            }
            _ => {
                while b.get(i).is_some_and(|&c| c != b'"' && !is_ws(c)) {
                    i += 1;
                }
            }
        }
        // Cut next to ASCII bytes (quotes, whitespace), so on char boundaries.
        out.push_str(raw.get(start..i).unwrap_or_default());
    }
}

/// Append `s` as a JSON string, escaped as serde_json escapes it: `"`, `\` and control
/// characters only.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    let bytes = s.as_bytes();
    let mut plain = 0;
    let mut i = 0;
    loop {
        i = plain_run_end(bytes, i);
        let Some(&b) = bytes.get(i) else {
            break;
        };
        i += 1;
        let escape: &str = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so both slices fall on character boundaries.
        out.push_str(s.get(plain..i - 1).unwrap_or_default());
        if escape.is_empty() {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.push_str("\\u00");
            for nibble in [b >> 4, b & 0xf] {
                out.push(char::from(
                    HEX.get(usize::from(nibble)).copied().unwrap_or(b'0'),
                ));
            }
        } else {
            out.push_str(escape);
        }
        plain = i;
    }
    out.push_str(s.get(plain..).unwrap_or_default());
    out.push('"');
}

/// Append `v` in decimal.
pub fn write_u64(out: &mut String, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    for d in digits.iter_mut().rev() {
        // `v % 10` is below 10.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (v % 10) as u8;
        *d = b'0' + digit;
        start -= 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for &d in digits.get(start..).unwrap_or_default() {
        out.push(char::from(d));
    }
}

// ---------------------------------------------------------------------------------------------
// Errors

/// Why a document was refused, and where.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Error {
    code: Code,
    /// 1-based.
    line: usize,
    /// 1-based column of the byte at fault; at the end of input, the length of the last line.
    column: usize,
}

/// What went wrong; the messages are serde_json's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Code {
    EofValue,
    EofString,
    EofList,
    EofObject,
    ExpectedValue,
    ExpectedColon,
    ExpectedListEnd,
    ExpectedObjectEnd,
    KeyMustBeString,
    InvalidNumber,
    NumberOutOfRange,
    InvalidEscape,
    InvalidUnicode,
    ControlCharacter,
    TrailingComma,
    TrailingCharacters,
    TooManyValues,
}

impl Code {
    fn message(self) -> &'static str {
        match self {
            Code::EofValue => "EOF while parsing a value",
            Code::EofString => "EOF while parsing a string",
            Code::EofList => "EOF while parsing a list",
            Code::EofObject => "EOF while parsing an object",
            Code::ExpectedValue => "expected value",
            Code::ExpectedColon => "expected `:`",
            Code::ExpectedListEnd => "expected `,` or `]`",
            Code::ExpectedObjectEnd => "expected `,` or `}`",
            Code::KeyMustBeString => "key must be a string",
            Code::InvalidNumber => "invalid number",
            Code::NumberOutOfRange => "number out of range",
            Code::InvalidEscape => "invalid escape",
            Code::InvalidUnicode => "invalid unicode code point",
            Code::ControlCharacter => {
                "control character (\\u0000-\\u001F) found while parsing a string"
            }
            Code::TrailingComma => "trailing comma",
            Code::TrailingCharacters => "trailing characters",
            Code::TooManyValues => "more values than a document may hold",
        }
    }
}

/// A failure at a byte offset (the input's length for its end); the line and column are
/// worked out only when the whole parse fails.
pub(crate) type Fail = (Code, usize);

impl Error {
    fn at(src: &[u8], (code, offset): Fail) -> Error {
        let seen = src.get(..offset).unwrap_or(src);
        let line_start = seen.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = 1 + seen.iter().filter(|&&b| b == b'\n').count();
        let column = offset - line_start + usize::from(offset < src.len());
        Error { code, line, column }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at line {} column {}",
            self.code.message(),
            self.line,
            self.column
        )
    }
}

impl std::error::Error for Error {}

// ---------------------------------------------------------------------------------------------
// Lexing, shared with the record reader

pub(crate) fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The string whose opening quote is at `open`: the index of its closing quote, and whether
/// it holds escapes. Escapes are checked, not decoded; UTF-8 is the caller's to check.
// Inlined into its callers, with `plain_run_end`: a page's strings are short (13 bytes on
// average), so the call and its returned `Result` cost about as much as the scan; inlined,
// a changed 10-row page costs 4 % fewer instructions in Envoy (callgrind, row s3v).
#[inline(always)]
pub(crate) fn string_end(src: &[u8], open: usize) -> Result<(usize, bool), Fail> {
    let mut i = open + 1;
    let mut escaped = false;
    loop {
        i = plain_run_end(src, i);
        match src.get(i) {
            None => return Err((Code::EofString, i)),
            Some(b'"') => return Ok((i, escaped)),
            Some(b'\\') => {
                escaped = true;
                i = escape_end(src, i)?;
            }
            Some(0..=0x1f) => return Err((Code::ControlCharacter, i)),
            Some(_) => i += 1,
        }
    }
}

/// The first byte at or after `i` that is `"`, `\\` or a control character, eight bytes at a
/// time: most of a body is string content, so this is where parsing spends its time. Past
/// the last whole word it stops early; the caller steps over plain bytes one at a time there.
#[inline(always)]
fn plain_run_end(src: &[u8], mut i: usize) -> usize {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_le_bytes([0x80; 8]);
    // Bytes of `w` that are zero, or (for `below`) less than n <= 0x80, get their high bit set.
    // A borrow can also flag a byte above a flagged one, never below: the lowest flag is exact.
    let zero = |w: u64| w.wrapping_sub(ONES) & !w & HIGHS;
    let below = |w: u64, n: u64| w.wrapping_sub(ONES * n) & !w & HIGHS;
    while let Some(chunk) = src.get(i..i + 8) {
        let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
            break;
        };
        let w = u64::from_le_bytes(bytes);
        let special = zero(w ^ (ONES * u64::from(b'"')))
            | zero(w ^ (ONES * u64::from(b'\\')))
            | below(w, 0x20);
        if special != 0 {
            // Little-endian: the lowest flagged byte is the first in the source.
            return i + (special.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i
}

/// Check the escape whose `\` is at `at`; the index after it.
fn escape_end(src: &[u8], at: usize) -> Result<usize, Fail> {
    match src.get(at + 1) {
        None => Err((Code::EofString, at + 1)),
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(at + 2),
        Some(b'u') => match hex4(src, at + 2)? {
            0xd800..=0xdbff => {
                let low = at + 6;
                if src.get(low..low + 2) != Some(b"\\u") {
                    return Err((Code::InvalidUnicode, low));
                }
                match hex4(src, low + 2)? {
                    0xdc00..=0xdfff => Ok(low + 6),
                    _ => Err((Code::InvalidUnicode, low)),
                }
            }
            0xdc00..=0xdfff => Err((Code::InvalidUnicode, at)),
            _ => Ok(at + 6),
        },
        Some(_) => Err((Code::InvalidEscape, at + 1)),
    }
}

/// The four hex digits at `at`.
fn hex4(src: &[u8], at: usize) -> Result<u32, Fail> {
    let mut v = 0u32;
    for i in at..at + 4 {
        let digit = match src.get(i) {
            None => return Err((Code::EofString, i)),
            Some(&b) => char::from(b).to_digit(16),
        };
        v = v * 16 + digit.ok_or((Code::InvalidEscape, i))?;
    }
    Ok(v)
}

/// Decode the escapes of a string that [`string_end`] accepted.
pub(crate) fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(i) = rest.find('\\') {
        out.push_str(rest.get(..i).unwrap_or_default());
        let b = rest.as_bytes();
        let (ch, len) = match b.get(i + 1) {
            Some(b'b') => ('\u{8}', 2),
            Some(b'f') => ('\u{c}', 2),
            Some(b'n') => ('\n', 2),
            Some(b'r') => ('\r', 2),
            Some(b't') => ('\t', 2),
            Some(b'u') => {
                let unit = |at: usize| hex4(b, at).unwrap_or(0xfffd);
                let hi = unit(i + 2);
                if (0xd800..0xdc00).contains(&hi) {
                    let lo = unit(i + 8);
                    let c = 0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff);
                    (char::from_u32(c).unwrap_or('\u{fffd}'), 12)
                } else {
                    (char::from_u32(hi).unwrap_or('\u{fffd}'), 6)
                }
            }
            // `"`, `\` and `/` stand for themselves.
            Some(&c) => (char::from(c), 2),
            None => break,
        };
        out.push(ch);
        rest = rest.get(i + len..).unwrap_or_default();
    }
    out.push_str(rest);
    out
}

/// The number starting at `start`: the index after it. A number too large for an `f64` is
/// refused, as serde_json does.
#[inline(always)]
pub(crate) fn number_end(src: &[u8], start: usize) -> Result<usize, Fail> {
    let digits = |mut i: usize| {
        while src.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        i
    };
    let need_digit = |i: usize| match src.get(i) {
        Some(b'0'..=b'9') => Ok(()),
        Some(_) => Err((Code::InvalidNumber, i)),
        None => Err((Code::EofValue, i)),
    };
    let mut i = start;
    if src.get(i) == Some(&b'-') {
        i += 1;
    }
    need_digit(i)?;
    let int_start = i;
    if src.get(i) == Some(&b'0') {
        i += 1;
        if src.get(i).is_some_and(u8::is_ascii_digit) {
            return Err((Code::InvalidNumber, i));
        }
    } else {
        i = digits(i);
    }
    // More digits than any finite f64 has before the point, or an exponent, may overflow.
    let mut may_overflow = i - int_start > 300;
    if src.get(i) == Some(&b'.') {
        need_digit(i + 1)?;
        i = digits(i + 1);
    }
    if matches!(src.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(src.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        need_digit(i)?;
        i = digits(i);
        may_overflow = true;
    }
    if may_overflow {
        let finite = src
            .get(start..i)
            .and_then(|b| std::str::from_utf8(b).ok())
            .is_some_and(|s| !Decimal::of(s).overflows());
        if !finite {
            // Where serde_json reports it: the number's last byte.
            return Err((Code::NumberOutOfRange, i - 1));
        }
    }
    Ok(i)
}

/// A valid JSON number's value as decimal digits: ±0.d₁d₂d₃… × 10^`point`, where the digits
/// are those of `mantissa` (the text before any exponent, `.` skipped) after `lead` zeros.
struct Decimal<'a> {
    negative: bool,
    mantissa: &'a str,
    lead: usize,
    point: i64,
    /// Every digit is zero.
    zero: bool,
}

/// The least value that rounds to infinity as an `f64`, 2^1024 − 2^970: its 309 digits.
const OVERFLOW_DIGITS: &str = concat!(
    "179769313486231580793728971405303415079934132710037826936173778980444968292764750946649017",
    "977587207096330286416692887910946555547851940402630657488671505820681908902000708383676273",
    "854845817711531764475730270069855571366959622842914819860834936475292719074168444365510704",
    "342711559699508093042880177904174497792",
);

impl<'a> Decimal<'a> {
    /// `raw` must be valid JSON number syntax.
    fn of(raw: &'a str) -> Self {
        let negative = raw.starts_with('-');
        let body = raw.trim_start_matches('-');
        let (mantissa, exponent) = body.split_once(['e', 'E']).unwrap_or((body, "0"));
        let exponent = exponent.trim_start_matches('+');
        let (exp_negative, exp_digits) = match exponent.strip_prefix('-') {
            Some(digits) => (true, digits),
            None => (false, exponent),
        };
        // Saturates far beyond any exponent that matters (|point| > 10^15 is 0 or infinite).
        let exp = exp_digits.bytes().fold(0i64, |e, d| {
            e.saturating_mul(10)
                .saturating_add(i64::from(d - b'0'))
                .min(1 << 50)
        });
        let exp = if exp_negative { -exp } else { exp };
        let int_len = mantissa.find('.').unwrap_or(mantissa.len());
        let lead = mantissa
            .bytes()
            .filter(u8::is_ascii_digit)
            .take_while(|&d| d == b'0')
            .count();
        let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
        let to_i64 = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        Decimal {
            negative,
            mantissa,
            lead,
            point: to_i64(int_len)
                .saturating_sub(to_i64(lead))
                .saturating_add(exp),
            zero: lead == digits,
        }
    }

    /// The significant digits, as ASCII, trailing zeros included.
    fn digits(&self) -> impl Iterator<Item = u8> + 'a {
        self.mantissa
            .bytes()
            .filter(u8::is_ascii_digit)
            .skip(self.lead)
    }

    /// Whether the value rounds to infinity as an `f64` (serde_json refuses such numbers).
    fn overflows(&self) -> bool {
        if self.zero || self.point < 309 {
            return false;
        }
        if self.point > 309 {
            return true;
        }
        // The same number of digits before the point: compare digit by digit.
        let mut limit = OVERFLOW_DIGITS.bytes();
        for d in self.digits() {
            match limit.next() {
                Some(l) if d != l => return d > l,
                Some(_) => {}
                // Equal to the limit so far and longer: at least the limit, which rounds up.
                None => return true,
            }
        }
        // Equal so far: the limit itself rounds up; a shorter value is below it.
        limit.next().is_none()
    }

    fn to_f64(&self) -> f64 {
        let magnitude = if self.zero {
            0.0
        } else {
            let mut m: u128 = 0;
            let mut used: i64 = 0;
            for d in self.digits().take(38) {
                m = m * 10 + u128::from(d - b'0');
                used += 1;
            }
            // Zeros after the point change nothing but can make `m` too large to be exact
            // (`12345.000000000000000000`), or its scale past 10^-22 (`1.0e-22`): drop them
            // while either is, so that such a number takes the exact path when the rest
            // fits, and a whole one stays whole. Only down to the point: an integer's own
            // zeros would trade `m`'s one rounding for a scaling's two.
            while (m > 1 << 53 || self.point.saturating_sub(used) < -22)
                && m.is_multiple_of(10)
                && used > self.point
            {
                m /= 10;
                used -= 1;
            }
            // The value is m × 10^scale, up to the digits past the 38th.
            scale(m, self.point.saturating_sub(used))
        };
        if self.negative {
            -magnitude
        } else {
            magnitude
        }
    }
}

/// m × 10^e as an `f64`: one rounding when m and 10^|e| are both exact (m ≤ 2^53,
/// |e| ≤ 22; or e = 0), else a few.
fn scale(m: u128, mut e: i64) -> f64 {
    /// 10^k for k ≤ 22, exact.
    fn pow10(k: i64) -> f64 {
        (0..k).fold(1.0, |p, _| p * 10.0)
    }
    let mut v = m as f64;
    if m <= 1 << 53 && (-22..=22).contains(&e) {
        return if e < 0 { v / pow10(-e) } else { v * pow10(e) };
    }
    while e > 0 && v.is_finite() {
        let k = e.min(22);
        v *= pow10(k);
        e -= k;
    }
    while e < 0 && v != 0.0 {
        let k = (-e).min(22);
        v /= pow10(k);
        e += k;
    }
    v
}

// ---------------------------------------------------------------------------------------------
// Parsing

/// Parse a whole document.
pub fn parse<'a>(src: &'a [u8], arena: &'a Arena) -> Result<Value<'a>, Error> {
    parse_with(src, arena, false, None)
}

/// [`parse`], with each object in an outermost array wrapped as a [`Value::Row`], and those
/// `seen` finds passed over unread. The tree is the one [`parse`] builds, row wrappers
/// aside, and so is every error: a seen row counts its values as if read.
pub fn parse_rows<'a>(
    src: &'a [u8],
    arena: &'a Arena,
    seen: Option<&dyn SeenRows>,
) -> Result<Value<'a>, Error> {
    parse_with(src, arena, true, seen)
}

fn parse_with<'a>(
    src: &'a [u8],
    arena: &'a Arena,
    rows: bool,
    seen: Option<&dyn SeenRows>,
) -> Result<Value<'a>, Error> {
    // Checked once here, so that every string is a slice of `text` with no check of its own.
    // Outside strings only ASCII is valid, so this refuses nothing that serde_json accepts.
    let text = std::str::from_utf8(src)
        .map_err(|e| Error::at(src, (Code::InvalidUnicode, e.valid_up_to())))?;
    let mut p = Parser {
        src,
        arena,
        text,
        pos: 0,
        depth: 0,
        values: 0,
        items: Vec::with_capacity(64),
        members: Vec::with_capacity(128),
        rows,
        arrays: 0,
        seen,
    };
    p.document().map_err(|fail| Error::at(src, fail))
}

struct Parser<'a, 's> {
    src: &'a [u8],
    arena: &'a Arena,
    /// `src`, known to be UTF-8.
    text: &'a str,
    pos: usize,
    depth: usize,
    /// Values read so far, against [`MAX_VALUES`].
    values: usize,
    /// The open arrays' elements and open objects' members, so each container is allocated
    /// once at its exact size rather than grown as it is read.
    items: Vec<Value<'a>>,
    members: Vec<(Str<'a>, Value<'a>)>,
    /// Wrap the objects of outermost arrays as rows.
    rows: bool,
    /// Arrays open around `pos`.
    arrays: usize,
    seen: Option<&'s dyn SeenRows>,
}

impl<'a> Parser<'a, '_> {
    fn document(&mut self) -> Result<Value<'a>, Fail> {
        let value = self.value()?;
        match self.next() {
            None => Ok(value),
            Some(_) => Err((Code::TrailingCharacters, self.pos)),
        }
    }

    /// Skip whitespace; the next byte, not consumed.
    fn next(&mut self) -> Option<u8> {
        while let Some(&b) = self.src.get(self.pos) {
            if !is_ws(b) {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn fail<T>(&self, code: Code) -> Result<T, Fail> {
        Err((code, self.pos))
    }

    fn value(&mut self) -> Result<Value<'a>, Fail> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return self.fail(Code::TooManyValues);
        }
        match self.next() {
            None => self.fail(Code::EofValue),
            Some(b'{' | b'[') if self.depth >= MAX_DEPTH => self.deep(),
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Value::String),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.pos;
                self.pos = number_end(self.src, start)?;
                // The span is ASCII: '-', digits, '.', 'e', '+'.
                let raw = self.text(start, self.pos)?;
                Ok(Value::Number(raw))
            }
            Some(_) => self.fail(Code::ExpectedValue),
        }
    }

    fn text(&self, start: usize, end: usize) -> Result<&'a str, Fail> {
        // Cut next to ASCII bytes (quotes, number bounds), so always on char boundaries.
        self.text
            .get(start..end)
            .ok_or((Code::InvalidUnicode, start))
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, Fail> {
        for expected in word.bytes() {
            match self.src.get(self.pos) {
                None => return self.fail(Code::EofValue),
                Some(&b) if b == expected => self.pos += 1,
                Some(_) => return self.fail(Code::ExpectedValue),
            }
        }
        Ok(value)
    }

    /// The string at `self.pos` (its opening quote). Inlined, as `string_end` and
    /// `number_end` are: out of line, a page's 391 strings cost 11 % more instructions
    /// natively, its numbers 2 % (callgrind).
    #[inline(always)]
    fn string(&mut self) -> Result<Str<'a>, Fail> {
        let (close, escaped) = string_end(self.src, self.pos)?;
        let raw = self.text(self.pos + 1, close)?;
        self.pos = close + 1;
        Ok(Str { raw, escaped })
    }

    fn enter(&mut self) {
        self.depth += 1;
        self.pos += 1;
    }

    /// The container at `self.pos`, checked with a stack of its open brackets instead of
    /// recursion, under the same grammar and errors as `array` and `object`. Kept out of
    /// `value`, whose every call it would otherwise weigh on.
    #[cold]
    #[inline(never)]
    fn deep(&mut self) -> Result<Value<'a>, Fail> {
        let start = self.pos;
        let mut open: Vec<u8> = Vec::new();
        loop {
            // A value is due at `self.pos`.
            match self.next() {
                Some(kind @ (b'{' | b'[')) => {
                    self.pos += 1;
                    open.push(kind);
                    let close = if kind == b'{' { b'}' } else { b']' };
                    match self.next() {
                        Some(c) if c == close => {
                            self.pos += 1;
                            open.pop();
                        }
                        None if kind == b'{' => return self.fail(Code::EofObject),
                        None => return self.fail(Code::EofList),
                        Some(_) if kind == b'{' => {
                            self.deep_key()?;
                            continue;
                        }
                        Some(_) => continue,
                    }
                }
                Some(b'"') => self.string().map(drop)?,
                Some(b't') => self.literal("true", Value::Bool(true)).map(drop)?,
                Some(b'f') => self.literal("false", Value::Bool(false)).map(drop)?,
                Some(b'n') => self.literal("null", Value::Null).map(drop)?,
                Some(b'-' | b'0'..=b'9') => self.pos = number_end(self.src, self.pos)?,
                Some(_) => return self.fail(Code::ExpectedValue),
                None => return self.fail(Code::EofValue),
            }
            // A value ended: close what it ends, up to the next one due.
            loop {
                let Some(&kind) = open.last() else {
                    return Ok(Value::Deep(self.text(start, self.pos)?));
                };
                let in_object = kind == b'{';
                match self.next() {
                    None if in_object => return self.fail(Code::EofObject),
                    None => return self.fail(Code::EofList),
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.deep_key()?;
                        } else if self.next() == Some(b']') {
                            return self.fail(Code::TrailingComma);
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(_) if in_object => return self.fail(Code::ExpectedObjectEnd),
                    Some(_) => return self.fail(Code::ExpectedListEnd),
                }
            }
        }
    }

    /// A member's key and its `:`, inside an object `deep` is checking.
    fn deep_key(&mut self) -> Result<(), Fail> {
        match self.next() {
            None => return self.fail(Code::EofObject),
            Some(b'"') => self.string().map(drop)?,
            Some(b'}') => return self.fail(Code::TrailingComma),
            Some(_) => return self.fail(Code::KeyMustBeString),
        }
        match self.next() {
            None => self.fail(Code::EofObject),
            Some(b':') => {
                self.pos += 1;
                Ok(())
            }
            Some(_) => self.fail(Code::ExpectedColon),
        }
    }

    fn array(&mut self) -> Result<Value<'a>, Fail> {
        self.enter();
        let outermost = self.rows && self.arrays == 0;
        self.arrays += 1;
        let base = self.items.len();
        match self.next() {
            None => return self.fail(Code::EofList),
            Some(b']') => self.pos += 1,
            Some(_) => loop {
                let item = if outermost {
                    self.row()?
                } else {
                    self.value()?
                };
                self.items.push(item);
                match self.next() {
                    None => return self.fail(Code::EofList),
                    Some(b',') => {
                        self.pos += 1;
                        if self.next() == Some(b']') {
                            return self.fail(Code::TrailingComma);
                        }
                    }
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    Some(_) => return self.fail(Code::ExpectedListEnd),
                }
            },
        }
        self.depth -= 1;
        self.arrays -= 1;
        // Copied out, then truncated: values are `Copy`, and draining them one by one cost
        // 6 % of a page's parse (callgrind, natively).
        let items = self
            .arena
            .alloc_slice_copy(self.items.get(base..).unwrap_or_default());
        self.items.truncate(base);
        Ok(Value::Array(items))
    }

    /// An element of an outermost array (`next` is due): an object is a [`Row`].
    fn row(&mut self) -> Result<Value<'a>, Fail> {
        if self.next() != Some(b'{') || self.depth >= MAX_DEPTH {
            return self.value();
        }
        let (start, depth, values) = (self.pos, self.depth, self.values);
        let row = match self.seen.and_then(|seen| seen.find(self.src, start, depth)) {
            // Past the bound on values, it is read, to fail where it would have.
            Some(s)
                if s.start == start
                    && s.depth == depth
                    && s.end <= self.src.len()
                    && values + s.values <= MAX_VALUES =>
            {
                self.values += s.values;
                self.pos = s.end;
                Row {
                    value: Value::Deep(self.text(start, s.end)?),
                    place: s,
                    seen: true,
                }
            }
            _ => {
                let value = self.value()?;
                Row {
                    value,
                    place: SeenRow {
                        start,
                        end: self.pos,
                        depth,
                        values: self.values - values,
                        id: 0,
                        identity: 0,
                    },
                    seen: false,
                }
            }
        };
        Ok(Value::Row(self.arena.alloc(row)))
    }

    fn object(&mut self) -> Result<Value<'a>, Fail> {
        self.enter();
        let base = self.members.len();
        if self.next() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                let key = match self.next() {
                    None => return self.fail(Code::EofObject),
                    Some(b'"') => self.string()?,
                    Some(b'}') => return self.fail(Code::TrailingComma),
                    Some(_) => return self.fail(Code::KeyMustBeString),
                };
                match self.next() {
                    None => return self.fail(Code::EofObject),
                    Some(b':') => self.pos += 1,
                    Some(_) => return self.fail(Code::ExpectedColon),
                }
                let value = self.value()?;
                self.members.push((key, value));
                match self.next() {
                    None => return self.fail(Code::EofObject),
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    Some(_) => return self.fail(Code::ExpectedObjectEnd),
                }
            }
        }
        self.depth -= 1;
        let members = self
            .arena
            .alloc_slice_copy(self.members.get(base..).unwrap_or_default());
        self.members.truncate(base);
        Ok(Value::Object(Object { members }))
    }
}

/// For tests: rows known to lie where they are listed, at whatever depth (the parser checks
/// that).
#[cfg(test)]
pub(crate) struct Listed<'r>(pub &'r [SeenRow]);

#[cfg(test)]
impl SeenRows for Listed<'_> {
    fn find(&self, _: &[u8], start: usize, _: usize) -> Option<SeenRow> {
        self.0.iter().find(|s| s.start == start).copied()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A parse whose arena lives as long as the test, so values may be held freely.
    fn parse(src: &[u8]) -> Result<Value<'_>, Error> {
        super::parse(src, Box::leak(Box::new(Arena::new())))
    }

    fn ok(src: &str) -> Value<'_> {
        parse(src.as_bytes()).unwrap()
    }

    fn minified(v: &Value<'_>) -> String {
        let mut out = String::new();
        v.write(&mut out);
        out
    }

    /// `src` parsed for rows, with `seen` passed over.
    fn rows_of<'a>(src: &'a str, seen: &[SeenRow]) -> Result<Value<'a>, Error> {
        let arena = Box::leak(Box::new(Arena::new()));
        parse_rows(src.as_bytes(), arena, Some(&Listed(seen)))
    }

    /// Every row in the tree, depth first.
    fn rows_in<'a>(v: &Value<'a>, out: &mut Vec<Row<'a>>) {
        match v {
            Value::Row(row) => {
                out.push(**row);
                rows_in(&row.value, out);
            }
            Value::Array(items) => items.iter().for_each(|i| rows_in(i, out)),
            Value::Object(o) => o.members().iter().for_each(|(_, v)| rows_in(v, out)),
            _ => {}
        }
    }

    const PAGE: &str = r#"{"data": {"list": [ {"id": 1, "tags": [{"a": 1}, {"b": [2]}]},
        3, {"id": 2, "s": "x\"}"} , [{"nested": true}] ], "more": [{"id": 3}]}}"#;

    /// Only the objects of outermost arrays are rows, where their bytes lie, each with the
    /// values it holds; the tree writes out as `parse`'s does.
    #[test]
    fn rows_are_the_objects_of_outermost_arrays() {
        let tree = rows_of(PAGE, &[]).unwrap();
        assert_eq!(minified(&tree), minified(&ok(PAGE)));
        let mut rows = Vec::new();
        rows_in(&tree, &mut rows);
        let texts: Vec<&str> = rows
            .iter()
            .map(|r| &PAGE[r.place.start..r.place.end])
            .collect();
        assert_eq!(
            texts,
            [
                r#"{"id": 1, "tags": [{"a": 1}, {"b": [2]}]}"#,
                r#"{"id": 2, "s": "x\"}"}"#,
                r#"{"id": 3}"#
            ]
        );
        // An object, its members' values, and the items of its arrays.
        let values: Vec<usize> = rows.iter().map(|r| r.place.values).collect();
        assert_eq!(values, [8, 3, 2]);
        assert!(rows.iter().all(|r| r.place.depth == 3 && !r.seen));
        // A plain parse makes no rows.
        let mut none = Vec::new();
        rows_in(&ok(PAGE), &mut none);
        assert!(none.is_empty());
    }

    /// A row seen before is passed over, tagged, and writes out as read; one that does not
    /// start where a row starts, or at another depth, is read.
    #[test]
    fn seen_rows_are_passed_over_only_where_a_row_starts_at_their_depth() {
        let mut rows = Vec::new();
        rows_in(&rows_of(PAGE, &[]).unwrap(), &mut rows);
        let seen: Vec<SeenRow> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| SeenRow {
                id: 10 + i as u64,
                ..r.place
            })
            .collect();
        let tree = rows_of(PAGE, &seen).unwrap();
        assert_eq!(minified(&tree), minified(&ok(PAGE)));
        let mut got = Vec::new();
        rows_in(&tree, &mut got);
        let ids: Vec<Option<u64>> = got.iter().map(|r| r.seen.then_some(r.place.id)).collect();
        assert_eq!(ids, [Some(10), Some(11), Some(12)]);
        assert!(got.iter().all(|r| matches!(r.value, Value::Deep(_))));
        let misplaced = [
            SeenRow {
                depth: 2,
                ..seen[0]
            },
            SeenRow {
                start: seen[1].start + 1,
                ..seen[1]
            },
        ];
        let mut got = Vec::new();
        rows_in(&rows_of(PAGE, &misplaced).unwrap(), &mut got);
        assert!(got.iter().all(|r| !r.seen), "{got:?}");
        assert_eq!(got.len(), 3);
    }

    /// Passing a row over changes no verdict: what follows it is still checked, and an
    /// error is reported where `parse` reports it.
    #[test]
    fn a_document_with_seen_rows_fails_as_parse_fails() {
        let good = r#"[{"a": 1}, {"b": 2}]"#;
        let mut rows = Vec::new();
        rows_in(&rows_of(good, &[]).unwrap(), &mut rows);
        let seen: Vec<SeenRow> = rows.iter().map(|r| r.place).collect();
        for bad in [
            r#"[{"a": 1}, {"b": 2},]"#,
            r#"[{"a": 1}, {"b": 2}] x"#,
            r#"[{"a": 1}, {"b": 2}"#,
            r#"[{"a": 1}, {"b": 2} {"c": 3}]"#,
        ] {
            let want = parse(bad.as_bytes()).unwrap_err().to_string();
            let got = rows_of(bad, &seen).unwrap_err().to_string();
            assert_eq!(got, want, "{bad}");
        }
    }

    /// The values a seen row holds count as if read: a document too large for a tree is
    /// refused, at the same place, whether its rows were seen or not.
    #[test]
    fn seen_rows_count_against_the_bound_on_values() {
        let row = format!("{{\"a\":[{}0]}}", "0,".repeat(MAX_VALUES / 2));
        let doc = format!("[{row},{row}]");
        let mut rows = Vec::new();
        let half = format!("[{row}]");
        rows_in(&rows_of(&half, &[]).unwrap(), &mut rows);
        let first = rows[0].place;
        let second = SeenRow {
            start: first.end + 1,
            end: 2 * first.end,
            ..first
        };
        assert_eq!(&doc[second.start..second.end], row);
        let want = parse(doc.as_bytes()).unwrap_err().to_string();
        assert!(want.starts_with("more values than"), "{want}");
        assert_eq!(
            rows_of(&doc, &[first, second]).unwrap_err().to_string(),
            want
        );
        assert_eq!(rows_of(&doc, &[first]).unwrap_err().to_string(), want);
    }

    /// A seen row that brings the document to exactly the bound on values is passed over:
    /// only one past it is read, to fail where it would have.
    #[test]
    fn a_seen_row_that_reaches_the_bound_on_values_exactly_is_passed_over() {
        // The array, then each row: itself, its array and its numbers (and one `null`).
        let n = (MAX_VALUES - 6) / 2;
        let first = format!("{{\"a\":[{}0]}}", "0,".repeat(n - 1));
        let second = format!("{{\"a\":[{}0],\"b\":null}}", "0,".repeat(n - 1));
        let doc = format!("[{first},{second}]");
        let mut rows = Vec::new();
        rows_in(&rows_of(&doc, &[]).unwrap(), &mut rows);
        assert_eq!(1 + rows[0].place.values + rows[1].place.values, MAX_VALUES);
        let mut got = Vec::new();
        rows_in(&rows_of(&doc, &[rows[1].place]).unwrap(), &mut got);
        assert!(got[1].seen, "passed over at the bound");
        // One value more: the seen row is read, and the document refused where `parse`
        // refuses it.
        let over = format!("[{first},{}]", second.replace("null}", "null,\"c\":0}"));
        let want = parse(over.as_bytes()).unwrap_err().to_string();
        assert!(want.starts_with("more values than"), "{want}");
        let seen = SeenRow {
            end: over.len() - 1,
            values: rows[1].place.values + 1,
            ..rows[1].place
        };
        assert!(over[seen.start..seen.end].ends_with(",\"c\":0}"));
        assert_eq!(rows_of(&over, &[seen]).unwrap_err().to_string(), want);
    }

    /// A row said to end past the document is read, not trusted: the parse goes on as
    /// `parse` would.
    #[test]
    fn a_seen_row_ending_past_the_document_is_read() {
        let doc = r#"[{"a":1}]"#;
        let mut rows = Vec::new();
        rows_in(&rows_of(doc, &[]).unwrap(), &mut rows);
        let beyond = SeenRow {
            end: doc.len() + 8,
            ..rows[0].place
        };
        let mut got = Vec::new();
        rows_in(&rows_of(doc, &[beyond]).unwrap(), &mut got);
        assert!(!got[0].seen);
        assert_eq!(minified(&got[0].value), r#"{"a":1}"#);
    }

    /// Our tree as serde_json's, numbers read by serde_json from their source text.
    fn to_serde(v: &Value<'_>) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(raw) => serde_json::from_str(raw).unwrap(),
            Value::String(s) => serde_json::Value::String(s.text().into_owned()),
            Value::Array(items) => serde_json::Value::Array(items.iter().map(to_serde).collect()),
            Value::Deep(_) => unreachable!("nested deeper than serde_json reads"),
            Value::Row(row) => to_serde(&row.value),
            Value::Object(obj) => {
                let mut map = serde_json::Map::new();
                for (k, v) in obj.members() {
                    map.insert(k.text().into_owned(), to_serde(v));
                }
                serde_json::Value::Object(map)
            }
        }
    }

    fn serde_accepts(src: &[u8]) -> bool {
        serde_json::from_slice::<serde_json::Value>(src).is_ok()
    }

    /// The source without whitespace outside strings.
    fn strip_ws(src: &str) -> String {
        let mut out = String::new();
        let mut in_str = false;
        let mut escape = false;
        for c in src.chars() {
            if in_str {
                out.push(c);
                if escape {
                    escape = false;
                } else if c == '\\' {
                    escape = true;
                } else if c == '"' {
                    in_str = false;
                }
            } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
                out.push(c);
                in_str = c == '"';
            }
        }
        out
    }

    fn fixtures() -> Vec<(String, String)> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/osmox");
        let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                )
            })
            .collect();
        out.sort();
        assert!(out.len() >= 15, "fixtures found: {}", out.len());
        out
    }

    #[test]
    fn fixtures_read_as_serde_json_reads_them_and_write_back_minified() {
        for (name, src) in fixtures() {
            let ours = ok(&src);
            let theirs: serde_json::Value = serde_json::from_str(&src).unwrap();
            assert_eq!(to_serde(&ours), theirs, "{name}");
            // Same key order too (serde_json keeps it with preserve_order).
            assert_eq!(
                serde_json::to_string(&to_serde(&ours)).unwrap(),
                serde_json::to_string(&theirs).unwrap(),
                "{name}"
            );
            let written = minified(&ours);
            assert_eq!(written, strip_ws(&src), "{name}");
            let reread: serde_json::Value = serde_json::from_str(&written).unwrap();
            assert_eq!(reread, theirs, "{name}");
        }
    }

    /// A deterministic xorshift, so failures reproduce.
    pub(crate) struct Rng(pub u64);

    impl Rng {
        pub(crate) fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn mutated_fixtures_are_accepted_exactly_when_serde_json_accepts_them() {
        const BYTES: &[u8] = b"{}[]\",:\\/-+.0123456789eEtrufalsn \t\n\r\x00\x1f\x7fu\xc3\xa9\xff";
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut accepted = 0;
        for (name, src) in fixtures() {
            let src = src.into_bytes();
            for _ in 0..1500 {
                let mut m = src.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(m.len());
                    let b = BYTES[rng.below(BYTES.len())];
                    match rng.below(3) {
                        0 => m[at] = b,
                        1 => m.insert(at, b),
                        _ => {
                            m.remove(at);
                        }
                    }
                }
                let ours = parse(&m);
                assert_eq!(
                    ours.is_ok(),
                    serde_accepts(&m),
                    "{name}: {}",
                    String::from_utf8_lossy(&m)
                );
                if let Ok(v) = ours {
                    accepted += 1;
                    let theirs: serde_json::Value = serde_json::from_slice(&m).unwrap();
                    assert_eq!(to_serde(&v), theirs, "{name}");
                }
            }
        }
        assert!(
            accepted > 1000,
            "too few mutations stayed valid: {accepted}"
        );
    }

    #[test]
    fn malformed_documents_are_refused_like_serde_json() {
        let bad: &[&[u8]] = &[
            b"",
            b" ",
            b"{",
            b"}",
            b"[",
            // Cut off after an element: `deep` too must say a list, not an object, is open.
            b"[1",
            b"[1,]",
            b"[,1]",
            b"[1 2]",
            b"{\"a\":1,}",
            b"{,}",
            b"{\"a\" 1}",
            b"{\"a\":}",
            b"{a:1}",
            b"{'a':1}",
            b"{1:1}",
            b"[1]]",
            b"{} {}",
            b"1 2",
            b"nul",
            b"nulll",
            b"tru",
            b"True",
            b"NaN",
            b"Infinity",
            b"-Infinity",
            b"[NaN]",
            b"01",
            b"-01",
            b"00",
            b"1.",
            b".5",
            b"-",
            b"+1",
            b"1e",
            b"1e+",
            b"1.e5",
            b"0x10",
            b"1e400",
            b"-1e400",
            b"\"abc",
            b"\"\\\"",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\u12g4\"",
            b"\"\\ud83d\"",
            b"\"\\ud83d\\u0041\"",
            b"\"\\ude00\"",
            b"\"\\ud83dx\"",
            b"\"tab\tinside\"",
            b"\"nl\ninside\"",
            b"\"\x00\"",
            b"\"\xff\"",
            b"\"\xc3\"",
            b"\xef\xbb\xbf{}",
            b"/* c */ {}",
            b"{} // c",
            b"[1,2,3,]",
            b"\x0c{}",
            b"\xc2\xa0{}",
            b"{\"a\":1}x",
        ];
        for src in bad {
            let shown = String::from_utf8_lossy(src);
            assert!(!serde_accepts(src), "serde_json accepts {shown:?}");
            assert!(parse(src).is_err(), "accepted {shown:?}");
            if std::str::from_utf8(src).is_ok() {
                assert!(!check_deep_as_built(src), "accepted deep {shown:?}");
            }
        }
    }

    #[test]
    fn edge_documents_are_accepted_like_serde_json() {
        let good = [
            "0",
            "-0",
            "-0.0e-0",
            "1E+2",
            "1e-400",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "\"\"",
            "\"\\u0000\"",
            "\"\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"",
            "\"\u{7f}\u{2028}é😀\"",
            " \t\r\n[ 1 , { \"a\" : [ ] } , null , true , false ] \t\r\n",
            "{\"\":{}}",
            "{\"a\":1,\"a\":2}",
        ];
        for src in good {
            let theirs: serde_json::Value = serde_json::from_str(src).unwrap();
            assert_eq!(to_serde(&ok(src)), theirs, "{src}");
        }
    }

    /// serde_json's reading of `src`, with its recursion limit off (so it reads what
    /// `parse` keeps as [`Value::Deep`] too).
    fn serde_unbounded(src: &[u8]) -> Result<serde_json::Value, serde_json::Error> {
        use serde::Deserialize;
        let mut de = serde_json::Deserializer::from_slice(src);
        de.disable_recursion_limit();
        let v = serde_json::Value::deserialize(&mut de)?;
        de.end().map(|()| v)
    }

    /// Random JSON documents, built from the pieces that trouble parsers: numbers at the
    /// edges of `u64`, `i64` and `f64` (`-0`, `1e400`, 308-digit integers, the last finite
    /// double), every escape, surrogates paired and not, non-ASCII text, odd whitespace, and
    /// nesting on both sides of [`MAX_DEPTH`].
    struct Gen(Rng);

    impl Gen {
        fn pick<'s>(&mut self, from: &[&'s str]) -> &'s str {
            from[self.0.below(from.len())]
        }

        fn ws(&mut self, out: &mut String) {
            for _ in 0..self.0.below(3).saturating_sub(1) {
                out.push_str(self.pick(&[" ", "\t", "\n", "\r"]));
            }
        }

        fn digits(&mut self, out: &mut String, n: usize) {
            for _ in 0..n {
                out.push(char::from(b'0' + self.0.below(10) as u8));
            }
        }

        fn number(&mut self, out: &mut String) {
            if self.0.below(2) == 0 {
                let edge = self.pick(&[
                    "0",
                    "-0",
                    "-0.0",
                    "5",
                    "5.0",
                    "5e0",
                    "1.0E7",
                    "129.00",
                    "1e400",
                    "-1e400",
                    "1e-400",
                    "1E+2",
                    "0e9999",
                    "18446744073709551615",
                    "18446744073709551616",
                    "9223372036854775807",
                    "-9223372036854775808",
                    "-9223372036854775809",
                    "9007199254740993",
                    "1.7976931348623157e308",
                    "1.7976931348623159e308",
                    "9.99e307",
                    "digits",
                    "digits",
                    "2.2250738585072014e-308",
                    "4.9e-324",
                ]);
                if edge == "digits" {
                    // Integers of 308 digits (finite) and 309 (finite or not), unscaled.
                    let n = 307 + self.0.below(2);
                    out.push(char::from(b'1' + self.0.below(9) as u8));
                    self.digits(out, n);
                } else {
                    out.push_str(edge);
                }
                return;
            }
            if self.0.below(3) == 0 {
                out.push('-');
            }
            if self.0.below(4) == 0 {
                out.push('0');
            } else {
                out.push(char::from(b'1' + self.0.below(9) as u8));
                let n = self.0.below(25);
                self.digits(out, n);
            }
            if self.0.below(2) == 0 {
                out.push('.');
                let n = 1 + self.0.below(20);
                self.digits(out, n);
            }
            if self.0.below(2) == 0 {
                out.push_str(self.pick(&["e", "E", "e+", "e-", "E-"]));
                let n = 1 + self.0.below(3);
                self.digits(out, n);
            }
        }

        fn string(&mut self, out: &mut String) {
            out.push('"');
            for _ in 0..self.0.below(12) {
                match self.0.below(8) {
                    0 => {
                        let escape =
                            self.pick(&["\\\"", "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t"]);
                        out.push_str(escape);
                    }
                    1 | 2 => {
                        let unit = self.pick(&[
                            "0000", "001f", "0041", "00e9", "2028", "fffd", "d83d", "dbff", "dc00",
                            "de00", "dfff", "e000", "FFFF",
                        ]);
                        out.push_str("\\u");
                        out.push_str(unit);
                    }
                    3 => out
                        .push_str(self.pick(&["é", "😀", "\u{7f}", "\u{2028}", "\u{feff}", "中"])),
                    _ => out.push(char::from(b'a' + self.0.below(26) as u8)),
                }
            }
            out.push('"');
        }

        fn value(&mut self, out: &mut String, depth: usize) {
            self.ws(out);
            match if depth > 5 {
                2 + self.0.below(3)
            } else {
                self.0.below(6)
            } {
                0 => {
                    out.push('[');
                    for i in 0..self.0.below(5) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.value(out, depth + 1);
                    }
                    self.ws(out);
                    out.push(']');
                }
                1 => {
                    out.push('{');
                    for i in 0..self.0.below(5) {
                        if i > 0 {
                            out.push(',');
                        }
                        self.ws(out);
                        self.string(out);
                        self.ws(out);
                        out.push(':');
                        self.value(out, depth + 1);
                    }
                    self.ws(out);
                    out.push('}');
                }
                2 => self.number(out),
                3 => self.string(out),
                4 => out.push_str(self.pick(&["true", "false", "null"])),
                _ => {
                    // Around MAX_DEPTH: the inner levels are checked as text.
                    let levels = MAX_DEPTH - 3 + self.0.below(8);
                    let mut close = Vec::new();
                    for _ in 0..levels {
                        if self.0.below(2) == 0 {
                            out.push('[');
                            close.push(']');
                        } else {
                            out.push_str("{\"k\" :");
                            close.push('}');
                        }
                    }
                    self.value(out, depth + 1);
                    while let Some(c) = close.pop() {
                        self.ws(out);
                        out.push(c);
                    }
                }
            }
            self.ws(out);
        }
    }

    /// Generated documents, and each with a byte or two changed, are accepted exactly when
    /// serde_json accepts them, read as it reads them (numbers through every accessor
    /// too), and write back as the same JSON. Only a number a hair from the overflow
    /// boundary may be judged otherwise (serde_json is not exact there).
    #[test]
    fn generated_documents_read_as_serde_json_reads_them() {
        const BYTES: &[u8] = b"{}[]\",:\\/-+.0123456789eEtrufalsnu \t\n\r\x00\x1f\x7f\xc3\xa9\xff";
        let mut gen = Gen(Rng(0x1234_5678_9abc_def1));
        let (mut valid, mut invalid) = (0, 0);
        for round in 0..12_000 {
            let mut doc = String::new();
            gen.value(&mut doc, 0);
            let mut m = doc.into_bytes();
            if round % 2 == 1 {
                for _ in 0..=gen.0.below(2) {
                    let at = gen.0.below(m.len() + 1);
                    let b = BYTES[gen.0.below(BYTES.len())];
                    match gen.0.below(3) {
                        0 if at < m.len() => m[at] = b,
                        2 if at < m.len() => {
                            m.remove(at);
                        }
                        _ => m.insert(at, b),
                    }
                }
            }
            let shown = String::from_utf8_lossy(&m);
            let (ours, theirs) = (parse(&m), serde_unbounded(&m));
            match (&ours, &theirs) {
                (Ok(v), Ok(t)) => {
                    valid += 1;
                    let back = serde_unbounded(minified(v).as_bytes()).unwrap();
                    assert_eq!(&back, t, "{shown}");
                    assert_eq!(v.as_u64(), t.as_u64(), "{shown}");
                    assert_eq!(v.as_i64(), t.as_i64(), "{shown}");
                    assert_eq!(v.as_f64().is_some(), t.as_f64().is_some(), "{shown}");
                    if let (Some(a), Some(b)) = (v.as_f64(), t.as_f64()) {
                        assert!(a == b || ((a - b) / b).abs() < 1e-14, "{shown}: {a} {b}");
                    }
                }
                (Err(_), Err(_)) => invalid += 1,
                // serde_json's float parsing is not exact: a hair either side of the
                // overflow boundary it may refuse a finite number or take an infinite one
                // for `f64::MAX`, where `parse` decides as `str::parse` does.
                _ if shown.contains("1.797693134862315") => {}
                _ => panic!("ours {ours:?}, serde_json {theirs:?}: {shown}"),
            }
        }
        assert!(
            valid > 4_000 && invalid > 4_000,
            "{valid} valid, {invalid} invalid"
        );
    }

    /// Parse as if `src` were nested [`MAX_DEPTH`] deep: its containers are all checked by
    /// `deep`.
    fn parse_deep<'a>(src: &'a [u8], arena: &'a Arena) -> Result<Value<'a>, Error> {
        let text = std::str::from_utf8(src).unwrap();
        let mut p = Parser {
            src,
            arena,
            text,
            pos: 0,
            depth: MAX_DEPTH,
            values: 0,
            items: Vec::new(),
            members: Vec::new(),
            rows: false,
            arrays: 0,
            seen: None,
        };
        p.document().map_err(|fail| Error::at(src, fail))
    }

    /// `src` checked as built and as deep: the same verdict, the same error at the same place,
    /// the same bytes written back.
    fn check_deep_as_built(src: &[u8]) -> bool {
        let arena = Arena::new();
        let built = parse(src);
        let deep = parse_deep(src, &arena);
        match (&built, &deep) {
            (Ok(b), Ok(d)) => {
                assert_eq!(minified(b), minified(d), "{}", String::from_utf8_lossy(src));
                if matches!(b, Value::Array(_) | Value::Object(_)) {
                    assert!(matches!(d, Value::Deep(_)), "{d:?}");
                }
                true
            }
            (Err(b), Err(d)) => {
                assert_eq!(b, d, "{}", String::from_utf8_lossy(src));
                false
            }
            _ => panic!(
                "built {built:?}, deep {deep:?}: {}",
                String::from_utf8_lossy(src)
            ),
        }
    }

    #[test]
    fn nesting_past_max_depth_is_checked_and_kept_as_text() {
        for depth in [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 10_000, 200_000] {
            let arrays = "[".repeat(depth) + &"]".repeat(depth);
            let objects = "{\"a\": ".repeat(depth) + "1" + &" }".repeat(depth);
            for src in [arrays, objects] {
                let v = ok(&src);
                assert_eq!(minified(&v), strip_ws(&src), "{depth}");
                // Built down to MAX_DEPTH, as serde_json builds it; text below.
                let mut node = v;
                let mut built = 0;
                loop {
                    match node {
                        Value::Array(items) if !items.is_empty() => node = items[0],
                        Value::Object(o) => node = o.members()[0].1,
                        _ => break,
                    }
                    built += 1;
                }
                let expected = match (depth > MAX_DEPTH, src.starts_with('[')) {
                    (true, _) => MAX_DEPTH,
                    // The innermost array is empty: nothing to step into.
                    (false, true) => depth - 1,
                    (false, false) => depth,
                };
                assert_eq!(built, expected, "{depth}");
                assert_eq!(matches!(node, Value::Deep(_)), depth > MAX_DEPTH, "{depth}");
                assert_eq!(serde_accepts(src.as_bytes()), depth <= MAX_DEPTH, "{depth}");
            }
        }
        // Refused deep as it would be refused built, where it goes wrong.
        let open = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(
            parse(open.as_bytes()).unwrap_err().to_string(),
            format!(
                "EOF while parsing a list at line 1 column {}",
                MAX_DEPTH + 1
            )
        );
        let unclosed = "[".repeat(MAX_DEPTH + 5) + "1,]" + &"]".repeat(MAX_DEPTH + 4);
        assert_eq!(
            parse(unclosed.as_bytes()).unwrap_err().to_string(),
            format!("trailing comma at line 1 column {}", MAX_DEPTH + 8)
        );
    }

    #[test]
    fn deep_containers_are_checked_as_built_ones_are() {
        for (name, src) in fixtures() {
            assert!(check_deep_as_built(src.as_bytes()), "{name}");
        }
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let (mut valid, mut invalid) = (0, 0);
        for (_, src) in fixtures() {
            let src = src.into_bytes();
            for _ in 0..600 {
                let mut m = src.clone();
                for _ in 0..=rng.below(3) {
                    let at = rng.below(m.len());
                    let b = b"{}[]\",:\\-.0e1tfn \n"[rng.below(18)];
                    match rng.below(3) {
                        0 => m[at] = b,
                        1 => m.insert(at, b),
                        _ => {
                            m.remove(at);
                        }
                    }
                }
                if std::str::from_utf8(&m).is_err() {
                    continue;
                }
                if check_deep_as_built(&m) {
                    valid += 1;
                } else {
                    invalid += 1;
                }
            }
        }
        assert!(
            valid > 300 && invalid > 3000,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn a_document_holds_at_most_max_values() {
        // The array itself is one value, so it may hold `MAX_VALUES - 1` elements.
        let zeros = |n: usize| format!("[{}0]", "0,".repeat(n - 1));
        let full = zeros(MAX_VALUES - 1);
        assert!(matches!(parse(full.as_bytes()), Ok(Value::Array(a)) if a.len() == MAX_VALUES - 1));
        let over = zeros(MAX_VALUES);
        let err = parse(over.as_bytes()).unwrap_err().to_string();
        assert!(
            err.starts_with("more values than a document may hold"),
            "{err}"
        );
        // Members' values count as well as elements.
        let members = format!("{{{}\"a\":0}}", "\"a\":0,".repeat(MAX_VALUES - 1));
        assert!(parse(members.as_bytes()).is_err());
    }

    #[test]
    fn repeated_keys_are_kept_and_the_last_is_looked_up() {
        let v = ok(r#"{"a":1,"b":2,"a":3}"#);
        let obj = v.as_object().unwrap();
        assert_eq!(obj.members().len(), 3);
        assert_eq!(v.get("a").and_then(Value::as_u64), Some(3));
        let keys: Vec<Cow<'_, str>> = obj.members().iter().map(|(k, _)| k.text()).collect();
        assert_eq!(keys, ["a", "b", "a"]);
        assert_eq!(minified(&v), r#"{"a":1,"b":2,"a":3}"#);
        // serde_json keeps the first position and the last value: so does `to_serde`.
        let theirs: serde_json::Value = serde_json::from_str(r#"{"a":1,"b":2,"a":3}"#).unwrap();
        assert_eq!(to_serde(&v), theirs);
        // An escaped key is the same key.
        assert_eq!(
            ok(r#"{"id":1,"i\u0064":2}"#)
                .get("id")
                .and_then(Value::as_u64),
            Some(2)
        );
    }

    #[test]
    fn numbers_keep_their_source_text() {
        let v = ok(r#"{"price":129.00,"big":1.50E+3,"n":-0}"#);
        let raw = |k: &str| match v.get(k) {
            Some(Value::Number(raw)) => raw.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(raw("price"), "129.00");
        assert_eq!(raw("big"), "1.50E+3");
        assert_eq!(raw("n"), "-0");
    }

    #[test]
    fn number_accessors_match_serde_json() {
        for src in [
            "0",
            "7",
            "-7",
            "-0",
            "5.0",
            "1e2",
            "-1.5",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "129.00",
            "1e-400",
        ] {
            let ours = ok(src);
            let theirs: serde_json::Value = serde_json::from_str(src).unwrap();
            assert_eq!(ours.as_u64(), theirs.as_u64(), "{src}");
            assert_eq!(ours.as_i64(), theirs.as_i64(), "{src}");
            assert_eq!(ours.as_f64(), theirs.as_f64(), "{src}");
        }
        assert_eq!(ok("\"5\"").as_u64(), None);
    }

    /// `as_whole` takes a whole number below 2^53 however it is written: with as many zeros
    /// after the point, or before an exponent that cancels them, as a client likes (a review:
    /// more digits than 2^53 holds were rounded twice and came out a hair off the integer).
    #[test]
    fn a_whole_number_is_whole_whatever_its_trailing_zeros() {
        for n in [3u64, 1042, 12345, 987_654_321, (1 << 53) - 1] {
            for zeros in 0..40 {
                let pad = "0".repeat(zeros);
                for src in [
                    format!("{n}.0{pad}"),
                    format!("{n}{pad}e-{zeros}"),
                    format!("{n}.{pad}0E+0"),
                ] {
                    assert_eq!(ok(&src).as_whole(), Some(n), "{src}");
                }
            }
        }
        assert_eq!(ok("12345.5000000000000000000").as_whole(), None);
        assert_eq!(ok("9007199254740992.00000000000").as_whole(), None, "2^53");
    }

    /// A fourth review: a whole number written as an integer skipped the bound, so
    /// `9007199254740993` was taken as itself, though a server that reads it as a double takes
    /// it as 2^53 (the id it looks up), and 2^53 was taken written as an integer and refused
    /// written with a point.
    #[test]
    fn a_whole_number_at_or_past_2_53_is_none_however_written() {
        for src in [
            "9007199254740992",
            "9007199254740993",
            "18446744073709551615",
            "9007199254740993.0",
        ] {
            assert_eq!(ok(src).as_whole(), None, "{src}");
        }
        assert_eq!(ok("9007199254740991").as_whole(), Some((1 << 53) - 1));
    }

    #[test]
    fn overflow_is_decided_exactly_at_the_rounding_boundary() {
        let limit = format!("{}.{}e308", &OVERFLOW_DIGITS[..1], &OVERFLOW_DIGITS[1..]);
        let below = format!("{}1e308", &limit[..limit.len() - 5]);
        let mut cases = vec![
            "1e308".to_string(),
            "1e309".to_string(),
            "-1e309".to_string(),
            "1.7976931348623157e308".to_string(),
            "1.7976931348623158e308".to_string(),
            "1.7976931348623159e308".to_string(),
            "0.0000017976931348623159e314".to_string(),
            "179.76931348623159e306".to_string(),
            "1e-400".to_string(),
            "0e999999999999999999999".to_string(),
            "0.000e400".to_string(),
            "1e99999999999999999999".to_string(),
            "1e-99999999999999999999".to_string(),
            format!("{}0", &OVERFLOW_DIGITS[..308]),
            OVERFLOW_DIGITS.to_string(),
            format!("{OVERFLOW_DIGITS}0.000001"),
            limit.clone(),
            below.clone(),
            format!("{limit}0000"),
            format!("{}00001e308", &limit[..limit.len() - 4]),
        ];
        cases.push("9".repeat(400));
        for case in &cases {
            let want = !case.parse::<f64>().unwrap().is_finite();
            assert_eq!(Decimal::of(case).overflows(), want, "{case}");
            assert_eq!(parse(case.as_bytes()).is_err(), want, "{case}");
        }
        assert!(Decimal::of(&limit).overflows());
        assert!(!Decimal::of(&below).overflows());
        // The one known difference: serde_json's float parsing is not exact, and it also
        // refuses a few numbers just below the boundary that round to f64::MAX.
        assert!(!serde_accepts(b"1.7976931348623158e308"));
        assert!(parse(b"1.7976931348623158e308").is_ok());
        // And it takes one just above it (which `str::parse` rounds to infinity) for the
        // largest finite double.
        assert!("1.79769313486231592e308"
            .parse::<f64>()
            .unwrap()
            .is_infinite());
        assert!(serde_accepts(b"1.79769313486231592e308"));
        assert!(parse(b"1.79769313486231592e308").is_err());
    }

    #[test]
    fn floats_are_read_exactly_when_their_digits_fit() {
        for src in [
            "0.2",
            "2.0",
            "1.5",
            "0.1",
            "-0.0",
            "3.14159",
            "1e-5",
            "25e-2",
            "123456789.125",
            "-2.5e3",
            "1e22",
            "9007199254740993",
            "18446744073709551616",
            "12345678901234567890123456789",
            "90482347418739900000000000000000000000",
            "12345000000000000000000.00000000000",
            "0.000001",
            // Only 1 × 10^-22: the trailing zero must not push it past the exact scaling.
            "1.0e-22",
            "0.00000000000000000000010",
            // A subnormal: 10^320 is infinite, so it is scaled in steps, not flushed to zero.
            "1e-320",
        ] {
            let want: f64 = src.parse().unwrap();
            let got = ok(src).as_f64().unwrap();
            assert_eq!(got.to_bits(), want.to_bits(), "{src}");
        }
        for src in [
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "123456789012345678901234567890123456789012345",
            "0.1234567890123456789012345678901234567890123",
            // 21 digits with a fraction: one unit in the last place off (as_f64's doc).
            "126335531285517349.923",
            "6.02214076e23",
            "1e-300",
        ] {
            let want: f64 = src.parse().unwrap();
            let got = ok(src).as_f64().unwrap();
            assert!(
                ((got - want) / want).abs() < 1e-14,
                "{src}: {got} vs {want}"
            );
        }
        assert_eq!(ok("1e-400").as_f64(), Some(0.0));
    }

    #[test]
    fn strings_borrow_unless_escaped_and_decode_like_serde_json() {
        let v = ok(r#"["plain é", "a\"b\\c\/d\u00e9\ud83d\ude00\u0000\b\f\n\r\t"]"#);
        let Value::Array(items) = &v else { panic!() };
        assert!(matches!(items[0].as_str(), Some(Cow::Borrowed("plain é"))));
        let decoded = items[1].as_str().unwrap();
        assert!(matches!(decoded, Cow::Owned(_)));
        assert_eq!(decoded, "a\"b\\c/dé😀\u{0}\u{8}\u{c}\n\r\t");
        let theirs: Vec<String> = serde_json::from_str(&minified(&v)).unwrap();
        assert_eq!(theirs[1], decoded);
        // Written back as in the source, escapes and all.
        assert_eq!(
            minified(&items[1]),
            r#""a\"b\\c\/d\u00e9\ud83d\ude00\u0000\b\f\n\r\t""#
        );
        let Value::String(s) = &items[1] else {
            panic!()
        };
        assert!(s.is("a\"b\\c/dé😀\u{0}\u{8}\u{c}\n\r\t"));
        assert!(!s.is("a"));
    }

    #[test]
    fn errors_say_what_and_where_as_serde_json_does() {
        for src in [
            "{",
            "",
            "[1,",
            "{\"a\" 1}",
            "{\"a\":1,}",
            "[1 2]",
            "{\"a\":1 \"b\"}",
            "[1]\n x",
            "{\n\"a\": x}",
            "\"abc",
            "\"ab\\",
            "01",
            "1e400",
            "[1,\n -1e400]",
            "\"\\x\"",
            "{1:2}",
        ] {
            let ours = parse(src.as_bytes()).unwrap_err().to_string();
            let theirs = serde_json::from_str::<serde_json::Value>(src)
                .unwrap_err()
                .to_string();
            assert_eq!(ours, theirs, "{src:?}");
        }
    }

    #[test]
    fn string_scan_finds_specials_at_every_offset() {
        for len in 0..24 {
            for at in 0..len {
                for special in [b'"', b'\\', 0x00, 0x1f, b'\n'] {
                    let mut body = vec![b'a'; len];
                    body[at] = special;
                    let mut src = b"\"".to_vec();
                    src.extend_from_slice(&body);
                    src.extend_from_slice(b"\"");
                    let ours = parse(&src).is_ok();
                    assert_eq!(ours, serde_accepts(&src), "{len} {at} {special}");
                    if special == b'"' {
                        assert_eq!(string_end(&src, 0).unwrap().0, at + 1);
                    }
                }
            }
        }
    }

    #[test]
    fn word_scan_stops_exactly_at_the_first_special_byte() {
        // Bytes chosen so borrows from one byte can flag its neighbours: the scan must still
        // answer the first special byte, never one after it, and never skip one.
        let alphabet = [
            b'"',
            b'\\',
            0x00,
            0x01,
            0x1f,
            0x20,
            0x21,
            0x22 ^ 0x01,
            0x5d,
            b'a',
            0x7f,
            0x80,
            0xa0,
            0xff,
        ];
        let special = |b: u8| b == b'"' || b == b'\\' || b < 0x20;
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 40) as usize;
            let src: Vec<u8> = (0..len)
                .map(|k| {
                    let r = seed.rotate_left(k as u32 * 5) ^ (k as u64).wrapping_mul(0x9e37_79b9);
                    // Mostly plain bytes, so runs long enough for whole words occur.
                    if r.is_multiple_of(5) {
                        alphabet[(r / 5 % 14) as usize]
                    } else {
                        b'a' + (r % 26) as u8
                    }
                })
                .collect();
            for start in 0..=len {
                let first = (start..len).find(|&k| special(src[k])).unwrap_or(len);
                let got = plain_run_end(&src, start);
                assert!(got <= first, "{src:?} from {start}: {got} passed {first}");
                assert!(
                    got == first || got + 8 > len,
                    "{src:?} from {start}: stopped at {got}, first special {first}"
                );
            }
        }
    }

    fn out(f: impl FnOnce(&mut Out)) -> String {
        let mut o = Out::default();
        f(&mut o);
        String::from_utf8(o.into_bytes()).unwrap()
    }

    #[test]
    fn writes_integers_and_strings_as_serde_json_does() {
        for v in [0, 7, 10, 1_700_000_000_000, u64::MAX] {
            assert_eq!(out(|o| o.uint(v)), v.to_string());
        }
        for s in ["", "plain", "q\"b\\s/", "\n\r\t\u{1}\u{7f}", "é😀"] {
            assert_eq!(out(|o| o.string(s)), serde_json::to_string(s).unwrap());
        }
        let nested = out(|o| {
            o.begin_array();
            o.begin_object();
            o.key("a");
            o.uint(1);
            o.key("b");
            o.begin_array();
            o.boolean(true);
            o.boolean(false);
            o.end_array();
            o.end_object();
            o.uint(2);
            o.end_array();
        });
        assert_eq!(nested, r#"[{"a":1,"b":[true,false]},2]"#);
        let doc = ok(r#"{ "n" : 129.00 }"#);
        let with_values = out(|o| {
            o.begin_object();
            o.key("x");
            o.null();
            o.key("doc");
            o.value(&doc);
            o.end_object();
        });
        assert_eq!(with_values, r#"{"x":null,"doc":{"n":129.00}}"#);
    }

    #[test]
    fn write_str_escapes_as_serde_json_does() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        for s in [
            "",
            "plain",
            "q\"b\\s/",
            "\n\r\t\u{1}\u{7f}",
            "é😀\u{2028}",
            &all_controls,
        ] {
            let mut out = String::new();
            write_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn write_u64_writes_decimal() {
        for v in [0, 7, 10, 1_700_000_000_000, u64::MAX] {
            let mut out = String::new();
            write_u64(&mut out, v);
            assert_eq!(out, v.to_string());
        }
    }
}
