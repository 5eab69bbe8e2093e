//! What a GraphQL request says that its response cannot: whether the answer's keys can be
//! trusted, which notification id each `notification` field asked for, and whether it
//! registers a webhook.
//!
//! A small hand-written scan of the query text, not a GraphQL parser: it tokenizes (skipping
//! comments, commas and strings), tracks brace/paren depth and the current operation, and
//! looks for aliases and the two fields the filter cares about.

use std::borrow::Cow;

use super::{is_guarded_alias, persisted, FREE_FORM_KEYS};
use crate::hashing::HashMap;
use crate::json::{self, Object, Value};

/// Facts from a GraphQL request that its response alone cannot tell. A client chooses the
/// answer's keys through aliases, so the keys mean what the extractor takes them for only
/// when the query was read and renames none of them: only then is the answer read, and only
/// then is what the query asks kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestFacts {
    /// No query text: a persisted query sent by its hash only, a request body not read whole
    /// (over 64 KiB, or refused for room), or a body that is not a GraphQL request.
    Unread,
    /// Read, and some alias renames another field to a key the filter reads
    /// (`deliveryStatus: channelType`), or renames a free-form JSON field (`payload: data`)
    /// so the walk would enter the client's own payload.
    Aliased,
    /// Read, and no alias renames a key the filter reads or exposes a free-form field.
    Plain(QueryFacts),
}

impl RequestFacts {
    /// What the query asks, when its answer can be trusted.
    #[inline]
    pub fn plain(&self) -> Option<&QueryFacts> {
        match self {
            RequestFacts::Plain(query) => Some(query),
            RequestFacts::Unread | RequestFacts::Aliased => None,
        }
    }
}

/// What a plain query asks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryFacts {
    /// Every `notification(…)` field of the executed operation (and of every fragment), by
    /// the key it answers under.
    pub notification_fields: Vec<NotificationField>,
    /// The key under `data` (its alias, or `webhook`) of the executed mutation's one
    /// `webhook(…)` field (createWebhookInput): its answer can teach us a registration.
    /// `None` when there is no such field, more than one, or it carries a directive
    /// (`@skip`, `@include`: it may not have run) or sits inside a fragment.
    pub webhook_key: Option<String>,
    /// The keys the executed operation's (or any fragment's) `archivedNotifications` fields
    /// answer under (their aliases, or the name), each once, at most `MAX_ARCHIVED_KEYS`
    /// and one more: archive rows lie only in the answers under them, and a row elsewhere
    /// (a live `notifications` poll beside it) is named by its own `id`. With more keys
    /// than the bound, every row of the answer is taken as an archive row: the walk
    /// compares each member of `data` with each key, and a query may name thousands.
    pub archived_keys: Vec<String>,
}

/// See `QueryFacts::archived_keys`.
pub const MAX_ARCHIVED_KEYS: usize = 16;

/// A `notification(notificationId: N)` field: OsmoX answers an archived notification with
/// the archive row's id, so N is the only tie to the real notification id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationField {
    /// Its key under `data`: its alias, or `notification`.
    pub key: String,
    /// N; `None` when it is not known (a variable absent from `variables`, a default in the
    /// query, or two fields under one key asking for different ids).
    pub id: Option<u64>,
}

/// Facts from a GraphQL request body `{query, variables, operationName}`; a body that is not
/// such an object gives `RequestFacts::Unread`.
pub fn graphql_request_facts(request_body: &[u8]) -> RequestFacts {
    graphql_request_facts_recalling(request_body, &|_| None)
}

/// `graphql_request_facts`, reading a query sent by its hash alone (a persisted query) from
/// the text `recall` gives for that hash.
pub fn graphql_request_facts_recalling(
    request_body: &[u8],
    recall: &dyn Fn(&str) -> Option<String>,
) -> RequestFacts {
    let arena = json::Arena::new();
    let Ok(Value::Object(request)) = json::parse(request_body, &arena) else {
        return RequestFacts::Unread;
    };
    let variables = request.get("variables").and_then(Value::as_object);
    let operation = request.get("operationName").and_then(Value::as_str);
    // Apollo's server reads a `query` that is not a string (`null`) as absent.
    let (query, recalled) = match request.get("query").and_then(Value::as_str) {
        Some(query) => (Some(query), false),
        None => {
            let hash = persisted::hash_of(&request);
            (hash.and_then(|hash| recall(&hash)).map(Cow::Owned), true)
        }
    };
    let Some(query) = query else {
        return RequestFacts::Unread;
    };
    let mut facts = scan(&query, variables, operation.as_deref());
    if recalled {
        // Learning reads a registration only from a text in the request itself: whether a
        // hash-only request is a candidate at all depends on bytes it need not contain.
        if let RequestFacts::Plain(plain) = &mut facts {
            plain.webhook_key = None;
        }
    }
    facts
}

/// Whether a GraphQL request body can hold a `webhook(…)` mutation: the query must spell the
/// field's name, or escape characters (a JSON string may spell it with `\u` escapes). A
/// necessary condition that costs a scan instead of a parse, so that with learning on an
/// ordinary poll is not parsed as a registration.
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
    let mut scan = Scan {
        toks: &toks,
        variables,
        operation,
        facts: QueryFacts::default(),
        aliased: false,
        webhooks: 0,
        keys: HashMap::default(),
        braces: 0,
        parens: 0,
        definition: None,
        expect_name: false,
    };
    for (i, tok) in toks.iter().enumerate() {
        scan.step(i, *tok);
    }
    scan.finish()
}

