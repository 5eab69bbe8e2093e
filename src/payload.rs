//! What a webhook's body is: the notification as OsmoX's own webhook sends it (the default,
//! so the filter can replace that webhook without a change on the receiving side), or the
//! notification in the envelope the Standard Webhooks spec recommends, which names the event.

use crate::calendar::civil_from_days;
use crate::json::{self, Object};
use crate::osmox::Notification;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Payload {
    #[default]
    Notification,
    /// `{"type":"notification.<status>","timestamp":"<RFC 3339>","data":<notification>}`.
    /// The timestamp is when the event happened: the notification's `updatedOn` when the view
    /// has it (the same on every view of that state, so a body rebuilt after a restart is the
    /// same; but for a SUCCESS, OsmoX moves it when it saves the result, so one first seen
    /// without its result and rebuilt from a later view carries the later time), else when
    /// the filter saw it.
    Envelope,
}

impl Payload {
    pub fn from_name(name: &str) -> Option<Payload> {
        match name {
            "notification" => Some(Payload::Notification),
            "envelope" => Some(Payload::Envelope),
            _ => None,
        }
    }

    /// Whether a stored body is an envelope: exactly its three members.
    pub fn is_envelope(body: &Object<'_>) -> bool {
        let members = body.members();
        members.len() == 3
            && ["type", "timestamp", "data"]
                .iter()
                .all(|key| members.iter().any(|(k, _)| k.is(key)))
    }

    /// The body for `n`, observed at `observed_ms` (Unix milliseconds). `body` is
    /// `n.webhook_body()`, written once for all of an event's endpoints.
    pub fn body(self, n: &Notification, body: &str, observed_ms: u64) -> String {
        match self {
            Payload::Notification => body.to_owned(),
            Payload::Envelope => {
                let mut out = String::with_capacity(body.len() + 96);
                out.push_str("{\"type\":");
                json::write_str(&mut out, &event_type(n));
                out.push_str(",\"timestamp\":\"");
                match &n.updated_on {
                    // Already RFC 3339 UTC to the millisecond (`osmox::utc_timestamp`).
                    Some(at) => out.push_str(at),
                    None => out.push_str(&rfc3339_ms(observed_ms)),
                }
                out.push_str("\",\"data\":");
                out.push_str(body);
                out.push('}');
                out
            }
        }
    }
}

/// `notification.success`, `notification.in_progress`, …: the status OsmoX reports, lowercased.
pub fn event_type(n: &Notification) -> String {
    format!(
        "notification.{}",
        n.delivery_status.name().to_ascii_lowercase()
    )
}

