//! Whether a watched response is worth parsing, told without its headers: its status from
//! the stream's record, its encoding and type from its body's first bytes.
//!
//! The HTTP filter does not take the response-headers callback at all (its module does not
//! export it): each callback Envoy makes enters the VM, and this one cost about 3k
//! instructions per steady poll (1 %) under callgrind, a header read in it 21k more. So a
//! JSON body is parsed whatever its `content-type` says, and a body over
//! `watch.maxBodyBytes` is found out while it is copied rather than from its
//! `content-length`.

use crate::metrics::Metric;

/// What a body's first bytes say of it: `Some` to skip it, counted there; `None` when it may
/// be JSON, or nothing but whitespace has come yet.
pub fn sniff(start: &[u8]) -> Option<Metric> {
    const GZIP: &[u8] = &[0x1f, 0x8b];
    const ZSTD: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];
    if start.starts_with(GZIP) || start.starts_with(ZSTD) {
        return Some(Metric::SkippedEncoded);
    }
    // Every document extraction can use is an object or an array.
    match start.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{' | b'[') | None => None,
        Some(_) => Some(Metric::SkippedNotJson),
    }
}

/// Whether to skip a whole response, from its status (the stream's record) and its body's
/// first bytes (for its encoding and type). `Some`: skip, counted there.
pub fn judge(status: Option<u64>, body: &[u8]) -> Option<Metric> {
    if !status.is_some_and(|s| (200..300).contains(&s)) {
        return Some(Metric::SkippedStatus);
    }
    sniff(body).or_else(|| {
        let blank = body.iter().all(u8::is_ascii_whitespace);
        blank.then_some(Metric::SkippedNotJson)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_is_judged_by_its_status_and_first_bytes() {
        let gzip = [0x1f, 0x8b, 0x08, 0x00];
        let zstd = [0x28, 0xb5, 0x2f, 0xfd, 0x00];
        let cases: [(Option<u64>, &[u8], Option<Metric>); 12] = [
            (Some(200), b"{\"data\":{}}", None),
            (Some(201), b" \r\n\t[{\"id\":1}]", None),
            (Some(299), b"{", None), // left for the parser to refuse
            (Some(304), b"", Some(Metric::SkippedStatus)),
            (Some(500), b"{\"data\":{}}", Some(Metric::SkippedStatus)),
            (Some(199), b"{}", Some(Metric::SkippedStatus)),
            (None, b"{}", Some(Metric::SkippedStatus)),
            (Some(200), &gzip, Some(Metric::SkippedEncoded)),
            (Some(200), &zstd, Some(Metric::SkippedEncoded)),
            (
                Some(200),
                b"<html>maintenance</html>",
                Some(Metric::SkippedNotJson),
            ),
            (Some(200), b"\"a string\"", Some(Metric::SkippedNotJson)),
            (Some(204), b"", Some(Metric::SkippedNotJson)),
        ];
        assert_eq!(judge(Some(200), b" \n"), Some(Metric::SkippedNotJson));
        // A first chunk of blanks decides nothing yet.
        assert_eq!(sniff(b"  "), None);
        assert_eq!(sniff(b"  x"), Some(Metric::SkippedNotJson));
        for (status, body, want) in cases {
            assert_eq!(
                judge(status, body),
                want,
                "{status:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