/// The scan's state as it walks the tokens once.
struct Scan<'t, 'a, 'v> {
    toks: &'t [Tok<'a>],
    variables: Option<&'v Object<'v>>,
    operation: Option<&'v str>,
    facts: QueryFacts,
    /// An alias makes the answer's keys untrustworthy: `finish` then drops `facts`.
    aliased: bool,
    /// `webhook(…)` fields of executed mutations and of fragments.
    webhooks: usize,
    /// Every key a field of any definition answers under, at any depth (inline fragments put
    /// fields of the root deeper, and a conservative reading costs only the id correction).
    /// A map, as a query within the 64 KiB read may hold hundreds of `notification` fields
    /// and thousands of others: a list cost the square of that.
    keys: HashMap<&'a str, Key>,
    braces: usize,
    parens: usize,
    definition: Option<Definition<'a>>,
    /// The previous token opened a definition, so a name now is that definition's name.
    expect_name: bool,
}

/// What the fields answering under one key are.
#[derive(Default)]
struct Key {
    /// A field other than `notification` answers under it.
    other: bool,
    /// The key's entry in `QueryFacts::notification_fields`.
    notification: Option<usize>,
}

impl<'a> Scan<'_, 'a, '_> {
    fn step(&mut self, i: usize, tok: Tok<'a>) {
        let naming = std::mem::take(&mut self.expect_name);
        match tok {
            Tok::Punct(b'(') => self.parens += 1,
            Tok::Punct(b')') => self.parens = self.parens.saturating_sub(1),
            // Every operation and fragment, executed or not: a conservative reading.
            Tok::Punct(b':') if self.parens == 0 && untrusted_alias(self.toks, i) => {
                self.aliased = true;
            }
            // Braces inside arguments are input objects, not selection sets.
            Tok::Punct(b'{') if self.parens == 0 => {
                if self.braces == 0 && self.definition.is_none() {
                    self.definition = Some(Definition {
                        kind: OpKind::Query,
                        name: None,
                    });
                }
                self.braces += 1;
            }
            Tok::Punct(b'}') if self.parens == 0 => {
                self.braces = self.braces.saturating_sub(1);
                if self.braces == 0 {
                    self.definition = None;
                }
            }
            Tok::Name(name) if self.braces == 0 && self.parens == 0 => {
                self.top_level_name(name, naming);
            }
            Tok::Name(name) if self.braces > 0 && self.parens == 0 => self.field(i, name),
            _ => {}
        }
    }

    /// A name outside any selection set: a definition's keyword, or the name after it.
    fn top_level_name(&mut self, name: &'a str, naming: bool) {
        if naming {
            if let Some(d) = self.definition.as_mut() {
                d.name = Some(name);
            }
            return;
        }
        let kind = match name {
            "query" => OpKind::Query,
            "mutation" => OpKind::Mutation,
            "subscription" => OpKind::Subscription,
            "fragment" => OpKind::Fragment,
            _ => return,
        };
        self.definition = Some(Definition { kind, name: None });
        self.expect_name = true;
    }

    /// A name inside a selection set (a field, an alias, a directive or a type name).
    fn field(&mut self, i: usize, name: &'a str) {
        let toks = self.toks;
        let executed = self.definition.filter(|d| d.executed(self.operation));
        if let Some(key) = answer_key(toks, i) {
            if name != "notification" {
                self.keys.entry(key).or_default().other = true;
            }
            // Only the operation that runs, or a fragment it may spread, answers archive rows.
            if name == "archivedNotifications" && executed.is_some() {
                let keys = &mut self.facts.archived_keys;
                if keys.len() <= MAX_ARCHIVED_KEYS && !keys.iter().any(|k| k == key) {
                    keys.push(key.to_string());
                }
            }
        }
        let has_args = toks.get(i + 1) == Some(&Tok::Punct(b'('));
        let directive = i
            .checked_sub(1)
            .and_then(|p| toks.get(p))
            .is_some_and(|t| *t == Tok::Punct(b'@'));
        let Some(d) = executed else {
            return;
        };
        if !has_args || directive {
            return;
        }
        let key = alias(toks, i).unwrap_or(name);
        match name {
            "notification" => {
                let id = argument(toks, i + 1, "notificationId")
                    .and_then(|v| resolve(v, self.variables));
                self.note_notification(key, id);
            }
            // A fragment's may run too (the mutation may spread it): it is one more.
            "webhook" if matches!(d.kind, OpKind::Mutation | OpKind::Fragment) => {
                self.webhooks += 1;
                // Only a field of the operation's own selection set, with no directive,
                // surely ran when the answer has its key.
                let directed = after_arguments(toks, i + 1)
                    .and_then(|j| toks.get(j))
                    .is_none_or(|t| *t == Tok::Punct(b'@'));
                if d.kind == OpKind::Mutation && self.braces == 1 && !directed {
                    self.facts.webhook_key = Some(key.to_string());
                }
            }
            _ => {}
        }
    }

    /// Remember a `notification` field; a second one under the same key with another (or an
    /// unknown) id leaves that key's id unknown.
    fn note_notification(&mut self, key: &'a str, id: Option<u64>) {
        let fields = &mut self.facts.notification_fields;
        let noted = &mut self.keys.entry(key).or_default().notification;
        match noted.and_then(|at| fields.get_mut(at)) {
            Some(field) if field.id != id => field.id = None,
            Some(_) => {}
            None => {
                *noted = Some(fields.len());
                let key = key.to_string();
                fields.push(NotificationField { key, id });
            }
        }
    }

    fn finish(self) -> RequestFacts {
        if self.aliased {
            return RequestFacts::Aliased;
        }
        let mut facts = self.facts;
        // Several registrations in one mutation: which one holds is not the filter's to guess.
        if self.webhooks > 1 {
            facts.webhook_key = None;
        }
        // A key another field also answers under (in a fragment, or an operation, that may be
        // the one that runs) does not surely hold the `notification` answer: its id is not
        // known.
        for field in &mut facts.notification_fields {
            if self.keys.get(field.key.as_str()).is_some_and(|k| k.other) {
                field.id = None;
            }
        }
        RequestFacts::Plain(facts)
    }
}