/// Unix milliseconds as RFC 3339 UTC with milliseconds, e.g. `2027-01-15T08:00:00.000Z`.
pub fn rfc3339_ms(ms: u64) -> String {
    let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
    // Days since 1970 fit an i64 for any u64 of milliseconds.
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    let (h, m, s, milli) = (
        ms_of_day / 3_600_000,
        ms_of_day / 60_000 % 60,
        ms_of_day / 1000 % 60,
        ms_of_day % 1000,
    );
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// A stored body (either form) with its notification's `result` set to `result` (minified
/// JSON), every other member as stored: what a later view adds to a SUCCESS first seen
/// without its result. A body from a view that did not select `result` gets it last.
/// `None` when the body is not an object, or is an envelope whose `data` is not.
pub fn with_result(stored: &[u8], result: &str) -> Option<Vec<u8>> {
    let arena = json::Arena::new();
    let doc = json::parse(stored, &arena).ok()?;
    let body = doc.as_object()?;
    let mut out = String::with_capacity(stored.len() + result.len() + 10);
    if Payload::is_envelope(body) {
        let data = body.get("data")?.as_object()?;
        write_members(&mut out, body, |out, key, value| match key {
            "data" => write_with_result(out, data, result),
            _ => value.write(out),
        });
    } else {
        write_with_result(&mut out, body, result);
    }
    Some(out.into_bytes())
}

/// A notification `obj` with `result` in place of its own, or added last.
fn write_with_result(out: &mut String, obj: &Object<'_>, result: &str) {
    write_members(out, obj, |out, key, value| match key {
        "result" => out.push_str(result),
        _ => value.write(out),
    });
    if obj.get("result").is_none() {
        out.pop(); // the closing brace
        if !obj.members().is_empty() {
            out.push(',');
        }
        out.push_str("\"result\":");
        out.push_str(result);
        out.push('}');
    }
}

/// `obj` with each member's value written by `value`, keys as they were.
fn write_members(
    out: &mut String,
    obj: &Object<'_>,
    value: impl Fn(&mut String, &str, &json::Value<'_>),
) {
    out.push('{');
    for (i, (key, v)) in obj.members().iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let key = key.text();
        json::write_str(out, &key);
        out.push(':');
        value(out, &key, v);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::osmox::DeliveryStatus;

    fn note(status: DeliveryStatus) -> Notification<'static> {
        Notification {
            id: 7,
            delivery_status: status,
            provider_id: Some(1),
            channel_type: Some(1),
            retry_count: Some(0),
            updated_on: None,
            result: crate::osmox::ResultView::Present,
            test_mode: false,
            body: r#"{"id":7,"deliveryStatus":5,"result":{"ok":true}}"#.into(),
        }
    }

    #[test]
    fn the_default_body_is_the_notification() {
        let n = note(DeliveryStatus::Success);
        assert_eq!(
            Payload::default().body(&n, &n.webhook_body(), 0),
            n.webhook_body()
        );
    }

    #[test]
    fn an_envelope_names_the_event_and_carries_the_notification() {
        let n = note(DeliveryStatus::InProgress);
        let body = Payload::Envelope.body(&n, &n.webhook_body(), 1_800_000_000_123);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "notification.in_progress");
        assert_eq!(v["timestamp"], "2027-01-15T08:00:00.123Z");
        assert_eq!(
            v["data"],
            serde_json::from_str::<serde_json::Value>(&n.webhook_body()).unwrap()
        );
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "timestamp", "data"]);
        assert_eq!(Payload::from_name("envelope"), Some(Payload::Envelope));
        assert_eq!(Payload::from_name("Envelope"), None);
    }

    #[test]
    fn an_envelope_is_stamped_with_the_events_own_time_when_known() {
        let n = Notification {
            updated_on: Some("2026-04-20T09:15:01.250Z".into()),
            ..note(DeliveryStatus::Success)
        };
        let body = Payload::Envelope.body(&n, &n.webhook_body(), 1_800_000_000_123);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["timestamp"], "2026-04-20T09:15:01.250Z");
    }

    /// A dead-letter report unwraps a stored body by its shape: the endpoint's `payload` may
    /// have changed since the body was stored (a review).
    #[test]
    fn an_envelope_is_told_by_its_shape() {
        let is = |src: &str| match json::parse(src.as_bytes(), &json::Arena::new()).unwrap() {
            json::Value::Object(o) => Payload::is_envelope(&o),
            _ => false,
        };
        let n = note(DeliveryStatus::Failed);
        assert!(is(&Payload::Envelope.body(&n, &n.webhook_body(), 0)));
        assert!(!is(&Payload::Notification.body(&n, &n.webhook_body(), 0)));
        assert!(!is(r#"{"type":1,"timestamp":2,"data":3,"id":4}"#));
        assert!(!is(r#"{"type":1,"data":3,"id":4}"#));
    }

    /// What a view with the result gives a stored body: the result, and nothing else (the
    /// view may have selected fewer fields; an envelope keeps its timestamp).
    #[test]
    fn a_result_replaces_only_the_stored_result_or_comes_last() {
        let result = r#"{"result":{"messageId":"m1"}}"#;
        let plain = br#"{"id":7,"data":{"to":"a\u00e9"},"result":null,"n":1.50}"#;
        assert_eq!(
            String::from_utf8(with_result(plain, result).unwrap()).unwrap(),
            r#"{"id":7,"data":{"to":"a\u00e9"},"result":{"result":{"messageId":"m1"}},"n":1.50}"#
        );
        let wrapped = br#"{"type":"notification.success","timestamp":"2026-04-20T09:15:01.250Z","data":{"id":7,"result":null}}"#;
        assert_eq!(
            String::from_utf8(with_result(wrapped, result).unwrap()).unwrap(),
            r#"{"type":"notification.success","timestamp":"2026-04-20T09:15:01.250Z","data":{"id":7,"result":{"result":{"messageId":"m1"}}}}"#
        );
        // A body from a view that did not select it gets it last.
        assert_eq!(
            String::from_utf8(with_result(br#"{"id":7,"providerId":1}"#, result).unwrap()).unwrap(),
            r#"{"id":7,"providerId":1,"result":{"result":{"messageId":"m1"}}}"#
        );
        let wrapped = br#"{"type":"notification.success","timestamp":"2026-04-20T09:15:01.250Z","data":{"id":7}}"#;
        assert_eq!(
            String::from_utf8(with_result(wrapped, result).unwrap()).unwrap(),
            r#"{"type":"notification.success","timestamp":"2026-04-20T09:15:01.250Z","data":{"id":7,"result":{"result":{"messageId":"m1"}}}}"#
        );
        assert_eq!(
            String::from_utf8(with_result(b"{}", result).unwrap()).unwrap(),
            r#"{"result":{"result":{"messageId":"m1"}}}"#
        );
        assert_eq!(with_result(b"[1]", result), None);
        assert_eq!(with_result(b"{", result), None);
    }

    #[test]
    fn timestamps_match_the_calendar() {
        for (ms, text) in [
            (0, "1970-01-01T00:00:00.000Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
            (951_868_799_999, "2000-02-29T23:59:59.999Z"),
            (1_709_251_199_000, "2024-02-29T23:59:59.000Z"),
            (4_102_444_800_000, "2100-01-01T00:00:00.000Z"),
            (4_107_542_400_000, "2100-03-01T00:00:00.000Z"),
        ] {
            assert_eq!(rfc3339_ms(ms), text, "{ms}");
        }
    }
}
