//! Learning webhook registrations from the OsmoX calls that make them, so the filter can
//! deliver to the URLs OsmoX itself would use without separate configuration.

use super::{strip_query, RequestFacts, WatchKind};
use crate::json::{self, Object, Value};

/// A change to OsmoX's webhook table seen in traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The provider's active webhook is now `webhook_url`.
    Upsert {
        provider_id: u64,
        /// The webhook row's own id, when the answer selected it: a later delete names it.
        webhook_id: Option<u64>,
        webhook_url: String,
    },
    /// The webhook row `webhook_id` was deleted or deactivated (`status: 0`).
    Delete { webhook_id: u64 },
    /// A webhook call OsmoX carried out whose answer or request does not say what changed:
    /// learned mappings may now be out of date, which an operator should hear of.
    Unread(Unread),
}

/// Why a registration could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unread {
    /// A GraphQL answer without `providerId` and `webhookUrl` (or, for a deactivation, `id`
    /// and `status`): the client did not select them.
    GraphqlFields,
    /// A `DELETE /webhooks` whose body is not JSON naming the webhook's `id`.
    DeleteId,
    /// A GraphQL answer with the webhook's row and `errors` beside it: another field of the
    /// mutation failed, and OsmoX masks its errors, so whether the write held is not said.
    GraphqlErrors,
}

/// For logs.
impl std::fmt::Display for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Registration::Upsert {
                provider_id,
                webhook_id,
                webhook_url,
            } => {
                write!(f, "provider {provider_id} webhook ")?;
                match webhook_id {
                    Some(id) => write!(f, "{id}")?,
                    None => f.write_str("(id unknown)")?,
                }
                // Its scheme and host only, as the configuration's URL parser reads them: a
                // receiver may check a token in the path or query (README), which does not
                // belong in Envoy's log, and a URL it refuses (credentials in it) is not shown.
                match crate::config::parse_url(webhook_url) {
                    Ok((scheme, authority, _)) => write!(f, " at {scheme}://{authority}/..."),
                    Err(_) => f.write_str(" at a URL the filter does not accept"),
                }
            }
            Registration::Delete { webhook_id } => write!(f, "webhook {webhook_id} deleted"),
            Registration::Unread(Unread::GraphqlFields) => f.write_str(
                "a GraphQL webhook registration was answered without what learning reads \
                 (`providerId` and `webhookUrl`; `id` and `status` for a deactivation); \
                 have the client select them",
            ),
            Registration::Unread(Unread::DeleteId) => f.write_str(
                "a webhook was removed by a DELETE /webhooks whose body is not JSON naming its id: \
                 its learned mapping, if any, stays until re-registered or Envoy restarts",
            ),
            Registration::Unread(Unread::GraphqlErrors) => f.write_str(
                "a GraphQL webhook registration was answered with its row and `errors` beside \
                 it: not learned, so the learned mapping may be out of date; register webhooks \
                 in a mutation of their own",
            ),
        }
    }
}

/// The registration a successful (2xx) webhook call made; the caller checks the HTTP status.
/// A REST `path` is any `…/webhooks[/<id>]`, watched or not (`is_webhook_route`): the
/// filter's routes are OsmoX's.
///
/// GraphQL: a query read whole that renames no key the filter reads, one directive-free
/// `webhook(…)` field in the mutation's selection set (`QueryFacts::webhook_key`), and an
/// error-free answer holding `providerId` and `webhookUrl` under that field's key. REST: `POST`,
/// `PUT` or `PATCH` to `…/webhooks` or `…/webhooks/<id>` answered by the row (v8 snake_case,
/// or a v7 JSend envelope), and `DELETE …/webhooks/<id>` with any body. A row with
/// `status: 0` and an `id` is a `Delete`; with `status` absent it counts as active.
/// `request` is the REST request's body when it is JSON the filter reads as the server does
/// (`is_json_body`): OsmoX removes a webhook by the id in it (`DELETE /webhooks {"id": 3}`).
pub fn extract_registration(
    kind: WatchKind,
    method: &str,
    path: &str,
    facts: &RequestFacts,
    request: Option<&[u8]>,
    body: &[u8],
) -> Option<Registration> {
    match kind {
        WatchKind::Graphql => graphql(facts, body),
        WatchKind::Rest => rest(method, path, request, body),
    }
}

