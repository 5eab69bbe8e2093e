//! Native fuzzing of the entry points that take untrusted bytes: response and request bodies,
//! the configuration, and the shared-data records other builds or a crashed VM may have left.
//! In the module a panic aborts the VM, so none of these may panic on any input.
//!
//! A mutator over seeds (the OsmoX fixtures, the README's configurations, the pinned shared
//! data), without coverage feedback: inputs a target accepts join the corpus. Run in a debug
//! build, where an arithmetic overflow panics too. Ignored by `cargo test`; run them with
//! `FUZZ_ITERS=100000 cargo test --lib fuzz:: -- --ignored --nocapture` (`FUZZ_SEED` varies
//! the run). A crash is minimized and printed, ready to become a unit test.

use std::panic::{self, AssertUnwindSafe};

use crate::config::Config;
use crate::delivery::ledger::Ledger;
use crate::delivery::live_endpoints::{self, LiveEndpoints};
use crate::delivery::outcome::AttemptResponse;
use crate::delivery::peers;
use crate::delivery::sender::{Dispatch, Io, Sender};
use crate::events::{KnownEvents, Memory};
use crate::extract::{
    self, may_register, persisted, read_graphql_request, NotificationField, QueryFacts,
    RequestFacts, RequestHead, WatchKind,
};
use crate::json;
use crate::layout::LaidOut;
use crate::learn::Registry;
use crate::metrics::CountingMetrics;
use crate::store::{MemStore, Store};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Tokens that mean something to the parsers, spliced in whole.
const DICT: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    ":",
    "\\",
    "\\u",
    "\\ud800",
    "\\udc00",
    "\\u0000",
    "null",
    "true",
    "false",
    "-",
    "0",
    "-0",
    "1e999",
    "1e-999",
    "1.5",
    "5.0",
    "1E7",
    "4294967295",
    "4294967296",
    "9007199254740993",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999999",
    "\"id\"",
    "\"deliveryStatus\"",
    "\"delivery_status\"",
    "\"notificationId\"",
    "\"notification_id\"",
    "\"retryCount\"",
    "\"updatedOn\"",
    "\"providerId\"",
    "\"channelType\"",
    "\"result\"",
    "\"data\"",
    "\"status\"",
    "\"success\"",
    "\"notifications\"",
    "\"archivedNotifications\"",
    "\"notification\"",
    "\"webhook\"",
    "\"webhookUrl\"",
    "\"webhook_url\"",
    "\"query\"",
    "\"variables\"",
    "\"operationName\"",
    "\"extensions\"",
    "\"persistedQuery\"",
    "\"sha256Hash\"",
    "notification(notificationId: ",
    "$id",
    "mutation",
    "query",
    "fragment",
    "on",
    "...",
    "@skip",
    "a: ",
    "\"\"\"",
    "\"2026-04-20T09:15:01.000Z\"",
    "\"2026-04-20 09:15:01\"",
    "http://",
    "https://",
    "\"endpoints\"",
    "\"url\"",
    "\"cluster\"",
    "\"retry\"",
    "\"maxAttempts\"",
    "\"initialDelayMs\"",
    "\"multiplier\"",
    "\"maxDelayMs\"",
    "\"jitter\"",
    "\"rateLimit\"",
    "\"perSecond\"",
    "\"burst\"",
    "\"limits\"",
    "\"maxPending\"",
    "\"maxRemembered\"",
    "\"timeoutMs\"",
    "\"circuit\"",
    "\"learn\"",
    "\"allowHosts\"",
    "\"tickMs\"",
    "\"secret\"",
    "\"secrets\"",
    "\"schedule\"",
    "\"s\"",
    "\"at\"",
    "\"g\"",
    "\"n\"",
    "\"a\"",
    "\"h\"",
    "\"nx\"",
    "\"u\"",
    "\"l\"",
    "\"r\"",
    "\"p\"",
    "\"w\"",
    "\"since\"",
    "\"stale\"",
    "\"src\"",
    "\"names\"",
    "\n",
    " ",
    "é",
    "😀",
    "\u{0}",
    "\u{ff}",
];

