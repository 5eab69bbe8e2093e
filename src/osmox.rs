//! OsmoX's vocabulary: delivery statuses and the view of a notification the filter acts on.

use std::borrow::Cow;

use crate::json::Object;

/// `deliveryStatus` as OsmoX v8.5 sends it (1–6). The DB column comment saying 0–4 is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DeliveryStatus {
    Pending = 1,
    InProgress = 2,
    AwaitingConfirmation = 3,
    QueuedConfirmation = 4,
    Success = 5,
    Failed = 6,
}

impl DeliveryStatus {
    pub const ALL: [DeliveryStatus; 6] = [
        DeliveryStatus::Pending,
        DeliveryStatus::InProgress,
        DeliveryStatus::AwaitingConfirmation,
        DeliveryStatus::QueuedConfirmation,
        DeliveryStatus::Success,
        DeliveryStatus::Failed,
    ];

    pub fn from_code(code: u64) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.code() == code)
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    pub fn code(self) -> u64 {
        self as u64
    }

    /// How far one send attempt (one `retryCount` on one provider) has come. OsmoX only
    /// moves a notification forward through these within an attempt (a resend bumps
    /// `retryCount`, a failover changes `providerId`), so a view of the same attempt at an
    /// earlier stage is an older view. Confirmation may go back and forth between 3 and 4.
    pub fn stage(self) -> u8 {
        match self {
            DeliveryStatus::Pending => 0,
            DeliveryStatus::InProgress => 1,
            DeliveryStatus::AwaitingConfirmation | DeliveryStatus::QueuedConfirmation => 2,
            DeliveryStatus::Success | DeliveryStatus::Failed => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "PENDING",
            DeliveryStatus::InProgress => "IN_PROGRESS",
            DeliveryStatus::AwaitingConfirmation => "AWAITING_CONFIRMATION",
            DeliveryStatus::QueuedConfirmation => "QUEUED_CONFIRMATION",
            DeliveryStatus::Success => "SUCCESS",
            DeliveryStatus::Failed => "FAILED",
        }
    }
}

/// A set of statuses as a bit mask: cheap to copy into every endpoint and to test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatusSet(u8);

impl StatusSet {
    /// The states on which OsmoX's own webhook fires.
    pub const FINAL: StatusSet = StatusSet((1 << 5) | (1 << 6));

    pub fn insert(&mut self, s: DeliveryStatus) {
        self.0 |= 1 << s.code();
    }

    pub fn contains(self, s: DeliveryStatus) -> bool {
        self.0 & (1 << s.code()) != 0
    }
}

impl FromIterator<DeliveryStatus> for StatusSet {
    fn from_iter<I: IntoIterator<Item = DeliveryStatus>>(iter: I) -> Self {
        let mut set = StatusSet::default();
        for s in iter {
            set.insert(s);
        }
        set
    }
}

/// One notification as observed in a response, ready to route and deliver. It borrows the
/// parsed response it was read from, so its webhook body is written only if an event calls
/// for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification<'a> {
    /// The notification's own id: for an archived row, the original notification's id.
    pub id: u64,
    pub delivery_status: DeliveryStatus,
    pub provider_id: Option<u64>,
    pub channel_type: Option<u64>,
    /// Bumped by OsmoX on every send retry (FAILED → PENDING cycles).
    pub retry_count: Option<u64>,
    /// `updatedOn` as [`utc_timestamp`] reads it, when the response selected it: orders
    /// observations. Borrowed when the response wrote it as OsmoX does.
    pub updated_on: Option<Cow<'a, str>>,
    pub result: ResultView,
    /// A SUCCESS OsmoX's test mode made without sending anything ([`TEST_MODE_RESULT`]):
    /// OsmoX's own webhook never fires for one. Only a view that selected `result` tells.
    pub test_mode: bool,
    /// The webhook body: the object as observed, top-level keys in camelCase, `id` set to
    /// `self.id`, with no `notificationId`. Read it through [`Notification::webhook_body`].
    pub body: WebhookBody<'a>,
}

/// `result.result` of a notification OsmoX's test mode created as SUCCESS without sending it.
pub const TEST_MODE_RESULT: &str =
    "This is a test mode notification. Notification was not delivered to recipient.";

/// What an endpoint does with a SUCCESS that OsmoX's test mode made without sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TestMode {
    /// As any SUCCESS (the body carries OsmoX's test-mode result): receivers see the
    /// traffic of an OsmoX in test mode, which its own webhook never reports.
    #[default]
    Deliver,
    /// Not delivered, as OsmoX's own webhook does not.
    Skip,
}

