//! The facts of GraphQL requests a VM read before. A poller sends the same request again and
//! again; when its page changed (its `total` moved), reading the request's JSON and query
//! text anew was a tenth of what the filter spent on that poll natively.
//!
//! Keyed by a hash of the request's head and body, which together decide the facts. A
//! request sent by its persisted query's hash alone is read again every time: its facts
//! depend on whether the query's text is known, which can change between two polls.

use super::graphql::{read_graphql_request, RequestFacts, RequestHead};
use crate::events::fnv1a64;

#[derive(Debug)]
pub struct KnownRequests {
    /// Oldest first once full: the next one in goes in place of `entries[next]`.
    entries: Vec<(u64, RequestFacts)>,
    next: usize,
    capacity: usize,
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
        let key = key(head, body);
        if let Some((_, facts)) = self.entries.iter().find(|(k, _)| *k == key) {
            return facts.clone();
        }
        let recalled = std::cell::Cell::new(false);
        let recall = |hash: &str| {
            recalled.set(true);
            recall(hash)
        };
        let facts = read_graphql_request(head, body, &recall);
        if !recalled.get() {
            self.remember(key, facts.clone());
        }
        facts
    }

    fn remember(&mut self, key: u64, facts: RequestFacts) {
        if self.entries.len() < self.capacity {
            self.entries.push((key, facts));
        } else if let Some(entry) = self.entries.get_mut(self.next) {
            *entry = (key, facts);
            self.next = (self.next + 1) % self.capacity;
        }
    }
}

/// Every header that decides how the body is read, told apart from its absence, and the body.
fn key(head: &RequestHead<'_>, body: &[u8]) -> u64 {
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
    use crate::extract::Document;

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
        assert_eq!(known.facts(&json, POLL, &none).document, Document::Plain);
        assert_eq!(
            known.facts(&json, ALIASED, &none).document,
            Document::Aliased
        );
    }

    #[test]
    fn a_request_read_before_is_not_read_again_unless_it_recalled_a_text() {
        let json = head("POST", Some("application/json"));
        let mut known = KnownRequests::new(8);
        let first = known.facts(&json, BY_ID, &|_| None);
        assert_eq!(first.notification_fields.len(), 1);
        assert_eq!(known.facts(&json, BY_ID, &|_| None), first);
        assert_eq!(known.entries.len(), 1, "kept once");
        // What is kept is what is answered: the request is not read again.
        let marked = RequestFacts {
            archived: true,
            ..first.clone()
        };
        known.entries[0].1 = marked.clone();
        assert_eq!(known.facts(&json, BY_ID, &|_| None), marked);
        // Sent by hash alone: recalled every time, so a text learned later is used.
        let recalls = std::cell::Cell::new(0);
        let text = std::cell::RefCell::new(None::<String>);
        let recall = |_: &str| {
            recalls.set(recalls.get() + 1);
            text.borrow().clone()
        };
        assert_eq!(
            known.facts(&json, PERSISTED, &recall).document,
            Document::Unread
        );
        *text.borrow_mut() =
            Some("query { notifications { notifications { id deliveryStatus } } }".into());
        assert_eq!(
            known.facts(&json, PERSISTED, &recall).document,
            Document::Plain
        );
        assert_eq!(recalls.get(), 2);
        assert_eq!(known.entries.len(), 1, "hash-only requests are not kept");
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
        let keys: Vec<u64> = known.entries.iter().map(|(k, _)| *k).collect();
        let want: Vec<u64> = [&bodies[4], &bodies[3]]
            .iter()
            .map(|b| key(&json, b.as_bytes()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        let mut want_sorted = want;
        want_sorted.sort_unstable();
        assert_eq!(sorted, want_sorted);
        // Absent and empty headers are different keys.
        let empty_type = head("POST", Some(""));
        assert_ne!(key(&head("POST", None), POLL), key(&empty_type, POLL));
    }
}
