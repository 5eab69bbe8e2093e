//! Finding notifications in OsmoX responses.
//!
//! OsmoX offers no event stream, so the filter reads notifications out of the responses its
//! clients already fetch: GraphQL (`data…`, camelCase) and REST (v8 bare rows and `{items}`
//! pages in snake_case, v7 JSend envelopes in camelCase). Each one found becomes a
//! [`Notification`] whose body is what OsmoX's own webhook would have sent.

mod graphql;
mod known_requests;
mod learn;
pub mod persisted;
mod response_check;

use crate::hashing::HashSet;
use std::borrow::Cow;
use std::fmt;

use crate::events::KnownEvents;
use crate::json::{self, Object, Value};
use crate::metrics::Metric;
use crate::osmox::{DeliveryStatus, Notification, ResultView, WebhookBody};

pub use graphql::{
    graphql_request_facts, is_json_body, is_json_post, may_register, read_graphql_request,
    NotificationField, QueryFacts, RequestFacts, RequestHead,
};
pub use known_requests::KnownRequests;
pub use learn::{extract_registration, is_webhook_route, Registration, Unread};
pub use response_check::{answered_2xx, sniff, sniff_whole, verdict, Ending, FirstBytes, Verdict};

/// How many levels below the walk's root (GraphQL `data`, the REST body) are searched.
/// OsmoX nests rows two levels deep at most; the bound keeps hostile bodies cheap.
pub const MAX_DEPTH: usize = 16;

/// Members of one array or object that are looked at; notifications among the rest are only
/// counted as skipped. OsmoX pages are far smaller, so this only bounds the work a hostile or
/// runaway body can cause.
pub const MAX_MEMBERS: usize = 10_000;

/// What kind of OsmoX call a request is, decided from method + path (path without query string).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    Graphql,
    Rest,
}

/// GraphQL: `POST` to exactly one of `graphql_paths`. REST: any method on a path equal to a
/// prefix or below it (`prefix/…`), so list, by-id and create calls are all seen. The prefix
/// `/` matches every path.
///
/// `method` `None`: not read. Reading it costs a hostcall on every poll, and a GraphQL call
/// is told apart by its body instead: any request to a GraphQL path is then `Graphql`, and
/// the host watches it only if the request carries a body (a `GET` does not: Apollo answers
/// `GET` queries too, but those are not watched, as the README says).
pub fn classify(
    method: Option<&str>,
    path: &str,
    graphql_paths: &[String],
    rest_path_prefixes: &[String],
) -> Option<WatchKind> {
    let path = strip_query(path);
    let post = method.is_none_or(|m| m.eq_ignore_ascii_case("POST"));
    if post && graphql_paths.iter().any(|p| p == path) {
        return Some(WatchKind::Graphql);
    }
    // `/` trims to the empty prefix, which every path is under.
    let under = |prefix: &String| {
        let prefix = prefix.trim_end_matches('/');
        path.strip_prefix(prefix)
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
    /// Not valid JSON (or nested deeper than the parser allows, as serde_json: 127 levels).
    NotJson,
    /// Valid JSON whose top level is not an object; OsmoX never answers like that.
    NotObject,
    /// GraphQL: the query renames a key the filter reads (`RequestFacts::Aliased`).
    Aliased,
    /// GraphQL: the query text was not read (`RequestFacts::Unread`), so neither its aliases nor
    /// a `notification` field's requested id are known.
    QueryUnread,
}

impl ExtractError {
    /// The metric a body skipped for this reason counts in.
    pub fn metric(self) -> Metric {
        match self {
            ExtractError::NotJson | ExtractError::NotObject => Metric::SkippedMalformed,
            ExtractError::Aliased => Metric::SkippedAliased,
            ExtractError::QueryUnread => Metric::SkippedNoQuery,
        }
    }
}

impl fmt::Display for ExtractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExtractError::NotJson => "response body is not JSON",
            ExtractError::NotObject => "response body is not a JSON object",
            ExtractError::Aliased => "GraphQL query renames a key the filter reads",
            ExtractError::QueryUnread => "GraphQL query text not read",
        })
    }
}

impl std::error::Error for ExtractError {}

/// The notifications in one response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extracted<'a> {
    /// In document order, one per identity (the first occurrence wins).
    pub notifications: Vec<Notification<'a>>,
    /// Objects carrying a delivery status that could not be used: the status is not an
    /// integer 1–6, or there is no integer id. Worth a metric: it means the query did not
    /// select `id`, or OsmoX changed its wire format.
    pub skipped_objects: usize,
    /// The rows notifications were taken from and the seen rows passed over, in document
    /// order: where a later page may repeat them ([`Extracted::rows_to_remember`]).
    pub rows: Vec<RowTaken>,
}

/// A page's row that held a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowTaken {
    /// Its place, with the notification's id; for a row passed over, its observation's
    /// identity too (`KnownEvents`).
    pub row: json::SeenRow,
    /// Read, and taken as `notifications[i]`; `None`: seen before, passed over unread.
    pub read: Option<usize>,
}

impl Extracted<'_> {
    /// Rows seen before, passed over unread: notifications this VM took in before.
    pub fn seen_rows(&self) -> usize {
        self.rows.iter().filter(|r| r.read.is_none()).count()
    }

    /// The rows a later page repeating their bytes may pass over, each with the identity of
    /// its observation: those passed over here and those whose view is whole enough to be
    /// known on sight (`KnownEvents`; to be kept only once every notification here was
    /// recorded).
    pub fn rows_to_remember(&self) -> Vec<json::SeenRow> {
        self.rows
            .iter()
            .filter_map(|r| match r.read {
                None => Some(r.row),
                Some(i) => {
                    let identity = KnownEvents::identity(self.notifications.get(i)?)?;
                    Some(json::SeenRow { identity, ..r.row })
                }
            })
            .collect()
    }
}