/// What a view shows of `result`. OsmoX saves a SUCCESS, and queues its own webhook, before
/// it saves the provider's result: a view taken in between has the state without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResultView {
    /// The response did not select it.
    #[default]
    NotSelected,
    Null,
    Present,
}

impl Notification<'_> {
    /// A SUCCESS seen before OsmoX saved its result: a later view may show it.
    pub fn awaits_result(&self) -> bool {
        self.delivery_status == DeliveryStatus::Success && self.result == ResultView::Null
    }

    /// The body OsmoX's own webhook would send for this notification.
    pub fn webhook_body(&self) -> Cow<'_, str> {
        match &self.body {
            WebhookBody::Written(text) => Cow::Borrowed(text),
            WebhookBody::Row(row) => Cow::Owned(crate::extract::webhook_body(row, self.id)),
        }
    }

    /// `result` as the view wrote it (minified), when it has one.
    pub fn result_json(&self) -> Option<String> {
        let mut out = String::new();
        match &self.body {
            WebhookBody::Row(row) => row.get("result")?.write(&mut out),
            WebhookBody::Written(text) => {
                let arena = crate::json::Arena::new();
                let doc = crate::json::parse(text.as_bytes(), &arena).ok()?;
                doc.get("result")?.write(&mut out);
            }
        }
        Some(out)
    }

    /// The same notification with its body written out, free of the response it came from.
    pub fn into_written(self) -> Notification<'static> {
        let body = WebhookBody::Written(self.webhook_body().into_owned());
        Notification {
            id: self.id,
            delivery_status: self.delivery_status,
            provider_id: self.provider_id,
            channel_type: self.channel_type,
            retry_count: self.retry_count,
            updated_on: self.updated_on.map(|u| Cow::Owned(u.into_owned())),
            result: self.result,
            test_mode: self.test_mode,
            body,
        }
    }
}

/// A webhook body, written or still the row it will be written from. Most rows of a polled
/// page are events the dedupe memory already knows: writing every row's body cost about a
/// quarter of the instructions a polled 8 KB page took (callgrind), for bodies never sent.
#[derive(Debug, Clone)]
pub enum WebhookBody<'a> {
    Written(String),
    /// The notification's object in a parsed response.
    Row(&'a Object<'a>),
}

/// Written bodies compare by text; rows by identity (the same object of the same parse), as
/// a row's text also depends on the notification's id.
impl PartialEq for WebhookBody<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (WebhookBody::Written(a), WebhookBody::Written(b)) => a == b,
            (WebhookBody::Row(a), WebhookBody::Row(b)) => std::ptr::eq(*a, *b),
            _ => false,
        }
    }
}

impl Eq for WebhookBody<'_> {}

impl From<String> for WebhookBody<'_> {
    fn from(text: String) -> Self {
        WebhookBody::Written(text)
    }
}

impl From<&str> for WebhookBody<'_> {
    fn from(text: &str) -> Self {
        WebhookBody::Written(text.to_owned())
    }
}

/// An `updatedOn` as one form that orders as text: `YYYY-MM-DDTHH:MM:SS.mmmZ`, what OsmoX
/// sends (JavaScript's `toISOString`). Other fractions are cut or padded to milliseconds and
/// `+00:00` reads as `Z`. Anything else is `None`, as if the field were absent: the value
/// orders events, and text that is not a time (a field a client aliased there, or an offset
/// this cannot compare) would hold back every later event of the notification.
pub fn utc_timestamp(text: &str) -> Option<Cow<'_, str>> {
    let b = text.as_bytes();
    let (head, rest) = (b.get(..19)?, b.get(19..)?);
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let mut v = 0u32;
        for d in head.get(r)? {
            v = v * 10 + u32::from(d.checked_sub(b'0').filter(|d| *d <= 9)?);
        }
        Some(v)
    };
    let separators = [(4, b'-'), (7, b'-'), (13, b':'), (16, b':')];
    let t = head.get(10).copied()?;
    if separators.iter().any(|&(i, c)| head.get(i) != Some(&c)) || !matches!(t, b'T' | b't') {
        return None;
    }
    let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
    let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
    let valid = (1..=12).contains(&month)
        && (1..=crate::calendar::days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 61;
    if !valid {
        return None;
    }
    let (fraction, zone) = match rest.strip_prefix(b".") {
        Some(r) => {
            let n = r.iter().take_while(|c| c.is_ascii_digit()).count();
            r.split_at_checked(n)
                .filter(|(f, _)| (1..=9).contains(&f.len()))?
        }
        None => (&b""[..], rest),
    };
    if !matches!(zone, b"Z" | b"z" | b"+00:00") {
        return None;
    }
    // As OsmoX writes it: already the form below.
    if t == b'T' && fraction.len() == 3 && zone == b"Z" {
        return Some(Cow::Borrowed(text));
    }
    let mut out = String::with_capacity(24);
    out.push_str(std::str::from_utf8(head.get(..10)?).ok()?);
    out.push('T');
    out.push_str(std::str::from_utf8(head.get(11..)?).ok()?);
    out.push('.');
    for i in 0..3 {
        out.push(char::from(fraction.get(i).copied().unwrap_or(b'0')));
    }
    out.push('Z');
    Some(Cow::Owned(out))
}

