//! Automatic persisted queries (Apollo's APQ, which OsmoX's GraphQL server answers).
//!
//! Once the server has seen a query's text, a client may send the query by its SHA-256 alone.
//! Without the text the filter cannot check aliases, so it keeps the texts it sees registered
//! (sent with their hash, and not refused: `server_may_have_kept`) in shared data, where every worker can read them
//! back by hash. The table is bounded: [`BUCKETS`] keys of at most [`MAX_BUCKET_BYTES`] as
//! stored, most recent first, so a bucket that overflows forgets its oldest texts.

use std::borrow::Cow;

use crate::events::fnv1a64;
use crate::json::{self, Object, Value};
use crate::record::{Out, Reader};
use crate::store::{self, Store};

/// Keys `apq/0` … `apq/255`.
pub const BUCKETS: u64 = 256;

/// Every bucket's key, to create at configure time: shared data can CAS only a key that
/// exists, and two first writes of a missing one overwrite each other.
pub fn keys() -> impl Iterator<Item = String> {
    (0..BUCKETS).map(bucket_key)
}

/// One bucket as stored, hashes and escapes included.
pub const MAX_BUCKET_BYTES: usize = 16 * 1024;

/// A longer query text is not kept: one registration cannot take a whole bucket.
pub const MAX_TEXT_BYTES: usize = 8 * 1024;

/// Texts one bucket keeps, however short: bounds the work of a recall.
pub const MAX_TEXTS: usize = 16;

/// What a GraphQL request body says about a persisted query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persisted {
    /// `extensions.persistedQuery.sha256Hash`, as sent.
    pub hash: String,
    /// The query text sent with it (a registration), if any.
    pub query: Option<String>,
}

/// A cheap test, no parse, run on every GraphQL request: whether its body may name a
/// persisted query. A body spelling the key with escapes is missed, and its query is then
/// not kept: the safe side, as its answers are skipped rather than misread.
pub fn may_name(body: &[u8]) -> bool {
    contains(body, b"sha256Hash")
}

/// `may_name`, and the body may also carry a query text: a registration, not a poll that
/// sends the hash alone (those are spared the parse).
pub fn may_register(body: &[u8]) -> bool {
    may_name(body) && contains(body, b"\"query\"")
}

fn contains(body: &[u8], needle: &[u8]) -> bool {
    let Some(&first) = needle.first() else {
        return true;
    };
    body.iter()
        .enumerate()
        .any(|(i, b)| *b == first && body.get(i..i + needle.len()) == Some(needle))
}

/// The persisted query a request body names, if it names one.
pub fn persisted(body: &[u8]) -> Option<Persisted> {
    let arena = json::Arena::new();
    let Ok(Value::Object(request)) = json::parse(body, &arena) else {
        return None;
    };
    let hash = hash_of(&request)?;
    let query = request.get("query").and_then(Value::as_str);
    Some(Persisted {
        hash: hash.into_owned(),
        query: query.map(|q| q.into_owned()),
    })
}

/// `extensions.persistedQuery.sha256Hash` of a parsed request.
pub fn hash_of<'a>(request: &Object<'a>) -> Option<Cow<'a, str>> {
    request
        .get("extensions")
        .and_then(Value::as_object)
        .and_then(|e| e.get("persistedQuery"))
        .and_then(Value::as_object)
        .and_then(|p| p.get("sha256Hash"))
        .and_then(Value::as_str)
}

/// Whether the server may have kept the text a registration sent, by the status its answer
/// was recorded with. Apollo Server keeps a text once it parsed and validated it, before it
/// runs the operation: a 4xx refused it (no such parse, a hash or version it refuses), but
/// a 5xx (the operation threw; Envoy timed OsmoX out) or no status at all (the client went
/// before the answer) can follow a text kept. The server asks for a text only while it lacks
/// it, so a text it kept and the filter did not leaves every poll that sends its hash unread
/// until the server forgets it. Keeping one the server lacks costs a slot only: the text is
/// bound to its hash by SHA-256, so the server can run no other under it.
pub fn server_may_have_kept(status: Option<u64>) -> bool {
    match status {
        None | Some(0) => true,
        Some(s) => (200..300).contains(&s) || (500..600).contains(&s),
    }
}

