//! Finding notifications in OsmoX responses.
//!
//! OsmoX offers no event stream, so the filter reads notifications out of the responses its
//! clients already fetch: GraphQL (`data…`, camelCase) and REST (v8 bare rows and `{items}`
//! pages in snake_case, v7 JSend envelopes in camelCase). Each one found becomes a
//! [`Notification`] whose body is what OsmoX's own webhook would have sent.

mod graphql;
mod learn;

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use crate::osmox::{DeliveryStatus, Notification};

pub use graphql::{graphql_request_facts, RequestFacts};
pub use learn::{extract_registration, is_webhook_route, Registration};

/// How many levels below the walk's root (GraphQL `data`, the REST body) are searched.
/// OsmoX nests rows two levels deep at most; the bound keeps hostile bodies cheap.
pub const MAX_DEPTH: usize = 16;

/// Members of one array or object that are looked at; the rest are ignored. OsmoX pages are
/// far smaller, so this only bounds the work a hostile or runaway body can cause.
pub const MAX_MEMBERS: usize = 10_000;

/// What kind of OsmoX call a request is, decided from method + path (path without query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    Graphql,
    Rest,
}

/// GraphQL: `POST` to exactly one of `graphql_paths`. REST: any method on a path equal to a
/// prefix or below it (`prefix/…`), so list, by-id and create calls are all seen. A prefix
/// that is empty or only `/` matches nothing: it would watch every route.
pub fn classify(
    method: &str,
    path: &str,
    graphql_paths: &[String],
    rest_path_prefixes: &[String],
) -> Option<WatchKind> {
    let path = strip_query(path);
    if method.eq_ignore_ascii_case("POST") && graphql_paths.iter().any(|p| p == path) {
        return Some(WatchKind::Graphql);
    }
    let under = |prefix: &String| {
        let prefix = prefix.trim_end_matches('/');
        !prefix.is_empty()
            && path
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    };
    rest_path_prefixes
        .iter()
        .any(under)
        .then_some(WatchKind::Rest)
}

/// The path without `?query` or `#fragment`.
pub(crate) fn strip_query(path: &str) -> &str {
    path.find(['?', '#'])
        .and_then(|i| path.get(..i))
        .unwrap_or(path)
}

/// Why a body could not be searched at all (as opposed to holding no notifications).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtractError {
    /// Not valid JSON (or nested deeper than serde_json's recursion limit).
    NotJson,
    /// Valid JSON whose top level is not an object; OsmoX never answers like that.
    NotObject,
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtractError::NotJson => "response body is not JSON",
            ExtractError::NotObject => "response body is not a JSON object",
        })
    }
}

impl std::error::Error for ExtractError {}

/// The notifications in one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted {
    /// In document order, one per identity (the first occurrence wins).
    pub notifications: Vec<Notification>,
    /// Objects carrying a delivery status that could not be used: the status is not an
    /// integer 1–6, or there is no integer id. Worth a metric: it means the query did not
    /// select `id`, or OsmoX changed its wire format.
    pub skipped_objects: usize,
}

/// Every notification in an OsmoX response body.
///
/// An object is a notification when it has `deliveryStatus` or `delivery_status`. GraphQL is
/// searched under `data` only, so a response with `errors` still yields its partial data;
/// REST is searched from the top, except that a JSend envelope (`status` is a string) is
/// searched under `data` when it is `"success"` and not at all otherwise. `data` and `result`
/// fields below the root are never entered: in OsmoX they hold caller and provider payloads,
/// which may contain anything.
pub fn extract(
    kind: WatchKind,
    body: &[u8],
    facts: &RequestFacts,
) -> Result<Extracted, ExtractError> {
    let root: Value = serde_json::from_slice(body).map_err(|_| ExtractError::NotJson)?;
    let Value::Object(root) = root else {
        return Err(ExtractError::NotObject);
    };
    let mut found = Collector::default();
    match kind {
        WatchKind::Graphql => {
            if let Some(Value::Object(data)) = root.get("data") {
                // `notification(notificationId: N)` may answer an archived row under the
                // archive's own id: N is the identity the caller asked about.
                let key = facts
                    .notification_alias
                    .as_deref()
                    .unwrap_or("notification");
                for (k, v) in data.iter().take(MAX_MEMBERS) {
                    let id_override = if k == key {
                        facts.notification_id_arg
                    } else {
                        None
                    };
                    found.visit(v, 1, id_override);
                }
            }
        }
        WatchKind::Rest => {
            if is_notification(&root) {
                found.take(&root, None);
            } else if let Some(status) = root.get("status").and_then(Value::as_str) {
                if status == "success" {
                    if let Some(data) = root.get("data") {
                        found.visit(data, 1, None);
                    }
                }
            } else {
                found.visit_members(&root, 0);
            }
        }
    }
    Ok(Extracted {
        notifications: found.notifications,
        skipped_objects: found.skipped,
    })
}