fn graphql(facts: &RequestFacts, body: &[u8]) -> Option<Registration> {
    let key = facts.plain()?.webhook_key.as_deref()?;
    let arena = json::Arena::new();
    let root = json::parse(body, &arena).ok()?;
    // v8.5.0 masks every GraphQL error; `errors` alone says the write may not have happened.
    let failed = match root.get("errors") {
        None | Some(Value::Null) => false,
        Some(Value::Array(errors)) => !errors.is_empty(),
        Some(_) => true,
    };
    // Only the webhook field's own answer: any other field may hold what the client chose.
    let row = root.get("data")?.as_object()?.get(key)?.as_object()?;
    // A row beside `errors` (a partial failure) teaches nothing either, but is told: the
    // write may have held, and a mapping left out of date would go unseen (a review).
    if failed {
        return Some(Registration::Unread(Unread::GraphqlErrors));
    }
    Some(from_row(row).unwrap_or(Registration::Unread(Unread::GraphqlFields)))
}

#[derive(Debug, PartialEq, Eq)]
enum Target {
    Collection,
    Item(u64),
}

/// `…/webhooks` or `…/webhooks/<id>`, ignoring a trailing `/` and the query string, and the
/// case of `webhooks`: OsmoX's Express routes ignore it (a call the filter did not watch
/// could move or remove a webhook while its learned mapping stayed).
fn webhooks_target(path: &str) -> Option<Target> {
    let mut segments = strip_query(path).trim_end_matches('/').rsplit('/');
    let last = segments.next()?;
    if last.eq_ignore_ascii_case("webhooks") {
        return Some(Target::Collection);
    }
    let id = last.parse().ok()?;
    segments
        .next()?
        .eq_ignore_ascii_case("webhooks")
        .then_some(Target::Item(id))
}

/// A REST call that may change OsmoX's webhook table: worth watching when learning is on.
pub fn is_webhook_route(method: &str, path: &str) -> bool {
    let writes = ["POST", "PUT", "PATCH", "DELETE"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m));
    writes && webhooks_target(path).is_some()
}

fn rest(method: &str, path: &str, request: Option<&[u8]>, body: &[u8]) -> Option<Registration> {
    let target = webhooks_target(path)?;
    if method.eq_ignore_ascii_case("DELETE") {
        return match target {
            Target::Item(webhook_id) => Some(Registration::Delete { webhook_id }),
            Target::Collection => {
                let arena = json::Arena::new();
                let id = request
                    .and_then(|r| json::parse(r, &arena).ok())
                    .and_then(|r| stored_integer(r.as_object()?.get("id")?));
                Some(match id {
                    Some(webhook_id) => Registration::Delete { webhook_id },
                    None => Registration::Unread(Unread::DeleteId),
                })
            }
        };
    }
    if !["POST", "PUT", "PATCH"]
        .iter()
        .any(|m| method.eq_ignore_ascii_case(m))
    {
        return None;
    }
    let arena = json::Arena::new();
    let root = json::parse(body, &arena).ok()?;
    let obj = root.as_object()?;
    let row = match obj.get("status") {
        // v7 JSend: `{status: "success", data: {webhook: {…}}}` or `data` being the row.
        Some(Value::String(status)) => {
            if !status.is("success") {
                return None;
            }
            let data = obj.get("data")?.as_object()?;
            match data.get("webhook") {
                Some(v) => v.as_object()?,
                None => data,
            }
        }
        _ => obj,
    };
    from_row(row)
}