fn mutate(rng: &mut Rng, corpus: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut m = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(m.len() + 1);
        match rng.below(9) {
            0 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] ^= 1 << rng.below(8);
            }
            1 if !m.is_empty() => {
                let i = rng.below(m.len());
                m[i] = rng.next() as u8;
            }
            2 | 3 => {
                let token = DICT[rng.below(DICT.len())].as_bytes();
                m.splice(at..at, token.iter().copied());
            }
            4 if !m.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(m.len());
                m.drain(at.min(end)..end);
            }
            5 if !m.is_empty() => {
                let start = rng.below(m.len());
                let end = (start + 1 + rng.below(64)).min(m.len());
                let piece = m[start..end].to_vec();
                m.splice(at..at, piece);
            }
            6 => {
                let other = &corpus[rng.below(corpus.len())];
                if !other.is_empty() {
                    let start = rng.below(other.len());
                    let end = (start + 1 + rng.below(256)).min(other.len());
                    m.splice(at..at, other[start..end].iter().copied());
                }
            }
            7 if !m.is_empty() => {
                // A number replaced by an extreme one.
                let start = rng.below(m.len());
                if let Some(d) = m[start..].iter().position(u8::is_ascii_digit) {
                    let s = start + d;
                    let e = s + m[s..].iter().take_while(|b| b.is_ascii_digit()).count();
                    let n = [
                        "0",
                        "1",
                        "18446744073709551615",
                        "4294967295",
                        "9999999999999",
                    ];
                    m.splice(s..e, n[rng.below(n.len())].bytes());
                }
            }
            _ => {
                let i = rng.below(m.len() + 1);
                m.insert(i, rng.next() as u8);
            }
        }
    }
    m.truncate(1 << 16);
    m
}

fn panics(target: &dyn Fn(&[u8]) -> bool, input: &[u8]) -> bool {
    panic::catch_unwind(AssertUnwindSafe(|| target(input))).is_err()
}

/// The input cut down, chunk by chunk, to what still panics.
fn minimize(target: &dyn Fn(&[u8]) -> bool, input: &[u8]) -> Vec<u8> {
    let mut best = input.to_vec();
    let mut chunk = best.len().max(1);
    while chunk > 0 {
        let mut i = 0;
        while i < best.len() {
            let mut shorter = best.clone();
            shorter.drain(i..(i + chunk).min(best.len()));
            if panics(target, &shorter) {
                best = shorter;
            } else {
                i += chunk;
            }
        }
        chunk /= 2;
    }
    best
}

