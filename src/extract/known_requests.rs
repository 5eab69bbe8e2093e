//! The facts of GraphQL requests a VM read before. A poller sends the same request again and
//! again; when its page changed (its `total` moved), reading the request's JSON and query
//! text anew was a tenth of what the filter spent on that poll natively.
//!
//! A request is known by its head (the headers that decide how its body is read) and body,
//! byte for byte: a hash only finds the candidate. Matching on a hash alone let a client who
//! computed an FNV collision between two bodies of its own have an aliased query read with a
//! plain one's facts (a review did, in six minutes of one core). A request sent by its
//! persisted query's hash alone is read again every time: its facts depend on whether the
//! query's text is known, which can change between two polls.

use super::graphql::{read_graphql_request, RequestFacts, RequestHead};
use crate::events::fnv1a64;

/// The most a kept request holds, its body and the values of its head together: a poll's
/// query is a few hundred bytes, and each kept request holds a copy of its body and head.
const MAX_KEPT_BYTES: usize = 16 * 1024;

#[derive(Debug)]
pub struct KnownRequests {
    /// In the order kept until full; from then on `entries[next]` is the oldest, and the next
    /// one in takes its place.
    entries: Vec<Known>,
    next: usize,
    capacity: usize,
}

#[derive(Debug)]
struct Known {
    hash: u64,
    method: Option<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    content_encoding: Option<Vec<u8>>,
    body: Vec<u8>,
    facts: RequestFacts,
}

impl Known {
    fn is(&self, hash: u64, head: &RequestHead<'_>, body: &[u8]) -> bool {
        self.hash == hash
            && self.method.as_deref() == head.method
            && self.content_type.as_deref() == head.content_type
            && self.content_encoding.as_deref() == head.content_encoding
            && self.body == body
    }
}

impl KnownRequests {
    pub fn new(capacity: usize) -> Self {
        KnownRequests {
            entries: Vec::new(),
            next: 0,
            capacity: capacity.max(1),
        }
    }

    /// What [`read_graphql_request`] says of `head` and `body`, read only for a request this
    /// memory does not hold.
    pub fn facts(
        &mut self,
        head: &RequestHead<'_>,
        body: &[u8],
        recall: &dyn Fn(&str) -> Option<String>,
    ) -> RequestFacts {
        let hash = hash(head, body);
        if let Some(known) = self.entries.iter().find(|k| k.is(hash, head, body)) {
            return known.facts.clone();
        }
        let recalled = std::cell::Cell::new(false);
        let recall = |hash: &str| {
            recalled.set(true);
            recall(hash)
        };
        let facts = read_graphql_request(head, body, &recall);
        let head_len = [head.method, head.content_type, head.content_encoding]
            .iter()
            .map(|v| v.map_or(0, <[u8]>::len))
            .sum::<usize>();
        if !recalled.get() && body.len().saturating_add(head_len) <= MAX_KEPT_BYTES {
            self.remember(Known {
                hash,
                method: head.method.map(<[u8]>::to_vec),
                content_type: head.content_type.map(<[u8]>::to_vec),
                content_encoding: head.content_encoding.map(<[u8]>::to_vec),
                body: body.to_vec(),
                facts: facts.clone(),
            });
        }
        facts
    }

    fn remember(&mut self, known: Known) {
        if self.entries.len() < self.capacity {
            self.entries.push(known);
        } else if let Some(entry) = self.entries.get_mut(self.next) {
            *entry = known;
            self.next = (self.next + 1) % self.capacity;
        }
    }
}