/// The key the field named at `at` answers under, when that name is a field's (not an alias,
/// a directive, a fragment spread or a type condition).
fn answer_key<'a>(toks: &[Tok<'a>], at: usize) -> Option<&'a str> {
    let Some(Tok::Name(name)) = toks.get(at) else {
        return None;
    };
    if toks.get(at + 1) == Some(&Tok::Punct(b':')) {
        return None; // an alias: its field follows
    }
    let before = |n: usize| at.checked_sub(n).and_then(|j| toks.get(j)).copied();
    match (before(2), before(1)) {
        (Some(Tok::Name(alias)), Some(Tok::Punct(b':'))) => Some(alias),
        // A directive, a fragment spread, a type condition.
        (_, Some(Tok::Punct(b'@' | b'.'))) | (Some(Tok::Punct(b'.')), Some(Tok::Name("on"))) => {
            None
        }
        _ => Some(name),
    }
}

/// The request headers that tell how OsmoX's server reads a GraphQL request's body.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    pub method: Option<&'a [u8]>,
    pub content_type: Option<&'a [u8]>,
    pub content_encoding: Option<&'a [u8]>,
}

impl RequestHead<'static> {
    /// A `POST` of JSON: the one head under which the server reads a body as the filter does.
    pub const JSON_POST: RequestHead<'static> = RequestHead {
        method: Some(b"POST"),
        content_type: Some(b"application/json"),
        content_encoding: None,
    };
}

/// Facts from a GraphQL request: `RequestFacts::Unread` unless OsmoX's server reads its body
/// as the filter does.
pub fn read_graphql_request(
    head: &RequestHead<'_>,
    body: &[u8],
    recall: &dyn Fn(&str) -> Option<String>,
) -> RequestFacts {
    if is_json_post(head) {
        graphql_request_facts_recalling(body, recall)
    } else {
        RequestFacts::Unread
    }
}

/// Whether a GraphQL request was sent as OsmoX's server reads it the way the filter does: a
/// `POST` of one JSON document in UTF-8, not encoded. The server also takes a form-encoded
/// body, a GET's query string, other charsets and compressed bodies, each of which can run
/// another query than the JSON reading of the bytes shows.
pub fn is_json_post(head: &RequestHead<'_>) -> bool {
    head.method == Some(b"POST".as_slice()) && is_json_body(head)
}

/// Whether a request's body is one JSON document in UTF-8, not encoded: read as its bytes
/// show, as the server reads it (which also takes form-encoded bodies, other charsets and
/// compressed ones).
pub fn is_json_body(head: &RequestHead<'_>) -> bool {
    let identity = head
        .content_encoding
        .is_none_or(|e| e.trim_ascii().eq_ignore_ascii_case(b"identity"));
    if !identity {
        return false;
    }
    let Some(content_type) = head.content_type else {
        return false;
    };
    let mut parts = content_type.split(|b| *b == b';');
    let essence = parts.next().unwrap_or_default().trim_ascii();
    let utf8 = parts.all(|param| {
        let (name, value) = match param.iter().position(|b| *b == b'=') {
            Some(eq) => (param.get(..eq), param.get(eq + 1..)),
            None => (Some(param), None),
        };
        let name = name.unwrap_or_default().trim_ascii();
        let value = value.unwrap_or_default().trim_ascii();
        let value = value
            .strip_prefix(b"\"")
            .and_then(|v| v.strip_suffix(b"\""))
            .unwrap_or(value);
        !name.eq_ignore_ascii_case(b"charset") || value.eq_ignore_ascii_case(b"utf-8")
    });
    essence.eq_ignore_ascii_case(b"application/json") && utf8
}

impl QueryFacts {
    /// The query selects `archivedNotifications`: a row there has the archive's own `id`, so
    /// only a `notificationId` names the notification.
    pub fn archived(&self) -> bool {
        !self.archived_keys.is_empty()
    }
}