/// Run `target` on `FUZZ_ITERS` mutated inputs; true from the target adds the input to the
/// corpus.
fn run(name: &str, seeds: Vec<Vec<u8>>, target: impl Fn(&[u8]) -> bool) {
    let iters: usize = std::env::var("FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let seed: u64 = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut rng = Rng(seed | 1);
    let mut corpus = seeds;
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    for seed in corpus.clone() {
        check(name, &target, &seed);
    }
    let mut accepted = 0usize;
    for _ in 0..iters {
        let base = corpus[rng.below(corpus.len())].clone();
        let input = mutate(&mut rng, &corpus, &base);
        if check(name, &target, &input) {
            accepted += 1;
            if corpus.len() < 4096 && rng.below(4) == 0 {
                corpus.push(input);
            } else if rng.below(8) == 0 {
                let i = rng.below(corpus.len());
                corpus[i] = input;
            }
        }
    }
    eprintln!(
        "fuzz {name}: {iters} inputs, {accepted} accepted, corpus {}",
        corpus.len()
    );
}

fn check(name: &str, target: &impl Fn(&[u8]) -> bool, input: &[u8]) -> bool {
    match panic::catch_unwind(AssertUnwindSafe(|| target(input))) {
        Ok(accepted) => accepted,
        Err(cause) => {
            let hook = panic::take_hook();
            panic::set_hook(Box::new(|_| {}));
            let small = minimize(target, input);
            panic::set_hook(hook);
            eprintln!(
                "fuzz {name}: crash on {:?}\nminimized: {:?}",
                input.escape_ascii().to_string(),
                small.escape_ascii().to_string()
            );
            panic::resume_unwind(cause)
        }
    }
}

fn fixtures() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/osmox");
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Every value of a tree, read every way a caller reads one.
fn walk(v: &json::Value<'_>) {
    let _ = (v.as_u64(), v.as_whole(), v.as_i64(), v.as_f64(), v.as_str());
    match v {
        json::Value::Array(items) => items.iter().for_each(walk),
        json::Value::Object(o) => {
            for (k, v) in o.members() {
                let _ = (k.text(), k.is("id"), extract::to_camel_case(&k.text()));
                walk(v);
            }
        }
        json::Value::Row(r) => walk(&r.value),
        _ => {}
    }
}

#[test]
#[ignore]
fn json() {
    run("json", fixtures(), |bytes| {
        let arena = json::Arena::new();
        let Ok(v) = json::parse(bytes, &arena) else {
            let _ = json::parse_rows(bytes, &arena, None);
            return false;
        };
        walk(&v);
        let mut written = String::new();
        v.write(&mut written);
        let again = json::Arena::new();
        assert!(json::parse(written.as_bytes(), &again).is_ok(), "{written}");
        let rows = json::Arena::new();
        assert!(json::parse_rows(bytes, &rows, None).is_ok());
        true
    })
}

/// The configuration the response and record targets deliver under.
const CONFIG: &str = r#"{
  "endpoints": [{"name": "crm", "url": "http://hooks.local:8080/in?x=1", "cluster": "webhook_crm",
                 "deliveryStatuses": [1, 2, 5, 6], "headers": {"x-team": "crm"}, "timeoutMs": 5000,
                 "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "rateLimit": {"perSecond": 100},
                 "retry": {"maxAttempts": 3, "initialDelayMs": 1000, "multiplier": 2.0, "maxDelayMs": 60000, "jitter": 0.5}},
                {"name": "all", "url": "https://all.local/x", "cluster": "all"}],
  "deadLetter": {"url": "http://dlq.local/dead", "cluster": "dlq"},
  "learn": {"enabled": true, "cluster": "egress", "allowHosts": ["hooks.example.com"]},
  "limits": {"maxPending": 128, "maxRemembered": 1024}
}"#;

struct Net(u32);

impl Dispatch for Net {
    fn dispatch(&mut self, _: &str, _: &[(&str, &str)], _: &[u8], _: u64) -> Result<u32, String> {
        self.0 += 1;
        Ok(self.0)
    }
}

const T0: u64 = 1_800_000_000_000;

/// A store laid out as `config` needs it (the ledger's keys and each endpoint's records), as
/// the host lays shared data out; for tests of the core elsewhere too.
pub(crate) fn laid_out(config: &Config) -> MemStore {
    let store = MemStore::new();
    for (k, v) in Ledger::new(config.limits.max_pending).keys() {
        let _ = store.set(&k, v, None);
    }
    for k in Sender::keys(&config.endpoints) {
        let _ = store.set(&k, b"{}", None);
    }
    store
}

/// Take in what a response holds, then deliver it: the notifications' values (ids, retry
/// counts, timestamps) reach the dedupe memory, the ledger and the webhook bodies.
fn deliver(config: &Config, store: &MemStore, found: &extract::Extracted<'_>, seed: u64) {
    let metrics = CountingMetrics::default();
    let mut known = KnownEvents::new(64);
    let memory = Memory::settle(store, config.limits.max_remembered);
    let _ = found.rows_to_remember();
    let wake = crate::intake::take_in(
        Some(&mut known),
        config,
        &config.endpoints,
        memory,
        store,
        &metrics,
        &found.notifications,
        T0,
        seed,
    );
    let mut sender = Sender::new(1, Ledger::new(config.limits.max_pending), 64);
    let mut net = Net(0);
    for (step, now_ms) in [T0, T0 + 1, T0 + 70_000, T0 + 3_600_000]
        .into_iter()
        .enumerate()
    {
        let mut io = Io {
            store,
            metrics: &metrics,
            net: &mut net,
            now_ms,
        };
        if step == 0 {
            for slot in &wake.wake {
                sender.wake(config, &config.endpoints, &mut io, *slot);
            }
        }
        sender.tick(config, &config.endpoints, &mut io);
        let sent = io.net.dispatch("", &[], &[], 0).unwrap_or(0);
        for token in 1..sent {
            let status = [200u16, 503, 429, 410, 500][(token as usize + step) % 5];
            let response = AttemptResponse {
                num_headers: 1,
                status: Some(status),
                retry_after: Some(
                    [
                        "1",
                        "Sun, 06 Nov 1994 08:49:37 GMT",
                        "x",
                        "99999999999999999999",
                    ][token as usize % 4]
                        .into(),
                ),
                local_failure: None,
            };
            sender.on_response(config, &config.endpoints, &mut io, token, &response);
        }
    }
}