/// Keep the text a request body registers, under its hash; the caller has seen an answer
/// after which the server may have kept it (`server_may_have_kept`). The hash must be the text's
/// SHA-256 in lowercase hex, as the server requires (it refuses a mismatch): otherwise a
/// client could file an innocent text under the hash of a query that renames keys. Whether
/// a text was newly kept.
pub fn remember(store: &dyn Store, body: &[u8]) -> bool {
    let Some(Persisted {
        hash,
        query: Some(query),
    }) = persisted(body)
    else {
        return false;
    };
    if query.len() > MAX_TEXT_BYTES || hash != sha256_hex(query.as_bytes()) {
        return false;
    }
    let kept = store::update(store, &key(&hash), |current| {
        // A bucket not laid out is not written: that write could not be a CAS.
        let mut kept = decode(current?).unwrap_or_default();
        if kept.iter().any(|(h, _)| *h == hash) {
            return None;
        }
        kept.insert(0, (hash.clone(), query.clone()));
        kept.truncate(MAX_TEXTS);
        let mut bytes = encode(&kept);
        while bytes.len() > MAX_BUCKET_BYTES && kept.len() > 1 {
            kept.pop();
            bytes = encode(&kept);
        }
        (bytes.len() <= MAX_BUCKET_BYTES).then_some((bytes, ()))
    });
    matches!(kept, Ok(Some(())))
}

/// The text registered under `hash`, if this table kept it.
pub fn recall(store: &dyn Store, hash: &str) -> Option<String> {
    let (bytes, _) = store.get(&key(hash)).ok()??;
    decode(&bytes)?
        .into_iter()
        .find(|(h, _)| h == hash)
        .map(|(_, q)| q)
}

fn key(hash: &str) -> String {
    bucket_key(fnv1a64(&[hash.as_bytes()]) % BUCKETS)
}

fn bucket_key(bucket: u64) -> String {
    format!(crate::shared_name!("apq/{}"), bucket)
}

/// `[["<hash>","<query>"],…]`, most recent first.
fn encode(kept: &[(String, String)]) -> Vec<u8> {
    let mut out = Out::default();
    out.begin_array();
    for (hash, query) in kept {
        out.begin_array();
        out.string(hash);
        out.string(query);
        out.end_array();
    }
    out.end_array();
    out.into_bytes()
}

