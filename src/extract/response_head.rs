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
    /// Read it for notifications (and a registration, if the request was one). `length` is
    /// the announced size, to reserve exactly: a buffer left to double would reach twice the
    /// body, and a wasm VM's memory never shrinks back.
    Read { length: Option<usize> },
    /// Not JSON, so no notifications (counted as `SkippedNotJson`), but the answer to a
    /// registration: a delete may answer 204 with no body and is still worth reading.
    RegistrationOnly { length: Option<usize> },
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
            BodyPlan::Read { length }
        } else {
            BodyPlan::RegistrationOnly { length }
        }
    }
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
            (
                head("200", None, json, Some("10")),
                false,
                BodyPlan::Read { length: Some(10) },
            ),
            (
                head("201", Some("identity"), Some("Application/JSON"), None),
                false,
                BodyPlan::Read { length: None },
            ),
            (
                head(
                    "200",
                    None,
                    Some("application/graphql-response+json"),
                    Some("x"),
                ),
                false,
                BodyPlan::Read { length: None },
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
                BodyPlan::RegistrationOnly { length: Some(0) },
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
            (
                head("200", None, json, Some("100")),
                false,
                BodyPlan::Read { length: Some(100) },
            ),
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
}