/// An integer a client sent, as OsmoX's database reads it: OsmoX passes a delete's `id`, and
/// saves a create's `providerId` and echoes it, unconverted. JavaScript has read `3.0` as the
/// number 3, and PostgreSQL reads a string as `pg_integer` does. A non-2xx answer already
/// rules out what it refuses.
fn stored_integer(id: &Value<'_>) -> Option<u64> {
    if let Some(id) = id.as_whole() {
        return Some(id);
    }
    pg_integer(&id.as_str()?)
}

/// A non-negative integer as PostgreSQL's integer input reads text (`pg_strtoint32`): blanks
/// (C's `isspace`, vertical tab included) around it, an optional `+`, then decimal digits or,
/// from version 16, `0x`, `0o` or `0b` and digits of that base, with single `_` between
/// digits. Accepting the later version's forms is safe: an older server refuses them, and
/// its non-2xx answer teaches nothing.
fn pg_integer(text: &str) -> Option<u64> {
    let blank = |c: char| matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r');
    let text = text.trim_matches(blank);
    let text = text.strip_prefix('+').unwrap_or(text);
    let prefixed = |lower: &str, upper: &str| {
        text.strip_prefix(lower)
            .or_else(|| text.strip_prefix(upper))
    };
    let (digits, radix) = if let Some(d) = prefixed("0x", "0X") {
        (d, 16)
    } else if let Some(d) = prefixed("0o", "0O") {
        (d, 8)
    } else if let Some(d) = prefixed("0b", "0B") {
        (d, 2)
    } else {
        (text, 10)
    };
    // After a base prefix one `_` may come first (`0x_1f`); a decimal number starts with a digit.
    let digits = match digits.strip_prefix('_') {
        Some(rest) if radix != 10 => rest,
        _ => digits,
    };
    let mut value: u64 = 0;
    // Every part between separators holds a digit: no `_` at either end, none doubled.
    for part in digits.split('_') {
        if part.is_empty() {
            return None;
        }
        for c in part.chars() {
            let digit = c.to_digit(radix)?;
            value = value
                .checked_mul(u64::from(radix))?
                .checked_add(u64::from(digit))?;
        }
    }
    Some(value)
}

