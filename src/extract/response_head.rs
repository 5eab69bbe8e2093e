//! Whether a watched response is worth reading, decided from its headers alone, before any
//! of its body is copied.

use crate::metrics::Metric;

/// The response headers the decision needs, as the host found them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: Option<String>,
    pub content_encoding: Option<String>,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPlan {
    /// Do not read the body; count it under this metric.
    Skip(Metric),
    /// Read it for notifications (and a registration, if the request was one).
    Read,
    /// Not JSON, so no notifications (counted as `SkippedNotJson`), but the answer to a
    /// registration: a delete may answer 204 with no body and is still worth reading.
    RegistrationOnly,
}

impl ResponseHead {
    /// `registration`: the request may change OsmoX's webhooks (learning is on).
    pub fn plan(&self, registration: bool, max_body_bytes: usize) -> BodyPlan {
        if !self.status.as_deref().is_some_and(|s| s.starts_with('2')) {
            return BodyPlan::Skip(Metric::SkippedStatus);
        }
        let encoded = self
            .content_encoding
            .as_deref()
            .is_some_and(|e| !e.eq_ignore_ascii_case("identity"));
        if encoded {
            return BodyPlan::Skip(Metric::SkippedEncoded);
        }
        let json = self
            .content_type
            .as_deref()
            .is_some_and(|t| t.to_ascii_lowercase().contains("json"));
        if !json && !registration {
            return BodyPlan::Skip(Metric::SkippedNotJson);
        }
        let length = self
            .content_length
            .as_deref()
            .and_then(|l| l.parse::<usize>().ok());
        if length.is_some_and(|l| l > max_body_bytes) {
            return BodyPlan::Skip(Metric::SkippedTooLarge);
        }
        if json {
            BodyPlan::Read
        } else {
            BodyPlan::RegistrationOnly
        }
    }
}

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

/// Whether to skip a whole response whose headers were never read: the HTTP context leaves
/// them unread unless learning needs them, since a steady poll then costs no header hostcall,
/// and Envoy shows no headers after `on_http_response_headers`. Its status comes from the
/// stream's record; encoding and type from the body's first bytes. `Some`: skip, counted there.
pub fn judge_unread(status: Option<u64>, body: &[u8]) -> Option<Metric> {
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

    fn head(
        status: &str,
        encoding: Option<&str>,
        ctype: Option<&str>,
        len: Option<&str>,
    ) -> ResponseHead {
        ResponseHead {
            status: Some(status.into()),
            content_encoding: encoding.map(Into::into),
            content_type: ctype.map(Into::into),
            content_length: len.map(Into::into),
        }
    }

    #[test]
    fn plans_follow_status_encoding_type_and_length() {
        let json = Some("application/json; charset=utf-8");
        let cases = [
            (head("200", None, json, Some("10")), false, BodyPlan::Read),
            (
                head("201", Some("identity"), Some("Application/JSON"), None),
                false,
                BodyPlan::Read,
            ),
            (
                head(
                    "200",
                    None,
                    Some("application/graphql-response+json"),
                    Some("x"),
                ),
                false,
                BodyPlan::Read,
            ),
            (
                head("304", None, json, None),
                false,
                BodyPlan::Skip(Metric::SkippedStatus),
            ),
            (
                head("500", None, json, None),
                true,
                BodyPlan::Skip(Metric::SkippedStatus),
            ),
            (
                head("200", Some("gzip"), json, None),
                false,
                BodyPlan::Skip(Metric::SkippedEncoded),
            ),
            (
                head("200", None, Some("text/html"), None),
                false,
                BodyPlan::Skip(Metric::SkippedNotJson),
            ),
            (
                head("200", None, None, None),
                false,
                BodyPlan::Skip(Metric::SkippedNotJson),
            ),
            (
                head("204", None, None, Some("0")),
                true,
                BodyPlan::RegistrationOnly,
            ),
            (
                head("200", None, json, Some("101")),
                false,
                BodyPlan::Skip(Metric::SkippedTooLarge),
            ),
            (
                head("200", None, None, Some("101")),
                true,
                BodyPlan::Skip(Metric::SkippedTooLarge),
            ),
            (head("200", None, json, Some("100")), false, BodyPlan::Read),
        ];
        for (h, registration, want) in cases {
            assert_eq!(
                h.plan(registration, 100),
                want,
                "{h:?} registration={registration}"
            );
        }
        assert_eq!(
            ResponseHead::default().plan(false, 100),
            BodyPlan::Skip(Metric::SkippedStatus),
            "no :status"
        );
    }

    #[test]
    fn an_unread_response_is_judged_by_its_status_and_first_bytes() {
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
        assert_eq!(
            judge_unread(Some(200), b" \n"),
            Some(Metric::SkippedNotJson)
        );
        // A first chunk of blanks decides nothing yet.
        assert_eq!(sniff(b"  "), None);
        assert_eq!(sniff(b"  x"), Some(Metric::SkippedNotJson));
        for (status, body, want) in cases {
            assert_eq!(
                judge_unread(status, body),
                want,
                "{status:?} {}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