#[test]
#[ignore]
fn responses() {
    let config = Config::from_json(CONFIG.as_bytes(), &|_| None).unwrap();
    let plain = RequestFacts::Plain(QueryFacts {
        notification_fields: vec![NotificationField {
            key: "notification".into(),
            id: Some(7),
        }],
        webhook_key: Some("webhook".into()),
        archived_keys: vec!["archivedNotifications".into()],
    });
    let seed = std::cell::Cell::new(0u64);
    run("responses", fixtures(), |bytes| {
        seed.set(seed.get() + 1);
        let mut any = false;
        for (kind, facts) in [
            (WatchKind::Rest, &RequestFacts::Unread),
            (WatchKind::Graphql, &plain),
            (
                WatchKind::Graphql,
                &RequestFacts::Plain(QueryFacts::default()),
            ),
        ] {
            let _ = extract::sniff_whole(bytes);
            let _ = extract::extract_registration(
                kind,
                "PUT",
                "/api/v1/webhooks/3",
                facts,
                Some(bytes),
                bytes,
            );
            let got = extract::read(kind, bytes, facts, |found| {
                for n in &found.notifications {
                    let _ = (n.webhook_body(), n.result_json(), KnownEvents::identity(n));
                    let _ = crate::payload::event_type(n);
                }
                let store = laid_out(&config);
                deliver(&config, &store, found, seed.get());
                !found.notifications.is_empty()
            });
            any |= got.unwrap_or(false);
        }
        any
    })
}