fn decode(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    Reader::document(bytes, |r| {
        r.list(|r| {
            let mut pair = r.list(Reader::string)?.into_iter();
            match (pair.next(), pair.next(), pair.next()) {
                (Some(hash), Some(query), None) => Some((hash, query)),
                _ => None,
            }
        })
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(64);
    for b in hmac_sha256::Hash::hash(bytes) {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use serde_json::json;

    /// A store with the buckets laid out, as `on_configure` does.
    fn laid_out() -> MemStore {
        let store = MemStore::new();
        for k in keys() {
            store.set(&k, b"[]", None).unwrap();
        }
        store
    }

    /// Apollo's hash of a query: SHA-256 of its text, lowercase hex.
    fn registration(query: &str) -> (String, Vec<u8>) {
        let hash = sha256_hex(query.as_bytes());
        let body = json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        (hash, serde_json::to_vec(&body).unwrap())
    }

    /// A review: Apollo Server keeps a text before it runs the operation, so an answer cut
    /// short or failed after that (Envoy's 504, a resolver's throw, a client gone before the
    /// answer) follows a text the server kept and will not ask for again: kept here too, or
    /// every poll by its hash went unread. A refusal (4xx) keeps nothing, nor a redirect.
    #[test]
    fn a_text_is_kept_after_any_answer_but_a_refusal() {
        for status in [
            Some(200),
            Some(204),
            Some(299),
            Some(500),
            Some(503),
            Some(504),
        ] {
            assert!(server_may_have_kept(status), "{status:?}");
        }
        assert!(server_may_have_kept(None), "no answer recorded");
        assert!(server_may_have_kept(Some(0)), "no answer recorded");
        for status in [
            Some(100),
            Some(302),
            Some(400),
            Some(404),
            Some(413),
            Some(429),
            Some(600),
        ] {
            assert!(!server_may_have_kept(status), "{status:?}");
        }
    }

    #[test]
    fn the_hash_is_sha256_in_lowercase_hex() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_registered_text_is_recalled_by_its_hash_and_a_hash_only_body_names_it() {
        let store = laid_out();
        let query = "query { notifications { id deliveryStatus } }";
        let (hash, body) = registration(query);
        assert!(may_name(&body) && may_register(&body));
        assert!(remember(&store, &body));
        assert!(!remember(&store, &body), "kept once");
        assert_eq!(recall(&store, &hash).as_deref(), Some(query));
        let hash_only =
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        let hash_only = serde_json::to_vec(&hash_only).unwrap();
        assert!(may_name(&hash_only) && !may_register(&hash_only));
        let named = persisted(&hash_only).unwrap();
        assert_eq!((named.hash, named.query), (hash, None));
        assert_eq!(recall(&store, &"0".repeat(64)), None);
    }

    /// The server refuses a text whose hash does not match; so does this table, or a client
    /// could file an innocent text under the hash of one whose aliases rename keys.
    #[test]
    fn a_text_under_another_hash_or_in_capitals_is_not_kept() {
        let store = laid_out();
        let (other, _) = registration("query { notifications { s: deliveryStatus } }");
        let forged = json!({"query": "query { notifications { id } }",
                            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": other}}});
        assert!(!remember(&store, &serde_json::to_vec(&forged).unwrap()));
        let query = "query { notifications { id } }";
        let upper = sha256_hex(query.as_bytes()).to_uppercase();
        let shouted =
            json!({"query": query, "extensions": {"persistedQuery": {"sha256Hash": upper}}});
        assert!(!remember(&store, &serde_json::to_vec(&shouted).unwrap()));
        assert_eq!(recall(&store, &other), None);
        assert_eq!(recall(&store, &upper), None);
    }

    #[test]
    fn a_full_bucket_forgets_its_oldest_texts_and_never_exceeds_its_bound() {
        let store = laid_out();
        let texts: Vec<String> = (0..1000)
            .map(|i| {
                format!(
                    "query Q{i} {{ notifications {{ id {} }}}}",
                    "x ".repeat(3000)
                )
            })
            .collect();
        let mut hashes = Vec::new();
        for t in &texts {
            let (hash, body) = registration(t);
            assert!(remember(&store, &body));
            hashes.push(hash);
        }
        for b in 0..BUCKETS {
            if let Some((bytes, _)) = store.get(&bucket_key(b)).unwrap() {
                let kept = decode(&bytes).unwrap();
                let len: usize = kept.iter().map(|(_, q)| q.len()).sum();
                assert!(len <= MAX_BUCKET_BYTES, "bucket {b}: {len} bytes");
            }
        }
        // Each text is about 6 KB, so a bucket keeps the last two filed in it.
        let mut later_in_bucket = std::collections::HashMap::<String, usize>::new();
        for (hash, text) in hashes.iter().zip(&texts).rev() {
            let later = later_in_bucket.entry(key(hash)).or_default();
            let expected = (*later < 2).then_some(text);
            assert_eq!(
                recall(&store, hash).as_ref(),
                expected,
                "{later} filed later"
            );
            *later += 1;
        }
        assert!(
            later_in_bucket.values().any(|n| *n > 2),
            "the scenario overflows buckets"
        );
        let too_long = format!(
            "query {{ notifications {{ id }} }} #{}",
            "x".repeat(MAX_BUCKET_BYTES)
        );
        assert!(!remember(&store, &registration(&too_long).1));
    }

    #[test]
    fn bodies_that_name_no_persisted_query_are_not_taken_for_one() {
        let store = laid_out();
        for body in [
            br#"{"query":"{ notifications { id } }"}"#.as_slice(),
            br#"{"extensions":{"persistedQuery":{"sha256Hash":7}}}"#,
            br#"{"extensions":{"persistedQuery":"x"}}"#,
            b"not json",
        ] {
            assert_eq!(persisted(body), None);
            assert!(!remember(&store, body));
        }
        assert!(!may_name(br#"{"query":"{ notifications { id } }"}"#));
        // Buckets not laid out are not written: that write could not be a CAS.
        let (_, body) = registration("{ notifications { deliveryStatus } }");
        assert!(!remember(&MemStore::new(), &body));
        // A corrupt bucket is read as empty and written afresh.
        let (hash, body) = registration("{ notifications { id } }");
        store.set(&key(&hash), b"[[1]]", None).unwrap();
        assert_eq!(recall(&store, &hash), None);
        assert!(remember(&store, &body));
        assert!(recall(&store, &hash).is_some());
    }

    /// A review: the bound once counted only text bytes, so a bucket of short texts that
    /// escape to `\u00XX` held ten times it in shared data. It counts the stored form now.
    #[test]
    fn a_bucket_of_short_escaped_texts_stays_within_its_bound_as_stored() {
        let store = laid_out();
        let alphabet: Vec<char> = (1u8..0x20)
            .filter(|b| ![8u8, 9, 10, 12, 13].contains(b))
            .map(char::from)
            .collect();
        let target = key(&sha256_hex(b"seed"));
        let n = alphabet.len();
        let mut filed = 0;
        for i in 0..n * n * n {
            let text: String = [i % n, i / n % n, i / n / n % n]
                .iter()
                .map(|d| alphabet[*d])
                .collect();
            let hash = sha256_hex(text.as_bytes());
            if key(&hash) == target {
                let body =
                    json!({"query": text, "extensions": {"persistedQuery": {"sha256Hash": hash}}});
                filed += usize::from(remember(&store, &serde_json::to_vec(&body).unwrap()));
            }
        }
        let (bytes, _) = store.get(&target).unwrap().unwrap();
        let kept = decode(&bytes).unwrap();
        assert!(
            filed > MAX_TEXTS,
            "the scenario overflows the bucket: {filed}"
        );
        assert!(bytes.len() <= MAX_BUCKET_BYTES, "{} bytes", bytes.len());
        assert_eq!(kept.len(), MAX_TEXTS);
    }

    /// A review: registrations by two workers into one bucket at once keep both texts (a
    /// write that lost the race reads again).
    #[test]
    fn concurrent_registrations_in_one_bucket_are_both_kept() {
        use crate::store::{Cas, StoreError};
        use std::cell::RefCell;
        struct Racy<'a> {
            inner: &'a MemStore,
            meanwhile: RefCell<Option<Vec<u8>>>,
        }
        impl Store for Racy<'_> {
            fn get(&self, k: &str) -> Result<Option<(Vec<u8>, Cas)>, StoreError> {
                let read = self.inner.get(k);
                if let Some(other) = self.meanwhile.borrow_mut().take() {
                    assert!(remember(self.inner, &other)); // another worker, in between
                }
                read
            }
            fn set(&self, k: &str, v: &[u8], cas: Option<Cas>) -> Result<(), StoreError> {
                self.inner.set(k, v, cas)
            }
        }
        let a = "query A { notifications { notifications { id } } }";
        let (ha, body_a) = registration(a);
        let b = (0..)
            .map(|i| format!("query B{i} {{ notifications {{ notifications {{ id }} }} }}"))
            .find(|t| key(&sha256_hex(t.as_bytes())) == key(&ha))
            .unwrap();
        let (hb, body_b) = registration(&b);
        let inner = laid_out();
        let racy = Racy {
            inner: &inner,
            meanwhile: RefCell::new(Some(body_b)),
        };
        assert!(remember(&racy, &body_a));
        assert_eq!(recall(&inner, &ha).as_deref(), Some(a));
        assert_eq!(
            recall(&inner, &hb).as_deref(),
            Some(b.as_str()),
            "B was lost"
        );
    }

    /// A text already kept is not kept again (nor counted), wherever it sits in its bucket.
    #[test]
    fn a_text_kept_anywhere_in_its_bucket_is_not_kept_twice() {
        let store = laid_out();
        let a = "query A { notifications { id } }";
        let (ha, body_a) = registration(a);
        let b = (0..)
            .map(|i| format!("query B{i} {{ notifications {{ id }} }}"))
            .find(|t| key(&sha256_hex(t.as_bytes())) == key(&ha))
            .unwrap();
        assert!(remember(&store, &body_a));
        assert!(remember(&store, &registration(&b).1));
        assert!(!remember(&store, &body_a));
        let (bytes, _) = store.get(&key(&ha)).unwrap().unwrap();
        assert_eq!(decode(&bytes).unwrap().len(), 2);
    }

    /// Mutation review: the 8 KiB bound on a text holds on its own, below the bucket bound.
    #[test]
    fn a_text_over_max_text_bytes_is_not_kept() {
        let store = laid_out();
        let q = "query { notifications { id } } #";
        let long = format!("{q}{}", "x".repeat(MAX_TEXT_BYTES));
        assert!(long.len() > MAX_TEXT_BYTES && long.len() + 200 < MAX_BUCKET_BYTES);
        assert!(!remember(&store, &registration(&long).1));
        let fits = format!("{q}{}", "x".repeat(MAX_TEXT_BYTES - q.len()));
        assert!(remember(&store, &registration(&fits).1));
    }

    /// Mutation review: a text within 8 KiB whose stored form (quotes escaped) exceeds a
    /// bucket is not kept, and the bucket stays within its bound.
    #[test]
    fn a_text_whose_stored_form_exceeds_a_bucket_is_not_kept() {
        let store = laid_out();
        let q = "{ notifications { id } } #";
        let text = format!("{q}{}", "\"".repeat(MAX_TEXT_BYTES - q.len() - 6));
        assert!(text.len() <= MAX_TEXT_BYTES);
        let (hash, body) = registration(&text);
        assert!(!remember(&store, &body));
        let (bytes, _) = store.get(&key(&hash)).unwrap().unwrap();
        assert!(bytes.len() <= MAX_BUCKET_BYTES, "{} bytes", bytes.len());
    }

    /// A bucket whose stored form comes to exactly its bound is within it: no text is
    /// forgotten to make room that was not needed.
    #[test]
    fn a_bucket_filled_to_exactly_its_bound_keeps_every_text() {
        let store = laid_out();
        let padded = |head: String, len: usize| format!("{head}{}", "x".repeat(len - head.len()));
        let a = padded("query A { notifications { id } } #".into(), 8_100);
        let (ha, body_a) = registration(&a);
        // `[["<hash>","<text>"],["<hash>","<text>"]]`: 145 bytes besides the two texts.
        let rest = MAX_BUCKET_BYTES - 145 - a.len();
        let b = (0..)
            .map(|i| padded(format!("query B{i} {{ notifications {{ id }} }} #"), rest))
            .find(|t| key(&sha256_hex(t.as_bytes())) == key(&ha))
            .unwrap();
        assert!(remember(&store, &body_a));
        assert!(remember(&store, &registration(&b).1));
        let (bytes, _) = store.get(&key(&ha)).unwrap().unwrap();
        assert_eq!(bytes.len(), MAX_BUCKET_BYTES);
        assert_eq!(recall(&store, &ha).as_deref(), Some(a.as_str()));
    }

    /// Mutation review: texts spread over all the buckets, so the table keeps far more than
    /// one bucket's `MAX_TEXTS`.
    #[test]
    fn the_table_keeps_more_texts_than_one_bucket_holds() {
        let store = laid_out();
        let regs: Vec<_> = (0..4 * MAX_TEXTS)
            .map(|i| registration(&format!("query Q{i} {{ notifications {{ id }} }}")))
            .collect();
        for (_, body) in &regs {
            assert!(remember(&store, body));
        }
        for (hash, _) in &regs {
            assert!(recall(&store, hash).is_some(), "{hash} forgotten");
        }
    }
}