/// A webhook row in either spelling.
fn from_row(row: &Object<'_>) -> Option<Registration> {
    let get = |camel: &str, snake: &str| row.get(camel).or_else(|| row.get(snake));
    let active = match get("status", "status") {
        None => true,
        Some(status) => status.as_u64()? != 0,
    };
    if !active {
        let webhook_id = row.get("id")?.as_u64()?;
        return Some(Registration::Delete { webhook_id });
    }
    let provider_id = stored_integer(get("providerId", "provider_id")?)?;
    let webhook_url = get("webhookUrl", "webhook_url")?.as_str()?;
    if webhook_url.is_empty() {
        return None;
    }
    Some(Registration::Upsert {
        provider_id,
        webhook_id: row.get("id").and_then(Value::as_u64),
        webhook_url: webhook_url.into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{graphql_request_facts, QueryFacts};
    use serde_json::json;

    const GQL_REGISTER: &str =
        include_str!("../../tests/fixtures/osmox/graphql-register-webhook-response.json");
    const GQL_REGISTER_REAL: &str =
        include_str!("../../tests/fixtures/osmox/graphql-register-webhook-response.real.json");
    const PROBLEM: &str =
        include_str!("../../tests/fixtures/osmox/rest-error-problem-json.v8.json");

    fn mutation() -> RequestFacts {
        with_webhook_key("webhook")
    }

    fn with_webhook_key(key: &str) -> RequestFacts {
        RequestFacts::Plain(QueryFacts {
            webhook_key: Some(key.to_string()),
            ..QueryFacts::default()
        })
    }

    fn gql(facts: &RequestFacts, body: &[u8]) -> Option<Registration> {
        extract_registration(WatchKind::Graphql, "POST", "/graphql", facts, None, body)
    }

    fn rest(method: &str, path: &str, body: &serde_json::Value) -> Option<Registration> {
        let body = serde_json::to_vec(body).unwrap();
        extract_registration(
            WatchKind::Rest,
            method,
            path,
            &RequestFacts::Unread,
            None,
            &body,
        )
    }

    /// A v8 webhook row, snake_case like `rest-create-notification-response.v8.json`.
    fn v8_row(status: u64) -> serde_json::Value {
        json!({
            "id": 3,
            "provider_id": 1,
            "webhook_url": "https://hooks.partner.example.com/osmox/status",
            "is_verified": 0,
            "status": status,
            "created_by": null,
            "updated_by": null,
            "created_on": "2026-04-19T14:02:55.140Z",
            "updated_on": "2026-04-19T14:02:55.140Z"
        })
    }

    fn partner_upsert() -> Option<Registration> {
        Some(Registration::Upsert {
            provider_id: 1,
            webhook_id: Some(3),
            webhook_url: "https://hooks.partner.example.com/osmox/status".to_string(),
        })
    }

    #[test]
    fn webhook_routes_are_writes_to_the_webhook_table() {
        assert!(is_webhook_route("POST", "/webhooks"));
        assert!(is_webhook_route("delete", "/api/v1/webhooks/3?x"));
        assert!(!is_webhook_route("GET", "/webhooks"));
        assert!(!is_webhook_route("POST", "/webhooks/logs"));
        assert!(!is_webhook_route("POST", "/notifications"));
        // An audit: updates were never checked here, and this is what decides whether the
        // host watches the call at all (OsmoX moves a webhook with `PUT /webhooks`).
        for method in ["PUT", "patch", "DELETE"] {
            assert!(is_webhook_route(method, "/api/webhooks"), "{method}");
            assert!(is_webhook_route(method, "/webhooks/3/"), "{method}");
        }
        assert!(!is_webhook_route("HEAD", "/webhooks/3"));
        // An id names a webhook only under `webhooks`: a `DELETE /notifications/3` taken
        // for one would end webhook 3's mapping.
        for path in [
            "/notifications/3",
            "/providers/3",
            "/3",
            "/webhooks/logs/cleanup",
            "/webhooks/3/logs",
        ] {
            assert!(!is_webhook_route("DELETE", path), "{path}");
            assert_eq!(rest("DELETE", path, &json!({})), None, "{path}");
        }
    }

    /// A review: a learned registration was logged (at info) with its whole URL, and the
    /// README has receivers of learned webhooks check a token in that URL, which then sat
    /// in Envoy's log. The log names the host, which is what the policy judged.
    #[test]
    fn a_registration_is_logged_without_its_urls_path_or_query() {
        let shown = |url: &str| {
            Registration::Upsert {
                provider_id: 1,
                webhook_id: Some(3),
                webhook_url: url.to_string(),
            }
            .to_string()
        };
        assert_eq!(
            shown("https://hooks.example.com/t/S3CRET?token=S4CRET"),
            "provider 1 webhook 3 at https://hooks.example.com/..."
        );
        assert_eq!(
            shown("http://hooks.example.com:8080?token=S4CRET"),
            "provider 1 webhook 3 at http://hooks.example.com:8080/..."
        );
        assert_eq!(
            shown("https://hooks.example.com"),
            "provider 1 webhook 3 at https://hooks.example.com/..."
        );
        // Credentials in the authority are no more for the log than a token in the path.
        let with_userinfo = shown("https://partner:S5CRET@hooks.example.com/t");
        assert!(!with_userinfo.contains("S5CRET"), "{with_userinfo}");
    }

    #[test]
    fn graphql_register_webhook_answer_is_an_upsert() {
        assert_eq!(gql(&mutation(), GQL_REGISTER.as_bytes()), partner_upsert());
        assert_eq!(
            gql(&mutation(), GQL_REGISTER_REAL.as_bytes()),
            Some(Registration::Upsert {
                provider_id: 1,
                webhook_id: Some(1),
                webhook_url: "http://127.0.0.1:8089/osmox/webhook".to_string(),
            })
        );
    }

    #[test]
    fn graphql_answer_without_a_webhook_mutation_teaches_nothing() {
        assert_eq!(gql(&RequestFacts::Unread, GQL_REGISTER.as_bytes()), None);
    }

    #[test]
    fn graphql_failed_registration_teaches_nothing() {
        let masked = br#"{"errors":[{"message":"Cannot read properties of undefined (reading 'protocol')"}],"data":null}"#;
        assert_eq!(gql(&mutation(), masked), None);
        let null_webhook = br#"{"errors":[{"message":"x"}],"data":{"webhook":null}}"#;
        assert_eq!(gql(&mutation(), null_webhook), None);
        let only_null = br#"{"data":{"webhook":null}}"#;
        assert_eq!(gql(&mutation(), only_null), None);
        assert_eq!(gql(&mutation(), b"not json"), None);
        // A review: errors beside a whole row (a partial failure) teach nothing either; a
        // later one: but they are told, as the write may have held.
        let errors_with_row = br#"{"errors":[{"message":"x"}],"data":{"webhook":{"id":3,"providerId":1,"webhookUrl":"https://hooks.partner.example.com/osmox/status","status":1}}}"#;
        assert_eq!(
            gql(&mutation(), errors_with_row),
            Some(Registration::Unread(Unread::GraphqlErrors))
        );
        let row = br#"{"data":{"webhook":{"id":3,"providerId":1,"webhookUrl":"https://hooks.partner.example.com/osmox/status","status":1}}}"#;
        assert_eq!(gql(&mutation(), row), partner_upsert());
    }

    #[test]
    fn graphql_aliased_registration_is_found() {
        let body = br#"{"data":{"w":{"id":3,"providerId":1,"webhookUrl":"https://hooks.partner.example.com/osmox/status","status":1}}}"#;
        let aliased = with_webhook_key("w");
        assert_eq!(gql(&aliased, body), partner_upsert());
        // Only under the webhook field's own key.
        assert_eq!(gql(&mutation(), body), None);
    }

    /// A review: `webhook(…) @skip(if: true)` counted as a registration, and the one object
    /// under `data` (another, aliased field chosen by the client) was learned.
    #[test]
    fn graphql_skipped_webhook_field_teaches_nothing() {
        let q = r#"mutation { webhook(createWebhookInput: {providerId: 1, webhookUrl: "x"}) @skip(if: true) { id }
                 r: createNotification(createNotificationInput: {providerId: 7, channelType: 1, data: {}}) { providerId webhookUrl: createdBy } }"#;
        let facts = graphql_request_facts(&serde_json::to_vec(&json!({ "query": q })).unwrap());
        let answer =
            br#"{"data":{"r":{"providerId":7,"webhookUrl":"https://hooks.example.com/attacker"}}}"#;
        assert_eq!(gql(&facts, answer), None);
        // Without the directive and the alias the same shape is a registration.
        let q = r#"mutation { w: webhook(createWebhookInput: {providerId: 7, webhookUrl: "x"}) { providerId webhookUrl } }"#;
        let facts = graphql_request_facts(&serde_json::to_vec(&json!({ "query": q })).unwrap());
        let answer =
            br#"{"data":{"w":{"providerId":7,"webhookUrl":"https://hooks.example.com/a"}}}"#;
        assert!(gql(&facts, answer).is_some());
    }

    #[test]
    fn graphql_aliases_inside_the_registration_teach_nothing() {
        let q = r#"mutation { webhook(createWebhookInput: {providerId: 1, webhookUrl: "x"}) { providerId webhookUrl: createdBy } }"#;
        let facts = graphql_request_facts(&serde_json::to_vec(&json!({ "query": q })).unwrap());
        let answer = br#"{"data":{"webhook":{"providerId":1,"webhookUrl":"https://hooks.example.com/attacker"}}}"#;
        assert_eq!(gql(&facts, answer), None);
    }

    #[test]
    fn graphql_row_missing_url_or_provider_teaches_nothing_and_says_so() {
        let unread = Some(Registration::Unread(Unread::GraphqlFields));
        let body = br#"{"data":{"webhook":{"id":3,"providerId":1,"status":1}}}"#;
        assert_eq!(gql(&mutation(), body), unread);
        let body =
            br#"{"data":{"webhook":{"id":3,"webhookUrl":"https://x.example.com","status":1}}}"#;
        assert_eq!(gql(&mutation(), body), unread);
        // An answer that failed, or that did not answer the field, changed nothing to say.
        let body = br#"{"data":{"webhook":null},"errors":[{"message":"no"}]}"#;
        assert_eq!(gql(&mutation(), body), None);
    }

    #[test]
    fn graphql_inactive_row_is_a_delete() {
        let body = br#"{"data":{"webhook":{"id":3,"providerId":1,"webhookUrl":"https://x.example.com","status":0}}}"#;
        assert_eq!(
            gql(&mutation(), body),
            Some(Registration::Delete { webhook_id: 3 })
        );
    }

    #[test]
    fn rest_create_and_update_are_upserts() {
        assert_eq!(rest("POST", "/webhooks", &v8_row(1)), partner_upsert());
        assert_eq!(rest("PUT", "/v1/webhooks/3", &v8_row(1)), partner_upsert());
        assert_eq!(
            rest("patch", "/webhooks/3/?x=1", &v8_row(1)),
            partner_upsert()
        );
    }

    /// OsmoX saves a REST create's input as it came (its `ValidationPipe` converts nothing)
    /// and answers with the saved object, in which only the columns the database fills in
    /// (`id`, `status`, dates) are read back: a `providerId` sent as `"1"` comes back as `"1"`,
    /// while PostgreSQL stored 1 and OsmoX's webhook fires for provider 1.
    #[test]
    fn rest_create_answered_with_the_provider_id_as_a_string_is_an_upsert() {
        let mut row = v8_row(1);
        row["provider_id"] = json!("1");
        assert_eq!(rest("POST", "/api/v1/webhooks", &row), partner_upsert());
        let mut camel = json!({"id": 3, "providerId": " 1", "status": 1,
            "webhookUrl": "https://hooks.partner.example.com/osmox/status"});
        assert_eq!(rest("POST", "/api/v1/webhooks", &camel), partner_upsert());
        camel["providerId"] = json!("1x");
        assert_eq!(rest("POST", "/api/v1/webhooks", &camel), None);
        row["provider_id"] = json!("");
        assert_eq!(rest("POST", "/api/v1/webhooks", &row), None);
    }

    #[test]
    fn rest_v7_jsend_create_is_an_upsert() {
        let body = json!({"status": "success", "data": {"webhook": {
            "id": 3, "providerId": 1,
            "webhookUrl": "https://hooks.partner.example.com/osmox/status", "status": 1}}});
        assert_eq!(rest("POST", "/webhooks", &body), partner_upsert());
        let fail = json!({"status": "fail", "data": "Invalid API key"});
        assert_eq!(rest("POST", "/webhooks", &fail), None);
        // A review: the status alone refuses it, whatever `data` holds.
        let mut not_success = body.clone();
        for status in ["fail", "error"] {
            not_success["status"] = json!(status);
            assert_eq!(rest("POST", "/webhooks", &not_success), None, "{status}");
        }
    }

    #[test]
    fn rest_deactivation_is_a_delete() {
        assert_eq!(
            rest("PUT", "/webhooks/3", &v8_row(0)),
            Some(Registration::Delete { webhook_id: 3 })
        );
    }

    #[test]
    fn rest_delete_takes_the_id_from_the_path() {
        let empty = extract_registration(
            WatchKind::Rest,
            "DELETE",
            "/webhooks/7",
            &mutation(),
            None,
            b"",
        );
        assert_eq!(empty, Some(Registration::Delete { webhook_id: 7 }));
        assert_eq!(
            rest("DELETE", "/webhooks", &json!({})),
            Some(Registration::Unread(Unread::DeleteId))
        );
        assert_eq!(rest("DELETE", "/webhooks/abc", &json!({})), None);
    }

    /// A final review: OsmoX v8 removes a webhook by `DELETE /webhooks` with its id in the
    /// request body, answering `true`; the mapping stayed and deliveries went on.
    #[test]
    fn rest_delete_of_the_collection_takes_the_id_from_the_request() {
        let delete = |request: Option<&[u8]>| {
            extract_registration(
                WatchKind::Rest,
                "DELETE",
                "/webhooks",
                &mutation(),
                request,
                b"true",
            )
        };
        assert_eq!(
            delete(Some(br#"{"id": 3}"#)),
            Some(Registration::Delete { webhook_id: 3 })
        );
        // Not read as JSON (the host passes none), or naming no id: nothing to remove by,
        // which the operator hears of (a mapping may be out of date).
        let unread = Some(Registration::Unread(Unread::DeleteId));
        assert_eq!(delete(None), unread);
        assert_eq!(delete(Some(br#"{"webhookId": 3}"#)), unread);
        assert_eq!(delete(Some(b"id=3")), unread);
    }

    /// What `DELETE /webhooks` with `request` as its body teaches, checked for each request.
    fn assert_collection_deletes(requests: &[&[u8]], want: Option<Registration>) {
        for request in requests {
            let got = extract_registration(
                WatchKind::Rest,
                "DELETE",
                "/api/v1/webhooks",
                &RequestFacts::Unread,
                Some(request),
                b"true",
            );
            assert_eq!(got, want, "{}", String::from_utf8_lossy(request));
        }
    }

    /// OsmoX hands the body's `id` to the database unconverted (no `transform` in its
    /// `ValidationPipe`), and PostgreSQL reads `"3"` (spaces around it, leading zeros) as row
    /// 3: such a delete removed the webhook while its mapping stayed and deliveries went on.
    #[test]
    fn rest_delete_of_the_collection_takes_an_id_sent_as_a_string() {
        let three = Some(Registration::Delete { webhook_id: 3 });
        assert_collection_deletes(
            &[br#"{"id": "3"}"#, br#"{"id": " 3 "}"#, br#"{"id": "003"}"#],
            three,
        );
        let refused: [&[u8]; 4] = [
            br#"{"id": ""}"#,
            br#"{"id": "3a"}"#,
            br#"{"id": "-3"}"#,
            br#"{"id": "3 4"}"#,
        ];
        assert_collection_deletes(&refused, Some(Registration::Unread(Unread::DeleteId)));
    }

    /// A review: PostgreSQL's integer input takes a `+` sign, any C-locale blank around the
    /// digits (a vertical tab too) and, from version 16, `0x`/`0o`/`0b` prefixes and `_`
    /// between digits: each such `DELETE` removed webhook 3 while its mapping stayed, and the
    /// filter went on delivering to the URL its owner had removed.
    #[test]
    fn rest_delete_of_the_collection_reads_the_id_as_postgresql_does() {
        let three = Some(Registration::Delete { webhook_id: 3 });
        assert_collection_deletes(
            &[
                br#"{"id": "+3"}"#,
                br#"{"id": " +3\u000b"}"#,
                br#"{"id": "\t\n\f\r3"}"#,
                br#"{"id": "0x3"}"#,
                br#"{"id": "0X_3"}"#,
                br#"{"id": "0o3"}"#,
                br#"{"id": "0b1_1"}"#,
            ],
            three,
        );
        let twelve = Some(Registration::Delete { webhook_id: 12 });
        assert_collection_deletes(&[br#"{"id": "1_2"}"#, br#"{"id": "0xc"}"#], twelve);
        // What PostgreSQL refuses, whose non-2xx answer never comes here anyway.
        let refused: [&[u8]; 11] = [
            br#"{"id": "+"}"#,
            br#"{"id": "++3"}"#,
            br#"{"id": "+ 3"}"#,
            br#"{"id": "_3"}"#,
            br#"{"id": "3_"}"#,
            br#"{"id": "1__2"}"#,
            br#"{"id": "0x"}"#,
            br#"{"id": "0o8"}"#,
            br#"{"id": "0b2"}"#,
            br#"{"id": "3\u0000"}"#,
            br#"{"id": "99999999999999999999999"}"#,
        ];
        assert_collection_deletes(&refused, Some(Registration::Unread(Unread::DeleteId)));
    }

    /// Express's body parser reads `3.0` (or `3e0`) as the number 3, which OsmoX hands to the
    /// database like any other: row 3 goes, so its mapping must too.
    #[test]
    fn rest_delete_of_the_collection_takes_a_whole_number_however_written() {
        let three = Some(Registration::Delete { webhook_id: 3 });
        assert_collection_deletes(
            &[br#"{"id": 3.0}"#, br#"{"id": 3e0}"#, br#"{"id": 0.3E+1}"#],
            three,
        );
        // No row has these ids: PostgreSQL refuses them, and the 2xx that learning needs never comes.
        assert_collection_deletes(
            &[br#"{"id": 3.5}"#, br#"{"id": -3.0}"#, br#"{"id": 1e300}"#],
            Some(Registration::Unread(Unread::DeleteId)),
        );
    }

    /// A review: OsmoX runs on Express, whose routing ignores case, so `PUT /api/v1/Webhooks`
    /// moves a webhook (and `DELETE /API/V1/WEBHOOKS` removes one) as the lowercase path
    /// does; the filter did not watch such calls, and kept delivering to the URL the
    /// provider had left. A path OsmoX does not route is answered 404 and teaches nothing.
    #[test]
    fn webhook_routes_are_matched_as_express_matches_them_ignoring_case() {
        for path in ["/api/v1/Webhooks", "/API/V1/WEBHOOKS/", "/webHooks/3"] {
            for method in ["POST", "PUT", "PATCH", "DELETE"] {
                assert!(is_webhook_route(method, path), "{method} {path}");
            }
        }
        assert_eq!(
            rest("PUT", "/api/v1/Webhooks", &v8_row(1)),
            partner_upsert()
        );
        assert_eq!(
            rest("DELETE", "/WEBHOOKS/7", &json!({})),
            Some(Registration::Delete { webhook_id: 7 })
        );
        assert_collection_deletes_at("/api/v1/WEBHOOKS");
    }

    fn assert_collection_deletes_at(path: &str) {
        let got = extract_registration(
            WatchKind::Rest,
            "DELETE",
            path,
            &RequestFacts::Unread,
            Some(br#"{"id": 3}"#),
            b"true",
        );
        assert_eq!(got, Some(Registration::Delete { webhook_id: 3 }), "{path}");
    }

    #[test]
    fn rest_other_routes_and_methods_teach_nothing() {
        assert_eq!(rest("GET", "/webhooks", &v8_row(1)), None);
        assert_eq!(rest("POST", "/notifications", &v8_row(1)), None);
        assert_eq!(rest("GET", "/webhooks/logs", &v8_row(1)), None);
        assert_eq!(rest("POST", "/webhooks/logs", &v8_row(1)), None);
        assert_eq!(rest("POST", "/mywebhooks", &v8_row(1)), None);
        let problem: serde_json::Value = serde_json::from_str(PROBLEM).unwrap();
        assert_eq!(rest("POST", "/webhooks", &problem), None);
    }
}