/// `snake_case` → `camelCase`, as OsmoX's webhook spells keys. An underscore is dropped (and
/// the next character upper-cased) only between two ASCII letters/digits, so leading, trailing
/// and doubled underscores survive and already-camelCase keys come back borrowed.
pub fn to_camel_case(key: &str) -> Cow<'_, str> {
    if !key.contains('_') {
        return Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    let mut chars = key.chars().peekable();
    let mut prev: Option<char> = None;
    let mut upper_next = false;
    while let Some(ch) = chars.next() {
        let joins_words = ch == '_'
            && prev.is_some_and(|p| p.is_ascii_alphanumeric())
            && chars.peek().is_some_and(|n| n.is_ascii_alphanumeric());
        if joins_words {
            upper_next = true;
        } else if upper_next {
            out.push(ch.to_ascii_uppercase());
            upper_next = false;
        } else {
            out.push(ch);
        }
        prev = Some(ch);
    }
    Cow::Owned(out)
}

fn is_notification(obj: &Map<String, Value>) -> bool {
    obj.contains_key("deliveryStatus") || obj.contains_key("delivery_status")
}

/// A field under its camelCase (GraphQL, v7) or snake_case (REST v8) name.
fn field<'a>(obj: &'a Map<String, Value>, camel: &str, snake: &str) -> Option<&'a Value> {
    obj.get(camel).or_else(|| obj.get(snake))
}

fn u64_field(obj: &Map<String, Value>, camel: &str, snake: &str) -> Option<u64> {
    field(obj, camel, snake).and_then(Value::as_u64)
}

#[derive(Default)]
struct Collector {
    notifications: Vec<Notification>,
    skipped: usize,
    seen: HashSet<u64>,
}

impl Collector {
    fn visit(&mut self, v: &Value, depth: usize, id_override: Option<u64>) {
        if depth > MAX_DEPTH {
            return;
        }
        match v {
            Value::Object(obj) if is_notification(obj) => self.take(obj, id_override),
            Value::Object(obj) => self.visit_members(obj, depth),
            Value::Array(items) => {
                for item in items.iter().take(MAX_MEMBERS) {
                    self.visit(item, depth + 1, None);
                }
            }
            _ => {}
        }
    }

    fn visit_members(&mut self, obj: &Map<String, Value>, depth: usize) {
        for (k, v) in obj.iter().take(MAX_MEMBERS) {
            if k != "data" && k != "result" {
                self.visit(v, depth + 1, None);
            }
        }
    }

    fn take(&mut self, obj: &Map<String, Value>, id_override: Option<u64>) {
        match notification(obj, id_override) {
            Some(n) => {
                if self.seen.insert(n.id) {
                    self.notifications.push(n);
                }
            }
            None => self.skipped += 1,
        }
    }
}

/// The notification an object describes, or `None` when it lacks a usable id or status.
fn notification(obj: &Map<String, Value>, id_override: Option<u64>) -> Option<Notification> {
    // An archived row has its own `id`; the notification's is in `notificationId`.
    let id = match id_override {
        Some(id) => id,
        None => match field(obj, "notificationId", "notification_id") {
            Some(original) => original.as_u64()?,
            None => obj.get("id")?.as_u64()?,
        },
    };
    let code = field(obj, "deliveryStatus", "delivery_status")?.as_u64()?;
    let delivery_status = DeliveryStatus::from_code(code)?;
    let body = serde_json::to_string(&WebhookBody { obj, id }).ok()?;
    Some(Notification {
        id,
        delivery_status,
        provider_id: u64_field(obj, "providerId", "provider_id"),
        channel_type: u64_field(obj, "channelType", "channel_type"),
        retry_count: u64_field(obj, "retryCount", "retry_count"),
        updated_on: field(obj, "updatedOn", "updated_on")
            .and_then(Value::as_str)
            .map(str::to_owned),
        body,
    })
}