#[cfg(test)]
mod timestamp_tests {
    use super::utc_timestamp;
    use std::borrow::Cow;

    #[test]
    fn osmox_times_read_as_they_are() {
        for t in ["2026-04-20T09:15:02.318Z", "2024-02-29T23:59:60.000Z"] {
            assert_eq!(utc_timestamp(t).as_deref(), Some(t));
            assert!(
                matches!(utc_timestamp(t), Some(Cow::Borrowed(_))),
                "not copied: {t}"
            );
        }
    }

    #[test]
    fn other_utc_forms_read_as_milliseconds_so_they_order_as_text() {
        let cases = [
            ("2026-04-20T09:15:02Z", "2026-04-20T09:15:02.000Z"),
            ("2026-04-20T09:15:02.3Z", "2026-04-20T09:15:02.300Z"),
            ("2026-04-20T09:15:02.318999Z", "2026-04-20T09:15:02.318Z"),
            ("2026-04-20t09:15:02.318z", "2026-04-20T09:15:02.318Z"),
            ("2026-04-20T09:15:02.318+00:00", "2026-04-20T09:15:02.318Z"),
        ];
        for (given, read) in cases {
            assert_eq!(utc_timestamp(given).as_deref(), Some(read), "{given}");
        }
        // Without the normal form, "…02Z" would order after "…02.318Z".
        assert!(utc_timestamp("2026-04-20T09:15:02Z") < utc_timestamp("2026-04-20T09:15:02.318Z"));
    }

    #[test]
    fn what_is_not_a_utc_time_reads_as_absent() {
        for t in [
            "",
            "system",
            "zzzz",
            "2026-04-20",
            "2026-04-20 09:15:02.318Z",
            "2026-13-20T09:15:02.318Z",
            "2026-02-30T09:15:02.318Z",
            "2026-04-20T24:00:00.000Z",
            // A review: each field's bound (a leap second, :60, is let through).
            "2026-04-00T09:15:02.318Z",
            "2026-00-20T09:15:02.318Z",
            "2026-04-31T09:15:02.318Z",
            "2026-04-20T09:60:02.318Z",
            "2026-04-20T09:15:61.318Z",
            "2026-04-20T09:15:02.318",
            "2026-04-20T09:15:02.318+02:00",
            "2026-04-20T09:15:02.Z",
            "2026-04-20T09:15:02.1234567890Z",
            "2026-04-20T09:15:02.318Zjunk",
            "+2026-04-20T09:15:02.318Z",
            "2026-04-2é09:15:02.318Z",
        ] {
            assert_eq!(utc_timestamp(t), None, "{t}");
        }
    }
}

#[cfg(test)]
mod webhook_body_tests {
    use super::WebhookBody;
    use crate::json::{parse, Arena};

    /// A row's text also depends on the notification's id, so two rows are equal only as the
    /// same object of the same parse, never for holding the same members.
    #[test]
    fn written_bodies_compare_by_text_and_rows_by_identity() {
        let text = r#"{"id":1}"#;
        assert_eq!(WebhookBody::from(text), WebhookBody::from(text.to_owned()));
        assert_ne!(WebhookBody::from(text), WebhookBody::from(r#"{"id":2}"#));
        let arena = Arena::new();
        let one = parse(text.as_bytes(), &arena).unwrap();
        let same = parse(text.as_bytes(), &arena).unwrap();
        let row = WebhookBody::Row(one.as_object().unwrap());
        assert_eq!(row, WebhookBody::Row(one.as_object().unwrap()));
        assert_ne!(row, WebhookBody::Row(same.as_object().unwrap()));
        assert_ne!(row, WebhookBody::from(text));
    }
}