/// Where to look first: every header that decides how the body is read, told apart from its
/// absence, and the body.
fn hash(head: &RequestHead<'_>, body: &[u8]) -> u64 {
    let present = |v: Option<&[u8]>| [u8::from(v.is_some())];
    let (m, t, e) = (head.method, head.content_type, head.content_encoding);
    fnv1a64(&[
        &present(m),
        m.unwrap_or_default(),
        &present(t),
        t.unwrap_or_default(),
        &present(e),
        e.unwrap_or_default(),
        body,
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::QueryFacts;

    const POLL: &[u8] = br#"{"query":"query { notifications(options: {limit: 10}) { notifications { id deliveryStatus } total } }"}"#;
    const ALIASED: &[u8] = br#"{"query":"query { notifications { notifications { id deliveryStatus: channelType } } }"}"#;
    const BY_ID: &[u8] =
        br#"{"query":"query($n: Float!) { notification(notificationId: $n) { id deliveryStatus } }","variables":{"n":7}}"#;
    const PERSISTED: &[u8] =
        br#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"ab12"}}}"#;

    fn head<'a>(method: &'a str, content_type: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method: Some(method.as_bytes()),
            content_type: content_type.map(str::as_bytes),
            content_encoding: None,
        }
    }

    #[test]
    fn answers_as_reading_the_request_does_however_often_it_comes() {
        let none = |_: &str| None;
        let heads = [
            head("POST", Some("application/json")),
            head("POST", None),
            head("GET", Some("application/json")),
            head("POST", Some("application/x-www-form-urlencoded")),
            RequestHead {
                content_encoding: Some(b"gzip"),
                ..head("POST", Some("application/json"))
            },
        ];
        let mut known = KnownRequests::new(4);
        // Every request three times, interleaved, through a memory smaller than them all.
        for _ in 0..3 {
            for h in &heads {
                for body in [POLL, ALIASED, BY_ID, b"{", b""] {
                    let want = read_graphql_request(h, body, &none);
                    assert_eq!(known.facts(h, body, &none), want, "{h:?} {body:?}");
                }
            }
        }
        let json = head("POST", Some("application/json"));
        assert!(matches!(
            known.facts(&json, POLL, &none),
            RequestFacts::Plain(_)
        ));
        assert_eq!(known.facts(&json, ALIASED, &none), RequestFacts::Aliased);
    }

    #[test]
    fn a_request_read_before_is_not_read_again_unless_it_recalled_a_text() {
        let json = head("POST", Some("application/json"));
        let mut known = KnownRequests::new(8);
        let first = known.facts(&json, BY_ID, &|_| None);
        let Some(query) = first.plain() else {
            panic!("not a plain query: {first:?}");
        };
        assert_eq!(query.notification_fields.len(), 1);
        assert_eq!(known.facts(&json, BY_ID, &|_| None), first);
        assert_eq!(known.entries.len(), 1, "kept once");
        // What is kept is what is answered: the request is not read again.
        let marked = RequestFacts::Plain(QueryFacts {
            archived_keys: vec!["archivedNotifications".to_string()],
            ..query.clone()
        });
        known.entries[0].facts = marked.clone();
        assert_eq!(known.facts(&json, BY_ID, &|_| None), marked);
        // Sent by hash alone: recalled every time, so a text learned later is used.
        let recalls = std::cell::Cell::new(0);
        let text = std::cell::RefCell::new(None::<String>);
        let recall = |_: &str| {
            recalls.set(recalls.get() + 1);
            text.borrow().clone()
        };
        assert_eq!(known.facts(&json, PERSISTED, &recall), RequestFacts::Unread);
        *text.borrow_mut() =
            Some("query { notifications { notifications { id deliveryStatus } } }".into());
        assert!(matches!(
            known.facts(&json, PERSISTED, &recall),
            RequestFacts::Plain(_)
        ));
        assert_eq!(recalls.get(), 2);
        assert_eq!(known.entries.len(), 1, "hash-only requests are not kept");
    }

    /// A review computed two bodies with the same FNV hash, one plain and one aliasing
    /// `deliveryStatus: channelType`: matched on the hash alone, the second was read with the
    /// first's facts, and OsmoX's answer to it sent a forged webhook.
    #[test]
    fn a_crafted_hash_collision_is_read_as_itself() {
        let json = head("POST", Some("application/json"));
        let plain: &[u8] = br#"{"query":"query { notifications { notifications { id deliveryStatus } } } #I22CGgLkDXH"}"#;
        let aliased: &[u8] = br#"{"query":"query { notifications { notifications { id deliveryStatus: channelType } } } #NAviJWskT3L"}"#;
        let none = |_: &str| None;
        assert_eq!(
            hash(&json, plain),
            hash(&json, aliased),
            "the hashes collide"
        );
        let mut known = KnownRequests::new(32);
        assert!(matches!(
            known.facts(&json, plain, &none),
            RequestFacts::Plain(_)
        ));
        assert_eq!(known.facts(&json, aliased, &none), RequestFacts::Aliased);
        assert!(matches!(
            known.facts(&json, plain, &none),
            RequestFacts::Plain(_)
        ));
        assert_eq!(known.entries.len(), 2);
    }

    /// The same for a collision that differs in the head (a review: the body alone was
    /// checked, so a kept request matched whatever its head said).
    #[test]
    fn a_kept_request_is_its_head_as_well_as_its_body() {
        let json = RequestHead::JSON_POST;
        let body: &[u8] = b"{}";
        let kept = Known {
            hash: 7,
            method: json.method.map(<[u8]>::to_vec),
            content_type: json.content_type.map(<[u8]>::to_vec),
            content_encoding: None,
            body: body.to_vec(),
            facts: RequestFacts::Aliased,
        };
        assert!(kept.is(7, &json, body));
        assert!(!kept.is(8, &json, body));
        assert!(!kept.is(7, &json, b"[]"));
        for other in [
            RequestHead {
                method: Some(b"GET"),
                ..json
            },
            RequestHead {
                content_type: Some(b"text/plain"),
                ..json
            },
            RequestHead {
                content_encoding: Some(b"gzip"),
                ..json
            },
        ] {
            assert!(!kept.is(7, &other, body), "{other:?}");
        }
    }

    #[test]
    fn a_large_body_is_read_every_time_and_not_kept() {
        let json = head("POST", Some("application/json"));
        let padding = " ".repeat(MAX_KEPT_BYTES);
        let big = format!(
            r#"{{"query":"query {{ notifications {{ notifications {{ id }} }} }}"{padding}}}"#
        );
        let mut known = KnownRequests::new(4);
        let facts = known.facts(&json, big.as_bytes(), &|_| None);
        assert!(matches!(facts, RequestFacts::Plain(_)));
        assert!(known.entries.is_empty());
    }

    /// The README's bound: a request is kept when its body and head come to at most 16 KiB
    /// together, so a poll with a query of some KiB is not read anew each time.
    #[test]
    fn a_request_of_16_kib_head_included_is_kept_and_one_byte_more_is_not() {
        let bound = 16 * 1024;
        let json = head("POST", Some("application/json"));
        let head_len = "POST".len() + "application/json".len();
        let query = r#"{"query":"query { notifications { notifications { id } } }""#;
        let body = |len: usize| format!("{query}{}}}", " ".repeat(len - query.len() - 1));
        let mut known = KnownRequests::new(4);
        let over = body(bound - head_len + 1);
        assert!(matches!(
            known.facts(&json, over.as_bytes(), &|_| None),
            RequestFacts::Plain(_)
        ));
        assert!(known.entries.is_empty(), "one byte over the bound");
        let at = body(bound - head_len);
        assert_eq!(at.len() + head_len, bound);
        assert!(matches!(
            known.facts(&json, at.as_bytes(), &|_| None),
            RequestFacts::Plain(_)
        ));
        assert_eq!(known.entries.len(), 1, "at the bound: kept");
    }

    /// What a kept request holds: its body and its head's values.
    fn held(k: &Known) -> usize {
        let len = |v: &Option<Vec<u8>>| v.as_ref().map_or(0, Vec::len);
        k.body.len() + len(&k.method) + len(&k.content_type) + len(&k.content_encoding)
    }

    /// A review: only the body was bounded, so requests whose heads carry long values (a
    /// `content-type` with a parameter of tens of KiB, which Envoy passes up to its header
    /// limit of 60 KiB by default, 8 MiB at most) each kept all of it, 32 times over: far
    /// past the README's bound on this memory. What a request keeps, head and body, is
    /// bounded together.
    #[test]
    fn a_kept_request_holds_at_most_max_kept_body_head_included() {
        let long_type = format!("application/json; x={}", "y".repeat(60 * 1024));
        let long = RequestHead {
            method: Some(b"POST"),
            content_type: Some(long_type.as_bytes()),
            content_encoding: None,
        };
        let mut known = KnownRequests::new(4);
        for i in 0..8 {
            let body = format!(
                r#"{{"query":"query {{ notifications(options: {{limit: {i}}}) {{ notifications {{ id }} }} }}"}}"#
            );
            let want = read_graphql_request(&long, body.as_bytes(), &|_| None);
            assert!(matches!(want, RequestFacts::Plain(_)));
            assert_eq!(known.facts(&long, body.as_bytes(), &|_| None), want);
            let over = known.entries.iter().map(held).max().unwrap_or(0);
            assert!(over <= MAX_KEPT_BYTES, "a kept request holds {over} bytes");
        }
        // A short head is kept as before.
        let json = head("POST", Some("application/json"));
        known.facts(&json, POLL, &|_| None);
        assert!(known
            .entries
            .iter()
            .any(|k| k.is(hash(&json, POLL), &json, POLL)));
    }

    #[test]
    fn the_oldest_request_makes_room() {
        let json = head("POST", Some("application/json"));
        let mut known = KnownRequests::new(2);
        let bodies: Vec<String> = (0..5)
            .map(|i| format!(r#"{{"query":"query {{ notifications(options: {{limit: {i}}}) {{ notifications {{ id }} }} }}"}}"#))
            .collect();
        for b in &bodies {
            known.facts(&json, b.as_bytes(), &|_| None);
        }
        let keys: Vec<u64> = known.entries.iter().map(|k| k.hash).collect();
        let want: Vec<u64> = [&bodies[4], &bodies[3]]
            .iter()
            .map(|b| hash(&json, b.as_bytes()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        let mut want_sorted = want;
        want_sorted.sort_unstable();
        assert_eq!(sorted, want_sorted);
        // Absent and empty headers are different keys.
        let empty_type = head("POST", Some(""));
        assert_ne!(hash(&head("POST", None), POLL), hash(&empty_type, POLL));
    }
}