/// Serializes a row as OsmoX's webhook would: keys in observed order, top-level keys in
/// camelCase, values untouched, `id` set to the identity, no `notificationId`. Written as a
/// `Serialize` view so `data`/`result` payloads are not cloned.
struct WebhookBody<'a> {
    obj: &'a Map<String, Value>,
    id: u64,
}

impl Serialize for WebhookBody<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        let mut written: HashSet<Cow<'_, str>> = HashSet::with_capacity(self.obj.len() + 1);
        if !self.obj.contains_key("id") {
            map.serialize_entry("id", &self.id)?;
            written.insert(Cow::Borrowed("id"));
        }
        for (k, v) in self.obj {
            let key = to_camel_case(k);
            // `provider_id` next to `providerId` would repeat a key: the camelCase one wins,
            // as in `field`.
            let shadowed = key != k.as_str() && self.obj.contains_key(key.as_ref());
            if key == "notificationId" || shadowed || written.contains(&key) {
                continue;
            }
            if key == "id" {
                map.serialize_entry("id", &self.id)?;
            } else {
                map.serialize_entry(key.as_ref(), v)?;
            }
            written.insert(key);
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const GQL_LIST: &str =
        include_str!("../../tests/fixtures/osmox/graphql-notifications-query-response.json");
    const GQL_LIST_REAL: &str =
        include_str!("../../tests/fixtures/osmox/graphql-notifications-query-response.real.json");
    const GQL_REGISTER: &str =
        include_str!("../../tests/fixtures/osmox/graphql-register-webhook-response.json");
    const GQL_REGISTER_REAL: &str =
        include_str!("../../tests/fixtures/osmox/graphql-register-webhook-response.real.json");
    const V8_CREATE: &str =
        include_str!("../../tests/fixtures/osmox/rest-create-notification-response.v8.json");
    const V8_CREATE_REAL: &str =
        include_str!("../../tests/fixtures/osmox/rest-create-notification-response.real.json");
    const V7_CREATE: &str =
        include_str!("../../tests/fixtures/osmox/rest-create-notification-response.v7-jsend.json");
    const V8_LIST: &str =
        include_str!("../../tests/fixtures/osmox/rest-notifications-list-response.v8.json");
    const V8_LIST_REAL: &str =
        include_str!("../../tests/fixtures/osmox/rest-notifications-list-response.real.json");
    const V8_BY_ID_1: &str =
        include_str!("../../tests/fixtures/osmox/rest-get-notification-by-id.status1.real.json");
    const V8_BY_ID_5: &str =
        include_str!("../../tests/fixtures/osmox/rest-get-notification-by-id.status5.real.json");
    const PROBLEM: &str =
        include_str!("../../tests/fixtures/osmox/rest-error-problem-json.v8.json");
    const PROBLEM_REAL: &str =
        include_str!("../../tests/fixtures/osmox/rest-error-bad-api-key.real.json");
    const WEBHOOK_SUCCESS: &str =
        include_str!("../../tests/fixtures/osmox/webhook-payload-success.json");
    const WEBHOOK_FAILED: &str =
        include_str!("../../tests/fixtures/osmox/webhook-payload-failed.json");
    const WEBHOOK_REAL: &str = include_str!("../../tests/fixtures/osmox/webhook-sample.json");
    const TIMELINE_REAL: &str = include_str!("../../tests/fixtures/osmox/state-timeline.real.json");

    /// The response body of a `captured/*.real.json` file, as sent (key order kept).
    fn captured_body(wrapped: &str) -> Vec<u8> {
        let v: Value = serde_json::from_str(wrapped).unwrap();
        serde_json::to_vec(&v["body"]).unwrap()
    }

    fn run(kind: WatchKind, body: &[u8]) -> Extracted {
        extract(kind, body, &RequestFacts::default()).unwrap()
    }

    /// (id, status code, provider, channel, retry count) per notification.
    type Row = (u64, u64, Option<u64>, Option<u64>, Option<u64>);

    fn summary(x: &Extracted) -> Vec<Row> {
        x.notifications
            .iter()
            .map(|n| {
                (
                    n.id,
                    n.delivery_status.code(),
                    n.provider_id,
                    n.channel_type,
                    n.retry_count,
                )
            })
            .collect()
    }

    fn body_json(n: &Notification) -> Value {
        serde_json::from_str(&n.body).unwrap()
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn classify_decides_by_method_and_path() {
        let gql = vec!["/graphql".to_string()];
        let rest = vec!["/notifications".to_string(), "/v1/webhooks/".to_string()];
        let cases = [
            ("POST", "/graphql", Some(WatchKind::Graphql)),
            ("post", "/graphql?x=1", Some(WatchKind::Graphql)),
            ("GET", "/graphql", None),
            ("POST", "/graphql/extra", None),
            ("POST", "/graphqlx", None),
            ("GET", "/notifications", Some(WatchKind::Rest)),
            (
                "GET",
                "/notifications?page=2&limit=3",
                Some(WatchKind::Rest),
            ),
            ("GET", "/notifications/14", Some(WatchKind::Rest)),
            ("POST", "/notifications", Some(WatchKind::Rest)),
            ("DELETE", "/v1/webhooks/3", Some(WatchKind::Rest)),
            ("POST", "/v1/webhooks", Some(WatchKind::Rest)),
            ("GET", "/notificationsx", None),
            ("GET", "/archived-notifications", None),
            ("GET", "/", None),
        ];
        for (method, path, want) in cases {
            assert_eq!(classify(method, path, &gql, &rest), want, "{method} {path}");
        }
    }

    #[test]
    fn classify_ignores_empty_and_root_prefixes() {
        let rest = vec![String::new(), "/".to_string()];
        assert_eq!(classify("GET", "/anything", &[], &rest), None);
    }

    #[test]
    fn graphql_list_yields_every_row_in_order() {
        let x = run(WatchKind::Graphql, GQL_LIST.as_bytes());
        assert_eq!(
            summary(&x),
            vec![
                (1048, 5, Some(7), Some(11), Some(0)),
                (1047, 2, Some(3), Some(3), Some(0)),
                (1046, 4, Some(6), Some(6), Some(0)),
                (1045, 1, Some(4), Some(4), Some(1)),
                (1044, 6, Some(5), Some(5), Some(3)),
                (1043, 3, Some(2), Some(2), Some(0)),
                (1042, 5, Some(1), Some(1), Some(0)),
            ]
        );
        assert_eq!(x.skipped_objects, 0);
        let first = x.notifications.first().unwrap();
        assert_eq!(
            first.updated_on.as_deref(),
            Some("2026-04-20T09:21:40.102Z")
        );
    }

    #[test]
    fn graphql_row_body_is_the_row_as_observed() {
        let x = run(WatchKind::Graphql, GQL_LIST.as_bytes());
        let doc: Value = serde_json::from_str(GQL_LIST).unwrap();
        let row = &doc["data"]["notifications"]["notifications"][4];
        let n = &x.notifications[4];
        assert_eq!(n.id, 1044);
        assert_eq!(n.body, serde_json::to_string(row).unwrap());
        // OsmoX's own FAILED webhook for this row has the same keys.
        let hook: Value = serde_json::from_str(WEBHOOK_FAILED).unwrap();
        assert_eq!(keys(&body_json(n)), keys(&hook));
    }

    #[test]
    fn graphql_inline_row_body_is_compact_and_exact() {
        let body = br#"{"data":{"notifications":{"notifications":[
            {"id": 7, "deliveryStatus": 5, "data": {"a_b": 1}, "result": null}
        ]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(
            x.notifications[0].body,
            r#"{"id":7,"deliveryStatus":5,"data":{"a_b":1},"result":null}"#
        );
        assert_eq!(x.notifications[0].provider_id, None);
        assert_eq!(x.notifications[0].retry_count, None);
        assert_eq!(x.notifications[0].updated_on, None);
    }

    #[test]
    fn graphql_real_capture_yields_seven_success_rows() {
        let x = run(WatchKind::Graphql, GQL_LIST_REAL.as_bytes());
        let ids: Vec<u64> = x.notifications.iter().map(|n| n.id).collect();
        assert_eq!(ids, vec![14, 13, 12, 11, 10, 9, 8]);
        assert!(x
            .notifications
            .iter()
            .all(|n| n.delivery_status == DeliveryStatus::Success
                && n.provider_id == Some(1)
                && n.channel_type == Some(1)
                && n.retry_count == Some(0)));
        assert_eq!(x.skipped_objects, 0);
    }

    #[test]
    fn webhook_registration_responses_hold_no_notifications() {
        for body in [GQL_REGISTER, GQL_REGISTER_REAL] {
            assert_eq!(
                run(WatchKind::Graphql, body.as_bytes()),
                Extracted::default()
            );
            assert_eq!(run(WatchKind::Rest, body.as_bytes()), Extracted::default());
        }
    }

    #[test]
    fn rest_v8_create_body_is_osmox_webhook_shape() {
        let x = run(WatchKind::Rest, V8_CREATE.as_bytes());
        assert_eq!(summary(&x), vec![(1042, 1, Some(1), Some(1), Some(0))]);
        let n = &x.notifications[0];
        assert_eq!(n.updated_on.as_deref(), Some("2026-04-20T09:15:02.318Z"));
        assert_eq!(
            n.body,
            concat!(
                r#"{"providerId":1,"data":{"from":"no-reply@example.com","to":"jane.doe@example.com","#,
                r#""subject":"Your invoice INV-20417 is ready","#,
                r#""text":"Hi Jane, invoice INV-20417 for $129.00 is now available.","#,
                r#""html":"<p>Hi Jane, invoice <b>INV-20417</b> for $129.00 is now available.</p>"},"#,
                r#""applicationId":1,"createdBy":"billing-service","updatedBy":"billing-service","#,
                r#""channelType":1,"result":null,"notificationSentOn":null,"providerChainId":null,"#,
                r#""id":1042,"deliveryStatus":1,"createdOn":"2026-04-20T09:15:02.318Z","#,
                r#""updatedOn":"2026-04-20T09:15:02.318Z","status":1,"retryCount":0}"#
            )
        );
        let hook: Value = serde_json::from_str(WEBHOOK_SUCCESS).unwrap();
        assert_eq!(keys(&body_json(n)), keys(&hook));
    }

    #[test]
    fn rest_v8_real_create_and_by_id_yield_notification_14() {
        let cases = [
            (V8_CREATE_REAL, 1, "2026-11-29T04:53:49.385Z"),
            (V8_BY_ID_1, 1, "2026-11-29T04:53:49.385Z"),
            (V8_BY_ID_5, 5, "2026-11-29T04:53:50.089Z"),
        ];
        for (wrapped, status, updated) in cases {
            let x = run(WatchKind::Rest, &captured_body(wrapped));
            assert_eq!(summary(&x), vec![(14, status, Some(1), Some(1), Some(0))]);
            let n = &x.notifications[0];
            assert_eq!(n.updated_on.as_deref(), Some(updated));
            let body = body_json(n);
            let hook: Value = serde_json::from_str(WEBHOOK_SUCCESS).unwrap();
            assert_eq!(keys(&body), keys(&hook));
            assert_eq!(body["deliveryStatus"], json!(status));
        }
    }

    #[test]
    fn rest_v8_by_id_keeps_payload_keys_untouched() {
        let x = run(WatchKind::Rest, &captured_body(V8_BY_ID_5));
        let body = body_json(&x.notifications[0]);
        assert_eq!(body["result"]["result"]["messageSize"], json!(690));
        assert_eq!(
            body["notificationSentOn"],
            json!("2026-11-29T04:53:50.081Z")
        );
        assert!(body.get("notification_sent_on").is_none());
    }

    #[test]
    fn rest_v7_jsend_yields_the_enveloped_notification() {
        let x = run(WatchKind::Rest, V7_CREATE.as_bytes());
        assert_eq!(summary(&x), vec![(1042, 1, Some(1), Some(1), Some(0))]);
        let doc: Value = serde_json::from_str(V7_CREATE).unwrap();
        assert_eq!(
            x.notifications[0].body,
            serde_json::to_string(&doc["data"]["notification"]).unwrap()
        );
        assert_eq!(
            x.notifications[0].updated_on.as_deref(),
            Some("2025-10-20T09:15:02.318Z")
        );
    }

    #[test]
    fn rest_v7_jsend_lists_and_bare_data_are_found() {
        let row = |id: u64| json!({"id": id, "deliveryStatus": 2});
        let bodies = [
            json!({"status": "success", "data": {"notifications": [row(1), row(2)]}}),
            json!({"status": "success", "data": [row(1), row(2)]}),
        ];
        for body in bodies {
            let x = run(WatchKind::Rest, &serde_json::to_vec(&body).unwrap());
            let ids: Vec<u64> = x.notifications.iter().map(|n| n.id).collect();
            assert_eq!(ids, vec![1, 2]);
        }
        let single = json!({"status": "success", "data": row(3)});
        let x = run(WatchKind::Rest, &serde_json::to_vec(&single).unwrap());
        assert_eq!(summary(&x), vec![(3, 2, None, None, None)]);
    }

    #[test]
    fn rest_v7_fail_envelope_yields_nothing() {
        let body = br#"{"status":"fail","data":{"notification":{"id":1,"deliveryStatus":5}}}"#;
        assert_eq!(run(WatchKind::Rest, body), Extracted::default());
    }

    #[test]
    fn rest_v8_lists_yield_every_item() {
        let x = run(WatchKind::Rest, V8_LIST.as_bytes());
        assert_eq!(
            summary(&x),
            vec![
                (1045, 1, Some(4), Some(4), Some(1)),
                (1044, 6, Some(5), Some(5), Some(3)),
                (1043, 3, Some(2), Some(2), Some(0)),
            ]
        );
        let hook: Value = serde_json::from_str(WEBHOOK_FAILED).unwrap();
        assert_eq!(keys(&body_json(&x.notifications[1])), keys(&hook));
        let real = run(WatchKind::Rest, &captured_body(V8_LIST_REAL));
        assert_eq!(
            summary(&real),
            vec![
                (12, 5, Some(1), Some(1), Some(0)),
                (11, 5, Some(1), Some(1), Some(0)),
                (10, 5, Some(1), Some(1), Some(0)),
            ]
        );
    }

    #[test]
    fn rest_v8_camel_cases_the_failed_row_exactly_like_osmox_webhook_values() {
        let x = run(WatchKind::Rest, V8_LIST.as_bytes());
        let ours = body_json(&x.notifications[1]);
        let hook: Value = serde_json::from_str(WEBHOOK_FAILED).unwrap();
        // Same keys and values; only the order differs (the REST list has its own order).
        assert_eq!(ours, hook);
    }

    #[test]
    fn problem_json_errors_yield_nothing() {
        assert_eq!(
            run(WatchKind::Rest, PROBLEM.as_bytes()),
            Extracted::default()
        );
        assert_eq!(
            run(WatchKind::Rest, &captured_body(PROBLEM_REAL)),
            Extracted::default()
        );
    }

    #[test]
    fn webhook_payloads_read_as_rest_rows_but_not_as_graphql() {
        let x = run(WatchKind::Rest, WEBHOOK_SUCCESS.as_bytes());
        assert_eq!(summary(&x), vec![(1042, 5, Some(1), Some(1), Some(0))]);
        let doc: Value = serde_json::from_str(WEBHOOK_SUCCESS).unwrap();
        assert_eq!(
            x.notifications[0].body,
            serde_json::to_string(&doc).unwrap()
        );
        let x = run(WatchKind::Rest, WEBHOOK_FAILED.as_bytes());
        assert_eq!(summary(&x), vec![(1044, 6, Some(5), Some(5), Some(3))]);
        assert_eq!(
            run(WatchKind::Graphql, WEBHOOK_SUCCESS.as_bytes()),
            Extracted::default()
        );
    }

    #[test]
    fn captured_webhook_sample_finds_both_bodies() {
        let x = run(WatchKind::Rest, WEBHOOK_REAL.as_bytes());
        assert_eq!(
            summary(&x),
            vec![
                (5, 5, Some(1), Some(1), Some(0)),
                (15, 5, Some(1), Some(1), Some(0))
            ]
        );
        assert_eq!(x.skipped_objects, 0);
    }

    #[test]
    fn timeline_entries_without_id_are_counted_not_extracted() {
        let x = run(WatchKind::Rest, TIMELINE_REAL.as_bytes());
        assert_eq!(x.notifications, vec![]);
        assert_eq!(x.skipped_objects, 7);
    }

    #[test]
    fn archived_row_is_identified_by_notification_id() {
        let body = br#"{"data":{"archivedNotifications":{"archivedNotifications":[
            {"id":9001,"notificationId":1042,"providerId":1,"channelType":1,"deliveryStatus":5,
             "retryCount":0,"updatedOn":"2026-04-20T09:15:06.912Z"}
        ],"total":1,"offset":0,"limit":10}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(summary(&x), vec![(1042, 5, Some(1), Some(1), Some(0))]);
        assert_eq!(
            x.notifications[0].body,
            r#"{"id":1042,"providerId":1,"channelType":1,"deliveryStatus":5,"retryCount":0,"updatedOn":"2026-04-20T09:15:06.912Z"}"#
        );
    }

    #[test]
    fn archived_row_without_selected_id_gets_id_first() {
        let body = br#"{"data":{"archivedNotifications":{"archivedNotifications":[
            {"notificationId":1042,"deliveryStatus":6}]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(x.notifications[0].body, r#"{"id":1042,"deliveryStatus":6}"#);
    }

    #[test]
    fn archived_row_with_bad_notification_id_is_skipped_not_renamed() {
        let body = br#"{"data":{"archivedNotifications":{"archivedNotifications":[
            {"id":9001,"notificationId":null,"deliveryStatus":6}]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(x.notifications, vec![]);
        assert_eq!(x.skipped_objects, 1);
    }

    const ARCHIVED_ANSWER: &[u8] =
        br#"{"data":{"notification":{"id":9001,"deliveryStatus":5,"providerId":1}}}"#;

    #[test]
    fn notification_query_answer_takes_the_requested_id() {
        let facts = RequestFacts {
            notification_id_arg: Some(1042),
            ..RequestFacts::default()
        };
        let x = extract(WatchKind::Graphql, ARCHIVED_ANSWER, &facts).unwrap();
        assert_eq!(summary(&x), vec![(1042, 5, Some(1), None, None)]);
        assert_eq!(
            x.notifications[0].body,
            r#"{"id":1042,"deliveryStatus":5,"providerId":1}"#
        );
    }

    #[test]
    fn notification_query_with_variable_takes_the_requested_id() {
        let request = br#"{"query":"query Q($id: Int!) { notification(notificationId: $id) { id deliveryStatus providerId } }","variables":{"id":1042},"operationName":"Q"}"#;
        let facts = graphql_request_facts(request);
        let x = extract(WatchKind::Graphql, ARCHIVED_ANSWER, &facts).unwrap();
        assert_eq!(summary(&x), vec![(1042, 5, Some(1), None, None)]);
    }

    #[test]
    fn aliased_notification_query_takes_the_requested_id() {
        let request =
            br#"{"query":"{ n: notification(notificationId: 1042) { id deliveryStatus } }"}"#;
        let facts = graphql_request_facts(request);
        let body = br#"{"data":{"n":{"id":9001,"deliveryStatus":5}}}"#;
        let x = extract(WatchKind::Graphql, body, &facts).unwrap();
        assert_eq!(summary(&x), vec![(1042, 5, None, None, None)]);
        // Without the request facts the archive's own id is all there is.
        let x = run(WatchKind::Graphql, body);
        assert_eq!(x.notifications[0].id, 9001);
    }

    #[test]
    fn unusable_statuses_and_ids_are_skipped_and_counted() {
        let body = br#"{"data":{"notifications":{"notifications":[
            {"id":1,"deliveryStatus":0},
            {"id":2,"deliveryStatus":7},
            {"id":3,"deliveryStatus":"5"},
            {"id":4,"deliveryStatus":null},
            {"id":5,"deliveryStatus":5.5},
            {"id":"6","deliveryStatus":5},
            {"id":-7,"deliveryStatus":5},
            {"deliveryStatus":5},
            {"id":9,"deliveryStatus":6}
        ]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(summary(&x), vec![(9, 6, None, None, None)]);
        assert_eq!(x.skipped_objects, 8);
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert_eq!(
            extract(WatchKind::Rest, b"{\"id\":1,", &RequestFacts::default()),
            Err(ExtractError::NotJson)
        );
        assert_eq!(
            extract(WatchKind::Graphql, b"", &RequestFacts::default()),
            Err(ExtractError::NotJson)
        );
        assert_eq!(
            ExtractError::NotJson.to_string(),
            "response body is not JSON"
        );
    }

    #[test]
    fn non_object_top_level_is_an_error() {
        for kind in [WatchKind::Rest, WatchKind::Graphql] {
            assert_eq!(
                extract(kind, b"[1,2,3]", &RequestFacts::default()),
                Err(ExtractError::NotObject)
            );
            assert_eq!(
                extract(kind, b"\"x\"", &RequestFacts::default()),
                Err(ExtractError::NotObject)
            );
        }
    }

    #[test]
    fn notification_payloads_are_not_searched() {
        let body = br#"{"data":{"notifications":{"notifications":[
            {"id":1,"deliveryStatus":2,"data":{"inner":{"id":99,"deliveryStatus":5}},
             "result":{"id":98,"deliveryStatus":6}},
            {"id":2,"data":{"id":97,"deliveryStatus":5},"result":[{"id":96,"deliveryStatus":5}]}
        ]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(summary(&x), vec![(1, 2, None, None, None)]);
        assert_eq!(x.skipped_objects, 0);
    }

    #[test]
    fn graphql_errors_do_not_hide_partial_data() {
        let body =
            br#"{"errors":[{"message":"Cannot read properties of undefined (reading 'protocol')"}],
            "data":{"a":{"id":1,"deliveryStatus":1},"b":null}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(summary(&x), vec![(1, 1, None, None, None)]);
        let errors_only =
            br#"{"errors":[{"message":"x","extensions":{"id":2,"deliveryStatus":5}}],"data":null}"#;
        assert_eq!(run(WatchKind::Graphql, errors_only), Extracted::default());
    }

    #[test]
    fn repeated_identity_keeps_the_first() {
        let body = br#"{"data":{
            "live":{"notifications":[{"id":1042,"deliveryStatus":2}]},
            "archived":{"archivedNotifications":[{"id":9001,"notificationId":1042,"deliveryStatus":5}]}
        }}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(summary(&x), vec![(1042, 2, None, None, None)]);
        assert_eq!(x.skipped_objects, 0);
    }

    #[test]
    fn arrays_are_searched_up_to_the_member_bound() {
        let rows: Vec<Value> = (1..=(MAX_MEMBERS as u64 + 5))
            .map(|id| json!({"id": id, "delivery_status": 1}))
            .collect();
        let body = serde_json::to_vec(&json!({ "items": rows })).unwrap();
        let x = run(WatchKind::Rest, &body);
        assert_eq!(x.notifications.len(), MAX_MEMBERS);
        assert_eq!(x.notifications.last().unwrap().id, MAX_MEMBERS as u64);
    }

    #[test]
    fn nesting_beyond_the_depth_bound_is_not_searched() {
        let mut shallow = json!({"id": 1, "deliveryStatus": 1});
        // Directly under `data` is depth 1: this puts the row at exactly MAX_DEPTH.
        for _ in 0..MAX_DEPTH {
            shallow = json!({ "x": shallow });
        }
        let deep = json!({ "x": shallow.clone() });
        let found = run(
            WatchKind::Graphql,
            &serde_json::to_vec(&json!({ "data": shallow })).unwrap(),
        );
        assert_eq!(found.notifications.len(), 1);
        let missed = run(
            WatchKind::Graphql,
            &serde_json::to_vec(&json!({ "data": deep })).unwrap(),
        );
        assert_eq!(missed, Extracted::default());
    }

    #[test]
    fn camel_case_key_wins_over_its_snake_case_twin() {
        let body = br#"{"id":1,"delivery_status":1,"provider_id":2,"providerId":3}"#;
        let x = run(WatchKind::Rest, body);
        assert_eq!(
            x.notifications[0].body,
            r#"{"id":1,"deliveryStatus":1,"providerId":3}"#
        );
        assert_eq!(x.notifications[0].provider_id, Some(3));
    }

    #[test]
    fn to_camel_case_joins_snake_words_only() {
        let cases = [
            ("provider_chain_id", "providerChainId"),
            ("notification_sent_on", "notificationSentOn"),
            ("id", "id"),
            ("providerChainId", "providerChainId"),
            ("address_2", "address2"),
            ("_private", "_private"),
            ("trailing_", "trailing_"),
            ("a__b", "a__b"),
            ("café_au_lait", "café_auLait"),
        ];
        for (input, want) in cases {
            assert_eq!(to_camel_case(input), want, "{input}");
        }
        assert!(matches!(to_camel_case("channelType"), Cow::Borrowed(_)));
    }
}