/// Every notification in an OsmoX response body, handed to `then` while the parsed body
/// lives: their webhook bodies are written only where `then` asks for them.
///
/// An object is a notification when it has `deliveryStatus` or `delivery_status`. GraphQL is
/// read only when the query was read and renames no key the filter reads
/// (`RequestFacts::Plain`); it is searched under `data` only, so a response with `errors` still
/// yields its partial data, and the answer to a `notification(notificationId: N)` field is
/// notification N, or skipped when N is unknown;
/// REST is searched from the top, except that a JSend envelope (`status` is a string) is
/// searched under `data` when it is `"success"` and not at all otherwise. `data` and `result`
/// fields below the root are never entered: in OsmoX they hold caller and provider payloads,
/// which may contain anything.
pub fn read<R>(
    kind: WatchKind,
    body: &[u8],
    facts: &RequestFacts,
    then: impl FnOnce(&Extracted<'_>) -> R,
) -> Result<R, ExtractError> {
    read_rows(kind, body, facts, None, then)
}

/// [`read`], passing over unread the rows `seen` finds: the bytes of a row whose notification
/// this VM took in from an earlier page (see `PageMemory`). Each is reported in
/// [`Extracted::rows`], not in its notifications; otherwise the answer is [`read`]'s.
pub fn read_rows<R>(
    kind: WatchKind,
    body: &[u8],
    facts: &RequestFacts,
    seen: Option<&dyn json::SeenRows>,
    then: impl FnOnce(&Extracted<'_>) -> R,
) -> Result<R, ExtractError> {
    // The GraphQL query's facts, read only when it is plain; REST has no query.
    let query = match (kind, facts) {
        (WatchKind::Rest, _) => None,
        (WatchKind::Graphql, RequestFacts::Plain(query)) => Some(query),
        (WatchKind::Graphql, RequestFacts::Aliased) => return Err(ExtractError::Aliased),
        (WatchKind::Graphql, RequestFacts::Unread) => return Err(ExtractError::QueryUnread),
    };
    // A first chunk the size of the page, up to 64 KiB: a ten-row page's tree fits, and a
    // large body (a single long string, say) does not reserve its size before a tree exists.
    let arena = json::Arena::with_capacity(body.len().min(1 << 16));
    let root = json::parse_rows(body, &arena, seen).map_err(|_| ExtractError::NotJson)?;
    let Value::Object(root) = root else {
        return Err(ExtractError::NotObject);
    };
    let mut found = Collector::default();
    match query {
        // GraphQL.
        Some(query) => {
            if let Some(Value::Object(data)) = root.get("data") {
                let keys = &query.archived_keys;
                let everywhere = keys.len() > graphql::MAX_ARCHIVED_KEYS;
                let fields = FieldsByKey::new(&query.notification_fields);
                for (k, v) in data.members().iter().take(MAX_MEMBERS) {
                    // `archivedNotifications` is a root field: its answer is one of `data`'s.
                    found.archived = everywhere || keys.iter().any(|a| k.is(a));
                    // `notification(notificationId: N)` may answer an archived row under the
                    // archive's own id: N is the identity the caller asked about, and without
                    // it the answer is not delivered under a wrong id.
                    match fields.get(*k) {
                        None => found.visit(v, 1, None),
                        Some(NotificationField { id: Some(id), .. }) => {
                            found.visit(v, 1, Some(*id));
                        }
                        Some(_) => found.pass_over(v), // the id it asked for is not known
                    }
                }
                for (_, v) in data.members().iter().skip(MAX_MEMBERS) {
                    found.pass_over(v);
                }
            }
        }
        // REST.
        None => {
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
    Ok(then(&Extracted {
        notifications: found.notifications,
        skipped_objects: found.skipped,
        rows: found.rows,
    }))
}

/// A query's `notification` fields, found by the key of each member of `data`. A query may
/// name hundreds of them beside thousands of other root fields (`__typename` aliases cost
/// OsmoX nothing, and a fragment spread under `@skip(if: true)` runs none of its fields yet
/// counts them): comparing every member with every field cost the product of the two. A few
/// are looked through; more, through an index sorted by key, so an answer costs
/// O(m log f).
struct FieldsByKey<'q> {
    fields: &'q [NotificationField],
    /// Each field's key and index, sorted; only for many fields.
    sorted: Option<Vec<(&'q str, usize)>>,
}

impl<'q> FieldsByKey<'q> {
    /// Up to this many fields are looked through.
    const LINEAR: usize = 16;

    fn new(fields: &'q [NotificationField]) -> Self {
        let sorted = (fields.len() > Self::LINEAR).then(|| {
            let mut sorted: Vec<(&'q str, usize)> = fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.key.as_str(), i))
                .collect();
            crate::heapsort::sort(&mut sorted);
            sorted
        });
        FieldsByKey { fields, sorted }
    }

    /// The first field answering under `key`.
    fn get(&self, key: json::Str<'_>) -> Option<&'q NotificationField> {
        let Some(sorted) = &self.sorted else {
            return self.fields.iter().find(|f| key.is(&f.key));
        };
        let key = key.text();
        // Equal keys sort by index: the first of them is the first field.
        let at = sorted.partition_point(|(k, _)| *k < key.as_ref());
        match sorted.get(at) {
            Some((k, i)) if *k == key.as_ref() => self.fields.get(*i),
            _ => None,
        }
    }
}

/// Read a watched answer, asking what costs a hostcall only when the answer calls for
/// something: its `status` (from the stream's record) and, for a GraphQL request whose
/// `facts` were read as a JSON `POST`'s before its head was (`RequestHead::JSON_POST`),
/// whether the head says it is one (`head_is_json_post`; `None` when the facts were read
/// under the real head). `seen`: rows passed over unread ([`read_rows`]). An answer that
/// parses, holds notifications or such rows, skips no object and whose every notification
/// is `passed_over` (taken in before by this VM: a poll whose page moved but no state did)
/// calls for nothing whatever those say, and is handed to `then`
/// unasked. Any other answer is skipped, or handed to `then`, as asking both first would
/// have decided, and under the same reason: the status first, then the head, then the body.
// One call per response; a struct to bundle these would be built anew at every call.
#[allow(clippy::too_many_arguments)]
pub fn read_lazily<R>(
    kind: WatchKind,
    body: &[u8],
    facts: &RequestFacts,
    seen: Option<&dyn json::SeenRows>,
    passed_over: impl Fn(&[Notification<'_>]) -> bool,
    status: impl FnOnce() -> Option<u64>,
    head_is_json_post: Option<impl FnOnce() -> bool>,
    then: impl FnOnce(&Extracted<'_>) -> R,
) -> Result<R, Metric> {
    let mut asked = Unasked {
        status: Some(status),
        answered_2xx: None,
        head: head_is_json_post,
        json_post: None,
    };
    if let Some(why) = sniff_whole(body) {
        return Err(if asked.answered_2xx() {
            why
        } else {
            Metric::SkippedStatus
        });
    }
    let taken = read_rows(kind, body, facts, seen, |found| {
        // An answer with no rows at all (an error's `{"errors": …}`, an empty page) is not
        // idle: its status and head decide under which reason it is skipped.
        let idle = (!found.notifications.is_empty() || found.seen_rows() > 0)
            && found.skipped_objects == 0
            && passed_over(&found.notifications);
        match if idle { None } else { asked.refusal() } {
            Some(why) => Err(why),
            None => Ok(then(found)),
        }
    });
    match taken {
        Ok(result) => result,
        // Unread under any head: only the status can say more.
        Err(ExtractError::QueryUnread) if asked.answered_2xx() => Err(Metric::SkippedNoQuery),
        Err(e) => Err(asked.refusal().unwrap_or(e.metric())),
    }
}

/// What costs a hostcall to learn of an exchange (`read_lazily`), asked at most once each.
struct Unasked<S, H> {
    status: Option<S>,
    answered_2xx: Option<bool>,
    /// `None` when the facts were read under the real head.
    head: Option<H>,
    json_post: Option<bool>,
}

impl<S: FnOnce() -> Option<u64>, H: FnOnce() -> bool> Unasked<S, H> {
    fn answered_2xx(&mut self) -> bool {
        let status = &mut self.status;
        *self
            .answered_2xx
            .get_or_insert_with(|| answered_2xx(status.take().and_then(|f| f())))
    }

    /// Why the answer is not read, by the status first, then the head; `None` to read it.
    fn refusal(&mut self) -> Option<Metric> {
        if !self.answered_2xx() {
            return Some(Metric::SkippedStatus);
        }
        let head = &mut self.head;
        let json_post = *self
            .json_post
            .get_or_insert_with(|| head.take().is_none_or(|f| f()));
        (!json_post).then_some(Metric::SkippedNoQuery)
    }
}

/// [`read`], with every webhook body written: for tests and tools that keep what they found.
pub fn extract(
    kind: WatchKind,
    body: &[u8],
    facts: &RequestFacts,
) -> Result<Extracted<'static>, ExtractError> {
    read(kind, body, facts, |found| Extracted {
        notifications: found
            .notifications
            .iter()
            .cloned()
            .map(Notification::into_written)
            .collect(),
        skipped_objects: found.skipped_objects,
        rows: found.rows.clone(),
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

fn is_notification(obj: &Object<'_>) -> bool {
    obj.members()
        .iter()
        .any(|(k, _)| k.is("deliveryStatus") || k.is("delivery_status"))
}

/// The fields a notification is read from, each under its camelCase (GraphQL, v7) or
/// snake_case (REST v8) name; found in one pass over the row rather than a lookup each.
#[derive(Default)]
struct Fields<'r, 'j> {
    /// Indexed by `Field`.
    camel: [Option<&'r Value<'j>>; Field::COUNT],
    snake: [Option<&'r Value<'j>>; Field::COUNT],
}

#[derive(Clone, Copy)]
enum Field {
    Id,
    NotificationId,
    DeliveryStatus,
    ProviderId,
    ChannelType,
    RetryCount,
    UpdatedOn,
    Result,
}

impl Field {
    const COUNT: usize = 8;

    /// The field a row's key holds, and whether the key is the camelCase spelling.
    fn of_key(key: &str) -> Option<(bool, Field)> {
        Some(match key {
            "id" => (true, Field::Id),
            "notificationId" => (true, Field::NotificationId),
            "notification_id" => (false, Field::NotificationId),
            "deliveryStatus" => (true, Field::DeliveryStatus),
            "delivery_status" => (false, Field::DeliveryStatus),
            "providerId" => (true, Field::ProviderId),
            "provider_id" => (false, Field::ProviderId),
            "channelType" => (true, Field::ChannelType),
            "channel_type" => (false, Field::ChannelType),
            "retryCount" => (true, Field::RetryCount),
            "retry_count" => (false, Field::RetryCount),
            "updatedOn" => (true, Field::UpdatedOn),
            "updated_on" => (false, Field::UpdatedOn),
            "result" => (true, Field::Result),
            _ => return None,
        })
    }
}

/// Fields holding free-form JSON (a notification's caller payload and provider result, a
/// provider's configuration, an application's recipient whitelist, the bodies a webhook log
/// keeps of a partner's exchange), in both spellings: never searched, since their writers
/// may put notification-shaped objects in them.
pub(crate) const FREE_FORM_KEYS: &[&str] = &[
    "data",
    "result",
    "configuration",
    "whitelistRecipients",
    "whitelist_recipients",
    "requestBody",
    "request_body",
    "responseBody",
    "response_body",
];

/// The keys OsmoX's own webhook sends: a notification's own fields. The webhook body holds
/// no other (a relation a client selected, such as a provider's details with its
/// credentials, or a key an alias made up), and an alias that renames another field to one
/// of them would put words in OsmoX's mouth.
const WEBHOOK_KEYS: &[&str] = &[
    "id",
    "providerId",
    "providerChainId",
    "channelType",
    "applicationId",
    "deliveryStatus",
    "status",
    "retryCount",
    "data",
    "result",
    "createdBy",
    "updatedBy",
    "createdOn",
    "updatedOn",
    "notificationSentOn",
];

/// Keys read by name besides a row's fields (`Field::of_key`): where answers are found
/// (`notification` gets the archive-id correction; the lists are named to be safe), and
/// what a registration is read from (`learn::from_row`).
const STRUCTURE_KEYS: &[&str] = &[
    "notification",
    "notifications",
    "archivedNotifications",
    "webhook",
    "webhookUrl",
    "webhook_url",
    "status",
];

/// Whether the filter reads a key of a GraphQL answer by its name: a GraphQL alias that
/// renames another field to it makes the answer untrusted.
pub(crate) fn is_read_key(key: &str) -> bool {
    Field::of_key(key).is_some() || FREE_FORM_KEYS.contains(&key) || STRUCTURE_KEYS.contains(&key)
}

/// Whether an alias may not rename a field to `alias`: a key the filter reads, or a
/// notification field of the body, in any spelling the body's camelCase makes of it
/// (`provider_Id` becomes `providerId`).
pub(crate) fn is_guarded_alias(alias: &str) -> bool {
    let camel = to_camel_case(alias);
    is_read_key(alias) || is_read_key(&camel) || WEBHOOK_KEYS.contains(&camel.as_ref())
}

impl<'r, 'j> Fields<'r, 'j> {
    fn of(obj: &'r Object<'j>) -> Self {
        let mut f = Fields::default();
        for (key, value) in obj.members() {
            let Some((camel, field)) = Field::of_key(&key.text()) else {
                continue;
            };
            let slots = if camel { &mut f.camel } else { &mut f.snake };
            // A repeated key: the last one, as `Object::get`.
            if let Some(slot) = slots.get_mut(field as usize) {
                *slot = Some(value);
            }
        }
        f
    }

    /// The camelCase spelling wins over the snake_case one.
    fn get(&self, field: Field) -> Option<&'r Value<'j>> {
        let i = field as usize;
        self.camel
            .get(i)
            .copied()
            .flatten()
            .or_else(|| self.snake.get(i).copied().flatten())
    }

    fn u64(&self, field: Field) -> Option<u64> {
        self.get(field).and_then(Value::as_u64)
    }
}

#[derive(Default)]
struct Collector<'a> {
    notifications: Vec<Notification<'a>>,
    skipped: usize,
    rows: Vec<RowTaken>,
    /// The ids taken, once there are too many to look through: a page of ten rows is
    /// searched faster than it is hashed, and the set grew four times on the way.
    seen: HashSet<u64>,
    /// Rows may be archive rows, whose `id` is the archive's: only `notificationId` (or the
    /// id a `notification` field asked for) names the notification. Set while the walk is
    /// inside the answer of an `archivedNotifications` field (`QueryFacts::archived_keys`).
    archived: bool,
}

impl<'a> Collector<'a> {
    fn visit(&mut self, v: &'a Value<'a>, depth: usize, id_override: Option<u64>) {
        if depth > MAX_DEPTH {
            // Past the bound nothing is searched; a notification right here is still counted.
            self.pass_over(v);
            return;
        }
        match v {
            Value::Object(obj) if is_notification(obj) => self.take(obj, id_override),
            Value::Object(obj) => self.visit_members(obj, depth),
            Value::Row(row) => self.visit_row(row, depth),
            Value::Array(items) => {
                for item in items.iter().take(MAX_MEMBERS) {
                    self.visit(item, depth + 1, None);
                }
                for item in items.iter().skip(MAX_MEMBERS) {
                    self.pass_over(item);
                }
            }
            _ => {}
        }
    }

    fn visit_members(&mut self, obj: &'a Object<'a>, depth: usize) {
        let searched = |k: &json::Str<'_>| !FREE_FORM_KEYS.iter().any(|f| k.is(f));
        let members = obj.members();
        for (k, v) in members.iter().take(MAX_MEMBERS) {
            if searched(k) {
                self.visit(v, depth + 1, None);
            }
        }
        for (k, v) in members.iter().skip(MAX_MEMBERS) {
            if searched(k) {
                self.pass_over(v);
            }
        }
    }

    /// A row of an array, which arrays' items are visited with no id to impose: a row seen
    /// before is the notification it was then, under its id, and is not read again.
    fn visit_row(&mut self, row: &'a json::Row<'a>, depth: usize) {
        match (row.seen, &row.value) {
            (true, _) => {
                if self.first_sighting(row.place.id) {
                    self.rows.push(RowTaken {
                        row: row.place,
                        read: None,
                    });
                }
            }
            (false, Value::Object(obj)) if is_notification(obj) => {
                let taken = self.notifications.len();
                self.take(obj, None);
                if let Some(n) = self.notifications.get(taken) {
                    self.rows.push(RowTaken {
                        row: json::SeenRow {
                            id: n.id,
                            ..row.place
                        },
                        read: Some(taken),
                    });
                }
            }
            (false, value) => self.visit(value, depth, None),
        }
    }

    /// A notification that cannot be given its identity: counted, not taken.
    fn pass_over(&mut self, v: &Value<'_>) {
        let is_one = match v {
            // A row seen before held a notification.
            Value::Row(row) => row.seen || row.value.as_object().is_some_and(is_notification),
            _ => v.as_object().is_some_and(is_notification),
        };
        if is_one {
            self.skipped += 1;
        }
    }

    /// Whether no notification taken (or row passed over) so far has `id`.
    fn first_sighting(&mut self, id: u64) -> bool {
        const LOOK_THROUGH: usize = 32;
        let passed = self.rows.iter().filter(|r| r.read.is_none());
        if self.notifications.len() + self.rows.len() < LOOK_THROUGH {
            return !(self.notifications.iter().any(|n| n.id == id)
                || passed.clone().any(|r| r.row.id == id));
        }
        if self.seen.is_empty() {
            self.seen.extend(self.notifications.iter().map(|n| n.id));
            self.seen.extend(passed.map(|r| r.row.id));
        }
        self.seen.insert(id)
    }

    fn take(&mut self, obj: &'a Object<'a>, id_override: Option<u64>) {
        match notification(obj, id_override, !self.archived) {
            Some(n) => {
                if self.first_sighting(n.id) {
                    self.notifications.push(n);
                }
            }
            None => self.skipped += 1,
        }
    }
}

/// The notification an object describes, or `None` when it lacks a usable id or status
/// (or has only its own `id` where that may be an archive row's: `own_id` false).
fn notification<'a>(
    obj: &'a Object<'a>,
    id_override: Option<u64>,
    own_id: bool,
) -> Option<Notification<'a>> {
    let f = Fields::of(obj);
    // An archived row has its own `id`; the notification's is in `notificationId`.
    let id = match id_override {
        Some(id) => id,
        None => match f.get(Field::NotificationId) {
            Some(original) => original.as_u64()?,
            None if own_id => f.u64(Field::Id)?,
            None => return None,
        },
    };
    let code = f.u64(Field::DeliveryStatus)?;
    let delivery_status = DeliveryStatus::from_code(code)?;
    let result = f.get(Field::Result);
    Some(Notification {
        id,
        delivery_status,
        provider_id: f.u64(Field::ProviderId),
        channel_type: f.u64(Field::ChannelType),
        retry_count: f.u64(Field::RetryCount),
        updated_on: f
            .get(Field::UpdatedOn)
            .and_then(Value::as_str)
            .and_then(|t| match t {
                Cow::Borrowed(t) => crate::osmox::utc_timestamp(t),
                Cow::Owned(t) => {
                    crate::osmox::utc_timestamp(&t).map(|u| Cow::Owned(u.into_owned()))
                }
            }),
        result: match result {
            None => ResultView::NotSelected,
            Some(Value::Null) => ResultView::Null,
            Some(_) => ResultView::Present,
        },
        test_mode: delivery_status == DeliveryStatus::Success
            && result.is_some_and(is_test_mode_result),
        body: WebhookBody::Row(obj),
    })
}

/// OsmoX's test-mode result, `{"result": "This is a test mode notification. …"}`.
fn is_test_mode_result(result: &Value<'_>) -> bool {
    let said = result.as_object().and_then(|r| r.get("result"));
    matches!(said, Some(Value::String(s)) if s.is(crate::osmox::TEST_MODE_RESULT))
}

/// A row as OsmoX's webhook would send it: keys in observed order, top-level keys in
/// camelCase and only those OsmoX's webhook sends (`WEBHOOK_KEYS`: no `notificationId`, no
/// `__typename`, no relation), `id` set to the identity, values copied byte for byte
/// (minified). A repeated key is written once, at its first position, with its last value
/// (what serde_json's ordered map did); `provider_id` next to `providerId` would repeat a key
/// too, so the one already in camelCase wins, as in `Fields::get`.
pub(crate) fn webhook_body(obj: &Object<'_>, id: u64) -> String {
    let members = obj.members();
    let raw = Keys::new(members.iter().map(|(k, _)| k.text()));
    let camel = Keys::new(raw.iter().map(|(_, k)| to_camel_case(k)));
    let mut out = String::with_capacity(256);
    out.push('{');
    if raw.first(key_hash("id"), "id").is_none() {
        out.push_str("\"id\":");
        json::write_u64(&mut out, id);
    }
    let rows = raw.iter().zip(camel.iter()).zip(members);
    for (i, (((hash, key), (camel_hash, camel_key)), (_, value))) in rows.enumerate() {
        let once = raw.once(hash);
        let dropped = !WEBHOOK_KEYS.contains(&camel_key);
        if (!once && raw.first(hash, key) != Some(i)) || dropped {
            continue;
        }
        if camel_key != key {
            let shadowed = raw.first(camel_hash, camel_key).is_some();
            // Another snake_case key camel-cases the same and came first.
            let taken = !camel.once(camel_hash)
                && camel
                    .first(camel_hash, camel_key)
                    .is_some_and(|j| raw.key(j) != key);
            if shadowed || taken {
                continue;
            }
        }
        if out.len() > 1 {
            out.push(',');
        }
        json::write_str(&mut out, camel_key);
        out.push(':');
        if camel_key == "id" {
            json::write_u64(&mut out, id);
        } else {
            let last = if once { None } else { raw.last(hash, key) };
            let last = last.and_then(|j| members.get(j)).map_or(value, |(_, v)| v);
            last.write(&mut out);
        }
    }
    out.push('}');
    out
}

/// An object's keys, with where each first and last occurs. Keys are compared by a hash
/// first, and a 128-bit filter of the hashes answers most questions (is this key repeated,
/// is that one present) without a search. Small objects are searched linearly; a large one (a
/// hostile body) through a sorted index, so a row of many keys costs O(n log n), not O(n²).
struct Keys<'k> {
    /// Each key with its hash.
    keys: Vec<(u64, Cow<'k, str>)>,
    /// The filter bit of every key.
    present: u128,
    /// The filter bits of more than one key: a key whose bit is not here occurs once.
    repeated: u128,
    /// Indices into `keys`, sorted by hash, key, then index; only for large objects.
    sorted: Option<Vec<usize>>,
}

impl<'k> Keys<'k> {
    /// Objects up to this size are searched linearly.
    const LINEAR: usize = 32;

    fn new(keys: impl Iterator<Item = Cow<'k, str>>) -> Self {
        let keys: Vec<(u64, Cow<'k, str>)> = keys.map(|k| (key_hash(&k), k)).collect();
        let (mut present, mut repeated) = (0u128, 0u128);
        for (hash, _) in &keys {
            let bit = filter_bit(*hash);
            repeated |= present & bit;
            present |= bit;
        }
        let sorted = (keys.len() > Self::LINEAR).then(|| {
            let mut order: Vec<usize> = (0..keys.len()).collect();
            crate::heapsort::sort_by(&mut order, |&a, &b| (keys.get(a), a) < (keys.get(b), b));
            order
        });
        Keys {
            keys,
            present,
            repeated,
            sorted,
        }
    }

    /// Whether the key with this hash certainly occurs only once.
    fn once(&self, hash: u64) -> bool {
        self.repeated & filter_bit(hash) == 0
    }

    fn key(&self, i: usize) -> &str {
        self.keys.get(i).map_or("", |(_, k)| k.as_ref())
    }

    /// Each key with its hash, in document order.
    fn iter(&self) -> impl Iterator<Item = (u64, &str)> {
        self.keys.iter().map(|(h, k)| (*h, k.as_ref()))
    }

    /// The indices of `key` in `sorted`, in document order.
    fn run<'s>(&self, sorted: &'s [usize], hash: u64, key: &str) -> &'s [usize] {
        let at = |i: &usize| self.keys.get(*i).map(|(h, k)| (*h, k.as_ref()));
        let start = sorted.partition_point(|i| at(i) < Some((hash, key)));
        let end = sorted.partition_point(|i| at(i) <= Some((hash, key)));
        sorted.get(start..end).unwrap_or_default()
    }

    /// Where `key`, whose hash is `hash`, first occurs.
    fn first(&self, hash: u64, key: &str) -> Option<usize> {
        if self.present & filter_bit(hash) == 0 {
            return None;
        }
        match &self.sorted {
            Some(sorted) => self.run(sorted, hash, key).first().copied(),
            None => self.keys.iter().position(|(h, k)| *h == hash && k == key),
        }
    }

    fn last(&self, hash: u64, key: &str) -> Option<usize> {
        match &self.sorted {
            Some(sorted) => self.run(sorted, hash, key).last().copied(),
            None => self.keys.iter().rposition(|(h, k)| *h == hash && k == key),
        }
    }
}

fn filter_bit(hash: u64) -> u128 {
    1 << (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57)
}

/// A key's hash, in constant time: keys shorter than 8 bytes exactly, longer ones by their
/// length and first and last 8 bytes. It only has to tell most keys of a row apart.
fn key_hash(key: &str) -> u64 {
    let b = key.as_bytes();
    let word = |chunk: Option<&[u8]>| {
        chunk
            .and_then(|c| <[u8; 8]>::try_from(c).ok())
            .map_or(0, u64::from_le_bytes)
    };
    let len = b.len() as u64;
    if b.len() < 8 {
        return b.iter().fold(len, |h, &x| h << 8 | u64::from(x));
    }
    let last = b.get(b.len() - 8..);
    word(b.get(..8)) ^ word(last).rotate_left(29) ^ len.wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

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

    /// Facts of a query that was read and renames nothing.
    fn plain() -> RequestFacts {
        RequestFacts::Plain(QueryFacts::default())
    }

    fn run(kind: WatchKind, body: &[u8]) -> Extracted<'static> {
        extract(kind, body, &plain()).unwrap()
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
        serde_json::from_str(&n.webhook_body()).unwrap()
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    /// Whether each view shows `result`: a SUCCESS without one waits for a view with it.
    #[test]
    fn a_view_shows_its_result_or_null_or_not_at_all() {
        use crate::osmox::ResultView::{NotSelected, Null, Present};
        let views = |x: &Extracted| -> Vec<(u64, crate::osmox::ResultView, bool)> {
            x.notifications
                .iter()
                .map(|n| (n.id, n.result, n.awaits_result()))
                .collect()
        };
        let x = run(WatchKind::Graphql, GQL_LIST.as_bytes());
        let got = views(&x);
        assert_eq!(got.len(), 7);
        assert!(got.contains(&(1048, Present, false)));
        assert!(
            got.contains(&(1047, Null, false)),
            "IN_PROGRESS awaits nothing"
        );
        let x = run(WatchKind::Rest, &captured_body(V8_BY_ID_5));
        assert_eq!(views(&x), vec![(x.notifications[0].id, Present, false)]);
        let success_null = br#"{"id": 9, "delivery_status": 5, "result": null}"#;
        let x = run(WatchKind::Rest, success_null);
        assert_eq!(views(&x), vec![(9, Null, true)]);
        let thin = br#"{"data": {"notification": {"id": 9, "deliveryStatus": 5}}}"#;
        let x = run(WatchKind::Graphql, thin);
        assert_eq!(views(&x), vec![(9, NotSelected, false)]);
    }

    /// OsmoX's test mode makes a SUCCESS without sending it (the sample's 1048); its own
    /// webhook never fires for one, so endpoints may leave such rows out.
    #[test]
    fn a_success_test_mode_made_is_told_by_its_result() {
        let test_mode = |kind, body: &[u8]| -> Vec<(u64, bool)> {
            let x = run(kind, body);
            x.notifications
                .iter()
                .map(|n| (n.id, n.test_mode))
                .collect()
        };
        let got = test_mode(WatchKind::Graphql, GQL_LIST.as_bytes());
        assert_eq!(got.iter().filter(|(_, t)| *t).count(), 1, "{got:?}");
        assert!(got.contains(&(1048, true)));
        let said = crate::osmox::TEST_MODE_RESULT;
        let row = |status: u8, result: &str| {
            format!(r#"{{"id": 9, "delivery_status": {status}, "result": {result}}}"#)
        };
        let rest =
            |status, result: &str| test_mode(WatchKind::Rest, row(status, result).as_bytes());
        assert_eq!(rest(5, &format!(r#"{{"result": "{said}"}}"#)), [(9, true)]);
        // Escaped as JSON allows, the same text.
        let escaped = said.replace("test", "t\\u0065st");
        assert_eq!(
            rest(5, &format!(r#"{{"result": "{escaped}"}}"#)),
            [(9, true)]
        );
        // Only a SUCCESS, only that text, only under `result.result`.
        assert_eq!(rest(6, &format!(r#"{{"result": "{said}"}}"#)), [(9, false)]);
        assert_eq!(
            rest(5, &format!(r#"{{"result": "{said} "}}"#)),
            [(9, false)]
        );
        assert_eq!(
            rest(5, &format!(r#"{{"message": "{said}"}}"#)),
            [(9, false)]
        );
        assert_eq!(rest(5, &format!(r#""{said}""#)), [(9, false)]);
        assert_eq!(rest(5, "null"), [(9, false)]);
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
            assert_eq!(
                classify(Some(method), path, &gql, &rest),
                want,
                "{method} {path}"
            );
        }
    }

    #[test]
    fn classify_without_the_method_takes_any_request_to_a_graphql_path() {
        let gql = vec!["/graphql".to_string()];
        let rest = vec!["/notifications".to_string()];
        let cases = [
            ("/graphql", Some(WatchKind::Graphql)),
            ("/graphql?x=1", Some(WatchKind::Graphql)),
            ("/graphql/extra", None),
            ("/notifications/14", Some(WatchKind::Rest)),
            ("/providers", None),
        ];
        for (path, want) in cases {
            assert_eq!(classify(None, path, &gql, &rest), want, "{path}");
        }
    }

    #[test]
    fn classify_takes_the_root_prefix_as_every_path() {
        let rest = vec!["/".to_string()];
        for path in ["/", "/anything", "/api/v1/notifications?page=2"] {
            assert_eq!(
                classify(None, path, &[], &rest),
                Some(WatchKind::Rest),
                "{path}"
            );
        }
        let gql = vec!["/graphql".to_string()];
        assert_eq!(
            classify(None, "/graphql", &gql, &rest),
            Some(WatchKind::Graphql)
        );
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
        assert_eq!(n.webhook_body(), serde_json::to_string(row).unwrap());
        // OsmoX's own FAILED webhook for this row has the same keys.
        let hook: Value = serde_json::from_str(WEBHOOK_FAILED).unwrap();
        assert_eq!(keys(&body_json(n)), keys(&hook));
    }

    #[test]
    fn a_row_whose_data_nests_past_the_parse_depth_hides_no_other_row() {
        // Any client of OsmoX writes `data`; 300 levels, pretty-printed, in the page's first row.
        let deep = format!("{}1{}", "{ \"a\": ".repeat(300), " }".repeat(300));
        let mut doc: Value = serde_json::from_str(GQL_LIST).unwrap();
        let rows = doc["data"]["notifications"]["notifications"]
            .as_array_mut()
            .unwrap();
        rows[0]["data"] = Value::String("DEEP".into());
        let body = serde_json::to_string_pretty(&doc)
            .unwrap()
            .replacen("\"DEEP\"", &deep, 1);
        let x = run(WatchKind::Graphql, body.as_bytes());
        assert_eq!(
            summary(&x),
            summary(&run(WatchKind::Graphql, GQL_LIST.as_bytes()))
        );
        let sent = x.notifications[0].webhook_body();
        let minified = format!("{}1{}", "{\"a\":".repeat(300), "}".repeat(300));
        assert!(sent.contains(&format!("\"data\":{minified},")), "{sent}");
    }

    #[test]
    fn graphql_inline_row_body_is_compact_and_exact() {
        let body = br#"{"data":{"notifications":{"notifications":[
            {"id": 7, "deliveryStatus": 5, "data": {"a_b": 1}, "result": null}
        ]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":7,"deliveryStatus":5,"data":{"a_b":1},"result":null}"#
        );
        assert_eq!(x.notifications[0].provider_id, None);
        assert_eq!(x.notifications[0].retry_count, None);
        assert_eq!(x.notifications[0].updated_on, None);
    }

    /// A third review: an archived row whose query did not select `notificationId` went out
    /// under the archive row's own id, which may be another live notification's.
    #[test]
    fn an_archived_row_without_its_notification_id_is_skipped() {
        let request = br#"{"query":"{ a: archivedNotifications { archivedNotifications { id providerId deliveryStatus } } notifications { notifications { notificationId id deliveryStatus } } }"}"#;
        let facts = graphql_request_facts(request);
        assert_eq!(facts.plain().map(|q| q.archived()), Some(true));
        let body = br#"{"data":{"a":{"archivedNotifications":[{"id":7,"providerId":7,"deliveryStatus":5}]},"notifications":{"notifications":[{"notificationId":1042,"id":8,"deliveryStatus":5}]}}}"#;
        let x = extract(WatchKind::Graphql, body, &facts).unwrap();
        assert_eq!(summary(&x), vec![(1042, 5, None, None, None)]);
        assert_eq!(x.skipped_objects, 1);
    }

    /// One operation polling live and archived notifications together: only the archive
    /// field's rows are archive rows. Every live row (the live `Notification` type has no
    /// `notificationId`) was skipped into `objects_skipped`, so no webhook went out for any
    /// of them, though their `id` is the notification's own.
    #[test]
    fn a_live_row_beside_an_archive_poll_is_read_by_its_own_id() {
        let request = br#"{"query":"{ notifications { notifications { id deliveryStatus } } old: archivedNotifications { archivedNotifications { id notificationId deliveryStatus } } archivedNotifications { archivedNotifications { id deliveryStatus } } }"}"#;
        let facts = graphql_request_facts(request);
        let mut keys = facts.plain().unwrap().archived_keys.clone();
        keys.sort();
        keys.dedup();
        assert_eq!(keys, ["archivedNotifications", "old"]);
        let body = br#"{"data":{"notifications":{"notifications":[{"id":1,"deliveryStatus":5},{"id":2,"deliveryStatus":2}]},"old":{"archivedNotifications":[{"id":9001,"notificationId":1042,"deliveryStatus":6},{"id":9002,"deliveryStatus":6}]},"archivedNotifications":{"archivedNotifications":[{"id":9003,"deliveryStatus":5}]}}}"#;
        let x = extract(WatchKind::Graphql, body, &facts).unwrap();
        assert_eq!(
            summary(&x),
            vec![
                (1, 5, None, None, None),
                (2, 2, None, None, None),
                (1042, 6, None, None, None)
            ]
        );
        // The archive rows without `notificationId`, under either key, are still skipped.
        assert_eq!(x.skipped_objects, 2);
    }

    /// Each `archivedNotifications` key is kept once; past `MAX_ARCHIVED_KEYS` of them every
    /// row counts as an archive row (the walk compares each member of `data` with each key),
    /// so a live row without `notificationId` is skipped there, and read below the bound.
    #[test]
    fn past_the_bound_on_archive_keys_every_row_is_an_archive_row() {
        let answer = |aliases: usize| {
            let mut query = String::from("{ notifications { notifications { id deliveryStatus } }");
            for a in 0..aliases {
                query.push_str(&format!(
                    " a{a}: archivedNotifications {{ archivedNotifications {{ id }} }}"
                ));
                query.push_str(&format!(
                    " a{a}: archivedNotifications {{ archivedNotifications {{ id }} }}"
                ));
            }
            query.push_str(" }");
            let facts =
                graphql_request_facts(&serde_json::to_vec(&json!({ "query": query })).unwrap());
            let keys = facts.plain().unwrap().archived_keys.len();
            let body =
                br#"{"data":{"notifications":{"notifications":[{"id":1,"deliveryStatus":5}]}}}"#;
            let x = extract(WatchKind::Graphql, body, &facts).unwrap();
            (keys, x.notifications.len(), x.skipped_objects)
        };
        // Each alias twice, and the inner list field's name once: kept once each.
        assert_eq!(answer(15), (16, 1, 0));
        assert_eq!(answer(16), (17, 0, 1));
        assert_eq!(answer(500), (17, 0, 1));
    }

    /// A third review: the operation that ran answered `n` through an inline fragment at its
    /// root, while a fragment it did not spread named `n` a `notification(notificationId: 5)`.
    #[test]
    fn a_key_answered_inside_an_inline_fragment_takes_no_other_fields_id() {
        let request = br#"{"operationName":"A","query":"mutation A { ... on Mutation { n: createNotification(createNotificationInput: {providerId: 7}) { id providerId deliveryStatus } } } query B { ...F } fragment F on Query { n: notification(notificationId: 5) { id deliveryStatus } }"}"#;
        let facts = graphql_request_facts(request);
        let body = br#"{"data":{"n":{"id":2001,"providerId":7,"deliveryStatus":5}}}"#;
        let x = extract(WatchKind::Graphql, body, &facts).unwrap();
        assert!(x.notifications.is_empty(), "{:?}", summary(&x));
        assert_eq!(x.skipped_objects, 1);
    }

    /// A second review: a provider's `configuration` (JSON an admin sets) was searched.
    #[test]
    fn a_provider_configuration_is_never_searched() {
        let body = br#"{"data":{"providers":{"providers":[{"providerId":1,"configuration":{"id":1042,"deliveryStatus":5,"providerId":1}}]}}}"#;
        assert!(run(WatchKind::Graphql, body).notifications.is_empty());
        assert!(run(WatchKind::Rest, body).notifications.is_empty());
        // Nor a webhook log's record of a partner's reply (REST, snake_case).
        let body =
            br#"{"items":[{"id":1,"webhook_id":3,"response_body":{"id":77,"delivery_status":6}}]}"#;
        assert!(run(WatchKind::Rest, body).notifications.is_empty());
        // Nor an application's recipient whitelist (JSON too).
        let body = br#"{"data":{"applications":{"applications":[{"applicationId":1,"whitelistRecipients":{"1":[{"id":1042,"deliveryStatus":5}]}}]}}}"#;
        assert!(run(WatchKind::Graphql, body).notifications.is_empty());
    }

    #[test]
    fn an_updated_on_that_is_not_a_utc_time_is_no_time() {
        let body = br#"{"id": 7, "deliveryStatus": 2, "updatedOn": "system"}"#;
        assert_eq!(run(WatchKind::Rest, body).notifications[0].updated_on, None);
        let body = br#"{"id": 7, "deliveryStatus": 2, "updated_on": "2026-04-20T09:15:02Z"}"#;
        let n = &run(WatchKind::Rest, body).notifications[0];
        assert_eq!(n.updated_on.as_deref(), Some("2026-04-20T09:15:02.000Z"));
        // The body keeps what OsmoX sent.
        assert!(
            n.webhook_body()
                .contains(r#""updatedOn":"2026-04-20T09:15:02Z""#),
            "{}",
            n.webhook_body()
        );
        // A time written with escapes is the same time (decoded, then read).
        for (updated, want) in [
            (
                r#""2026-04-20\u005409:15:02.318Z""#,
                "2026-04-20T09:15:02.318Z",
            ),
            (
                r#""2026-04-20T09:15:02\u002e5Z""#,
                "2026-04-20T09:15:02.500Z",
            ),
        ] {
            let body = format!(r#"{{"id": 7, "deliveryStatus": 2, "updatedOn": {updated}}}"#);
            let n = &run(WatchKind::Rest, body.as_bytes()).notifications[0];
            assert_eq!(n.updated_on.as_deref(), Some(want), "{updated}");
        }
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
            n.webhook_body(),
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
            x.notifications[0].webhook_body(),
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

    /// JSend has three statuses; only `"success"` carries data to read, and a string
    /// `status` that is not JSend's (a health check's `"ok"`) makes no envelope to read either.
    #[test]
    fn rest_envelopes_other_than_success_yield_nothing() {
        for status in ["error", "ok", "Success"] {
            let body = format!(
                r#"{{"status":"{status}","data":{{"notification":{{"id":1,"deliveryStatus":5}}}}}}"#
            );
            assert_eq!(
                run(WatchKind::Rest, body.as_bytes()),
                Extracted::default(),
                "{status}"
            );
        }
    }

    /// A row that repeats a key is read by its last value, the one its body carries (the
    /// identity and the body must not tell two stories).
    #[test]
    fn a_repeated_field_is_read_by_its_last_value_as_the_body_writes_it() {
        let body =
            br#"{"id":1,"delivery_status":1,"retry_count":0,"delivery_status":5,"retry_count":2}"#;
        let x = run(WatchKind::Rest, body);
        assert_eq!(summary(&x), [(1, 5, None, None, Some(2))]);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":1,"deliveryStatus":5,"retryCount":2}"#
        );
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
            x.notifications[0].webhook_body(),
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
            x.notifications[0].webhook_body(),
            r#"{"id":1042,"providerId":1,"channelType":1,"deliveryStatus":5,"retryCount":0,"updatedOn":"2026-04-20T09:15:06.912Z"}"#
        );
        // REST v8 spells it `notification_id`, and names the notification by it too.
        let body = br#"{"items":[{"id":9001,"notification_id":1042,"delivery_status":5}]}"#;
        let x = run(WatchKind::Rest, body);
        assert_eq!(summary(&x), vec![(1042, 5, None, None, None)]);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":1042,"deliveryStatus":5}"#
        );
    }

    #[test]
    fn archived_row_without_selected_id_gets_id_first() {
        let body = br#"{"data":{"archivedNotifications":{"archivedNotifications":[
            {"notificationId":1042,"deliveryStatus":6}]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":1042,"deliveryStatus":6}"#
        );
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
        let facts = RequestFacts::Plain(QueryFacts {
            notification_fields: vec![NotificationField {
                key: "notification".to_string(),
                id: Some(1042),
            }],
            ..QueryFacts::default()
        });
        let x = extract(WatchKind::Graphql, ARCHIVED_ANSWER, &facts).unwrap();
        assert_eq!(summary(&x), vec![(1042, 5, Some(1), None, None)]);
        assert_eq!(
            x.notifications[0].webhook_body(),
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
    }

    /// A review: without the query text (a persisted query sent by its hash, a request over
    /// the read limit) the archive-id correction was lost, and the answer went out under the
    /// archive's id. Nor can aliases be checked: the whole answer is skipped.
    #[test]
    fn without_the_query_text_a_graphql_answer_is_skipped() {
        let apq = br#"{"variables":{"n":5},"extensions":{"persistedQuery":{"version":1,"sha256Hash":"abc"}}}"#;
        let facts = graphql_request_facts(apq);
        let answer = br#"{"data":{"notification":{"id":77,"deliveryStatus":5,"providerId":1}}}"#;
        let got = extract(WatchKind::Graphql, answer, &facts);
        assert_eq!(got, Err(ExtractError::QueryUnread));
        assert_eq!(ExtractError::QueryUnread.metric(), Metric::SkippedNoQuery);
        let list = br#"{"data":{"notifications":{"notifications":[{"id":1,"deliveryStatus":5}]}}}"#;
        let got = extract(WatchKind::Graphql, list, &RequestFacts::Unread);
        assert_eq!(got, Err(ExtractError::QueryUnread));
        // REST has no query and no aliases: unaffected.
        let rest = br#"{"id":1,"delivery_status":5}"#;
        let x = extract(WatchKind::Rest, rest, &RequestFacts::Unread).unwrap();
        assert_eq!(x.notifications.len(), 1);
    }

    /// A `notification` field whose id is unknown (a variable's default in the query) is
    /// not delivered under the archive's id: counted as skipped, the rest still read.
    #[test]
    fn a_notification_answer_without_its_requested_id_is_skipped() {
        let request = br#"{"query":"query Q($v: Int = 5) { notification(notificationId: $v) { id deliveryStatus } notifications { notifications { id deliveryStatus } } }"}"#;
        let facts = graphql_request_facts(request);
        let body = br#"{"data":{"notification":{"id":77,"deliveryStatus":5},
            "notifications":{"notifications":[{"id":8,"deliveryStatus":6}]}}}"#;
        let x = extract(WatchKind::Graphql, body, &facts).unwrap();
        assert_eq!(summary(&x), vec![(8, 6, None, None, None)]);
        assert_eq!(x.skipped_objects, 1);
    }

    /// A review: a second `notification` field's archived answer went out under the
    /// archive's id (only the first field was corrected).
    #[test]
    fn every_notification_field_gets_its_requested_id() {
        let request = br#"{"query":"{ a: notification(notificationId: 5) { id deliveryStatus } b: notification(notificationId: 6) { id deliveryStatus } }"}"#;
        let facts = graphql_request_facts(request);
        let body =
            br#"{"data":{"a":{"id":77,"deliveryStatus":5},"b":{"id":78,"deliveryStatus":6}}}"#;
        let x = extract(WatchKind::Graphql, body, &facts).unwrap();
        assert_eq!(
            summary(&x),
            vec![(5, 5, None, None, None), (6, 6, None, None, None)]
        );
    }

    /// A fourth review: each member of `data` was compared with every `notification` field of
    /// the query, so an answer cost the product of the two. A query within the 64 KiB read
    /// can name about 900 such fields (in a fragment spread under `@skip(if: true)`, so
    /// OsmoX runs none of them) beside 2,500 `__typename` aliases: every poll of it took
    /// about 40 times what its answer cost to read without them (measured natively). Past a
    /// few fields they are found by binary search in an index sorted by key; it must find
    /// what the plain search finds: the first field under a key, escapes decoded.
    #[test]
    fn many_notification_fields_are_found_as_the_plain_search_finds_them() {
        let key = |i: u64| format!("n{:03}", (i * 7919) % 300);
        let fields: Vec<NotificationField> = (0..600)
            .map(|i| NotificationField {
                key: key(i), // each key twice, in no order
                id: Some(i),
            })
            .collect();
        let index = FieldsByKey::new(&fields);
        assert!(index.sorted.is_some());
        let plain = FieldsByKey {
            fields: &fields,
            sorted: None,
        };
        let arena = json::Arena::new();
        let mut body = String::from("{");
        for i in 0..320 {
            body.push_str(&format!(r#""n{i:03}":0,"#));
        }
        body.push_str(r#""n\u0030\u0030\u0037":0,"n":0,"":0,"n0070":0}"#);
        let Ok(json::Value::Object(members)) = json::parse(body.as_bytes(), &arena) else {
            panic!("not an object");
        };
        let mut found = 0;
        for (k, _) in members.members() {
            let got = index.get(*k).map(|f| f.id);
            assert_eq!(got, plain.get(*k).map(|f| f.id), "{}", k.text());
            found += usize::from(got.is_some());
        }
        assert_eq!(found, 301); // n000..n299, and n007 written with escapes
        let first = fields.iter().find(|f| f.key == "n007").map(|f| f.id);
        assert_eq!(index.get(members.members()[7].0).map(|f| f.id), first);

        // A whole answer read through the index.
        let facts = RequestFacts::Plain(QueryFacts {
            notification_fields: fields.clone(),
            ..QueryFacts::default()
        });
        let row = |key: &str, id: u64, status: u8| {
            format!(r#""{key}":{{"id":{id},"deliveryStatus":{status}}}"#)
        };
        let answer = format!(
            r#"{{"data":{{"t":"Query",{},{},{}}}}}"#,
            row("n\\u0030\\u0030\\u0037", 9001, 5),
            row("n299", 9002, 6),
            row("n4", 9003, 2)
        );
        let x = extract(WatchKind::Graphql, answer.as_bytes(), &facts).unwrap();
        let id_of = |k: &str| fields.iter().find(|f| f.key == k).and_then(|f| f.id);
        assert_eq!(
            summary(&x),
            vec![
                (id_of("n007").unwrap(), 5, None, None, None),
                (id_of("n299").unwrap(), 6, None, None, None),
                (9003, 2, None, None, None)
            ]
        );
        assert_eq!(x.skipped_objects, 0);
    }

    /// A review: aliases let a client forge a status (`deliveryStatus: channelType`) or walk
    /// its own payload (`payload: data`) into notifications. Such answers are not read.
    #[test]
    fn an_answer_to_an_aliased_query_is_skipped() {
        let ids = |query: &str, body: &[u8]| {
            let request = serde_json::to_vec(&json!({ "query": query })).unwrap();
            extract(WatchKind::Graphql, body, &graphql_request_facts(&request))
        };
        let forged = br#"{"data":{"notifications":{"notifications":[{"id":1042,"providerId":1,"deliveryStatus":5}]}}}"#;
        let q = "query { notifications { notifications { id providerId deliveryStatus: channelType } } }";
        assert_eq!(ids(q, forged), Err(ExtractError::Aliased));
        let payload = br#"{"data":{"notifications":{"notifications":[{"id":1,"payload":{"x":{"id":999,"deliveryStatus":5,"providerId":7}}}]}}}"#;
        let q = "query { notifications { notifications { id payload: data } } }";
        assert_eq!(ids(q, payload), Err(ExtractError::Aliased));
        assert_eq!(ExtractError::Aliased.metric(), Metric::SkippedAliased);
        // A harmless alias is still read.
        let q = "query { notifications { notifications { id providerId deliveryStatus } } }";
        assert_eq!(ids(q, forged).unwrap().notifications.len(), 1);
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
            {"id":10,"deliveryStatus":5.0},
            {"id":11,"deliveryStatus":5e0},
            {"id":12,"deliveryStatus":true},
            {"id":13,"deliveryStatus":-0},
            {"id":14.0,"deliveryStatus":5},
            {"id":15,"deliveryStatus":[5]},
            {"id":9,"deliveryStatus":6}
        ]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(summary(&x), vec![(9, 6, None, None, None)]);
        assert_eq!(x.skipped_objects, 14);
        // The other fields read as numbers are read as OsmoX writes them too: only an
        // integer is one, anything else reads as not selected.
        let body =
            br#"{"id":1,"deliveryStatus":5,"providerId":"7","channelType":5.0,"retryCount":1e0}"#;
        assert_eq!(
            summary(&run(WatchKind::Rest, body)),
            vec![(1, 5, None, None, None)]
        );
    }

    /// The status and the head are asked only when the answer calls for something, and what
    /// they say then decides, under the same reason, as asking them first would have.
    #[test]
    fn an_answer_read_lazily_asks_only_when_it_matters() {
        use std::cell::Cell;
        use Metric::{
            SkippedAliased, SkippedEncoded, SkippedMalformed, SkippedNoQuery, SkippedNotJson,
            SkippedStatus,
        };
        use WatchKind::{Graphql, Rest};
        let page = br#"{"data":{"notifications":{"notifications":[{"id":1,"deliveryStatus":5}]}}}"#;
        let skipping = br#"{"data":{"notifications":{"notifications":[{"id":1,"deliveryStatus":5},{"id":2,"deliveryStatus":9}]}}}"#;
        let row = br#"{"id":1,"delivery_status":5}"#;
        let cut = br#"{"data":{"notifications":"#;
        let errors = br#"{"errors":[{"message":"Cannot query field"}]}"#;
        let empty = br#"{"data":{"notifications":{"notifications":[],"total":0}}}"#;
        let rest_error = br#"{"statusCode":500,"message":"Internal server error"}"#;
        let gzip = [0x1f, 0x8b, 0x08, 0x00];
        let (plain, aliased, unread) = (plain(), RequestFacts::Aliased, RequestFacts::Unread);
        let (ok, err) = (Some(200), Some(500));
        // kind, body, facts, every row passed over, status, head a JSON POST (None: read
        // already) → result, status asked, head asked
        type Case<'a> = (
            WatchKind,
            &'a [u8],
            &'a RequestFacts,
            bool,
            Option<u64>,
            Option<bool>,
            Result<usize, Metric>,
            bool,
            bool,
        );
        #[rustfmt::skip]
        let cases: [Case; 25] = [
            (Graphql, page, &plain, true, err, Some(false), Ok(1), false, false),
            (Rest, row, &plain, true, err, None, Ok(1), false, false),
            (Graphql, page, &plain, false, ok, Some(true), Ok(1), true, true),
            (Graphql, page, &plain, false, ok, None, Ok(1), true, false),
            (Rest, row, &plain, false, Some(201), None, Ok(1), true, false),
            (Graphql, page, &plain, false, ok, Some(false), Err(SkippedNoQuery), true, true),
            (Graphql, page, &plain, false, err, Some(true), Err(SkippedStatus), true, false),
            (Graphql, page, &plain, false, None, None, Err(SkippedStatus), true, false),
            (Graphql, skipping, &plain, true, ok, Some(false), Err(SkippedNoQuery), true, true),
            (Graphql, skipping, &plain, true, ok, Some(true), Ok(1), true, true),
            (Graphql, page, &aliased, true, ok, Some(true), Err(SkippedAliased), true, true),
            (Graphql, page, &aliased, true, ok, Some(false), Err(SkippedNoQuery), true, true),
            (Graphql, page, &aliased, true, Some(404), Some(true), Err(SkippedStatus), true, false),
            (Graphql, cut, &plain, true, ok, Some(true), Err(SkippedMalformed), true, true),
            (Graphql, cut, &plain, true, ok, Some(false), Err(SkippedNoQuery), true, true),
            (Graphql, page, &unread, true, ok, Some(true), Err(SkippedNoQuery), true, false),
            (Graphql, page, &unread, true, err, Some(true), Err(SkippedStatus), true, false),
            (Graphql, &gzip, &plain, true, ok, Some(false), Err(SkippedEncoded), true, false),
            (Graphql, b"<html>", &plain, true, Some(503), Some(true), Err(SkippedStatus), true, false),
            (Rest, b" \n", &plain, true, ok, None, Err(SkippedNotJson), true, false),
            // No rows: never idle, so the status and head name the reason (a review).
            (Graphql, errors, &plain, true, Some(400), Some(true), Err(SkippedStatus), true, false),
            (Graphql, errors, &plain, true, ok, Some(false), Err(SkippedNoQuery), true, true),
            (Graphql, empty, &plain, true, ok, Some(true), Ok(0), true, true),
            (Rest, rest_error, &plain, true, err, None, Err(SkippedStatus), true, false),
            (Rest, b"{}", &plain, true, ok, None, Ok(0), true, false),
        ];
        for (i, case) in cases.into_iter().enumerate() {
            let (kind, body, facts, passed, status, json_post, want, asks_status, asks_head) = case;
            let (status_asked, head_asked) = (Cell::new(0), Cell::new(0));
            let got = read_lazily(
                kind,
                body,
                facts,
                None,
                |ns| {
                    assert!(!ns.is_empty(), "case {i}");
                    passed
                },
                || {
                    status_asked.set(status_asked.get() + 1);
                    status
                },
                json_post.map(|answer| {
                    let head_asked = &head_asked;
                    move || {
                        head_asked.set(head_asked.get() + 1);
                        answer
                    }
                }),
                |x| x.notifications.len(),
            );
            assert_eq!(got, want, "case {i}");
            assert_eq!(
                status_asked.get(),
                usize::from(asks_status),
                "case {i}: status"
            );
            assert_eq!(head_asked.get(), usize::from(asks_head), "case {i}: head");
        }
    }

    /// A page whose every row was taken in before holds no notification to read, yet it is
    /// idle as one of passed-over notifications is: read unasked, whatever its status.
    #[test]
    fn a_page_of_only_rows_seen_before_is_read_unasked() {
        let body = br#"{"items":[{"id":1,"delivery_status":5}]}"#;
        let seen = all_seen(WatchKind::Rest, body);
        let got = read_lazily(
            WatchKind::Rest,
            body,
            &plain(),
            Some(&json::Listed(&seen)),
            |ns| ns.is_empty(),
            || -> Option<u64> { panic!("the status was asked") },
            None::<fn() -> bool>,
            |x| (x.notifications.len(), x.seen_rows()),
        );
        assert_eq!(got, Ok((0, 1)));
    }

    #[test]
    fn malformed_json_is_an_error() {
        assert_eq!(
            extract(WatchKind::Rest, b"{\"id\":1,", &plain()),
            Err(ExtractError::NotJson)
        );
        assert_eq!(
            extract(WatchKind::Graphql, b"", &plain()),
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
                extract(kind, b"[1,2,3]", &plain()),
                Err(ExtractError::NotObject)
            );
            assert_eq!(
                extract(kind, b"\"x\"", &plain()),
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

    /// Ids repeated within a page, before and after there are too many to look through.
    #[test]
    fn repeated_ids_keep_the_first_however_many_rows() {
        for rows in [5u64, 31, 32, 33, 100] {
            let page: Vec<Value> = (0..rows * 2)
                .map(|i| json!({"id": i % rows, "delivery_status": 1 + i / rows}))
                .collect();
            let body = serde_json::to_vec(&json!({ "items": page })).unwrap();
            let x = run(WatchKind::Rest, &body);
            let ids: Vec<u64> = x.notifications.iter().map(|n| n.id).collect();
            assert_eq!(ids, (0..rows).collect::<Vec<_>>(), "{rows}");
            assert!(x
                .notifications
                .iter()
                .all(|n| n.delivery_status.code() == 1));
        }
    }

    /// REST rows 1..=`n`, PENDING, and a page of them as `{"items": […]}`.
    fn numbered_rows(n: usize) -> (Vec<Value>, Vec<u8>) {
        let rows: Vec<Value> = (1..=n as u64)
            .map(|id| json!({"id": id, "delivery_status": 1}))
            .collect();
        let body = serde_json::to_vec(&json!({ "items": rows })).unwrap();
        (rows, body)
    }

    #[test]
    fn arrays_are_searched_up_to_the_member_bound() {
        let (_, body) = numbered_rows(MAX_MEMBERS + 5);
        let x = run(WatchKind::Rest, &body);
        assert_eq!(x.notifications.len(), MAX_MEMBERS);
        assert_eq!(x.notifications.last().unwrap().id, MAX_MEMBERS as u64);
        assert_eq!(x.skipped_objects, 5, "the rows past the bound are counted");
        // Past the bound on an object's members, a free-form payload that looks like a
        // notification is still not one: never searched, so not counted either.
        let mut body = String::from("{");
        for i in 0..MAX_MEMBERS {
            body.push_str(&format!(r#""k{i}":{i},"#));
        }
        body.push_str(r#""data":{"id":1,"delivery_status":5},"x":{"id":2,"delivery_status":5}}"#);
        let x = run(WatchKind::Rest, body.as_bytes());
        assert!(x.notifications.is_empty());
        assert_eq!(x.skipped_objects, 1, "only `x` is counted");
    }

    /// An object's 10,000th member is searched and its 10,001st only counted, as for arrays.
    #[test]
    fn objects_are_searched_up_to_the_member_bound() {
        let mut body = String::from("{");
        for i in 0..MAX_MEMBERS - 1 {
            body.push_str(&format!(r#""k{i}":{i},"#));
        }
        body.push_str(r#""y":{"id":1,"delivery_status":5},"z":{"id":2,"delivery_status":5}}"#);
        let x = run(WatchKind::Rest, body.as_bytes());
        assert_eq!(summary(&x), [(1, 5, None, None, None)]);
        assert_eq!(x.skipped_objects, 1, "the 10,001st member is counted");
    }

    /// A review: the GraphQL `data` object is searched up to the member bound too, and a
    /// notification answered past it is counted in `objects_skipped`, as README says of every
    /// object, rather than dropped without a trace (it also made such an answer idle for
    /// `read_lazily` when the rows before the bound were known).
    #[test]
    fn graphql_data_members_past_the_bound_are_counted_as_skipped() {
        let mut body = String::from(r#"{"data":{"#);
        for i in 0..MAX_MEMBERS {
            body.push_str(&format!(r#""a{i}":null,"#));
        }
        body.push_str(r#""z":{"id":7,"deliveryStatus":5}}}"#);
        let x = run(WatchKind::Graphql, body.as_bytes());
        assert!(x.notifications.is_empty());
        assert_eq!(x.skipped_objects, 1);
    }

    /// The rows `body` holds as `read_rows` reports them, all taken as seen.
    fn all_seen(kind: WatchKind, body: &[u8]) -> Vec<json::SeenRow> {
        read_rows(kind, body, &plain(), None, |x| {
            x.rows.iter().map(|r| r.row).collect::<Vec<_>>()
        })
        .unwrap()
    }

    /// A row that is not itself a notification is searched like any object.
    #[test]
    fn a_notification_inside_a_row_of_another_shape_is_found() {
        let body = br#"{"items": [{"node": {"id": 4, "delivery_status": 2}}, {"id": 5, "delivery_status": 2}]}"#;
        let x = run(WatchKind::Rest, body);
        let ids: Vec<u64> = x.notifications.iter().map(|n| n.id).collect();
        assert_eq!(ids, [4, 5]);
    }

    /// A seen row past the member bound is counted as skipped, as the notification it held
    /// would be.
    #[test]
    fn a_seen_row_past_the_member_bound_is_counted_as_skipped() {
        let (rows, body) = numbered_rows(MAX_MEMBERS + 1);
        let seen = all_seen(WatchKind::Rest, &numbered_rows(MAX_MEMBERS).1);
        assert_eq!(seen.len(), MAX_MEMBERS);
        // The last row, just before the closing `]}`.
        let text = serde_json::to_vec(&rows[MAX_MEMBERS]).unwrap();
        let last = json::SeenRow {
            start: body.len() - 2 - text.len(),
            end: body.len() - 2,
            ..seen[0]
        };
        assert_eq!(&body[last.start..last.end], text);
        let (skipped, taken) = read_rows(
            WatchKind::Rest,
            &body,
            &plain(),
            Some(&json::Listed(&[last])),
            |x| (x.skipped_objects, x.notifications.len()),
        )
        .unwrap();
        assert_eq!((skipped, taken), (1, MAX_MEMBERS));
    }

    /// Where a page names a notification twice, the first row wins, seen or read: a seen row
    /// first hides a later row with another state, as the row read first would.
    #[test]
    fn a_seen_row_is_the_first_sighting_of_its_notification() {
        let page = |second: u64| {
            serde_json::to_vec(&json!({"data": {"notifications": {"notifications": [
                {"id": 7, "deliveryStatus": 2}, {"id": 7, "deliveryStatus": second}]}}}))
            .unwrap()
        };
        let body = page(5);
        let seen = all_seen(WatchKind::Graphql, &body);
        assert_eq!(seen.len(), 1, "the second row is not taken: {seen:?}");
        let (taken, rows) = read_rows(
            WatchKind::Graphql,
            &body,
            &plain(),
            Some(&json::Listed(&seen)),
            |x| (x.notifications.len(), x.seen_rows()),
        )
        .unwrap();
        assert_eq!((taken, rows), (0, 1));
        // The other way round: a row read first hides a later seen row of the same
        // notification, which is neither passed over nor remembered again.
        let earlier = serde_json::to_vec(&json!({"data": {"notifications": {"notifications": [
            {"id": 8, "deliveryStatus": 5}, {"id": 7, "deliveryStatus": 2}]}}}))
        .unwrap();
        let second = all_seen(WatchKind::Graphql, &earlier)[1];
        let body = String::from_utf8(earlier.clone()).unwrap();
        let body = body.replacen(r#""id":8"#, r#""id":7"#, 1);
        assert_eq!(body.len(), earlier.len());
        let (codes, rows) = read_rows(
            WatchKind::Graphql,
            body.as_bytes(),
            &plain(),
            Some(&json::Listed(&[second])),
            |x| {
                let codes: Vec<u64> = x
                    .notifications
                    .iter()
                    .map(|n| n.delivery_status.code())
                    .collect();
                (codes, x.rows.len())
            },
        )
        .unwrap();
        assert_eq!((codes, rows), (vec![5], 1));
        // And past the rows a page is searched through linearly (the ids then go in a set),
        // a seen row still hides a later row of its notification.
        let mut rows: Vec<Value> = (1..=40)
            .map(|id| json!({"id": id, "deliveryStatus": 2}))
            .collect();
        rows.push(json!({"id": 1, "deliveryStatus": 5}));
        let body = serde_json::to_vec(&json!({"items": rows})).unwrap();
        let seen = all_seen(WatchKind::Rest, &body);
        assert_eq!(seen.len(), 40);
        let (taken, passed) = read_rows(
            WatchKind::Rest,
            &body,
            &plain(),
            Some(&json::Listed(&seen)),
            |x| (x.notifications.len(), x.seen_rows()),
        )
        .unwrap();
        assert_eq!((taken, passed), (0, 40));
    }

    /// A row read whole enough to be known on sight is remembered under its observation's
    /// identity, which a later page's row of the same bytes is passed over as; a thinner
    /// row is not remembered, since its identity is not known.
    #[test]
    fn a_row_read_whole_is_remembered_under_its_observations_identity() {
        let body = br#"{"items":[{"id":3,"delivery_status":5,"provider_id":1,"channel_type":1,"retry_count":0,"updated_on":"2026-04-20T09:16:45.310Z"},{"id":4,"delivery_status":2}]}"#;
        let (identity, remembered) = read(WatchKind::Rest, body, &plain(), |x| {
            (
                KnownEvents::identity(&x.notifications[0]),
                x.rows_to_remember(),
            )
        })
        .unwrap();
        let identity = identity.expect("the first row is whole");
        let remembered: Vec<(u64, u64)> = remembered.iter().map(|r| (r.id, r.identity)).collect();
        assert_eq!(remembered, [(3, identity)]);
    }

    /// A seen row inside a notification's payload is not one of the page's rows, and the
    /// webhook body carries it as it was written.
    #[test]
    fn a_seen_row_inside_a_payload_is_written_as_it_came() {
        let row = r#"{"id": 9, "delivery_status": 5, "provider_id": 1}"#;
        let page = format!(r#"{{"items": [{row}]}}"#);
        let seen = all_seen(WatchKind::Rest, page.as_bytes());
        let body = format!(r#"{{"id": 1, "delivery_status": 2, "data": {{"copy": [ {row} ]}}}}"#);
        let at = body.find(row).unwrap();
        let moved = [json::SeenRow {
            start: at,
            end: at + row.len(),
            depth: 3,
            ..seen[0]
        }];
        let got = read_rows(
            WatchKind::Rest,
            body.as_bytes(),
            &plain(),
            Some(&json::Listed(&moved)),
            |x| {
                let n = &x.notifications[0];
                (n.id, n.webhook_body().into_owned(), x.seen_rows())
            },
        )
        .unwrap();
        let want = extract(WatchKind::Rest, body.as_bytes(), &plain()).unwrap();
        assert_eq!(got.0, 1);
        assert_eq!(got.1, want.notifications[0].webhook_body());
        assert!(got
            .1
            .contains(r#""copy":[{"id":9,"delivery_status":5,"provider_id":1}]"#));
        assert_eq!(got.2, 0, "not a row of the page");
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
        assert!(missed.notifications.is_empty());
        assert_eq!(missed.skipped_objects, 1, "counted, not searched");
    }

    /// The depth bound counts from the REST body itself (its members are depth 1), and a
    /// JSend envelope's `data` is one of those members: a row 16 levels below the body is
    /// read, one 17 levels below only counted, with or without the envelope, whether the
    /// levels are objects or arrays.
    #[test]
    fn rest_depth_bound_counts_from_the_body() {
        let nest = |levels: usize| {
            let mut v = json!({"id": 1, "delivery_status": 1});
            for _ in 0..levels {
                v = json!({ "x": v });
            }
            v
        };
        // An array is a level as an object is.
        let in_arrays = |levels: usize| {
            let mut v = json!({"id": 1, "delivery_status": 1});
            for _ in 1..levels {
                v = json!([v]);
            }
            json!({ "x": v })
        };
        let cases = [
            (nest(MAX_DEPTH), nest(MAX_DEPTH + 1)),
            (in_arrays(MAX_DEPTH), in_arrays(MAX_DEPTH + 1)),
            (
                json!({"status": "success", "data": nest(MAX_DEPTH - 1)}),
                json!({"status": "success", "data": nest(MAX_DEPTH)}),
            ),
        ];
        for (shallow, deep) in cases {
            let found = run(WatchKind::Rest, &serde_json::to_vec(&shallow).unwrap());
            assert_eq!(found.notifications.len(), 1, "{shallow}");
            let missed = run(WatchKind::Rest, &serde_json::to_vec(&deep).unwrap());
            assert!(missed.notifications.is_empty(), "{deep}");
            assert_eq!(missed.skipped_objects, 1, "counted, not searched: {deep}");
        }
    }

    #[test]
    fn camel_case_key_wins_over_its_snake_case_twin() {
        let body = br#"{"id":1,"delivery_status":1,"provider_id":2,"providerId":3}"#;
        let x = run(WatchKind::Rest, body);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":1,"deliveryStatus":1,"providerId":3}"#
        );
        assert_eq!(x.notifications[0].provider_id, Some(3));
    }

    #[test]
    fn numbers_and_payloads_are_copied_byte_for_byte() {
        let body = br#"{"id":1,"delivery_status":1,"result":129.00,
            "data":{"price":1.50E+3,"text":"caf\u00e9 \/ \"q\"","n":[ -0 , 1e-2 ]}}"#;
        let x = run(WatchKind::Rest, body);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":1,"deliveryStatus":1,"result":129.00,"data":{"price":1.50E+3,"text":"caf\u00e9 \/ \"q\"","n":[-0,1e-2]}}"#
        );
    }

    /// A third review: a query that selected a relation (a provider's details, with its
    /// credentials in `configuration`) passed it on to receivers. The body holds only the keys
    /// OsmoX's own webhook sends.
    #[test]
    fn only_the_keys_osmox_webhook_sends_are_sent() {
        let body = br#"{"data":{"notifications":{"notifications":[{"id":7,"deliveryStatus":5,"providerDetails":{"configuration":{"SMTP_PASSWORD":"hunter2"}},"x":"made up","createdBy":"app"}]}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":7,"deliveryStatus":5,"createdBy":"app"}"#
        );
    }

    /// A review: a query that selected `__typename` passed it on to receivers.
    #[test]
    fn graphql_typename_is_not_sent() {
        let body = br#"{"data":{"notification":{"__typename":"Notification","id":502,"deliveryStatus":5}}}"#;
        let x = run(WatchKind::Graphql, body);
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":502,"deliveryStatus":5}"#
        );
    }

    /// The body as the serde_json version of the filter built it (kept here as the oracle):
    /// a preserve_order map, camelCased keys, the shadowing and repeat rules.
    fn serde_body(row: &str, id: u64) -> String {
        let obj: serde_json::Map<String, Value> = serde_json::from_str(row).unwrap();
        let mut out = serde_json::Map::new();
        if !obj.contains_key("id") {
            out.insert("id".into(), json!(id));
        }
        for (k, v) in &obj {
            let key = to_camel_case(k);
            let shadowed = key != k.as_str() && obj.contains_key(key.as_ref());
            let dropped = !WEBHOOK_KEYS.contains(&key.as_ref());
            if dropped || shadowed || out.contains_key(key.as_ref()) {
                continue;
            }
            let v = if key == "id" { json!(id) } else { v.clone() };
            out.insert(key.into_owned(), v);
        }
        serde_json::to_string(&out).unwrap()
    }

    fn snake_case(camel: &str) -> String {
        camel
            .chars()
            .flat_map(|c| {
                let lower = c.to_ascii_lowercase();
                (c.is_ascii_uppercase().then_some('_'))
                    .into_iter()
                    .chain([lower])
            })
            .collect()
    }

    #[test]
    fn webhook_body_keeps_the_serde_json_rules_for_repeated_and_twin_keys() {
        const POOL: &[&str] = &[
            r#""id":9"#,
            r#""id":10"#,
            r#""notificationId":7"#,
            r#""notification_id":7"#,
            r#""provider_id":2"#,
            r#""providerId":3"#,
            r#""created_by":1"#,
            r#""created_By":2"#,
            r#""createdBy":3"#,
            r#""result":1"#,
            r#""result":{"y_z":[1.50,"s"]}"#,
            r#""id":5"#,
            r#""created_by":6"#,
            r#""x":7"#,
            r#""updated_on":"2026-04-20T09:15:02.318Z""#,
            r#""_private":null"#,
            r#""trailing_":true"#,
            r#""__typename":"Notification""#,
        ];
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut below = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        for round in 0..600 {
            let mut members: Vec<String> = (0..below(10))
                .map(|_| POOL[below(POOL.len())].to_string())
                .collect();
            // Every other row is large enough for the sorted index.
            if round % 2 == 1 {
                for f in 0..40 {
                    let at = below(members.len() + 1);
                    let key = WEBHOOK_KEYS[f % WEBHOOK_KEYS.len()];
                    let filler = match f % 3 {
                        0 => format!(r#""k{f}":{f}"#), // not OsmoX's: dropped
                        1 => format!(r#""{key}":{f}"#),
                        _ => format!(r#""{}":{f}"#, snake_case(key)),
                    };
                    members.insert(at, filler);
                }
            }
            let row = format!("{{{}}}", members.join(","));
            let arena = json::Arena::new();
            let parsed = json::parse(row.as_bytes(), &arena).unwrap();
            let ours = webhook_body(parsed.as_object().unwrap(), 42);
            // Read back through serde_json, a key written twice would merge unseen: each
            // key is written once (the README's "a top-level key given twice is written once").
            let ours_keys: Vec<Cow<'_, str>> = json::parse(ours.as_bytes(), &arena)
                .unwrap()
                .as_object()
                .unwrap()
                .members()
                .iter()
                .map(|(k, _)| k.text())
                .collect();
            let mut unique = ours_keys.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), ours_keys.len(), "a key written twice: {ours}");
            let reread: Value = serde_json::from_str(&ours).unwrap();
            assert_eq!(
                serde_json::to_string(&reread).unwrap(),
                serde_body(&row, 42),
                "{row}"
            );
        }
    }

    /// Keys of one length and the same first and last 8 bytes share one hash: a hostile row
    /// of them is searched through the sorted index (binary search: O(n log n) for the row,
    /// not O(n²)), and the search tells them apart by their text as the plain one does.
    #[test]
    fn a_row_of_many_colliding_keys_is_searched_through_its_sorted_index() {
        let n = 3_000;
        let name = |i: usize| format!("aaaaaaaa{:08}zzzzzzzz", (i * 7919) % n);
        let texts: Vec<String> = (0..n).map(name).chain([name(7), name(11)]).collect();
        let hash = key_hash(&texts[0]);
        assert!(texts.iter().all(|t| key_hash(t) == hash));
        let keys = Keys::new(texts.iter().map(|t| Cow::Borrowed(t.as_str())));
        assert!(keys.sorted.is_some());
        let plain = Keys {
            sorted: None,
            ..Keys::new(texts.iter().map(|t| Cow::Borrowed(t.as_str())))
        };
        for t in texts
            .iter()
            .chain([&"aaaaaaaa99999999zzzzzzzz".to_string()])
        {
            assert_eq!(keys.first(hash, t), plain.first(hash, t), "{t}");
            assert_eq!(keys.last(hash, t), plain.last(hash, t), "{t}");
        }
        assert_eq!(keys.last(hash, &name(7)), Some(n));

        let mut body = String::from(r#"{"id":1,"delivery_status":2"#);
        for t in &texts {
            body.push_str(&format!(r#","{t}":0"#));
        }
        body.push('}');
        let x = run(WatchKind::Rest, body.as_bytes());
        // None of those keys is OsmoX's: the body holds only the notification's own.
        assert_eq!(
            x.notifications[0].webhook_body(),
            r#"{"id":1,"deliveryStatus":2}"#
        );
    }

    /// The HTTP context copies a body as it streams and reads it in `on_log` without asking
    /// whether the stream ended cleanly (it ignores the response's `end_of_stream`, and a
    /// reset stream still reaches `on_log` with its recorded 200): an answer cut short (the
    /// upstream gone, the client gone, a `content-length` not met) is read as what it holds. That is safe only because no prefix of an OsmoX page
    /// parses, with the rows a page before held passed over or not; only trailing blanks
    /// may go missing. A parser that closed what is open at the end, or took a page up to
    /// its last whole row, would deliver the rows of a half-seen page as the page.
    #[test]
    fn a_page_cut_short_is_never_read() {
        use crate::page_memory::PageMemory;
        let pages: [(WatchKind, Vec<u8>); 6] = [
            (WatchKind::Graphql, GQL_LIST.as_bytes().to_vec()),
            (WatchKind::Graphql, GQL_LIST_REAL.as_bytes().to_vec()),
            (WatchKind::Rest, captured_body(V8_LIST_REAL)),
            (WatchKind::Rest, V8_LIST.as_bytes().to_vec()),
            (WatchKind::Rest, V7_CREATE.as_bytes().to_vec()),
            (WatchKind::Rest, captured_body(V8_BY_ID_5)),
        ];
        let mut recalled = 0;
        for (kind, page) in pages {
            let rows = read(kind, &page, &plain(), |x| {
                assert!(!x.notifications.is_empty());
                x.rows_to_remember()
            })
            .unwrap();
            let mut memory = PageMemory::new();
            memory.remember(1, page.clone(), rows);
            let recall = memory.page(1).map(|p| p.recall(|_| true));
            recalled += usize::from(recall.is_some());
            let seen = [None, recall.as_ref().map(|r| r as &dyn json::SeenRows)];
            let whole = page.len()
                - (page
                    .iter()
                    .rev()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count());
            // Every cut just after a value or a delimiter (where a lenient parser would stop
            // cleanly), and one in 16 of the rest, in strings and numbers.
            let cuts = (0..whole).filter(|&cut| {
                cut % 16 == 0
                    || matches!(
                        page[cut - 1],
                        b'{' | b'}' | b'[' | b']' | b',' | b':' | b'"' | b'e' | b'l'
                    )
                    || page[cut - 1].is_ascii_digit() && !page[cut].is_ascii_digit()
            });
            for cut in cuts {
                for seen in seen {
                    let taken = read_rows(kind, &page[..cut], &plain(), seen, |x| {
                        x.notifications.len() + x.seen_rows()
                    });
                    assert!(
                        taken.is_err(),
                        "{kind:?} page cut at {cut} of {} read as {taken:?} rows (rows seen before passed over: {})",
                        page.len(),
                        seen.is_some()
                    );
                }
            }
            for seen in seen {
                assert!(read_rows(kind, &page[..whole], &plain(), seen, |_| ()).is_ok());
            }
        }
        assert!(
            recalled >= 2,
            "pages whose rows a later page passes over: {recalled}"
        );
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
