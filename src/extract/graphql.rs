//! What a GraphQL request says that its response cannot: which notification id was asked for,
//! and whether it registers a webhook.
//!
//! A small hand-written scan of the query text, not a GraphQL parser: it tokenizes (skipping
//! comments, commas and strings), tracks brace/paren depth and the current operation, and
//! looks for the two fields the filter cares about.

use crate::json::{self, Object, Value};

/// Facts from the request that the response alone cannot tell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// N in `notification(notificationId: N)`: OsmoX answers an archived notification with
    /// the archive row's id, so N is the only tie to the real notification id. The first such
    /// field in the executed operation wins.
    pub notification_id_arg: Option<u64>,
    /// The alias of that field (`n: notification(…)`), i.e. its key under `data`; `None`
    /// means the key is `notification`.
    pub notification_alias: Option<String>,
    /// The executed operation is a mutation calling `webhook(…)` (createWebhookInput): its
    /// answer can teach us a registration.
    pub webhook_mutation: bool,
}

/// Facts from a GraphQL request body `{query, variables, operationName}`; a body that is not
/// such an object gives the default (nothing known).
pub fn graphql_request_facts(request_body: &[u8]) -> RequestFacts {
    let Ok(Value::Object(request)) = json::parse(request_body) else {
        return RequestFacts::default();
    };
    let Some(query) = request.get("query").and_then(Value::as_str) else {
        return RequestFacts::default();
    };
    let variables = request.get("variables").and_then(Value::as_object);
    let operation = request.get("operationName").and_then(Value::as_str);
    scan(&query, variables, operation.as_deref())
}

