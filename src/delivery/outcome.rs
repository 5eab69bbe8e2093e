//! What a webhook attempt's result means for the delivery: done, try again, or stop.

use crate::calendar::{civil_from_days, days_from_civil, days_in_month};

/// The parts of an async-client response that decide the outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttemptResponse {
    /// Envoy reports a reset or connect failure as a response with no headers at all.
    pub num_headers: usize,
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// The answer was Envoy's own, for an endpoint it did not reach or hear back from in
    /// time (see `envoy_local_reply`), not the endpoint's.
    pub local_failure: Option<Failure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry(Failure),
    GiveUp(Failure),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No response: reset, connect error, or Envoy's refusal to send the call on (a cluster
    /// with no healthy host, in maintenance mode, or dropping calls for overload).
    Transport,
    /// Envoy gave up waiting for the endpoint.
    Timeout,
    Status(u16),
    /// Envoy refused to make the call (an unknown cluster, a header it will not send).
    NotDispatched,
}

/// A short label for logs and dead-letter reports.
impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transport => f.write_str("transport error"),
            Failure::Timeout => f.write_str("timeout"),
            Failure::Status(s) => write!(f, "HTTP {s}"),
            Failure::NotDispatched => f.write_str("not dispatched (see Envoy's log)"),
        }
    }
}

/// Only 410 Gone is final: the endpoint says it will never want this. Everything else may be
/// transient (including 4xx from a misconfigured receiver that gets fixed), and redirects are
/// not followed, so they count as failures too.
pub fn classify(response: &AttemptResponse) -> Outcome {
    let status = match response.status {
        Some(s) if response.num_headers > 0 => s,
        _ => return Outcome::Retry(Failure::Transport),
    };
    if let Some(failure) = response.local_failure {
        return Outcome::Retry(failure);
    }
    match status {
        200..=299 => Outcome::Delivered,
        410 => Outcome::GiveUp(Failure::Status(410)),
        s => Outcome::Retry(Failure::Status(s)),
    }
}

/// The longest body `envoy_local_reply` needs to see; the host reads no more of an answer
/// `may_be_envoy_local_reply`.
pub const LOCAL_REPLY_MAX_BYTES: usize = 512;

/// The start of the body of Envoy's local reply to a reset before the response's headers.
const RESET_BEFORE_HEADERS: &[u8] = b"upstream connect error or disconnect/reset before headers";

/// Whether an answer with `status` may be Envoy's own local reply: only then is its body
/// read for `envoy_local_reply`.
pub fn may_be_envoy_local_reply(status: u16) -> bool {
    matches!(status, 408 | 502..=504)
}

/// The body of the router's local reply when a cluster's `max_stream_duration` ends the call.
const MAX_STREAM_DURATION: &[u8] = b"upstream max stream duration reached";

/// What Envoy's own local reply to a webhook call says happened. Envoy answers a refused or
/// closed connection, a cluster with no host, or one in maintenance mode or dropping calls
/// for overload (`drop_overloads`), with a 503 of its own, a reset for a protocol error (a
/// malformed response, or headers past its limits) with a 502, its timeout with a 504, and
/// a cluster's `max_stream_duration` with a 504 (a 408 if the request was not all sent):
/// by status alone, "receiver down" would read as "receiver answered 503". Its bodies tell
/// them apart.
pub fn envoy_local_reply(status: u16, body: &[u8]) -> Option<Failure> {
    match status {
        504 if body == b"upstream request timeout" || body == MAX_STREAM_DURATION => {
            Some(Failure::Timeout)
        }
        408 if body == MAX_STREAM_DURATION => Some(Failure::Timeout),
        503 if body.starts_with(RESET_BEFORE_HEADERS)
            || body == b"no healthy upstream"
            || body == b"maintenance mode"
            || body == b"drop overload" =>
        {
            Some(Failure::Transport)
        }
        502 if body.starts_with(RESET_BEFORE_HEADERS) => Some(Failure::Transport),
        _ => None,
    }
}