/// Whether the `:` at `colon`, outside arguments, makes the answer's keys untrustworthy.
/// There it can only be an alias `alias: field`; one that renames (`alias` is not `field`)
/// is untrusted when `alias` is a key the filter reads or `field` holds free-form JSON. Any other
/// shape is no valid document: OsmoX answers it with errors, and it is not trusted either.
fn untrusted_alias(toks: &[Tok<'_>], colon: usize) -> bool {
    let before = colon.checked_sub(1).and_then(|i| toks.get(i));
    match (before, toks.get(colon + 1)) {
        (Some(Tok::Name(alias)), Some(Tok::Name(field))) => {
            alias != field && (is_guarded_alias(alias) || FREE_FORM_KEYS.contains(field))
        }
        _ => true,
    }
}

/// The index just past the argument list opening at `open`, or `open` itself when there is
/// none; `None` when the list is not closed.
fn after_arguments(toks: &[Tok<'_>], open: usize) -> Option<usize> {
    if toks.get(open) != Some(&Tok::Punct(b'(')) {
        return Some(open);
    }
    let mut depth = 0usize;
    for (j, tok) in toks.iter().enumerate().skip(open) {
        match *tok {
            Tok::Punct(b'(') => depth += 1,
            Tok::Punct(b')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return Some(j + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `alias:` before the field at `field`, if any. Inside a selection set (outside arguments)
/// `Name :` can only be an alias.
fn alias<'a>(toks: &[Tok<'a>], field: usize) -> Option<&'a str> {
    let colon = toks.get(field.checked_sub(1)?)?;
    let name = toks.get(field.checked_sub(2)?)?;
    match (name, colon) {
        (Tok::Name(a), Tok::Punct(b':')) => Some(*a),
        _ => None,
    }
}

enum ArgValue<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

/// The value of argument `name` in the list opening at `open` (a `(`), if it is a literal or a
/// variable. Names nested in input objects or lists are not arguments and are passed over.
/// The list ends where the scan's own count of parentheses closes it, whatever brackets
/// inside were left open: so each list is searched once, not to the end of the query.
fn argument<'a>(toks: &[Tok<'a>], open: usize, name: &str) -> Option<ArgValue<'a>> {
    let (mut depth, mut parens) = (0usize, 0usize);
    let mut i = open;
    while let Some(tok) = toks.get(i) {
        match *tok {
            Tok::Punct(b'(') => {
                depth += 1;
                parens += 1;
            }
            Tok::Punct(b'[' | b'{') => depth += 1,
            Tok::Punct(b')') => {
                depth = depth.saturating_sub(1);
                parens = parens.saturating_sub(1);
                if depth == 0 || parens == 0 {
                    return None;
                }
            }
            Tok::Punct(b']' | b'}') => {
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
        // GraphQL's number syntax is JSON's; OsmoX's server reads the id as a double.
        ArgValue::Literal(s) => {
            let arena = json::Arena::new();
            json::parse(s.trim().as_bytes(), &arena).ok()?.as_whole()
        }
        ArgValue::Variable(v) => match variables?.get(v)? {
            n @ Value::Number(_) => n.as_whole(),
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

    /// What a plain query asks; a test reading it expects the query to be plain.
    fn query(f: &RequestFacts) -> &QueryFacts {
        f.plain()
            .unwrap_or_else(|| panic!("not a plain query: {f:?}"))
    }

    /// The first `notification` field's requested id.
    fn first_id(f: &RequestFacts) -> Option<u64> {
        query(f).notification_fields.first().and_then(|n| n.id)
    }

    fn first_key(f: &RequestFacts) -> Option<&str> {
        query(f).notification_fields.first().map(|n| n.key.as_str())
    }

    /// What a read query that renames nothing and asks for nothing gives.
    fn plain() -> RequestFacts {
        RequestFacts::Plain(QueryFacts::default())
    }

    #[test]
    fn literal_notification_id_is_found() {
        let f = facts("{ notification(notificationId: 1042) { id deliveryStatus } }");
        assert_eq!(first_id(&f), Some(1042));
        assert_eq!(first_key(&f), Some("notification"));
        assert_eq!(query(&f).webhook_key, None);
        assert!(matches!(f, RequestFacts::Plain(_)));
    }

    #[test]
    fn quoted_notification_id_is_found() {
        let f = facts(r#"query { notification(notificationId: "1042") { id } }"#);
        assert_eq!(first_id(&f), Some(1042));
    }

    /// An argument is looked for in its own list only, which ends at its `)` whatever
    /// brackets inside failed to close: past it, the search read the arguments of later
    /// fields, and with one unclosed `[` per field every field's search ran to the end of
    /// the query (a 60 KB query of them took 90 times longer to scan than a well-formed one).
    #[test]
    fn an_argument_is_not_read_past_its_list_even_if_a_bracket_is_left_open() {
        let f = facts("query { notification(x: [) { id } other(y: 1] notificationId: 5) { id } }");
        assert_eq!(first_key(&f), Some("notification"));
        assert_eq!(first_id(&f), None);
        // Nor past its `)` when a later list closes a bracket it never opened.
        let f = facts("query { notification(x: 1) { id } other(] notificationId: 5) { id } }");
        assert_eq!(first_key(&f), Some("notification"));
        assert_eq!(first_id(&f), None);
        // And it ends where the scan's count closes it, not at a nested `(`'s `)`.
        let f = facts("query { notification(x: (1) notificationId: 5) { id } }");
        assert_eq!(first_id(&f), Some(5));
    }

    #[test]
    fn tokens_may_be_spread_over_lines() {
        let f = facts("query\n{\n  notification\n  (\n notificationId\n :\n 7\n )\n { id }\n}");
        assert_eq!(first_id(&f), Some(7));
        // A byte-order mark is ignored between any two tokens, as GraphQL's lexer ignores it.
        let f = facts("query { notification\u{feff}(notificationId: 7) { id } }");
        assert_eq!(first_id(&f), Some(7));
    }

    #[test]
    fn variable_notification_id_is_resolved() {
        let q = "query Get($id: Int!) { notification(notificationId: $id) { id } }";
        let number = facts_with(json!({"query": q, "variables": {"id": 1042}}));
        assert_eq!(first_id(&number), Some(1042));
        let string = facts_with(json!({"query": q, "variables": {"id": "1042"}}));
        assert_eq!(first_id(&string), Some(1042));
        let missing = facts_with(json!({"query": q, "variables": {}}));
        assert_eq!(first_id(&missing), None);
        let absent = facts_with(json!({"query": q}));
        assert_eq!(first_id(&absent), None);
    }

    /// OsmoX's `notificationId` is a `Float`: a client whose id is a double (Apollo Kotlin,
    /// Jackson, Python) writes `5.0`, or `1.0E7` from ten million, and the server reads
    /// notification 5; the filter took N for unknown and skipped the answer.
    #[test]
    fn an_id_names_the_notification_the_server_reads() {
        let q = "query Get($id: Float!) { notification(notificationId: $id) { id } }";
        for (id, want) in [
            ("5.0", Some(5)),
            ("1.0E7", Some(10_000_000)),
            ("1042e0", Some(1042)),
            ("5.5", None),
            ("5e-1", None),
            ("-5.0", None),
            // Past 2^53 the server's double is not the id written (`9007199254740993` is
            // 2^53 to it): a review found such ids taken as written, so an answer went under
            // the wrong id. They are not known.
            ("9007199254740991", Some((1 << 53) - 1)),
            ("9007199254740992", None),
            ("9007199254740993", None),
            ("18446744073709551615", None),
        ] {
            let body = format!(r#"{{"query":"{q}","variables":{{"id":{id}}}}}"#);
            assert_eq!(
                first_id(&graphql_request_facts(body.as_bytes())),
                want,
                "{id}"
            );
            let literal = format!("{{ notification(notificationId: {id}) {{ id }} }}");
            assert_eq!(first_id(&facts(&literal)), want, "{literal}");
        }
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
        assert_eq!(first_id(&f), Some(3));
        assert_eq!(first_key(&f), Some("x"));
    }

    #[test]
    fn block_strings_are_skipped() {
        let q = r#"{ notifications(options: {search: """ notification(notificationId: 5) \""" """}) { total } }"#;
        assert_eq!(facts(q), plain());
        // A review: what follows an escaped `"""` is still inside the string; and so is what
        // follows an escaped quote in an ordinary string.
        let q = r#"{ notifications(options: {search: """ \""" }) { total } notification(notificationId: 5) { id } """}) { total } }"#;
        assert_eq!(facts(q), plain());
        let q = r#"{ notifications(options: {search: "a \" }) { total } notification(notificationId: 5) { id } "}) { total } }"#;
        assert_eq!(facts(q), plain());
        // What follows a block string, or an ordinary one that held an escape, is read,
        // whatever quotes and backslashes it held.
        for q in [
            r#"{ notifications(options: {search: "a\"b"}) { total } notification(notificationId: 5) { id } }"#,
            r#"{ notifications(options: {search: """a "b" \c"""}) { total } notification(notificationId: 5) { id } }"#,
            r#"{ notifications(options: {search: """a \""" b"""}) { total } notification(notificationId: 5) { id } }"#,
        ] {
            assert_eq!(first_id(&facts(q)), Some(5), "{q}");
        }
        // A block string may span lines, which an ordinary one may not.
        let q = "{ notifications(options: {search: \"\"\"\n) { id } notification(notificationId: 5) { id } x(y: \n\"\"\"}) { total } }";
        assert_eq!(facts(q), plain());
    }

    #[test]
    fn similar_field_names_do_not_match() {
        for q in [
            "{ notifications(options: {limit: 1}) { notifications { id } } }",
            "{ archivedNotifications(options: {limit: 1}) { archivedNotifications { id notificationId } } }",
            "{ notification { id } }",
            "{ notificationX(notificationId: 5) { id } }",
        ] {
            // Not even as a `notification` field whose id is unknown.
            assert!(query(&facts(q)).notification_fields.is_empty(), "{q}");
        }
    }

    #[test]
    fn names_outside_selection_sets_are_not_fields() {
        // An operation named `notification` and a variable named `notificationId`.
        let q = "query notification($notificationId: Int = 5) { notifications { total } }";
        assert_eq!(facts(q), plain());
    }

    #[test]
    fn nested_input_fields_are_not_the_argument() {
        let q = "{ notification(filter: {notificationId: 5}, notificationId: 6) { id } }";
        assert_eq!(first_id(&facts(q)), Some(6));
    }

    #[test]
    fn every_notification_field_is_known_by_its_key() {
        let q = "{ a: notification(notificationId: 1) { id } b: notification(notificationId: 2) { id } }";
        let field = |key: &str, id| NotificationField {
            key: key.to_string(),
            id,
        };
        assert_eq!(
            query(&facts(q)).notification_fields,
            vec![field("a", Some(1)), field("b", Some(2))]
        );
        // One key asking for the same id twice (OsmoX merges the two) keeps it.
        let q = "{ n: notification(notificationId: 1) { id } n: notification(notificationId: 1) { deliveryStatus } }";
        assert_eq!(
            query(&facts(q)).notification_fields,
            vec![field("n", Some(1))]
        );
        // One key asking for two ids (OsmoX refuses that) or an unknown one: no id.
        let q = "{ n: notification(notificationId: 1) { id } n: notification(notificationId: 2) { id } }";
        assert_eq!(query(&facts(q)).notification_fields, vec![field("n", None)]);
        let q = "query Q($v: Int = 3) { notification(notificationId: $v) { id } }";
        assert_eq!(
            query(&facts(q)).notification_fields,
            vec![field("notification", None)]
        );
    }

    #[test]
    fn only_the_named_operation_counts() {
        let q = "query A { notification(notificationId: 1) { id } } \
                 query B { notification(notificationId: 2) { id } }";
        let f = facts_with(json!({"query": q, "operationName": "B"}));
        assert_eq!(first_id(&f), Some(2));
        // Without a name both are in view, asking two ids under one key (OsmoX runs neither).
        let f = facts_with(json!({"query": q, "operationName": null}));
        assert_eq!(first_id(&f), None);
        // A subscription is an operation too, not a nameless query that always runs.
        let q = "query A { notifications { total } } \
                 subscription B { notification(notificationId: 2) { id } }";
        let f = facts_with(json!({"query": q, "operationName": "A"}));
        assert!(query(&f).notification_fields.is_empty(), "B does not run");
    }

    /// Braces inside arguments are input objects, not selection sets: after an operation
    /// whose field takes `options: {…}`, the next operation is still told apart, by its name.
    #[test]
    fn input_objects_in_arguments_do_not_open_selection_sets() {
        let q =
            "query A { notifications(options: {limit: 1, filters: [{field: \"x\"}]}) { total } } \
                 query B { n: notification(notificationId: 5) { id deliveryStatus } }";
        let f = facts_with(json!({"query": q, "operationName": "B"}));
        assert_eq!(first_key(&f), Some("n"));
        assert_eq!(first_id(&f), Some(5));
        let f = facts_with(json!({"query": q, "operationName": "A"}));
        assert!(query(&f).notification_fields.is_empty(), "B does not run");
    }

    /// One document holding a live and an archive poll, the request naming the live one: no
    /// archive row can be in its answer, yet every live row (no `notificationId`) was skipped.
    /// A fragment may be spread by the operation that runs, so its fields still count.
    #[test]
    fn only_the_named_operation_or_a_fragment_makes_rows_archive_rows() {
        let q = "query Live { notifications { notifications { id deliveryStatus } } } \
                 query Old { archivedNotifications { archivedNotifications { notificationId deliveryStatus } } }";
        let archived = |operation: &str| {
            let f = facts_with(json!({"query": q, "operationName": operation}));
            query(&f).archived()
        };
        assert!(!archived("Live"));
        assert!(archived("Old"));
        let f = facts_with(json!({"query": q}));
        assert!(query(&f).archived(), "without a name, either may run");
        let q = "query Live { notifications { notifications { id } } ...F } \
                 fragment F on Query { archivedNotifications { archivedNotifications { id } } }";
        let f = facts_with(json!({"query": q, "operationName": "Live"}));
        assert!(query(&f).archived());
    }

    #[test]
    fn register_webhook_mutation_is_recognised() {
        let q = r#"mutation RegisterWebhook {
          webhook(createWebhookInput: { providerId: 1, webhookUrl: "https://hooks.partner.example.com/osmox/status" }) {
            id providerId webhookUrl isVerified status createdBy updatedBy createdOn updatedOn
          }
        }"#;
        let f = facts_with(json!({"query": q, "operationName": "RegisterWebhook"}));
        assert_eq!(query(&f).webhook_key.as_deref(), Some("webhook"));
        assert!(query(&f).notification_fields.is_empty());
    }

    #[test]
    fn only_a_body_that_spells_or_escapes_webhook_may_register() {
        let body = |q: &str| serde_json::to_vec(&json!({ "query": q })).unwrap();
        // Nowhere spelled out: the field and its input's keys all escape their `w`.
        let escaped = br#"{"query":"mutation { \u0077ebhook(createWebhookInput: {providerId: 1, \u0077ebhookUrl: \"https://h\"}) { id } }"}"#;
        assert!(!escaped.windows(7).any(|w| w == b"webhook"));
        assert_eq!(
            query(&graphql_request_facts(escaped))
                .webhook_key
                .as_deref(),
            Some("webhook")
        );
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
        for q in [
            "query { webhook(id: 1) { id } }",
            "mutation { other(webhook: 1) { id } }",
            "# mutation { webhook(x: 1) { id } }\n{ a }",
            "mutation { w: webhooks(x: 1) { id } }",
        ] {
            assert_eq!(query(&facts(q)).webhook_key, None, "{q}");
        }
        // Nor is it a second one beside a mutation's: only mutations' and fragments' count.
        let q = "query Q { webhook(id: 1) { id } } \
                 mutation M { webhook(createWebhookInput: {providerId: 1}) { id } }";
        assert_eq!(query(&facts(q)).webhook_key.as_deref(), Some("webhook"));
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
            assert_eq!(graphql_request_facts(body), RequestFacts::Unread);
        }
        // A `notification` field whose id is unreadable is known, without an id.
        for q in [
            "{ notification(notificationId: ",
            "{ notification(notificationId: -1) { id } }",
        ] {
            let f = facts(q);
            assert_eq!(first_key(&f), Some("notification"), "{q}");
            assert_eq!(first_id(&f), None, "{q}");
        }
    }

    /// A review: a client's alias chose the keys the filter reads (`deliveryStatus:
    /// channelType` forged a status), or exposed its own payload (`payload: data`) to the walk.
    #[test]
    fn aliases_onto_read_keys_or_free_form_fields_are_untrusted() {
        for q in [
            "query { notifications { notifications { id providerId deliveryStatus: channelType } } }",
            "query { notifications { notifications { id payload: data } } }",
            "query { notifications { notifications { id r: result deliveryStatus } } }",
            "query { notifications { notifications { id deliveryStatus updatedOn: createdBy } } }",
            "{ notifications { notifications { id: providerId deliveryStatus } } }",
            "{ notifications { notifications { id delivery_status: channelType } } }",
            "{ notifications { notifications { id deliveryStatus data: createdBy } } }",
            "{ notification: notifications { notifications { id deliveryStatus } } }",
            // Inline and named fragments, and operations that are not executed.
            "{ notifications { notifications { ... on Notification { retryCount: channelType } } } }",
            "{ notifications { notifications { ...F } } } fragment F on Notification { providerId: id }",
            "query A { notifications { total } } query B { notifications { notifications { notificationId: id } } }",
            "mutation { webhook(createWebhookInput: {providerId: 1, webhookUrl: \"x\"}) { providerId webhookUrl: createdBy } }",
            "mutation { w: webhook(createWebhookInput: {providerId: 1}) { status: isVerified } }",
            // Tokens spread over lines and comments, which the lexer drops.
            "{ notifications { notifications { id deliveryStatus # c\n :\n # d\n channelType } } }",
        ] {
            let f = facts_with(json!({"query": q, "operationName": "A"}));
            assert_eq!(f, RequestFacts::Aliased, "{q}");
        }
    }

    #[test]
    fn harmless_aliases_arguments_and_strings_are_trusted() {
        for q in [
            "{ a: notification(notificationId: 1) { id deliveryStatus } }",
            "{ notifications { notifications { id x: createdBy deliveryStatus } } }",
            "{ notifications { notifications { id id: id data: data deliveryStatus } } }",
            "{ list: notifications(options: {limit: 1, search: \"deliveryStatus: channelType\"}) { notifications { id deliveryStatus } } }",
            "query Q($deliveryStatus: Int = 5, $data: JSON) { notifications(filter: {deliveryStatus: $deliveryStatus}) { total } }",
            "{ notifications @include(if: true) { total } }",
            "# deliveryStatus: channelType\n{ notifications { total } }",
            "{ notifications(options: {search: \"\"\" deliveryStatus: channelType \"\"\"}) { total } }",
            "mutation { w: webhook(createWebhookInput: {providerId: 1, webhookUrl: \"x\"}) { id providerId webhookUrl } }",
        ] {
            assert!(matches!(facts(q), RequestFacts::Plain(_)), "{q}");
        }
    }

    #[test]
    fn every_read_key_is_guarded_against_aliases() {
        for key in [
            "id",
            "notificationId",
            "notification_id",
            "deliveryStatus",
            "delivery_status",
            "providerId",
            "provider_id",
            "channelType",
            "channel_type",
            "retryCount",
            "retry_count",
            "updatedOn",
            "updated_on",
            "data",
            "result",
            "notification",
            "notifications",
            "webhook",
            "webhookUrl",
            "webhook_url",
            "status",
        ] {
            let q = format!("{{ notifications {{ notifications {{ {key}: createdBy }} }} }}");
            assert_eq!(facts(&q), RequestFacts::Aliased, "{key}");
        }
    }

    #[test]
    fn a_stray_colon_in_a_selection_set_is_untrusted() {
        for q in ["{ a : { b } }", "{ : deliveryStatus }", "{ a: }"] {
            assert_eq!(facts(q), RequestFacts::Aliased, "{q}");
        }
    }

    /// A review: `webhook(…) @skip(if: true)` counted as a registration, and the answer of
    /// another (aliased) field was learned in its place.
    #[test]
    fn a_webhook_field_that_may_not_have_run_is_no_registration() {
        for q in [
            "mutation { webhook(createWebhookInput: {providerId: 1}) @skip(if: true) { id } r: createNotification(x: 1) { providerId } }",
            "mutation { webhook(createWebhookInput: {providerId: 1}) @include(if: $v) { id } }",
            "mutation { ... @skip(if: true) { webhook(createWebhookInput: {providerId: 1}) { id } } }",
            "mutation { ...F } fragment F on Mutation { webhook(createWebhookInput: {providerId: 1}) { id } }",
            // A registration in a fragment the mutation spreads runs too, after this one.
            "mutation { webhook(createWebhookInput: {providerId: 1}) { id } ...F } fragment F on Mutation { w: webhook(createWebhookInput: {providerId: 1}) { id } }",
            "mutation { a: webhook(createWebhookInput: {providerId: 1}) { id } b: webhook(createWebhookInput: {providerId: 2}) { id } }",
            "mutation { webhook(createWebhookInput: {providerId: 1}",
            // A stray `(` in the arguments (no valid document) still leaves the directive seen.
            "mutation { webhook(createWebhookInput: {providerId: (1)}) @skip(if: true) { id } }",
        ] {
            assert_eq!(query(&facts(q)).webhook_key, None, "{q}");
        }
        let q = "mutation { w: webhook(createWebhookInput: {providerId: 1, webhookUrl: \"x\"}) { id ...W } }";
        assert_eq!(query(&facts(q)).webhook_key.as_deref(), Some("w"));
    }

    #[test]
    fn no_query_text_means_the_document_is_unread() {
        let apq = br#"{"variables":{"n":5},"extensions":{"persistedQuery":{"version":1,"sha256Hash":"abc"}}}"#;
        assert_eq!(graphql_request_facts(apq), RequestFacts::Unread);
        assert_eq!(graphql_request_facts(b""), RequestFacts::Unread);
    }

    /// A query sent by its hash alone is read from the text kept for that hash, aliases
    /// and all; without a kept text nothing is known. A body with both reads its own text.
    #[test]
    fn a_persisted_query_is_read_from_the_text_kept_for_its_hash() {
        let hash_only = br#"{"variables":{"n":5},"extensions":{"persistedQuery":{"version":1,"sha256Hash":"h1"}}}"#;
        let texts = |hash: &str| match hash {
            "h1" => {
                Some("query Q($n: Int!) { notification(notificationId: $n) { id } }".to_string())
            }
            "h2" => Some("{ notifications { deliveryStatus: channelType } }".to_string()),
            _ => None,
        };
        let facts = graphql_request_facts_recalling(hash_only, &texts);
        assert_eq!(
            query(&facts).notification_fields,
            vec![NotificationField {
                key: "notification".into(),
                id: Some(5)
            }]
        );
        let aliased = br#"{"extensions":{"persistedQuery":{"sha256Hash":"h2"}}}"#;
        let facts = graphql_request_facts_recalling(aliased, &texts);
        assert_eq!(facts, RequestFacts::Aliased);
        let unknown = br#"{"extensions":{"persistedQuery":{"sha256Hash":"h3"}}}"#;
        let facts = graphql_request_facts_recalling(unknown, &texts);
        assert_eq!(facts, RequestFacts::Unread);
        let mutation = br#"{"extensions":{"persistedQuery":{"sha256Hash":"h4"}}}"#;
        let with_webhook = |hash: &str| {
            (hash == "h4").then(|| "mutation { webhook(createWebhookInput: {}) { id } }".into())
        };
        let facts = graphql_request_facts_recalling(mutation, &with_webhook);
        assert_eq!(query(&facts).webhook_key, None);
        let both = br#"{"query":"{ notifications { id } }","extensions":{"persistedQuery":{"sha256Hash":"h2"}}}"#;
        let facts = graphql_request_facts_recalling(both, &texts);
        assert!(matches!(facts, RequestFacts::Plain(_)));
    }

    /// Apollo's server reads a `query` that is not a string (`"query": null`, as a client
    /// that sends the hash alone may write it) as absent and runs the text kept for the
    /// hash; the filter skipped the answer as unread.
    #[test]
    fn a_null_query_beside_a_hash_is_read_from_the_text_kept_for_it() {
        let body = br#"{"query":null,"variables":{"n":5},"extensions":{"persistedQuery":{"version":1,"sha256Hash":"h1"}}}"#;
        let text = |hash: &str| {
            (hash == "h1")
                .then(|| "query Q($n: Int!) { notification(notificationId: $n) { id } }".into())
        };
        let facts = graphql_request_facts_recalling(body, &text);
        assert_eq!(first_id(&facts), Some(5));
        assert_eq!(graphql_request_facts(body), RequestFacts::Unread);
    }

    /// A second review: OsmoX's server also reads form-encoded bodies, a GET's query string,
    /// any `utf-*` charset and compressed bodies, and each can run another query than the
    /// JSON reading of the bytes shows.
    #[test]
    fn only_a_json_post_in_utf8_is_read_as_the_server_reads_it() {
        let is_json_post =
            |method: Option<&[u8]>, content_type: Option<&[u8]>, content_encoding| {
                let head = RequestHead {
                    method,
                    content_type,
                    content_encoding,
                };
                let body = br#"{"query": "{ notifications { total } }"}"#;
                let read = read_graphql_request(&head, body, &|_| None);
                assert_eq!(is_json_post(&head), matches!(read, RequestFacts::Plain(_)));
                is_json_post(&head)
            };
        let post = Some(b"POST".as_slice());
        for content_type in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(
                is_json_post(post, Some(content_type.as_bytes()), None),
                "{content_type}"
            );
            assert!(is_json_post(
                post,
                Some(content_type.as_bytes()),
                Some(b"identity")
            ));
        }
        for content_type in [
            "application/x-www-form-urlencoded",
            "application/json; charset=utf-7",
            "application/json; charset=utf-16",
            "application/graphql",
            "text/plain",
            "application/json, text/plain",
            "",
        ] {
            assert!(
                !is_json_post(post, Some(content_type.as_bytes()), None),
                "{content_type}"
            );
        }
        let json = Some(b"application/json".as_slice());
        assert!(!is_json_post(post, None, None));
        assert!(!is_json_post(post, json, Some(b"gzip")));
        assert!(!is_json_post(post, json, Some(b"br")));
        assert!(!is_json_post(Some(b"GET"), json, None));
        assert!(!is_json_post(Some(b"post"), json, None));
        assert!(!is_json_post(None, json, None));
    }

    /// A second review: a fragment (spread only by an operation that does not run) named `n`
    /// a `notification(notificationId: 5)`, and the client's own new notification, answered
    /// under `n` by the mutation that ran, went out as notification 5.
    #[test]
    fn a_key_another_field_may_answer_under_has_no_known_id() {
        let q = "query A { ...F } fragment F on Query { n: notification(notificationId: 5) { id } } \
                 mutation B { n: createNotification(createNotificationInput: {providerId: 7}) { id } }";
        let f = facts_with(json!({ "query": q, "operationName": "B" }));
        assert_eq!(first_key(&f), Some("n"));
        assert_eq!(first_id(&f), None);
        // Spreads, inline fragments and directives name no key, even one spelled as the key
        // (a review: with other names, a parser that took them for fields passed).
        let q = "query { n: notification(notificationId: 5) { ...on Notification { id } ...G @include(if: true) { id } } }";
        assert_eq!(first_id(&facts(q)), Some(5));
        let q = "query { n: notification(notificationId: 5) { ...on n { id } ...n @n(if: true) { id } } }";
        assert_eq!(first_id(&facts(q)), Some(5));
        // Nor does an argument's enum value, though `n: ACTIVE` reads like an alias.
        let q = "query { n: notification(notificationId: 5) { id } notifications(n: ACTIVE) { total } }";
        assert_eq!(first_id(&facts(q)), Some(5));
    }

    /// A review: each `notification` field was compared with every other one and with every
    /// field of the document, so reading a query cost the square of its size: one within the
    /// 64 KiB read (900 such fields and 11,000 others, each poll made new by a comment)
    /// took tens of ms of the worker's thread (measured natively; not asserted here, as
    /// timings do not belong in tests). Read by a map now: each of thousands of such fields
    /// still gets its own id.
    #[test]
    fn a_query_of_many_notification_fields_reads_each_one() {
        let mut q = String::from("query {");
        for i in 0..4000 {
            q.push_str(&format!(
                " n{i}: notification(notificationId: {i}) {{ id }}"
            ));
        }
        q.push_str(&" a".repeat(20_000));
        q.push('}');
        let body = serde_json::to_vec(&json!({ "query": q })).unwrap();
        let facts = graphql_request_facts(&body);
        assert!(matches!(facts, RequestFacts::Plain(_)));
        let fields = &query(&facts).notification_fields;
        assert_eq!(fields.len(), 4000);
        assert!(fields
            .iter()
            .enumerate()
            .all(|(i, f)| f.id == Some(i as u64)));
    }

    /// A second review: `provider_Id: channelType` is camel-cased into the body's `providerId`.
    #[test]
    fn an_alias_that_spells_a_guarded_key_another_way_is_untrusted() {
        for alias in [
            "provider_Id",
            "updated_On",
            "delivery_Status",
            "applicationId",
            "createdOn",
            "providerChainId",
            // Read by the filter though not sent: guarded in every spelling too.
            "notification_Id",
            "webhook_Url",
        ] {
            let q =
                format!("{{ notifications {{ notifications {{ id {alias}: channelType }} }} }}");
            assert_eq!(facts(&q), RequestFacts::Aliased, "{alias}");
        }
        let q = "{ notifications { notifications { id provider: channelType created_by_app: createdBy } } }";
        assert!(matches!(facts(q), RequestFacts::Plain(_)));
    }
}