/// Whether a GraphQL request body can hold a `webhook(…)` mutation: the query must spell the
/// field's name, or escape characters (a JSON string may spell it with `\u` escapes). A
/// necessary condition that costs a scan instead of a parse, so that with learning on an
/// ordinary poll needs neither the parse nor its response's headers.
pub fn may_register(request_body: &[u8]) -> bool {
    let at = |i: usize, needle: &[u8]| request_body.get(i..i + needle.len()) == Some(needle);
    // One pass, testing only where a needle could start.
    (0..request_body.len()).any(|i| match request_body.get(i) {
        Some(b'w') => at(i, b"webhook"),
        Some(b'\\') => at(i, b"\\u"),
        _ => false,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok<'a> {
    Name(&'a str),
    /// An int or float literal, as written.
    Number(&'a str),
    /// A string's raw content, escapes not decoded (ids never need them).
    Str(&'a str),
    Punct(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Query,
    Mutation,
    Subscription,
    Fragment,
}

#[derive(Debug, Clone, Copy)]
struct Definition<'a> {
    kind: OpKind,
    name: Option<&'a str>,
}

impl Definition<'_> {
    /// Whether fields inside this definition run, given the request's `operationName`.
    fn executed(&self, operation: Option<&str>) -> bool {
        match (self.kind, operation, self.name) {
            (OpKind::Fragment, _, _) | (_, None, _) | (_, _, None) => true,
            (_, Some(want), Some(name)) => want == name,
        }
    }
}

fn scan(query: &str, variables: Option<&Object<'_>>, operation: Option<&str>) -> RequestFacts {
    let toks = tokens(query);
    let mut facts = RequestFacts::default();
    let mut seen_notification = false;
    let mut braces = 0usize;
    let mut parens = 0usize;
    let mut definition: Option<Definition<'_>> = None;
    let mut expect_name = false;
    for (i, tok) in toks.iter().enumerate() {
        let naming = std::mem::take(&mut expect_name);
        match *tok {
            Tok::Punct(b'(') => parens += 1,
            Tok::Punct(b')') => parens = parens.saturating_sub(1),
            // Braces inside arguments are input objects, not selection sets.
            Tok::Punct(b'{') if parens == 0 => {
                if braces == 0 && definition.is_none() {
                    definition = Some(Definition {
                        kind: OpKind::Query,
                        name: None,
                    });
                }
                braces += 1;
            }
            Tok::Punct(b'}') if parens == 0 => {
                braces = braces.saturating_sub(1);
                if braces == 0 {
                    definition = None;
                }
            }
            Tok::Name(name) if braces == 0 && parens == 0 => {
                if naming {
                    if let Some(d) = definition.as_mut() {
                        d.name = Some(name);
                    }
                    continue;
                }
                let kind = match name {
                    "query" => OpKind::Query,
                    "mutation" => OpKind::Mutation,
                    "subscription" => OpKind::Subscription,
                    "fragment" => OpKind::Fragment,
                    _ => continue,
                };
                definition = Some(Definition { kind, name: None });
                expect_name = true;
            }
            Tok::Name(name) if braces > 0 && parens == 0 => {
                let has_args = toks.get(i + 1) == Some(&Tok::Punct(b'('));
                let directive = i
                    .checked_sub(1)
                    .and_then(|p| toks.get(p))
                    .is_some_and(|t| *t == Tok::Punct(b'@'));
                let Some(d) = definition.filter(|d| d.executed(operation)) else {
                    continue;
                };
                if !has_args || directive {
                    continue;
                }
                match name {
                    "notification" if !seen_notification => {
                        seen_notification = true;
                        facts.notification_id_arg = argument(&toks, i + 1, "notificationId")
                            .and_then(|v| resolve(v, variables));
                        facts.notification_alias = alias(&toks, i);
                    }
                    "webhook" if d.kind == OpKind::Mutation => facts.webhook_mutation = true,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    facts
}

/// `alias:` before the field at `field`, if any. Inside a selection set (outside arguments)
/// `Name :` can only be an alias.
fn alias(toks: &[Tok<'_>], field: usize) -> Option<String> {
    let colon = toks.get(field.checked_sub(1)?)?;
    let name = toks.get(field.checked_sub(2)?)?;
    match (name, colon) {
        (Tok::Name(a), Tok::Punct(b':')) => Some((*a).to_string()),
        _ => None,
    }
}

enum ArgValue<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

/// The value of argument `name` in the list opening at `open` (a `(`), if it is a literal or a
/// variable. Names nested in input objects or lists are not arguments and are passed over.
fn argument<'a>(toks: &[Tok<'a>], open: usize, name: &str) -> Option<ArgValue<'a>> {
    let mut depth = 0usize;
    let mut i = open;
    while let Some(tok) = toks.get(i) {
        match *tok {
            Tok::Punct(b'(' | b'[' | b'{') => depth += 1,
            Tok::Punct(b')' | b']' | b'}') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return None;
                }
            }
            Tok::Name(n)
                if depth == 1 && n == name && toks.get(i + 1) == Some(&Tok::Punct(b':')) =>
            {
                return match (toks.get(i + 2), toks.get(i + 3)) {
                    (Some(Tok::Number(s) | Tok::Str(s)), _) => Some(ArgValue::Literal(s)),
                    (Some(Tok::Punct(b'$')), Some(Tok::Name(v))) => Some(ArgValue::Variable(v)),
                    _ => None,
                };
            }
            _ => {}
        }
        i += 1;
    }
    None
}

fn resolve(value: ArgValue<'_>, variables: Option<&Object<'_>>) -> Option<u64> {
    match value {
        ArgValue::Literal(s) => s.trim().parse().ok(),
        ArgValue::Variable(v) => match variables?.get(v)? {
            n @ Value::Number(_) => n.as_u64(),
            Value::String(s) => s.text().trim().parse().ok(),
            _ => None,
        },
    }
}

/// GraphQL's lexical tokens, enough for `scan`. Whitespace, commas and `#` comments are
/// dropped; bytes outside ASCII (only legal in strings and comments) are skipped.
fn tokens(src: &str) -> Vec<Tok<'_>> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0usize;
    while let Some(&c) = b.get(i) {
        match c {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => i += 1,
            b'#' => {
                while b.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    i += 1;
                }
            }
            b'"' if b.get(i..i + 3) == Some(b"\"\"\"") => {
                let start = i + 3;
                let mut j = start;
                loop {
                    match b.get(j) {
                        None => break,
                        Some(b'\\') if b.get(j + 1..j + 4) == Some(b"\"\"\"") => j += 4,
                        Some(b'"') if b.get(j..j + 3) == Some(b"\"\"\"") => break,
                        Some(_) => j += 1,
                    }
                }
                if let Some(s) = src.get(start..j) {
                    out.push(Tok::Str(s));
                }
                i = j + 3;
            }
            b'"' => {
                let start = i + 1;
                let mut j = start;
                loop {
                    match b.get(j) {
                        None | Some(b'\n' | b'\r') => break,
                        Some(b'\\') => j += 2,
                        Some(b'"') => break,
                        Some(_) => j += 1,
                    }
                }
                if let Some(s) = src.get(start..j) {
                    out.push(Tok::Str(s));
                }
                i = j + 1;
            }
            c if c == b'_' || c.is_ascii_alphabetic() => {
                let start = i;
                while b
                    .get(i)
                    .is_some_and(|&c| c == b'_' || c.is_ascii_alphanumeric())
                {
                    i += 1;
                }
                if let Some(s) = src.get(start..i) {
                    out.push(Tok::Name(s));
                }
            }
            c if c == b'-' || c.is_ascii_digit() => {
                let start = i;
                i += 1;
                while b
                    .get(i)
                    .is_some_and(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'+' | b'-'))
                {
                    i += 1;
                }
                if let Some(s) = src.get(start..i) {
                    out.push(Tok::Number(s));
                }
            }
            c if c.is_ascii() => {
                out.push(Tok::Punct(c));
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn facts(query: &str) -> RequestFacts {
        facts_with(json!({ "query": query }))
    }

    fn facts_with(request: serde_json::Value) -> RequestFacts {
        graphql_request_facts(&serde_json::to_vec(&request).unwrap())
    }

    #[test]
    fn literal_notification_id_is_found() {
        let f = facts("{ notification(notificationId: 1042) { id deliveryStatus } }");
        assert_eq!(f.notification_id_arg, Some(1042));
        assert_eq!(f.notification_alias, None);
        assert!(!f.webhook_mutation);
    }

    #[test]
    fn quoted_notification_id_is_found() {
        let f = facts(r#"query { notification(notificationId: "1042") { id } }"#);
        assert_eq!(f.notification_id_arg, Some(1042));
    }

    #[test]
    fn tokens_may_be_spread_over_lines() {
        let f = facts("query\n{\n  notification\n  (\n notificationId\n :\n 7\n )\n { id }\n}");
        assert_eq!(f.notification_id_arg, Some(7));
    }

    #[test]
    fn variable_notification_id_is_resolved() {
        let q = "query Get($id: Int!) { notification(notificationId: $id) { id } }";
        let number = facts_with(json!({"query": q, "variables": {"id": 1042}}));
        assert_eq!(number.notification_id_arg, Some(1042));
        let string = facts_with(json!({"query": q, "variables": {"id": "1042"}}));
        assert_eq!(string.notification_id_arg, Some(1042));
        let missing = facts_with(json!({"query": q, "variables": {}}));
        assert_eq!(missing.notification_id_arg, None);
        let absent = facts_with(json!({"query": q}));
        assert_eq!(absent.notification_id_arg, None);
    }

    #[test]
    fn comments_and_strings_are_not_read_as_fields() {
        let q = r#"
            # notification(notificationId: 1)
            query {
              notifications(options: { search: "notification(notificationId: 2)" }) { total }
              x: notification(notificationId: 3) # notification(notificationId: 4)
              { id }
            }"#;
        let f = facts(q);
        assert_eq!(f.notification_id_arg, Some(3));
        assert_eq!(f.notification_alias.as_deref(), Some("x"));
    }

    #[test]
    fn block_strings_are_skipped() {
        let q = r#"{ notifications(options: {search: """ notification(notificationId: 5) \""" """}) { total } }"#;
        assert_eq!(facts(q), RequestFacts::default());
    }

    #[test]
    fn similar_field_names_do_not_match() {
        for q in [
            "{ notifications(options: {limit: 1}) { notifications { id } } }",
            "{ archivedNotifications(options: {limit: 1}) { archivedNotifications { id notificationId } } }",
            "{ notification { id } }",
            "{ notificationX(notificationId: 5) { id } }",
        ] {
            assert_eq!(facts(q).notification_id_arg, None, "{q}");
        }
    }

    #[test]
    fn names_outside_selection_sets_are_not_fields() {
        // An operation named `notification` and a variable named `notificationId`.
        let q = "query notification($notificationId: Int = 5) { notifications { total } }";
        assert_eq!(facts(q), RequestFacts::default());
    }

    #[test]
    fn nested_input_fields_are_not_the_argument() {
        let q = "{ notification(filter: {notificationId: 5}, notificationId: 6) { id } }";
        assert_eq!(facts(q).notification_id_arg, Some(6));
    }

    #[test]
    fn first_notification_field_wins() {
        let q = "{ a: notification(notificationId: 1) { id } b: notification(notificationId: 2) { id } }";
        let f = facts(q);
        assert_eq!(f.notification_id_arg, Some(1));
        assert_eq!(f.notification_alias.as_deref(), Some("a"));
    }

    #[test]
    fn only_the_named_operation_counts() {
        let q = "query A { notification(notificationId: 1) { id } } \
                 query B { notification(notificationId: 2) { id } }";
        let f = facts_with(json!({"query": q, "operationName": "B"}));
        assert_eq!(f.notification_id_arg, Some(2));
        let f = facts_with(json!({"query": q, "operationName": null}));
        assert_eq!(f.notification_id_arg, Some(1));
    }

    #[test]
    fn register_webhook_mutation_is_recognised() {
        let q = r#"mutation RegisterWebhook {
          webhook(createWebhookInput: { providerId: 1, webhookUrl: "https://hooks.partner.example.com/osmox/status" }) {
            id providerId webhookUrl isVerified status createdBy updatedBy createdOn updatedOn
          }
        }"#;
        let f = facts_with(json!({"query": q, "operationName": "RegisterWebhook"}));
        assert!(f.webhook_mutation);
        assert_eq!(f.notification_id_arg, None);
    }

    #[test]
    fn only_a_body_that_spells_or_escapes_webhook_may_register() {
        let body = |q: &str| serde_json::to_vec(&json!({ "query": q })).unwrap();
        let escaped = br#"{"query":"mutation { \u0077ebhook(createWebhookInput: {providerId: 1, webhookUrl: \"https://h\"}) { id } }"}"#;
        assert!(graphql_request_facts(escaped).webhook_mutation);
        assert!(may_register(escaped));
        for q in [
            "mutation { webhook(createWebhookInput: {providerId: 1}) { id } }",
            "query { webhooks { id } }",
        ] {
            assert!(may_register(&body(q)), "{q}");
        }
        let poll = body("query { notifications(options: {limit: 10}) { notifications { id } } }");
        assert!(!may_register(&poll));
        assert!(!may_register(b""));
    }

    #[test]
    fn webhook_outside_a_mutation_is_not_a_registration() {
        assert!(!facts("query { webhook(id: 1) { id } }").webhook_mutation);
        assert!(!facts("mutation { other(webhook: 1) { id } }").webhook_mutation);
        assert!(!facts("# mutation { webhook(x: 1) { id } }\n{ a }").webhook_mutation);
        assert!(!facts("mutation { w: webhooks(x: 1) { id } }").webhook_mutation);
    }

    #[test]
    fn malformed_requests_give_nothing() {
        for body in [
            &b"not json"[..],
            b"[]",
            b"{\"query\": 5}",
            b"{\"variables\": {}}",
            b"[{\"query\": \"{ notification(notificationId: 1) { id } }\"}]",
        ] {
            assert_eq!(graphql_request_facts(body), RequestFacts::default());
        }
        assert_eq!(
            facts("{ notification(notificationId: "),
            RequestFacts::default()
        );
        assert_eq!(
            facts("{ notification(notificationId: -1) { id } }"),
            RequestFacts::default()
        );
    }
}