/// How long the endpoint asked us to wait, in ms from `now_unix_ms`. Only 429 and 503 carry a
/// meaningful `Retry-After`; for anything else, and for a value we cannot read, `None` lets the
/// normal backoff decide. A date in the past means "now".
pub fn retry_after_ms(status: u16, header: Option<&str>, now_unix_ms: u64) -> Option<u64> {
    if status != 429 && status != 503 {
        return None;
    }
    let value = header?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits but too many for u64: still a valid (absurd) delay, so saturate.
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(secs.saturating_mul(1000));
    }
    let now_secs = i64::try_from(now_unix_ms / 1000).unwrap_or(i64::MAX);
    let at_secs = parse_http_date(value, now_secs)?;
    let at_ms = u64::try_from(at_secs).unwrap_or(0).saturating_mul(1000);
    Some(at_ms.saturating_sub(now_unix_ms))
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// An HTTP-date (RFC 9110 §5.6.7) as Unix seconds. `now_secs` places RFC 850's two-digit
/// years. The weekday must be a valid name but is not checked against the date, as the RFC
/// lets recipients be lenient there.
fn parse_http_date(s: &str, now_secs: i64) -> Option<i64> {
    let parts: Vec<&str> = s.split_ascii_whitespace().collect();
    // The year, or for RFC 850 its last two digits (placed once the time is read).
    let (year, two_digit, month, day, time) = match parts.as_slice() {
        // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
        [wkday, day, month, year, time, "GMT"] => {
            DAYS.contains(&wkday.strip_suffix(',')?).then_some(())?;
            (
                digits(year, 4, 4)?,
                false,
                month_number(month)?,
                digits(day, 2, 2)?,
                *time,
            )
        }
        // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
        [weekday, date, time, "GMT"] => {
            LONG_DAYS
                .contains(&weekday.strip_suffix(',')?)
                .then_some(())?;
            let mut fields = date.split('-');
            let day = digits(fields.next()?, 2, 2)?;
            let month = month_number(fields.next()?)?;
            let yy = digits(fields.next()?, 2, 2)?;
            fields.next().is_none().then_some(())?;
            (yy, true, month, day, *time)
        }
        // asctime: Sun Nov  6 08:49:37 1994
        [wkday, month, day, time, year] => {
            DAYS.contains(wkday).then_some(())?;
            (
                digits(year, 4, 4)?,
                false,
                month_number(month)?,
                digits(day, 1, 2)?,
                *time,
            )
        }
        _ => return None,
    };
    let (h, m, sec) = parse_time(time)?;
    let of_day = h * 3600 + m * 60 + sec;
    let year = if two_digit {
        full_year(year, (month, day, of_day), now_secs)
    } else {
        year
    };
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(i64::from(year), month, day);
    Some(days * 86_400 + i64::from(of_day))
}

fn parse_time(s: &str) -> Option<(u32, u32, u32)> {
    let mut fields = s.split(':');
    let h = digits(fields.next()?, 2, 2)?;
    let m = digits(fields.next()?, 2, 2)?;
    let sec = digits(fields.next()?, 2, 2)?;
    // 60 allows a leap second.
    (fields.next().is_none() && h < 24 && m < 60 && sec <= 60).then_some((h, m, sec))
}

