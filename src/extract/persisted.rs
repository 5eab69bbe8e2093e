//! Automatic persisted queries (Apollo's APQ, which OsmoX's GraphQL server answers).
//!
//! Once the server has seen a query's text, a client may send the query by its SHA-256 alone.
//! Without the text the filter cannot check aliases, so it keeps the texts it sees registered
//! (sent with their hash) in shared data, where every worker can read them back by hash. The
//! table is bounded: [`BUCKETS`] keys of at most [`MAX_BUCKET_BYTES`] each, most recent
//! first, so a bucket that overflows forgets its oldest texts.

use crate::events::fnv1a64;
use std::borrow::Cow;

use crate::json::{self, Object, Value};
use crate::record::{Out, Reader};
use crate::store::Store;

/// Keys `apq/0` … `apq/255`.
pub const BUCKETS: u64 = 256;

/// The texts one bucket keeps, in bytes; a longer query is not kept.
pub const MAX_BUCKET_BYTES: usize = 16 * 1024;

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
    const NEEDLE: &[u8] = b"sha256Hash";
    body.iter()
        .enumerate()
        .any(|(i, b)| *b == b's' && body.get(i..i + NEEDLE.len()) == Some(NEEDLE))
}

/// The persisted query a request body names, if it names one.
pub fn persisted(body: &[u8]) -> Option<Persisted> {
    let Ok(Value::Object(request)) = json::parse(body) else {
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

/// Keep the text a request body registers, under its hash. The hash must be the text's
/// SHA-256 in lowercase hex, as the server requires (it refuses a mismatch): otherwise a
/// client could file an innocent text under the hash of a query that renames keys. Whether
/// a text was kept (false also when it was already there).
pub fn remember(store: &dyn Store, body: &[u8]) -> bool {
    let Some(Persisted {
        hash,
        query: Some(query),
    }) = persisted(body)
    else {
        return false;
    };
    if query.len() > MAX_BUCKET_BYTES || hash != sha256_hex(query.as_bytes()) {
        return false;
    }
    let key = key(&hash);
    let mut kept = match store.get(&key) {
        Ok(Some((bytes, _))) => decode(&bytes).unwrap_or_default(),
        Ok(None) => Vec::new(),
        Err(_) => return false,
    };
    if kept.first().is_some_and(|(h, _)| *h == hash) {
        return false;
    }
    kept.retain(|(h, _)| *h != hash);
    kept.insert(0, (hash, query));
    let mut room = MAX_BUCKET_BYTES;
    kept.retain(|(_, q)| match room.checked_sub(q.len()) {
        Some(left) => {
            room = left;
            true
        }
        None => {
            room = 0;
            false
        }
    });
    // Last writer wins: a text lost to a concurrent registration is registered again the
    // next time the server asks for it.
    store.set(&key, &encode(&kept), None).is_ok()
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
    format!("apq/{}", fnv1a64(&[hash.as_bytes()]) % BUCKETS)
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

    /// Apollo's hash of a query: SHA-256 of its text, lowercase hex.
    fn registration(query: &str) -> (String, Vec<u8>) {
        let hash = sha256_hex(query.as_bytes());
        let body = json!({"query": query, "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        (hash, serde_json::to_vec(&body).unwrap())
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
        let store = MemStore::new();
        let query = "query { notifications { id deliveryStatus } }";
        let (hash, body) = registration(query);
        assert!(may_name(&body));
        assert!(remember(&store, &body));
        assert!(!remember(&store, &body), "kept once");
        assert_eq!(recall(&store, &hash).as_deref(), Some(query));
        let hash_only =
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}});
        let named = persisted(&serde_json::to_vec(&hash_only).unwrap()).unwrap();
        assert_eq!((named.hash, named.query), (hash, None));
        assert_eq!(recall(&store, &"0".repeat(64)), None);
    }

    /// The server refuses a text whose hash does not match; so does this table, or a client
    /// could file an innocent text under the hash of one whose aliases rename keys.
    #[test]
    fn a_text_under_another_hash_or_in_capitals_is_not_kept() {
        let store = MemStore::new();
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
        let store = MemStore::new();
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
            if let Some((bytes, _)) = store.get(&format!("apq/{b}")).unwrap() {
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
        let store = MemStore::new();
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
        // A corrupt bucket is read as empty and written afresh.
        let (hash, body) = registration("{ notifications { id } }");
        store.set(&key(&hash), b"[[1]]", None).unwrap();
        assert_eq!(recall(&store, &hash), None);
        assert!(remember(&store, &body));
        assert!(recall(&store, &hash).is_some());
    }
}