#[test]
#[ignore]
fn graphql_requests() {
    let queries = [
        "query { notifications { id deliveryStatus updatedOn } }",
        "query Q($id: Float!) { a: notification(notificationId: $id) { id deliveryStatus } archivedNotifications { notificationId deliveryStatus } }",
        "mutation { webhook(createWebhookInput: {providerId: 1, webhookUrl: \"https://h/x\"}) { id providerId webhookUrl } }",
        "fragment F on Notification { id } query { ...F notification(notificationId: 3) @skip(if: true) { ...on N { id } } }",
    ];
    let mut seeds: Vec<Vec<u8>> = queries
        .iter()
        .map(|q| {
            let mut s = String::new();
            json::write_str(&mut s, q);
            format!(r#"{{"query":{s},"variables":{{"id":7}},"operationName":"Q"}}"#).into_bytes()
        })
        .collect();
    seeds.push(br#"{"extensions":{"persistedQuery":{"version":1,"sha256Hash":"7b400d81b242ad26d5d703179d2f0b1a19282434b0deb611aaac24fe5f89d8fe"}}}"#.to_vec());
    let responses = fixtures();
    let round = std::cell::Cell::new(0usize);
    run("graphql_requests", seeds, |bytes| {
        round.set(round.get() + 1);
        let store = MemStore::new();
        let _ = persisted::remember(&store, bytes);
        let _ = (may_register(bytes), persisted::may_name(bytes));
        let _ = persisted::persisted(bytes);
        let facts = read_graphql_request(&RequestHead::JSON_POST, bytes, &|h| {
            persisted::recall(&store, h)
        });
        let response = &responses[round.get() % responses.len().max(1)];
        let _ = extract::extract(WatchKind::Graphql, response, &facts);
        let _ = extract::extract_registration(
            WatchKind::Graphql,
            "POST",
            "/graphql",
            &facts,
            Some(bytes),
            response,
        );
        matches!(facts, RequestFacts::Plain(_))
    })
}

/// The JSON blocks of the README: every configuration it shows.
fn readme_configs() -> Vec<Vec<u8>> {
    let readme = include_str!("../README.md");
    readme
        .split("```json\n")
        .skip(1)
        .filter_map(|b| b.split("```").next())
        .map(|b| b.as_bytes().to_vec())
        .chain([CONFIG.as_bytes().to_vec()])
        .collect()
}

#[test]
#[ignore]
fn config() {
    run("config", readme_configs(), |bytes| {
        let env = |name: &str| {
            name.len()
                .is_multiple_of(2)
                .then(|| "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string())
        };
        let Ok(config) = Config::from_json(bytes, &env) else {
            return false;
        };
        let _ = (config.learn_fingerprint(), format!("{config:?}"));
        let store = laid_out(&config);
        let _ = Registry::new(4).endpoints(&store, &config);
        let mut live = LiveEndpoints::of_source(1);
        live.beat(&store, &config, T0);
        for e in &config.endpoints {
            let _ = live_endpoints::kept_elsewhere(&store, &config, &e.name, T0 + 1);
        }
        // A delivery through every endpoint it configures.
        let body = br#"{"notifications":[{"id":1,"deliveryStatus":5,"providerId":2,"channelType":1,"retryCount":0}]}"#;
        let _ = extract::read(WatchKind::Rest, body, &RequestFacts::Unread, |found| {
            deliver(&config, &store, found, 1);
        });
        true
    })
}

/// The pinned shared data: every kind of record, as a short scenario leaves them.
fn pinned_records() -> Vec<(String, Vec<u8>)> {
    let text = include_str!("../tests/fixtures/shared-data-format.txt");
    let unescape = |s: &str| {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while let Some(&c) = b.get(i) {
            match (c, b.get(i + 1)) {
                (b'\\', Some(b'x')) => {
                    let hex = s.get(i + 2..i + 4).unwrap_or("00");
                    out.push(u8::from_str_radix(hex, 16).unwrap_or(0));
                    i += 4;
                }
                (b'\\', Some(&e)) => {
                    out.push(match e {
                        b'n' => b'\n',
                        b't' => b'\t',
                        b'r' => b'\r',
                        other => other,
                    });
                    i += 2;
                }
                _ => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        out
    };
    text.lines()
        .skip(1)
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), unescape(v)))
        .collect()
}

/// Records, each its key, a space, then its value, apart by 0x1e: the store is the pinned
/// one with those replaced, and every reader of shared data then runs over it.
#[test]
#[ignore]
fn records() {
    let config = Config::from_json(CONFIG.as_bytes(), &|_| None).unwrap();
    let pinned = pinned_records();
    let interesting: Vec<Vec<u8>> = pinned
        .iter()
        .filter(|(k, v)| !v.is_empty() && v.as_slice() != b"[]" && !k.starts_with("f2/apq/"))
        .map(|(k, v)| [k.as_bytes(), b" ", v].concat())
        .chain([b"f2/apq/53 [[\"h\",\"q\"]]".to_vec()])
        .collect();
    let body = br#"{"notifications":[{"id":1,"deliveryStatus":6,"providerId":1,"channelType":1,"retryCount":1,"updatedOn":"2026-04-20T09:15:09.000Z"},{"id":2,"deliveryStatus":5},{"id":3,"deliveryStatus":5},{"id":4,"deliveryStatus":5,"result":{}}]}"#;
    run("records", interesting, |input| {
        let store = MemStore::new();
        for (k, v) in &pinned {
            let _ = store.set(k, v, None);
        }
        let mut any = false;
        for record in input.split(|b| *b == 0x1e) {
            let Some(split) = record.iter().position(|b| *b == b' ') else {
                continue;
            };
            let (key, value) = (&record[..split], &record[split + 1..]);
            let Ok(key) = std::str::from_utf8(key) else {
                continue;
            };
            any = true;
            let _ = store.set(key, value, None);
            let _ = LaidOut::decode(Some(value)).union(LaidOut::default());
            let _ = Config::read_published_fingerprint(value);
            let _ = crate::delivery::breaker::EndpointState::decode(value);
            let _ = crate::delivery::ledger::Record::decode(Some(value));
            let _ = crate::delivery::wake::take(value, 32);
        }
        let hash = "7b400d81b242ad26d5d703179d2f0b1a19282434b0deb611aaac24fe5f89d8fe";
        let _ = (
            persisted::recall(&store, hash),
            persisted::recall(&store, "h"),
        );
        let _ = Registry::new(4).endpoints(&store, &config);
        let learn = config.learn.as_ref().unwrap();
        let _ = Registry::new(4).upsert(&store, 2, Some(3), "https://hooks.example.com/b", learn);
        let _ = peers::beat(&store, 8, T0 + 500, 100);
        let _ = live_endpoints::established(&store, 42, T0);
        let _ = live_endpoints::first_heard(&store, 42, T0);
        let _ = live_endpoints::kept_elsewhere(&store, &config, "crm", T0);
        LiveEndpoints::of_source(43).beat(&store, &config, T0 + 20_000);
        let mut ledger = Ledger::new(config.limits.max_pending).sweeping_high_water(&store);
        let _ = ledger.next_scan_window(&store, 64);
        let _ = extract::read(WatchKind::Rest, body, &RequestFacts::Unread, |found| {
            deliver(&config, &store, found, 3);
        });
        any
    })
}

/// The small parsers of header values, URLs, secrets and timestamps.
#[test]
#[ignore]
fn strings() {
    let config = Config::from_json(CONFIG.as_bytes(), &|_| None).unwrap();
    let learn = config.learn.clone().unwrap();
    let seeds = [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "120",
        "https://hooks.example.com:8443/in?x=1",
        "http://10.0.0.1/x",
        "http://0x7f.1/x",
        "http://[::1]:80/",
        "*.example.com",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "2026-04-20T09:15:01.000Z",
        "2026-04-20T09:15:01.123456+05:30",
        "2026-04-20 09:15:01",
    ];
    run(
        "strings",
        seeds.iter().map(|s| s.as_bytes().to_vec()).collect(),
        |bytes| {
            let Ok(s) = std::str::from_utf8(bytes) else {
                return false;
            };
            for status in [429, 503] {
                let _ = crate::delivery::outcome::retry_after_ms(status, Some(s), T0);
                let _ = crate::delivery::outcome::retry_after_ms(status, Some(s), u64::MAX);
            }
            let _ = crate::delivery::outcome::envoy_local_reply(503, bytes);
            let _ = crate::signing::Secret::parse(s);
            let _ = crate::learn::check_url(s, &learn);
            let _ = crate::config::parse_url(s);
            let _ = crate::config::HostPattern::parse(s).map(|p| p.allows("https", s, 443));
            let _ = crate::osmox::utc_timestamp(s);
            let _ = extract::to_camel_case(s);
            let _ = extract::is_webhook_route("DELETE", s);
            let _ = extract::classify(
                Some("POST"),
                s,
                &["/graphql".into()],
                &["/".into(), s.into()],
            );
            true
        },
    )
}

/// Two pages of one request apart by 0x1e: the second is read passing over the rows it
/// repeats from the first, and must parse (or fail) as it does read whole.
#[test]
#[ignore]
fn pages() {
    use crate::page_memory::PageMemory;
    let seeds = fixtures()
        .into_iter()
        .map(|f| [f.as_slice(), &[0x1e], f.as_slice()].concat())
        .collect();
    run("pages", seeds, |input| {
        let split = input.iter().position(|b| *b == 0x1e).unwrap_or(input.len());
        let (first, second) = (&input[..split], input.get(split + 1..).unwrap_or_default());
        let facts = RequestFacts::Unread;
        let Ok(rows) = extract::read(WatchKind::Rest, first, &facts, |f| f.rows_to_remember())
        else {
            return false;
        };
        let mut pages = PageMemory::new();
        pages.remember(1, first.to_vec(), rows);
        let Some(page) = pages.page(1) else {
            return false;
        };
        let recall = page.recall(|_| true);
        let passing = extract::read_rows(WatchKind::Rest, second, &facts, Some(&recall), |f| {
            (f.notifications.len() + f.seen_rows(), f.skipped_objects)
        });
        let whole = extract::read(WatchKind::Rest, second, &facts, |f| {
            (f.notifications.len(), f.skipped_objects)
        });
        assert_eq!(passing.is_ok(), whole.is_ok());
        passing.is_ok()
    })
}