fn digits(s: &str, min: usize, max: usize) -> Option<u32> {
    let ok = (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if ok {
        s.parse().ok()
    } else {
        None
    }
}

fn month_number(s: &str) -> Option<u32> {
    let i = MONTHS.iter().position(|m| *m == s)?;
    u32::try_from(i + 1).ok()
}

/// RFC 9110: a two-digit year whose timestamp (`month`, `day`, seconds into the day) is
/// more than 50 years in the future is in the past century. The whole timestamp counts, not
/// the year alone: late in the year 50 years ahead, a date is already past that bound. So
/// the year is the latest with those digits that is not past that bound, which late in a
/// century is in the next one.
fn full_year(yy: u32, (month, day, of_day): (u32, u32, u32), now_secs: i64) -> u32 {
    let (now_year, now_month, now_day) = civil_from_days(now_secs.div_euclid(86_400));
    let now_of_day = u32::try_from(now_secs.rem_euclid(86_400)).unwrap_or(0);
    let now_year = u32::try_from(now_year).unwrap_or(1970);
    let fifty_ahead = (now_year.saturating_add(50), now_month, now_day, now_of_day);
    let next_century = (now_year - now_year % 100).saturating_add(100 + yy);
    [next_century, next_century.saturating_sub(100)]
        .into_iter()
        .find(|&year| (year, month, day, of_day) <= fifty_ahead)
        .unwrap_or(next_century.saturating_sub(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1994-11-06T08:49:37Z, the RFC's example date.
    const RFC_EXAMPLE_SECS: u64 = 784_111_777;

    fn response(status: u16) -> AttemptResponse {
        AttemptResponse {
            num_headers: 5,
            status: Some(status),
            ..AttemptResponse::default()
        }
    }

    #[test]
    fn statuses_classify_as_delivered_retry_or_give_up() {
        use Failure::*;
        use Outcome::*;
        let table = [
            (200, Delivered),
            (201, Delivered),
            (204, Delivered),
            (299, Delivered),
            (301, Retry(Status(301))),
            (302, Retry(Status(302))),
            (400, Retry(Status(400))),
            (401, Retry(Status(401))),
            (404, Retry(Status(404))),
            (408, Retry(Status(408))),
            (409, Retry(Status(409))),
            (410, GiveUp(Status(410))),
            (429, Retry(Status(429))),
            (500, Retry(Status(500))),
            (502, Retry(Status(502))),
            (503, Retry(Status(503))),
            (504, Retry(Status(504))),
        ];
        for (status, expected) in table {
            assert_eq!(classify(&response(status)), expected, "status {status}");
        }
    }

    #[test]
    fn envoy_local_replies_are_told_from_the_endpoints_answers() {
        let refused = b"upstream connect error or disconnect/reset before headers. reset reason: connection failure, transport failure reason: delayed connect error: Connection refused";
        // Envoy's router answers a reset for a protocol error (a malformed response, or
        // headers past its limits) with a 502 of its own.
        let protocol = b"upstream connect error or disconnect/reset before headers. reset reason: protocol error";
        // A review: the router's answers for a cluster's `max_stream_duration` (408 before
        // the request was all sent, 504 after), and for a cluster in maintenance mode or
        // dropping for overload (503), were labelled as the endpoint's own.
        let max_duration = b"upstream max stream duration reached";
        let table: [(u16, &[u8], Option<Failure>); 16] = [
            (504, b"upstream request timeout", Some(Failure::Timeout)),
            (503, refused, Some(Failure::Transport)),
            (503, b"no healthy upstream", Some(Failure::Transport)),
            (502, protocol, Some(Failure::Transport)),
            (502, b"Bad Gateway", None),
            (504, max_duration, Some(Failure::Timeout)),
            (408, max_duration, Some(Failure::Timeout)),
            (503, b"maintenance mode", Some(Failure::Transport)),
            (503, b"drop overload", Some(Failure::Transport)),
            // The endpoint's own answers, with these statuses or these words.
            (503, b"upstream request timeout", None),
            (504, refused, None),
            (503, b"Service Unavailable", None),
            (504, b"", None),
            (408, b"Request Timeout", None),
            (503, max_duration, None),
            (504, b"maintenance mode", None),
        ];
        for (status, body, expected) in table {
            assert_eq!(envoy_local_reply(status, body), expected, "{status}");
            if expected.is_some() {
                assert!(may_be_envoy_local_reply(status), "{status}");
            }
        }
        // The verdict stays a retry, whoever answered.
        for (status, body, _) in table {
            let r = AttemptResponse {
                local_failure: envoy_local_reply(status, body),
                ..response(status)
            };
            assert!(matches!(classify(&r), Outcome::Retry(_)), "{status}");
        }
        // Other statuses are the endpoint's: their bodies are not read.
        for status in [200, 400, 404, 410, 429, 500] {
            assert!(!may_be_envoy_local_reply(status), "{status}");
        }
    }

    #[test]
    fn a_local_reply_is_classified_by_what_it_says() {
        for failure in [Failure::Timeout, Failure::Transport] {
            let r = AttemptResponse {
                local_failure: Some(failure),
                ..response(503)
            };
            assert_eq!(classify(&r), Outcome::Retry(failure));
        }
    }

    #[test]
    fn no_headers_or_no_status_is_a_transport_error() {
        let no_headers = AttemptResponse {
            num_headers: 0,
            ..response(200)
        };
        assert_eq!(classify(&no_headers), Outcome::Retry(Failure::Transport));
        let no_status = AttemptResponse {
            status: None,
            ..response(200)
        };
        assert_eq!(classify(&no_status), Outcome::Retry(Failure::Transport));
    }

    #[test]
    fn failures_have_short_labels() {
        assert_eq!(Failure::Transport.to_string(), "transport error");
        assert_eq!(Failure::Timeout.to_string(), "timeout");
        assert_eq!(Failure::Status(503).to_string(), "HTTP 503");
    }

    #[test]
    fn retry_after_seconds_become_ms() {
        assert_eq!(retry_after_ms(429, Some("120"), 5), Some(120_000));
        assert_eq!(retry_after_ms(503, Some(" 0 "), 5), Some(0));
    }

    #[test]
    fn retry_after_huge_seconds_saturate() {
        assert_eq!(
            retry_after_ms(429, Some("99999999999999999999999999"), 0),
            Some(u64::MAX)
        );
        assert_eq!(
            retry_after_ms(429, Some("18446744073709551615"), 0),
            Some(u64::MAX)
        );
    }

    #[test]
    fn retry_after_future_date_is_ms_from_now() {
        let now_ms = (RFC_EXAMPLE_SECS - 90) * 1000 + 250;
        assert_eq!(
            retry_after_ms(503, Some("Sun, 06 Nov 1994 08:49:37 GMT"), now_ms),
            Some(89_750)
        );
    }

    #[test]
    fn retry_after_past_date_is_zero() {
        let now_ms = (RFC_EXAMPLE_SECS + 3600) * 1000;
        assert_eq!(
            retry_after_ms(429, Some("Sun, 06 Nov 1994 08:49:37 GMT"), now_ms),
            Some(0)
        );
        assert_eq!(
            retry_after_ms(429, Some("Thu, 01 Jan 1970 00:00:00 GMT"), now_ms),
            Some(0)
        );
    }

    #[test]
    fn all_three_http_date_formats_parse_to_the_same_instant() {
        let now = 1_700_000_000; // 2023: "94" is 1994.
        for date in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_http_date(date, now),
                Some(RFC_EXAMPLE_SECS as i64),
                "{date}"
            );
        }
    }

    #[test]
    fn rfc850_two_digit_years_pick_the_nearest_past_century() {
        let now = 1_700_000_000; // 2023-11-14
                                 // 2073 is exactly 50 years ahead: kept. 2074 is more: previous century.
        assert_eq!(
            parse_http_date("Monday, 02-Jan-73 00:00:00 GMT", now),
            Some(days_from_civil(2073, 1, 2) * 86_400)
        );
        assert_eq!(
            parse_http_date("Tuesday, 01-Jan-74 00:00:00 GMT", now),
            Some(days_from_civil(1974, 1, 1) * 86_400)
        );
    }

    /// RFC 9110 §5.6.7 compares the timestamp, not its year, with 50 years from now: late in
    /// the year 50 years ahead a date is already "more than 50 years in the future" and so
    /// in the past century. Read as the future, it paused the endpoint for `maxDelayMs`.
    #[test]
    fn rfc850_dates_just_past_fifty_years_ahead_are_in_the_past_century() {
        let now = 1_700_000_000; // 2023-11-14T22:13:20Z
        let at = |y, m, d, secs| Some(days_from_civil(y, m, d) * 86_400 + secs);
        for (date, expected) in [
            ("Sunday, 31-Dec-73 00:00:00 GMT", at(1973, 12, 31, 0)),
            ("Wednesday, 15-Nov-73 00:00:00 GMT", at(1973, 11, 15, 0)),
            ("Tuesday, 14-Nov-73 22:13:21 GMT", at(1973, 11, 14, 80_001)),
            // Exactly 50 years ahead is not more: kept.
            ("Tuesday, 14-Nov-73 22:13:20 GMT", at(2073, 11, 14, 80_000)),
            ("Tuesday, 14-Nov-73 22:13:19 GMT", at(2073, 11, 14, 79_999)),
        ] {
            assert_eq!(parse_http_date(date, now), expected, "{date}");
        }
        let now_ms = 1_700_000_000_000;
        assert_eq!(
            retry_after_ms(503, Some("Sunday, 31-Dec-73 00:00:00 GMT"), now_ms),
            Some(0)
        );
    }

    /// Near a century's end the nearest year with those digits is in the next century: read
    /// in the current one, a date a day ahead was taken for one a hundred years back (a
    /// review), and the pause the receiver asked for was not kept.
    #[test]
    fn rfc850_years_late_in_a_century_may_be_in_the_next() {
        let now = days_from_civil(2099, 12, 31) * 86_400;
        assert_eq!(
            parse_http_date("Friday, 01-Jan-00 00:00:00 GMT", now),
            Some(days_from_civil(2100, 1, 1) * 86_400)
        );
        assert_eq!(
            parse_http_date("Thursday, 31-Dec-99 00:00:00 GMT", now),
            Some(days_from_civil(2099, 12, 31) * 86_400)
        );
        // 2151 is more than 50 years ahead: this century's.
        assert_eq!(
            parse_http_date("Friday, 01-Jan-51 00:00:00 GMT", now),
            Some(days_from_civil(2051, 1, 1) * 86_400)
        );
    }

    #[test]
    fn date_arithmetic_matches_known_instants() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(
            parse_http_date("Tue, 29 Feb 2000 23:59:60 GMT", 0),
            Some(days_from_civil(2000, 2, 29) * 86_400 + 86_400)
        );
        assert_eq!(
            parse_http_date("Fri, 31 Dec 9999 23:59:59 GMT", 0),
            Some(253_402_300_799)
        );
    }

    #[test]
    fn garbage_retry_after_is_ignored() {
        for bad in [
            "",
            "soon",
            "-5",
            "1.5",
            "+30",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 29 Feb 1900 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 06 Foo 1994 08:49:37 GMT",
            "Xyz, 06 Nov 1994 08:49:37 GMT",
            "Sun 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94-1 08:49:37 GMT",
            "Sun Nov 32 08:49:37 1994",
        ] {
            assert_eq!(retry_after_ms(429, Some(bad), 0), None, "{bad:?}");
        }
        assert_eq!(retry_after_ms(429, None, 0), None);
    }

    /// `Retry-After`'s RFC 850 years are placed from the time of the answer: in 2023 "73" is
    /// 2073, a wait of about 49 years (capped later by `maxDelayMs`), not a date long past.
    #[test]
    fn retry_after_places_rfc850_years_from_the_time_of_the_answer() {
        let now_ms = 1_700_000_000_000; // 2023-11-14T22:13:20Z
        let at_ms = days_from_civil(2073, 1, 2) as u64 * 86_400_000;
        assert_eq!(
            retry_after_ms(429, Some("Monday, 02-Jan-73 00:00:00 GMT"), now_ms),
            Some(at_ms - now_ms)
        );
    }

    /// Minutes run to 59 and seconds to 60 (a leap second): a clock past them is not a date.
    #[test]
    fn minutes_and_seconds_past_their_range_are_not_a_date() {
        for bad in [
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
        ] {
            assert_eq!(parse_http_date(bad, 0), None, "{bad}");
        }
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:59:60 GMT", 0),
            Some(RFC_EXAMPLE_SECS as i64 + 10 * 60 + 23)
        );
    }

    #[test]
    fn retry_after_is_ignored_except_on_429_and_503() {
        assert_eq!(retry_after_ms(500, Some("120"), 0), None);
        assert_eq!(retry_after_ms(200, Some("120"), 0), None);
        assert_eq!(
            retry_after_ms(502, Some("Sun, 06 Nov 1994 08:49:37 GMT"), 0),
            None
        );
    }
}
